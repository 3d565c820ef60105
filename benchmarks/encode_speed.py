"""Encoding speed and retrieval quality of every backend, side by side, against sentence-transformers' default.

For each model, every arm encodes the same SciFact abstracts in the same run: ``st-default`` is plain
``SentenceTransformer(folder).encode(texts, batch_size=32)`` (PyTorch, float32: the reference), then each embedlab
backend that runs here (``embedlab.models.backends``). Arms are interleaved chunk by chunk (the order rotating),
so a machine shared with other work slows them alike; each arm's time is the sum over its chunks. Artifacts
(ONNX export, quantisation, OpenVINO IR) are built before timing starts; their build time is reported apart.

Figures: documents per second and its ratio to ``st-default``, and the median and quartiles of that ratio over
the rounds (robust to a round the machine spent busy with other work); with the full corpus encoded, nDCG@10 on
the SciFact test queries (exact search) and the points lost against ``st-default``; and the mean/min cosine of
each arm's vectors to ``st-default``'s.

``--docs N`` times N documents (a fixed, seeded sample; all 5,183 by default). nDCG@10 needs the whole corpus:
with ``--docs`` below it, it is left out unless ``--ndcg``, which encodes the rest untimed.

``--state DIR`` keeps every finished round of chunks (vectors and seconds) in ``DIR``; the same command run again
resumes there (all-mpnet-base-v2's seven arms over the full corpus take about 3.5 hours on 2 cores). A resumed
run must be on the same machine (CPU, flags, threads), with the same arms and documents.

The embedlab arms run as a command with the user's corpus runs them: inside ``using_corpus`` over the SciFact
corpus, so ``auto`` is calibrated and gated on a seeded sample of it and int8 is fitted to that sample (not to the
bundled texts); ``--no-corpus`` runs them as before, on the bundled texts. ``auto`` is an arm too (named
``auto→<its choice>``); its calibration (every backend, int8 built) happens before timing, cached per model ×
machine × sample, and its seconds are reported with the builds.

``--compare-rerun`` also times ``embedlab compare`` on SciFact twice with one fresh embedding cache: the first run
encodes, the second reads the cached vectors.

Usage::

    python benchmarks/encode_speed.py --models minilm-l6 --out runs/encode-speed.json
    python benchmarks/encode_speed.py --models mpnet-base --docs 500
    python benchmarks/encode_speed.py --models mpnet-base --chunk 64 --state runs/encode-state --out runs/mpnet.json
    python benchmarks/encode_speed.py --models minilm-l6 --docs 0 --compare-rerun   # only the compare re-run
    python benchmarks/encode_speed.py --backends auto,openvino-int8,openvino-bf16 --out runs/encode-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from embedlab.data.loaders import load_beir
from embedlab.evaluate.metrics import evaluate_run
from embedlab.files import format_table, write_json_atomic
from embedlab.manifest import build_manifest, hardware
from embedlab.models.backends import AUTO, BACKENDS, using_corpus
from embedlab.models.encoders import SentenceTransformerEncoder
from embedlab.models.loading import load_encoder
from embedlab.retrieval import exact_top_k

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
REFERENCE = "st-default"


def ndcg_at_10(dataset: Any, documents: np.ndarray, queries: np.ndarray) -> float:
    _, index = exact_top_k(queries, documents, 10)
    doc_ids = [d.id for d in dataset.corpus]
    run = {
        q.id: {doc_ids[j]: float(10 - r) for r, j in enumerate(row)}
        for q, row in zip(dataset.queries, index, strict=True)
    }
    return float(evaluate_run(run, dataset.qrels, ["ndcg@10"]).means["ndcg@10"])


def arms_for(
    model: str, backends: list[str], batch_size: int, corpus: list[str]
) -> tuple[dict[str, Callable[..., np.ndarray]], dict]:
    """Each arm: ``encode(texts, role)`` → vectors. Also the seconds each arm took to build its artifact (for
    ``auto``: to calibrate). The embedlab encoders keep the sample of ``corpus`` (none if it is empty)."""
    with using_corpus(corpus):
        return _arms_for(model, backends, batch_size)


def _arms_for(model: str, backends: list[str], batch_size: int) -> tuple[dict[str, Callable[..., np.ndarray]], dict]:
    from sentence_transformers import SentenceTransformer

    base = load_encoder(model, backend="torch")
    assert isinstance(base, SentenceTransformerEncoder)
    default = SentenceTransformer(base.source, device="cpu")
    prefix = {"query": base.spec.query_prefix, "document": base.spec.document_prefix}

    def st_default(texts: list[str], role: str) -> np.ndarray:
        vectors = default.encode(texts, batch_size=batch_size, prompt=prefix[role] or None, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    arms: dict[str, Callable[..., np.ndarray]] = {REFERENCE: st_default}
    prepared: dict[str, Any] = {}
    sample = base.calibration_sample
    print(f"  int8 fitted to and auto judged on: {sample.describe() if sample else 'the bundled texts'}", flush=True)
    chosen = None
    for name in sorted(backends, key=lambda n: n != AUTO):  # auto first: an arm it chose is not timed twice
        if name == chosen:
            print(f"  {name}: the same as auto's choice, timed once (as auto→{name})", flush=True)
            continue
        reason = BACKENDS[name].unavailable() if name != AUTO else None
        if reason:
            print(f"  {name}: skipped ({reason})", flush=True)
            prepared[name] = f"unavailable: {reason}"
            continue
        encoder = base.with_backend(name)
        t0 = time.perf_counter()
        encoder.prepare()
        encoder.encode(["warm-up text"], role="document")
        if name == AUTO:
            chosen = encoder.resolved_backend
        arm = f"auto→{chosen}" if name == AUTO else name
        prepared[arm] = time.perf_counter() - t0
        arms[arm] = lambda texts, role, e=encoder: e.encode(texts, role=role, batch_size=batch_size)
    return arms, prepared


class ChunkState:
    """Each finished round of chunks (every arm's vectors and seconds) kept on disk, so that a run of hours can
    be stopped and resumed. A resumed run must be on the same machine, arms and documents (checked)."""

    def __init__(self, folder: Path, names: list[str], machine: dict[str, Any], timed: list[int], chunk: int):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        identity = {"arms": names, "machine": machine, "timed": timed, "chunk": chunk}
        path = folder / "identity.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != identity:
                differ = sorted(k for k in identity if stored.get(k) != identity[k])
                sys.exit(f"{path}: stored chunks are from another {', '.join(differ)}; use another --state folder")
        else:
            write_json_atomic(path, identity)

    def load(self, number: int) -> tuple[dict[str, float], dict[str, np.ndarray]] | None:
        path = self.folder / f"chunk-{number:05d}.npz"
        if not path.exists():
            return None
        with np.load(path) as data:
            took = json.loads(str(data["seconds"]))
            return took, {name: data[f"v-{name}"] for name in took}

    def save(self, number: int, took: dict[str, float], outs: dict[str, np.ndarray]) -> None:
        arrays: dict[str, Any] = {f"v-{name}": vectors for name, vectors in outs.items()}
        arrays.update(seconds=np.array(json.dumps(took)), finished=np.array(time.time()))
        tmp = self.folder / f".chunk-{number:05d}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.folder / f"chunk-{number:05d}.npz")


def bench_model(model: str, dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n== {model}", flush=True)
    texts = [d.full_text for d in dataset.corpus]
    arms, prepared = arms_for(model, args.backends, args.batch_size, [] if args.no_corpus else texts)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    timed = sorted(order[: args.docs]) if args.docs < len(texts) else order
    untimed = sorted(set(range(len(texts))) - set(timed)) if args.ndcg else []
    vectors = {name: np.zeros((len(texts), 0), dtype=np.float32) for name in arms}
    rounds: list[dict[str, float]] = []  # each round's seconds per arm
    chunks = [timed[i : i + args.chunk] for i in range(0, len(timed), args.chunk)]
    names = list(arms)
    state = ChunkState(args.state / model, names, hardware(), timed, args.chunk) if args.state else None
    for number, chunk in enumerate(chunks):
        stored = state.load(number) if state else None
        if stored is None:
            rotated = names[number % len(names) :] + names[: number % len(names)]
            took, outs = {}, {}
            for name in rotated:
                t0 = time.perf_counter()
                outs[name] = arms[name]([texts[i] for i in chunk], "document")
                took[name] = time.perf_counter() - t0
            if state:
                state.save(number, took, outs)
        else:
            took, outs = stored
        rounds.append(took)
        for name in names:
            if vectors[name].shape[1] == 0:
                vectors[name] = np.zeros((len(texts), outs[name].shape[1]), dtype=np.float32)
            vectors[name][chunk] = outs[name]
        done = sum(len(c) for c in chunks[: number + 1])
        seconds = {n: sum(r[n] for r in rounds) for n in names}
        speeds = ", ".join(f"{n} {done / seconds[n]:.1f}" for n in names)
        print(f"  {done}/{len(timed)} docs{' (stored)' if stored else ''} — docs/s: {speeds}", flush=True)
    for name in names:
        if untimed:
            vectors[name][untimed] = arms[name]([texts[i] for i in untimed], "document")
    with_ndcg = len(timed) + len(untimed) == len(texts)
    reference = vectors[REFERENCE][timed]
    rows: list[list[str]] = []
    results: dict[str, dict[str, Any]] = {}
    base_speed = len(timed) / seconds[REFERENCE]
    base_ndcg = None
    for name in names:
        speed = len(timed) / seconds[name]
        # Every arm of a round ran on the same documents within minutes of each other, so the per-round ratio
        # is fair even when the machine was busy for a while; its median is robust to such rounds.
        low, median, high = np.quantile([r[REFERENCE] / r[name] for r in rounds], [0.25, 0.5, 0.75])
        mine = vectors[name][timed]
        cosines = np.einsum("ij,ij->i", mine, reference) / (
            np.linalg.norm(mine, axis=1) * np.linalg.norm(reference, axis=1)
        )
        ndcg = None
        if with_ndcg:
            queries = arms[name]([q.text for q in dataset.queries], "query")
            ndcg = ndcg_at_10(dataset, vectors[name], queries)
            base_ndcg = ndcg if name == REFERENCE else base_ndcg
        results[name] = {
            "docs_per_second": speed,
            "ratio_to_default": speed / base_speed,
            "round_ratio_median": float(median),
            "round_ratio_quartiles": [float(low), float(high)],
            "rounds": len(rounds),
            "ndcg@10": ndcg,
            "mean_cosine_to_default": float(cosines.mean()),
            "min_cosine_to_default": float(cosines.min()),
            "prepare_seconds": prepared.get(name),
        }
    for name, r in results.items():
        drop = 100 * (base_ndcg - r["ndcg@10"]) if base_ndcg is not None and r["ndcg@10"] is not None else None
        r["ndcg_drop_points"] = drop
        rows.append(
            [
                name,
                f"{r['docs_per_second']:.1f}",
                f"{r['ratio_to_default']:.2f}",
                "{:.2f} ({:.2f}–{:.2f})".format(r["round_ratio_median"], *r["round_ratio_quartiles"]),
                f"{100 * r['ndcg@10']:.2f}" if r["ndcg@10"] is not None else "-",
                f"{drop:+.2f}" if drop is not None else "-",
                f"{r['mean_cosine_to_default']:.4f}",
                f"{r['min_cosine_to_default']:.4f}",
                f"{r['prepare_seconds']:.0f}" if isinstance(r["prepare_seconds"], float) else "-",
            ]
        )
    print(f"\n{model}: {len(timed)} SciFact abstracts timed, batch {args.batch_size}")
    print(
        format_table(
            [
                "arm",
                "docs/s",
                "× default",
                "× per round: median (IQR)",
                "ndcg@10",
                "points lost",
                "mean cos",
                "min cos",
                "build s",
            ],
            rows,
        ),
        flush=True,
    )
    return {
        "model": model,
        "docs_timed": len(timed),
        "ndcg_on_full_corpus": with_ndcg,
        "fitted_on": "bundled texts" if args.no_corpus else "a seeded sample of the SciFact corpus",
        "arms": results,
    }


def compare_rerun(model: str, backend: str) -> dict[str, Any]:
    """Wall time of ``embedlab compare`` on SciFact, first with an empty embedding cache, then again."""
    embedlab = Path(sys.executable).with_name("embedlab")
    with tempfile.TemporaryDirectory(prefix="encode-speed-") as tmp:
        command = [
            str(embedlab),
            "compare",
            "--data",
            str(DATA),
            "--models",
            model,
            "--backend",
            backend,
            "--k",
            "10,100",
            "--cache",
            str(Path(tmp) / "cache"),
            "--out",
            str(Path(tmp) / "out"),
        ]
        times = []
        for attempt in ("first", "second"):
            t0 = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
            print(f"  embedlab compare ({attempt} run, {model}, --backend {backend}): {times[-1]:.1f} s", flush=True)
    print(f"  second run {times[0] / times[1]:.1f}× faster than the first")
    return {"model": model, "backend": backend, "first_seconds": times[0], "second_seconds": times[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="minilm-l6,mpnet-base")
    parser.add_argument("--backends", default=",".join(b for b in BACKENDS if b != "torch"))
    parser.add_argument("--docs", type=int, default=10**9, help="Documents timed (default: all; 0: none).")
    parser.add_argument("--ndcg", action="store_true", help="With --docs below the corpus: encode the rest too.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=256, help="Documents per interleaved turn.")
    parser.add_argument("--compare-rerun", action="store_true", help="Also time `embedlab compare` twice.")
    parser.add_argument(
        "--no-corpus", action="store_true", help="Fit int8 and judge auto on the bundled texts, not on SciFact."
    )
    parser.add_argument("--compare-backend", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="Write every figure as JSON here.")
    parser.add_argument(
        "--state", type=Path, default=None, help="Keep finished chunks here; a re-run with it resumes (long runs)."
    )
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]

    started = time.perf_counter()
    info = hardware()
    import torch

    print(
        f"CPU: {info['cpu']}; flags: {', '.join(info['cpu_flags'])}; threads: {info['threads']} "
        f"(torch {torch.get_num_threads()}); load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    dataset = load_beir(DATA, split="test")
    models = [m for m in args.models.split(",") if m]
    results = [bench_model(model, dataset, args) for model in models] if args.docs > 0 else []
    rerun = [compare_rerun(models[0], args.compare_backend)] if args.compare_rerun else []
    print(f"load average {os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - started:.0f} s in all")
    if args.out:
        write_json_atomic(
            args.out,
            {
                "kind": "encode_speed",
                "results": results,
                "compare_rerun": rerun,
                "load_average_end": os.getloadavg()[0],
                "manifest": build_manifest(
                    command="encode_speed",
                    models=models,
                    data={"content_hash": dataset.content_hash, "source": dataset.source},
                    wall_seconds=time.perf_counter() - started,
                ),
            },
        )


if __name__ == "__main__":
    main()
