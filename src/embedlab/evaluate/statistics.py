"""Statistics on per-query metrics: is the top model really better, or only tied within noise?

A mean over a few hundred queries moves by several points when the queries change, so every figure a report
shows comes with its uncertainty, computed from the per-query scores that
:func:`~embedlab.evaluate.metrics.evaluate_run` keeps:

* **Confidence intervals** — :func:`bootstrap_intervals`: percentile bootstrap over queries (10,000
  resamples by default, fixed seed), for the mean of every metric of every model, computed as one matrix
  product per chunk of resamples (it agrees with :func:`scipy.stats.bootstrap`'s percentile method, which the
  tests check, at a small fraction of the time). The same resampled query sets are used for every model and
  metric, so intervals are comparable side by side. The percentile method rather than BCa: BCa's jackknife is
  quadratic in the number of queries, and with hundreds of queries both agree to the third decimal.
* **Paired tests against the best** — :func:`compare_to_reference`: for every model, the per-query differences
  to the reference model (by default the best one on the primary metric) are tested with a paired
  randomization test (sign flips of the differences, scipy's :func:`scipy.stats.permutation_test`,
  two-sided; p is never 0 because the observed statistic counts as one of the resamples) or a paired t-test
  (:data:`TESTS`, picked by name). The p-values of all the comparisons are corrected together with
  :func:`holm` (Holm–Bonferroni, which controls the family-wise error rate without assuming independence).
* **Ties** — a model whose corrected p-value is at least ``alpha`` (0.05) cannot be told apart from the best:
  it is *tied* with it. Each comparison also carries the bootstrap interval of the mean difference and the
  per-query wins, ties and losses.

:func:`analyse` does all of it for a set of models and returns a :class:`Statistics`; printing it gives::

    model           ndcg@10  95% CI          Δ best   p (Holm)  verdict
    --------------  -------  -------------  -------  --------  ----------
    mpnet-base        65.21  61.02–69.30          -         -  best
    minilm-l6         64.48  60.19–68.64      -0.73    0.4122  tied
    bm25              60.11  55.60–64.41      -5.10    0.0021  below best

Example::

    >>> scores = {name: evaluate_run(run, dataset.qrels, ["ndcg@10"]) for name, run in runs.items()}
    >>> stats = analyse(scores, metric="ndcg@10", seed=0)
    >>> stats.tied_with_best()          # the models that cannot be told apart from the best
    ['mpnet-base', 'minilm-l6']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from embedlab.errors import EmbedlabError
from embedlab.evaluate.metrics import RunScores
from embedlab.files import format_table

FloatArray = npt.NDArray[np.float64]
Verdict = Literal["best", "tied", "below best"]

# Floats held in memory by one bootstrap batch; bounds memory whatever the number of queries.
_BOOTSTRAP_BATCH_FLOATS = 4_000_000


@dataclass(frozen=True, slots=True)
class Interval:
    """A confidence interval ``[low, high]`` at ``confidence`` (0.95 is a 95% interval)."""

    low: float
    high: float
    confidence: float = 0.95

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "confidence": self.confidence}


def bootstrap_intervals(
    values: Mapping[str, Sequence[float] | FloatArray],
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile-bootstrap intervals of the mean of each named series (all of the same length, one per query).

    A resample of ``n`` queries drawn with replacement is a vector of multinomial counts, so the resampled means
    of every series are one matrix product (counts × values / n), in chunks that bound memory. Every series is
    resampled with the same query draws (one seed), so intervals of several metrics or models come from the
    same resampled query sets. A constant series, or a single query, gets the degenerate ``[value, value]``.
    """
    names = list(values)
    if not names:
        return {}
    series = [np.asarray(values[name], dtype=np.float64) for name in names]
    if len({s.shape for s in series}) != 1 or series[0].ndim != 1:
        raise EmbedlabError("bootstrap needs series of equal length, one value per query")
    matrix = np.stack(series)
    n = matrix.shape[1]
    if n == 0:
        raise EmbedlabError("bootstrap needs at least one query")
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_BATCH_FLOATS // max(n, matrix.shape[0]))
    means = np.empty((resamples, matrix.shape[0]))
    uniform = np.full(n, 1.0 / n)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = rng.multinomial(n, uniform, size=size).astype(np.float64)
        means[start : start + size] = counts @ matrix.T / n
    tail = 100 * (1 - confidence) / 2
    lows, highs = np.percentile(means, [tail, 100 - tail], axis=0)
    out = {}
    for i, name in enumerate(names):
        mean = float(matrix[i].mean())
        if np.ptp(matrix[i]) == 0:
            out[name] = Interval(mean, mean, confidence)
        else:
            # Clip to the mean: float rounding must never put the mean outside its own interval.
            out[name] = Interval(min(float(lows[i]), mean), max(float(highs[i]), mean), confidence)
    return out


