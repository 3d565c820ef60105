"""Milvus through its official client (``pymilvus.MilvusClient``): Milvus Lite locally, the same code on a cluster.

The URI decides where the data lives:

* a local path ending in ``.db`` (default ``<index folder>/milvus.db``) runs **Milvus Lite** inside this process
  — no server to start. Only one process at a time may open a ``.db`` (stop a running ``embedlab serve`` before
  re-indexing into it); a second client in the same process is fine.
* ``http://host:19530`` (or ``https://…``) talks to a **Milvus cluster**; the token, when one is needed, comes from
  the ``MILVUS_TOKEN`` environment variable and is never written to the manifest.

One collection (default ``documents``) holds ``id`` (VARCHAR primary key), ``vector`` (FLOAT_VECTOR),
``content_hash`` and ``payload`` (JSON). Writes use ``upsert`` (an ``insert`` of an existing id duplicates it on a
real cluster); :meth:`MilvusStore.commit` flushes, which is also when Milvus Lite applies the index type. Index
types per ``(index, quantize)`` pair are the registry :data:`INDEXES`: ``FLAT``, ``HNSW``, ``HNSW_SQ`` (SQ8),
``IVF_FLAT``, ``IVF_SQ8``, all with the inner-product metric. Searches ask only for the ``payload`` field (without
``output_fields`` Milvus returns every field, the vector included). ``where`` filters become a boolean expression
on the JSON payload, with string values escaped.

With ``lexical=True`` (a ``bm25`` or ``hybrid`` index) the same collection also holds ``text`` (VARCHAR, analysed
as :func:`analyzer_params` says), a ``sparse`` field filled by Milvus' built-in ``BM25`` function from it, and a
``SPARSE_INVERTED_INDEX`` with metric ``BM25`` and bm25s' ``k1``/``b``; a ``bm25`` index (``dim`` 0) has no
``vector`` field. :meth:`MilvusStore.search_text` searches the sparse field with the raw query text;
:meth:`MilvusStore.search_hybrid` is one ``hybrid_search`` of both fields with ``RRFRanker`` — the same constant
as ``embedlab select``'s hybrid — whose hits are then ordered as trec_eval orders them (ties by id), so equal
fused scores come out as ``select`` ranks them. Milvus analyses text itself: the standard tokenizer, lower-cased,
with bm25s' stop words plus every single-character word (bm25s keeps words of two characters or more) gives
bm25s' tokens; on SciFact the served BM25 top-10 then equals ``compare``'s for every test query, against 20%
with bm25s' stop words alone (``benchmarks/hybrid_agreement.py``). Milvus Lite keeps BM25 statistics per
segment: a build interrupted and resumed has two, and its BM25 scores drift from bm25s' (8% identical top-10).

Example::

    >>> store = MilvusStore.open("indexes/scifact/milvus.db", collection="documents", config=config, dim=384,
    ...                          create=True)
    >>> store.upsert(ids=ids, vectors=vectors, payloads=payloads, content_hashes=hashes)
    >>> store.commit()
    >>> store.search(queries=query_vectors, k=10)
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from embedlab.errors import RETRY_FIX, EmbedlabError
from embedlab.fusion import RRF_K
from embedlab.index.config import IndexConfig
from embedlab.index.store import Hit, Scalar, Where, check_where
from embedlab.models.encoders import Vectors

ID_MAX_LENGTH = 2048
QUERY_CHUNK = 256
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
REMOTE = ("http://", "https://", "tcp://", "unix:")
TEXT_MAX_BYTES = 65_535  # Milvus' largest VARCHAR


# Where single-character words come from in practice: Latin (with its extensions), IPA, Greek, Cyrillic,
# superscripts and subscripts, number forms (α, β, γ and μ are common in scientific text).
SINGLE_CHARACTER_BLOCKS = ((0x0000, 0x0530), (0x1E00, 0x2000), (0x2070, 0x2190))


@functools.cache
def bm25s_stop_words() -> tuple[str, ...]:
    """bm25s' English stop words, plus every single-character word of :data:`SINGLE_CHARACTER_BLOCKS`: bm25s keeps
    only words of two or more characters (``\\w\\w+``), and a stop-word filter is the way Milvus' analysers can
    drop the shorter ones (Milvus' ``length`` filter has a maximum only)."""
    from bm25s.stopwords import STOPWORDS_EN

    single = (chr(c) for start, end in SINGLE_CHARACTER_BLOCKS for c in range(start, end))
    return tuple(sorted({*STOPWORDS_EN, *(c for c in single if re.fullmatch(r"\w", c) and c.lower() == c)}))


def analyzer_params() -> dict[str, Any]:
    """The analyser of the ``text`` field: the standard tokenizer, lower-cased, bm25s' stop words."""
    stop = {"type": "stop", "stop_words": list(bm25s_stop_words())}
    return {"tokenizer": "standard", "filter": ["lowercase", stop]}


@dataclass(frozen=True)
class MilvusIndex:
    """A Milvus index type, its build parameters and its search parameters for a config."""

    index_type: str
    build: Callable[[IndexConfig], dict[str, Any]]
    search: Callable[[IndexConfig], dict[str, Any]]


INDEXES: Mapping[tuple[str, str], MilvusIndex] = MappingProxyType(
    {
        ("flat", "none"): MilvusIndex("FLAT", lambda c: {}, lambda c: {}),
        ("hnsw", "none"): MilvusIndex(
            "HNSW",
            lambda c: {"M": c.hnsw_m, "efConstruction": c.ef_construction},
            lambda c: {"ef": c.ef_search},
        ),
        ("hnsw", "int8"): MilvusIndex(
            "HNSW_SQ",
            lambda c: {"M": c.hnsw_m, "efConstruction": c.ef_construction, "sq_type": "SQ8"},
            lambda c: {"ef": c.ef_search},
        ),
        ("ivf", "none"): MilvusIndex("IVF_FLAT", lambda c: {"nlist": c.nlist}, lambda c: {"nprobe": c.nprobe}),
        ("ivf", "int8"): MilvusIndex("IVF_SQ8", lambda c: {"nlist": c.nlist}, lambda c: {"nprobe": c.nprobe}),
    }
)
"""Milvus index type per (index, quantize) pair."""


def literal(value: Scalar | Sequence[str]) -> str:
    """A value written as a Milvus expression literal (strings double-quoted and escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(literal(v) for v in value) + "]"


def where_expression(where: Where | None) -> str:
    """A Milvus boolean expression for an equality filter on payload fields (validated names only)."""
    filters = check_where(where)
    return " and ".join(f'payload["{name}"] == {literal(value)}' for name, value in filters.items())


def is_local(uri: str) -> bool:
    return not uri.startswith(REMOTE)


@contextmanager
def milvus_errors(what: str) -> Iterator[None]:
    """Turn a pymilvus exception into a one-line EmbedlabError."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        message = getattr(exc, "message", None) or str(exc)
        full = any(f"[Errno {code}]" in message for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))
        raise EmbedlabError(f"Milvus: {what} failed: {message}" + (f" (fix: {RETRY_FIX})" if full else "")) from None


