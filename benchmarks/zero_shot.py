"""Zero-shot figures: every model on the full SciFact test split and the STS Benchmark test split.

Prints, per model: nDCG@10 and Recall@100 on SciFact (300 test queries over 5,183 abstracts), Spearman ×100 on
STSb test (1,379 pairs), wall time and documents per second of the corpus encoding, beside the published figures.
Encoding uses a fresh cache unless --cache is given, so the timings are those of real encoding.

    python benchmarks/zero_shot.py --models minilm-l6,mpnet-base,bm25 --out runs/zero-shot
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from embedlab.data.loaders import load_beir, load_sts
from embedlab.embedding import EmbeddingCache
from embedlab.evaluate.compare import compare, compare_sts
from embedlab.files import format_table, write_json_atomic
from embedlab.manifest import build_manifest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# MTEB's published test-split figures (../shared/MODELS.md, ../shared/data/README.md).
PUBLISHED = {
    "minilm-l6": {"ndcg@10": 64.5, "spearman": 82.0},
    "mpnet-base": {"ndcg@10": 65.6, "spearman": 83.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default="minilm-l6,mpnet-base,minilm-l3-onnx,minilm-l6-int8,e5-small-4bit,static-minilm,bm25"
    )
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--cache", type=Path, default=None, help="reuse this embedding cache (timings then lie)")
    parser.add_argument("--out", type=Path, default=Path("runs/zero-shot"))
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]

    cache_dir = args.cache or Path(tempfile.mkdtemp(prefix="embedlab-zero-shot-"))
    cache = EmbeddingCache(cache_dir)
    scifact = load_beir(args.data / "scifact", split="test")
    stsb = load_sts(args.data / "stsb" / "sts-test.csv")

    rows, figures = [], {}
    for name in models:
        started = time.perf_counter()
        retrieval = compare(scifact, [name], k_values=(10, 100), cache=cache, show_progress=True).results[0]
        spearman = None
        if name != "bm25":
            spearman = compare_sts(stsb, [name], cache=cache).results[0].spearman
        wall = time.perf_counter() - started
        figures[name] = {
            "ndcg@10": retrieval.mean("ndcg@10"),
            "recall@100": retrieval.mean("recall@100"),
            "sts_spearman": spearman,
            "wall_seconds": wall,
            "index_seconds": retrieval.index_seconds,
            "documents_per_second": retrieval.documents_per_second,
            "truncated_documents": retrieval.truncated_documents,
        }
        published = PUBLISHED.get(name, {})
        rows.append(
            [
                name,
                f"{100 * retrieval.mean('ndcg@10'):.2f}",
                str(published.get("ndcg@10", "-")),
                f"{100 * retrieval.mean('recall@100'):.2f}",
                f"{100 * spearman:.2f}" if spearman is not None else "-",
                str(published.get("spearman", "-")),
                f"{wall:.0f}",
                f"{retrieval.documents_per_second:.1f}",
            ]
        )
        print(
            format_table(["model", "nDCG@10", "published", "R@100", "STSb ρ", "published", "wall s", "docs/s"], rows),
            flush=True,
        )
    manifest = build_manifest(
        command="benchmarks/zero_shot.py", data={"scifact": scifact.describe(), "stsb": stsb.describe()}
    )
    write_json_atomic(args.out / "zero_shot.json", {"figures": figures, "manifest": manifest})
    print(json.dumps(manifest["hardware"]))


if __name__ == "__main__":
    main()