def _mean_difference(x: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
    return np.asarray(np.mean(x - y, axis=axis))


def randomization_test(a: FloatArray, b: FloatArray, *, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomization test of mean(a − b) = 0: the sign of each query's difference is flipped
    at random ``resamples`` times. Identical series give p = 1."""
    from scipy.stats import permutation_test

    if np.array_equal(a, b):
        return 1.0
    result = permutation_test(
        (a, b),
        _mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, result.pvalue))


def paired_t_test(a: FloatArray, b: FloatArray, *, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired t-test of mean(a − b) = 0 (``resamples`` and ``seed`` are unused). Identical or
    constant-difference series give p = 1 when the mean difference is 0, else p = 0."""
    from scipy.stats import ttest_rel

    difference = a - b
    if np.ptp(difference) == 0:
        return 1.0 if difference.size == 0 or difference[0] == 0 else 0.0
    return float(ttest_rel(a, b).pvalue)


PairedTestFunction = Callable[..., float]

TESTS: Mapping[str, PairedTestFunction] = MappingProxyType(
    {"randomization": randomization_test, "t-test": paired_t_test}
)
"""The paired tests, by name: each takes two aligned per-query arrays and returns a two-sided p-value."""


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order (step-down, made monotone, capped at 1).

    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - rank) * float(p[index])))
        adjusted[index] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class PairedComparison:
    """One model against the reference on one metric: mean difference (model − reference) with its bootstrap
    interval, raw and Holm-corrected p-values, whether it is tied with the reference, and per-query counts."""

    model: str
    reference: str
    metric: str
    difference: float
    difference_interval: Interval
    p_value: float
    p_adjusted: float
    tied: bool
    wins: int
    ties: int
    losses: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "reference": self.reference,
            "metric": self.metric,
            "difference": self.difference,
            "difference_interval": self.difference_interval.to_dict(),
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "tied": self.tied,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
        }


def _aligned(per_query: Mapping[str, Mapping[str, float]]) -> tuple[list[str], dict[str, FloatArray]]:
    names = list(per_query)
    if not names:
        raise EmbedlabError("no models to compare")
    query_ids = list(per_query[names[0]])
    for name in names[1:]:
        if set(per_query[name]) != set(query_ids):
            raise EmbedlabError(
                f"'{name}' was scored on other queries than '{names[0]}': paired statistics need the same queries"
            )
    return query_ids, {name: np.array([per_query[name][q] for q in query_ids]) for name in names}


def compare_to_reference(
    per_query: Mapping[str, Mapping[str, float]],
    reference: str,
    *,
    metric: str,
    method: str = "randomization",
    alpha: float = 0.05,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, PairedComparison]:
    """Test every model in ``per_query`` (model -> query id -> score) against ``reference``; Holm-corrected.

    Returns one :class:`PairedComparison` per model other than the reference, in input order.
    """
    if method not in TESTS:
        raise EmbedlabError(f"unknown test '{method}': choose one of {', '.join(TESTS)}")
    if reference not in per_query:
        raise EmbedlabError(f"reference model '{reference}' has no scores")
    _, arrays = _aligned(per_query)
    others = [name for name in arrays if name != reference]
    if not others:
        return {}
    ref = arrays[reference]
    test = TESTS[method]
    raw = [test(arrays[name], ref, resamples=resamples, seed=seed) for name in others]
    adjusted = holm(raw)
    intervals = bootstrap_intervals(
        {name: arrays[name] - ref for name in others}, confidence=confidence, resamples=resamples, seed=seed
    )
    out = {}
    for name, p, p_adj in zip(others, raw, adjusted, strict=True):
        difference = arrays[name] - ref
        out[name] = PairedComparison(
            model=name,
            reference=reference,
            metric=metric,
            difference=float(difference.mean()),
            difference_interval=intervals[name],
            p_value=p,
            p_adjusted=p_adj,
            tied=p_adj >= alpha,
            wins=int((difference > 0).sum()),
            ties=int((difference == 0).sum()),
            losses=int((difference < 0).sum()),
        )
    return out


@dataclass(frozen=True)
class ModelStatistics:
    """One model's means and their intervals for every metric, and its test against the best (``None`` for
    the best itself)."""

    name: str
    means: Mapping[str, float]
    intervals: Mapping[str, Interval]
    versus_best: PairedComparison | None

    @property
    def verdict(self) -> Verdict:
        if self.versus_best is None:
            return "best"
        return "tied" if self.versus_best.tied else "below best"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "means": dict(self.means),
            "intervals": {m: i.to_dict() for m, i in self.intervals.items()},
            "versus_best": self.versus_best.to_dict() if self.versus_best else None,
        }


