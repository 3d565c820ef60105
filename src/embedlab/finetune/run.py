"""The fine-tuning pipeline, end to end: data → splits → pairs → hard negatives → train → before/after → card.

:func:`finetune` is what ``embedlab finetune`` calls. It

1. loads the data: a BEIR folder's train judgements train and its test judgements measure (a data set with one
   split has a seeded fraction held out; a folder of documents with no queries gets pseudo-queries, some held
   out); a pair/triplet file and scored pairs add training examples;
2. applies the split rules of :mod:`embedlab.finetune.splits` and keeps their leakage report;
3. builds the training examples (:mod:`~embedlab.finetune.pairs`) and mines hard negatives with the base model
   (:mod:`~embedlab.finetune.negatives`);
4. trains the whole model (:mod:`~embedlab.finetune.train`) or a linear adapter
   (:mod:`~embedlab.finetune.adapter`), the dev split choosing the checkpoint;
5. scores base and fine-tuned model on the held-out test queries with the metrics of ``embedlab compare``
   (every query, so per-query changes are kept), and, given general-domain scored pairs (``guard``), STS
   Spearman before and after, with a warning when it drops by more than ``guard_drop_points``;
6. writes the model folder (with its card), ``finetune.json`` (every figure) and ``finetune.md``.

Example::

    >>> result = finetune("../shared/data/scifact", config=FinetuneConfig(), out=Path("runs/ft"),
    ...                   guard="../shared/data/stsb")                     # doctest: +SKIP
    >>> print(result)                                                      # doctest: +SKIP
    metric      base   fine-tuned  change
    ----------  -----  ----------  ------
    ndcg@10     64.51       69.80   +5.29
    ...
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedlab.data.dataset import Document, Query, RetrievalDataset, ScoredPairs
from embedlab.data.loaders import DuplicatePolicy, TrainingExample
from embedlab.embedding import EmbeddingCache, embed
from embedlab.errors import DataError, EmbedlabError
from embedlab.evaluate.compare import metric_names
from embedlab.evaluate.metrics import RunScores, evaluate_run
from embedlab.evaluate.sts import sts_correlation
from embedlab.files import format_table, markdown_table, write_json_atomic, write_text_atomic
from embedlab.finetune.adapter import LinearAdapter, save_adapter_model, train_adapter
from embedlab.finetune.card import write_model_card
from embedlab.finetune.config import FinetuneConfig
from embedlab.finetune.losses import LossPart, get_loss, loss_data
from embedlab.finetune.negatives import MiningReport, mine_hard_negatives
from embedlab.finetune.pairs import (
    PairSet,
    TrainPair,
    llm_pairs,
    pairs_from_file,
    pairs_from_judgements,
    pairs_from_scored,
    pseudo_pairs,
)
from embedlab.finetune.provenance import TrainingProvenance, describe_data
from embedlab.finetune.query_side import candidate_rows, save_query_side_model, train_query_encoder
from embedlab.finetune.splits import (
    LeakageReport,
    Splits,
    dev_size,
    holdout_split,
    make_splits,
    near_duplicate_key,
)
from embedlab.finetune.teacher import (
    AUTO_TEACHERS,
    LabelledTriples,
    Teacher,
    in_batch_part,
    label_triples,
    load_teacher,
    margin_loss_data,
    names_cross_encoder,
    refuse_in_batch_cross_encoder,
    teacher_from_report,
)
from embedlab.finetune.train import DevSet, base_model_path, load_base_model, train_model
from embedlab.manifest import build_manifest
from embedlab.models.encoders import Encoder
from embedlab.retrieval import Run, exact_top_k

if TYPE_CHECKING:
    from transformers import TrainerCallback

Echo = Callable[[str], None]
HEADLINE = ("ndcg@10", "recall@100", "mrr@10", "map@100")


class FinetuneWarning(UserWarning):
    """A fine-tuned model that may be worse than it looks: general-domain skill lost, or no gain on dev."""


def _quiet(_: str) -> None:
    return None


@dataclass
class GuardResult:
    """STS Spearman of base and fine-tuned model on general-domain scored pairs."""

    name: str
    pairs: int
    before: float
    after: float
    limit_points: float

    @property
    def drop_points(self) -> float:
        return 100 * (self.before - self.after)

    @property
    def warning(self) -> bool:
        return self.drop_points > self.limit_points

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pairs": self.pairs,
            "before": self.before,
            "after": self.after,
            "drop_points": self.drop_points,
            "limit_points": self.limit_points,
            "warning": self.warning,
        }


def teacher_advice(record: dict[str, Any], source: str, margin: float = 0.01) -> str | None:
    """The teacher's own dev score, when it stays ``margin`` (nDCG@10) or more above the model a run delivers.

    ``record`` holds a run's ``teacher`` and ``dev_decision`` (``finetune.json`` does). A student rarely reaches its
    teacher in a short run: on SciFact the hybrid teacher reranks the test queries' candidates at 69.76 where the
    distilled MiniLM reached 66.09, and the hybrid of BM25 and MiniLM itself scored 68.72. Then the answer to "which
    model should I serve" may be the teacher, if its cost fits. Said only when both were measured on the same dev
    queries the same way (the base's dev score agrees), and only on judged dev queries.
    """
    teacher = record.get("teacher") or {}
    own = teacher.get("dev")
    if not own or record.get("dev_from_corpus_queries"):
        # dev queries made from the corpus are the teacher's home ground (BM25 finds a document's own keywords)
        return None
    decision = record.get("dev_decision")
    if decision is not None and abs(decision["base_ndcg@10"] - own["base_ndcg@10"]) > 1e-9:
        return None
    kept_tuned = decision is not None and bool(decision["significant"])
    delivered = decision["tuned_ndcg@10"] if decision is not None and kept_tuned else own["base_ndcg@10"]
    ahead = own["teacher_ndcg@10"] - delivered
    if ahead < margin:
        return None
    name = teacher["name"]
    serve = (
        "it is a CrossEncoder, so it would rerank the base's top candidates (embedlab indexes bi-encoders, "
        "BM25 and hybrids, not rerankers)"
        if names_cross_encoder(name)
        else f"serve it where its cost fits: embedlab index --model {name} --data {source} --out indexes/teacher "
        "(its cost beside the others: embedlab select)"
    )
    return (
        f"the teacher {name} itself scores {100 * own['teacher_ndcg@10']:.2f} nDCG@10 on the dev queries, "
        f"{100 * ahead:.2f} above the {'fine-tuned' if kept_tuned else 'base'} model this run delivers "
        f"({100 * delivered:.2f}); {serve}"
    )


@dataclass
class FinetuneResult:
    """Everything a fine-tuning run measured; ``str()`` is the before/after table::

    metric      base   fine-tuned  change
    ----------  -----  ----------  ------
    ndcg@10     64.51       69.80   +5.29
    recall@100  92.52       94.10   +1.58
    (300 held-out queries: 120 better, 60 worse; STS Spearman 82.03 -> 81.10)
    """

    config: FinetuneConfig
    mode: str
    model_dir: Path
    base: dict[str, Any]
    data: dict[str, Any]
    pairs: PairSet
    leakage: LeakageReport
    mining: MiningReport | None
    training: dict[str, Any]
    metrics: list[str]
    before: RunScores
    after: RunScores
    guard: GuardResult | None
    warnings: list[str]
    manifest: dict[str, Any]
    wall_seconds: float
    primary: str = "ndcg@10"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headline_metrics(self) -> list[str]:
        return [m for m in HEADLINE if m in self.metrics] or self.metrics[:4]

    def delta(self, metric: str | None = None) -> float:
        metric = metric or self.primary
        return self.after.means[metric] - self.before.means[metric]

    def per_query_deltas(self, metric: str | None = None) -> dict[str, float]:
        metric = metric or self.primary
        before, after = self.before.per_query[metric], self.after.per_query[metric]
        return {q: after[q] - before[q] for q in before}

    def _delta_counts(self) -> dict[str, int]:
        deltas = list(self.per_query_deltas().values())
        return {
            "improved": sum(d > 1e-12 for d in deltas),
            "worse": sum(d < -1e-12 for d in deltas),
            "unchanged": sum(abs(d) <= 1e-12 for d in deltas),
        }

    def _rows(self) -> list[list[str]]:
        return [
            [m, f"{100 * self.before.means[m]:.2f}", f"{100 * self.after.means[m]:.2f}", f"{100 * self.delta(m):+.2f}"]
            for m in self.headline_metrics
        ]

    def _eval_rows(self) -> list[list[str]]:
        evaluation = self.extra.get("eval")
        if not evaluation:
            return []
        before, after = evaluation["before"]["means"], evaluation["after"]["means"]
        return [
            [m, f"{100 * before[m]:.2f}", f"{100 * after[m]:.2f}", f"{100 * (after[m] - before[m]):+.2f}"]
            for m in self.headline_metrics
            if m in before
        ]

    def notes(self) -> list[str]:
        """What a reader must know to trust the figures: where they were measured, the teacher, the dev verdict."""
        out = []
        evaluation = self.extra.get("eval")
        if evaluation:
            diff = evaluation.get("difference") or {}
            interval = diff.get("difference_interval", {})
            out.append(
                f"headline: the --eval set {evaluation['data']['name']} ({evaluation['data'].get('queries', '?')} "
                f"queries, never trained on, never chose the checkpoint); nDCG@10 change "
                f"{100 * diff.get('difference', 0.0):+.2f}, 95% CI {100 * interval.get('low', 0.0):+.2f} to "
                f"{100 * interval.get('high', 0.0):+.2f}"
            )
        else:
            out.append(
                f"in-distribution: the held-out queries come from the same source as the training data "
                f"({self.data['name']}); give --eval with queries from where the model will be used"
            )
        teacher = self.extra.get("teacher")
        if teacher:
            own = teacher.get("dev")
            score = (
                f"; on dev, reranking each query's pool, {100 * own['teacher_ndcg@10']:.2f} nDCG@10 against the "
                f"base's {100 * own['base_ndcg@10']:.2f}"
                if own
                else ""
            )
            labelled = (
                f"{teacher['examples']} corpus queries labelled with its margins "
                f"({'in-batch MarginMSE' if teacher.get('in_batch') else 'MarginMSE'}"
                if "examples" in teacher
                else f"its ranking of {self.training.get('candidates_per_query')} candidates per query taught "
                f"to the query encoder alone ({self.training.get('queries')} queries"
            )
            out.append(f"teacher {teacher['name']}: {labelled}; trained on: {self.extra.get('train_queries')}){score}")
        decision = self.extra.get("dev_decision")
        if decision:
            verdict = "kept the fine-tuned model" if decision["significant"] else "kept the base model"
            out.append(
                f"dev ({decision['queries']} queries whose answers never trained): nDCG@10 "
                f"{100 * decision['base_ndcg@10']:.2f} -> {100 * decision['tuned_ndcg@10']:.2f}, "
                f"p = {decision['p_value']:.3g}: {verdict}"
            )
        advice = teacher_advice(self.extra, self.data["source"])
        if advice:
            out.append(advice)
        return out

    def __str__(self) -> str:
        counts = self._delta_counts()
        note = f"{len(self.before.query_ids)} held-out queries: {counts['improved']} better, {counts['worse']} worse"
        if self.guard:
            note += f"; STS Spearman {100 * self.guard.before:.2f} -> {100 * self.guard.after:.2f}"
        headers = ["metric", "base", "fine-tuned", "change"]
        text = ""
        if self._eval_rows():
            text = "on the --eval set:\n" + format_table(headers, self._eval_rows()) + "\non the held-out test split:\n"
        text += format_table(headers, self._rows()) + f"\n({note})"
        return text + "".join(f"\nnote: {n}" for n in self.notes()) + "".join(f"\nwarning: {w}" for w in self.warnings)

    def to_dict(self) -> dict[str, Any]:
        deltas = self.per_query_deltas()
        return {
            "schema_version": self.manifest["schema_version"],
            "kind": "finetune",
            "mode": self.mode,
            "config": self.config.to_dict(),
            "base": self.base,
            "model_dir": str(self.model_dir),
            "data": self.data,
            "pairs": self.pairs.to_dict(),
            "leakage": self.leakage.to_dict(),
            "mining": self.mining.to_dict() if self.mining else None,
            "training": self.training,
            "metrics": self.metrics,
            "primary": self.primary,
            "headline_metrics": self.headline_metrics,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "delta": {m: self.delta(m) for m in self.metrics},
            "per_query": {"metric": self.primary, "deltas": deltas, **self._delta_counts()},
            "guard": self.guard.to_dict() if self.guard else None,
            "warnings": self.warnings,
            "notes": self.notes(),
            "wall_seconds": self.wall_seconds,
            "manifest": self.manifest,
            **self.extra,
        }

    def to_markdown(self) -> str:
        counts = self._delta_counts()
        lines = [
            f"# embedlab finetune — {self.config.base} on {self.data['name']} ({self.mode})",
            "",
            f"{len(self.before.query_ids)} held-out test queries (never trained on). Scores ×100.",
            "",
            *(
                [
                    "On the --eval set (the headline):",
                    "",
                    markdown_table(["metric", "base", "fine-tuned", "change"], self._eval_rows()),
                    "",
                    "On the held-out test split:",
                    "",
                ]
                if self._eval_rows()
                else []
            ),
            markdown_table(["metric", "base", "fine-tuned", "change"], self._rows()),
            "",
            *(f"- {n}" for n in self.notes()),
            "",
            f"Per query ({self.primary}): {counts['improved']} better, {counts['worse']} worse, "
            f"{counts['unchanged']} unchanged.",
            "",
        ]
        if self.guard:
            lines += [
                f"Regression guard ({self.guard.name}): STS Spearman {100 * self.guard.before:.2f} → "
                f"{100 * self.guard.after:.2f} ({-self.guard.drop_points:+.2f} points).",
                "",
            ]
        lines += [f"**Warning:** {w}" for w in self.warnings] + ([""] if self.warnings else [])
        lines += [
            "## Data and splits",
            "",
            f"{self.pairs.to_dict()['total']} training examples: "
            + ", ".join(f"{n} {origin}" for origin, n in self.pairs.counts().items()),
            "",
            markdown_table(["leakage check", "count"], self.leakage.rows()),
            "",
            f"Verdict: {'clean' if self.leakage.clean else 'LEAKS — test data can reach training'}.",
            "",
        ]
        corpus_queries = self.extra.get("corpus_queries")
        if corpus_queries:
            made = ", ".join(f"{n} {kind}" for kind, n in corpus_queries["made"].items())
            lines += [
                f"Corpus queries (no human judgement): {made} made, {corpus_queries['kept']} kept; "
                f"{corpus_queries['dropped_same_text_as_test_eval_or_dev_query']} dropped for a test, eval or dev "
                f"query's text, {corpus_queries['dropped_positive_relevant_to_dev_query']} for a dev answer. "
                f"{corpus_queries['kept_with_positive_relevant_to_test_query']} were made from "
                f"{corpus_queries['test_relevant_documents_with_pseudo_queries']} documents relevant to test queries: "
                "the model saw those documents' text, never a test query or judgement.",
                "",
            ]
        if self.mining:
            lines += ["## Hard negatives", "", "```", str(self.mining), "```", ""]
        lines += [
            "## Training",
            "",
            "```",
            *(f"{k}: {v}" for k, v in self.training.items() if not isinstance(v, list | dict)),
            "```",
            "",
        ]
        return "\n".join(lines)

    def add_to_report(self, out: Path) -> dict[str, Path] | None:
        """Add the before/after section to the report ``embedlab select`` keeps in ``out`` (if there is one)."""
        from embedlab.report import add_section, load_report
        from embedlab.report.html import bullets, paragraph, table

        if load_report(out) is None:
            return None
        counts = self._delta_counts()
        lines = [
            f"{len(self.before.query_ids)} held-out queries: {counts['improved']} better, {counts['worse']} worse "
            f"({self.primary}).",
            *([f"STS Spearman {100 * self.guard.before:.2f} -> {100 * self.guard.after:.2f}."] if self.guard else []),
            *self.warnings,
        ]
        lines = [*self.notes(), *lines]
        headers = ["metric", "base", "fine-tuned", "change"]
        eval_rows = self._eval_rows()
        html = (
            paragraph(f"{self.config.base} fine-tuned ({self.mode}, loss {self.config.loss}); scores ×100.")
            + (table(headers, eval_rows, caption="On the --eval set (headline)") if eval_rows else "")
            + table(headers, self._rows(), caption="On the held-out test split")
            + bullets(lines)
        )
        body = (
            (markdown_table(headers, eval_rows) + "\n\n" if eval_rows else "")
            + markdown_table(headers, self._rows())
            + "\n\n"
            + " ".join(lines)
        )
        payload = {
            "base": self.config.base,
            "mode": self.mode,
            "model_dir": str(self.model_dir),
            "before": dict(self.before.means),
            "after": dict(self.after.means),
            "per_query": self._delta_counts(),
            "guard": self.guard.to_dict() if self.guard else None,
            "warnings": self.warnings,
            "notes": self.notes(),
            "eval": self.extra.get("eval"),
        }
        return add_section(out, "finetune", payload, body, html, title="Fine-tuning: before and after")

    def write(self, out: Path) -> dict[str, Path]:
        """``finetune.json`` and ``finetune.md`` in ``out``; the card and JSON inside the model folder."""
        payload = self.to_dict()
        write_model_card(self.model_dir, payload)
        return {
            "json": write_json_atomic(Path(out) / "finetune.json", payload),
            "markdown": write_text_atomic(Path(out) / "finetune.md", self.to_markdown()),
        }


# ------------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class _Loaded:
    train: RetrievalDataset
    test: RetrievalDataset
    pseudo: tuple[TrainPair, ...] = ()
    notes: tuple[str, ...] = ()


def _pseudo_dataset(base: RetrievalDataset, pairs: Sequence[TrainPair]) -> tuple[RetrievalDataset, list[TrainPair]]:
    """Pseudo-queries as a judged data set (query ``pq-<n>`` → its source document), and the pairs with ids."""
    named = [
        TrainPair(example=p.example, origin=p.origin, query_id=f"pq-{i}", positive_id=p.positive_id,
                  positive_ids=p.positive_ids)
        for i, p in enumerate(pairs)
    ]  # fmt: skip
    dataset = RetrievalDataset(
        name=base.name,
        corpus=base.corpus,
        queries=tuple(Query(p.query_id, p.example.query) for p in named),
        qrels={p.query_id: {p.positive_id: 1} for p in named},
        source=base.source,
        split="pseudo",
    )
    return dataset, named


def load_finetune_data(data: str | os.PathLike[str], config: FinetuneConfig, *, echo: Echo = _quiet) -> _Loaded:
    """Train and test data sets (see :func:`finetune`), with pseudo-query pairs when there are no queries."""
    from embedlab.data.loaders import load_beir, load_dataset

    path = Path(data)
    if not path.exists():
        raise EmbedlabError(f"{data}: no such file or folder (fix: give a BEIR folder, a pairs file or documents)")
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        has_train, has_test = config.train_split in splits, config.test_split in splits
        if has_train and has_test:
            dup = config.duplicate_judgements
            return _Loaded(
                load_beir(path, config.train_split, duplicate_judgements=dup),
                load_beir(path, config.test_split, duplicate_judgements=dup),
            )
        if not (has_train or has_test):
            raise DataError(path / "qrels", f"no '{config.train_split}' or '{config.test_split}' judgements",
                            fix=f"the splits there are: {', '.join(splits) or 'none'}")  # fmt: skip
        one = load_beir(
            path,
            config.train_split if has_train else config.test_split,
            duplicate_judgements=config.duplicate_judgements,
        )
        note = f"one judged split: {round(100 * config.test_fraction)}% of its queries held out for testing"
        echo(note)
        train, test = holdout_split(one, fraction=config.test_fraction, seed=config.seed)
        return _Loaded(train, test, notes=(note,))
    dataset = load_dataset(path)
    if dataset.queries:
        note = f"no separate test split: {round(100 * config.test_fraction)}% of the queries held out for testing"
        echo(note)
        train, test = holdout_split(dataset, fraction=config.test_fraction, seed=config.seed)
        return _Loaded(train, test, notes=(note,))
    pairs = pseudo_pairs(dataset.corpus, config.pseudo_queries, per_kind=config.pseudo_max, seed=config.seed)
    if len(pairs) < 4:
        raise EmbedlabError(
            f"{data}: no queries, and only {len(pairs)} pseudo-queries could be made from the documents "
            "(fix: give judged queries or a pairs file)"
        )
    judged, named = _pseudo_dataset(dataset, pairs)
    note = f"no queries: {len(named)} pseudo-queries made from the documents ({', '.join(config.pseudo_queries)})"
    echo(note)
    train, test = holdout_split(judged, fraction=config.test_fraction, seed=config.seed)
    return _Loaded(train, test, pseudo=tuple(named), notes=(note,))


def _training_pairs(
    loaded: _Loaded,
    splits: Splits,
    config: FinetuneConfig,
    *,
    pairs_file: Path | None,
    scored: ScoredPairs | None,
    with_llm: bool = True,
) -> PairSet:
    notes: list[str] = list(loaded.notes)
    train_ids = {q.id for q in splits.train.queries}
    if loaded.pseudo:
        by_id = {p.query_id: p for p in loaded.pseudo}
        pairs = [by_id[q] for q in train_ids if q in by_id]
        pairs.sort(key=lambda p: int(p.query_id.split("-")[1]))
    else:
        pairs = pairs_from_judgements(splits.train)
    test_docs = {d for q in splits.test.qrels for d, g in splits.test.qrels[q].items() if g > 0}
    test_texts = {" ".join(q.text.lower().split()) for q in splits.test.queries}
    extra: list[TrainPair] = []
    if pairs_file is not None:
        extra += pairs_from_file(pairs_file)
    if config.llm_url and with_llm:
        extra += llm_pairs(
            splits.train.corpus, url=config.llm_url, model=config.llm_model, limit=config.llm_max, seed=config.seed
        )
    # The split rules hold for every source: no test query, no test-relevant positive.
    documents = splits.test.documents_by_id
    test_positive_texts = {documents[d].full_text for d in test_docs if d in documents}
    kept_extra = []
    for pair in extra:
        if " ".join(pair.example.query.lower().split()) in test_texts:
            continue
        if not config.allow_test_positives and (
            pair.positive_id in test_docs or pair.example.positive in test_positive_texts
        ):
            continue
        kept_extra.append(pair)
    if len(kept_extra) < len(extra):
        notes.append(f"{len(extra) - len(kept_extra)} extra pair(s) dropped: a test query or a test-relevant positive")
    pairs += kept_extra
    if scored is not None:
        pairs += pairs_from_scored(scored)
    if not pairs:
        raise EmbedlabError("no training examples: give judged training queries, a pairs file or scored pairs")
    return PairSet(pairs=tuple(pairs), notes=tuple(notes))


# ------------------------------------------------------------------------------------------------------
# Evaluation


def _run_from_vectors(dataset: RetrievalDataset, queries: np.ndarray, documents: np.ndarray, depth: int) -> Run:
    scores, rows = exact_top_k(queries, documents, depth)
    ids = [d.id for d in dataset.corpus]
    return {
        q.id: {ids[int(j)]: float(s) for s, j in zip(srow, jrow, strict=True)}
        for q, srow, jrow in zip(dataset.queries, scores, rows, strict=True)
    }


def _vectors(
    encoder: Encoder, dataset: RetrievalDataset, cache: EmbeddingCache | None, show_progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    docs = embed(
        encoder, [d.full_text for d in dataset.corpus], role="document", cache=cache, show_progress=show_progress
    )
    queries = embed(encoder, [q.text for q in dataset.queries], role="query", cache=cache, show_progress=show_progress)
    return queries, docs


def _dev_set(
    dev: RetrievalDataset, doc_vectors: np.ndarray, query_vectors: np.ndarray, pool: int
) -> tuple[DevSet, np.ndarray]:
    """Dev queries over a small corpus: their relevant documents plus the base model's top ``pool`` each."""
    _, rows = exact_top_k(query_vectors, doc_vectors, pool)
    keep = set(rows.ravel().tolist())
    row_of = {d.id: i for i, d in enumerate(dev.corpus)}
    keep |= {row_of[d] for q in dev.qrels for d in dev.qrels[q] if d in row_of}
    ordered = sorted(keep)
    dev_set = DevSet(
        queries={q.id: q.text for q in dev.queries},
        corpus={dev.corpus[i].id: dev.corpus[i].full_text for i in ordered},
        relevant={q: frozenset(d for d, g in dev.qrels[q].items() if g > 0) for q in dev.qrels},
    )
    return dev_set, np.asarray(ordered, dtype=np.int64)


def _teacher_on_dev(
    teacher: Teacher, dev: RetrievalDataset, query_vectors: np.ndarray, doc_vectors: np.ndarray, pool: int = 30
) -> dict[str, Any]:
    """Teacher and base model reranking each dev query's pool (its relevant documents and the base's top
    ``pool``): the teacher's own score where it is used, at the cost of scoring a few documents per query."""
    _, top = exact_top_k(query_vectors, doc_vectors, min(pool, len(dev.corpus)))
    row_of = {d.id: i for i, d in enumerate(dev.corpus)}
    ids = [d.id for d in dev.corpus]
    teacher_run: dict[str, dict[str, float]] = {}
    base_run: dict[str, dict[str, float]] = {}
    for i, query in enumerate(dev.queries):
        relevant = [row_of[d] for d in dev.qrels.get(query.id, {}) if d in row_of]
        rows = np.asarray(list(dict.fromkeys([*top[i].tolist(), *relevant])), dtype=np.int64)
        scores = teacher.score([query.text], rows[None, :])[0]
        teacher_run[query.id] = {ids[r]: float(v) for r, v in zip(rows.tolist(), scores.tolist(), strict=True)}
        base_scores = doc_vectors[rows] @ query_vectors[i]
        base_run[query.id] = {ids[r]: float(v) for r, v in zip(rows.tolist(), base_scores.tolist(), strict=True)}
    teacher_score = evaluate_run(teacher_run, dev.qrels, ["ndcg@10"]).means["ndcg@10"]
    base_score = evaluate_run(base_run, dev.qrels, ["ndcg@10"]).means["ndcg@10"]
    return {"teacher_ndcg@10": teacher_score, "base_ndcg@10": base_score, "pool": pool, "queries": len(dev.queries)}


def _choose_teacher(
    base: str,
    splits: Splits,
    encoder: Encoder,
    cache: EmbeddingCache | None,
    echo: Echo,
    show_progress: bool,
) -> tuple[str, Teacher, list[dict[str, Any]]]:
    """``--teacher auto``: every candidate in :data:`AUTO_TEACHERS` (but the base) reranks the dev queries' pools;
    the best there teaches. A teacher is only as good as it is on the user's queries: BM25 + mpnet-base, strong on
    SciFact and nl2bash, ranked CoNaLa's dev intents no better than MiniLM itself (68.51 against 68.48), while
    mpnet-base alone is clearly stronger there."""
    dev_vectors = embed(encoder, [q.text for q in splits.dev.queries], role="query", cache=cache)
    corpus_vectors = embed(encoder, [d.full_text for d in splits.dev.corpus], role="document", cache=cache)
    trials: list[dict[str, Any]] = []
    best: tuple[float, str, Teacher] | None = None
    for name in AUTO_TEACHERS:
        if name == base:
            continue
        teacher = load_teacher(name, splits.train.corpus, cache=cache, show_progress=show_progress)
        own = _teacher_on_dev(teacher, splits.dev, dev_vectors, corpus_vectors)
        trials.append({"name": name, **own})
        echo(
            f"teacher candidate {name} on dev: nDCG@10 {100 * own['teacher_ndcg@10']:.2f} "
            f"(base {100 * own['base_ndcg@10']:.2f})"
        )
        if best is None or own["teacher_ndcg@10"] > best[0]:
            best = (own["teacher_ndcg@10"], name, teacher)
    if best is None:
        raise EmbedlabError(f"--teacher auto: every candidate teacher is the base model {base}; name a teacher")
    echo(f"teacher: {best[1]}, the best of {len(trials)} candidates on the dev queries")
    return best[1], best[2], trials


def _as_mined(example: TrainingExample) -> TrainingExample:
    """The example as mining would leave it (with a negative), to check the data fits the loss beforehand."""
    if example.negatives:
        return example
    return TrainingExample(example.query, example.positive, ("(mined)",), example.score)


def _headline(scores: RunScores) -> str:
    return ", ".join(f"{m} {100 * scores.means[m]:.2f}" for m in HEADLINE if m in scores.means)


def _guard(
    pairs: ScoredPairs,
    encode_before: Callable[[list[str]], np.ndarray],
    encode_after: Callable[[list[str]], np.ndarray],
    limit: float,
) -> GuardResult:
    gold = [p.score for p in pairs.pairs]
    scores = []
    for encode in (encode_before, encode_after):
        left, right = encode([p.text1 for p in pairs.pairs]), encode([p.text2 for p in pairs.pairs])
        scores.append(sts_correlation(np.einsum("ij,ij->i", left, right).tolist(), gold)["spearman"])
    return GuardResult(name=pairs.name, pairs=len(gold), before=scores[0], after=scores[1], limit_points=limit)


# ------------------------------------------------------------------------------------------------------
# The pipeline


@dataclass(frozen=True)
class _CorpusQueries:
    """Queries made from the corpus for teacher labelling, and what the split rules did with them."""

    pairs: tuple[TrainPair, ...]
    made: dict[str, int]
    dropped_held_out: int
    dropped_dev: int
    on_test_documents: int
    test_documents_touched: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "made": self.made,
            "kept": len(self.pairs),
            "dropped_same_text_as_test_eval_or_dev_query": self.dropped_held_out,
            "dropped_positive_relevant_to_dev_query": self.dropped_dev,
            "kept_with_positive_relevant_to_test_query": self.on_test_documents,
            "test_relevant_documents_with_pseudo_queries": self.test_documents_touched,
        }

    def note(self) -> str:
        return (
            f"{self.on_test_documents} pseudo-queries were made from {self.test_documents_touched} documents relevant "
            "to test queries: no human judgement was used, but the model saw those documents' text with queries "
            "made from them (as it would when fine-tuned on the user's whole corpus)"
        )


