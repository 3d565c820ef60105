"""Retrieval: exact dense top-k search and the BM25 lexical baseline, behind one :class:`Retriever` protocol.

:func:`exact_top_k` scores queries against documents in chunks, so memory stays bounded by
``query_chunk × doc_chunk`` floats whatever the corpus size, and selects each chunk's top-k without sorting it
(about 1.2–1.6× the time of the matrix product alone on 1M × 384 vectors: ``benchmarks/topk_speed.py``). Scores are dot
products; encoders of cosine models return unit vectors, so the dot product is their cosine.

A retriever turns a :class:`~embedlab.data.RetrievalDataset` into a *run* — ``{query_id: {doc_id: score}}``, the
format the metrics take — plus timings::

    >>> retriever = build_retriever("bm25")
    >>> result = retriever.retrieve(dataset, k=100)
    >>> result.run["q1"]   # {doc_id: score, ...}, the 100 best
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from embedlab.data.dataset import RetrievalDataset
from embedlab.embedding import EmbeddingCache, count_truncated, embed
from embedlab.models.catalog import ModelSpec, find_spec, get_spec
from embedlab.models.encoders import Encoder, Vectors
from embedlab.models.loading import load_encoder

Run = dict[str, dict[str, float]]


# Below this many scores a search takes milliseconds either way, and numpy spares importing torch (about 1.4 s of
# a re-run that reads every vector from the cache); above it, torch.topk's threads win.
TORCH_TOPK_FROM = 1 << 24


def exact_top_k(
    queries: Vectors,
    documents: Vectors,
    k: int,
    *,
    query_chunk: int = 1024,
    doc_chunk: int = 65536,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The ``k`` highest dot-product scores per query, best first, and the documents' row indices.

    Each block of ``query_chunk × doc_chunk`` scores is one BLAS product written into a reused buffer; its
    best ``k`` per query are selected without a full sort and without copies of the block (``torch.topk``,
    multi-threaded, for large searches; ``numpy.argpartition`` below :data:`TORCH_TOPK_FROM` scores), and the
    blocks' winners are merged at the end. Memory is bounded by ``query_chunk × doc_chunk`` floats plus
    ``query_chunk × k × blocks`` candidates. Ties keep the lower document index first among the selected.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    documents = np.asarray(documents, dtype=np.float32)
    n_docs, n_queries = documents.shape[0], queries.shape[0]
    k = min(k, n_docs)
    top_scores = np.empty((n_queries, k), dtype=np.float32)
    top_index = np.empty((n_queries, k), dtype=np.int64)
    if k == 0 or n_queries == 0:
        return top_scores, top_index
    select = _torch_top_k if n_queries * n_docs >= TORCH_TOPK_FROM else _numpy_top_k
    query_chunk, doc_chunk = max(1, query_chunk), max(1, doc_chunk)
    buffer = np.empty((min(query_chunk, n_queries), min(doc_chunk, n_docs)), dtype=np.float32)
    for q0 in range(0, n_queries, query_chunk):
        block = queries[q0 : q0 + query_chunk]
        cand_s, cand_i = [], []
        for d0 in range(0, n_docs, doc_chunk):
            chunk = documents[d0 : d0 + doc_chunk]
            scores = buffer[: block.shape[0], : chunk.shape[0]]
            np.matmul(block, chunk.T, out=scores)
            best_s, best_i = select(scores, min(k, chunk.shape[0]))
            cand_s.append(best_s)
            cand_i.append(best_i + d0)
        block_s = np.concatenate(cand_s, axis=1) if len(cand_s) > 1 else cand_s[0]
        block_i = np.concatenate(cand_i, axis=1) if len(cand_i) > 1 else cand_i[0]
        if block_s.shape[1] > k:
            best_s, position = select(block_s, k)
            block_s, block_i = best_s, np.take_along_axis(block_i, position, axis=1)
        order = np.lexsort((block_i, -block_s), axis=1)
        top_scores[q0 : q0 + block.shape[0]] = np.take_along_axis(block_s, order, axis=1)
        top_index[q0 : q0 + block.shape[0]] = np.take_along_axis(block_i, order, axis=1)
    return top_scores, top_index


def _torch_top_k(scores: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Each row's ``k`` best (unordered): values and column indices."""
    import torch

    with torch.inference_mode():
        values, index = torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False)
    return values.numpy(), index.numpy()


