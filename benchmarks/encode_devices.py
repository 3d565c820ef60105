"""Encoding on every device here (CPU, and CUDA when a GPU is present): documents per second and agreement.

For each device and each PyTorch backend (``torch``: float32; ``torch-bf16``: bfloat16 matrix work), the same
SciFact abstracts are encoded through ``embedlab.models.loading.load_encoder(..., device=...)`` — the library path
``select``/``compare`` use — and the benchmark prints documents per second (after one warm-up batch; CUDA
synchronised before the clock stops) and the least and mean cosine of each arm's vectors to CPU float32's.
The processor (name and SIMD flags) and the GPU are printed beside the figures.

It is how a GPU machine is checked: on a CPU-only machine only the CPU rows run. It imports nothing of
embedlab beyond the model loader, so it runs where only torch and sentence-transformers are installed.

Usage::

    python benchmarks/encode_devices.py --docs 1000
    python benchmarks/encode_devices.py --corpus path/to/corpus.jsonl --model minilm-l6 --out runs/devices.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from embedlab.files import write_json_atomic
from embedlab.models.loading import load_encoder

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"
BACKENDS = ("torch", "torch-bf16")


def cpu_description() -> str:
    """The processor's name and the SIMD flags that decide CPU speed (AVX-512, VNNI, bfloat16, AMX)."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return f"{name} ({os.cpu_count()} threads; {', '.join(f for f in wanted if f in flags) or 'no AVX-512'})"


def encode_timed(model: str, device: str, backend: str, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    import torch

    encoder = load_encoder(model, device=device, backend=backend)
    encoder.encode(texts[:batch_size], role="document", batch_size=batch_size)  # warm-up: kernels, allocations
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    vectors = encoder.encode(texts, role="document", batch_size=batch_size)
    if device == "cuda":
        torch.cuda.synchronize()
    return np.asarray(vectors, dtype=np.float32), time.perf_counter() - start


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="A BEIR corpus.jsonl (default: SciFact).")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--docs", type=int, default=1000, help="Documents encoded (the first N).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="Write every figure as JSON here.")
    args = parser.parse_args()

    with args.corpus.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(args.docs), handle, strict=False)]
    texts = [f"{r.get('title', '')}. {r['text']}".strip(". ") for r in rows]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"GPU: {gpu or 'none'}; {len(texts)} documents from {args.corpus}, batch {args.batch_size}\n")

    reference, _ = encode_timed(args.model, "cpu", "torch", texts, args.batch_size)
    results: list[dict[str, Any]] = []
    for device in devices:
        for backend in BACKENDS:
            vectors, seconds = encode_timed(args.model, device, backend, texts, args.batch_size)
            cosines = np.einsum("ij,ij->i", vectors, reference)
            results.append(
                {
                    "device": device,
                    "backend": backend,
                    "docs_per_second": len(texts) / seconds,
                    "min_cosine": float(cosines.min()),
                    "mean_cosine": float(cosines.mean()),
                }
            )
            row = results[-1]
            print(
                f"{device:5} {backend:11} {row['docs_per_second']:9.1f} docs/s   cosine to CPU float32: "
                f"min {row['min_cosine']:.6f}, mean {row['mean_cosine']:.6f}",
                flush=True,
            )
    if args.out:
        payload = {"cpu": cpu_description(), "gpu": gpu, "torch": torch.__version__, "model": args.model}
        write_json_atomic(args.out, {**payload, "docs": len(texts), "results": results})


if __name__ == "__main__":
    main()
