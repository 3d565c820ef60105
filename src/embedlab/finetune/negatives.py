"""Hard-negative mining with false-negative filtering.

For each training pair, the corpus is ranked for its query — with the **base model** (embedlab's cached
:func:`~embedlab.embedding.embed` and :func:`~embedlab.retrieval.exact_top_k`) or with **BM25** — and negatives
are taken from a **rank window** (``(3, 50)``: the candidates ranked 4th to 50th; the very top ranks are too
often unjudged relevant documents, and the margin below catches those further down; on SciFact ranks 4–50 trained
better than 11–50, with and without the leakage rule). A candidate is dropped as a **likely false negative** when

* it is one of the query's known positives (never a candidate at all), or its text is the positive's;
* its score exceeds ``(1 - relative_margin) ×`` the positive's score (default 5%: a document nearly as close as
  the answer probably *is* an answer nobody judged); or
* its score exceeds ``max_score`` (an absolute threshold, off by default).

The first ``n`` surviving candidates, in rank order, become the pair's negatives; a pair left with fewer is
filled with random corpus documents (never a known positive or a suspect), so every pair has ``n``.
:class:`MiningReport` keeps the score distributions of positives, kept negatives and dropped candidates,
and every dropped candidate as a *suspect* for a person to review (:meth:`MiningReport.write_suspects`).

Example::

    >>> mined = mine_hard_negatives(pairs, dataset.corpus, encoder=encoder, n=1, cache=cache)  # doctest: +SKIP
    >>> print(mined.report)                                                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from embedlab.data.dataset import Document
from embedlab.embedding import EmbeddingCache, embed
from embedlab.errors import EmbedlabError
from embedlab.files import format_table, write_text_atomic
from embedlab.finetune.pairs import TrainPair
from embedlab.models.encoders import Encoder
from embedlab.retrieval import exact_top_k

MinerName = Literal["model", "bm25"]


def score_distribution(scores: Sequence[float]) -> dict[str, float | int]:
    """Count, mean and percentiles (5, 25, 50, 75, 95) of scores; only the count when there are none."""
    if not len(scores):
        return {"count": 0}
    values = np.asarray(scores, dtype=np.float64)
    p5, p25, p50, p75, p95 = np.percentile(values, [5, 25, 50, 75, 95]).tolist()
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "p5": p5,
        "p25": p25,
        "p50": p50,
        "p75": p75,
        "p95": p95,
    }


@dataclass(frozen=True)
class Suspect:
    """A candidate dropped as a likely false negative."""

    query: str
    positive_id: str
    candidate_id: str
    candidate_text: str
    rank: int
    score: float
    positive_score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "positive_id": self.positive_id,
            "candidate_id": self.candidate_id,
            "candidate_text": self.candidate_text,
            "rank": self.rank,
            "score": self.score,
            "positive_score": self.positive_score,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class MiningReport:
    """What mining found: settings, counts, score distributions and the suspects."""

    miner: str
    n: int
    rank_window: tuple[int, int]
    relative_margin: float
    max_score: float | None
    pairs: int
    pairs_short: int
    positive_scores: dict[str, float | int]
    negative_scores: dict[str, float | int]
    dropped_scores: dict[str, float | int]
    suspects: tuple[Suspect, ...] = field(repr=False)
    seconds: float = 0.0

    def to_dict(self, *, with_suspects: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "miner": self.miner,
            "n": self.n,
            "rank_window": list(self.rank_window),
            "relative_margin": self.relative_margin,
            "max_score": self.max_score,
            "pairs": self.pairs,
            "pairs_with_fewer_negatives": self.pairs_short,
            "dropped_as_false_negatives": len(self.suspects),
            "scores": {
                "positive": self.positive_scores,
                "negative": self.negative_scores,
                "dropped": self.dropped_scores,
            },
            "seconds": self.seconds,
        }
        if with_suspects:
            out["suspects"] = [s.to_dict() for s in self.suspects]
        return out

    def __str__(self) -> str:
        rows = []
        for label, dist in (
            ("positives", self.positive_scores),
            ("kept negatives", self.negative_scores),
            ("dropped (suspects)", self.dropped_scores),
        ):
            if dist.get("count"):
                rows.append([label, str(dist["count"]), *(f"{dist[k]:.3f}" for k in ("p5", "p50", "p95"))])
            else:
                rows.append([label, "0", "-", "-", "-"])
        low, high = self.rank_window
        head = (
            f"hard negatives: {self.n} per pair by {self.miner}, ranks {low + 1}–{high}, "
            f"{100 * self.relative_margin:g}% margin; "
            f"{self.pairs_short} of {self.pairs} pairs filled with random documents"
        )
        return head + "\n" + format_table(["scores", "count", "p5", "p50", "p95"], rows)

    def write_suspects(self, path: Path) -> Path:
        """The dropped candidates as JSON lines, for a person to review (likely unjudged relevant documents)."""
        lines = [json.dumps(s.to_dict(), ensure_ascii=False) for s in self.suspects]
        return write_text_atomic(Path(path), "\n".join(lines) + ("\n" if lines else ""))


@dataclass(frozen=True)
class MinedPairs:
    pairs: tuple[TrainPair, ...]
    report: MiningReport


def _model_scores(
    pairs: Sequence[TrainPair],
    corpus: Sequence[Document],
    *,
    encoder: Encoder,
    cache: EmbeddingCache | None,
    depth: int,
    batch_size: int,
    show_progress: bool,
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
    """Top-``depth`` scores and rows per pair, and each pair's positive score, by the base model."""
    doc_vectors = embed(
        encoder, [d.full_text for d in corpus], role="document", cache=cache, batch_size=batch_size,
        show_progress=show_progress,
    )  # fmt: skip
    queries = [p.example.query for p in pairs]
    query_vectors = embed(
        encoder, queries, role="query", cache=cache, batch_size=batch_size, show_progress=show_progress
    )
    row_of = {d.id: i for i, d in enumerate(corpus)}
    # Positives that are corpus documents reuse their vectors; other positive texts are embedded.
    outside = sorted({p.example.positive for p in pairs if p.positive_id not in row_of})
    outside_vectors = embed(encoder, outside, role="document", cache=cache, batch_size=batch_size) if outside else None
    outside_row = {text: i for i, text in enumerate(outside)}
    positive_vectors = np.stack(
        [
            doc_vectors[row_of[p.positive_id]]
            if p.positive_id in row_of
            else outside_vectors[outside_row[p.example.positive]]  # type: ignore[index]
            for p in pairs
        ]
    )
    positive_scores = np.einsum("ij,ij->i", query_vectors, positive_vectors).astype(np.float32)
    scores, rows = exact_top_k(query_vectors, doc_vectors, depth)
    return scores, rows, positive_scores


