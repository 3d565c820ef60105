"""Which fine-tuning recipe helps most: a sweep over learning rate, hard negatives, extra pairs and losses.

This is the evidence behind ``FinetuneConfig``'s defaults. Every recipe trains all-MiniLM-L6-v2 on SciFact's train
judgements with plain sentence-transformers (MNRL unless named otherwise) and is scored after every epoch on

* the 300 test queries over the full corpus (nDCG@10, Recall@100, with embedlab's metrics),
* the dev queries embedlab's own split carves from the training queries (what picks the checkpoint),
* STSb test (Spearman), the general-domain guard.

Data comes from embedlab's split rules (:func:`embedlab.finetune.splits.make_splits`): ``ruled`` keeps
documents judged relevant to test queries out of training, as ``embedlab finetune`` does by default; ``all``
allows them (``--allow-test-positives``), as the plain recipe does. ``ruled2``/``all2`` also drop training
judgements on the dev queries' documents (a dev split that mirrors the test split). Hard negatives follow
:mod:`embedlab.finetune.negatives` (rank window, relative margin, random fill when too few survive), computed on
the training device with the base model.

Recipes differ in work, not only in quality: ``doc_texts`` (documents encoded in training: steps × batch ×
(1 + negatives)) is what a CPU pays for. On one GPU the 29 recipes take about 10 minutes; on 2 CPU cores each
takes its full training time (see ``finetune_scifact.py`` for embedlab's own pipeline, timed).

    python benchmarks/finetune_recipes.py                          # every recipe
    python benchmarks/finetune_recipes.py plain-all all-lr1e4-e3-hn1-w3 --out runs/recipes.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.data.dataset import RetrievalDataset
from embedlab.data.loaders import load_beir, load_sts
from embedlab.evaluate.metrics import evaluate_run
from embedlab.evaluate.sts import sts_correlation
from embedlab.finetune.pairs import pairs_from_judgements, title_pairs
from embedlab.finetune.run import _run_from_vectors
from embedlab.finetune.splits import make_splits
from embedlab.finetune.train import base_model_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

RECIPES: dict[str, dict[str, Any]] = {
    # The plain recipe of issue 3, then the same data under the leakage rule, then embedlab's old defaults.
    "plain-all": {"data": "all", "lr": 2e-5, "epochs": 3},
    "plain-ruled": {"lr": 2e-5, "epochs": 3},
    "old-defaults": {"lr": 3e-5, "epochs": 3, "hn": 1},
    "ruled-lr1e4-e5": {"lr": 1e-4, "epochs": 5},
    "ruled+title-lr5e5-e1": {"extra": True, "lr": 5e-5, "epochs": 1},
    "ruled+title-lr1e4-e2": {"extra": True, "lr": 1e-4, "epochs": 2},
    "ruled-lr5e5-e5-hn1": {"lr": 5e-5, "epochs": 5, "hn": 1},
    "ruled-lr5e5-e5-hn1-nomargin": {"lr": 5e-5, "epochs": 5, "hn": 1, "margin": None},
    "ruled-lr5e5-e5-hn1-w3": {"lr": 5e-5, "epochs": 5, "hn": 1, "window": (3, 50)},
    "ruled+title-lr5e5-e2-hn1": {"extra": True, "lr": 5e-5, "epochs": 2, "hn": 1},
    "ruled-lr1e4-e5-seq128": {"lr": 1e-4, "epochs": 5, "seq": 128},
    "ruled-lr2e4-e8": {"lr": 2e-4, "epochs": 8},
    "ruled-gist-lr5e5-e5": {"lr": 5e-5, "epochs": 5, "loss": "gist"},
    "ruled-lr5e5-e5-hn3": {"lr": 5e-5, "epochs": 5, "hn": 3},
    "ruled2-lr2e5-e3": {"data": "ruled2", "lr": 2e-5, "epochs": 3},
    "ruled2-lr1e4-e3": {"data": "ruled2", "lr": 1e-4, "epochs": 3},
    "ruled2-lr1e4-e3-hn1-w3": {"data": "ruled2", "lr": 1e-4, "epochs": 3, "hn": 1, "window": (3, 50)},
    "all-lr5e5-e3": {"data": "all", "lr": 5e-5, "epochs": 3},
    "all-lr1e4-e3": {"data": "all", "lr": 1e-4, "epochs": 3},
    "all-lr2e4-e3": {"data": "all", "lr": 2e-4, "epochs": 3},
    "all-lr1e4-e5": {"data": "all", "lr": 1e-4, "epochs": 5},
    "all-lr1e4-e3-hn1": {"data": "all", "lr": 1e-4, "epochs": 3, "hn": 1},
    "all-lr1e4-e3-hn1-w3": {"data": "all", "lr": 1e-4, "epochs": 3, "hn": 1, "window": (3, 50)},
    "all-lr1e4-e3-seq128": {"data": "all", "lr": 1e-4, "epochs": 3, "seq": 128},
    "all-lr1e4-e3-b64": {"data": "all", "lr": 1e-4, "epochs": 3, "batch": 64},
    "all+title-lr1e4-e1": {"data": "all", "extra": True, "lr": 1e-4, "epochs": 1},
    "all-cmnrl-b128-lr1e4-e3": {"data": "all", "lr": 1e-4, "epochs": 3, "batch": 128, "loss": "cached-mnrl"},
    "all2-lr1e4-e3": {"data": "all2", "lr": 1e-4, "epochs": 3},
}


class Bench:
    """SciFact splits, the evaluation sets and the base model's vectors, shared by every recipe."""

    def __init__(self, data: Path, guard: Path, base: str, device: str) -> None:
        train, self.test = load_beir(data, "train"), load_beir(data, "test")
        self.sts = load_sts(guard, "test")
        self.base, self.device = base_model_path(base), device
        self.corpus = self.test.corpus
        self.row = {d.id: i for i, d in enumerate(self.corpus)}
        self.texts = [d.full_text for d in self.corpus]
        self.splits: dict[str, tuple[RetrievalDataset, RetrievalDataset]] = {}
        for name, allow in (("ruled", False), ("all", True)):
            split = make_splits(train, self.test, dev_fraction=0.1, allow_test_positives=allow, seed=0)
            self.splits[name] = (split.train, split.dev)
            dev_docs = {d for q in split.dev.qrels for d, g in split.dev.qrels[q].items() if g > 0}
            mirrored = {
                q: {d: g for d, g in docs.items() if d not in dev_docs} for q, docs in split.train.qrels.items()
            }
            self.splits[name + "2"] = (dataclasses.replace(split.train, qrels=mirrored), split.dev)
        test_docs = {d for q in self.test.qrels for d, g in self.test.qrels[q].items() if g > 0}
        # Title -> body pairs from the corpus, never from a document relevant to a test query.
        self.title = [p for p in title_pairs(self.corpus, limit=len(self.corpus)) if p.positive_id not in test_docs]
        self._base_vectors: Any = None

    def model(self) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(self.base, device=self.device)

    def encode(self, model: Any, texts: list[str]) -> np.ndarray:
        vectors = model.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    def retrieval(self, model: Any, dataset: RetrievalDataset, docs: np.ndarray) -> dict[str, float]:
        queries = self.encode(model, [q.text for q in dataset.queries])
        run = _run_from_vectors(dataclasses.replace(dataset, corpus=self.corpus), queries, docs, 100)
        return dict(evaluate_run(run, dataset.qrels, ["ndcg@10", "recall@100"]).means)

    def scores(self, model: Any, dev: RetrievalDataset) -> dict[str, float]:
        docs = self.encode(model, self.texts)
        test, dev_scores = self.retrieval(model, self.test, docs), self.retrieval(model, dev, docs)
        left = self.encode(model, [p.text1 for p in self.sts.pairs])
        right = self.encode(model, [p.text2 for p in self.sts.pairs])
        sts = sts_correlation(np.einsum("ij,ij->i", left, right).tolist(), [p.score for p in self.sts.pairs])
        return {
            "test": 100 * test["ndcg@10"],
            "r100": 100 * test["recall@100"],
            "dev": 100 * dev_scores["ndcg@10"],
            "sts": 100 * sts["spearman"],
        }

    def mine(
        self,
        queries: list[str],
        positives: list[str],
        known: list[set[str]],
        n: int,
        window: tuple[int, int],
        margin: float | None,
    ) -> tuple[list[list[str]], int]:
        """Negatives as :func:`embedlab.finetune.negatives.mine_hard_negatives` picks them, by the base model."""
        import torch

        model = self.model()
        if self._base_vectors is None:
            self._base_vectors = torch.from_numpy(self.encode(model, self.texts))
        docs = self._base_vectors
        q = torch.from_numpy(self.encode(model, queries))
        p = torch.from_numpy(self.encode(model, positives))
        scores, rows = torch.topk(q @ docs.T, k=window[1], dim=1)
        positive_scores = (q * p).sum(1)
        rng, out, short = random.Random(0), [], 0
        for i in range(len(queries)):
            ceiling = (1 - margin) * float(positive_scores[i]) if margin is not None else float("inf")
            picked = [
                self.texts[int(rows[i, j])]
                for j in range(window[0], window[1])
                if self.corpus[int(rows[i, j])].id not in known[i] and float(scores[i, j]) <= ceiling
            ][:n]
            if len(picked) < n:
                short += 1
            while len(picked) < n:
                row = rng.randrange(len(self.texts))
                if self.corpus[row].id not in known[i]:
                    picked.append(self.texts[row])
            out.append(picked)
        return out, short


