"""Compare candidate models on one data set: retrieve with each, score every query, rank the models.

:func:`compare` runs each named model (catalog name, local folder, hub id, or ``bm25``) over a
:class:`~embedlab.data.RetrievalDataset` and returns a :class:`Comparison`: per model, the metric of every query
(kept for statistics), the means, and what retrieval cost (wall time, documents per second, truncated documents).
:func:`compare_sts` does the same for scored sentence pairs. Printing a result gives the leaderboard::

    >>> comparison = compare(dataset, ["minilm-l6", "bm25"], k_values=(1, 3, 10, 100))
    >>> print(comparison)
    model      ndcg@10  recall@100  mrr@10  map@100  docs/s  index s
    ---------  -------  ----------  ------  -------  ------  -------
    minilm-l6    64.51       92.52   61.03    59.86    31.2    166.1
    bm25         ...

A local model folder that ``embedlab finetune`` wrote carries a record of what it trained on
(:mod:`embedlab.finetune.provenance`); :func:`compare` checks it against the evaluated data before any model
runs. A model that trained on evaluated queries or on documents relevant to them is marked :data:`TRAINED_MARK`
(``†``) in the table, with a footnote saying how much it saw: its score measures memory, not retrieval, and is
not a fair comparison. A fine-tuned model with no overlap gets no mark; ``compare.json`` records the overlap of
every fine-tuned model (``training_overlap``, with ``clean``), ``null`` for the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.data.dataset import RetrievalDataset, ScoredPairs, load_notes
from embedlab.embedding import EmbeddingCache, embed
from embedlab.evaluate.metrics import RunScores, evaluate_run
from embedlab.evaluate.sts import sts_correlation
from embedlab.files import format_table, markdown_table, write_json_atomic, write_text_atomic
from embedlab.finetune.provenance import TRAINED_MARK, TrainingOverlap, read_provenance
from embedlab.manifest import build_manifest
from embedlab.models.catalog import find_spec
from embedlab.models.loading import load_encoder
from embedlab.retrieval import Run, build_retriever

METRIC_FAMILIES = ("ndcg", "recall", "precision", "mrr", "map")


def metric_names(k_values: Sequence[int]) -> list[str]:
    """Every metric family at every cut-off, e.g. ``ndcg@10``."""
    return [f"{family}@{k}" for family in METRIC_FAMILIES for k in sorted(set(k_values))]


@dataclass
class ModelResult:
    """One model's scores on one data set, and what the retrieval cost."""

    name: str
    spec: dict[str, Any]
    scores: RunScores
    index_seconds: float
    search_seconds: float
    documents_per_second: float
    truncated_documents: int
    details: dict[str, Any] = field(default_factory=dict)
    run: Run = field(default_factory=dict, repr=False)
    training_overlap: TrainingOverlap | None = None
    """``None``: not fine-tuned by embedlab; otherwise what of the evaluated data it trained on."""

    def mean(self, metric: str) -> float:
        return self.scores.means[metric]

    @property
    def trained_on_evaluation(self) -> bool:
        """True when the model trained on evaluated queries or their relevant documents (not a fair score)."""
        return self.training_overlap is not None and not self.training_overlap.clean

    @property
    def marked_name(self) -> str:
        """The name as tables show it: with :data:`TRAINED_MARK` when it trained on what is evaluated."""
        return self.name + (f" {TRAINED_MARK}" if self.trained_on_evaluation else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "means": dict(self.scores.means),
            "per_query": {m: dict(v) for m, v in self.scores.per_query.items()},
            "index_seconds": self.index_seconds,
            "search_seconds": self.search_seconds,
            "documents_per_second": self.documents_per_second,
            "truncated_documents": self.truncated_documents,
            "training_overlap": self.training_overlap.to_dict() if self.training_overlap else None,
            **self.details,
        }


def overlap_footnotes(results: Sequence[ModelResult]) -> list[str]:
    """One line per marked model: ``† name: trained on ... — its score is not a fair comparison``."""
    return [
        f"{TRAINED_MARK} {r.name}: {r.training_overlap.describe()} — its score is not a fair comparison"
        for r in results
        if r.trained_on_evaluation and r.training_overlap is not None
    ]


