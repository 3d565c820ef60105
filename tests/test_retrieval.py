"""Exact top-k equals brute force in any chunking; BM25 and dense retrieval find relevant SciFact abstracts."""

from __future__ import annotations

import numpy as np
import pytest

from embedlab import retrieval
from embedlab.evaluate.metrics import evaluate_run
from embedlab.retrieval import BM25Retriever, DenseRetriever, build_retriever, exact_top_k


@pytest.mark.parametrize("selector", ["numpy", "torch"])
@pytest.mark.parametrize(("query_chunk", "doc_chunk"), [(1, 1), (7, 93), (1024, 65536)])
def test_exact_top_k_matches_brute_force(
    query_chunk: int, doc_chunk: int, selector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small searches select with numpy, large ones with torch: both must give brute force's answer.
    monkeypatch.setattr(retrieval, "TORCH_TOPK_FROM", 1 << 62 if selector == "numpy" else 0)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    documents = rng.standard_normal((1000, 16)).astype(np.float32)
    scores, index = exact_top_k(queries, documents, 10, query_chunk=query_chunk, doc_chunk=doc_chunk)
    full = queries @ documents.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-6)


def test_exact_top_k_with_k_above_corpus_size() -> None:
    documents = np.eye(3, dtype=np.float32)
    scores, index = exact_top_k(np.array([[0.1, 0.9, 0.5]], dtype=np.float32), documents, 10)
    assert index.tolist() == [[1, 2, 0]]
    assert scores.shape == (1, 3)


def test_bm25_finds_relevant_abstracts(scifact_small) -> None:
    result = BM25Retriever().retrieve(scifact_small, k=10)
    assert set(result.run) <= {q.id for q in scifact_small.queries}
    ndcg = evaluate_run(result.run, scifact_small.qrels, ["ndcg@10"]).means["ndcg@10"]
    assert ndcg > 0.5  # a small corpus: lexical matching alone ranks most relevant abstracts high


def test_dense_retrieval_with_real_model(scifact_small) -> None:
    retriever = build_retriever("minilm-l6")
    assert isinstance(retriever, DenseRetriever)
    result = retriever.retrieve(scifact_small, k=10)
    assert all(len(hits) == 10 for hits in result.run.values())
    ndcg = evaluate_run(result.run, scifact_small.qrels, ["ndcg@10"]).means["ndcg@10"]
    assert ndcg > 0.6
    assert result.truncated_documents > 0  # some SciFact abstracts exceed 256 tokens
