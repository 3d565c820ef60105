"""The vector-store plug-in point: one :class:`VectorStore` protocol, stores registered by name in :data:`STORES`.

A store keeps, per document, a string ``id``, its vector, a JSON ``payload`` (title, text, source, ...) and a
``content_hash`` (so a re-run can tell unchanged documents from changed ones). Every write is an **upsert**:
writing an id that is already there replaces it, so re-running an indexing job never duplicates anything.
:meth:`VectorStore.commit` makes what was upserted durable and searchable (FAISS builds and saves its index,
Milvus flushes). Scores are inner products of the stored (L2-normalised) vectors, higher is better; a
``binary`` index scores ``1 − 2·hamming/dim``, the cosine of the sign vectors.

A store opened with ``lexical=True`` also keeps each document's text for BM25 (``upsert(texts=...)``) and answers
:meth:`VectorStore.search_text` (BM25 alone) and :meth:`VectorStore.search_hybrid` (the dense and BM25 top-``depth``
fused by reciprocal rank fusion); with ``dim=0`` it holds no vectors at all (a ``bm25`` index).

``where`` filters are equality on payload fields (``{"source": "a.pdf", "page": 3}``, all must hold); field
names are identifiers (letters, digits, ``_``).

Two stores ship:

=========  =================================================================================================
``faiss``  FAISS in-process, persisted in the index folder (``index.faiss`` plus ``records.sqlite`` holding
           ids, payloads and the full-precision vectors); no server. :mod:`embedlab.index.faiss_store`.
``milvus`` Milvus through its official client: Milvus Lite when the URI is a local path ending in ``.db``
           (default ``<index folder>/milvus.db``; one process at a time may open it), the same code against a
           cluster when the URI is ``http(s)://host:19530`` (token from ``$MILVUS_TOKEN``).
           :mod:`embedlab.index.milvus_store`.
=========  =================================================================================================

Example::

    >>> store = open_store("faiss", index_dir=Path("indexes/scifact"), config=config, dim=384, create=True)
    >>> store.upsert(ids=["d1"], vectors=vectors, payloads=[{"title": "..."}], content_hashes=["ab12..."])
    >>> store.commit()
    >>> store.search(queries=query_vectors, k=10)[0][0]
    Hit(id='d1', score=0.83, payload={'title': '...'})
    >>> check_supported("milvus", IndexConfig(quantize="pq"))
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: the milvus store has no index 'flat' with quantize 'pq'; valid --index/--quantize \
pairs: flat/none, hnsw/none, hnsw/int8, ivf/none, ivf/int8
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from embedlab.errors import EmbedlabError
from embedlab.index.config import INDEX_KINDS, QUANTIZATIONS, IndexConfig, choose
from embedlab.models.encoders import Vectors

Scalar = str | int | float | bool
Where = Mapping[str, Scalar]

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the document id, its score (higher is better) and its payload."""

    id: str
    score: float
    payload: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "payload": dict(self.payload)}