def quiet_milvus_logs() -> None:
    """Silence the tracebacks pymilvus and Milvus Lite's in-process gRPC server log for every failed call (and for
    AllocTimestamp, which Lite does not implement, on every run): the store raises one EmbedlabError instead.
    Called once pymilvus is imported, because importing it resets its loggers."""
    for name in ("pymilvus", "pymilvus.decorators", "milvus_lite", "grpc._server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class MilvusStore:
    """One Milvus collection behind the :class:`~embedlab.index.store.VectorStore` protocol. Open with :meth:`open`."""

    name = "milvus"

    def __init__(self, client: Any, uri: str, collection: str, config: IndexConfig, dim: int, *, lexical: bool = False):
        self.client = client
        self.uri = uri
        self.collection = collection
        self.config = config
        self.dim = dim
        self.lexical = lexical
        self._index = INDEXES[(config.index, config.quantize)]

    @classmethod
    def open(
        cls,
        uri: str,
        *,
        collection: str = "documents",
        config: IndexConfig,
        dim: int,
        create: bool = False,
        lexical: bool = False,
    ) -> MilvusStore:
        from pymilvus import MilvusClient

        if not COLLECTION_NAME.match(collection):
            raise EmbedlabError(f"collection name {collection!r} must be letters, digits and _ (no leading digit)")
        if (config.index, config.quantize) not in INDEXES:
            raise EmbedlabError(f"Milvus has no index '{config.index}' with quantize '{config.quantize}'")
        if is_local(uri):
            if not uri.endswith(".db"):
                raise EmbedlabError(f"{uri}: a Milvus Lite path must end in .db (or give an http(s):// cluster URI)")
            if not Path(uri).exists() and not create:
                raise EmbedlabError(f"{uri}: no Milvus Lite database here (fix: build one with `embedlab index`)")
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            with milvus_errors(f"opening {uri}"):
                client = MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))
            quiet_milvus_logs()
        except EmbedlabError as exc:
            if is_local(uri):
                raise EmbedlabError(
                    f"{exc} (Milvus Lite lets one process at a time open {uri}: is an `embedlab serve` or another "
                    "indexing run using it?)"
                ) from None
            raise
        store = cls(client, uri, collection, config, dim, lexical=lexical)
        try:
            store._prepare(create)
        except BaseException:
            client.close()
            raise
        return store

    def _prepare(self, create: bool) -> None:
        from pymilvus import DataType, Function, FunctionType

        with milvus_errors(f"preparing collection '{self.collection}'"):
            if not self.client.has_collection(self.collection):
                if not create:
                    raise EmbedlabError(
                        f"{self.uri}: no collection '{self.collection}' (fix: build it with `embedlab index`)"
                    )
                schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
                if self.dim:
                    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
                schema.add_field("content_hash", DataType.VARCHAR, max_length=128)
                schema.add_field("payload", DataType.JSON)
                params = self.client.prepare_index_params()
                if self.dim:
                    params.add_index(
                        field_name="vector",
                        index_type=self._index.index_type,
                        metric_type="IP",
                        params=self._index.build(self.config),
                    )
                if self.lexical:
                    from embedlab.retrieval import BM25_B, BM25_K1

                    schema.add_field(
                        "text",
                        DataType.VARCHAR,
                        max_length=TEXT_MAX_BYTES,
                        enable_analyzer=True,
                        analyzer_params=analyzer_params(),
                    )
                    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
                    schema.add_function(
                        Function(
                            name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                            output_field_names=["sparse"],
                        )
                    )  # fmt: skip
                    params.add_index(
                        field_name="sparse",
                        index_type="SPARSE_INVERTED_INDEX",
                        metric_type="BM25",
                        params={"bm25_k1": BM25_K1, "bm25_b": BM25_B},
                    )
                self.client.create_collection(self.collection, schema=schema, index_params=params)
            self._check_existing()
            self.client.load_collection(self.collection)

    def _check_existing(self) -> None:
        description = self.client.describe_collection(self.collection)
        names = {f["name"] for f in description["fields"]}
        vector = next((f for f in description["fields"] if f["name"] == "vector"), None)
        dim = int(vector["params"]["dim"]) if vector else 0
        if dim != self.dim:
            raise EmbedlabError(
                f"{self.uri}: collection '{self.collection}' holds {dim}-dimensional vectors, not {self.dim} "
                "(fix: use another --collection or --out)"
            )
        if ("sparse" in names) != self.lexical:
            raise EmbedlabError(
                f"{self.uri}: collection '{self.collection}' was built {'with' if 'sparse' in names else 'without'} "
                "BM25 (fix: use another --collection or --out)"
            )
        index = self.client.describe_index(self.collection, "vector") if self.dim else None
        if index and index.get("index_type") != self._index.index_type:
            raise EmbedlabError(
                f"{self.uri}: collection '{self.collection}' has a {index.get('index_type')} index, not "
                f"{self._index.index_type} (fix: use another --collection or --out)"
            )

    def count(self) -> int:
        with milvus_errors("counting"):
            rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def content_hashes(self, *, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with milvus_errors("reading content hashes"):
            for start in range(0, len(ids), QUERY_CHUNK):
                chunk = list(ids[start : start + QUERY_CHUNK])
                rows = self.client.query(
                    self.collection, filter=f"id in {literal(chunk)}", output_fields=["content_hash"]
                )
                found.update({row["id"]: row["content_hash"] for row in rows})
        return found

    def upsert(
        self,
        *,
        ids: Sequence[str],
        vectors: Vectors,
        payloads: Sequence[Mapping[str, Any]],
        content_hashes: Sequence[str],
        texts: Sequence[str] | None = None,
    ) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if not vectors.size:  # a bm25 index's rows have no vector
            vectors = vectors.reshape(len(ids), self.dim)
        if not len(ids) == len(vectors) == len(payloads) == len(content_hashes):
            raise EmbedlabError("upsert needs as many vectors, payloads and content hashes as ids")
        if self.lexical:
            if texts is None or len(texts) != len(ids):
                raise EmbedlabError("an index with BM25 needs one text per upserted document")
            too_big = next((i for i, t in zip(ids, texts, strict=True) if len(t.encode()) > TEXT_MAX_BYTES), None)
            if too_big is not None:
                raise EmbedlabError(
                    f"document {too_big[:60]!r} has more than {TEXT_MAX_BYTES} bytes of text, the most a Milvus "
                    "text field holds (fix: index chunks, e.g. a folder of documents, or use --store faiss)"
                )
        if len(ids) and vectors.shape[1] != self.dim:
            raise EmbedlabError(f"vectors have {vectors.shape[1]} dimensions; this collection holds {self.dim}")
        too_long = next((i for i in ids if len(i.encode()) > ID_MAX_LENGTH), None)
        if too_long is not None:
            raise EmbedlabError(f"document id {too_long[:60]!r}... is longer than Milvus allows ({ID_MAX_LENGTH} B)")
        rows: list[dict[str, Any]] = [
            {"id": doc_id, "content_hash": digest, "payload": dict(payload)}
            for doc_id, payload, digest in zip(ids, payloads, content_hashes, strict=True)
        ]
        for row, vector in zip(rows, vectors, strict=True):
            if self.dim:
                row["vector"] = vector.tolist()
        if self.lexical:
            assert texts is not None
            for row, text in zip(rows, texts, strict=True):
                row["text"] = text
        if rows:
            with milvus_errors(f"upserting {len(rows)} documents into {self.uri}"):
                self.client.upsert(self.collection, rows)

    def commit(self) -> None:
        with milvus_errors("flushing"):
            self.client.flush(self.collection)

    def _dense_params(self, queries: Vectors, k: int, ef_search: int | None, nprobe: int | None) -> dict[str, Any]:
        if not self.dim:
            raise EmbedlabError(f"{self.uri}: this is a BM25 index: it has no vectors to search")
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise EmbedlabError(f"queries must have shape (n, {self.dim}); got {queries.shape}")
        if k < 1:
            raise EmbedlabError(f"k must be ≥ 1 (got {k})")
        config = self.config.with_search(ef_search=ef_search, nprobe=nprobe)
        if config.index == "hnsw":
            config = config.with_search(ef_search=max(config.ef_search, k))  # Milvus requires ef ≥ k
        elif config.index == "ivf" and config.nlist:
            config = replace(config, nprobe=min(config.nprobe, config.nlist))  # and nprobe ≤ nlist
        return {"metric_type": "IP", "params": self._index.search(config)}

    def search(
        self,
        *,
        queries: Vectors,
        k: int,
        where: Where | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        queries = np.asarray(queries, dtype=np.float32)
        params = self._dense_params(queries, k, ef_search, nprobe)
        with milvus_errors("searching"):
            results = self.client.search(
                self.collection,
                data=queries.tolist(),
                anns_field="vector",
                limit=k,
                filter=where_expression(where),
                output_fields=["payload"],
                search_params=params,
            )
        return [[_hit(hit) for hit in row] for row in results]

    def _check_lexical(self, k: int) -> None:
        if not self.lexical:
            raise EmbedlabError(f"{self.uri}: this index was built without BM25 (index it as bm25 or hybrid)")
        if k < 1:
            raise EmbedlabError(f"k must be ≥ 1 (got {k})")

    def search_text(self, *, texts: Sequence[str], k: int, where: Where | None = None) -> list[list[Hit]]:
        self._check_lexical(k)
        with milvus_errors("searching text"):
            results = self.client.search(
                self.collection,
                data=list(texts),
                anns_field="sparse",
                limit=k,
                filter=where_expression(where),
                output_fields=["payload"],
                search_params={"metric_type": "BM25"},
            )
        # Milvus Lite reports BM25 as a negated distance, a cluster as the score: the score is its magnitude.
        return [[hit for hit in (_hit(h, magnitude=True) for h in row) if hit.score > 0] for row in results]

    def search_hybrid(
        self,
        *,
        queries: Vectors,
        texts: Sequence[str],
        k: int,
        depth: int,
        rrf_k: int = RRF_K,
        where: Where | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        from pymilvus import AnnSearchRequest, RRFRanker

        from embedlab.evaluate.metrics import rank

        self._check_lexical(k)
        queries = np.asarray(queries, dtype=np.float32)
        params = self._dense_params(queries, depth, ef_search, nprobe)
        expression = where_expression(where) or None
        requests = [
            AnnSearchRequest(
                data=list(texts), anns_field="sparse", param={"metric_type": "BM25"}, limit=depth, expr=expression
            ),
            AnnSearchRequest(data=queries.tolist(), anns_field="vector", param=params, limit=depth, expr=expression),
        ]
        with milvus_errors("hybrid searching"):
            results = self.client.hybrid_search(
                self.collection, reqs=requests, ranker=RRFRanker(rrf_k), limit=depth, output_fields=["payload"]
            )
        out = []
        for row in results:
            hits = {hit.id: hit for hit in (_hit(h, magnitude=True) for h in row)}
            out.append([hits[doc_id] for doc_id in rank({i: h.score for i, h in hits.items()}, k)])
        return out

    def size_bytes(self) -> int | None:
        """Bytes of Milvus Lite's index files for this collection; ``None`` on a cluster."""
        if not is_local(self.uri):
            return None
        folder = Path(self.uri) / "collections" / self.collection
        return sum(p.stat().st_size for p in folder.rglob("*.idx")) if folder.exists() else None

    def close(self) -> None:
        self.client.close()


def _hit(hit: Mapping[str, Any], *, magnitude: bool = False) -> Hit:
    distance = float(hit["distance"])
    return Hit(str(hit["id"]), abs(distance) if magnitude else distance, hit.get("entity", {}).get("payload") or {})
