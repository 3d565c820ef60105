"""Reciprocal rank fusion (RRF): combine the rankings of several retrievers into one — e.g. BM25 + a dense model.

Cormack, Clarke and Büttcher (SIGIR 2009): a document's fused score is ``Σ_r w_r / (k + rank_r(d))`` over the
runs ``r`` that retrieved it, with ranks counted from 1 and ``k = 60``. Only ranks matter, so runs whose scores
live on different scales (BM25 scores, cosine similarities) fuse without any normalisation, and a document
that both runs place high rises to the top. A document missing from a run adds nothing for that run.

Ranks are taken with :func:`embedlab.evaluate.metrics.rank` — by score, ties by document id as trec_eval
orders them — so a run's own dict order never matters. The fused run keeps, per query, the ``depth`` best
documents (by default every document any run retrieved); ties in fused score keep the same trec_eval order
when evaluated. The inputs are not modified.

Example::

    >>> bm25 = {"q1": {"d1": 12.0, "d2": 7.5}}
    >>> dense = {"q1": {"d2": 0.81, "d3": 0.64}}
    >>> fused = reciprocal_rank_fusion([bm25, dense])
    >>> list(fused["q1"])                  # d2 is ranked by both, so it comes first
    ['d2', 'd1', 'd3']
    >>> round(fused["q1"]["d2"], 5)        # 1/(60+2) + 1/(60+1)
    0.03252
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from embedlab.errors import EmbedlabError
from embedlab.evaluate.metrics import rank

Run = Mapping[str, Mapping[str, float]]

RRF_K = 60
"""The constant of Cormack et al.; larger values flatten the advantage of the very top ranks."""


def reciprocal_rank_fusion(
    runs: Sequence[Run],
    *,
    k: int = RRF_K,
    depth: int | None = None,
    weights: Sequence[float] | None = None,
) -> dict[str, dict[str, float]]:
    """Fuse ``runs`` (query id -> document id -> score) with RRF; see the module docstring.

    ``weights`` (one per run, default all 1) scale each run's contribution; ``depth`` cuts every fused
    ranking (``None``: keep every document retrieved). Queries present in any run are kept. The result is a
    new run, best first per query.
    """
    if not runs:
        raise EmbedlabError("reciprocal rank fusion needs at least one run")
    if k < 0:
        raise EmbedlabError(f"the RRF constant k must be ≥ 0 (got {k})")
    if weights is None:
        weights = [1.0] * len(runs)
    if len(weights) != len(runs):
        raise EmbedlabError(f"give one weight per run ({len(runs)} runs, {len(weights)} weights)")
    if depth is not None and depth < 1:
        raise EmbedlabError(f"depth must be ≥ 1 (got {depth})")
    query_ids = list(dict.fromkeys(q for run in runs for q in run))
    fused: dict[str, dict[str, float]] = {}
    for qid in query_ids:
        scores: dict[str, float] = {}
        for run, weight in zip(runs, weights, strict=True):
            for position, doc_id in enumerate(rank(run.get(qid, {})), start=1):
                scores[doc_id] = scores.get(doc_id, 0.0) + weight / (k + position)
        fused[qid] = {doc_id: scores[doc_id] for doc_id in rank(scores, depth)}
    return fused
