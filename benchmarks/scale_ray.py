"""The ``ray`` engine against the ``local`` one on this machine, and the per-core rates behind docs/scale.md.

**Data.** At least 100,000 distinct real passages: the 5,183 SciFact abstracts split into sentences (a split after
``.``, ``!`` or ``?`` followed by a space; sentences under 20 characters dropped), then repeated, each repeat with
the suffix `` (copy N)`` so that every text is distinct (the cache and the shards key texts by content), until
``--docs`` passages. The sentences are what is encoded; the abstracts' own rate is measured apart (below).

**Arms.** Both arms run :func:`embedlab.scale.embed_dataset` on the same passages, model and backend (``auto``:
resolved once before timing, so both run what auto picks here), writing Parquet shards of ``--shard-size`` into a
temporary folder, with no embedding cache (so neither reads vectors the other wrote):

- ``local``: :class:`~embedlab.scale.engines.LocalEngine`, this process;
- ``ray``: :class:`~embedlab.scale.ray_engine.RayEngine` with a local Ray on this machine (one node, its CPUs;
  one actor per node by default). Ray's start-up is timed apart; the job's seconds include the actor's model load,
  as the local arm's include its own.

The passages are cut into ``--rounds`` chunks (default 2) and the arms alternate which runs first on each chunk,
so that other work on a shared machine slows both alike; each arm's time is its sum over the chunks. Each chunk is
one ``embed`` run, so the ray arm pays ``--rounds`` actor-pool starts and model loads where a user's single
``embedlab embed --engine ray`` run pays one per model: with more rounds the ratio understates Ray (each start
costs about 7 s here: the actor's worker process, its imports and the model load, and the last shard's trip back).

Figures: texts per second of each, the ratio ray/local (the goal: ≥ 0.8 on one 2-core node), and the largest
difference between the two arms' vectors. **Plan rates**: each ``--plan-models`` model encodes ``--plan-docs``
SciFact abstracts (title and text, as ``compare`` encodes them) on the local engine with ``auto``, after an
untimed warm-up; abstracts per second per core feed the 10M/100M plan (core-hours, wall time on N nodes, and the
Milvus memory of the vectors at float32, int8 and binary), printed as Markdown and saved in ``--out``.

Run timed benchmarks alone: ``flock /tmp/embedlab-speed.lock python benchmarks/scale_ray.py``.

Usage::

    flock /tmp/embedlab-speed.lock python benchmarks/scale_ray.py --docs 100000 --out runs/scale-ray.json
    python benchmarks/scale_ray.py --docs 2000 --plan-docs 50     # a quick check of the script itself
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from embedlab.data.dataset import Document, RetrievalDataset
from embedlab.data.loaders import load_beir
from embedlab.files import format_table, write_json_atomic
from embedlab.manifest import build_manifest, hardware
from embedlab.models.backends import using_backend
from embedlab.models.encoders import cpu_threads
from embedlab.models.loading import load_encoder
from embedlab.scale.engines import LocalEngine
from embedlab.scale.job import embed_dataset
from embedlab.scale.ray_engine import RayEngine
from embedlab.scale.shards import read_vectors
from embedlab.scale.worker import encoder_backend

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_CHARS = 20
PLAN_SIZES = (10_000_000, 100_000_000)
PLAN_NODES = (1, 10, 100)
HNSW_M = 32


def passages(corpus: tuple[Document, ...], count: int) -> tuple[list[Document], dict[str, Any]]:
    """``count`` distinct passages: the corpus's sentences, repeated with a ``(copy N)`` suffix."""
    sentences = [s.strip() for d in corpus for s in SENTENCE_END.split(d.text) if len(s.strip()) >= MIN_CHARS]
    out = []
    for i in range(count):
        copy, position = divmod(i, len(sentences))
        text = sentences[position] if copy == 0 else f"{sentences[position]} (copy {copy})"
        out.append(Document(id=f"p{i}", text=text))
    how = {
        "source": "SciFact corpus (5,183 abstracts), split into sentences",
        "split": f"after . ! or ? and a space; sentences under {MIN_CHARS} characters dropped",
        "sentences": len(sentences),
        "copies": math.ceil(count / len(sentences)),
        "suffix": "' (copy N)' on every repeat, so every text is distinct",
        "passages": count,
        "mean_characters": float(np.mean([len(d.text) for d in out])),
    }
    return out, how