def _corpus_queries(
    corpus: Sequence[Document],
    config: FinetuneConfig,
    *,
    splits: Splits,
    given: Sequence[TrainPair],
    eval_set: RetrievalDataset | None,
) -> _CorpusQueries:
    """Pseudo-queries over the whole corpus (or ``given`` ones), minus what the split rules forbid."""
    pairs = list(given) or pseudo_pairs(corpus, config.pseudo_queries, per_kind=config.pseudo_max, seed=config.seed)
    if config.llm_url and not given:
        pairs += llm_pairs(corpus, url=config.llm_url, model=config.llm_model, limit=config.llm_max, seed=config.seed)
    made = dict(Counter(p.origin for p in pairs))
    held = [*splits.test.queries, *splits.dev.queries, *(eval_set.queries if eval_set is not None else ())]
    held_keys = {near_duplicate_key(q.text) for q in held}
    dev_documents = {d for q in splits.dev.qrels for d, g in splits.dev.qrels[q].items() if g > 0}
    test_documents = {d for q in splits.test.qrels for d, g in splits.test.qrels[q].items() if g > 0}
    kept: list[TrainPair] = []
    same_text = on_dev = 0
    for pair in pairs:
        if near_duplicate_key(pair.example.query) in held_keys:
            same_text += 1
        elif pair.positive_id in dev_documents:
            on_dev += 1  # the dev split mirrors the test shift: its answers are never training positives
        else:
            kept.append(pair)
    touched = {p.positive_id for p in kept if p.positive_id in test_documents}
    return _CorpusQueries(
        pairs=tuple(kept),
        made=made,
        dropped_held_out=same_text,
        dropped_dev=on_dev,
        on_test_documents=sum(1 for p in kept if p.positive_id in test_documents),
        test_documents_touched=len(touched),
    )


