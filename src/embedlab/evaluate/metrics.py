"""Retrieval metrics over a run and graded judgements, defined as trec_eval (so pytrec_eval and BEIR) does.

A **run** maps each query id to the documents retrieved for it and their scores
(``{"q1": {"d3": 12.1, "d7": 9.4}}``); **qrels** map each query id to judged documents and integer grades
(``{"q1": {"d3": 2, "d9": 1}}``; grade > 0 is relevant), exactly as in
:class:`~embedlab.data.dataset.RetrievalDataset`. :func:`evaluate_run` scores every query for every metric and
returns a :class:`RunScores`; the retrieval stage produces runs, the report stage renders the scores.

**Metric names** are strings ``"<metric>@<k>"`` parsed by :func:`parse_metric` (case-insensitive, ``k`` ≥ 1):

=================  ===========================================================================================
``ndcg@k``         trec_eval ``ndcg_cut_k``: DCG = Σ gain / log2(rank + 1) over the top k with gain = grade
                   (linear, Järvelin–Kekäläinen; not the 2^grade − 1 "Burges" gain), divided by the ideal DCG
                   of the judged grades sorted in decreasing order and cut at k.
``recall@k``       trec_eval ``recall_k``: relevant documents in the top k / all relevant documents.
``precision@k``    trec_eval ``P_k``: relevant documents in the top k / k (k, even when fewer were retrieved).
``mrr@k``          1 / rank of the first relevant document within the top k, 0 if none (BEIR's ``MRR@k``).
``map@k``          trec_eval ``map_cut_k``: Σ precision@rank over relevant documents at rank ≤ k, divided by
                   the number of relevant documents (not by min(k, relevant)).
=================  ===========================================================================================

Conventions, all those of trec_eval:

* **Ranking**: documents are sorted by score, highest first; **ties are broken by document id in descending
  string order** (trec_eval's ``comp_sim_docno`` compares ``strcmp(docno2, docno1)``). A run's own order or
  rank numbers are ignored, so the same run always gives the same figures. Scores are compared as 64-bit
  floats (some old trec_eval releases kept them as 32-bit floats, which ties scores that differ only beyond
  float32 precision).
* **Relevant** means grade > 0; judged documents with grade ≤ 0 and unjudged documents count as not relevant
  and add no gain.
* **Which queries count**: every query in the qrels with at least one relevant document. A query missing
  from the run scores 0 on every metric (trec_eval ``-c``; pytrec_eval and BEIR instead leave it out of the
  mean, which flatters a run that skips hard queries). Queries with no relevant document are skipped, since
  recall, nDCG and MAP are undefined for them; they are listed in :attr:`RunScores.skipped_queries`. Queries
  in the run but not in the qrels are ignored. Unlike BEIR's evaluator, a document whose id equals the query
  id is *not* dropped.
* Scores are fractions in [0, 1], kept unrounded; only :meth:`RunScores.__str__` rounds.

Example::

    >>> run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}, "q2": {"d9": 1.0}}
    >>> qrels = {"q1": {"d2": 1, "d3": 2}, "q2": {"d4": 1}}
    >>> scores = evaluate_run(run, qrels, ["ndcg@10", "mrr@10", "recall@2"])
    >>> scores.means["mrr@10"]
    0.25
    >>> scores.per_query["recall@2"]["q1"]
    0.5
    >>> print(scores)
    metric      mean
    ndcg@10   0.3100
    mrr@10    0.2500
    recall@2  0.2500
    (2 queries)
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from embedlab.data.dataset import Qrels
from embedlab.errors import EmbedlabError

Run = Mapping[str, Mapping[str, float]]
"""query id -> document id -> score (higher is better)."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Metric:
    """A parsed metric name: ``name`` is a key of :data:`METRICS`, ``k`` the cutoff (≥ 1)."""

    name: str
    k: int

    def __str__(self) -> str:
        return f"{self.name}@{self.k}"