@dataclass(frozen=True)
class Statistics:
    """Intervals for every mean and tests of every model against the best on ``metric``; see the module."""

    metric: str
    best: str
    models: tuple[ModelStatistics, ...]
    method: str
    alpha: float
    confidence: float
    resamples: int
    seed: int
    num_queries: int
    per_query: Mapping[str, Mapping[str, float]] = field(repr=False, default_factory=dict)

    def __getitem__(self, name: str) -> ModelStatistics:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def tied_with_best(self) -> list[str]:
        """The best model and every model statistically tied with it, best first."""
        return [m.name for m in self.models if m.verdict in ("best", "tied")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "best": self.best,
            "method": self.method,
            "correction": "holm",
            "alpha": self.alpha,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "num_queries": self.num_queries,
            "tied_with_best": self.tied_with_best(),
            "models": [m.to_dict() for m in self.models],
        }

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Headers and rows of the table ``__str__`` prints (scores ×100)."""
        level = f"{round(100 * self.confidence)}% CI"
        headers = ["model", self.metric, level, "Δ best", "p (Holm)", "verdict"]
        rows = []
        for model in self.models:
            interval = model.intervals[self.metric]
            test = model.versus_best
            rows.append(
                [
                    model.name,
                    f"{100 * model.means[self.metric]:.2f}",
                    f"{100 * interval.low:.2f}–{100 * interval.high:.2f}",
                    f"{100 * test.difference:+.2f}" if test else "-",
                    f"{test.p_adjusted:.4f}" if test else "-",
                    model.verdict,
                ]
            )
        return headers, rows

    def __str__(self) -> str:
        note = (
            f"({self.num_queries} queries; {self.method} test vs {self.best}, Holm-corrected, "
            f"alpha {self.alpha}; {self.resamples} bootstrap resamples, seed {self.seed})"
        )
        return format_table(*self.rows()) + "\n" + note


def analyse(
    scores: Mapping[str, RunScores],
    *,
    metric: str,
    method: str = "randomization",
    alpha: float = 0.05,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Statistics:
    """Intervals for every metric mean of every model, and tests of every model against the best on ``metric``.

    ``scores`` maps model names to their :class:`~embedlab.evaluate.metrics.RunScores` on the same queries.
    The best is the highest mean on ``metric`` (the first given wins a tie). Models come back best first.
    """
    if not 0 < alpha < 1:
        raise EmbedlabError(f"alpha must be between 0 and 1 (got {alpha})")
    if not 0 < confidence < 1:
        raise EmbedlabError(f"confidence must be between 0 and 1 (got {confidence})")
    if resamples < 100:
        raise EmbedlabError(f"use at least 100 resamples (got {resamples})")
    if not scores:
        raise EmbedlabError("no models to analyse")
    for name, run_scores in scores.items():
        if metric not in run_scores.per_query:
            raise EmbedlabError(f"'{name}' has no scores for {metric}; it has {', '.join(run_scores.metrics)}")
    primary = {name: s.per_query[metric] for name, s in scores.items()}
    query_ids, _ = _aligned(primary)
    ranked = sorted(scores, key=lambda name: -scores[name].means[metric])
    best = ranked[0]
    tests = compare_to_reference(
        primary,
        best,
        metric=metric,
        method=method,
        alpha=alpha,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )
    # One bootstrap for every (model, metric) series: the same query draws for all, one matrix product.
    series = {
        (name, metric_name): [scores[name].per_query[metric_name][q] for q in query_ids]
        for name in ranked
        for metric_name in scores[name].metrics
    }
    keys = list(series)
    flat = bootstrap_intervals(
        {str(i): series[key] for i, key in enumerate(keys)}, confidence=confidence, resamples=resamples, seed=seed
    )
    models = []
    for name in ranked:
        intervals = {key[1]: flat[str(i)] for i, key in enumerate(keys) if key[0] == name}
        models.append(
            ModelStatistics(
                name=name,
                means=MappingProxyType(dict(scores[name].means)),
                intervals=MappingProxyType(intervals),
                versus_best=tests.get(name),
            )
        )
    return Statistics(
        metric=metric,
        best=best,
        models=tuple(models),
        method=method,
        alpha=alpha,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        num_queries=len(query_ids),
        per_query=MappingProxyType({name: MappingProxyType(dict(primary[name])) for name in ranked}),
    )
