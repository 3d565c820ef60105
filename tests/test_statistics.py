"""Statistics: bootstrap intervals, paired tests and Holm, cross-checked by hand and on real per-query scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from embedlab.errors import EmbedlabError
from embedlab.evaluate.compare import compare
from embedlab.evaluate.metrics import RunScores
from embedlab.evaluate.statistics import (
    analyse,
    bootstrap_intervals,
    compare_to_reference,
    holm,
    paired_t_test,
    randomization_test,
)


def test_holm_matches_the_textbook_step_down() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Sorted: 0.005×4, 0.01×3, 0.03×2, 0.04×1 → made monotone: 0.02, 0.03, 0.06, max(0.06, 0.04).
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_bootstrap_interval_agrees_with_scipy() -> None:
    from scipy.stats import bootstrap

    values = np.random.default_rng(1).beta(2, 5, size=300)
    ours = bootstrap_intervals({"x": values}, resamples=5000, seed=3)["x"]
    theirs = bootstrap(
        (values,), np.mean, n_resamples=5000, method="percentile", rng=np.random.default_rng(11)
    ).confidence_interval
    assert ours.low < values.mean() < ours.high
    assert ours.low == pytest.approx(theirs.low, abs=0.004)
    assert ours.high == pytest.approx(theirs.high, abs=0.004)
    # Fixed seed: the same interval every time; fewer queries: a wider interval.
    assert bootstrap_intervals({"x": values}, resamples=5000, seed=3)["x"] == ours
    wider = bootstrap_intervals({"x": values[:30]}, resamples=5000, seed=3)["x"]
    assert wider.high - wider.low > ours.high - ours.low
    # Several series at once: each gets the interval it gets alone (same seed, same query draws).
    both = bootstrap_intervals({"x": values, "y": values[::-1] * 2}, resamples=5000, seed=3)
    assert (both["x"].low, both["x"].high) == pytest.approx((ours.low, ours.high), abs=1e-12)


def test_bootstrap_of_a_constant_series_is_the_point() -> None:
    constant = bootstrap_intervals({"c": [0.5] * 10, "v": np.linspace(0, 1, 10)}, resamples=200)["c"]
    assert (constant.low, constant.high) == (0.5, 0.5)
    single = bootstrap_intervals({"one": [0.7]}, resamples=200)["one"]
    assert (single.low, single.high) == (0.7, 0.7)
    with pytest.raises(EmbedlabError, match="equal length"):
        bootstrap_intervals({"a": [0.1, 0.2], "b": [0.3]})


def test_randomization_test_equals_exact_sign_flip_enumeration() -> None:
    rng = np.random.default_rng(2)
    a = rng.random(10)
    b = a - rng.normal(0.1, 0.2, size=10)
    difference = a - b
    observed = abs(difference.mean())
    flips = np.array(list(itertools.product([1, -1], repeat=10)))
    exact = float(np.mean(np.abs((flips * difference).mean(axis=1)) >= observed - 1e-12))
    # 2^10 = 1024 ≤ resamples, so scipy enumerates every sign flip: the p-value is exact.
    assert randomization_test(a, b, resamples=5000) == pytest.approx(exact)


def test_paired_tests_see_a_real_shift_and_not_noise() -> None:
    rng = np.random.default_rng(4)
    a = rng.random(200)
    shifted = np.clip(a - 0.1 + rng.normal(0, 0.05, 200), 0, 1)
    for test in (randomization_test, paired_t_test):
        assert test(a, shifted, resamples=2000, seed=0) < 0.001
        assert test(a, a.copy(), resamples=2000, seed=0) == 1.0
    noise = a[rng.permutation(200)]
    assert randomization_test(a, noise, resamples=2000) > 0.01


def test_compare_to_reference_corrects_and_counts() -> None:
    rng = np.random.default_rng(5)
    best = rng.random(100)
    scores = {
        "best": dict(enumerate(best.tolist())),
        "same": dict(enumerate(best.tolist())),
        "worse": dict(enumerate((best * 0.5).tolist())),
    }
    scores = {name: {str(q): v for q, v in per_query.items()} for name, per_query in scores.items()}
    tests = compare_to_reference(scores, "best", metric="ndcg@10", resamples=1000)
    assert set(tests) == {"same", "worse"}
    assert tests["same"].tied and tests["same"].p_adjusted == 1.0 and tests["same"].ties == 100
    assert not tests["worse"].tied and tests["worse"].losses == int((best > 0).sum())
    assert tests["worse"].p_adjusted >= tests["worse"].p_value
    assert tests["worse"].difference == pytest.approx(-0.5 * best.mean())
    assert tests["worse"].difference in tests["worse"].difference_interval
    with pytest.raises(EmbedlabError, match="other queries"):
        compare_to_reference({"a": {"q1": 1.0}, "b": {"q2": 1.0}}, "a", metric="ndcg@10")
    with pytest.raises(EmbedlabError, match="unknown test"):
        compare_to_reference(scores, "best", metric="ndcg@10", method="sign-test")


def _degraded(scores: RunScores, factor: float) -> RunScores:
    per_query = {m: {q: v * factor for q, v in scores.per_query[m].items()} for m in scores.metrics}
    means = {m: float(np.mean(list(per_query[m].values()))) for m in scores.metrics}
    return RunScores(scores.metrics, per_query, means, scores.query_ids)


def test_analyse_real_models_on_scifact(scifact_small, vector_cache) -> None:
    comparison = compare(scifact_small, ["minilm-l6", "bm25"], k_values=(10, 100), cache=vector_cache)
    scores = {r.name: r.scores for r in comparison.results}
    # A model with half of minilm-l6's score on every query must come out significantly below the best.
    scores["half"] = _degraded(scores["minilm-l6"], 0.5)
    stats = analyse(scores, metric="ndcg@10", resamples=2000, seed=0)
    means = {name: s.means["ndcg@10"] for name, s in scores.items()}
    assert stats.best == max(means, key=lambda n: means[n])
    assert stats.names()[0] == stats.best and stats[stats.best].verdict == "best"
    assert stats["half"].verdict == "below best"
    assert stats.num_queries == len(scifact_small.queries)
    for model in stats.models:
        for metric in ("ndcg@10", "recall@100"):
            interval = model.intervals[metric]
            assert interval.low <= model.means[metric] <= interval.high
        test = model.versus_best
        if test is not None:
            assert model.verdict == ("tied" if test.p_adjusted >= stats.alpha else "below best")
            assert test.wins + test.ties + test.losses == stats.num_queries
    assert stats.tied_with_best()[0] == stats.best
    table = str(stats)
    assert table.splitlines()[0].split()[:3] == ["model", "ndcg@10", "95%"]
    assert "half" in table and "Holm" in table
    payload = stats.to_dict()
    assert payload["correction"] == "holm" and len(payload["models"]) == 3