@dataclass
class Comparison:
    """The models' results on one data set, best first by ``primary`` metric."""

    dataset: dict[str, Any]
    metrics: list[str]
    results: list[ModelResult]
    manifest: dict[str, Any]
    primary: str = "ndcg@10"

    def ranked(self) -> list[ModelResult]:
        return sorted(self.results, key=lambda r: -r.mean(self.primary))

    def _headline_metrics(self) -> list[str]:
        ks = sorted({int(m.split("@")[1]) for m in self.metrics})
        wanted = [self.primary, f"recall@{ks[-1]}", f"mrr@{min(10, ks[-1])}", f"map@{ks[-1]}"]
        return [m for m in dict.fromkeys(wanted) if m in self.metrics]

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        headline = self._headline_metrics()
        headers = ["model", *headline, "docs/s", "index s"]
        rows = [
            [
                r.marked_name,
                *(f"{100 * r.mean(m):.2f}" for m in headline),
                f"{r.documents_per_second:.1f}",
                f"{r.index_seconds:.1f}",
            ]
            for r in self.ranked()
        ]
        return headers, rows

    def __str__(self) -> str:
        return "\n".join([format_table(*self._rows()), *overlap_footnotes(self.ranked())])

    def to_markdown(self) -> str:
        headers, rows = self._rows()
        footnotes = overlap_footnotes(self.ranked())
        data = self.dataset
        lines = [
            f"# embedlab compare — {data['name']}",
            "",
            f"{data['documents']} documents, {data['queries']} queries ({data.get('split') or 'all'}), "
            f"data hash `{data['content_hash'][:12]}`. Scores ×100; best first by {self.primary}.",
            "",
            *(f"- {note}" for note in load_notes(data.get("load_report", {}))),
            *([""] if data.get("load_report") else []),
            markdown_table(headers, rows),
            "",
            *(f"{line}  " for line in footnotes),
            *([""] if footnotes else []),
            "## Every metric",
            "",
            markdown_table(
                ["model", *self.metrics],
                [[r.marked_name, *(f"{100 * r.mean(m):.2f}" for m in self.metrics)] for r in self.ranked()],
            ),
            "",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.manifest["schema_version"],
            "kind": "compare",
            "dataset": self.dataset,
            "metrics": self.metrics,
            "primary": self.primary,
            "leaderboard": [r.name for r in self.ranked()],
            "results": [r.to_dict() for r in self.ranked()],
            "manifest": self.manifest,
        }

    def write(self, out: Path) -> dict[str, Path]:
        """``compare.json`` (every figure, per query), ``compare.md``, and each model's run in TREC format."""
        out = Path(out)
        paths = {
            "json": write_json_atomic(out / "compare.json", self.to_dict()),
            "markdown": write_text_atomic(out / "compare.md", self.to_markdown()),
        }
        for result in self.results:
            lines = [
                f"{qid} Q0 {doc} {rank} {score:.6f} {result.name}"
                for qid, docs in result.run.items()
                for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), start=1)
            ]
            safe = result.name.replace("/", "__")
            write_text_atomic(out / "runs" / f"{safe}.trec", "\n".join(lines) + "\n")
        return paths


def compare(
    dataset: RetrievalDataset,
    models: Sequence[str],
    *,
    k_values: Sequence[int] = (1, 3, 10, 100),
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
) -> Comparison:
    """Retrieve with every model and score each query; see the module docstring."""
    metrics = metric_names(k_values)
    depth = max(k_values)
    started = time.perf_counter()
    # Before any model runs: a corrupt training record fails fast, not after an hour of encoding.
    overlaps = {name: training_overlap(name, dataset) for name in models}
    results = []
    for name in models:
        retriever = build_retriever(name, cache=cache, batch_size=batch_size)
        outcome = retriever.retrieve(dataset, k=depth, show_progress=show_progress)
        results.append(
            ModelResult(
                name=retriever.spec.name,
                spec=retriever.spec.to_dict(),
                scores=evaluate_run(outcome.run, dataset.qrels, metrics),
                index_seconds=outcome.index_seconds,
                search_seconds=outcome.search_seconds,
                documents_per_second=outcome.documents_per_second,
                truncated_documents=outcome.truncated_documents,
                details=dict(outcome.details),
                run=outcome.run,
                training_overlap=overlaps[name],
            )
        )
    manifest = build_manifest(
        command="compare",
        models=list(models),
        data={"content_hash": dataset.content_hash, "source": dataset.source},
        wall_seconds=time.perf_counter() - started,
    )
    primary = "ndcg@10" if "ndcg@10" in metrics else metrics[0]
    return Comparison(dataset=dataset.describe(), metrics=metrics, results=results, manifest=manifest, primary=primary)