def time_arms(
    docs: list[Document], model: str, backend: str, work: Path, shard_size: int, actors: int | None, rounds: int
) -> dict[str, Any]:
    """Both arms over the same passages in ``rounds`` chunks, alternating which goes first, so that other work on
    a shared machine slows them alike; each arm's seconds are its sum over the chunks. Each chunk is one
    :func:`embed_dataset` call (one model load per call, one actor-pool start per call for ray)."""
    engine = RayEngine(address=None, actors=actors)
    start = time.perf_counter()
    engine.pool()  # starts the local Ray
    startup = time.perf_counter() - start
    seconds = {"local": 0.0, "ray": 0.0}
    size = math.ceil(len(docs) / rounds)
    try:
        for number in range(rounds):
            chunk = RetrievalDataset(
                name=f"scifact-passages-{number}",
                corpus=tuple(docs[number * size : (number + 1) * size]),
                queries=(),
                qrels={},
            )
            order = ("local", "ray") if number % 2 == 0 else ("ray", "local")
            for arm in order:
                tick = time.perf_counter()
                embed_dataset(
                    chunk,
                    [model],
                    out=work / arm / f"round-{number}",
                    engine=LocalEngine() if arm == "local" else engine,
                    backend=backend,
                    shard_size=shard_size,
                    roles=("document",),
                    show_progress=True,
                )
                seconds[arm] += time.perf_counter() - tick
        described = engine.describe()
    finally:
        engine.close()
    return {
        "local_seconds": seconds["local"],
        "ray_seconds": seconds["ray"],
        "startup_seconds": startup,
        "engine": described,
    }


def read_arm(folder: Path, model: str, rounds: int) -> tuple[list[str], np.ndarray]:
    ids: list[str] = []
    parts = []
    for number in range(rounds):
        some, vectors = read_vectors(folder / f"round-{number}", model=model, role="document")
        ids.extend(some)
        parts.append(vectors)
    return ids, np.concatenate(parts)


def plan_rate(model: str, backend: str, abstracts: list[str]) -> dict[str, Any]:
    """Abstracts per second on the local engine's path (one model load, untimed warm-up first)."""
    encoder = load_encoder(model, backend=backend)
    encoder.encode(abstracts[:16], role="document")
    start = time.perf_counter()
    encoder.encode(abstracts, role="document")
    seconds = time.perf_counter() - start
    rate = len(abstracts) / seconds
    return {
        "model": model,
        "backend": encoder_backend(encoder),
        "dim": encoder.dim,
        "abstracts": len(abstracts),
        "seconds": seconds,
        "per_second": rate,
        "per_core_second": rate / cpu_threads(),
    }


def milvus_bytes(documents: int, dim: int) -> dict[str, float]:
    """Memory of the vectors in Milvus, GiB: each precision's vectors plus the 8-byte primary key per document;
    ``hnsw_graph`` is what an HNSW index adds whatever the precision (2·M level-0 links of 4 bytes each). A plan
    on paper, not a measurement."""
    per_vector = {"float32": 4 * dim, "int8": dim, "binary": dim / 8}
    memory = {name: documents * (size + 8) / 2**30 for name, size in per_vector.items()}
    memory["hnsw_graph"] = documents * 2 * HNSW_M * 4 / 2**30
    return memory


