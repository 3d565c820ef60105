"""Calibration: which backend is fastest here among those that keep the vectors, measured once per model and
machine; what ``auto`` runs.

:func:`calibrate` runs every asked backend on the same check texts, interleaved, gates each with a
:class:`QualityGate` (cosine to float32; optionally nDCG@10 through an :class:`NdcgCheck` the caller passes, as
retrieval is a stage above this one), picks the fastest that passes and caches the :class:`Calibration` as JSON
under ``<cache>/calibration/``.

Example::

    >>> print(calibrate(load_encoder("minilm-l6")))
    minilm-l6 on Intel Xeon ..., 2 threads, flags amx_bf16,amx_int8,...
    backend        docs/s  × torch  mean cos  min cos  ndcg@10  passed         why not
    ...
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedlab.errors import ModelError
from embedlab.files import format_table, write_json_atomic
from embedlab.models.backends.registry import BACKENDS, get_backend, quick_backends
from embedlab.models.backends.runners import normalise
from embedlab.models.backends.texts import CHECK_TEXTS, CalibrationSample, calibration_texts
from embedlab.models.encoders import Vectors, cpu_threads

log = logging.getLogger(__name__)

CALIBRATION_SCHEMA = 1


class NdcgCheck(Protocol):
    """nDCG@10 (0–1) of an encoder on labelled data, for :func:`calibrate`'s optional retrieval gate.

    Retrieval is a stage above the models, so calibration takes the check as an argument instead of importing
    it: :class:`embedlab.retrieval.RetrievalNdcg` is the one the library provides. ``key`` names the data (a
    cached calibration measured on other data is not reused).
    """

    @property
    def key(self) -> str: ...

    def __call__(self, encoder: Any) -> float: ...


def machine_identity() -> dict[str, Any]:
    """What makes a speed measurement valid on another day: CPU, its flags that matter, threads, runtimes."""
    from embedlab.manifest import hardware

    info = hardware()
    versions = {}
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"cpu": info["cpu"], "cpu_flags": info["cpu_flags"], "threads": cpu_threads(), "versions": versions}


def machine_key() -> str:
    return hashlib.sha256(json.dumps(machine_identity(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class QualityGate:
    """When a backend's vectors are close enough to float32's: cosines on the calibration texts and, when
    evaluation data is given, nDCG@10 lost in points (×100).

    The mean-cosine bound is set from measurements here, not from theory: MiniLM on ``openvino-int8`` (mean
    cosine 0.9975 on the calibration texts) gained 0.6 nDCG@10 points on full SciFact, while all-mpnet-base-v2
    on it (0.9943) lost 1.35 on a 40-query SciFact sample; 0.995 keeps the first and drops the second.
    """

    min_mean_cosine: float = 0.995
    min_cosine: float = 0.97
    max_ndcg_drop: float = 0.5

    def failures(self, measurement: BackendMeasurement) -> list[str]:
        reasons = []
        if measurement.mean_cosine is not None and measurement.mean_cosine < self.min_mean_cosine:
            reasons.append(f"mean cosine {measurement.mean_cosine:.4f} < {self.min_mean_cosine}")
        if measurement.min_cosine is not None and measurement.min_cosine < self.min_cosine:
            reasons.append(f"min cosine {measurement.min_cosine:.4f} < {self.min_cosine}")
        if measurement.ndcg_drop is not None and measurement.ndcg_drop > self.max_ndcg_drop:
            reasons.append(f"nDCG@10 drop {measurement.ndcg_drop:.2f} > {self.max_ndcg_drop} points")
        return reasons


@dataclass
class BackendMeasurement:
    """One backend on the calibration texts. Speeds are the best of the interleaved rounds."""

    backend: str
    docs_per_second: float | None = None
    mean_cosine: float | None = None
    min_cosine: float | None = None
    ndcg_at_10: float | None = None
    ndcg_drop: float | None = None
    prepare_seconds: float | None = None
    passed: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Calibration:
    """What ``auto`` picks for one model on one machine, and the figures behind it."""

    model: str
    fingerprint: str
    machine: dict[str, Any]
    machine_key: str
    chosen: str
    texts: int
    rounds: int
    gate: QualityGate
    measurements: list[BackendMeasurement]
    manifest: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    gate_texts: str = "the bundled stdlib-docs check texts"
    """Which texts the gate judged the backends on, in words (the user's corpus sample, or the bundled texts)."""

    def measurement(self, backend: str) -> BackendMeasurement | None:
        return next((m for m in self.measurements if m.backend == backend), None)

    def __str__(self) -> str:
        reference = self.measurement("torch")
        base = reference.docs_per_second if reference and reference.docs_per_second else None
        rows = []
        for m in sorted(self.measurements, key=lambda m: -(m.docs_per_second or 0.0)):
            speed = m.docs_per_second
            rows.append(
                [
                    m.backend,
                    f"{speed:.1f}" if speed else "-",
                    f"{speed / base:.2f}" if speed and base else "-",
                    f"{m.mean_cosine:.4f}" if m.mean_cosine is not None else "-",
                    f"{m.min_cosine:.4f}" if m.min_cosine is not None else "-",
                    f"{100 * m.ndcg_at_10:.2f}" if m.ndcg_at_10 is not None else "-",
                    ("yes" if m.passed else "no") + ("  <- chosen" if m.backend == self.chosen else ""),
                    m.reason or "",
                ]
            )
        table = format_table(
            ["backend", "docs/s", "× torch", "mean cos", "min cos", "ndcg@10", "passed", "why not"], rows
        )
        where = f"{self.machine['cpu']}, {self.machine['threads']} threads, flags {','.join(self.machine['cpu_flags'])}"
        note = " (cached)" if self.cached else ""
        return f"{self.model} on {where}{note}\ngate judged on {self.texts} texts: {self.gate_texts}\n{table}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": CALIBRATION_SCHEMA,
            "kind": "calibration",
            "model": self.model,
            "fingerprint": self.fingerprint,
            "machine": self.machine,
            "machine_key": self.machine_key,
            "chosen": self.chosen,
            "texts": self.texts,
            "rounds": self.rounds,
            "gate": asdict(self.gate),
            "measurements": [m.to_dict() for m in self.measurements],
            "gate_texts": self.gate_texts,
            "manifest": self.manifest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            model=data["model"],
            fingerprint=data["fingerprint"],
            machine=data["machine"],
            machine_key=data["machine_key"],
            chosen=data["chosen"],
            texts=data["texts"],
            rounds=data["rounds"],
            gate=QualityGate(**data["gate"]),
            measurements=[BackendMeasurement(**m) for m in data["measurements"]],
            manifest=data.get("manifest", {}),
            gate_texts=data.get("gate_texts", Calibration.gate_texts),
        )


