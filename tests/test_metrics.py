"""Retrieval metrics (hand-computed cases, conventions, ranx cross-check on SciFact) and STS correlation."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from embedlab.errors import EmbedlabError
from embedlab.evaluate.metrics import METRICS, Metric, RunScores, evaluate_run, parse_metric, rank
from embedlab.evaluate.sts import sts_correlation

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"

LOG2_3 = math.log2(3)


def one(run, qrels, metric):
    """The score of the single query ``q`` for one metric."""
    return evaluate_run(run, qrels, [metric]).per_query[metric]["q"]


# --- hand-computed cases -----------------------------------------------------------------------------------

BINARY_RUN = {"q": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6, "d5": 0.5}}
BINARY_QRELS = {"q": {"d2": 1, "d4": 1, "d9": 1}}  # relevant at ranks 2 and 4; d9 never retrieved


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("precision@1", 0.0),
        ("precision@3", 1 / 3),
        ("precision@5", 2 / 5),
        ("precision@10", 2 / 10),  # divided by k even though only 5 were retrieved (trec_eval P_10)
        ("recall@1", 0.0),
        ("recall@3", 1 / 3),
        ("recall@5", 2 / 3),
        ("mrr@1", 0.0),
        ("mrr@3", 1 / 2),
        ("map@3", (1 / 2) / 3),
        ("map@5", (1 / 2 + 2 / 4) / 3),  # divided by all 3 relevant, not by the 2 retrieved
        ("ndcg@1", 0.0),
        ("ndcg@5", (1 / LOG2_3 + 1 / math.log2(5)) / (1 + 1 / LOG2_3 + 1 / 2)),
        ("ndcg@100", (1 / LOG2_3 + 1 / math.log2(5)) / (1 + 1 / LOG2_3 + 1 / 2)),
    ],
)
def test_binary_relevance(metric, expected):
    assert one(BINARY_RUN, BINARY_QRELS, metric) == pytest.approx(expected, abs=1e-12)


GRADED_RUN = {"q": {"a": 0.9, "b": 0.8, "c": 0.7}}
GRADED_QRELS = {"q": {"a": 0, "b": 2, "c": 1, "d": 3}}  # a is judged non-relevant; d (grade 3) not retrieved


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        # linear gain = grade; ideal DCG from the judged grades 3, 2, 1 in decreasing order
        ("ndcg@1", 0.0),
        ("ndcg@2", (2 / LOG2_3) / (3 + 2 / LOG2_3)),
        ("ndcg@3", (2 / LOG2_3 + 1 / 2) / (3 + 2 / LOG2_3 + 1 / 2)),
        ("recall@3", 2 / 3),  # grade 0 is not relevant
        ("precision@3", 2 / 3),
        ("mrr@3", 1 / 2),
        ("map@3", (1 / 2 + 2 / 3) / 3),
    ],
)
def test_graded_relevance(metric, expected):
    assert one(GRADED_RUN, GRADED_QRELS, metric) == pytest.approx(expected, abs=1e-12)


def test_ndcg_uses_linear_not_exponential_gain():
    run = {"q": {"low": 2.0, "high": 1.0}}
    qrels = {"q": {"low": 1, "high": 3}}
    linear = (1 + 3 / LOG2_3) / (3 + 1 / LOG2_3)
    burges = (1 + 7 / LOG2_3) / (7 + 1 / LOG2_3)
    assert one(run, qrels, "ndcg@2") == pytest.approx(linear, abs=1e-12)
    assert one(run, qrels, "ndcg@2") != pytest.approx(burges, abs=1e-3)


def test_ties_are_broken_by_descending_doc_id_whatever_the_input_order():
    qrels = {"q": {"y": 1}}
    # x, y, z tie: trec_eval ranks z, y, x (doc id descending), then w.
    for order in (["x", "y", "z", "w"], ["w", "z", "y", "x"], ["y", "w", "x", "z"]):
        run = {"q": {d: (0.5 if d == "w" else 1.0) for d in order}}
        assert rank(run["q"]) == ["z", "y", "x", "w"]
        assert one(run, qrels, "mrr@10") == 0.5
        assert one(run, qrels, "precision@1") == 0.0
        assert one(run, qrels, "ndcg@3") == pytest.approx(1 / LOG2_3, abs=1e-12)
    assert one({"q": {"x": 1.0, "z": 1.0}}, {"q": {"z": 1}}, "mrr@1") == 1.0
    assert one({"q": {"x": 1.0, "z": 1.0}}, {"q": {"x": 1}}, "mrr@1") == 0.0


def test_rank_orders_by_score_then_id_and_cuts():
    assert rank({"a": 1.0, "b": 3.0, "c": 2.0}) == ["b", "c", "a"]
    assert rank({"a": 1.0, "b": 3.0, "c": 2.0}, 2) == ["b", "c"]
    assert rank({"d10": 1.0, "d9": 1.0, "d1": 1.0}) == ["d9", "d10", "d1"]  # string order, not numeric
    assert rank({"a": np.float32(0.5), "b": 1}) == ["b", "a"]  # type: ignore[dict-item]
    assert rank({}) == []


def test_queries_missing_from_the_run_score_zero_and_count_in_the_mean():
    run = {"q1": {"d1": 1.0}, "extra": {"d1": 1.0}}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    scores = evaluate_run(run, qrels, ["ndcg@10", "recall@10", "mrr@10"])
    assert scores.query_ids == ("q1", "q2")
    assert scores.missing_queries == ("q2",)
    for metric in scores.metrics:
        assert scores.per_query[metric] == {"q1": 1.0, "q2": 0.0}
        assert scores.means[metric] == 0.5
    assert "extra" not in scores.per_query["ndcg@10"]  # run queries without judgements are ignored


def test_queries_without_relevant_documents_are_skipped():
    run = {"q1": {"d1": 1.0}, "q2": {"d2": 1.0}}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 0}}
    scores = evaluate_run(run, qrels, ["map@10"])
    assert scores.query_ids == ("q1",)
    assert scores.skipped_queries == ("q2",)
    assert scores.means["map@10"] == 1.0
    with pytest.raises(EmbedlabError, match="no query with a relevant document"):
        evaluate_run(run, {"q2": {"d2": 0}}, ["map@10"])


def test_inputs_are_not_mutated():
    run = {"q": {"d1": 0.2, "d2": 0.9}, "r": {"d3": 0.1}}
    qrels = {"q": {"d2": 1, "d4": 2}, "s": {"d5": 1}}
    run_before, qrels_before = copy.deepcopy(run), copy.deepcopy(qrels)
    evaluate_run(run, qrels, ["ndcg@10", "map@10", "mrr@10", "recall@10", "precision@10"])
    assert run == run_before
    assert list(run["q"]) == ["d1", "d2"]  # not even reordered
    assert qrels == qrels_before


def test_nan_scores_are_refused():
    with pytest.raises(EmbedlabError, match="NaN"):
        evaluate_run({"q": {"d": float("nan")}}, {"q": {"d": 1}}, ["ndcg@10"])


# --- metric names and the registry -------------------------------------------------------------------------


def test_registry_holds_every_metric():
    assert set(METRICS) == {"ndcg", "recall", "precision", "mrr", "map"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ndcg@10", Metric("ndcg", 10)),
        ("nDCG@10", Metric("ndcg", 10)),
        (" recall@100 ", Metric("recall", 100)),
        ("precision@5", Metric("precision", 5)),
        ("MRR@10", Metric("mrr", 10)),
        ("map@1000", Metric("map", 1000)),
    ],
)
def test_parse_metric(text, expected):
    assert parse_metric(text) == expected
    assert str(parse_metric(text)) == text.strip().lower()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ndgc@10", "did you mean 'ndcg@10'"),
        ("recal@5", "did you mean 'recall@5'"),
        ("precison", "did you mean 'precision@10'"),
        ("bleu@4", "Valid metrics are map, mrr, ndcg, precision, recall"),
        ("ndcg", "needs a cutoff"),
        ("ndcg@0", "needs a cutoff"),
        ("ndcg@-1", "needs a cutoff"),
        ("ndcg@ten", "needs a cutoff"),
        ("", "Valid metrics"),
    ],
)
def test_parse_metric_errors(text, message):
    with pytest.raises(EmbedlabError, match=message):
        parse_metric(text)


def test_metric_list_handling():
    run, qrels = {"q": {"d": 1.0}}, {"q": {"d": 1}}
    assert evaluate_run(run, qrels, ["NDCG@10", "ndcg@10", "mrr@5"]).metrics == ("ndcg@10", "mrr@5")
    assert evaluate_run(run, qrels, "ndcg@10").metrics == ("ndcg@10",)
    with pytest.raises(EmbedlabError, match="no metrics"):
        evaluate_run(run, qrels, [])
    with pytest.raises(EmbedlabError, match="did you mean"):
        evaluate_run(run, qrels, ["ndcg@10", "mmr@10"])


# --- the result object -------------------------------------------------------------------------------------


def test_run_scores_is_immutable_serialisable_and_prints_a_table():
    scores = evaluate_run(BINARY_RUN, BINARY_QRELS, ["ndcg@5", "recall@100"])
    assert isinstance(scores, RunScores)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scores.means = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        scores.per_query["ndcg@5"]["q"] = 1.0  # type: ignore[index]
    data = json.loads(json.dumps(scores.to_dict()))
    assert data["metrics"] == ["ndcg@5", "recall@100"]
    assert data["means"]["recall@100"] == 2 / 3  # unrounded
    assert data["per_query"]["ndcg@5"]["q"] == scores.per_query["ndcg@5"]["q"]
    assert data["num_queries"] == 1
    assert str(scores).splitlines() == [
        "metric        mean",
        "ndcg@5      0.4982",
        "recall@100  0.6667",
        "(1 query)",
    ]


# --- real data: SciFact test queries with a BM25 run, checked against ranx ---------------------------------


def _read_scifact() -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as f:
        queries = {q["_id"]: q["text"] for q in map(json.loads, f)}
    qrels: dict[str, dict[str, int]] = {}
    with (SCIFACT / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        next(f)  # header: query-id, corpus-id, score
        for line in f:
            qid, doc_id, grade = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[doc_id] = int(grade)
    return corpus, queries, qrels


@pytest.fixture(scope="module")
def scifact_bm25() -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """A real top-100 BM25 run (bm25s over title + ' ' + text) for the 300 SciFact test queries, and qrels."""
    if not SCIFACT.is_dir():
        pytest.skip(f"real data not found at {SCIFACT}")
    bm25s = pytest.importorskip("bm25s")
    corpus, queries, qrels = _read_scifact()
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([f"{d['title']} {d['text']}" for d in corpus], stopwords="en", show_progress=False),
        show_progress=False,
    )
    query_ids = sorted(qrels)
    tokens = bm25s.tokenize([queries[q] for q in query_ids], stopwords="en", show_progress=False)
    hits, scores = retriever.retrieve(tokens, k=100, show_progress=False, n_threads=1)
    run = {
        qid: {corpus[i]["_id"]: float(s) for i, s in zip(row_hits.tolist(), row_scores.tolist(), strict=True)}
        for qid, row_hits, row_scores in zip(query_ids, hits, scores, strict=True)
    }
    return run, qrels


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:unsafe cast from uint64 to int64")  # inside ranx's numba code
def test_matches_ranx_on_scifact_bm25(scifact_bm25):
    ranx = pytest.importorskip("ranx")
    run, qrels = scifact_bm25
    assert len(run) == len(qrels) == 300
    # BM25 ties often (about a third of these queries have tied scores in their top 100), and ranx breaks
    # ties with an unstable argsort rather than trec_eval's doc-id-descending rule. So ranx gets a tie-free
    # copy whose scores are our trec_eval order made explicit (100, 99, ...); our metrics get the raw run
    # with its ties. Agreement therefore checks the definitions and our tie-breaking at once.
    assert any(len(set(docs.values())) < len(docs) for docs in run.values()), "expected ties in a BM25 run"
    ordered = {qid: {d: float(len(docs) - i) for i, d in enumerate(rank(docs))} for qid, docs in run.items()}
    # Five queries are left out of the run: both sides must score them 0 (ranx via make_comparable).
    dropped = sorted(qrels)[::60]
    for qid in dropped:
        del run[qid], ordered[qid]

    metrics = [f"{name}@{k}" for name in ("ndcg", "recall", "precision", "mrr", "map") for k in (1, 3, 10, 100)]
    ours = evaluate_run(run, qrels, metrics)
    assert ours.missing_queries == tuple(q for q in qrels if q in dropped)
    ranx_run = ranx.Run(ordered)
    ranx.evaluate(ranx.Qrels(qrels), ranx_run, metrics, make_comparable=True)  # ranx's ndcg is linear-gain
    for metric in metrics:
        assert ours.means[metric] == pytest.approx(ranx_run.mean_scores[metric], abs=1e-6), metric
        for qid in qrels:
            assert ours.per_query[metric][qid] == pytest.approx(ranx_run.scores[metric][qid], abs=1e-6), (
                metric,
                qid,
            )
    assert 0.5 < ours.means["ndcg@10"] < 0.8  # BM25 on SciFact is about 0.67 (BEIR)


@pytest.mark.slow
def test_fast_enough_for_300_queries_100_hits_10_metrics(scifact_bm25):
    run, qrels = scifact_bm25
    metrics = [f"{name}@{k}" for name in ("ndcg", "recall", "precision", "mrr", "map") for k in (10, 100)]
    start = time.perf_counter()
    evaluate_run(run, qrels, metrics)
    assert time.perf_counter() - start < 0.5


# --- STS correlation ---------------------------------------------------------------------------------------


def test_sts_correlation_values():
    gold = [0.0, 1.0, 2.5, 4.0, 5.0, 3.0]
    predicted = [0.1, 0.3, 0.2, 0.8, 0.9, 0.7]
    result = sts_correlation(predicted, gold)
    assert set(result) == {"spearman", "pearson"}
    assert result["pearson"] == pytest.approx(np.corrcoef(predicted, gold)[0, 1], abs=1e-12)
    ranks_p, ranks_g = np.argsort(np.argsort(predicted)), np.argsort(np.argsort(gold))
    assert result["spearman"] == pytest.approx(np.corrcoef(ranks_p, ranks_g)[0, 1], abs=1e-12)
    assert sts_correlation([1, 2, 3], [30, 20, 10]) == {
        "spearman": pytest.approx(-1.0),
        "pearson": pytest.approx(-1),
    }
    assert sts_correlation([0.1, 0.2, 0.9], [1, 2, 3])["spearman"] == pytest.approx(1.0)  # fraction, not ×100


def test_sts_correlation_with_ties_matches_scipy():
    predicted = [0.5, 0.5, 0.2, 0.9, 0.9, 0.1]
    gold = [3.0, 2.0, 2.0, 5.0, 4.0, 0.0]
    assert sts_correlation(predicted, gold)["spearman"] == pytest.approx(stats.spearmanr(predicted, gold)[0])


@pytest.mark.parametrize(
    ("predicted", "gold", "message"),
    [
        ([0.1, 0.2], [1.0, 2.0, 3.0], "2 predicted scores for 3 gold"),
        ([0.1], [1.0], "at least two"),
        ([0.1, float("nan"), 0.3], [1.0, 2.0, 3.0], "NaN"),
        ([0.5, 0.5, 0.5], [1.0, 2.0, 3.0], "all predicted scores are equal"),
        ([0.1, 0.2, 0.3], [2.0, 2.0, 2.0], "all gold scores are equal"),
    ],
)
def test_sts_correlation_errors(predicted, gold, message):
    with pytest.raises(EmbedlabError, match=message):
        sts_correlation(predicted, gold)
