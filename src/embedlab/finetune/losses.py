"""The training losses, chosen by name from one registry — sentence-transformers' own implementations.

=======================  ===================================================  =====================================
name                     sentence-transformers loss                           data it needs
=======================  ===================================================  =====================================
``mnrl``                 MultipleNegativesRankingLoss (in-batch negatives)    (query, positive[, negatives...])
``cached-mnrl``          CachedMultipleNegativesRankingLoss (GradCache:       (query, positive[, negatives...])
                         large batches in small forward passes, CPU-friendly)
``triplet``              TripletLoss (cosine distance, margin 0.2)            (query, positive, negative)
``cosine``               CosineSimilarityLoss                                 (text1, text2, score)
``cosent``               CoSENTLoss                                           (text1, text2, score)
``contrastive``          ContrastiveLoss                                      (text1, text2, label 0/1)
``online-contrastive``   OnlineContrastiveLoss                                (text1, text2, label 0/1)
``margin-mse``           MarginMSELoss (cosine), a teacher's margins          (query, positive, negatives...,
                                                                              margins t(q,p) − t(q,n_i))
``in-batch-margin-mse``  MarginMSELoss (cosine) against every document of     (query, positive, negatives...,
                         the batch, the teacher asked at each step            the row's index; ``--teacher-in-batch``,
                         (:mod:`~embedlab.finetune.in_batch`)                 built with its teacher)
=======================  ===================================================  =====================================

One run may train several losses at once, each on its own data (:class:`LossPart`): teacher-labelled corpus
queries with ``margin-mse`` beside clean judged pairs with ``mnrl`` (sentence-transformers' multi-data-set
training: each batch comes from one part, parts drawn in proportion to their size).

``matryoshka:<name>`` (or a non-empty ``matryoshka_dims``) wraps any of them in MatryoshkaLoss, so the first
64, 128, ... dimensions of a vector work on their own.

:func:`loss_data` turns training examples into the columns a loss reads and refuses data that does not fit
it with an :class:`EmbedlabError` that says what would fit (scores are rescaled to [0, 1] when they exceed 1,
as STS's 0–5; contrastive labels come from 0/1 scores, or from positives (1) and negatives (0)).
:func:`build_loss` makes the loss module for a model.

Example::

    >>> spec = get_loss("mnrl")
    >>> data = loss_data("mnrl", examples)            # doctest: +SKIP
    >>> loss = build_loss("mnrl", model, config)      # doctest: +SKIP
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from embedlab.data.loaders import TrainingExample
from embedlab.errors import EmbedlabError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from torch import nn

    from embedlab.finetune.config import FinetuneConfig

DataKind = Literal["pairs", "triplets", "scored", "labelled", "margins"]
MATRYOSHKA_PREFIX = "matryoshka:"


@dataclass(frozen=True)
class LossData:
    """Columns in the order the loss reads them, the row count, and what was changed to fit."""

    columns: dict[str, list[Any]]
    notes: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def texts_per_row(self) -> int:
        return sum(1 for name in self.columns if name not in ("score", "label"))


@dataclass(frozen=True)
class LossPart:
    """One loss of a run and the data it trains on; ``make`` builds the loss module when it needs more than the
    model and the config (``in-batch-margin-mse`` holds its teacher)."""

    loss: str
    data: LossData
    make: Callable[[SentenceTransformer], nn.Module] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class LossSpec:
    name: str
    summary: str
    data: DataKind
    build: Callable[[SentenceTransformer, FinetuneConfig], nn.Module] = field(repr=False)
    in_batch_negatives: bool = False


def _mnrl(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(model)


def _cached_mnrl(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    return CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.mini_batch_size)


def _triplet(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import TripletDistanceMetric, TripletLoss

    return TripletLoss(model, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=0.2)


def _cosine(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    return CosineSimilarityLoss(model)


def _cosent(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    return CoSENTLoss(model)


def _contrastive(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import ContrastiveLoss

    return ContrastiveLoss(model)


def _online_contrastive(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import OnlineContrastiveLoss

    return OnlineContrastiveLoss(model)


def _margin_mse(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    from sentence_transformers.util import pairwise_cos_sim

    # Cosine, not the default dot product: teachers' scores are on a cosine-like scale (embedlab.finetune.teacher),
    # and a student without a Normalize module would otherwise be compared on another scale.
    return MarginMSELoss(model, similarity_fct=pairwise_cos_sim)


def _in_batch_margin_mse(model: SentenceTransformer, config: FinetuneConfig) -> nn.Module:
    raise EmbedlabError(
        "loss 'in-batch-margin-mse' asks its teacher at every step: it is made by --teacher-in-batch "
        "(fix: give --teacher NAME --teacher-in-batch instead of --loss in-batch-margin-mse)"
    )


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("mnrl", "in-batch negatives (MultipleNegativesRankingLoss)", "pairs", _mnrl, True),
        LossSpec("cached-mnrl", "in-batch negatives with GradCache", "pairs", _cached_mnrl, True),
        LossSpec("triplet", "triplet margin loss, cosine distance", "triplets", _triplet),
        LossSpec("cosine", "cosine similarity regressed on scores", "scored", _cosine),
        LossSpec("cosent", "CoSENT ranking of scored pairs", "scored", _cosent),
        LossSpec("contrastive", "contrastive loss on 0/1 labelled pairs", "labelled", _contrastive),
        LossSpec(
            "online-contrastive", "contrastive loss on the hard pairs of a batch", "labelled", _online_contrastive
        ),
        LossSpec("margin-mse", "MarginMSE on a teacher's score margins", "margins", _margin_mse),
        LossSpec(
            "in-batch-margin-mse",
            "MarginMSE against every document of the batch, the teacher asked at each step",
            "margins",
            _in_batch_margin_mse,
        ),
    )
}


def parse_loss_name(name: str) -> tuple[str, bool]:
    """(inner loss name, wrapped in Matryoshka?) for ``mnrl`` or ``matryoshka:mnrl``."""
    name = name.strip().lower()
    if name.startswith(MATRYOSHKA_PREFIX):
        return name[len(MATRYOSHKA_PREFIX) :], True
    return name, False


def get_loss(name: str) -> LossSpec:
    """The registry entry for ``name`` (``matryoshka:`` prefix allowed); unknown names get "did you mean"."""
    inner, _ = parse_loss_name(name)
    spec = LOSSES.get(inner)
    if spec is None:
        close = difflib.get_close_matches(inner, list(LOSSES), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise EmbedlabError(
            f"unknown loss '{name}': {hint}losses are {', '.join(LOSSES)} (any of them as matryoshka:<name>)"
        )
    return spec


def matryoshka_dims(dim: int, given: Sequence[int] = ()) -> list[int]:
    """The dimensions to train: ``given`` (each at most ``dim``), else dim, dim/2, dim/4, ... down to 32."""
    if given:
        bad = [d for d in given if d > dim]
        if bad:
            raise EmbedlabError(f"matryoshka dimensions {bad} exceed the model's {dim}")
        return sorted(set(given), reverse=True)
    dims, d = [], dim
    while d >= 32:
        dims.append(d)
        d //= 2
    return dims


def build_loss(
    name: str,
    model: SentenceTransformer,
    config: FinetuneConfig,
    make: Callable[[SentenceTransformer], nn.Module] | None = None,
) -> nn.Module:
    """The loss module for ``model`` (wrapped in MatryoshkaLoss for ``matryoshka:`` or ``matryoshka_dims``);
    ``make`` (a :class:`LossPart`'s) builds it instead of the registry."""
    spec = get_loss(name)
    _, wrapped = parse_loss_name(name)
    loss = make(model) if make is not None else spec.build(model, config)
    if wrapped or config.matryoshka_dims:
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=matryoshka_dims(int(getter() or 0), config.matryoshka_dims))
    return loss