def calibration_path(fingerprint: str, *, root: Path | None = None, sample: str | None = None) -> Path:
    """Where the calibration of one model (by fingerprint) on this machine is kept; per corpus sample (its digest)
    when the gate used one."""
    from embedlab.paths import cache_root

    name = f"{fingerprint}-{machine_key()}" + (f"-{sample}" if sample else "")
    return (root or cache_root()) / "calibration" / f"{name}.json"


def _check_texts_key(sample: CalibrationSample | None) -> str:
    return CHECK_TEXTS if sample is None else f"corpus-sample-{sample.digest}"


def _usable_cached(
    path: Path,
    backends: Sequence[str],
    gate: QualityGate,
    texts: int,
    with_data: str | None,
    check_texts: str = CHECK_TEXTS,
) -> Calibration | None:
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    measured = {m.backend for m in calibration.measurements}
    same_data = calibration.manifest.get("eval_data") == with_data
    recipes = calibration.manifest.get("recipes", {})
    same_recipes = all(recipes.get(name) == BACKENDS[name].full_recipe for name in backends)
    if (
        calibration.manifest.get("check_texts") == check_texts
        and set(backends) <= measured
        and calibration.gate == gate
        and calibration.texts >= texts
        and same_data
        and same_recipes
    ):
        calibration.cached = True
        return calibration
    return None


