"""The ANN study: what approximate search and quantization cost, measured against exact search on your queries.

:func:`sweep` embeds the corpus and the queries once (through the cache), takes **exact** search
(:func:`~embedlab.retrieval.exact_top_k` over the full-dimensional float vectors) as the reference, then builds
every index of a :class:`SweepGrid` with FAISS (:class:`~embedlab.index.faiss_store.FaissIndex`, the embedded
store's engine; Milvus Lite 3.x runs the same FAISS index types) and searches it with each search setting. Per
point it records:

* ``recall`` — recall@k *of the exact top-k*: the share of the exact top-k an index returns, averaged over
  queries (1.0 means the same documents as exact search);
* ``ndcg`` and ``ndcg_lost`` — nDCG@k against the judgements (:func:`~embedlab.evaluate.metrics.evaluate_run`)
  and how much lower it is than exact search's (negative when the approximation happens to help);
* ``qps`` — queries per second, one query per call as a server sees them, one FAISS thread: the fastest of
  repeated passes over the queries (at least 3, at least ``min_seconds`` in all), so other work on a shared
  machine disturbs it less;
* ``build_seconds`` — training and adding every vector; ``index_bytes`` — the serialised index.

A truncated dimension (``dims``) is measured against the full-dimensional exact top-k, so its recall is the whole
cost of truncating. :meth:`SweepResult.recommend` picks, among the points reaching ``target`` recall (default
0.99), the fastest, the smallest, and the fastest of each index kind. :meth:`SweepResult.write` saves
``sweep.json`` (every figure and the manifest), ``sweep.md`` and ``sweep.svg`` (recall against speed and against
memory). QPS depends on the machine and its load; recall and nDCG do not.

Example::

    >>> result = sweep(dataset, "minilm-l6", cache=EmbeddingCache(Path(".cache")))
    >>> print(result)          # one row per point, then the recommendation
    setting                 recall@10  ndcg@10 lost     QPS  build s    MB  bytes/doc
    flat d384                  1.0000        0.00    2950     0.01   8.0     1544.1
    hnsw M16 ef16 d384         0.9012        0.81    9120     1.20   9.2     1767.0
    ...
    >>> result.write(Path("runs/sweep"))
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embedlab.data.dataset import RetrievalDataset
from embedlab.embedding import EmbeddingCache, embed
from embedlab.errors import EmbedlabError
from embedlab.evaluate.metrics import evaluate_run
from embedlab.files import format_table, markdown_table, write_json_atomic, write_text_atomic
from embedlab.index.build import describe_model
from embedlab.index.config import INDEX_KINDS, IndexConfig, Quantization
from embedlab.index.faiss_store import FaissIndex
from embedlab.manifest import SCHEMA_VERSION, build_manifest
from embedlab.models.encoders import Encoder, Vectors
from embedlab.models.loading import load_encoder
from embedlab.retrieval import exact_top_k


@dataclass(frozen=True)
class SweepGrid:
    """The settings to measure. Flat indexes take every quantization at every dimension (``None`` is the model's
    own); HNSW and IVF are measured at the full dimension with their quantizations, each build searched with
    every ``ef_search`` / ``nprobe``. The default takes a few minutes on SciFact (5,183 documents) on 2 cores."""

    dims: tuple[int | None, ...] = (None, 256, 128)
    flat_quantize: tuple[Quantization, ...] = ("none", "int8", "binary", "pq")
    hnsw_m: tuple[int, ...] = (16, 32)
    hnsw_quantize: tuple[Quantization, ...] = ("none", "int8")
    ef_search: tuple[int, ...] = (16, 32, 64, 128, 256)
    ef_construction: int = 100
    ivf_quantize: tuple[Quantization, ...] = ("none", "int8", "pq")
    nlist: tuple[int | None, ...] = (None,)
    nprobe: tuple[int, ...] = (1, 4, 16, 64)

    def builds(self) -> list[tuple[IndexConfig, list[IndexConfig]]]:
        """Each index to build, with the search settings to measure it at (unresolved configs)."""
        builds: list[tuple[IndexConfig, list[IndexConfig]]] = []
        for dim in self.dims:
            for quantize in self.flat_quantize:
                config = IndexConfig(index="flat", quantize=quantize, dim=dim)
                builds.append((config, [config]))
        for m in self.hnsw_m:
            for quantize in self.hnsw_quantize:
                config = IndexConfig(index="hnsw", quantize=quantize, hnsw_m=m, ef_construction=self.ef_construction)
                builds.append((config, [config.with_search(ef_search=ef) for ef in self.ef_search]))
        for nlist in self.nlist:
            for quantize in self.ivf_quantize:
                config = IndexConfig(index="ivf", quantize=quantize, nlist=nlist)
                builds.append((config, [config.with_search(nprobe=n) for n in self.nprobe]))
        return builds

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class SweepPoint:
    """One index at one search setting and what it cost; fractions unrounded."""

    config: IndexConfig
    recall: float
    ndcg: float | None
    ndcg_lost: float | None
    qps: float
    build_seconds: float
    index_bytes: int
    documents: int

    @property
    def bytes_per_document(self) -> float:
        return self.index_bytes / self.documents if self.documents else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.config.label,
            "config": self.config.to_dict(),
            "recall": self.recall,
            "ndcg": self.ndcg,
            "ndcg_lost": self.ndcg_lost,
            "qps": self.qps,
            "build_seconds": self.build_seconds,
            "index_bytes": self.index_bytes,
            "bytes_per_document": self.bytes_per_document,
        }


@dataclass(frozen=True)
class Recommendation:
    """The points reaching the target: the fastest, the smallest, and the fastest of each index kind."""

    target: float
    fastest: SweepPoint | None
    smallest: SweepPoint | None
    by_index: dict[str, SweepPoint | None]

    def to_dict(self) -> dict[str, Any]:
        def pick(point: SweepPoint | None) -> dict[str, Any] | None:
            return point.to_dict() if point else None

        return {
            "target": self.target,
            "fastest": pick(self.fastest),
            "smallest": pick(self.smallest),
            "by_index": {name: pick(point) for name, point in self.by_index.items()},
        }

    def lines(self) -> list[str]:
        if self.fastest is None:
            return [f"no setting reached recall@10 ≥ {self.target}: raise ef_search / nprobe or keep a flat index"]
        assert self.smallest is not None
        lines = [
            f"fastest reaching recall ≥ {self.target}: {self.fastest.config.label} "
            f"(recall {self.fastest.recall:.4f}, {self.fastest.qps:.0f} QPS)",
            f"smallest reaching recall ≥ {self.target}: {self.smallest.config.label} "
            f"(recall {self.smallest.recall:.4f}, {self.smallest.index_bytes / 1e6:.1f} MB)",
        ]
        for name, point in self.by_index.items():
            if point is not None:
                lines.append(
                    f"{name}: {point.config.label} (recall {point.recall:.4f}, {point.qps:.0f} QPS, "
                    f"{point.index_bytes / 1e6:.1f} MB)"
                )
            else:
                lines.append(f"{name}: no setting in the grid reached the target")
        return lines


@dataclass
class SweepResult:
    """Every point of a sweep with its reference figures; ``str()`` is the table, :meth:`write` saves it all."""

    points: list[SweepPoint]
    target: float
    k: int
    exact_ndcg: float | None
    dataset: dict[str, Any]
    model: dict[str, Any]
    grid: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

    def reaching(self) -> list[SweepPoint]:
        return [p for p in self.points if p.recall >= self.target]

    def recommend(self) -> Recommendation:
        good = self.reaching()
        by_index: dict[str, SweepPoint | None] = {}
        for name in INDEX_KINDS:
            family = [p for p in good if p.config.index == name]
            if any(p.config.index == name for p in self.points):
                by_index[name] = max(family, key=lambda p: p.qps) if family else None
        return Recommendation(
            target=self.target,
            fastest=max(good, key=lambda p: p.qps) if good else None,
            smallest=min(good, key=lambda p: (p.index_bytes, -p.qps)) if good else None,
            by_index=by_index,
        )

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        headers = ["setting", f"recall@{self.k}", f"ndcg@{self.k} lost", "QPS", "build s", "MB", "bytes/doc"]
        rows = [
            [
                p.config.label,
                f"{p.recall:.4f}",
                "-" if p.ndcg_lost is None else f"{100 * p.ndcg_lost:.2f}",
                f"{p.qps:.0f}",
                f"{p.build_seconds:.2f}",
                f"{p.index_bytes / 1e6:.2f}",
                f"{p.bytes_per_document:.1f}",
            ]
            for p in self.points
        ]
        return headers, rows

    def __str__(self) -> str:
        return "\n".join([format_table(*self._rows()), "", *self.recommend().lines()])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "sweep",
            "dataset": self.dataset,
            "model": self.model,
            "k": self.k,
            "target": self.target,
            "exact_ndcg": self.exact_ndcg,
            "grid": self.grid,
            "points": [p.to_dict() for p in self.points],
            "recommendation": self.recommend().to_dict(),
            "manifest": self.manifest,
        }

    def to_markdown(self, plot: str | None = "sweep.svg") -> str:
        data = self.dataset
        exact = "-" if self.exact_ndcg is None else f"{100 * self.exact_ndcg:.2f}"
        lines = [
            f"# embedlab index --sweep — {data.get('name', '')}",
            "",
            f"{data.get('documents')} documents, {data.get('queries')} queries, model `{self.model.get('name')}`. "
            f"Recall@{self.k} is the share of exact search's top {self.k} that each index returns; nDCG@{self.k} "
            f"lost is ×100 below exact search's {exact}. QPS: one query per call, wall time on a shared machine.",
            "",
            "## Recommendation",
            "",
            *(f"- {line}" for line in self.recommend().lines()),
            "",
        ]
        if plot:
            lines += [f"![recall against speed and memory]({plot})", ""]
        lines += ["## Every setting", "", markdown_table(*self._rows()), ""]
        return "\n".join(lines)

    def plot_svg(self) -> str:
        """Recall against QPS and against bytes per document, one colour per index kind, the target marked."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(11, 4.5))
        speed, memory = figure.subplots(1, 2)
        markers = {"none": "o", "int8": "s", "binary": "x", "pq": "^"}
        colours = {"flat": "tab:blue", "hnsw": "tab:orange", "ivf": "tab:green"}
        for point in self.points:
            style = {
                "marker": markers.get(point.config.quantize, "o"),
                "color": colours.get(point.config.index, "black"),
                "alpha": 0.85,
            }
            speed.scatter(point.recall, point.qps, **style)
            memory.scatter(point.recall, point.bytes_per_document, **style)
        for axis, label in ((speed, "queries per second"), (memory, "index bytes per document")):
            axis.axvline(self.target, color="grey", linestyle="--", linewidth=1)
            axis.set_xlabel(f"recall@{self.k} of the exact top {self.k}")
            axis.set_ylabel(label)
            axis.set_yscale("log")
            axis.grid(True, alpha=0.3)
        handles = [speed.scatter([], [], color=colour, marker="o", label=name) for name, colour in colours.items()] + [
            speed.scatter([], [], color="black", marker=marker, label=name) for name, marker in markers.items()
        ]
        speed.legend(handles=handles, fontsize=8, loc="lower left")
        figure.suptitle(f"{self.dataset.get('name', '')}: {self.model.get('name', '')} — target {self.target}")
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
        return buffer.getvalue()

    def write(self, out: Path) -> dict[str, Path]:
        """``sweep.json``, ``sweep.md`` and ``sweep.svg`` in ``out``."""
        out = Path(out)
        return {
            "plot": write_text_atomic(out / "sweep.svg", self.plot_svg()),
            "json": write_json_atomic(out / "sweep.json", self.to_dict()),
            "markdown": write_text_atomic(out / "sweep.md", self.to_markdown()),
        }