def _numpy_top_k(scores: NDArray[np.float32], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Each row's ``k`` best (unordered): values and column indices."""
    index = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k :]
    return np.take_along_axis(scores, index, axis=1), index.astype(np.int64, copy=False)


@dataclass
class RetrievalResult:
    """A run and what it cost. Seconds are wall time; ``cached_documents`` tells whether vectors were reused."""

    run: Run
    index_seconds: float
    search_seconds: float
    documents: int
    queries: int
    truncated_documents: int = 0
    details: dict[str, object] = field(default_factory=dict)

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.index_seconds if self.index_seconds > 0 else float("inf")


class Retriever(Protocol):
    """Anything that ranks a data set's corpus for each of its queries."""

    spec: ModelSpec

    def retrieve(self, dataset: RetrievalDataset, *, k: int, show_progress: bool = False) -> RetrievalResult: ...


def _to_run(dataset: RetrievalDataset, scores: NDArray[np.float32], index: NDArray[np.int64]) -> Run:
    doc_ids = [d.id for d in dataset.corpus]
    return {
        query.id: {doc_ids[j]: float(s) for s, j in zip(row_s, row_i, strict=True)}
        for query, row_s, row_i in zip(dataset.queries, scores, index, strict=True)
    }


class DenseRetriever:
    """Embeds corpus and queries with an encoder (through the cache) and searches exactly."""

    def __init__(self, encoder: Encoder, *, cache: EmbeddingCache | None = None, batch_size: int = 32):
        self.encoder = encoder
        self.spec = encoder.spec
        self.cache = cache
        self.batch_size = batch_size

    def embed_corpus(self, dataset: RetrievalDataset, *, show_progress: bool = False) -> Vectors:
        texts = [d.full_text for d in dataset.corpus]
        return embed(
            self.encoder,
            texts,
            role="document",
            cache=self.cache,
            batch_size=self.batch_size,
            show_progress=show_progress,
        )

    def embed_queries(self, dataset: RetrievalDataset, *, show_progress: bool = False) -> Vectors:
        texts = [q.text for q in dataset.queries]
        return embed(
            self.encoder, texts, role="query", cache=self.cache, batch_size=self.batch_size, show_progress=show_progress
        )

    def retrieve(self, dataset: RetrievalDataset, *, k: int, show_progress: bool = False) -> RetrievalResult:
        start = time.perf_counter()
        documents = self.embed_corpus(dataset, show_progress=show_progress)
        index_seconds = time.perf_counter() - start
        start = time.perf_counter()
        queries = self.embed_queries(dataset, show_progress=show_progress)
        scores, index = exact_top_k(queries, documents, k)
        search_seconds = time.perf_counter() - start
        truncated = count_truncated(self.encoder, [d.full_text for d in dataset.corpus], cache=self.cache)
        return RetrievalResult(
            run=_to_run(dataset, scores, index),
            index_seconds=index_seconds,
            search_seconds=search_seconds,
            documents=len(dataset.corpus),
            queries=len(dataset.queries),
            truncated_documents=truncated,
            details={"fingerprint": self.encoder.fingerprint, "dim": int(documents.shape[1])},
        )


BM25_K1 = 1.5
BM25_B = 0.75
BM25_STOPWORDS = "en"


def bm25_tokenize(texts: Sequence[str], *, show_progress: bool = False) -> Any:
    """Texts as BM25 sees them: lower-cased words of two or more characters, English stop words removed."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords=BM25_STOPWORDS, show_progress=show_progress)


def build_bm25(texts: Sequence[str], *, k1: float = BM25_K1, b: float = BM25_B, show_progress: bool = False) -> Any:
    """A bm25s index (Lucene scoring) over ``texts``, rows in their order. The one place BM25 is built, so
    ``compare``, ``select`` and an index's lexical half score every document identically."""
    import bm25s

    model = bm25s.BM25(k1=k1, b=b)
    model.index(bm25_tokenize(texts, show_progress=show_progress), show_progress=show_progress)
    return model