def _scaled(scores: list[float]) -> tuple[list[float], list[str]]:
    top = max(scores)
    if min(scores) < 0:
        raise EmbedlabError("scores must not be negative (fix: give similarity scores such as 0–1 or 0–5)")
    if top > 1:
        return [s / top for s in scores], [f"scores divided by {top:g} to lie in [0, 1]"]
    return scores, []


def loss_data(name: str, examples: Sequence[TrainingExample]) -> LossData:
    """The columns ``name`` trains on, built from ``examples``; an :class:`EmbedlabError` if they do not fit."""
    spec = get_loss(name)
    if not examples:
        raise EmbedlabError("no training examples")
    if spec.data == "margins":
        raise EmbedlabError(
            f"loss '{spec.name}' trains on a teacher's margins: give --teacher (it labels the examples itself)"
        )
    with_score = sum(ex.score is not None for ex in examples)
    with_negatives = sum(bool(ex.negatives) for ex in examples)
    anchors = [ex.query for ex in examples]
    positives = [ex.positive for ex in examples]
    if spec.data == "pairs":
        if with_score == len(examples) and not with_negatives:
            raise EmbedlabError(
                f"loss '{spec.name}' trains on (query, relevant text) pairs, but every example is a scored pair "
                "(fix: use --loss cosent or cosine for scored pairs)"
            )
        count = min(len(ex.negatives) for ex in examples)
        notes = []
        if with_negatives and count < max(len(ex.negatives) for ex in examples):
            notes.append(f"{count} negative(s) per example used: the fewest any example has")
        columns: dict[str, list[Any]] = {"anchor": anchors, "positive": positives}
        for i in range(count):
            columns[f"negative_{i + 1}"] = [ex.negatives[i] for ex in examples]
        return LossData(columns, tuple(notes))
    if spec.data == "triplets":
        if not with_negatives:
            raise EmbedlabError(
                f"loss '{spec.name}' needs a negative per example and none has one "
                "(fix: mine them with --hard-negatives 1, or give a triplet file with a 'negative' column)"
            )
        kept = [ex for ex in examples if ex.negatives]
        notes = (
            [f"{len(examples) - len(kept)} example(s) without a negative left out"] if len(kept) < len(examples) else []
        )
        return LossData(
            {
                "anchor": [ex.query for ex in kept],
                "positive": [ex.positive for ex in kept],
                "negative": [ex.negatives[0] for ex in kept],
            },
            tuple(notes),
        )
    if spec.data == "scored":
        if with_score < len(examples):
            raise EmbedlabError(
                f"loss '{spec.name}' needs a similarity score on every pair; {len(examples) - with_score} of "
                f"{len(examples)} have none (fix: give scored pairs with --scored FILE, or use --loss mnrl)"
            )
        scores, notes = _scaled([float(ex.score) for ex in examples if ex.score is not None])
        return LossData({"sentence1": anchors, "sentence2": positives, "score": scores}, tuple(notes))
    # labelled
    if with_score == len(examples):
        labels = {float(ex.score) for ex in examples if ex.score is not None}
        if not labels <= {0.0, 1.0}:
            raise EmbedlabError(
                f"loss '{spec.name}' needs 0/1 labels, but the scores take other values "
                "(fix: use --loss cosent for graded scores)"
            )
        return LossData(
            {"sentence1": anchors, "sentence2": positives, "label": [int(ex.score or 0) for ex in examples]}
        )
    if not with_negatives:
        raise EmbedlabError(
            f"loss '{spec.name}' needs pairs labelled 0/1, or negatives to label 0 "
            "(fix: mine negatives with --hard-negatives 1, or give 0/1 scores)"
        )
    first, second, label = [], [], []
    for ex in examples:
        first.append(ex.query)
        second.append(ex.positive)
        label.append(1)
        for negative in ex.negatives:
            first.append(ex.query)
            second.append(negative)
            label.append(0)
    return LossData({"sentence1": first, "sentence2": second, "label": label}, ("positives labelled 1, negatives 0",))
