"""A stronger model that labels training examples: GPL-style distillation with the systems ``select`` ranks.

GPL (Wang et al., NAACL 2022) adapts a dense retriever to a domain without human labels: pseudo-queries are made
for the corpus, hard negatives are mined for each with the student, and a stronger *teacher* scores (query,
positive) and (query, negative); the student is trained with MarginMSE to reproduce the teacher's **margin**
``teacher(q, p) − teacher(q, n)``. A noisy pseudo-query costs little this way: where the "negative" is in fact as
relevant as the positive, the teacher says so (a margin near zero or below) instead of pushing them apart.

embedlab's teachers are the systems ``select`` already measured on the user's data (and whose vectors it cached):

==========================  =======================================================================================
``--teacher``               score of (query, document)
==========================  =======================================================================================
a dense model (catalog      cosine of its vectors (through the embedding cache: after ``select`` this costs only
name or folder)             the pseudo-queries' encoding)
``bm25``                    bm25s' score divided by the query's best score over the corpus (so it lies in [0, 1])
``hybrid`` / ``hybrid:M``   the mean of the two above (dense model ``M``, default ``mpnet-base``). ``select``'s
                            hybrid ranks by reciprocal rank fusion, but RRF scores are ranks, not margins: two
                            documents at ranks 3 and 30 differ by 0.01 whatever their relevance; the score mean ranks
                            almost alike and keeps the distances MarginMSE learns from
a CrossEncoder folder       the cross-encoder's own output (sentence-transformers ``CrossEncoder.predict``)
==========================  =======================================================================================

Teachers' scales differ (BM25's normalised scores put nearly every margin near 1, a cross-encoder's logits span
tens), and MarginMSE asks the student's cosine margins to *equal* the teacher's. So the margins are put on the
student's scale first: multiplied by ``std(student scores) / std(teacher scores)`` over every (query, document)
pair labelled — the student's own spread, the teacher's ordering and relative distances. The factor is
recorded (``scale``).

:func:`label_triples` mines candidates with the *student* (its ranks ``rank_window``, known positives excluded, no
false-negative filter: the teacher's margin handles those) and scores them with the teacher. The result is cached
by content (teacher, student, queries, positives, settings) in the embedding cache's folder, so a second run — or
a resumed one — does not score again; the vectors under it are cached shard by shard by
:func:`~embedlab.embedding.embed`.

Example::

    >>> teacher = load_teacher("hybrid:mpnet-base", corpus, cache=cache)           # doctest: +SKIP
    >>> triples = label_triples(pairs, corpus, teacher=teacher, student=encoder,
    ...                         negatives=2, cache=cache)                          # doctest: +SKIP
    >>> triples.examples[0].margins                                                # doctest: +SKIP
    (0.31, 0.12)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from embedlab.data.dataset import Document
from embedlab.embedding import EmbeddingCache, embed
from embedlab.errors import EmbedlabError, ModelError
from embedlab.files import write_json_atomic
from embedlab.finetune.losses import LossData, LossPart
from embedlab.finetune.negatives import score_distribution
from embedlab.finetune.pairs import TrainPair
from embedlab.models.encoders import Encoder
from embedlab.retrieval import exact_top_k

DEFAULT_HYBRID_DENSE = "mpnet-base"
# What ``--teacher auto`` measures on the dev queries before choosing (the base model itself is skipped).
AUTO_TEACHERS = ("bm25", DEFAULT_HYBRID_DENSE, f"hybrid:{DEFAULT_HYBRID_DENSE}")
LABELS_VERSION = "2"


class Teacher(Protocol):
    """Scores (query, corpus document) pairs on a cosine-like scale; bound to one corpus."""

    name: str
    fingerprint: str

    def score(self, queries: Sequence[str], rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """Scores of shape ``rows.shape``: ``[i, j]`` for query ``i`` and corpus document ``rows[i, j]``."""
        ...


def _corpus_hash(corpus: Sequence[Document]) -> str:
    digest = hashlib.sha256()
    for doc in corpus:
        digest.update(doc.id.encode() + b"\x00" + doc.full_text.encode() + b"\x01")
    return digest.hexdigest()[:16]


class DenseTeacher:
    """Cosine (dot product of normalised vectors) of a dense model, vectors through the embedding cache."""

    def __init__(
        self, encoder: Encoder, corpus: Sequence[Document], *, cache: EmbeddingCache | None, show_progress: bool
    ):
        self.name = encoder.spec.name
        self.encoder = encoder
        self.cache = cache
        self.fingerprint = f"dense-{encoder.fingerprint}-{_corpus_hash(corpus)}"
        self.documents = embed(
            encoder, [d.full_text for d in corpus], role="document", cache=cache, show_progress=show_progress
        )
        self._remembered: dict[str, NDArray[np.float32]] = {}

    def remember(self, queries: Sequence[str]) -> None:
        """Encode ``queries`` once and keep their vectors: in-batch distillation scores the same training queries
        at every step, and even a cache hit hashes every text and reads the shards again."""
        vectors = embed(self.encoder, list(queries), role="query", cache=self.cache)
        self._remembered.update(zip(queries, vectors, strict=True))

    def score(self, queries: Sequence[str], rows: NDArray[np.int64]) -> NDArray[np.float32]:
        known = self._remembered
        if queries and all(q in known for q in queries):
            vectors = np.stack([known[q] for q in queries])
        else:
            vectors = embed(self.encoder, list(queries), role="query", cache=self.cache)
        return np.einsum("ij,ikj->ik", vectors, self.documents[rows]).astype(np.float32)


class BM25Teacher:
    """bm25s scores (the tokenisation of ``embedlab compare``'s BM25), divided by the query's best score."""

    def __init__(self, corpus: Sequence[Document], *, k1: float = 1.5, b: float = 0.75):
        import bm25s

        self.name = "bm25"
        self.fingerprint = f"bm25-{k1}-{b}-{_corpus_hash(corpus)}"
        self.model = bm25s.BM25(k1=k1, b=b)
        self.model.index(
            bm25s.tokenize([d.full_text for d in corpus], stopwords="en", show_progress=False), show_progress=False
        )

    def score(self, queries: Sequence[str], rows: NDArray[np.int64]) -> NDArray[np.float32]:
        import bm25s

        tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False, return_ids=False)
        out = np.zeros(rows.shape, dtype=np.float32)
        for i, query_tokens in enumerate(tokens):
            scores = np.asarray(self.model.get_scores(query_tokens), dtype=np.float32)
            top = float(scores.max()) if scores.size else 0.0
            if top > 0:
                out[i] = scores[rows[i]] / top
        return out


class HybridTeacher:
    """The mean of a dense teacher's cosine and BM25's normalised score (see the module docstring for why)."""

    def __init__(self, dense: DenseTeacher, lexical: BM25Teacher):
        self.name = f"hybrid:{dense.name}"
        self.dense = dense
        self.lexical = lexical
        self.fingerprint = f"hybrid-{dense.fingerprint}-{lexical.fingerprint}"

    def remember(self, queries: Sequence[str]) -> None:
        """See :meth:`DenseTeacher.remember` (BM25 has nothing to precompute per query)."""
        self.dense.remember(queries)

    def score(self, queries: Sequence[str], rows: NDArray[np.int64]) -> NDArray[np.float32]:
        return (0.5 * (self.dense.score(queries, rows) + self.lexical.score(queries, rows))).astype(np.float32)


class CrossEncoderTeacher:
    """A local sentence-transformers CrossEncoder folder: its ``predict`` output for each (query, document)."""

    def __init__(self, folder: Path, corpus: Sequence[Document], *, batch_size: int = 32):
        from sentence_transformers import CrossEncoder

        from embedlab.models.encoders import content_fingerprint

        self.name = folder.name
        self.source = folder
        self.texts = [d.full_text for d in corpus]
        self.model = CrossEncoder(str(folder), device="cpu")
        self.batch_size = batch_size
        self.fingerprint = f"cross-{content_fingerprint(folder)}-{_corpus_hash(corpus)}"

    def score(self, queries: Sequence[str], rows: NDArray[np.int64]) -> NDArray[np.float32]:
        pairs = [(q, self.texts[int(r)]) for q, row in zip(queries, rows, strict=True) for r in row]
        scores = self.model.predict(pairs, batch_size=self.batch_size, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(rows.shape)


def is_cross_encoder(path: Path) -> bool:
    """A folder whose transformers config is a sequence classifier (what a CrossEncoder saves)."""
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def load_teacher(
    name: str,
    corpus: Sequence[Document],
    *,
    cache: EmbeddingCache | None = None,
    show_progress: bool = False,
    backend: str | None = "auto",
) -> Teacher:
    """The teacher called ``name`` (see the module docstring), bound to ``corpus``.

    A dense teacher runs on ``backend`` — by default ``auto``, the fastest backend whose vectors pass the quality
    gate against float32 (a teacher is often the larger, slower model), judged on a sample of ``corpus`` as
    ``select`` judges it, so the corpus vectors ``select`` cached are reused.
    """
    from embedlab.models.backends import using_corpus
    from embedlab.models.loading import load_encoder

    def dense(model: str) -> DenseTeacher:
        encoder = load_encoder(model, backend=backend)
        if encoder.spec.kind == "bm25":
            raise ModelError(f"teacher '{name}': '{model}' is lexical; name a dense model")
        # `auto` judged on a sample of this corpus, as `select` judged it: the same backend, so the vectors select
        # cached are found (judged on the bundled texts, mpnet-base chose openvino-bf16 where select, on
        # SciFact, chose openvino-int8, and the teacher encoded the corpus again)
        with using_corpus(d.full_text for d in corpus):
            return DenseTeacher(encoder, corpus, cache=cache, show_progress=show_progress)

    if not corpus:
        raise EmbedlabError("a teacher needs a corpus to score")
    key = name.strip()
    if key.lower() == "bm25":
        return BM25Teacher(corpus)
    if key.lower() == "hybrid" or key.lower().startswith("hybrid:"):
        model = key.split(":", 1)[1].strip() if ":" in key else DEFAULT_HYBRID_DENSE
        return HybridTeacher(dense(model or DEFAULT_HYBRID_DENSE), BM25Teacher(corpus))
    if names_cross_encoder(key):
        return CrossEncoderTeacher(Path(key).expanduser(), corpus)
    return dense(key)


def names_cross_encoder(name: str) -> bool:
    """Whether ``--teacher name`` is a CrossEncoder folder (a sequence classifier without sentence-transformers'
    ``modules.json``)."""
    path = Path(name.strip()).expanduser()
    return path.is_dir() and is_cross_encoder(path) and not (path / "modules.json").is_file()


def refuse_in_batch_cross_encoder(name: str) -> None:
    """An :class:`EmbedlabError` when ``--teacher-in-batch`` is asked of a CrossEncoder teacher.

    In-batch distillation scores every query against every document of a batch at every step: for a dense or
    lexical teacher that is a dot product or a lookup, for a CrossEncoder a full forward pass per pair (about
    3,000 per step at batch 32), which would cost more than the training it feeds.
    """
    if names_cross_encoder(name):
        raise EmbedlabError(
            f"--teacher-in-batch: the teacher '{name}' is a CrossEncoder, which cannot score a whole batch at every "
            "step cheaply (fix: drop --teacher-in-batch, or give a dense, bm25 or hybrid teacher)"
        )


# ------------------------------------------------------------------------------------------------------
# Labelled triples


@dataclass(frozen=True)
class MarginExample:
    """A query, its positive, negatives and the teacher's margins ``t(q, p) − t(q, n_i)``."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    margins: tuple[float, ...]
    origin: str
    rows: tuple[int, ...] = ()  # corpus indices of the positive, then of each negative (for in-batch scoring)


@dataclass(frozen=True)
class LabelledTriples:
    """What :func:`label_triples` made, with the teacher's score distributions for the report."""

    teacher: str
    examples: tuple[MarginExample, ...]
    positive_scores: dict[str, float | int]
    negative_scores: dict[str, float | int]
    inverted: int
    cached: bool
    seconds: float
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher,
            "examples": len(self.examples),
            "positive_scores": self.positive_scores,
            "negative_scores": self.negative_scores,
            "negatives_the_teacher_scores_above_the_positive": self.inverted,
            "scale_to_student": self.scale,
            "cached": self.cached,
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        pos, neg = self.positive_scores, self.negative_scores
        return (
            f"teacher {self.teacher}: {len(self.examples)} triples; positive score median "
            f"{pos.get('p50', float('nan')):.3f}, negative {neg.get('p50', float('nan')):.3f}; "
            f"{self.inverted} negatives scored above their positive; margins × {self.scale:.3g} to the student's scale"
            + (" (labels from the cache)" if self.cached else "")
        )


def margin_loss_data(triples: LabelledTriples) -> LossData:
    """The columns ``margin-mse`` reads: query, positive, one column per negative, and the margins as label."""
    examples = triples.examples
    if not examples:
        raise EmbedlabError("no teacher-labelled examples to train on")
    count = min(len(ex.negatives) for ex in examples)
    columns: dict[str, list[Any]] = {
        "query": [ex.query for ex in examples],
        "positive": [ex.positive for ex in examples],
    }
    for i in range(count):
        columns[f"negative_{i + 1}"] = [ex.negatives[i] for ex in examples]
    columns["label"] = [list(ex.margins[:count]) if count > 1 else ex.margins[0] for ex in examples]
    return LossData(columns)


def in_batch_part(triples: LabelledTriples, teacher: Teacher) -> LossPart:
    """The corpus rows trained with ``in-batch-margin-mse`` (``--teacher-in-batch``).

    The texts are :func:`margin_loss_data`'s; the label is each row's index into ``triples.examples``, so that
    the loss (:class:`~embedlab.finetune.in_batch.InBatchMarginMSELoss`) finds the row's query and the corpus
    indices of its documents, and asks ``teacher`` for every (query, document of the batch) pair at each step,
    with the factor ``triples.scale`` that put the stored margins on the student's scale. A dense (or hybrid)
    teacher encodes the training queries here, once.
    """
    if isinstance(teacher, CrossEncoderTeacher):
        refuse_in_batch_cross_encoder(str(teacher.source))
    data = margin_loss_data(triples)
    width = data.texts_per_row - 1  # the positive and the negatives every row has
    examples = triples.examples
    if any(len(ex.rows) < width for ex in examples):
        raise EmbedlabError("in-batch distillation needs each example's corpus rows: label the triples again")
    rows = np.asarray([ex.rows[:width] for ex in examples], dtype=np.int64)
    queries = [ex.query for ex in examples]
    if isinstance(teacher, DenseTeacher | HybridTeacher):
        teacher.remember(queries)
    scale = triples.scale

    def make(model: Any) -> Any:
        from embedlab.finetune.in_batch import InBatchMarginMSELoss

        return InBatchMarginMSELoss(model, teacher=teacher, queries=queries, rows=rows, scale=scale)

    columns = {**data.columns, "label": list(range(data.rows))}
    return LossPart("in-batch-margin-mse", LossData(columns, data.notes), make=make)


def _labels_key(teacher: Teacher, student: Encoder, pairs: Sequence[TrainPair], settings: tuple[Any, ...]) -> str:
    digest = hashlib.sha256(repr((LABELS_VERSION, teacher.fingerprint, student.fingerprint, settings)).encode())
    for pair in pairs:
        digest.update(f"{pair.example.query}\x00{pair.positive_id}\x01".encode())
    return digest.hexdigest()[:24]


def label_triples(
    pairs: Sequence[TrainPair],
    corpus: Sequence[Document],
    *,
    teacher: Teacher,
    student: Encoder,
    negatives: int = 1,
    rank_window: tuple[int, int] = (3, 50),
    cache: EmbeddingCache | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> LabelledTriples:
    """(query, positive, negatives, margins) for every pair whose positive is a corpus document.

    Candidates are the student's ranks ``rank_window`` for the query (known positives skipped); ``negatives``
    of them are drawn at random from that window (seeded), so the student sees both hard and moderate negatives.
    """
    import time

    started = time.perf_counter()
    if negatives < 1:
        raise EmbedlabError("teacher labelling needs at least one negative per query")
    row_of = {d.id: i for i, d in enumerate(corpus)}
    usable = [p for p in pairs if p.positive_id in row_of]
    if not usable:
        raise EmbedlabError("no training pair has a corpus document as its positive: nothing for the teacher to label")
    low, high = rank_window
    settings = (negatives, low, high, seed)
    store = Path(cache.root) / "teacher-labels" if cache is not None else None
    key = _labels_key(teacher, student, usable, settings)
    path = store / f"{key}.json" if store is not None else None
    cached = path is not None and path.is_file()
    if cached:
        assert path is not None
        labels = json.loads(path.read_text())
    else:
        labels = _score_triples(
            usable, corpus, row_of, teacher=teacher, student=student, negatives=negatives, rank_window=rank_window,
            cache=cache, seed=seed, show_progress=show_progress,
        )  # fmt: skip
        if path is not None:
            write_json_atomic(path, labels)
    examples = tuple(
        MarginExample(
            query=p.example.query,
            positive=corpus[row_of[p.positive_id]].full_text,
            negatives=tuple(corpus[int(r)].full_text for r in rows),
            margins=tuple(margins),
            origin=p.origin,
            rows=(row_of[p.positive_id], *(int(r) for r in rows)),
        )
        for p, rows, margins in zip(usable, labels["rows"], labels["margins"], strict=True)
    )
    return LabelledTriples(
        teacher=teacher.name,
        examples=examples,
        positive_scores=labels["positive_scores"],
        negative_scores=labels["negative_scores"],
        inverted=int(labels["inverted"]),
        scale=float(labels["scale"]),
        cached=cached,
        seconds=time.perf_counter() - started,
    )


def _score_triples(
    usable: Sequence[TrainPair],
    corpus: Sequence[Document],
    row_of: dict[str, int],
    *,
    teacher: Teacher,
    student: Encoder,
    negatives: int,
    rank_window: tuple[int, int],
    cache: EmbeddingCache | None,
    seed: int,
    show_progress: bool,
) -> dict[str, Any]:
    """Negatives drawn from the student's ranks and the teacher's margins, as stored in the label cache."""
    low, high = rank_window
    documents = embed(student, [d.full_text for d in corpus], role="document", cache=cache, show_progress=show_progress)
    queries = [p.example.query for p in usable]
    query_vectors = embed(student, queries, role="query", cache=cache, show_progress=show_progress)
    depth = min(high, len(corpus))
    _, ranked = exact_top_k(query_vectors, documents, depth)
    rng = np.random.default_rng(seed)
    chosen = np.zeros((len(usable), negatives), dtype=np.int64)
    for i, pair in enumerate(usable):
        known = {row_of[d] for d in pair.positive_ids | {pair.positive_id} if d in row_of}
        window = [int(r) for r in ranked[i, low:depth] if int(r) not in known]
        if len(window) < negatives:  # a tiny corpus: fill from the rest
            window += [int(r) for r in rng.permutation(len(corpus)) if int(r) not in known and int(r) not in window]
        chosen[i] = rng.choice(np.asarray(window[: max(negatives, high - low)]), size=negatives, replace=False)
    positive_rows = np.asarray([[row_of[p.positive_id]] for p in usable], dtype=np.int64)
    scores = np.zeros((len(usable), negatives + 1), dtype=np.float32)
    step = 256
    rows_all = np.concatenate([positive_rows, chosen], axis=1)
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(usable), step), desc=f"teacher {teacher.name}", disable=not show_progress):
        scores[start : start + step] = teacher.score(queries[start : start + step], rows_all[start : start + step])
    student_scores = np.einsum("ij,ikj->ik", query_vectors, documents[rows_all])
    spread = float(scores.std())
    scale = float(student_scores.std()) / spread if spread > 0 else 1.0
    margins = np.round(scale * (scores[:, :1] - scores[:, 1:]), 6)  # as stored, so a cached run trains alike
    inverted = int((margins < 0).sum())
    positive_scores = score_distribution(scores[:, 0].tolist())
    negative_scores = score_distribution(scores[:, 1:].ravel().tolist())
    return {
        "rows": chosen.tolist(),
        "margins": margins.tolist(),
        "positive_scores": positive_scores,
        "negative_scores": negative_scores,
        "inverted": inverted,
        "scale": scale,
        "teacher": teacher.name,
    }


def teacher_from_report(out: str | os.PathLike[str]) -> str | None:
    """The best system of the ``select`` report in ``out``, as a teacher name; ``None`` without a report.

    A hybrid is named ``hybrid:<its dense part>``: select fuses BM25 with its best dense model, the dense
    model ranked highest on its leaderboard.
    """
    report = Path(out) / "report.json"
    if not report.is_file():
        return None
    try:
        sections = json.loads(report.read_text()).get("sections", [])
        board = next(s["payload"] for s in sections if s.get("name") == "leaderboard")
        ranked = [str(m["name"]) for m in board.get("models", [])] or [str(board["best"])]
        overlap = board.get("training_overlap") or {}
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None
    # A system that trained on the evaluated data scored unfairly there: never the teacher.
    fair = [name for name in ranked if (overlap.get(name) or {}).get("clean", True)]
    if not fair:
        return None
    best = fair[0]
    if best == "hybrid":
        dense = [name for name in fair if name not in ("bm25", "hybrid")]
        return f"hybrid:{dense[0]}" if dense else "hybrid"
    return best