def _corpus_dev(
    splits: Splits, given: Sequence[TrainPair], config: FinetuneConfig, *, eval_set: RetrievalDataset | None
) -> tuple[Splits, list[TrainPair], str]:
    """A dev split of held-out corpus queries (their documents then never train), for runs with no judged dev."""
    pairs = list(given) or pseudo_pairs(
        splits.train.corpus, config.pseudo_queries, per_kind=config.pseudo_max, seed=config.seed
    )
    held = {near_duplicate_key(q.text) for q in (*splits.test.queries, *(eval_set.queries if eval_set else ()))}
    candidates = [p for p in pairs if near_duplicate_key(p.example.query) not in held]
    random.Random(config.seed).shuffle(candidates)
    size = dev_size(len(candidates), fraction=config.dev_fraction, low=config.dev_min, high=config.dev_max)
    chosen = candidates[:size]
    dev = RetrievalDataset(
        name=splits.train.name,
        corpus=splits.train.corpus,
        queries=tuple(Query(f"dev-{i}", p.example.query) for i, p in enumerate(chosen)),
        qrels={f"dev-{i}": {p.positive_id: 1} for i, p in enumerate(chosen)},
        source=splits.train.source,
        split="dev",
    )
    chosen_ids = {id(p) for p in chosen}
    rest = [p for p in pairs if id(p) not in chosen_ids]
    note = (
        f"no judged query is left for a dev split: {len(chosen)} corpus queries held out as dev (in-distribution: "
        "queries of the kind trained on; give judged training queries for a dev split like the user's)"
    )
    return replace(splits, dev=dev), rest, note