class VectorStore(Protocol):
    """A place that keeps vectors with ids and payloads and answers nearest-neighbour queries."""

    name: str

    def count(self) -> int:
        """Documents stored (after the last commit for stores that buffer)."""
        ...

    def content_hashes(self, *, ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of ``ids`` that is present (absent ids are left out)."""
        ...

    def upsert(
        self,
        *,
        ids: Sequence[str],
        vectors: Vectors,
        payloads: Sequence[Mapping[str, Any]],
        content_hashes: Sequence[str],
        texts: Sequence[str] | None = None,
    ) -> None:
        """Insert or replace these documents; durable when it returns (searchable after :meth:`commit`).
        ``texts`` (what BM25 analyses) are required by a lexical store and ignored by others."""
        ...

    def commit(self) -> None:
        """Make every upsert so far searchable and persistent."""
        ...

    def search(
        self,
        *,
        queries: Vectors,
        k: int,
        where: Where | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best hits per query row, best first (fewer when fewer documents match ``where``).
        ``ef_search``/``nprobe`` override the index's search settings for this call."""
        ...

    def search_text(self, *, texts: Sequence[str], k: int, where: Where | None = None) -> list[list[Hit]]:
        """The ``k`` best documents per query text by BM25 (lexical stores only), best first."""
        ...

    def search_hybrid(
        self,
        *,
        queries: Vectors,
        texts: Sequence[str],
        k: int,
        depth: int,
        rrf_k: int,
        where: Where | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """The dense and the BM25 top-``depth`` per query fused by reciprocal rank fusion with constant ``rrf_k``,
        the ``k`` best, best first; a hit's score is its fused score (lexical stores with vectors only)."""
        ...

    def size_bytes(self) -> int | None:
        """Bytes the searchable index takes (``None`` when the store cannot tell, e.g. a remote cluster)."""
        ...

    def close(self) -> None: ...


class StoreOpener(Protocol):
    def __call__(
        self,
        *,
        index_dir: Path,
        uri: str | None,
        collection: str,
        config: IndexConfig,
        dim: int,
        create: bool,
        lexical: bool = False,
    ) -> VectorStore: ...


@dataclass(frozen=True)
class StoreType:
    """A registered store: its name, what it is, which (index, quantize) pairs it accepts, how to open it."""

    name: str
    description: str
    supports: frozenset[tuple[str, str]]
    opener: StoreOpener

    def valid_combinations(self) -> list[str]:
        order = {name: i for i, name in enumerate(INDEX_KINDS + QUANTIZATIONS)}
        pairs = sorted(self.supports, key=lambda p: (order[p[0]], order[p[1]]))
        return [f"{index}/{quantize}" for index, quantize in pairs]


def _open_faiss(
    *,
    index_dir: Path,
    uri: str | None,
    collection: str,
    config: IndexConfig,
    dim: int,
    create: bool,
    lexical: bool = False,
) -> VectorStore:
    from embedlab.index.faiss_store import FaissStore

    if uri:
        raise EmbedlabError("the faiss store lives in the index folder; --uri is for --store milvus")
    return FaissStore.open(index_dir, config=config, dim=dim, create=create, lexical=lexical)


def _open_milvus(
    *,
    index_dir: Path,
    uri: str | None,
    collection: str,
    config: IndexConfig,
    dim: int,
    create: bool,
    lexical: bool = False,
) -> VectorStore:
    from embedlab.index.milvus_store import MilvusStore

    return MilvusStore.open(
        uri or str(Path(index_dir) / "milvus.db"),
        collection=collection,
        config=config,
        dim=dim,
        create=create,
        lexical=lexical,
    )


FAISS_PAIRS = (
    *("flat/none", "flat/int8", "flat/binary", "flat/pq"),
    *("hnsw/none", "hnsw/int8", "hnsw/binary"),
    *("ivf/none", "ivf/int8", "ivf/binary", "ivf/pq"),
)


def _pairs(*pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(tuple(p.split("/")) for p in pairs)  # type: ignore[misc]


STORES: Mapping[str, StoreType] = MappingProxyType(
    {
        "faiss": StoreType(
            name="faiss",
            description="FAISS in-process, saved in the index folder (no server)",
            supports=_pairs(*FAISS_PAIRS),
            opener=_open_faiss,
        ),
        "milvus": StoreType(
            name="milvus",
            description="Milvus: Milvus Lite for a local .db path, a cluster for an http(s) URI",
            # What Milvus Lite 3.x serves after a flush; a cluster accepts these too.
            supports=_pairs("flat/none", "hnsw/none", "hnsw/int8", "ivf/none", "ivf/int8"),
            opener=_open_milvus,
        ),
    }
)
"""The store registry: name -> :class:`StoreType`."""


def get_store_type(name: str) -> StoreType:
    return STORES[choose(name, tuple(STORES), "store")]


def check_supported(store: str, config: IndexConfig) -> None:
    """Raise a one-line :class:`EmbedlabError` naming the valid pairs if ``store`` cannot build ``config``."""
    kind = get_store_type(store)
    if (config.index, config.quantize) not in kind.supports:
        raise EmbedlabError(
            f"the {kind.name} store has no index '{config.index}' with quantize '{config.quantize}'; "
            f"valid --index/--quantize pairs: {', '.join(kind.valid_combinations())}"
        )


def open_store(
    name: str,
    *,
    index_dir: Path,
    config: IndexConfig,
    dim: int,
    uri: str | None = None,
    collection: str = "documents",
    create: bool = False,
    lexical: bool = False,
) -> VectorStore:
    """Open (``create``: or create) the store ``name`` for vectors of ``dim`` built as ``config`` (resolved);
    ``lexical`` adds the BM25 half (``dim=0``: BM25 only)."""
    check_supported(name, config)
    return get_store_type(name).opener(
        index_dir=Path(index_dir),
        uri=uri,
        collection=collection,
        config=config,
        dim=dim,
        create=create,
        lexical=lexical,
    )


def check_where(where: Where | None) -> dict[str, Scalar]:
    """A validated copy of a filter: identifier field names, scalar values (finite numbers)."""
    if not where:
        return {}
    out: dict[str, Scalar] = {}
    for key, value in where.items():
        if not isinstance(key, str) or not FIELD_NAME.match(key):
            raise EmbedlabError(f"filter field {key!r} must be an identifier (letters, digits, _)")
        if not isinstance(value, str | int | float | bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise EmbedlabError(f"filter value for {key!r} must be a string, number or boolean")
        out[key] = value
    return out
