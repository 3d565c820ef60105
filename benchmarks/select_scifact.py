"""`embedlab select` on the full SciFact test split: leaderboard with confidence intervals, cost, recommendation.

Runs the whole select pipeline (every model given, BM25 and the hybrid always added; cost measured on this
machine, each model in a fresh process) on 300 test queries over 5,183 abstracts, prints the leaderboard and
the recommendation, writes the report, and takes a screenshot of the report in headless Chromium.

    python benchmarks/select_scifact.py --models minilm-l6,minilm-l3-onnx,minilm-l6-int8,static-minilm \\
        --out runs/select-scifact --screenshot docs/select-report.png

Encodings go through the embedding cache (default: $EMBEDLAB_CACHE or ~/.cache/embedlab), so a second run only
re-measures cost. all-mpnet-base-v2 (about 15 minutes of encoding on 2 idle cores) and e5-small-4bit (about
1 document/s here) are in the default list; drop them with --models on a slow or busy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from embedlab.data.loaders import load_beir
from embedlab.embedding import EmbeddingCache
from embedlab.models.catalog import catalog_names
from embedlab.paths import cache_root
from embedlab.select import SelectConfig, select

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 7000) -> Path | None:
    """A full-page screenshot of ``html`` in headless Chromium, trimmed of the blank space below the page."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found: no screenshot (make browser installs it)", file=sys.stderr)
        return None
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                html.resolve().as_uri(),
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )
    from PIL import Image, ImageChops

    image = Image.open(png).convert("RGB")
    blank = Image.new("RGB", image.size, (255, 255, 255))
    box = ImageChops.difference(image, blank).getbbox()
    if box is not None:
        image = image.crop((0, 0, width, min(height, box[3] + 24)))
    # 256 colours keep text and plots sharp at a third of the size.
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(catalog_names()))
    parser.add_argument("--data", type=Path, default=SHARED / "scifact")
    parser.add_argument("--out", type=Path, default=Path("runs/select-scifact"))
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--cost-docs", type=int, default=64)
    parser.add_argument("--cost-queries", type=int, default=32)
    parser.add_argument("--screenshot", type=Path, default=Path("docs/select-report.png"))
    args = parser.parse_args()

    dataset = load_beir(args.data, split="test")
    config = SelectConfig(
        models=tuple(m for m in args.models.split(",") if m),
        cost_documents=args.cost_docs,
        cost_queries=args.cost_queries,
    )
    print(f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} test queries", file=sys.stderr)
    started = time.perf_counter()
    selection = select(
        dataset,
        config,
        cache=EmbeddingCache(args.cache or cache_root()),
        data_ref=str(args.data),
        out=args.out,
        show_progress=True,
    )
    paths = selection.write(args.out)
    print(selection)
    print()
    print(selection.costs)
    walls = selection.manifest["wall_seconds"]
    print("\nwall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items()))
    print(f"total {time.perf_counter() - started:.0f} s; report: {paths['html']}")
    hardware = selection.manifest["hardware"]
    print(f"machine: {hardware['cpu']}, {hardware['threads']} threads, load average {os.getloadavg()[0]:.1f}")
    if args.screenshot:
        shot = screenshot(paths["html"], args.screenshot)
        if shot is not None:
            print(f"screenshot: {shot}")


if __name__ == "__main__":
    main()
