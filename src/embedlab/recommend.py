"""From a leaderboard to a decision: which model to use under the user's constraints, and why, in plain words.

:func:`recommend` takes the candidates (each with its quality on the primary metric, that mean's confidence
interval and its measured :class:`~embedlab.cost.ModelCost`), the per-query scores and the user's
:class:`Constraints`, and returns a :class:`Recommendation`:

1. **Constraints** (:data:`RULES`, one rule per CLI option): ``--max-latency-ms`` (p95 single-query encoding
   latency), ``--max-dim`` (embedding dimension; BM25 has none and always passes), ``--max-size-mb`` (model
   files on disk), ``--licence`` (allowed licences, e.g. ``Apache-2.0,MIT``; a hybrid must satisfy it with
   every part) and ``--min-throughput`` (documents embedded per second). Candidates that break one are out,
   with the reason kept.
2. **Pareto frontier** of quality against document throughput: the candidates no other beats on both.
3. **The choice**: the best candidate that meets the constraints is the reference; every other feasible
   candidate is tested against it (paired test, Holm-corrected, see :mod:`embedlab.evaluate.statistics`). Among
   those statistically tied with it, the fastest is chosen when it is at least :data:`SPEEDUP` times faster —
   "mpnet-base is tied with minilm-l6 on nDCG@10 (p = 0.4) but 5× slower: use minilm-l6" — otherwise the
   reference is. The reasons also name better candidates that the constraints ruled out and what the choice
   costs for the whole corpus.
4. **No feasible candidate**: no recommendation, but the nearest misses (fewest constraints broken, then
   smallest excess) and, for each, every constraint it breaks and by how much.
5. **Fine-tuning** (:func:`finetune_advice`): whether it is likely to pay off, from two pieces of evidence —
   training judgements available (:func:`training_judgements`), and the gap between BM25 and the best dense
   model (BM25 close to or above the dense models, or a hybrid significantly above them, means the models miss
   the domain's vocabulary: domain shift, which fine-tuning addresses) — and the exact ``embedlab finetune``
   command, with the same ``--out`` so its before/after section joins the same report.
6. **Deployment** (:func:`deploy_commands`): the exact ``embedlab index`` and ``embedlab serve`` commands that put
   the chosen system — a dense model, ``bm25`` or ``hybrid:MODEL`` — behind ``/search``; the recommendation ends
   with them.

Example::

    >>> rec = recommend(candidates, metric="ndcg@10", per_query=stats.per_query,
    ...                 constraints=Constraints(max_latency_ms=20), data_ref="../shared/data/scifact",
    ...                 out="runs/scifact")
    >>> print(rec)
    Use minilm-l6. mpnet-base is tied with minilm-l6 on ndcg@10 (p = 0.41) but 4.6× slower: use minilm-l6.
    ...
    Fine-tuning: likely to pay off
      ...
      embedlab finetune --data ../shared/data/scifact --base minilm-l6 --teacher hybrid:minilm-l6 --out runs/scifact
    Deploy it:
      embedlab index --model minilm-l6 --data ../shared/data/scifact --out indexes/scifact-minilm-l6
      embedlab serve --index indexes/scifact-minilm-l6
"""

from __future__ import annotations

import functools
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from embedlab.cost import ModelCost, format_duration
from embedlab.errors import EmbedlabError
from embedlab.evaluate.statistics import Interval, PairedComparison, compare_to_reference
from embedlab.finetune.provenance import TRAINED_MARK, TrainingOverlap
from embedlab.models.catalog import find_spec

SPEEDUP = 1.25
"""A tied candidate replaces the best one only when it is at least this many times faster (documents/s)."""

MIN_TRAINING_JUDGEMENTS = 100
"""Fewer training judgements than this are "few": fine-tuning on them alone rarely moves the needle."""

DOMAIN_SHIFT_POINTS = 5.0
"""The best dense model leading BM25 by less than this many points (×100) is a sign of domain shift."""

FINE_TUNABLE_KINDS = frozenset({"sentence-transformers"})

FineTuneVerdict = Literal["likely", "possible", "unlikely", "not possible"]


