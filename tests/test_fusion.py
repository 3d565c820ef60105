"""Reciprocal rank fusion: the definition, cross-checked against ranx, and a real BM25 + MiniLM hybrid."""

from __future__ import annotations

import copy
import warnings

import pytest

from embedlab.errors import EmbedlabError
from embedlab.evaluate.compare import compare
from embedlab.evaluate.metrics import evaluate_run, rank
from embedlab.fusion import reciprocal_rank_fusion


def test_rrf_follows_the_definition() -> None:
    bm25 = {"q1": {"d1": 12.0, "d2": 7.5}}
    dense = {"q1": {"d2": 0.81, "d3": 0.64}}
    fused = reciprocal_rank_fusion([bm25, dense])
    assert list(fused["q1"]) == ["d2", "d1", "d3"]
    assert fused["q1"]["d2"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["q1"]["d3"] == pytest.approx(1 / 62)
    assert reciprocal_rank_fusion([bm25, dense], k=0)["q1"]["d2"] == pytest.approx(1 / 2 + 1)


def test_rrf_agrees_with_ranx(scifact_small, vector_cache) -> None:
    from ranx import Run, fuse

    comparison = compare(scifact_small, ["bm25", "minilm-l6"], k_values=(100,), cache=vector_cache)
    # ranx keeps tied documents in input order, embedlab in trec_eval's order: compare on untied rankings.
    runs = [
        {q: {d: 1.0 / position for position, d in enumerate(rank(docs), start=1)} for q, docs in r.run.items()}
        for r in comparison.results
    ]
    ours = reciprocal_rank_fusion(runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = fuse(runs=[Run(copy.deepcopy(r)) for r in runs], method="rrf", params={"k": 60}).to_dict()
    assert set(ours) == set(theirs)
    for qid in ours:
        assert set(ours[qid]) == set(theirs[qid])  # (fused ties may again be listed in another order)
        for doc_id, score in ours[qid].items():
            assert score == pytest.approx(theirs[qid][doc_id])


def test_hybrid_of_real_runs_is_a_full_run(scifact_small, vector_cache) -> None:
    comparison = compare(scifact_small, ["bm25", "minilm-l6"], k_values=(10, 100), cache=vector_cache)
    runs = [r.run for r in comparison.results]
    before = copy.deepcopy(runs)
    fused = reciprocal_rank_fusion(runs, depth=100)
    assert runs == before  # inputs untouched
    assert set(fused) == {q.id for q in scifact_small.queries}
    for qid, docs in fused.items():
        assert 0 < len(docs) <= 100
        assert set(docs) <= set(runs[0].get(qid, {})) | set(runs[1][qid])
        scores = list(docs.values())
        assert scores == sorted(scores, reverse=True)
    # A document both runs rank first has the highest possible fused score (2 / 61): it must come first.
    agreed = [q for q in fused if rank(runs[0].get(q, {}), 1) == rank(runs[1][q], 1)]
    assert agreed
    for qid in agreed:
        assert next(iter(fused[qid])) == rank(runs[1][qid], 1)[0]
    hybrid = evaluate_run(fused, scifact_small.qrels, ["ndcg@10"])
    assert 0 < hybrid.means["ndcg@10"] <= 1


def test_a_zero_weight_leaves_the_other_ranking() -> None:
    a = {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}
    b = {"q": {"z": 9.0, "y": 8.0}}
    assert list(reciprocal_rank_fusion([a, b], weights=[1.0, 0.0])["q"]) == ["x", "y", "z"]
    assert list(reciprocal_rank_fusion([a, b], depth=2)["q"]) == ["z", "y"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k": -1}, "k must be"), ({"weights": [1.0]}, "one weight per run"), ({"depth": 0}, "depth")],
)
def test_rrf_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(EmbedlabError, match=message):
        reciprocal_rank_fusion([{"q": {"d": 1.0}}, {"q": {"d": 2.0}}], **kwargs)
    with pytest.raises(EmbedlabError, match="at least one run"):
        reciprocal_rank_fusion([])