@dataclass(frozen=True, slots=True)
class _Judged:
    """The top ``depth`` of every evaluated query, as arrays (one row per query, zero-padded).

    ``gains[i, r]`` is the grade (≥ 0) of the document at rank r + 1, ``relevant`` is ``gains > 0``,
    ``ideal_gains`` holds the query's judged grades sorted in decreasing order, ``num_relevant`` counts the
    relevant documents (all ≥ 1).
    """

    gains: FloatArray
    relevant: FloatArray
    ideal_gains: FloatArray
    num_relevant: FloatArray


MetricFunction = Callable[[_Judged, int], FloatArray]


def _discounts(k: int) -> FloatArray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _ndcg(judged: _Judged, k: int) -> FloatArray:
    discounts = _discounts(k)
    dcg = judged.gains[:, :k] @ discounts
    ideal = judged.ideal_gains[:, :k] @ discounts
    return dcg / ideal


def _recall(judged: _Judged, k: int) -> FloatArray:
    return judged.relevant[:, :k].sum(axis=1) / judged.num_relevant


def _precision(judged: _Judged, k: int) -> FloatArray:
    return judged.relevant[:, :k].sum(axis=1) / k


def _mrr(judged: _Judged, k: int) -> FloatArray:
    top = judged.relevant[:, :k]
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1.0), 0.0)


def _map(judged: _Judged, k: int) -> FloatArray:
    top = judged.relevant[:, :k]
    precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    return (precision_at_rank * top).sum(axis=1) / judged.num_relevant


METRICS: Mapping[str, MetricFunction] = MappingProxyType(
    {
        "ndcg": _ndcg,
        "recall": _recall,
        "precision": _precision,
        "mrr": _mrr,
        "map": _map,
    }
)
"""The metric registry: name -> function of (judged top ranks, k) returning one score per query."""

_METRIC_NAME = re.compile(r"(?P<name>[a-z_]+)@(?P<k>\d+)")


def parse_metric(text: str) -> Metric:
    """Parse ``"ndcg@10"`` into ``Metric("ndcg", 10)``; anything else raises :class:`EmbedlabError`.

        >>> parse_metric("nDCG@10")
        Metric(name='ndcg', k=10)
        >>> parse_metric("ndgc@10")
        Traceback (most recent call last):
        ...
        embedlab.errors.EmbedlabError: unknown metric 'ndgc@10'; did you mean 'ndcg@10'? Valid metrics are \
map, mrr, ndcg, precision, recall, written as name@k (e.g. 'ndcg@10')
    """
    cleaned = text.strip().lower()
    match = _METRIC_NAME.fullmatch(cleaned)
    name, k = (match["name"], int(match["k"])) if match else (cleaned.partition("@")[0], None)
    if name in METRICS and k is not None and k >= 1:
        return Metric(name, k)
    valid = ", ".join(sorted(METRICS))
    usage = f"Valid metrics are {valid}, written as name@k (e.g. 'ndcg@10')"
    if name in METRICS:
        raise EmbedlabError(f"metric {text!r} needs a cutoff k ≥ 1 written as {name}@k, e.g. '{name}@10'")
    close = difflib.get_close_matches(name, list(METRICS), n=1)
    hint = f"; did you mean '{close[0]}@{k if k is not None else 10}'?" if close else "."
    raise EmbedlabError(f"unknown metric {text!r}{hint} {usage}")