@dataclass(frozen=True)
class DevDecision:
    """Whether the fine-tuned model beat the base on the dev queries by more than chance."""

    base: float
    tuned: float
    p_value: float
    alpha: float
    queries: int

    @property
    def significant(self) -> bool:
        return self.tuned > self.base and self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_ndcg@10": self.base,
            "tuned_ndcg@10": self.tuned,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "queries": self.queries,
            "significant": self.significant,
        }

    def __str__(self) -> str:
        verdict = "significant: the fine-tuned model is kept" if self.significant else (
            "not significant: the base model is kept"
        )  # fmt: skip
        return (
            f"dev ({self.queries} queries) nDCG@10 {100 * self.base:.2f} -> {100 * self.tuned:.2f} "
            f"({100 * (self.tuned - self.base):+.2f}, p = {self.p_value:.3g}): {verdict}"
        )


def _dev_decision(
    dev: RetrievalDataset, base_scores: RunScores, tuned_scores: RunScores, *, alpha: float, seed: int
) -> DevDecision:
    from embedlab.evaluate.statistics import compare_to_reference

    per_query = {"base": base_scores.per_query["ndcg@10"], "tuned": tuned_scores.per_query["ndcg@10"]}
    test = compare_to_reference(per_query, "base", metric="ndcg@10", alpha=alpha, seed=seed)["tuned"]
    return DevDecision(
        base=base_scores.means["ndcg@10"],
        tuned=tuned_scores.means["ndcg@10"],
        p_value=float(test.p_value),
        alpha=alpha,
        queries=len(dev.queries),
    )


