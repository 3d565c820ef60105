"""Semantic textual similarity (STS): how well predicted similarities agree with gold scores.

:func:`sts_correlation` takes one predicted similarity per sentence pair (usually the cosine of the two
embeddings) and the gold score of each pair (e.g. 0–5 for the STS Benchmark, see
:class:`~embedlab.data.dataset.ScoredPairs`) and returns Spearman's rank correlation — the usual headline
figure — and Pearson's linear correlation, computed with :mod:`scipy.stats`.

Both are returned as **fractions in [−1, 1]**, unrounded. Papers and the MTEB leaderboard print them ×100
("all-MiniLM-L6-v2 scores about 82 on STS-B"); multiply when rendering, never before.

Example::

    >>> result = sts_correlation([0.9, 0.1, 0.5, 0.7], [5.0, 0.0, 2.0, 4.0])
    >>> result["spearman"]
    1.0
    >>> round(result["pearson"], 4)
    0.9903
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from embedlab.errors import EmbedlabError


def sts_correlation(predicted: Sequence[float], gold: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson correlation between ``predicted`` and ``gold``, as fractions in [−1, 1].

    Args:
        predicted: one predicted similarity per pair (any scale; only order matters to Spearman).
        gold: the gold score of the same pairs, in the same order.

    Returns:
        ``{"spearman": ..., "pearson": ...}``.

    Raises:
        EmbedlabError: the sequences differ in length, have fewer than two pairs, contain NaN or infinity, or
            either is constant (a correlation is then undefined; a constant prediction means a broken model).
    """
    x = [float(v) for v in predicted]
    y = [float(v) for v in gold]
    if len(x) != len(y):
        raise EmbedlabError(f"{len(x)} predicted scores for {len(y)} gold scores; give one per pair")
    if len(x) < 2:
        raise EmbedlabError(f"a correlation needs at least two pairs, got {len(x)}")
    for label, values in (("predicted", x), ("gold", y)):
        if not all(math.isfinite(v) for v in values):
            raise EmbedlabError(f"the {label} scores contain NaN or infinity")
        if min(values) == max(values):
            raise EmbedlabError(f"all {label} scores are equal ({values[0]}); the correlation is undefined")
    from scipy import stats  # imported here: scipy.stats costs a second at start-up, and most runs never use it

    return {
        "spearman": float(stats.spearmanr(x, y).statistic),
        "pearson": float(stats.pearsonr(x, y).statistic),
    }
