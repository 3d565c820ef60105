"""The select pipeline: from candidate models to a recommendation and a report, in one call.

:func:`select` runs, on one :class:`~embedlab.data.RetrievalDataset`:

1. **compare** — every candidate (:func:`embedlab.evaluate.compare.compare`), with BM25 always added;
2. **hybrid** — reciprocal rank fusion (:mod:`embedlab.fusion`) of BM25 and the best dense model, scored like
   any other run;
3. **statistics** — bootstrap intervals for every mean, paired tests against the best, Holm-corrected
   (:mod:`embedlab.evaluate.statistics`);
4. **cost** — each model measured on a random sample of the data (:mod:`embedlab.cost`), each in a fresh
   process; the hybrid's cost is composed from its parts;
5. **recommendation** — constraints, Pareto frontier, the choice with its reasons, fine-tuning advice
   (:mod:`embedlab.recommend`).

A candidate that is a local folder fine-tuned by embedlab carries what it trained on
(:mod:`embedlab.finetune.provenance`); when that overlaps the evaluated queries or their relevant documents, the
model — and the hybrid built on it — is marked ``†`` in the leaderboard and every report, and the recommendation
says its score is not a fair comparison.

It returns a :class:`Selection`; ``print(selection)`` shows the leaderboard with intervals and the
recommendation, and :meth:`Selection.write` writes the report (``report.html``, ``report.md``,
``report.json``; see :mod:`embedlab.report`), ``select.json`` (every figure of this run), ``compare.json``
(every per-query score), the runs in TREC format and the plots as SVG files. The configuration is one
:class:`SelectConfig`, validated when it is made and saved in every output.

Example::

    >>> from embedlab.data.stdlib_docs import load_stdlib_docs
    >>> config = SelectConfig(models=("minilm-l6", "static-minilm"), constraints=Constraints(max_latency_ms=50))
    >>> selection = select(load_stdlib_docs(), config, data_ref="stdlib-docs", out="runs/select")
    >>> print(selection)                  # leaderboard with 95% CIs, cost, then the recommendation
    >>> selection.write("runs/select")    # report.html, report.md, report.json, select.json, ...
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedlab.cost import DEFAULT_BUDGET_S, CostTable, ModelCost, combine_costs, cost_sample, measure_cost
from embedlab.data.dataset import RetrievalDataset
from embedlab.embedding import EmbeddingCache
from embedlab.errors import EmbedlabError
from embedlab.evaluate.compare import Comparison, ModelResult, compare, overlap_footnotes
from embedlab.evaluate.metrics import evaluate_run, parse_metric
from embedlab.evaluate.statistics import TESTS, Statistics, analyse
from embedlab.files import format_table, write_json_atomic
from embedlab.fusion import RRF_K, reciprocal_rank_fusion
from embedlab.manifest import build_manifest
from embedlab.recommend import Candidate, Constraints, Recommendation, TrainingData, recommend
from embedlab.recommend import training_judgements as find_training_judgements

HYBRID = "hybrid"
LEXICAL_KIND = "bm25"
RECALL_CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)
SELECT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SelectConfig:
    """Everything that decides a selection's figures; validated on creation, saved with every output.

    ``cost_documents``/``cost_queries`` size the random sample costs are measured on, ``cost_seconds`` caps
    the document encoding of a slow model (see :func:`~embedlab.cost.measure_cost`); ``resamples`` is used
    for the bootstrap and the randomization test; ``test`` names a paired test in
    :data:`~embedlab.evaluate.statistics.TESTS`; ``isolate_cost`` measures each model in a fresh process.
    """

    models: tuple[str, ...]
    k_values: tuple[int, ...] = (1, 3, 10, 100)
    metric: str = "ndcg@10"
    constraints: Constraints = field(default_factory=Constraints)
    cost_documents: int = 64
    cost_queries: int = 32
    cost_seconds: float = DEFAULT_BUDGET_S
    resamples: int = 10_000
    test: str = "randomization"
    alpha: float = 0.05
    seed: int = 0
    rrf_k: int = RRF_K
    batch_size: int = 32
    isolate_cost: bool = True

    def __post_init__(self) -> None:
        models = tuple(dict.fromkeys(m.strip() for m in self.models if m.strip()))
        if not models:
            raise EmbedlabError("give at least one model to select from (--models)")
        object.__setattr__(self, "models", models)
        ks = tuple(sorted(set(self.k_values)))
        if not ks or ks[0] < 1:
            raise EmbedlabError(f"cut-offs must be positive whole numbers (got {self.k_values})")
        object.__setattr__(self, "k_values", ks)
        metric = parse_metric(self.metric)
        if metric.k not in ks:
            raise EmbedlabError(f"--metric {self.metric} needs the cut-off {metric.k} in --k (got {ks})")
        object.__setattr__(self, "metric", str(metric))
        if self.cost_documents < 1 or self.cost_queries < 1 or self.cost_seconds <= 0:
            raise EmbedlabError("cost measurement needs at least one document, one query and some time")
        if self.test not in TESTS:
            raise EmbedlabError(f"unknown test '{self.test}': choose one of {', '.join(TESTS)}")
        if not 0 < self.alpha < 1:
            raise EmbedlabError(f"alpha must be between 0 and 1 (got {self.alpha})")
        if self.resamples < 100:
            raise EmbedlabError(f"use at least 100 resamples (got {self.resamples})")
        if self.rrf_k < 0 or self.batch_size < 1:
            raise EmbedlabError("the RRF constant must be ≥ 0 and the batch size ≥ 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "k_values": list(self.k_values),
            "metric": self.metric,
            "constraints": self.constraints.to_dict(),
            "cost_documents": self.cost_documents,
            "cost_queries": self.cost_queries,
            "cost_seconds": self.cost_seconds,
            "resamples": self.resamples,
            "test": self.test,
            "alpha": self.alpha,
            "seed": self.seed,
            "rrf_k": self.rrf_k,
            "batch_size": self.batch_size,
            "isolate_cost": self.isolate_cost,
        }


@dataclass
class Selection:
    """The outcome of :func:`select`: every stage's result, and the manifest of the run."""

    config: SelectConfig
    dataset: dict[str, Any]
    comparison: Comparison
    statistics: Statistics
    costs: CostTable
    recommendation: Recommendation
    recall_curves: dict[str, dict[int, float]]
    manifest: dict[str, Any]
    data_ref: str
    training: TrainingData | None = None
    out: str = ""

    @property
    def metric(self) -> str:
        return self.config.metric

    def result(self, name: str) -> ModelResult:
        return next(r for r in self.comparison.results if r.name == name)

    def overlap_footnotes(self) -> list[str]:
        """One line per model marked † (it trained on the evaluated queries or their relevant documents)."""
        return overlap_footnotes(self.comparison.ranked())

    def leaderboard(self) -> tuple[list[str], list[list[str]]]:
        """Headers and rows, best first: quality with its interval and test, then the main costs."""
        stats_headers, stats_rows = self.statistics.rows()
        recall = f"recall@{self.config.k_values[-1]}"
        headers = [*stats_headers, recall, "docs/s", "p95 ms", "MB"]
        rows = []
        for row, model in zip(stats_rows, self.statistics.models, strict=True):
            cost = self.costs[model.name]
            marker = " *" if model.name == self.recommendation.model else ""
            rows.append(
                [
                    self.result(model.name).marked_name + marker,
                    *row[1:],
                    f"{100 * model.means[recall]:.2f}" if recall in model.means else "-",
                    f"{cost.documents_per_second:.1f}",
                    f"{cost.latency.p95:.1f}",
                    f"{cost.size_mb:.0f}",
                ]
            )
        return headers, rows

    def __str__(self) -> str:
        data = self.dataset
        lines = [
            f"{data['name']}: {data['documents']} documents, {data['queries']} queries; scores ×100, "
            f"{round(100 * self.statistics.confidence)}% bootstrap CIs, {self.statistics.method} test against "
            f"{self.statistics.best} (Holm); * = recommended",
            format_table(*self.leaderboard()),
            *self.overlap_footnotes(),
            "",
            str(self.recommendation),
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SELECT_SCHEMA_VERSION,
            "kind": "select",
            "dataset": self.dataset,
            "data_ref": self.data_ref,
            "config": self.config.to_dict(),
            "metric": self.metric,
            "leaderboard": self.statistics.names(),
            "recommendation": self.recommendation.to_dict(),
            "statistics": self.statistics.to_dict(),
            "costs": self.costs.to_dict(),
            "recall_curves": {
                name: {str(k): v for k, v in curve.items()} for name, curve in self.recall_curves.items()
            },
            "training": self.training.to_dict() if self.training else None,
            "models": [
                {
                    "name": r.name,
                    "spec": r.spec,
                    "means": dict(r.scores.means),
                    "index_seconds": r.index_seconds,
                    "search_seconds": r.search_seconds,
                    "truncated_documents": r.truncated_documents,
                    "training_overlap": r.training_overlap.to_dict() if r.training_overlap else None,
                    "details": r.details,
                }
                for r in self.comparison.ranked()
            ],
            "manifest": self.manifest,
        }

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write the report and the data behind it into ``out``; returns the main paths.

        Sections that other commands added to a report already in ``out`` (``embedlab finetune``'s) are kept.
        """
        from embedlab.report.selection import write_selection_report

        out = Path(out)
        compare_paths = self.comparison.write(out)
        paths = {
            "select": write_json_atomic(out / "select.json", self.to_dict()),
            "compare": compare_paths["json"],
        }
        paths.update(write_selection_report(self, out))
        return paths


@contextmanager
def _stage(walls: dict[str, float], name: str, show_progress: bool) -> Any:
    if show_progress:
        import sys

        print(f"[select] {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    walls[name] = time.perf_counter() - start


def fuse_results(
    lexical: ModelResult,
    dense: ModelResult,
    dataset: RetrievalDataset,
    metrics: Sequence[str],
    *,
    k: int = RRF_K,
    depth: int = 100,
) -> ModelResult:
    """The hybrid: reciprocal rank fusion of two runs, scored on ``metrics`` like any model."""
    start = time.perf_counter()
    run = reciprocal_rank_fusion([lexical.run, dense.run], k=k, depth=depth)
    fuse_seconds = time.perf_counter() - start
    spec = {
        "name": HYBRID,
        "model_id": f"reciprocal rank fusion (k={k}) of {lexical.name} and {dense.name}",
        "kind": "hybrid",
        "dim": dense.spec.get("dim"),
        "licence": " + ".join(dict.fromkeys([dense.spec.get("licence", "?"), lexical.spec.get("licence", "?")])),
        "parts": [lexical.name, dense.name],
        "rrf_k": k,
    }
    index_seconds = lexical.index_seconds + dense.index_seconds
    return ModelResult(
        name=HYBRID,
        spec=spec,
        scores=evaluate_run(run, dataset.qrels, metrics),
        index_seconds=index_seconds,
        search_seconds=lexical.search_seconds + dense.search_seconds + fuse_seconds,
        documents_per_second=len(dataset.corpus) / index_seconds if index_seconds > 0 else float("inf"),
        truncated_documents=dense.truncated_documents,
        details={"parts": [lexical.name, dense.name], "rrf_k": k},
        run=run,
        # Its ranking carries the dense model's: what that one memorised, the hybrid scores with.
        training_overlap=dense.training_overlap,
    )


def recall_curves(results: Sequence[ModelResult], qrels: Mapping[str, Mapping[str, int]], depth: int) -> dict:
    """Mean recall@k at every k of :data:`RECALL_CURVE_KS` up to ``depth``, per model."""
    ks = [k for k in RECALL_CURVE_KS if k <= depth] or [depth]
    if depth not in ks:
        ks.append(depth)
    curves = {}
    for result in results:
        means = evaluate_run(result.run, qrels, [f"recall@{k}" for k in ks]).means
        curves[result.name] = {k: means[f"recall@{k}"] for k in ks}
    return curves


def _candidates(
    comparison: Comparison, statistics: Statistics, costs: CostTable, sources: Mapping[str, str]
) -> list[Candidate]:
    out = []
    for result in comparison.results:
        kind = str(result.spec.get("kind", ""))
        parts = tuple(result.spec.get("parts", ()))
        label = f"the hybrid of {' and '.join(parts)} (reciprocal rank fusion)" if kind == "hybrid" else ""
        out.append(
            Candidate(
                name=result.name,
                kind=kind,
                quality=result.mean(statistics.metric),
                interval=statistics[result.name].intervals[statistics.metric],
                cost=costs[result.name],
                label=label,
                parts=parts,
                source=sources.get(result.name, result.name),
                overlap=result.training_overlap,
            )
        )
    return out


def select(
    dataset: RetrievalDataset,
    config: SelectConfig,
    *,
    cache: EmbeddingCache | None = None,
    data_ref: str | None = None,
    split: str = "test",
    training: TrainingData | None = None,
    out: str | Path | None = None,
    show_progress: bool = False,
) -> Selection:
    """Compare, fuse, test, measure and recommend; see the module docstring.

    ``data_ref`` is how the user named the data (for the ``embedlab finetune`` command; training judgements
    beside a BEIR folder's ``split`` are found from it unless ``training`` is given); ``out`` is the folder the
    report goes to (the fine-tuning command writes its section there too).
    """
    if not dataset.queries or not dataset.corpus:
        raise EmbedlabError(f"{dataset.name}: selecting needs documents and judged queries")
    started = time.perf_counter()
    walls: dict[str, float] = {}
    from embedlab.models.catalog import find_spec

    models = list(config.models)
    if not any((spec := find_spec(m)) is not None and spec.kind == LEXICAL_KIND for m in models):
        models.append("bm25")
    depth = config.k_values[-1]
    with _stage(walls, "compare", show_progress):
        compared = compare(
            dataset,
            models,
            k_values=config.k_values,
            cache=cache,
            batch_size=config.batch_size,
            show_progress=show_progress,
        )
    names = [r.name for r in compared.results]
    duplicates = sorted({n for n in names if names.count(n) > 1} | ({HYBRID} & set(names)))
    if duplicates:
        raise EmbedlabError(f"two candidates share the name {', '.join(duplicates)}: give each model a distinct name")
    sources = dict(zip(names, models, strict=True))
    lexical = next(r for r in compared.results if r.spec.get("kind") == LEXICAL_KIND)
    dense = [r for r in compared.results if r.spec.get("kind") != LEXICAL_KIND]
    results = list(compared.results)
    with _stage(walls, "hybrid", show_progress):
        best_dense = max(dense, key=lambda r: r.mean(config.metric)) if dense else None
        if best_dense is not None:
            results.append(fuse_results(lexical, best_dense, dataset, compared.metrics, k=config.rrf_k, depth=depth))
    comparison = Comparison(
        dataset=compared.dataset,
        metrics=compared.metrics,
        results=results,
        manifest=compared.manifest,
        primary=config.metric,
    )
    with _stage(walls, "statistics", show_progress):
        statistics = analyse(
            {r.name: r.scores for r in results},
            metric=config.metric,
            method=config.test,
            alpha=config.alpha,
            resamples=config.resamples,
            seed=config.seed,
        )
        curves = recall_curves(results, dataset.qrels, depth)
    with _stage(walls, "cost", show_progress):
        from tqdm.auto import tqdm

        sample = cost_sample(dataset, documents=config.cost_documents, queries=config.cost_queries, seed=config.seed)
        measured: dict[str, ModelCost] = {}
        for result in tqdm(compared.results, desc="measure cost", unit="model", disable=not show_progress):
            cost = measure_cost(
                sources[result.name],
                sample,
                batch_size=config.batch_size,
                isolated=config.isolate_cost,
                budget_s=config.cost_seconds,
            )
            measured[result.name] = cost
        if best_dense is not None:
            measured[HYBRID] = combine_costs(HYBRID, [measured[best_dense.name], measured[lexical.name]])
        costs = CostTable(tuple(measured[name] for name in statistics.names()))
    with _stage(walls, "recommend", show_progress):
        if training is None and data_ref is not None:
            training = find_training_judgements(data_ref, split)
        recommendation = recommend(
            _candidates(comparison, statistics, costs, sources),
            metric=config.metric,
            per_query=statistics.per_query,
            constraints=config.constraints,
            training=training,
            data_ref=data_ref or "DATA",
            out=str(out) if out is not None else "OUT",
            method=config.test,
            alpha=config.alpha,
            resamples=config.resamples,
            seed=config.seed,
        )
    walls["total"] = time.perf_counter() - started
    manifest = build_manifest(
        command="select",
        models=list(models),
        data=dataset.describe(),
        config=config.to_dict(),
        seeds={"bootstrap": config.seed, "randomization_test": config.seed, "cost_sample": config.seed},
        wall_seconds=walls,
    )
    return Selection(
        config=config,
        dataset=dataset.describe(),
        comparison=comparison,
        statistics=statistics,
        costs=costs,
        recommendation=recommendation,
        recall_curves=curves,
        manifest=manifest,
        data_ref=data_ref or "",
        training=training,
        out=str(out) if out is not None else "",
    )
