"""Served bm25 and hybrid results against `compare`/`select`'s, on SciFact, in FAISS and in Milvus Lite.

The reference is what ``embedlab select`` measures: ``compare``'s ``bm25`` run and the dense model's exact run
(top 100 each), fused by :func:`embedlab.select.fuse_results` (reciprocal rank fusion, ``RRF_K``, depth 100). Each
system is then deployed as a user would: ``embedlab index --model bm25|hybrid:MODEL --store faiss|milvus`` (flat
index) in a child process, ``embedlab serve`` in another (``benchmarks/serve_load.py``'s child), and every test
query is sent to ``POST /search`` with ``k = 10``. Printed per system: the share of queries whose served top-10
(ids, in order) equals the reference's, the mean overlap of the two top-10 sets, and nDCG@10 of both.

Milvus analyses text itself, so its BM25 half can differ from bm25s'. ``--analysers`` also measures, in-process,
Milvus BM25 under other analyser settings (no stop words; bm25s' stop words; bm25s' stop words plus every single
letter and digit, the shipped setting) and a build interrupted half-way then resumed (Milvus Lite keeps BM25
statistics per segment).

    python benchmarks/hybrid_agreement.py --data ../shared/data/scifact --model minilm-l6 --out runs/hybrid-agreement
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import serve_in_child

from embedlab.data.loaders import load_beir
from embedlab.embedding import EmbeddingCache
from embedlab.evaluate.compare import compare
from embedlab.evaluate.metrics import evaluate_run, rank
from embedlab.files import write_json_atomic
from embedlab.manifest import build_manifest
from embedlab.paths import cache_root
from embedlab.select import fuse_results

Run = Mapping[str, Mapping[str, float]]
CLI = [sys.executable, "-c", "from embedlab.cli import main; main()"]


def agreement(served: Mapping[str, Sequence[str]], reference: Run, qrels: Any) -> dict[str, float]:
    """Share of identical top-10 lists, mean top-10 overlap, and nDCG@10 of the served and the reference lists."""
    same, overlap = [], []
    for qid, ids in served.items():
        expected = rank(reference.get(qid, {}), 10)
        same.append(list(ids) == expected)
        overlap.append(len(set(ids) & set(expected)) / max(1, len(expected)))
    as_run = {qid: {doc: 10.0 - i for i, doc in enumerate(ids)} for qid, ids in served.items()}
    return {
        "identical_top10_share": float(np.mean(same)),
        "mean_top10_overlap": float(np.mean(overlap)),
        "served_ndcg@10": evaluate_run(as_run, qrels, ["ndcg@10"]).means["ndcg@10"],
        "reference_ndcg@10": evaluate_run(reference, qrels, ["ndcg@10"]).means["ndcg@10"],
    }


def served_top10(folder: Path, queries: Mapping[str, str]) -> tuple[dict[str, list[str]], float]:
    """Every query through `embedlab serve` over HTTP; the lists and the seconds it took."""
    with serve_in_child(folder) as (url, key), httpx.Client(base_url=url, headers={"X-API-Key": key}) as client:
        tick = time.perf_counter()
        out = {}
        for qid, text in queries.items():
            response = client.post("/search", json={"query": text, "k": 10}, timeout=60)
            response.raise_for_status()
            out[qid] = [h["id"] for h in response.json()["hits"]]
        return out, time.perf_counter() - tick


def analyser_variants(data: Path, out: Path) -> dict[str, Any]:
    """In this process (Milvus Lite lets one process open a .db): Milvus BM25 under several analysers."""
    from embedlab.index import IndexSearcher, build_index, milvus_store

    dataset = load_beir(data, split="test")
    reference = compare(dataset, ["bm25"], k_values=(1, 3, 10, 100)).results[0].run
    texts = [q.text for q in dataset.queries]
    shipped = milvus_store.analyzer_params
    from bm25s.stopwords import STOPWORDS_EN

    def stop(words: Sequence[str]) -> dict[str, Any]:
        return {"tokenizer": "standard", "filter": ["lowercase", {"type": "stop", "stop_words": list(words)}]}

    ascii_singles = "abcdefghijklmnopqrstuvwxyz0123456789"
    variants = {
        "standard (no stop words)": lambda: {"tokenizer": "standard", "filter": ["lowercase"]},
        "standard + bm25s stop words": lambda: stop(STOPWORDS_EN),
        "standard + bm25s stop words + single ASCII letters and digits": lambda: stop([*STOPWORDS_EN, *ascii_singles]),
        "standard + bm25s stop words + every single Latin/Greek/Cyrillic character (shipped)": shipped,
    }
    figures: dict[str, Any] = {}
    for name, params in variants.items():
        milvus_store.analyzer_params = params  # type: ignore[assignment]
        folder = out / f"analyser-{len(figures)}"
        build_index(dataset, "bm25", out=folder, store="milvus")
        searcher = IndexSearcher.open(folder)
        served = {
            q.id: [h.id for h in hits] for q, hits in zip(dataset.queries, searcher.search(texts, k=10), strict=True)
        }
        figures[name] = agreement(served, reference, dataset.qrels)
        print(f"milvus bm25, {name}: {json.dumps(figures[name])}", flush=True)
    milvus_store.analyzer_params = shipped
    # Interrupted half-way and resumed: two flushed segments, each with its own BM25 statistics in Milvus Lite.
    folder = out / "analyser-resumed"
    half = replace(dataset, corpus=dataset.corpus[: len(dataset.corpus) // 2])
    build_index(half, "bm25", out=folder, store="milvus")
    build_index(dataset, "bm25", out=folder, store="milvus")
    searcher = IndexSearcher.open(folder)
    served = {q.id: [h.id for h in hits] for q, hits in zip(dataset.queries, searcher.search(texts, k=10), strict=True)}
    figures["shipped, built in two halves (two segments)"] = agreement(served, reference, dataset.qrels)
    print(f"milvus bm25, two segments: {json.dumps(figures['shipped, built in two halves (two segments)'])}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--model", default="minilm-l6", help="the hybrid's dense half")
    parser.add_argument("--backend", default="torch", help="how the dense model runs, in compare and the index")
    parser.add_argument("--out", type=Path, default=Path("runs/hybrid-agreement"))
    parser.add_argument("--stores", default="faiss,milvus")
    parser.add_argument("--analysers", action="store_true", help="also measure Milvus analyser settings")
    parser.add_argument("--analysers-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.analysers_only:
        write_json_atomic(args.out / "analysers.json", analyser_variants(args.data, args.out))
        return
    started = time.perf_counter()
    os.environ["EMBEDLAB_BACKEND"] = args.backend
    dataset = load_beir(args.data, split="test")
    cache = EmbeddingCache(cache_root())
    comparison = compare(dataset, [args.model, "bm25"], k_values=(1, 3, 10, 100), cache=cache, show_progress=True)
    dense, lexical = comparison.results
    hybrid = fuse_results(lexical, dense, dataset, comparison.metrics, depth=100)  # as select builds it
    references = {"bm25": lexical.run, f"hybrid:{args.model}": hybrid.run}
    queries = {q.id: q.text for q in dataset.queries}
    figures: dict[str, Any] = {"model": args.model, "documents": len(dataset.corpus), "queries": len(queries)}
    for store in args.stores.split(","):
        for system, reference in references.items():
            folder = args.out / f"{store}-{system.replace(':', '-')}"
            command = [*CLI, "index", "--model", system, "--data", str(args.data), "--store", store]
            command += ["--out", str(folder), "--backend", args.backend]
            tick = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            build_seconds = time.perf_counter() - tick
            served, seconds = served_top10(folder, queries)
            row = {**agreement(served, reference, dataset.qrels), "index_seconds": build_seconds}
            row["http_seconds_all_queries"] = seconds
            figures[f"{store} {system}"] = row
            print(f"{store:6s} {system:18s} {json.dumps(row)}", flush=True)
    if args.analysers:
        subprocess.run([sys.executable, __file__, "--analysers-only", "--data", str(args.data), "--out",
                        str(args.out)], check=True)  # fmt: skip
        figures["milvus_analysers"] = json.loads((args.out / "analysers.json").read_text())
    figures["manifest"] = build_manifest(
        command="benchmarks/hybrid_agreement.py",
        data={"content_hash": dataset.content_hash, "source": dataset.source},
        wall_seconds=time.perf_counter() - started,
    )
    write_json_atomic(args.out / "agreement.json", figures)


if __name__ == "__main__":
    main()