def bm25_top_k(
    model: Any,
    texts: Sequence[str],
    k: int,
    *,
    weight_mask: NDArray[np.float32] | None = None,
    show_progress: bool = False,
) -> list[list[tuple[int, float]]]:
    """Per query text, up to ``k`` ``(row, score)`` pairs, best first; rows no query word matches (score 0, or
    masked out by ``weight_mask``) are left out."""
    if not texts:
        return []
    k = min(k, int(model.scores["num_docs"]))
    if k < 1:
        return [[] for _ in texts]
    tokens = bm25_tokenize(texts)
    index, scores = model.retrieve(tokens, k=k, show_progress=show_progress, n_threads=1, weight_mask=weight_mask)
    return [
        [(int(j), float(s)) for j, s in zip(row_i, row_s, strict=True) if s > 0]
        for row_i, row_s in zip(index, scores, strict=True)
    ]


class BM25Retriever:
    """BM25 (bm25s, Lucene scoring) over lower-cased words with English stop words removed."""

    def __init__(self, spec: ModelSpec | None = None, *, k1: float = BM25_K1, b: float = BM25_B):
        self.spec: ModelSpec = spec or get_spec("bm25")
        self.k1 = k1
        self.b = b

    def retrieve(self, dataset: RetrievalDataset, *, k: int, show_progress: bool = False) -> RetrievalResult:
        start = time.perf_counter()
        model = build_bm25([d.full_text for d in dataset.corpus], k1=self.k1, b=self.b, show_progress=show_progress)
        index_seconds = time.perf_counter() - start
        start = time.perf_counter()
        found = bm25_top_k(model, [q.text for q in dataset.queries], k, show_progress=show_progress)
        search_seconds = time.perf_counter() - start
        doc_ids = [d.id for d in dataset.corpus]
        # A score of 0 means no query word matched: not a retrieved document.
        run: Run = {
            query.id: {doc_ids[j]: s for j, s in row} for query, row in zip(dataset.queries, found, strict=True)
        }
        return RetrievalResult(
            run=run,
            index_seconds=index_seconds,
            search_seconds=search_seconds,
            documents=len(dataset.corpus),
            queries=len(dataset.queries),
        )


def build_retriever(
    name_or_path: str | Path, *, cache: EmbeddingCache | None = None, batch_size: int = 32
) -> Retriever:
    """A retriever for a catalog name (``bm25`` is lexical), a local model folder or a hub id."""
    spec = find_spec(str(name_or_path))
    if spec is not None and spec.kind == "bm25":
        return BM25Retriever(spec)
    return DenseRetriever(load_encoder(name_or_path), cache=cache, batch_size=batch_size)


def retrieval_ndcg(
    encoder: Encoder,
    dataset: RetrievalDataset,
    *,
    batch_size: int = 32,
    cache: EmbeddingCache | None = None,
    show_progress: bool = False,
) -> float:
    """Mean nDCG@10 of exact dense retrieval with ``encoder`` on ``dataset`` (0–1), vectors through ``cache``."""
    from embedlab.evaluate.metrics import evaluate_run

    retriever = DenseRetriever(encoder, cache=cache, batch_size=batch_size)
    outcome = retriever.retrieve(dataset, k=10, show_progress=show_progress)
    return float(evaluate_run(outcome.run, dataset.qrels, ["ndcg@10"]).means["ndcg@10"])


@dataclass(frozen=True)
class RetrievalNdcg:
    """:func:`retrieval_ndcg` on one dataset, as the nDCG check that
    :func:`embedlab.models.backends.calibrate` takes (``calibrate(encoder, ndcg=RetrievalNdcg(dataset))``)."""

    dataset: RetrievalDataset
    batch_size: int = 32

    @property
    def key(self) -> str:
        return self.dataset.content_hash

    def __call__(self, encoder: Encoder) -> float:
        return retrieval_ndcg(encoder, self.dataset, batch_size=self.batch_size)