@dataclass(frozen=True)
class RunScores:
    """Per-query and mean scores of one run, for each metric in the order asked.

    ``per_query[metric][query_id]`` and ``means[metric]`` are unrounded fractions in [0, 1], keyed by the
    canonical metric name (``"ndcg@10"``). ``query_ids`` are the evaluated queries (those with a relevant
    document, in qrels order); ``missing_queries`` are those among them absent from the run (scored 0);
    ``skipped_queries`` had no relevant document and were not evaluated.

    ``str(scores)`` is a table of the means, to 4 decimals::

        metric        mean
        ndcg@10     0.6542
        recall@100  0.9120
        (300 queries; 2 missing from the run scored 0)
    """

    metrics: tuple[str, ...]
    per_query: Mapping[str, Mapping[str, float]]
    means: Mapping[str, float]
    query_ids: tuple[str, ...]
    missing_queries: tuple[str, ...] = ()
    skipped_queries: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: metrics, means, per-query scores and the query bookkeeping."""
        return {
            "metrics": list(self.metrics),
            "means": dict(self.means),
            "per_query": {m: dict(self.per_query[m]) for m in self.metrics},
            "num_queries": len(self.query_ids),
            "missing_queries": list(self.missing_queries),
            "skipped_queries": list(self.skipped_queries),
        }

    def __str__(self) -> str:
        width = max(len("metric"), *(len(m) for m in self.metrics))
        lines = [f"{'metric':<{width}}  {'mean':>6}"]
        lines += [f"{m:<{width}}  {self.means[m]:>6.4f}" for m in self.metrics]
        count = len(self.query_ids)
        notes = [f"{count} {'query' if count == 1 else 'queries'}"]
        if self.missing_queries:
            notes.append(f"{len(self.missing_queries)} missing from the run scored 0")
        if self.skipped_queries:
            notes.append(f"{len(self.skipped_queries)} without a relevant document skipped")
        lines.append(f"({'; '.join(notes)})")
        return "\n".join(lines)


def evaluate_run(run: Run, qrels: Qrels, metrics: Sequence[str]) -> RunScores:
    """Score ``run`` against ``qrels`` on each of ``metrics`` (names such as ``"ndcg@10"``, see the module).

    Neither input is modified. Raises :class:`EmbedlabError` for an unknown metric name, an empty metric list,
    qrels without any relevant document, or a NaN score in the run.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    parsed = list(dict.fromkeys(parse_metric(m) for m in metrics))
    if not parsed:
        raise EmbedlabError("no metrics to compute; give at least one, e.g. 'ndcg@10'")
    query_ids = tuple(q for q, docs in qrels.items() if any(g > 0 for g in docs.values()))
    skipped = tuple(q for q, docs in qrels.items() if not any(g > 0 for g in docs.values()))
    if not query_ids:
        raise EmbedlabError("the qrels have no query with a relevant document (grade > 0); nothing to evaluate")
    depth = max(m.k for m in parsed)
    judged = _judge(run, qrels, query_ids, depth)
    per_query: dict[str, Mapping[str, float]] = {}
    means: dict[str, float] = {}
    for metric in parsed:
        values = METRICS[metric.name](judged, metric.k)
        per_query[str(metric)] = MappingProxyType(dict(zip(query_ids, values.tolist(), strict=True)))
        means[str(metric)] = float(values.mean())
    return RunScores(
        metrics=tuple(str(m) for m in parsed),
        per_query=MappingProxyType(per_query),
        means=MappingProxyType(means),
        query_ids=query_ids,
        missing_queries=tuple(q for q in query_ids if q not in run),
        skipped_queries=skipped,
    )


def rank(scores: Mapping[str, float], depth: int | None = None) -> list[str]:
    """Document ids by decreasing score, ties by decreasing id (trec_eval's order), cut to ``depth``.

    >>> rank({"a": 1.0, "b": 2.0, "c": 1.0})
    ['b', 'c', 'a']
    """
    pairs = [(float(score), doc_id) for doc_id, score in scores.items()]
    if any(math.isnan(score) for score, _ in pairs):
        raise EmbedlabError("the run has a NaN score; fix the scorer before evaluating")
    pairs.sort(reverse=True)
    return [doc_id for _, doc_id in pairs[:depth]]


def _judge(run: Run, qrels: Qrels, query_ids: Sequence[str], depth: int) -> _Judged:
    gains = np.zeros((len(query_ids), depth))
    ideal = np.zeros((len(query_ids), depth))
    num_relevant = np.zeros(len(query_ids))
    for row, qid in enumerate(query_ids):
        grades = qrels[qid]
        ranked = rank(run.get(qid, {}), depth)
        gains[row, : len(ranked)] = [max(grades.get(doc_id, 0), 0) for doc_id in ranked]
        positive = sorted((g for g in grades.values() if g > 0), reverse=True)[:depth]
        ideal[row, : len(positive)] = positive
        num_relevant[row] = sum(1 for g in grades.values() if g > 0)
    return _Judged(gains, (gains > 0).astype(np.float64), ideal, num_relevant)