def run_recipe(bench: Bench, name: str, recipe: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback

    started = time.perf_counter()
    torch.manual_seed(0)
    train, dev = bench.splits[recipe.get("data", "ruled")]
    hn, batch = recipe.get("hn", 0), recipe.get("batch", 32)
    pairs = pairs_from_judgements(train) + (bench.title if recipe.get("extra") else [])
    queries = [p.example.query for p in pairs]
    positives = [p.example.positive for p in pairs]
    columns: dict[str, list[str]] = {"anchor": queries, "positive": positives}
    short = 0
    if hn:
        known = [set(p.positive_ids) | {p.positive_id} for p in pairs]
        negatives, short = bench.mine(
            queries, positives, known, hn, recipe.get("window", (10, 50)), recipe.get("margin", 0.05)
        )
        for k in range(hn):
            columns[f"negative_{k}"] = [n[k] for n in negatives]
    model = bench.model()
    model.max_seq_length = recipe.get("seq", 256)
    loss_name = recipe.get("loss", "mnrl")
    if loss_name == "cached-mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=64)
    elif loss_name == "gist":
        loss = losses.GISTEmbedLoss(model, guide=bench.model())
    else:
        loss = losses.MultipleNegativesRankingLoss(model)
    log: list[dict[str, float]] = []

    class EveryEpoch(TrainerCallback):  # type: ignore[misc]
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model.max_seq_length = 256
            log.append({"epoch": round(state.epoch, 2), **bench.scores(model, dev)})
            model.max_seq_length = recipe.get("seq", 256)
            model.train()

    args = SentenceTransformerTrainingArguments(
        output_dir=f"/tmp/embedlab-recipes/{name}",
        num_train_epochs=recipe["epochs"],
        per_device_train_batch_size=batch,
        learning_rate=recipe["lr"],
        warmup_steps=0.1,
        weight_decay=0.01,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        seed=0,
        use_cpu=bench.device == "cpu",
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss, callbacks=[EveryEpoch()]
    )
    trainer.train()
    steps = trainer.state.global_step
    best = max(log, key=lambda r: r["dev"])
    return {
        "name": name,
        **recipe,
        "examples": len(pairs),
        "steps": steps,
        "doc_texts": steps * batch * (1 + hn),
        "random_negatives": short,
        "dev_pick": best,
        "epochs_log": log,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", help=f"default: all {len(RECIPES)}")
    parser.add_argument("--data", type=Path, default=DATA / "scifact")
    parser.add_argument("--guard", type=Path, default=DATA / "stsb")
    parser.add_argument("--base", default="minilm-l6")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune-recipes.jsonl"))
    args = parser.parse_args()
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    bench = Bench(args.data, args.guard, args.base, "cuda" if torch.cuda.is_available() else "cpu")
    base = bench.scores(bench.model(), bench.splits["ruled"][1])
    print(json.dumps({"name": "zero-shot", **base}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.recipes or list(RECIPES):
        result = run_recipe(bench, name, RECIPES[name])
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        epochs = " ".join(
            f"e{int(r['epoch'])} {r['test']:.1f}/{r['dev']:.1f}/{r['sts']:.1f}" for r in result["epochs_log"]
        )
        print(
            f"{name:30s} {result['steps']:4d} steps {result['doc_texts']:6d} docs | test/dev/STSb {epochs}", flush=True
        )


if __name__ == "__main__":
    main()