def _dev_gate(
    config: FinetuneConfig,
    dev: RetrievalDataset,
    dev_set: DevSet,
    base: Encoder,
    tuned: Encoder,
    cache: EmbeddingCache | None,
    model_dir: Path,
    warnings_list: list[str],
) -> DevDecision:
    """Keep the tuned model only if it beat the base on dev significantly; otherwise save the base in its place."""
    decision = _dev_decision(
        dev,
        _dev_scores(base, dev, dev_set, cache),
        _dev_scores(tuned, dev, dev_set, None),
        alpha=config.dev_alpha,
        seed=config.seed,
    )
    if not decision.significant:
        warnings_list.append(
            f"the dev gain was not significant ({str(decision).split(': ', 1)[0]}): the base model was kept"
        )
        load_base_model(config, for_training=False).save(str(model_dir))
    return decision


def _dev_scores(encoder: Encoder, dev: RetrievalDataset, dev_set: DevSet, cache: EmbeddingCache | None) -> RunScores:
    """nDCG@10 per dev query over the dev corpus (relevant documents plus the base model's candidates)."""
    corpus = RetrievalDataset(
        name="dev", corpus=tuple(dev.documents_by_id[i] for i in dev_set.corpus), queries=dev.queries, qrels=dev.qrels
    )
    queries, documents = _vectors(encoder, corpus, cache, False)
    return evaluate_run(_run_from_vectors(corpus, queries, documents, 10), corpus.qrels, ["ndcg@10"])


def _load_eval(data: str | os.PathLike[str], split: str, duplicates: DuplicatePolicy = "error") -> RetrievalDataset:
    """The ``--eval`` data: a BEIR folder (its ``split`` judgements, else its only ones) or a pairs file."""
    from embedlab.data.loaders import load_beir, load_dataset

    path = Path(data)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        splits = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        chosen = split if split in splits else (splits[0] if len(splits) == 1 else None)
        if chosen is None:
            raise DataError(
                path / "qrels",
                f"no '{split}' judgements to evaluate on",
                fix=f"name a folder with '{split}' judgements (it has: {', '.join(splits) or 'none'})",
            )
        return load_beir(path, chosen, duplicate_judgements=duplicates)
    dataset = load_dataset(path)
    if not dataset.qrels:
        raise EmbedlabError(f"{data}: --eval needs judged queries (fix: give a BEIR folder or a pairs file)")
    return dataset