# --- constraints ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constraints:
    """What the user can afford; ``None`` (or no licences) means no limit. Validated on creation."""

    max_latency_ms: float | None = None
    max_dim: int | None = None
    max_size_mb: float | None = None
    licences: tuple[str, ...] = ()
    min_throughput: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_latency_ms", "max_dim", "max_size_mb", "min_throughput"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                option = "--" + name.replace("_", "-")
                raise EmbedlabError(f"{option} must be a positive number (got {value})")
        object.__setattr__(self, "licences", tuple(str(x).strip() for x in self.licences if str(x).strip()))

    @property
    def any(self) -> bool:
        return any(rule.active(self) for rule in RULES)

    def describe(self) -> str:
        """The active constraints in words, e.g. ``p95 latency ≤ 20 ms, dimension ≤ 384``; ``none`` if none."""
        parts = [rule.describe(self) for rule in RULES if rule.active(self)]
        return ", ".join(parts) if parts else "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_latency_ms": self.max_latency_ms,
            "max_dim": self.max_dim,
            "max_size_mb": self.max_size_mb,
            "licences": list(self.licences),
            "min_throughput": self.min_throughput,
        }


@dataclass(frozen=True)
class Candidate:
    """One model as the recommender sees it: quality on the primary metric, its interval, its cost.

    ``label`` is how to name it in a sentence (a hybrid says what it fuses); ``parts`` are a hybrid's models;
    ``source`` is what loads it (a catalog name or a folder; default: ``name``); ``overlap`` is what of the
    evaluated data it trained on, for a model fine-tuned by embedlab (``None`` otherwise).
    """

    name: str
    kind: str
    quality: float
    interval: Interval
    cost: ModelCost
    label: str = ""
    parts: tuple[str, ...] = ()
    source: str = ""
    overlap: TrainingOverlap | None = None

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", self.name)

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def unfair(self) -> bool:
        """True when it trained on the evaluated queries or their relevant documents."""
        return self.overlap is not None and not self.overlap.clean


@dataclass(frozen=True)
class Violation:
    """A broken constraint: the option, the limit, the candidate's figure, a sentence, and how far off it is
    (``factor`` ≥ 1: 2.0 is twice the limit; infinite for a licence)."""

    option: str
    limit: Any
    actual: Any
    message: str
    factor: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "option": self.option,
            "limit": self.limit,
            "actual": self.actual,
            "message": self.message,
            "factor": self.factor if math.isfinite(self.factor) else None,
        }


class Rule(Protocol):
    """One constraint: whether it is set, how to say it, and what a candidate breaks."""

    @property
    def option(self) -> str: ...

    def active(self, constraints: Constraints) -> bool: ...

    def describe(self, constraints: Constraints) -> str: ...

    def check(self, candidate: Candidate, constraints: Constraints) -> Violation | None: ...


@dataclass(frozen=True)
class LimitRule:
    """A numeric limit: ``figure(candidate)`` must stay at most (``upper``) or at least the constraint."""

    option: str
    attribute: str
    label: str
    unit: str
    figure: Callable[[ModelCost], float | None]
    upper: bool = True

    def limit(self, constraints: Constraints) -> float | None:
        value = getattr(constraints, self.attribute)
        return None if value is None else float(value)

    def active(self, constraints: Constraints) -> bool:
        return self.limit(constraints) is not None

    def describe(self, constraints: Constraints) -> str:
        return f"{self.label} {'≤' if self.upper else '≥'} {self.limit(constraints):g}{self.unit}"

    def check(self, candidate: Candidate, constraints: Constraints) -> Violation | None:
        limit = self.limit(constraints)
        actual = self.figure(candidate.cost)
        if limit is None or actual is None:
            return None
        broken = actual > limit if self.upper else actual < limit
        if not broken:
            return None
        factor = actual / limit if self.upper else (limit / actual if actual > 0 else math.inf)
        sign = ">" if self.upper else "<"
        how = f"{factor:.1f}× over" if self.upper else f"{factor:.1f}× too slow"
        return Violation(
            self.option,
            limit,
            actual,
            f"{self.label} {actual:.4g}{self.unit} {sign} {limit:g}{self.unit} ({how})",
            factor,
        )


@dataclass(frozen=True)
class LicenceRule:
    """The candidate's licence (every part's, for a hybrid) must be one of the allowed ones (case-insensitive)."""

    option: str = "--licence"

    def active(self, constraints: Constraints) -> bool:
        return bool(constraints.licences)

    def describe(self, constraints: Constraints) -> str:
        return "licence in " + "/".join(constraints.licences)

    def check(self, candidate: Candidate, constraints: Constraints) -> Violation | None:
        if not constraints.licences:
            return None
        allowed = {x.lower() for x in constraints.licences}
        licences = [x.strip() for x in candidate.cost.licence.split("+")]
        refused = [x for x in licences if x.lower() not in allowed]
        if not refused:
            return None
        return Violation(
            self.option,
            list(constraints.licences),
            candidate.cost.licence,
            f"licence {' + '.join(refused)} is not one of {', '.join(constraints.licences)}",
            math.inf,
        )


