"""Proof figures for deploying a model on SciFact: what the ANN index costs, what the service returns, how fast.

On the SciFact test split (5,183 abstracts, 300 queries) with one model (a catalog name or a fine-tuned folder):

1. ``embedlab index --sweep``: every grid setting against exact search; the recommended HNSW setting (the fastest
   reaching the target recall@10, default 0.99).
2. HNSW indexes built at that setting in FAISS and in Milvus Lite, searched through
   :class:`~embedlab.index.searcher.IndexSearcher`: recall@10 of ``compare``'s exact top-10.
3. A flat FAISS index served by ``embedlab serve`` (a child process on 127.0.0.1): the share of test queries whose
   served top-10 (ids, in order) equals ``compare``'s exact top-10, over HTTP.
4. The loopback load test (``benchmarks/serve_load.py``) against that server: p50/p95 latency and QPS.

Vectors come from the embedding cache (``$EMBEDLAB_CACHE``), so a model ``compare`` already ran is not encoded
again. Everything is written to ``--out`` (``deploy.json`` with the manifest, the sweep's report, the indexes).

    python benchmarks/deploy_scifact.py --model minilm-l6 --out runs/deploy-scifact
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import run_load, serve_in_child

from embedlab.data.loaders import load_beir
from embedlab.embedding import EmbeddingCache
from embedlab.evaluate.compare import compare
from embedlab.files import write_json_atomic
from embedlab.index import IndexConfig, IndexSearcher, build_index, sweep
from embedlab.manifest import build_manifest
from embedlab.models.loading import load_encoder
from embedlab.paths import cache_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--model", default="minilm-l6", help="catalog name or fine-tuned model folder")
    parser.add_argument("--out", type=Path, default=Path("runs/deploy-scifact"))
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = load_beir(args.data, split="test")
    cache = EmbeddingCache(cache_root())
    encoder = load_encoder(args.model)
    queries = {q.id: q.text for q in dataset.queries}
    figures: dict[str, object] = {"model": args.model, "documents": len(dataset.corpus), "queries": len(queries)}

    # The reference: compare's exact top-10 per query (its run lists documents best first).
    comparison = compare(dataset, [args.model], k_values=(10,), cache=cache, show_progress=True)
    run = comparison.results[0].run
    exact = {qid: sorted(docs, key=lambda d: -docs[d])[:10] for qid, docs in run.items()}
    figures["exact_ndcg@10"] = comparison.results[0].mean("ndcg@10")

    # 1. The sweep and its recommendation.
    result = sweep(dataset, encoder, target=args.target, cache=cache, show_progress=True)
    result.write(args.out / "sweep")
    print(result)
    recommendation = result.recommend()
    hnsw = recommendation.by_index.get("hnsw")
    if hnsw is None:
        raise SystemExit(f"no HNSW setting reached recall@10 ≥ {args.target}; widen the grid")
    figures["sweep"] = {
        "recommended_hnsw": hnsw.to_dict(),
        "fastest": recommendation.fastest.to_dict() if recommendation.fastest else None,
        "smallest": recommendation.smallest.to_dict() if recommendation.smallest else None,
        "points": len(result.points),
    }

    # 2. HNSW at the recommended setting, deployed in each store, searched by text like the service does.
    chosen = IndexConfig.from_dict({**hnsw.config.to_dict(), "dim": None, "nlist": None, "pq_m": None})
    deployed = {}
    for store in ("faiss", "milvus"):
        folder = args.out / f"index-{store}-hnsw"
        manifest = build_index(dataset, encoder, out=folder, store=store, config=chosen, cache=cache)
        searcher = IndexSearcher.open(folder, encoder=encoder)
        tick = time.perf_counter()
        hits = searcher.search(list(queries.values()), k=10)
        seconds = time.perf_counter() - tick
        searcher.close()
        found = {qid: [h.id for h in row] for qid, row in zip(queries, hits, strict=True)}
        recall = sum(len(set(found[q]) & set(exact[q])) for q in queries) / (10 * len(queries))
        deployed[store] = {
            "index": manifest.resolved.label,
            "recall@10_vs_exact": recall,
            "search_seconds_300_queries_with_encoding": seconds,
            "build_seconds": manifest.seconds.get("total"),
        }
        print(f"{store} {manifest.resolved.label}: recall@10 of the exact top-10 = {recall:.4f}")
    figures["hnsw_deployed"] = deployed

    # 3 and 4. A flat index served over HTTP by `embedlab serve` in a child process; then the load test.
    flat = args.out / "index-faiss-flat"
    build_index(dataset, encoder, out=flat, store="faiss", config=IndexConfig(), cache=cache)
    with serve_in_child(flat) as (url, key), httpx.Client(base_url=url, headers={"X-API-Key": key}) as client:
        same = 0
        for qid, text in queries.items():
            response = client.post("/search", json={"query": text, "k": 10}, timeout=60)
            response.raise_for_status()
            same += [h["id"] for h in response.json()["hits"]] == exact[qid]
        figures["served_flat_top10_equals_exact_share"] = same / len(queries)
        print(f"served flat top-10 == compare's exact top-10 for {same}/{len(queries)} queries")
        load = run_load(
            url,
            list(queries.values()),
            requests=args.requests,
            concurrency=args.concurrency,
            max_seconds=args.max_seconds,
            api_key=key,
        )
    figures["load"] = asdict(load)
    print(load.table())
    figures["manifest"] = build_manifest(
        command="benchmarks/deploy_scifact.py",
        data={"content_hash": dataset.content_hash, "source": dataset.source},
        wall_seconds=time.perf_counter() - started,
    )
    write_json_atomic(args.out / "deploy.json", figures)
    print(json.dumps({k: v for k, v in figures.items() if k != "manifest"}, indent=2))


if __name__ == "__main__":
    main()
