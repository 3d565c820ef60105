"""Fine-tuning proof on full SciFact: train judgements -> test judgements, all-MiniLM-L6-v2.

Arms (choose with ``--arms``, comma-separated; default ``zero-shot,embedlab``):

* ``zero-shot``   — the base model, untouched;
* ``plain``       — plain sentence-transformers: MNRL, batch 32, 3 epochs, lr 2e-5, no hard negatives, float32,
                    every training query (the recipe users start from);
* ``embedlab``    — ``embedlab finetune`` with its defaults (what the CLI runs);
* ablations over the defaults: ``no-hn`` (no hard negatives), ``cached-mnrl`` (GradCache, batch 128),
  ``triplet`` (triplet loss on the mined negatives), ``adapter`` (linear adapter over frozen vectors),
  ``test-positives`` (defaults, but documents judged relevant to test queries may be training positives, as in
  ``plain``: the leakage rule off, for a like-for-like comparison of the recipes).

Every arm is scored on the 300 test queries with the metrics of ``embedlab compare`` and, with ``--guard``, on
STSb test (Spearman). Figures are printed as a table and written to ``<out>/benchmark.json``. Timings depend on
what else runs on the machine: say so when reporting them.

    HF_HUB_OFFLINE=1 python benchmarks/finetune_scifact.py --arms zero-shot,embedlab --out runs/bench-ft
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.data.loaders import load_beir, load_sts
from embedlab.embedding import EmbeddingCache, embed
from embedlab.evaluate.compare import metric_names
from embedlab.evaluate.metrics import evaluate_run
from embedlab.evaluate.sts import sts_correlation
from embedlab.files import format_table, write_json_atomic
from embedlab.finetune.config import FinetuneConfig
from embedlab.finetune.run import _run_from_vectors, finetune
from embedlab.manifest import build_manifest
from embedlab.models.loading import load_encoder
from embedlab.paths import cache_root

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ABLATIONS: dict[str, dict[str, Any]] = {
    "embedlab": {},
    "no-hn": {"hard_negatives": 0},
    "cached-mnrl": {"loss": "cached-mnrl", "batch_size": 128, "mini_batch_size": 32},
    "triplet": {"loss": "triplet"},
    "adapter": {"adapter": True},
    # The plain arm trains on every judgement; this one too, so the two recipes can be compared like for like.
    "test-positives": {"allow_test_positives": True},
}


def score_model(name: str, test: Any, sts: Any, cache: EmbeddingCache | None) -> dict[str, float]:
    encoder = load_encoder(name)
    docs = embed(encoder, [d.full_text for d in test.corpus], role="document", cache=cache, show_progress=True)
    queries = embed(encoder, [q.text for q in test.queries], role="query", cache=cache)
    scores = evaluate_run(_run_from_vectors(test, queries, docs, 100), test.qrels, metric_names((1, 3, 10, 100)))
    out = {"ndcg@10": scores.means["ndcg@10"], "recall@100": scores.means["recall@100"]}
    if sts is not None:
        left = embed(encoder, [p.text1 for p in sts.pairs], role="document", cache=cache)
        right = embed(encoder, [p.text2 for p in sts.pairs], role="document", cache=cache)
        gold = [p.score for p in sts.pairs]
        out["sts_spearman"] = sts_correlation(np.einsum("ij,ij->i", left, right).tolist(), gold)["spearman"]
    return out


def plain_arm(out: Path, train: Any) -> tuple[Path, float]:
    """Plain sentence-transformers MNRL: batch 32, 3 epochs, lr 2e-5, no hard negatives, float32."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embedlab.finetune.train import base_model_path

    docs = train.documents_by_id
    anchors, positives = [], []
    for query in train.queries:
        for doc_id, grade in train.qrels[query.id].items():
            if grade > 0:
                anchors.append(query.text)
                positives.append(docs[doc_id].full_text)
    model = SentenceTransformer(base_model_path("minilm-l6"), device="cpu")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "plain-checkpoints"),
        num_train_epochs=3,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_steps=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"anchor": anchors, "positive": positives}),
        loss=MultipleNegativesRankingLoss(model),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save(str(out / "plain-model"))
    return out / "plain-model", seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="zero-shot,embedlab")
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--guard", type=Path, default=DATA / "stsb")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-finetune"))
    parser.add_argument("--time-budget", type=float, default=15.0, help="minutes; 0 for none")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    cache = EmbeddingCache(cache_root())
    test = load_beir(args.data, "test")
    sts = load_sts(args.guard, "test") if args.guard else None
    rows: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for arm in arms:
        arm_start = time.perf_counter()
        print(f"== {arm}", flush=True)
        if arm == "zero-shot":
            rows[arm] = {**score_model("minilm-l6", test, sts, cache), "train_seconds": 0.0}
        elif arm == "plain":
            path, seconds = plain_arm(args.out, load_beir(args.data, "train"))
            rows[arm] = {**score_model(str(path), test, sts, None), "train_seconds": seconds}
        elif arm in ABLATIONS:
            config = FinetuneConfig.create(time_budget_minutes=args.time_budget or None, **ABLATIONS[arm])
            result = finetune(
                args.data,
                config=config,
                out=args.out / arm,
                guard=args.guard / "sts-test.csv" if args.guard else None,
                cache=cache,
                echo=lambda line: print(line, flush=True),
                show_progress=True,
            )
            print(result, flush=True)
            rows[arm] = {
                "ndcg@10": result.after.means["ndcg@10"],
                "recall@100": result.after.means["recall@100"],
                "sts_spearman": result.guard.after if result.guard else None,
                "train_seconds": result.training["train_seconds"],
                "precision": result.training.get("precision"),
                "steps": result.training.get("steps"),
                "dev_best_checkpoint": result.training.get("best_checkpoint"),
            }
        else:
            raise SystemExit(f"unknown arm '{arm}': zero-shot, plain, {', '.join(ABLATIONS)}")
        rows[arm]["wall_seconds"] = time.perf_counter() - arm_start
        write_json_atomic(args.out / "benchmark.json", {"arms": rows, "manifest": build_manifest(command="bench")})
    table = [
        [
            arm,
            f"{100 * r['ndcg@10']:.2f}",
            f"{100 * r['recall@100']:.2f}",
            f"{100 * r['sts_spearman']:.2f}" if r.get("sts_spearman") is not None else "-",
            f"{r['train_seconds'] / 60:.1f}",
            f"{r['wall_seconds'] / 60:.1f}",
        ]
        for arm, r in rows.items()
    ]
    print(format_table(["arm", "nDCG@10", "R@100", "STSb", "train min", "wall min"], table))
    print(f"total {(time.perf_counter() - started) / 60:.1f} min")
    print(json.dumps({arm: {k: v for k, v in r.items()} for arm, r in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