def training_overlap(model: str, dataset: RetrievalDataset) -> TrainingOverlap | None:
    """What of ``dataset`` the model named ``model`` trained on, when it is a local folder that ``embedlab
    finetune`` wrote (it holds a training record); ``None`` for any other model."""
    if find_spec(model) is not None:  # a catalog name wins over a folder of that name, as when loading
        return None
    path = Path(model).expanduser()
    record = read_provenance(path) if path.is_dir() else None
    return record.overlap(dataset) if record is not None else None


@dataclass
class StsResult:
    name: str
    spearman: float
    pearson: float
    seconds: float
    pairs_per_second: float
    similarities: list[float] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spearman": self.spearman,
            "pearson": self.pearson,
            "seconds": self.seconds,
            "pairs_per_second": self.pairs_per_second,
            "similarities": self.similarities,
        }


@dataclass
class StsComparison:
    dataset: dict[str, Any]
    results: list[StsResult]
    manifest: dict[str, Any]

    def ranked(self) -> list[StsResult]:
        return sorted(self.results, key=lambda r: -r.spearman)

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        return ["model", "spearman", "pearson", "pairs/s"], [
            [r.name, f"{100 * r.spearman:.2f}", f"{100 * r.pearson:.2f}", f"{r.pairs_per_second:.1f}"]
            for r in self.ranked()
        ]

    def __str__(self) -> str:
        return format_table(*self._rows())

    def to_markdown(self) -> str:
        data = self.dataset
        return "\n".join(
            [
                f"# embedlab sts — {data['name']}",
                "",
                f"{data['pairs']} scored pairs, data hash `{data['content_hash'][:12]}`. Correlations ×100 between "
                "cosine similarity and the gold score.",
                "",
                markdown_table(*self._rows()),
                "",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.manifest["schema_version"],
            "kind": "sts",
            "dataset": self.dataset,
            "leaderboard": [r.name for r in self.ranked()],
            "results": [r.to_dict() for r in self.ranked()],
            "manifest": self.manifest,
        }

    def write(self, out: Path) -> dict[str, Path]:
        out = Path(out)
        return {
            "json": write_json_atomic(out / "sts.json", self.to_dict()),
            "markdown": write_text_atomic(out / "sts.md", self.to_markdown()),
        }


def compare_sts(
    pairs: ScoredPairs,
    models: Sequence[str],
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
) -> StsComparison:
    """Spearman and Pearson correlation between each model's cosine similarity and the gold scores."""
    started = time.perf_counter()
    gold = [p.score for p in pairs.pairs]
    results = []
    for name in models:
        encoder = load_encoder(name)
        start = time.perf_counter()
        # Both sides of a pair are sentences of the same kind: encode them in the document role.
        left = embed(
            encoder,
            [p.text1 for p in pairs.pairs],
            role="document",
            cache=cache,
            batch_size=batch_size,
            show_progress=show_progress,
        )
        right = embed(
            encoder,
            [p.text2 for p in pairs.pairs],
            role="document",
            cache=cache,
            batch_size=batch_size,
            show_progress=show_progress,
        )
        seconds = time.perf_counter() - start
        similarities = np.einsum("ij,ij->i", left, right)
        correlation = sts_correlation(similarities.tolist(), gold)
        results.append(
            StsResult(
                name=encoder.spec.name,
                spearman=correlation["spearman"],
                pearson=correlation["pearson"],
                seconds=seconds,
                pairs_per_second=len(gold) / seconds if seconds > 0 else float("inf"),
                similarities=similarities.tolist(),
            )
        )
    manifest = build_manifest(
        command="sts",
        models=list(models),
        data={"content_hash": pairs.content_hash},
        wall_seconds=time.perf_counter() - started,
    )
    return StsComparison(dataset=pairs.describe(), results=results, manifest=manifest)