def _bm25_scores(
    pairs: Sequence[TrainPair], corpus: Sequence[Document], *, depth: int
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
    import bm25s

    model = bm25s.BM25()
    model.index(bm25s.tokenize([d.full_text for d in corpus], stopwords="en", show_progress=False), show_progress=False)
    row_of = {d.id: i for i, d in enumerate(corpus)}
    depth = min(depth, len(corpus))
    scores = np.zeros((len(pairs), depth), dtype=np.float32)
    rows = np.zeros((len(pairs), depth), dtype=np.int64)
    positive = np.zeros(len(pairs), dtype=np.float32)
    tokenized = bm25s.tokenize([p.example.query for p in pairs], stopwords="en", show_progress=False, return_ids=False)
    for i, tokens in enumerate(tokenized):
        all_scores = np.asarray(model.get_scores(tokens), dtype=np.float32)
        order = np.lexsort((np.arange(len(corpus)), -all_scores))[:depth]
        scores[i], rows[i] = all_scores[order], order
        pid = pairs[i].positive_id
        positive[i] = all_scores[row_of[pid]] if pid in row_of else np.inf
    return scores, rows, positive


def mine_hard_negatives(
    pairs: Sequence[TrainPair],
    corpus: Sequence[Document],
    *,
    n: int,
    miner: MinerName = "model",
    encoder: Encoder | None = None,
    cache: EmbeddingCache | None = None,
    rank_window: tuple[int, int] = (3, 50),
    relative_margin: float = 0.05,
    max_score: float | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
    seed: int = 0,
) -> MinedPairs:
    """New pairs with up to ``n`` mined negatives each (inputs are not modified); see the module docstring."""
    import time

    if n < 1:
        raise EmbedlabError("mining needs n >= 1 negatives per pair")
    if not corpus:
        raise EmbedlabError("no corpus to mine hard negatives from")
    low, high = rank_window
    started = time.perf_counter()
    if miner == "model":
        if encoder is None:
            raise EmbedlabError("mining with the model needs an encoder")
        scores, rows, positive_scores = _model_scores(
            pairs, corpus, encoder=encoder, cache=cache, depth=high, batch_size=batch_size, show_progress=show_progress
        )
    elif miner == "bm25":
        scores, rows, positive_scores = _bm25_scores(pairs, corpus, depth=high)
    else:
        raise EmbedlabError(f"unknown miner '{miner}': use 'model' or 'bm25'")

    rng = np.random.default_rng(seed)
    mined: list[TrainPair] = []
    suspects: list[Suspect] = []
    kept_scores: list[float] = []
    short = 0
    for i, pair in enumerate(pairs):
        positive_score = float(positive_scores[i])
        ceiling = (1.0 - relative_margin) * positive_score if np.isfinite(positive_score) else np.inf
        known = pair.positive_ids | ({pair.positive_id} if pair.positive_id else set())
        negatives: list[str] = []
        for position in range(low, min(high, rows.shape[1])):
            doc = corpus[int(rows[i, position])]
            score = float(scores[i, position])
            if doc.id in known or doc.full_text == pair.example.positive or doc.text == pair.example.positive:
                continue
            if (ceiling != np.inf and score > ceiling) or (max_score is not None and score > max_score):
                reason = "above the threshold" if max_score is not None and score > max_score else "within the margin"
                suspects.append(
                    Suspect(
                        query=pair.example.query,
                        positive_id=pair.positive_id,
                        candidate_id=doc.id,
                        candidate_text=doc.full_text,
                        rank=position + 1,
                        score=score,
                        positive_score=positive_score,
                        reason=reason,
                    )
                )
                continue
            if len(negatives) < n:
                negatives.append(doc.full_text)
                kept_scores.append(score)
        if len(negatives) < n:
            short += 1
            # Too few survived the filter: fill with random documents (easy negatives, never known positives or
            # suspects), so every pair keeps n negatives and a loss's columns stay complete.
            excluded = known | {s.candidate_id for s in suspects if s.query == pair.example.query}
            for row in rng.permutation(len(corpus)).tolist():
                doc = corpus[row]
                if len(negatives) >= n:
                    break
                if doc.id not in excluded and doc.full_text not in negatives and doc.full_text != pair.example.positive:
                    negatives.append(doc.full_text)
        mined.append(pair.with_negatives(negatives))
    finite_positive = [float(s) for s in positive_scores if np.isfinite(s)]
    report = MiningReport(
        miner=miner,
        n=n,
        rank_window=(low, high),
        relative_margin=relative_margin,
        max_score=max_score,
        pairs=len(pairs),
        pairs_short=short,
        positive_scores=score_distribution(finite_positive),
        negative_scores=score_distribution(kept_scores),
        dropped_scores=score_distribution([s.score for s in suspects]),
        suspects=tuple(suspects),
        seconds=time.perf_counter() - started,
    )
    return MinedPairs(pairs=tuple(mined), report=report)
