"""Exact top-k over a large corpus against one BLAS matrix-product pass over it (the floor for exact search).

Builds ``--docs`` × ``--dim`` random unit vectors (float32; 1M × 384 is 1.5 GB) and ``--queries`` queries, then
times, best of ``--rounds`` and interleaved:

* ``blas pass``: the same chunked products ``queries @ documents.T`` that top-k does, results discarded;
* ``exact_top_k``: :func:`embedlab.retrieval.exact_top_k` at each ``--k``.

and checks the top-k of the first queries against a full sort. The goal is exact_top_k ≤ 2 × the BLAS pass.

Usage::

    python benchmarks/topk_speed.py                          # 1M × 384, 1,000 queries, k = 10 and 100
    python benchmarks/topk_speed.py --docs 200000 --queries 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from embedlab.files import format_table, write_json_atomic
from embedlab.manifest import build_manifest
from embedlab.retrieval import exact_top_k


def unit_vectors(rng: np.random.Generator, n: int, dim: int, chunk: int = 131072) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def blas_pass(queries: np.ndarray, documents: np.ndarray, query_chunk: int, doc_chunk: int) -> None:
    buffer = np.empty((min(query_chunk, len(queries)), min(doc_chunk, len(documents))), dtype=np.float32)
    for q0 in range(0, len(queries), query_chunk):
        block = queries[q0 : q0 + query_chunk]
        for d0 in range(0, len(documents), doc_chunk):
            chunk = documents[d0 : d0 + doc_chunk]
            np.matmul(block, chunk.T, out=buffer[: len(block), : len(chunk)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", default="10,100")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--query-chunk", type=int, default=1024)
    parser.add_argument("--doc-chunk", type=int, default=65536)
    parser.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here.")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    documents = unit_vectors(rng, args.docs, args.dim)
    queries = unit_vectors(rng, args.queries, args.dim)
    size = f"{documents.nbytes / 1e9:.2f} GB"
    print(f"{args.docs:,} × {args.dim} documents ({size}), {args.queries:,} queries", flush=True)
    ks = [int(k) for k in args.k.split(",")]
    chunks = {"query_chunk": args.query_chunk, "doc_chunk": args.doc_chunk}
    arms = {"blas pass": lambda: blas_pass(queries, documents, args.query_chunk, args.doc_chunk)}
    for k in ks:
        arms[f"exact_top_k k={k}"] = lambda k=k: exact_top_k(queries, documents, k, **chunks)
    best = {name: float("inf") for name in arms}
    for _ in range(args.rounds):
        for name, run in arms.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
            print(f"  {name}: {best[name]:.2f} s (best so far)", flush=True)

    check = queries[:20]
    for k in ks:
        _, index = exact_top_k(check, documents, k, **chunks)
        full = check @ documents.T
        expected = np.argsort(-full, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(index, expected)
    blas = best["blas pass"]
    rows = [[name, f"{seconds:.2f}", f"{seconds / blas:.2f}"] for name, seconds in best.items()]
    print(format_table(["arm", "seconds", "× blas pass"], rows))
    memory_mb = min(args.query_chunk, args.queries) * min(args.doc_chunk, args.docs) * 4 / 1e6
    print(f"score buffer: {memory_mb:.0f} MB; top-k checked against a full sort on 20 queries: identical")
    if args.out:
        payload = {
            "kind": "topk_speed",
            "docs": args.docs,
            "dim": args.dim,
            "queries": args.queries,
            "seconds": best,
            "ratio_to_blas": {name: s / blas for name, s in best.items()},
            "score_buffer_mb": memory_mb,
            "manifest": build_manifest(command="topk_speed", wall_seconds=time.perf_counter() - started, seed=0),
        }
        write_json_atomic(args.out, json.loads(json.dumps(payload)))


if __name__ == "__main__":
    main()