def calibrate(
    encoder: Any,
    *,
    backends: Sequence[str] | None = None,
    texts: int = 32,
    rounds: int = 2,
    batch_size: int = 8,
    gate: QualityGate | None = None,
    ndcg: NdcgCheck | None = None,
    refresh: bool = False,
    root: Path | None = None,
    show_progress: bool | None = None,
) -> Calibration:
    """Measure each backend on ``texts`` real texts and pick the fastest that passes ``gate``; cached.

    ``encoder`` is a :class:`~embedlab.models.encoders.SentenceTransformerEncoder` (any backend: only its model
    is used). ``backends`` defaults to every available one. Speeds are the best of ``rounds`` rounds, the
    backends interleaved within each round. With ``ndcg`` (an :class:`NdcgCheck`, e.g.
    :class:`embedlab.retrieval.RetrievalNdcg` over labelled data), nDCG@10 is measured for every backend too (the
    whole corpus is encoded by each: slow) and gated by ``gate.max_ndcg_drop``. A cached result is
    reused when it covers the asked backends, built by the same recipes, with the same gate, data and check texts
    and at least as many of them; ``refresh`` measures again.

    The check texts are the encoder's :attr:`~embedlab.models.encoders.SentenceTransformerEncoder.calibration_sample`
    (a seeded sample of the user's corpus, at most ``texts`` of its check texts; the result is cached per sample)
    or, without one, ``texts`` bundled stdlib-docs texts. int8 backends are fitted to the other half, never to them.
    A progress bar shows on a terminal (``show_progress=None``), always (``True``) or never (``False``).
    """
    from embedlab.manifest import build_manifest
    from embedlab.models.encoders import SentenceTransformerEncoder

    if not isinstance(encoder, SentenceTransformerEncoder):
        raise ModelError(f"'{encoder.spec.name}' is not a sentence-transformers model: it has one runtime only")
    gate = gate or QualityGate()
    wanted = list(backends) if backends is not None else list(BACKENDS)
    for name in wanted:
        get_backend(name)
    if "torch" not in wanted:
        wanted.insert(0, "torch")  # the reference every other backend is compared with
    fingerprint = encoder.source_fingerprint
    corpus = encoder.calibration_sample
    path = calibration_path(fingerprint, root=root, sample=corpus.digest if corpus is not None else None)
    data_hash = ndcg.key if ndcg is not None else None
    check_key = _check_texts_key(corpus)
    if corpus is not None:
        texts = min(texts, len(corpus.check))
    if not refresh:
        cached = _usable_cached(path, wanted, gate, texts, data_hash, check_key)
        if cached is not None:
            return cached
    from tqdm.auto import tqdm

    started = time.perf_counter()
    sample = list(corpus.check[:texts]) if corpus is not None else list(calibration_texts(texts))
    gate_texts = corpus.describe() if corpus is not None else Calibration.gate_texts
    measurements = {name: BackendMeasurement(name) for name in wanted}
    encoders: dict[str, SentenceTransformerEncoder] = {}
    progress = tqdm(
        total=len(wanted),
        desc=f"calibrating backends for {encoder.spec.name} (once per model and machine"
        + (", on a sample of the corpus)" if corpus is not None else ")"),
        disable=None if show_progress is None else not show_progress,
    )
    for name in wanted:
        progress.update(1)
        reason = BACKENDS[name].unavailable()
        if reason is None and BACKENDS[name].runtime != "torch" and encoder.device != "cpu":
            reason = f"runs on the CPU only (the model is on {encoder.device})"
        if reason:
            measurements[name].reason = reason
            continue
        candidate = encoder.with_backend(name)
        t0 = time.perf_counter()
        try:
            candidate.prepare()
            candidate.encode(sample[:4], role="document", batch_size=batch_size)  # warm-up
        except Exception as exc:  # a backend that cannot build or run here is reported, never fatal
            if name == "torch":
                raise  # the reference itself: nothing to compare with
            measurements[name].reason = f"failed: {exc}".splitlines()[0][:200]
            log.warning("backend %s unusable for %s: %s", name, encoder.spec.name, exc)
            continue
        measurements[name].prepare_seconds = time.perf_counter() - t0
        encoders[name] = candidate
    progress.total = len(wanted) + len(encoders) * (max(1, rounds) + (1 if ndcg is not None else 0))
    progress.refresh()
    best: dict[str, float] = {}
    vectors: dict[str, Vectors] = {}
    for _ in range(max(1, rounds)):
        for name, candidate in encoders.items():
            t0 = time.perf_counter()
            vectors[name] = candidate.encode(sample, role="document", batch_size=batch_size)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
            progress.update(1)
    reference = vectors.get("torch")
    baseline_ndcg = None
    for name, candidate in encoders.items():
        m = measurements[name]
        m.docs_per_second = len(sample) / best[name] if best[name] > 0 else float("inf")
        if reference is not None:
            cosines = np.einsum("ij,ij->i", normalise(vectors[name]), normalise(reference))
            m.mean_cosine, m.min_cosine = float(cosines.mean()), float(cosines.min())
        if ndcg is not None:
            m.ndcg_at_10 = ndcg(candidate)
            progress.update(1)
            if name == "torch":
                baseline_ndcg = m.ndcg_at_10
    progress.close()
    for name in encoders:
        m = measurements[name]
        if baseline_ndcg is not None and m.ndcg_at_10 is not None:
            m.ndcg_drop = 100 * (baseline_ndcg - m.ndcg_at_10)
        failures = gate.failures(m)
        m.passed = not failures
        m.reason = "; ".join(failures) or None
    passing = [m for m in measurements.values() if m.passed and m.docs_per_second]
    chosen = max(passing, key=lambda m: m.docs_per_second or 0.0).backend if passing else "torch"
    calibration = Calibration(
        model=encoder.spec.name,
        fingerprint=fingerprint,
        machine=machine_identity(),
        machine_key=machine_key(),
        chosen=chosen,
        texts=len(sample),
        rounds=max(1, rounds),
        gate=gate,
        measurements=list(measurements.values()),
        manifest=build_manifest(
            command="calibrate",
            models=[encoder.spec.name],
            eval_data=data_hash,
            recipes={name: BACKENDS[name].full_recipe for name in wanted},
            check_texts=check_key,
            calibration_sample=corpus.to_dict() if corpus is not None else None,
            wall_seconds=0.0,
        ),
        gate_texts=gate_texts,
    )
    calibration.manifest["wall_seconds"] = time.perf_counter() - started
    write_json_atomic(path, calibration.to_dict())
    return calibration


INT8_CORPUS_TEXTS = 2000
"""From this many distinct corpus texts up, ``auto`` also builds and measures the int8 backends (fitted to the
corpus sample). Building them takes minutes for a base-size model (NNCF ran 80–110 s per setting on
all-mpnet-base-v2), about what float32 PyTorch takes to encode a corpus of this size with it; below it the build
would cost more than it can save."""


def auto_backend(encoder: Any) -> str:
    """The backend ``auto`` runs ``encoder`` on, from a cached calibration when there is one.

    Without a corpus (:func:`~embedlab.models.backends.using_corpus`): a quick calibration on the bundled texts,
    no int8 builds. With one: every backend gated on the corpus sample's check texts, int8 (fitted to the sample)
    included once the corpus has :data:`INT8_CORPUS_TEXTS` texts; cached per model, machine and sample.
    """
    sample = getattr(encoder, "calibration_sample", None)
    if sample is None:
        return calibrate(encoder, backends=quick_backends(), texts=16).chosen
    wanted = list(BACKENDS) if sample.corpus_texts >= INT8_CORPUS_TEXTS else list(quick_backends())
    return calibrate(encoder, backends=wanted, texts=len(sample.check)).chosen