def plan(rates: list[dict[str, Any]], efficiency: float, node_cores: int) -> tuple[list[list[str]], list[dict]]:
    rows, records = [], []
    for rate in rates:
        for size in PLAN_SIZES:
            core_hours = size / rate["per_core_second"] / 3600
            walls = {n: core_hours / (n * node_cores * efficiency) for n in PLAN_NODES}
            memory = milvus_bytes(size, rate["dim"])
            records.append(
                {"model": rate["model"], "documents": size, "core_hours": core_hours, "wall_hours": walls, **memory}
            )
            rows.append(
                [
                    rate["model"],
                    f"{size / 1e6:.0f}M",
                    f"{core_hours:,.0f}",
                    *(f"{walls[n]:,.1f}" for n in PLAN_NODES),
                    *(f"{memory[k]:,.1f}" for k in ("float32", "int8", "binary", "hnsw_graph")),
                ]
            )
    return rows, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000, help="passages to encode per engine (≥ 100,000)")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--ray-actors", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2, help="chunks, the arms alternating which runs first")
    parser.add_argument("--plan-models", default="minilm-l6,mpnet-base")
    parser.add_argument("--plan-docs", type=int, default=400, help="SciFact abstracts timed per plan model")
    parser.add_argument("--out", type=Path, default=Path("runs/scale-ray.json"))
    args = parser.parse_args()

    scifact = load_beir(DATA, split="test")
    docs, how = passages(scifact.corpus, args.docs)
    with using_backend(args.backend):
        warm = load_encoder(args.model)
        warm.encode([d.text for d in docs[:64]], role="document")  # resolves auto (a cached calibration) untimed
        resolved = encoder_backend(warm)
    del warm
    print(f"{how['passages']:,} passages from {how['sentences']:,} sentences; {args.model} on {resolved}")

    with tempfile.TemporaryDirectory(prefix="scale-ray-") as folder:
        work = Path(folder)
        timed = time_arms(docs, args.model, resolved, work, args.shard_size, args.ray_actors, args.rounds)
        local_ids, local_vectors = read_arm(work / "local", args.model, args.rounds)
        ray_ids, ray_vectors = read_arm(work / "ray", args.model, args.rounds)
    assert local_ids == ray_ids == [d.id for d in docs]
    cosines = np.sum(local_vectors * ray_vectors, axis=1)
    local_seconds = timed["local_seconds"]
    ray = {"seconds": timed["ray_seconds"], "startup_seconds": timed["startup_seconds"], "engine": timed["engine"]}
    local_rate, ray_rate = args.docs / local_seconds, args.docs / ray["seconds"]
    ratio = ray_rate / local_rate
    rows = [
        ["local", f"{local_seconds:.1f}", "-", f"{local_rate:.1f}", f"{local_rate / cpu_threads():.1f}", "1.00"],
        [
            f"ray ({ray['engine']['actors']} actor)",
            f"{ray['seconds']:.1f}",
            f"{ray['startup_seconds']:.1f}",
            f"{ray_rate:.1f}",
            f"{ray_rate / cpu_threads():.1f}",
            f"{ratio:.2f}",
        ],
    ]
    machine = hardware()
    print(f"\n{machine['cpu']}, {machine['threads']} threads, flags {','.join(machine['cpu_flags'])}")
    print(format_table(["engine", "seconds", "ray start s", "texts/s", "texts/s/core", "× local"], rows))
    print(
        f"vectors: max |local - ray| {float(np.abs(local_vectors - ray_vectors).max()):.2e}, "
        f"min cosine {float(cosines.min()):.6f}, mean cosine {float(cosines.mean()):.6f}"
    )

    abstracts = [d.full_text for d in scifact.corpus[: args.plan_docs]]
    rates = []
    for model in [m.strip() for m in args.plan_models.split(",") if m.strip()]:
        rates.append(plan_rate(model, args.backend, abstracts))
        r = rates[-1]
        print(f"{model} on {r['backend']}: {r['per_second']:.1f} abstracts/s ({r['per_core_second']:.1f} per core)")
    plan_rows, records = plan(rates, efficiency=min(1.0, ratio), node_cores=cpu_threads())
    headers = ["model", "docs", "core-hours", *(f"wall h, {n} nodes" for n in PLAN_NODES)]
    headers += ["Milvus GiB f32", "int8", "binary", "+HNSW graph"]
    print(format_table(headers, plan_rows))

    write_json_atomic(
        args.out,
        {
            "data": how,
            "model": args.model,
            "backend": resolved,
            "shard_size": args.shard_size,
            "rounds": args.rounds,
            "local": {"seconds": local_seconds, "per_second": local_rate},
            "ray": {**ray, "per_second": ray_rate},
            "ratio_ray_to_local": ratio,
            "vectors": {
                "max_abs_difference": float(np.abs(local_vectors - ray_vectors).max()),
                "min_cosine": float(cosines.min()),
                "mean_cosine": float(cosines.mean()),
            },
            "plan_rates": rates,
            "plan": records,
            "plan_assumptions": {
                "node_cores": cpu_threads(),
                "efficiency": min(1.0, ratio),
                "hnsw_m": HNSW_M,
                "milvus_bytes_per_document": "dim·b (b = 4 float32, 1 int8, 1/8 binary) + 8 (id); HNSW adds 2·M·4",
            },
            "manifest": build_manifest(command="benchmarks/scale_ray.py"),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