RULES: tuple[Rule, ...] = (
    LimitRule("--max-latency-ms", "max_latency_ms", "p95 latency", " ms", lambda c: c.latency.p95),
    LimitRule("--max-dim", "max_dim", "dimension", "", lambda c: float(c.dim) if c.dim else None),
    LimitRule("--max-size-mb", "max_size_mb", "size on disk", " MB", lambda c: c.size_mb),
    LicenceRule(),
    LimitRule(
        "--min-throughput", "min_throughput", "throughput", " docs/s", lambda c: c.documents_per_second, upper=False
    ),
)
"""The constraint registry, in the order they are reported."""


def check(candidate: Candidate, constraints: Constraints) -> tuple[Violation, ...]:
    """Every constraint ``candidate`` breaks (empty: it fits)."""
    return tuple(v for rule in RULES if (v := rule.check(candidate, constraints)) is not None)


def pareto_frontier(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names whose (quality, throughput) no other point matches or beats on both with one strictly better;
    ordered by throughput, fastest first.

    >>> pareto_frontier({"a": (0.6, 10.0), "b": (0.5, 100.0), "c": (0.4, 50.0), "d": (0.6, 5.0)})
    ['b', 'a']
    """
    frontier = []
    for name, (quality, speed) in points.items():
        dominated = any(
            q >= quality and s >= speed and (q > quality or s > speed)
            for other, (q, s) in points.items()
            if other != name
        )
        if not dominated:
            frontier.append(name)
    return sorted(frontier, key=lambda n: -points[n][1])


# --- fine-tuning advice -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    """Judgements the data set holds beside the evaluated split (what fine-tuning can learn from)."""

    split: str
    queries: int
    judgements: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "queries": self.queries, "judgements": self.judgements, "source": self.source}


def training_judgements(data: str | Path, eval_split: str) -> TrainingData | None:
    """Training judgements beside a BEIR folder's evaluated split (``qrels/train.tsv``), or ``None``.

    Other inputs (a pairs file, a folder of documents, the bundled default) hold only what is evaluated.
    """
    path = Path(data)
    qrels = path / "qrels" / "train.tsv"
    if eval_split == "train" or not qrels.is_file():
        return None
    queries: set[str] = set()
    judgements = 0
    for line in qrels.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 3:
            continue
        try:
            grade = int(float(parts[-1]))
        except ValueError:
            continue  # the header
        if grade > 0:
            judgements += 1
            queries.add(parts[0].strip())
    if not judgements:
        return None
    return TrainingData(split="train", queries=len(queries), judgements=judgements, source=str(qrels))


@dataclass(frozen=True)
class FineTuneAdvice:
    """Whether fine-tuning is likely to pay off, the evidence in words, and the command to run.

    ``teacher`` is the ``--teacher`` argument (``None`` when no candidate can teach) and ``teacher_score`` its
    primary metric here; ``train_queries`` is ``"corpus"`` when only the evaluated queries are judged (the command
    then trains on queries made from the corpus and measures on the evaluated ones with ``--eval``), else ``None``
    (the training split beside them, plus corpus queries).
    """

    verdict: FineTuneVerdict
    reasons: tuple[str, ...]
    base: str | None
    command: str | None
    training: TrainingData | None
    bm25_gap: float | None
    hybrid_gain: float | None
    teacher: str | None = None
    teacher_score: float | None = None
    train_queries: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "base": self.base,
            "command": self.command,
            "teacher": self.teacher,
            "teacher_score": self.teacher_score,
            "train_queries": self.train_queries,
            "training": self.training.to_dict() if self.training else None,
            "bm25_gap": self.bm25_gap,
            "hybrid_gain": self.hybrid_gain,
        }

    def __str__(self) -> str:
        lines = [f"Fine-tuning: {self.verdict}" + (" to pay off" if self.verdict in ("likely", "unlikely") else "")]
        lines += [f"  - {reason}" for reason in self.reasons]
        if self.command:
            lines.append(f"  {self.command}")
        return "\n".join(lines)


def _tunable(name: str) -> str | None:
    """``name`` if it can be fine-tuned, else the catalog model it derives from if that can, else ``None``."""
    spec = find_spec(name)
    if spec is None:
        # Not in the catalog: a local sentence-transformers folder or a hub id, both fine-tunable.
        return None if name == "hybrid" else name
    if spec.kind in FINE_TUNABLE_KINDS:
        return name
    return _tunable(spec.base) if spec.base else None


def _finetune_base(
    chosen: Candidate | None,
    dense: Sequence[Candidate],
    tied: Sequence[str],
    *,
    sources: Mapping[str, str] | None = None,
    excluded: frozenset[str] = frozenset(),
) -> str | None:
    """The model to fine-tune: the chosen one (or what it derives from, or a hybrid's dense part); else, of the
    dense candidates tied with the best one (``tied``), the fastest; else the best fine-tunable candidate.
    ``sources`` maps candidate names (a hybrid's parts) to what loads them; ``excluded`` are sources never to
    fine-tune (models trained on the evaluated data: their before/after there would not be fair).

    Fine-tuning costs in proportion to the model's encoding cost, so among models the data cannot tell apart the
    cheapest one gets the most training steps in the same time.
    """
    sources = sources or {}
    options = [chosen.source, *(sources.get(p, p) for p in chosen.parts)] if chosen is not None else []
    fastest_tied = sorted((c for c in dense if c.name in tied), key=lambda c: -c.cost.documents_per_second)
    options += [c.source for c in fastest_tied] + [c.source for c in dense]
    for name in options:
        found = _tunable(name) if name not in excluded else None
        if found is not None and found not in excluded:
            return found
    return None


def _derived_from(source: str, base: str) -> bool:
    """True when ``source`` is ``base`` or a catalog model made from it (quantised, distilled): as a teacher it
    would know nothing the base does not."""
    if source == base:
        return True
    spec = find_spec(source)
    return spec is not None and spec.base is not None and _derived_from(spec.base, base)


def _teacher(candidates: Sequence[Candidate], base: str) -> tuple[Candidate, str] | None:
    """The teacher for fine-tuning ``base`` and its ``--teacher`` argument: the best candidate (``candidates`` best
    first) not derived from the base and not trained on the evaluated data (a teacher that memorised the
    evaluated queries would pass them on). A hybrid teaches as ``hybrid:<its dense model>``."""
    sources = {c.name: c.source for c in candidates}
    for candidate in candidates:
        if candidate.unfair:
            continue
        if candidate.kind == "hybrid":
            dense = [p for p in candidate.parts if p != "bm25" and sources.get(p, p) != "bm25"]
            if len(dense) == 1:
                return candidate, f"hybrid:{sources.get(dense[0], dense[0])}"
            continue
        if candidate.kind == "bm25":
            return candidate, "bm25"
        if not _derived_from(candidate.source, base):
            return candidate, candidate.source
    return None


def _tied_with_best(
    dense: Sequence[Candidate],
    per_query: Mapping[str, Mapping[str, float]],
    *,
    metric: str,
    alpha: float,
    resamples: int,
    seed: int,
) -> list[str]:
    """The best dense candidate and every dense candidate the paired test cannot tell apart from it."""
    scored = [c for c in dense if c.name in per_query]
    if not scored:
        return []
    best = scored[0]
    if len(scored) == 1:
        return [best.name]
    tests = compare_to_reference(
        {c.name: per_query[c.name] for c in scored},
        best.name,
        metric=metric,
        alpha=alpha,
        resamples=resamples,
        seed=seed,
    )
    return [best.name, *(name for name, test in tests.items() if test.tied)]


def points(value: float) -> str:
    """A score difference in points (×100), signed: ``+1.2``."""
    return f"{100 * value:+.1f}"


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def finetune_advice(
    candidates: Sequence[Candidate],
    *,
    chosen: Candidate | None,
    per_query: Mapping[str, Mapping[str, float]],
    metric: str,
    training: TrainingData | None,
    data_ref: str,
    out: str | Path,
    alpha: float = 0.05,
    resamples: int = 10_000,
    seed: int = 0,
) -> FineTuneAdvice:
    """Whether fine-tuning is likely to pay off; see the module docstring for the evidence weighed.

    The command names a **teacher** (``--teacher``), whose scores label the training pairs: the best system here
    other than the base (the hybrid as ``hybrid:<its dense model>``, ``bm25``, or a stronger dense model), never a
    model derived from the base (it knows nothing the base does not) nor one trained on the evaluated data. It
    **never trains on the evaluated queries**: with a training split beside them (``training``) it trains on that
    split plus queries made from the corpus and is measured on the held-out evaluated split; with only the
    evaluated queries judged, it trains on queries made from the corpus alone (``--train-queries corpus``) and
    measures before/after on the evaluated queries (``--eval``). A candidate that trained on the evaluated data
    (its ``overlap``) is no evidence of domain shift, and is never the base to tune further.
    """
    by_quality = sorted(candidates, key=lambda c: -c.quality)
    # A model trained on the evaluated data is no evidence (its score is inflated) and no fair base to tune further.
    every_dense = [c for c in by_quality if c.kind not in ("bm25", "hybrid")]
    dense = [c for c in every_dense if not c.unfair]
    bm25 = next((c for c in by_quality if c.kind == "bm25" and not c.unfair), None)
    hybrid = next((c for c in by_quality if c.kind == "hybrid" and not c.unfair), None)
    reasons: list[str] = []
    shift = False
    gap = None
    if dense and bm25:
        best = dense[0]
        gap = best.quality - bm25.quality
        if gap < 0:
            shift = True
            reasons.append(
                f"BM25 beats the best dense model ({best.name}) by {100 * -gap:.1f} points on {metric}: the "
                "models miss this domain's vocabulary, the usual sign of domain shift that fine-tuning fixes"
            )
        elif gap < DOMAIN_SHIFT_POINTS / 100:
            shift = True
            reasons.append(
                f"the best dense model ({best.name}) leads BM25 by only {100 * gap:.1f} points on {metric}: "
                "a sign of domain shift"
            )
        else:
            reasons.append(
                f"the best dense model ({best.name}) leads BM25 by {100 * gap:.1f} points on {metric}: the "
                "models already handle this domain's language"
            )
    hybrid_gain = None
    if hybrid and dense and hybrid.name in per_query and dense[0].name in per_query:
        hybrid_gain = hybrid.quality - dense[0].quality
        test = compare_to_reference(
            {dense[0].name: per_query[dense[0].name], hybrid.name: per_query[hybrid.name]},
            dense[0].name,
            metric=metric,
            alpha=alpha,
            resamples=resamples,
            seed=seed,
        )[hybrid.name]
        if hybrid_gain > 0 and not test.tied:
            shift = True
            reasons.append(
                f"fusing BM25 with {dense[0].name} adds {100 * hybrid_gain:.1f} points ({format_p(test.p_adjusted)}): "
                "there is lexical signal the dense model does not capture yet"
            )
    evaluated = len(next(iter(per_query.values()), {}))
    if training is None:
        reasons.append(
            f"no training judgements beside the {evaluated} evaluated queries, and those must never train the "
            "model they judge: the command trains only on queries made from the corpus (titles, inverse cloze, "
            "keyword queries) labelled by the teacher (--train-queries corpus), and measures before/after on the "
            "evaluated queries (--eval); documents relevant to them may still get pseudo-queries (its leakage "
            "report counts them)"
        )
    elif training.judgements < MIN_TRAINING_JUDGEMENTS:
        reasons.append(
            f"only {training.judgements} training judgements ({training.queries} queries, split "
            f"'{training.split}'): few; the command adds queries made from the corpus, labelled by the teacher, "
            "and measures before/after on the held-out evaluated queries"
        )
    else:
        reasons.append(
            f"{training.judgements} training judgements for {training.queries} queries (split "
            f"'{training.split}'), disjoint from the evaluated ones: the command trains on them plus queries made "
            "from the corpus, labelled by the teacher, and measures before/after on the held-out evaluated queries"
        )
    tied = _tied_with_best(dense, per_query, metric=metric, alpha=alpha, resamples=resamples, seed=seed)
    unfair = frozenset(c.source for c in candidates if c.unfair)
    sources = {c.name: c.source for c in candidates}
    base = _finetune_base(chosen, dense, tied, sources=sources, excluded=unfair)
    enough = training is not None and training.judgements >= MIN_TRAINING_JUDGEMENTS
    verdict: FineTuneVerdict
    if base is None:
        verdict = "not possible"
        if _finetune_base(chosen, every_dense, tied, sources=sources) is not None:
            reasons.append(
                "the candidates that can be fine-tuned trained on the evaluated data (†): tuning them further cannot "
                "be measured fairly here; fine-tune the model they started from (their embedlab_training.json "
                "names it)"
            )
        else:
            reasons.append("none of the candidates is a sentence-transformers model that can be fine-tuned")
    elif enough and shift:
        verdict = "likely"
    elif enough or shift:
        verdict = "possible"
    else:
        verdict = "unlikely"
    if base is not None and chosen is not None and base != chosen.source:
        why = (
            "trained on the evaluated data (†), so its before/after here would not be fair"
            if chosen.unfair
            else "cannot be fine-tuned itself"
        )
        reasons.append(
            f"{chosen.name} {why}; fine-tune {base}, then weigh its after score (on queries it never trained on) "
            f"against {chosen.name}'s"
        )
    cheaper = next((c for c in dense if c.source == base and c.name in tied), None)
    ratio = cheaper.cost.documents_per_second / max(dense[0].cost.documents_per_second, 1e-9) if cheaper else 0.0
    if cheaper is not None and cheaper is not dense[0] and ratio > 1:
        reasons.append(
            f"{cheaper.name} is tied with the best dense model ({dense[0].name}) and {ratio:.1f}× faster: "
            "the same training time buys it more steps"
        )
    teacher = _teacher(by_quality, base) if base is not None else None
    if teacher is not None and base is not None:
        reasons.append(_teacher_reason(*teacher, base=base, candidates=by_quality, metric=metric))
    train_queries = "corpus" if training is None else None
    command = None
    if base is not None:
        data = shlex.quote(str(data_ref))
        words = ["embedlab finetune", f"--data {data}", f"--base {shlex.quote(base)}"]
        if teacher is not None:
            words.append(f"--teacher {shlex.quote(teacher[1])}")
        if train_queries is not None:
            words += [f"--train-queries {train_queries}", f"--eval {data}"]
        words.append(f"--out {shlex.quote(str(out))}")
        command = " ".join(words)
    return FineTuneAdvice(
        verdict=verdict,
        reasons=tuple(reasons),
        base=base,
        command=command,
        training=training,
        bm25_gap=gap,
        hybrid_gain=hybrid_gain,
        teacher=teacher[1] if teacher is not None else None,
        teacher_score=teacher[0].quality if teacher is not None else None,
        train_queries=train_queries,
    )


def _teacher_reason(
    teacher: Candidate, argument: str, *, base: str, candidates: Sequence[Candidate], metric: str
) -> str:
    """The teacher, its score, and how it stands against the base it will teach."""
    said = f"the teacher is {argument}" + (f" ({teacher.title})" if teacher.title != argument else "")
    said += f", {metric} {100 * teacher.quality:.1f} here"
    student = next((c for c in candidates if c.source == base), None)
    if student is None:
        return said + f": its scores label the training pairs for {base}"
    gap = teacher.quality - student.quality
    if gap >= 0:
        return said + f", {points(gap)} points over {base}: its scores label the training pairs"
    return (
        said + f", {100 * -gap:.1f} points below {base} (no other system here that can teach scores higher), so "
        "its labels teach less than a stronger teacher would"
    )


# --- the recommendation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """The decision and its reasons; ``model`` is ``None`` when no candidate meets the constraints."""

    metric: str
    model: str | None
    headline: str
    reasons: tuple[str, ...]
    constraints: Constraints
    feasible: tuple[str, ...]
    violations: Mapping[str, tuple[Violation, ...]]
    nearest_misses: tuple[str, ...]
    frontier: tuple[str, ...]
    tied_with_top: tuple[str, ...]
    finetune: FineTuneAdvice
    tests: Mapping[str, PairedComparison] = field(default_factory=dict)
    deploy: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "model": self.model,
            "headline": self.headline,
            "reasons": list(self.reasons),
            "constraints": self.constraints.to_dict(),
            "feasible": list(self.feasible),
            "violations": {name: [v.to_dict() for v in vs] for name, vs in self.violations.items()},
            "nearest_misses": list(self.nearest_misses),
            "frontier": list(self.frontier),
            "tied_with_top": list(self.tied_with_top),
            "tests_against_top": {name: t.to_dict() for name, t in self.tests.items()},
            "finetune": self.finetune.to_dict(),
            "deploy": list(self.deploy),
        }

    def __str__(self) -> str:
        lines = [self.headline]
        lines += [f"  - {reason}" for reason in self.reasons]
        lines.append(str(self.finetune))
        if self.deploy:
            lines += ["Deploy it:", *(f"  {command}" for command in self.deploy)]
        return "\n".join(lines)


def _unfair_reasons(candidates: Sequence[Candidate], *, chosen: Candidate | None, metric: str) -> list[str]:
    """One reason per candidate that trained on the evaluated data: its score is not a fair comparison."""
    reasons = []
    for candidate in candidates:
        if not candidate.unfair or candidate.overlap is None:
            continue
        reason = (
            f"{candidate.name} {TRAINED_MARK} {candidate.overlap.describe()}: its {metric} here is not a fair "
            "comparison with the others"
        )
        if candidate is chosen:
            reason += (
                f"; this choice rests on it: measure {candidate.name} on queries and documents it never trained on "
                "before deploying it"
            )
        reasons.append(reason)
    return reasons


def _ratio(value: float) -> str:
    return f"{value:.0f}×" if value >= 10 else f"{value:.1f}×"


def _cost_sentence(candidate: Candidate) -> str:
    cost = candidate.cost
    sizes = [cost.index_bytes(fmt) for fmt in ("float32", "int8", "binary")]
    index = (
        f"{sizes[0]:.0f} bytes per document in a float32 index ({sizes[1]:.0f} at int8, {sizes[2]:.0f} binary)"
        if all(s is not None for s in sizes)
        else f"{cost.index_bytes('sparse') or 0:.0f} bytes per document in its index"
    )
    verb = "indexes" if candidate.kind == "bm25" else "embeds"
    return (
        f"on this machine {candidate.name} {verb} your {cost.corpus.documents:,} documents in about "
        f"{format_duration(cost.corpus.seconds)} ({cost.documents_per_second:.1f} docs/s), answers a query in "
        f"{cost.latency.p50:.1f} ms (p95 {cost.latency.p95:.1f} ms), peaks at {cost.memory.peak_bytes / 1e6:.0f} MB "
        f"of memory and needs {index}"
    )


def deploy_commands(chosen: Candidate, candidates: Sequence[Candidate], *, data_ref: str) -> tuple[str, str]:
    """The ``embedlab index`` and ``embedlab serve`` commands that deploy ``chosen``: its model, ``bm25``, or for
    a hybrid ``hybrid:`` and its dense part's source, into ``indexes/<data>-<system>``."""
    if chosen.kind == "bm25":
        system = "bm25"
    elif chosen.kind == "hybrid":
        by_name = {c.name: c for c in candidates}
        dense = [
            by_name[p].source if p in by_name else p
            for p in chosen.parts
            if p not in by_name or by_name[p].kind != "bm25"
        ]
        system = f"hybrid:{dense[-1]}" if dense else "hybrid"
    else:
        system = chosen.source
    data_name = Path(data_ref.rstrip("/")).name or "data"
    folder = "indexes/" + re.sub(r"[^A-Za-z0-9._-]+", "-", f"{data_name}-{system}").strip("-")
    index = f"embedlab index --model {shlex.quote(system)} --data {shlex.quote(data_ref)} --out {shlex.quote(folder)}"
    return index, f"embedlab serve --index {shlex.quote(folder)}"


def recommend(
    candidates: Sequence[Candidate],
    *,
    metric: str,
    per_query: Mapping[str, Mapping[str, float]],
    constraints: Constraints | None = None,
    training: TrainingData | None = None,
    data_ref: str = "DATA",
    out: str | Path = "OUT",
    method: str = "randomization",
    alpha: float = 0.05,
    resamples: int = 10_000,
    seed: int = 0,
) -> Recommendation:
    """Choose a model under ``constraints``; see the module docstring for how.

    A candidate that trained on the evaluated queries or their relevant documents (its ``overlap``, from
    :mod:`embedlab.finetune.provenance`) gets a reason saying its score is not a fair comparison (and, when it is
    the choice, that the choice rests on it).
    """
    if not candidates:
        raise EmbedlabError("no candidates to recommend from")
    constraints = constraints or Constraints()
    advise = functools.partial(
        finetune_advice,
        candidates,
        per_query=per_query,
        metric=metric,
        training=training,
        data_ref=data_ref,
        out=out,
        alpha=alpha,
        resamples=resamples,
        seed=seed,
    )
    by_quality = sorted(candidates, key=lambda c: -c.quality)
    violations = {c.name: check(c, constraints) for c in by_quality}
    feasible = [c for c in by_quality if not violations[c.name]]
    frontier = pareto_frontier({c.name: (c.quality, c.cost.documents_per_second) for c in by_quality})
    label = metric
    if not feasible:
        misses = sorted(
            by_quality,
            key=lambda c: (len(violations[c.name]), sum(math.log(v.factor) for v in violations[c.name]), -c.quality),
        )[:3]
        miss_reasons = tuple(
            f"{c.name} ({label} {100 * c.quality:.1f}) breaks "
            + "; ".join(f"{v.option}: {v.message}" for v in violations[c.name])
            for c in misses
        ) + tuple(_unfair_reasons(by_quality, chosen=None, metric=metric))
        headline = (
            f"No candidate meets all your constraints ({constraints.describe()}). Nearest misses: "
            + ", ".join(c.name for c in misses)
            + "."
        )
        advice = advise(chosen=None)
        return Recommendation(
            metric=metric,
            model=None,
            headline=headline,
            reasons=miss_reasons,
            constraints=constraints,
            feasible=(),
            violations=violations,
            nearest_misses=tuple(c.name for c in misses),
            frontier=tuple(frontier),
            tied_with_top=(),
            finetune=advice,
        )

    top = feasible[0]
    tests = compare_to_reference(
        {c.name: per_query[c.name] for c in feasible},
        top.name,
        metric=metric,
        method=method,
        alpha=alpha,
        resamples=resamples,
        seed=seed,
    )
    tied = [top, *(c for c in feasible[1:] if tests[c.name].tied)]
    fastest = max(tied, key=lambda c: c.cost.documents_per_second)
    speedup = fastest.cost.documents_per_second / top.cost.documents_per_second
    chosen = fastest if fastest is not top and speedup >= SPEEDUP else top
    where = " among the candidates that meet your constraints" if constraints.any else ""
    reasons: list[str] = []
    if chosen is top:
        interval = top.interval
        reasons.append(
            f"{top.title} has the best {label}{where}: {100 * top.quality:.1f} "
            f"(95% CI {100 * interval.low:.1f}–{100 * interval.high:.1f})"
        )
        for other in tied[1:]:
            ratio = other.cost.documents_per_second / top.cost.documents_per_second
            pace = f"only {_ratio(ratio)} faster" if ratio >= 1 else f"{_ratio(1 / ratio)} slower"
            reasons.append(
                f"{other.name} is statistically tied with it ({format_p(tests[other.name].p_adjusted)}) but "
                f"{pace}: not worth the {100 * -tests[other.name].difference:.1f} points it gives up"
            )
        beaten = [c for c in feasible[1:] if not tests[c.name].tied]
        if beaten:
            worst_p = max(tests[c.name].p_adjusted for c in beaten)
            reasons.append(
                f"it is significantly better than {', '.join(c.name for c in beaten)} "
                f"({'p' if len(beaten) == 1 else 'all p'} ≤ {worst_p:.2g} after Holm correction)"
            )
    else:
        test = tests[chosen.name]
        reasons.append(
            f"{top.title} is tied with {chosen.name} on {label} ({format_p(test.p_adjusted)}) but "
            f"{_ratio(speedup)} slower: use {chosen.name}"
        )
        interval = test.difference_interval
        reasons.append(
            f"{chosen.name} scores {100 * -test.difference:.1f} points lower (95% CI of the difference "
            f"{100 * interval.low:+.1f} to {100 * interval.high:+.1f}): within the noise of "
            f"{len(next(iter(per_query.values())))} queries"
        )
    for better in by_quality:
        if better is top:
            break
        if violations[better.name]:
            broken = "; ".join(v.message for v in violations[better.name])
            reasons.append(
                f"{better.name} scores higher ({100 * better.quality:.1f}) but breaks your constraints: {broken}"
            )
    reasons.append(_cost_sentence(chosen))
    if chosen.name in frontier:
        reasons.append("it is on the quality–throughput Pareto frontier")
    else:
        dominators = [
            c.name
            for c in by_quality
            if c.quality >= chosen.quality
            and c.cost.documents_per_second >= chosen.cost.documents_per_second
            and c is not chosen
        ]
        ruled_out = all(violations[name] for name in dominators)
        reasons.append(
            f"it is not on the Pareto frontier: {', '.join(dominators)} "
            f"{'is' if len(dominators) == 1 else 'are'} at least as good and faster"
            + (", but ruled out by your constraints" if ruled_out else "")
        )
    reasons += _unfair_reasons(by_quality, chosen=chosen, metric=metric)
    headline = f"Use {chosen.title}."
    advice = advise(chosen=chosen)
    return Recommendation(
        metric=metric,
        model=chosen.name,
        headline=headline,
        reasons=tuple(reasons),
        constraints=constraints,
        feasible=tuple(c.name for c in feasible),
        violations=violations,
        nearest_misses=(),
        frontier=tuple(frontier),
        tied_with_top=tuple(c.name for c in tied),
        finetune=advice,
        tests=tests,
        deploy=deploy_commands(chosen, candidates, data_ref=data_ref),
    )