def _scores_with(
    encoder: Encoder, dataset: RetrievalDataset, metrics: list[str], depth: int, cache: EmbeddingCache | None, bar: bool
) -> RunScores:
    queries, documents = _vectors(encoder, dataset, cache, bar)
    return evaluate_run(_run_from_vectors(dataset, queries, documents, depth), dataset.qrels, metrics)


def _difference(before: RunScores, after: RunScores, metric: str, seed: int) -> dict[str, Any]:
    """The paired difference after − before on ``metric``: mean, 95% bootstrap interval, randomization p."""
    from embedlab.evaluate.statistics import compare_to_reference

    test = compare_to_reference(
        {"before": before.per_query[metric], "after": after.per_query[metric]}, "before", metric=metric, seed=seed
    )["after"]
    return test.to_dict()


def _provenance(
    config: FinetuneConfig,
    loaded: _Loaded,
    eval_set: RetrievalDataset | None,
    data: str | os.PathLike[str],
    splits: Splits,
    pairs: Sequence[TrainPair],
    triples: LabelledTriples | None,
) -> TrainingProvenance:
    """What the saved model trained on, so ``compare`` and ``select`` can mark it where it is evaluated on that."""
    del eval_set  # never trained on: not part of the record
    by_text = {d.full_text: d.id for d in splits.train.corpus}
    queries = [p.example.query for p in pairs] + [q.text for q in splits.dev.queries]
    documents = [(p.positive_id or by_text.get(p.example.positive, ""), p.example.positive) for p in pairs]
    documents += [(by_text.get(n, ""), n) for p in pairs for n in p.example.negatives]
    if triples is not None:
        queries += [ex.query for ex in triples.examples]
        for ex in triples.examples:
            documents += [(by_text.get(t, ""), t) for t in (ex.positive, *ex.negatives)]
    return TrainingProvenance.from_training(
        base=config.base,
        data=[describe_data(loaded.train, source=str(data))],
        queries=queries,
        documents=documents,
    )


