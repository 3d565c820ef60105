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

Example::

    >>> store = MilvusStore.open("indexes/scifact/milvus.db", collection="documents", config=config, dim=384,
    ...                          create=True)
    >>> store.upsert(ids=ids, vectors=vectors, payloads=payloads, content_hashes=hashes)
    >>> store.commit()
    >>> store.search(queries=query_vectors, k=10)
"""

from __future__ import annotations

import errno
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
from embedlab.index.config import IndexConfig
from embedlab.index.store import Hit, Scalar, Where, check_where
from embedlab.models.encoders import Vectors

ID_MAX_LENGTH = 2048
QUERY_CHUNK = 256
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
REMOTE = ("http://", "https://", "tcp://", "unix:")


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

    def __init__(self, client: Any, uri: str, collection: str, config: IndexConfig, dim: int):
        self.client = client
        self.uri = uri
        self.collection = collection
        self.config = config
        self.dim = dim
        self._index = INDEXES[(config.index, config.quantize)]

    @classmethod
    def open(
        cls, uri: str, *, collection: str = "documents", config: IndexConfig, dim: int, create: bool = False
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
        store = cls(client, uri, collection, config, dim)
        try:
            store._prepare(create)
        except BaseException:
            client.close()
            raise
        return store

    def _prepare(self, create: bool) -> None:
        from pymilvus import DataType

        with milvus_errors(f"preparing collection '{self.collection}'"):
            if not self.client.has_collection(self.collection):
                if not create:
                    raise EmbedlabError(
                        f"{self.uri}: no collection '{self.collection}' (fix: build it with `embedlab index`)"
                    )
                schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
                schema.add_field("content_hash", DataType.VARCHAR, max_length=128)
                schema.add_field("payload", DataType.JSON)
                params = self.client.prepare_index_params()
                params.add_index(
                    field_name="vector",
                    index_type=self._index.index_type,
                    metric_type="IP",
                    params=self._index.build(self.config),
                )
                self.client.create_collection(self.collection, schema=schema, index_params=params)
            self._check_existing()
            self.client.load_collection(self.collection)

    def _check_existing(self) -> None:
        description = self.client.describe_collection(self.collection)
        vector = next((f for f in description["fields"] if f["name"] == "vector"), None)
        dim = int(vector["params"]["dim"]) if vector else None
        if dim != self.dim:
            raise EmbedlabError(
                f"{self.uri}: collection '{self.collection}' holds {dim}-dimensional vectors, not {self.dim} "
                "(fix: use another --collection or --out)"
            )
        index = self.client.describe_index(self.collection, "vector")
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
    ) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if not len(ids) == len(vectors) == len(payloads) == len(content_hashes):
            raise EmbedlabError("upsert needs as many vectors, payloads and content hashes as ids")
        if len(ids) and vectors.shape[1] != self.dim:
            raise EmbedlabError(f"vectors have {vectors.shape[1]} dimensions; this collection holds {self.dim}")
        too_long = next((i for i in ids if len(i.encode()) > ID_MAX_LENGTH), None)
        if too_long is not None:
            raise EmbedlabError(f"document id {too_long[:60]!r}... is longer than Milvus allows ({ID_MAX_LENGTH} B)")
        rows = [
            {"id": doc_id, "vector": vector.tolist(), "content_hash": digest, "payload": dict(payload)}
            for doc_id, vector, payload, digest in zip(ids, vectors, payloads, content_hashes, strict=True)
        ]
        if rows:
            with milvus_errors(f"upserting {len(rows)} documents into {self.uri}"):
                self.client.upsert(self.collection, rows)

    def commit(self) -> None:
        with milvus_errors("flushing"):
            self.client.flush(self.collection)

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
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise EmbedlabError(f"queries must have shape (n, {self.dim}); got {queries.shape}")
        if k < 1:
            raise EmbedlabError(f"k must be ≥ 1 (got {k})")
        config = self.config.with_search(ef_search=ef_search, nprobe=nprobe)
        if config.index == "hnsw":
            config = config.with_search(ef_search=max(config.ef_search, k))  # Milvus requires ef ≥ k
        elif config.index == "ivf" and config.nlist:
            config = replace(config, nprobe=min(config.nprobe, config.nlist))  # and nprobe ≤ nlist
        with milvus_errors("searching"):
            results = self.client.search(
                self.collection,
                data=queries.tolist(),
                limit=k,
                filter=where_expression(where),
                output_fields=["payload"],
                search_params={"metric_type": "IP", "params": self._index.search(config)},
            )
        return [
            [Hit(str(hit["id"]), float(hit["distance"]), hit.get("entity", {}).get("payload") or {}) for hit in row]
            for row in results
        ]

    def size_bytes(self) -> int | None:
        """Bytes of Milvus Lite's index files for this collection; ``None`` on a cluster."""
        if not is_local(self.uri):
            return None
        folder = Path(self.uri) / "collections" / self.collection
        return sum(p.stat().st_size for p in folder.rglob("*.idx")) if folder.exists() else None

    def close(self) -> None:
        self.client.close()
