"""Deploy: put a model's vectors in a vector database, measure what approximate search costs, serve it.

The stage in modules, each with its manual:

* :mod:`embedlab.index.config` — :class:`IndexConfig`, the one validated set of index settings;
* :mod:`embedlab.index.store` — the :class:`VectorStore` protocol and the store registry (``faiss``, ``milvus``);
* :mod:`embedlab.index.faiss_store`, :mod:`embedlab.index.milvus_store` — the two stores;
* :mod:`embedlab.index.lexical` — the BM25 half the FAISS store keeps for ``bm25`` and ``hybrid`` indexes;
* :mod:`embedlab.index.build` — :func:`build_index`: batched, idempotent, resumable indexing of a dense model,
  ``bm25`` or ``hybrid[:MODEL]``, and its manifest;
* :mod:`embedlab.index.searcher` — :class:`IndexSearcher`: an index folder opened for text queries;
* :mod:`embedlab.index.sweep` — :func:`sweep`: recall, nDCG lost, speed and memory against exact search.

:mod:`embedlab.serve` puts an :class:`IndexSearcher` behind HTTP. Importing this package loads no FAISS, Milvus
or model code; that happens when a store or model is opened.

Example::

    >>> from embedlab.index import IndexConfig, build_index
    >>> manifest = build_index(dataset, "minilm-l6", out=Path("indexes/scifact"), config=IndexConfig(index="hnsw"))
"""

from __future__ import annotations

from embedlab.index.build import IndexManifest, build_index
from embedlab.index.config import IndexConfig
from embedlab.index.searcher import IndexSearcher
from embedlab.index.store import STORES, Hit, VectorStore, check_supported, open_store
from embedlab.index.sweep import SweepGrid, SweepResult, sweep

__all__ = [
    "STORES",
    "Hit",
    "IndexConfig",
    "IndexManifest",
    "IndexSearcher",
    "SweepGrid",
    "SweepResult",
    "VectorStore",
    "build_index",
    "check_supported",
    "open_store",
    "sweep",
]