def finetune(
    data: str | os.PathLike[str],
    *,
    config: FinetuneConfig,
    out: Path,
    pairs_file: str | os.PathLike[str] | None = None,
    scored_file: str | os.PathLike[str] | None = None,
    guard: str | os.PathLike[str] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    export_suspects: Path | None = None,
    cache: EmbeddingCache | None = None,
    echo: Echo = _quiet,
    show_progress: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
) -> FinetuneResult:
    """Fine-tune ``config.base`` on ``data`` and prove it on held-out queries; see the module docstring.

    ``out`` receives ``model/`` (the fine-tuned sentence-transformers folder), ``work/`` (checkpoints, so an
    interrupted run resumes), ``finetune.json`` and ``finetune.md``. ``eval_data`` is a separate labelled set
    measured before and after (never trained on, never choosing the checkpoint); it is the report's headline.
    ``callbacks`` go to the trainer.
    """
    from embedlab.data.loaders import load_sts
    from embedlab.models.loading import load_encoder

    started = time.perf_counter()
    out = Path(out)
    if config.teacher is None and config.train_queries != "judged":
        suggested = teacher_from_report(out)
        if suggested is not None and suggested != config.base:
            echo(f"teacher: {suggested}, the best system of the select report in {out}")
            config = config.model_copy(update={"teacher": suggested})
    spec = get_loss(config.loss)
    loaded = load_finetune_data(data, config, echo=echo)
    eval_set = _load_eval(eval_data, config.test_split, config.duplicate_judgements) if eval_data is not None else None
    has_judged = not loaded.pseudo and bool(loaded.train.qrels)
    mode = config.train_queries
    if mode == "auto":
        mode = ("both" if has_judged else "corpus") if config.teacher else "judged"
    if mode in ("corpus", "both") and not config.teacher:
        raise EmbedlabError(
            f"--train-queries {mode} needs a teacher to label the corpus queries (fix: --teacher hybrid)"
        )
    if mode == "both" and not has_judged:
        mode = "corpus"
    dev_only = mode == "corpus" and has_judged
    splits = make_splits(
        loaded.train,
        loaded.test,
        dev_fraction=config.dev_fraction,
        dev_min=config.dev_min,
        dev_max=config.dev_corpus_max if dev_only else config.dev_max,
        allow_test_positives=config.allow_test_positives,
        seed=config.seed,
        dev_only=dev_only,
        held_out=eval_set,
    )
    echo(str(splits.leakage))
    scored = load_sts(scored_file) if scored_file is not None else None
    if mode == "corpus":
        pair_set = PairSet(pairs=(), notes=loaded.notes)
        if pairs_file is not None or scored is not None:
            echo("--train-queries corpus: the pairs and scored files are not used")
    else:
        pair_set = _training_pairs(
            loaded,
            splits,
            config,
            pairs_file=Path(pairs_file) if pairs_file else None,
            scored=scored,
            with_llm=mode == "judged",  # otherwise generated queries are corpus queries, labelled by the teacher
        )
        echo(f"{len(pair_set.pairs)} training examples: {pair_set.counts()}")
    query_side = config.train_side == "query"
    will_mine = (
        bool(config.hard_negatives)
        and spec.data in ("pairs", "triplets", "labelled")
        and bool(pair_set.pairs)
        and not query_side  # the teacher ranks every candidate: no negatives to mine
    )
    if not config.adapter and not query_side and pair_set.pairs:
        # Refuse data that does not fit the loss now, not after minutes of encoding and mining.
        loss_data(
            config.loss,
            [_as_mined(p.example) if will_mine and p.origin != "scored" else p.example for p in pair_set.pairs],
        )
    if config.adapter and config.teacher:
        raise EmbedlabError("--adapter trains on judged pairs only: drop --teacher, or fine-tune the whole model")
    if config.teacher_in_batch:
        if mode == "judged" or not config.teacher:
            raise EmbedlabError(
                "--teacher-in-batch distils a teacher's margins on corpus queries, and this run has none "
                "(fix: give --teacher NAME with --train-queries corpus, both or auto, or drop --teacher-in-batch)"
            )
        if query_side:
            raise EmbedlabError(
                "--teacher-in-batch trains the whole model on margins; --train-side query has no batch of "
                "documents (fix: drop one of the two)"
            )
        refuse_in_batch_cross_encoder(config.teacher)

    encoder = load_encoder(config.base)
    base_info = encoder.spec.to_dict()
    metrics = metric_names(config.k_values)
    depth = max(config.k_values)

    # Base model vectors (through the cache): test evaluation, mining and the dev corpus share them.
    test_q, test_d = _vectors(encoder, splits.test, cache, show_progress)
    before = evaluate_run(_run_from_vectors(splits.test, test_q, test_d, depth), splits.test.qrels, metrics)
    echo(f"base model on {len(splits.test.queries)} held-out queries: {_headline(before)}")
    eval_before = None
    if eval_set is not None:
        eval_before = _scores_with(encoder, eval_set, metrics, depth, cache, show_progress)
        echo(f"base model on the --eval set ({len(eval_set.queries)} queries): {_headline(eval_before)}")

    mining: MiningReport | None = None
    pairs = list(pair_set.pairs)
    if will_mine:
        todo = [i for i, p in enumerate(pairs) if not p.example.negatives and p.origin != "scored"]
        mined = mine_hard_negatives(
            [pairs[i] for i in todo],
            splits.train.corpus,
            n=config.hard_negatives,
            miner=config.miner,
            encoder=encoder,
            cache=cache,
            rank_window=config.rank_window,
            relative_margin=config.relative_margin,
            max_score=config.max_negative_score,
            show_progress=show_progress,
            seed=config.seed,
        )
        mining = mined.report
        echo(str(mining))
        for i, pair in zip(todo, mined.pairs, strict=True):
            pairs[i] = pair
        if export_suspects is not None:
            mining.write_suspects(export_suspects)
            echo(f"wrote {len(mining.suspects)} suspected false negatives to {export_suspects}")
    examples = [p.example for p in pairs]
    warnings_list: list[str] = []
    extra: dict[str, Any] = {"train_queries": mode}

    corpus_queries: _CorpusQueries | None = None
    triples: LabelledTriples | None = None
    teacher: Teacher | None = None
    if mode in ("corpus", "both"):
        assert config.teacher is not None
        given = [p for p in loaded.pseudo if p.query_id in {q.id for q in splits.train.queries}]
        if not splits.dev.queries:
            # No judged query is left to choose with (e.g. --eval is the only judged data): hold out corpus
            # queries as dev, so the fine-tuned model still has to beat the base significantly to be kept.
            splits, given, note = _corpus_dev(splits, given, config, eval_set=eval_set)
            echo(note)
            extra["dev_from_corpus_queries"] = note
        corpus_queries = _corpus_queries(splits.train.corpus, config, splits=splits, given=given, eval_set=eval_set)
        made = ", ".join(f"{n} {kind}" for kind, n in corpus_queries.made.items())
        echo(f"{len(corpus_queries.pairs)} corpus queries kept ({made} made); {corpus_queries.note()}")
        named = config.teacher
        if named == "auto":
            chosen, teacher, trials = _choose_teacher(config.base, splits, encoder, cache, echo, show_progress)
            config = config.model_copy(update={"teacher": chosen})
            extra["teacher_candidates"] = trials
        else:
            teacher = load_teacher(named, splits.train.corpus, cache=cache, show_progress=show_progress)
        extra["corpus_queries"] = corpus_queries.to_dict()
        extra["teacher"] = {"name": config.teacher, "in_batch": config.teacher_in_batch}
        if not query_side:
            triples = label_triples(
                corpus_queries.pairs,
                splits.train.corpus,
                teacher=teacher,
                student=encoder,
                negatives=config.teacher_negatives,
                rank_window=config.teacher_window,
                cache=cache,
                seed=config.seed,
                show_progress=show_progress,
            )
            echo(str(triples))
            extra["teacher"].update(triples.to_dict())
        if splits.dev.queries:
            dev_vectors = embed(encoder, [q.text for q in splits.dev.queries], role="query", cache=cache)
            corpus_vectors = embed(encoder, [d.full_text for d in splits.dev.corpus], role="document", cache=cache)
            own = _teacher_on_dev(teacher, splits.dev, dev_vectors, corpus_vectors)
            extra["teacher"]["dev"] = own
            echo(
                f"teacher {config.teacher} on dev (reranking each query's relevant documents and the base's top "
                f"{own['pool']}): nDCG@10 {100 * own['teacher_ndcg@10']:.2f}, base {100 * own['base_ndcg@10']:.2f}"
            )

    dev_q = dev_d = None
    dev_set: DevSet | None = None
    if splits.dev.queries:
        dev_q = embed(encoder, [q.text for q in splits.dev.queries], role="query", cache=cache)
        dev_d_all = embed(encoder, [d.full_text for d in splits.dev.corpus], role="document", cache=cache)
        dev_set, dev_rows = _dev_set(splits.dev, dev_d_all, dev_q, config.dev_pool)
        dev_d = dev_d_all[dev_rows]

    model_dir = out / "model"
    candidate_after: RunScores | None = None
    decision: DevDecision | None = None
    if config.adapter:
        mode_name = "adapter"
        positives = embed(encoder, [ex.positive for ex in examples], role="document", cache=cache)
        queries = embed(encoder, [ex.query for ex in examples], role="query", cache=cache)
        n_neg = min(len(ex.negatives) for ex in examples)
        negatives = None
        if n_neg:
            flat = embed(encoder, [n for ex in examples for n in ex.negatives[:n_neg]], role="document", cache=cache)
            negatives = flat.reshape(len(examples), n_neg, -1)
        dev_score = None
        if dev_set is not None and dev_q is not None and dev_d is not None:
            dev_corpus = RetrievalDataset(
                name="dev", corpus=tuple(splits.dev.documents_by_id[i] for i in dev_set.corpus),
                queries=splits.dev.queries, qrels=splits.dev.qrels,
            )  # fmt: skip
            dq, dd = dev_q, dev_d

            def dev_score(adapter: LinearAdapter) -> float:
                run = _run_from_vectors(dev_corpus, adapter.transform(dq), adapter.transform(dd), 10)
                return evaluate_run(run, dev_corpus.qrels, ["ndcg@10"]).means["ndcg@10"]

        echo(f"training a linear adapter on {len(examples)} pairs of cached vectors")
        outcome = train_adapter(
            queries,
            positives,
            negatives,
            epochs=config.adapter_epochs,
            learning_rate=config.adapter_learning_rate,
            batch_size=config.batch_size,
            seed=config.seed,
            dev_score=dev_score,
        )
        save_adapter_model(base_model_path(config.base), outcome.adapter, model_dir)
        training = outcome.to_dict()
        after = evaluate_run(
            _run_from_vectors(splits.test, outcome.adapter.transform(test_q), outcome.adapter.transform(test_d), depth),
            splits.test.qrels,
            metrics,
        )
        tuned_encoder: Encoder | None = None

        def encode_after(texts: list[str]) -> np.ndarray:
            return outcome.adapter.transform(embed(encoder, texts, role="document", cache=cache))

    elif query_side:
        mode_name = "query-side"
        assert config.teacher is not None
        if teacher is None:
            teacher = load_teacher(config.teacher, splits.train.corpus, cache=cache, show_progress=show_progress)
            extra["teacher"] = {"name": config.teacher}
        query_pairs = [*pairs, *(corpus_queries.pairs if corpus_queries is not None else ())]
        student = load_base_model(config)
        corpus_vectors = embed(
            encoder,
            [d.full_text for d in splits.train.corpus],
            role="document",
            cache=cache,
            show_progress=show_progress,
        )
        texts = [p.example.query for p in query_pairs]
        row_of = {d.id: i for i, d in enumerate(splits.train.corpus)}
        rows = candidate_rows(
            embed(encoder, texts, role="query", cache=cache, show_progress=show_progress),
            corpus_vectors,
            [row_of.get(p.positive_id) if p.positive_id else None for p in query_pairs],
            depth=config.query_side_depth,
        )
        echo(f"teacher {config.teacher} scores {rows.shape[1]} base-model candidates of {len(texts)} queries")
        labels = np.concatenate(
            [teacher.score(texts[s : s + 2048], rows[s : s + 2048]) for s in range(0, len(texts), 2048)]
        )
        query_dev_score = None
        if dev_set is not None and dev_d is not None:
            dev_corpus = RetrievalDataset(
                name="dev", corpus=tuple(splits.dev.documents_by_id[i] for i in dev_set.corpus),
                queries=splits.dev.queries, qrels=splits.dev.qrels,
            )  # fmt: skip
            fixed_dev = dev_d

            def query_dev_score(model: Any) -> float:
                vectors = model.encode(
                    [q.text for q in dev_corpus.queries], normalize_embeddings=True, convert_to_numpy=True
                )
                run = _run_from_vectors(dev_corpus, np.asarray(vectors, dtype=np.float32), fixed_dev, 10)
                return evaluate_run(run, dev_corpus.qrels, ["ndcg@10"]).means["ndcg@10"]

        echo(f"training the query encoder only on {len(texts)} queries (documents keep the base vectors)")
        query_outcome = train_query_encoder(
            student,
            texts,
            rows,
            labels,
            corpus_vectors,
            epochs=config.query_side_epochs,
            learning_rate=config.query_side_learning_rate,
            batch_size=config.batch_size,
            warmup_ratio=config.warmup_ratio,
            weight_decay=config.weight_decay,
            tau=config.query_side_tau,
            seed=config.seed,
            dev_score=query_dev_score,
            eval_steps=config.query_side_eval_steps,
            time_budget_seconds=60 * config.time_budget_minutes if config.time_budget_minutes else None,
            show_progress=show_progress,
        )
        training = query_outcome.to_dict()
        if query_outcome.kept_base:
            warnings_list.append("no step beat the base model on the dev queries: the base model was kept")
            load_base_model(config, for_training=False).save(str(model_dir))
        else:
            save_query_side_model(student, base_model_path(config.base), model_dir)
        tuned_encoder = load_encoder(model_dir)
        # Documents route to the base modules: the base's document vectors are the tuned model's.
        after = evaluate_run(
            _run_from_vectors(
                splits.test, embed(tuned_encoder, [q.text for q in splits.test.queries], role="query"), test_d, depth
            ),
            splits.test.qrels,
            metrics,
        )
        if dev_set is not None and not query_outcome.kept_base:
            decision = _dev_gate(config, splits.dev, dev_set, encoder, tuned_encoder, cache, model_dir, warnings_list)
            echo(str(decision))
            if not decision.significant:
                candidate_after, after, tuned_encoder = after, before, load_encoder(model_dir)

        def encode_after(texts: list[str]) -> np.ndarray:
            assert tuned_encoder is not None
            return embed(tuned_encoder, texts, role="query")

    else:
        mode_name = "full"
        parts: dict[str, LossPart] = {}
        if examples:
            data_for_loss = loss_data(config.loss, examples)
            pair_set = PairSet(pairs=tuple(pairs), notes=pair_set.notes + data_for_loss.notes)
            parts["judged"] = LossPart(config.loss, data_for_loss)
        if triples is not None:
            if config.teacher_in_batch:
                assert teacher is not None
                parts["corpus"] = in_batch_part(triples, teacher)
            else:
                parts["corpus"] = LossPart("margin-mse", margin_loss_data(triples))
        # Teacher margins alone are a gentler signal than judged pairs: at 1e-4 they pulled MiniLM off CoNaLa's
        # real questions (dev fell, the model was rejected), at 2e-5 they lifted them (66.06 -> 67.54 on test).
        rate = config.teacher_learning_rate if set(parts) == {"corpus"} else config.learning_rate
        if rate != config.learning_rate:
            echo(f"corpus queries only: learning rate {rate:g} (--teacher-learning-rate)")
        trained = train_model(
            config,
            parts,
            learning_rate=rate,
            dev=dev_set,
            work_dir=out / "work",
            model_dir=model_dir,
            echo=echo,
            callbacks=callbacks,
            show_progress=show_progress,
        )
        training = {**trained.to_dict(), "learning_rate": rate}
        if trained.kept_base:
            warnings_list.append("no checkpoint beat the base model on the dev queries: the base model was kept")
        echo("scoring the fine-tuned model on the held-out queries")
        tuned_encoder = load_encoder(model_dir)
        after = _scores_with(tuned_encoder, splits.test, metrics, depth, None, show_progress)
        if dev_set is not None and not trained.kept_base:
            decision = _dev_gate(config, splits.dev, dev_set, encoder, tuned_encoder, cache, model_dir, warnings_list)
            echo(str(decision))
            if not decision.significant:
                # The rejected model's test scores are kept for the record (a recipe benchmark needs them).
                candidate_after, after, tuned_encoder = after, before, load_encoder(model_dir)

        def encode_after(texts: list[str]) -> np.ndarray:
            assert tuned_encoder is not None
            return embed(tuned_encoder, texts, role="document")

    extra["dev_decision"] = decision.to_dict() if decision is not None else None
    if candidate_after is not None:
        extra["candidate_after"] = {"means": dict(candidate_after.means), "note": "test scores of the rejected model"}
    extra["test_difference"] = _difference(before, after, "ndcg@10", config.seed) if "ndcg@10" in metrics else None
    if eval_set is not None and eval_before is not None:
        if candidate_after is None and (tuned_encoder is not None or config.adapter):
            if config.adapter:
                eval_after = evaluate_run(
                    _run_from_vectors(
                        eval_set,
                        outcome.adapter.transform(embed(encoder, [q.text for q in eval_set.queries], role="query")),
                        outcome.adapter.transform(
                            embed(encoder, [d.full_text for d in eval_set.corpus], role="document", cache=cache)
                        ),
                        depth,
                    ),
                    eval_set.qrels,
                    metrics,
                )
            else:
                assert tuned_encoder is not None
                eval_after = _scores_with(tuned_encoder, eval_set, metrics, depth, None, show_progress)
        else:
            eval_after = eval_before
        extra["eval"] = {
            "data": eval_set.describe(),
            "before": eval_before.to_dict(),
            "after": eval_after.to_dict(),
            "difference": _difference(eval_before, eval_after, "ndcg@10", config.seed)
            if "ndcg@10" in metrics
            else None,
        }
        echo(f"--eval set after: {_headline(eval_after)}")

    guard_result = None
    if guard is not None:
        guard_pairs = load_sts(guard)
        echo(f"regression guard: STS Spearman on {guard_pairs.name}")
        guard_result = _guard(
            guard_pairs,
            lambda texts: embed(encoder, texts, role="document", cache=cache),
            encode_after,
            config.guard_drop_points,
        )
        if guard_result.warning:
            message = (
                f"STS Spearman on {guard_result.name} dropped {guard_result.drop_points:.2f} points "
                f"({100 * guard_result.before:.2f} -> {100 * guard_result.after:.2f}), more than "
                f"{config.guard_drop_points:g}: the model lost general-domain skill"
            )
            warnings_list.append(message)
            warnings.warn(message, FinetuneWarning, stacklevel=2)

    data_info = {
        "name": splits.test.name,
        "source": str(data),
        "content_hash": hashlib.sha256(
            "".join(d.content_hash for d in (loaded.train, loaded.test)).encode()
            + "".join(sorted(str(p.example) for p in pair_set.pairs if p.origin != "judgements")).encode()
        ).hexdigest(),
        "train": splits.train.describe(),
        "dev": splits.dev.describe(),
        "test": splits.test.describe(),
        "eval": eval_set.describe() if eval_set is not None else None,
        "in_distribution": eval_set is None,
    }
    wall = time.perf_counter() - started
    manifest = build_manifest(
        command="finetune",
        models=[config.base],
        data={"content_hash": data_info["content_hash"], "source": str(data)},
        seed=config.seed,
        config=config.to_dict(),
        wall_seconds=wall,
    )
    result = FinetuneResult(
        config=config,
        mode=mode_name,
        model_dir=model_dir,
        base=base_info,
        data=data_info,
        pairs=pair_set,
        leakage=splits.leakage,
        mining=mining,
        training=training,
        metrics=metrics,
        before=before,
        after=after,
        guard=guard_result,
        warnings=warnings_list,
        manifest=manifest,
        wall_seconds=wall,
        extra=extra,
    )
    if not training.get("kept_base") and (decision is None or decision.significant):  # else the base, unchanged
        _provenance(config, loaded, eval_set, data, splits, pairs, triples).write(model_dir)
    result.write(out)
    return result