def _recall(found: NDArray[np.int64], exact: NDArray[np.int64]) -> float:
    k = exact.shape[1]
    if not k:
        return 1.0
    hits = [len(set(row.tolist()) & set(ref.tolist())) for row, ref in zip(found, exact, strict=True)]
    return float(np.mean(hits) / k)


def _run(
    query_ids: Sequence[str], doc_ids: Sequence[str], scores: NDArray[np.float32], found: NDArray[np.int64]
) -> dict[str, dict[str, float]]:
    return {
        qid: {doc_ids[j]: float(s) for s, j in zip(row_s, row_i, strict=True) if j >= 0}
        for qid, row_s, row_i in zip(query_ids, scores, found, strict=True)
    }


def _timed_search(
    index: FaissIndex, queries: Vectors, config: IndexConfig, *, k: int, min_seconds: float
) -> tuple[NDArray[np.float32], NDArray[np.int64], float]:
    """Results of searching one query per call, and the fastest pass's wall time over all queries. Passes repeat
    (at least 3) until ``min_seconds`` have gone by: the fastest is the one the machine's other work
    disturbed least."""
    scores = np.zeros((len(queries), k), dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    best, spent, passes = float("inf"), 0.0, 0
    while passes < 3 or (spent < min_seconds and passes < 1000):
        tick = time.perf_counter()
        for row in range(len(queries)):
            s, f = index.search(queries[row : row + 1], k=k, ef_search=config.ef_search, nprobe=config.nprobe)
            scores[row, : s.shape[1]], found[row, : f.shape[1]] = s[0], f[0]
        elapsed = time.perf_counter() - tick
        best, spent, passes = min(best, elapsed), spent + elapsed, passes + 1
    return scores, found, best


def measure(
    documents: Vectors,
    queries: Vectors,
    *,
    doc_ids: Sequence[str],
    query_ids: Sequence[str],
    qrels: Any = None,
    grid: SweepGrid | None = None,
    k: int = 10,
    min_seconds: float = 0.1,
    show_progress: bool = False,
) -> tuple[list[SweepPoint], float | None]:
    """Every grid point measured on these vectors; also exact search's nDCG@k (``None`` without judgements)."""
    from tqdm.auto import tqdm

    grid = grid or SweepGrid()
    n_docs, model_dim = documents.shape
    exact_scores, exact = exact_top_k(queries, documents, k)
    metric = f"ndcg@{k}"
    judged = bool(qrels) and any(g > 0 for docs in qrels.values() for g in docs.values())

    def ndcg(scores: NDArray[np.float32], found: NDArray[np.int64]) -> float | None:
        if not judged:
            return None
        return evaluate_run(_run(query_ids, doc_ids, scores, found), qrels, [metric]).means[metric]

    exact_ndcg = ndcg(exact_scores, exact)
    keys = np.arange(n_docs, dtype=np.int64)
    points: list[SweepPoint] = []
    builds = grid.builds()
    for build_config, variants in tqdm(builds, desc="sweep", unit="index", disable=not show_progress):
        config = build_config.resolved(documents=n_docs, model_dim=model_dim)
        docs = config.prepare(documents)
        asked = config.prepare(queries)
        tick = time.perf_counter()
        index = FaissIndex.build(docs, keys, config)
        build_seconds = time.perf_counter() - tick
        index_bytes = index.nbytes()
        for variant in variants:
            searched = replace(config, ef_search=variant.ef_search, nprobe=variant.nprobe)
            scores, found, seconds = _timed_search(index, asked, searched, k=k, min_seconds=min_seconds)
            value = ndcg(scores, found)
            points.append(
                SweepPoint(
                    config=searched,
                    recall=_recall(found, exact),
                    ndcg=value,
                    ndcg_lost=None if value is None or exact_ndcg is None else exact_ndcg - value,
                    qps=len(asked) / seconds if seconds > 0 else 0.0,
                    build_seconds=build_seconds,
                    index_bytes=index_bytes,
                    documents=n_docs,
                )
            )
    return points, exact_ndcg


def sweep(
    dataset: RetrievalDataset,
    model: str | Path | Encoder,
    *,
    grid: SweepGrid | None = None,
    target: float = 0.99,
    k: int = 10,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    min_seconds: float = 0.1,
    show_progress: bool = False,
) -> SweepResult:
    """Measure every grid point on ``dataset``'s queries against exact search; see the module docstring."""
    started = time.perf_counter()
    if not 0 < target <= 1:
        raise EmbedlabError(f"the recall target must be in (0, 1] (got {target})")
    if k < 1:
        raise EmbedlabError(f"k must be ≥ 1 (got {k})")
    if not dataset.queries:
        raise EmbedlabError(
            f"{dataset.name}: the sweep needs queries to measure recall; give a BEIR folder or a pairs file"
        )
    grid = grid or SweepGrid()
    encoder = model if isinstance(model, Encoder) else load_encoder(model)
    documents = embed(
        encoder, [d.full_text for d in dataset.corpus], role="document", cache=cache, batch_size=batch_size,
        show_progress=show_progress,
    )  # fmt: skip
    queries = embed(
        encoder, [q.text for q in dataset.queries], role="query", cache=cache, batch_size=batch_size,
        show_progress=show_progress,
    )  # fmt: skip
    points, exact_ndcg = measure(
        documents,
        queries,
        doc_ids=[d.id for d in dataset.corpus],
        query_ids=[q.id for q in dataset.queries],
        qrels=dataset.qrels,
        grid=grid,
        k=k,
        min_seconds=min_seconds,
        show_progress=show_progress,
    )
    return SweepResult(
        points=points,
        target=target,
        k=k,
        exact_ndcg=exact_ndcg,
        dataset=dataset.describe(),
        model=describe_model(encoder),
        grid=grid.to_dict(),
        manifest=build_manifest(
            command="index --sweep",
            data={"content_hash": dataset.content_hash, "source": dataset.source},
            wall_seconds=time.perf_counter() - started,
        ),
    )
