"""Fine-tuning recipes judged by transfer: every arm, every shared domain, same-source and cross-source.

A fine-tuned model is judged on queries (and documents) it never trained on. Two settings per domain:

* **same-source** — the domain's training judgements train, its test queries measure (SciFact with the leakage
  rule on; nl2bash, whose split shares no relevant document between train and test; CoNaLa; stdlib-docs split
  by document, 80/20, seeded);
* **cross-source** — no human training judgement: only queries made from the corpus (titles, inverse cloze,
  keyword queries), labelled by a teacher for the teacher arms; the real test queries measure. The judged
  training queries serve only as the dev split (they are of the kind the user has, and never train).

Arms (``--arms``): ``zero-shot``; ``plain`` (plain sentence-transformers: MNRL, batch 32, 1 epoch, lr 2e-5, no hard
negatives, float32, on the setting's training pairs — judged pairs, or the corpus queries — capped by the same
time budget); ``embedlab`` (``embedlab finetune`` defaults; cross-source it needs a teacher, so it is skipped
there); ablations ``lr2e-5``, ``no-hn``, ``epochs1``; teachers ``teacher-bm25``, ``teacher-hybrid`` (BM25 + mpnet-base),
``teacher-mpnet``, ``teacher-minilm`` (self-distillation: the base model as its own teacher, a control);
``query-side-hybrid``, ``query-side-bm25`` (``--train-side query``: the query encoder alone learns the teacher's
ranking, documents keep the base vectors).

For each (domain, setting, arm): nDCG@10 before and after on the test queries, the paired difference with its 95%
bootstrap interval and randomization p, R@100, STSb test Spearman (the general-domain guard), wall time, and —
where ``embedlab finetune`` kept the base model because the dev gain was not significant — the rejected
candidate's test score too. Every finished arm is saved under ``<out>/results/`` at once; a re-run skips it
(resumable). Tables: one per domain and setting, and a summary of each arm's worst case.

``--max-test-queries`` and ``--max-documents`` slice a domain (its test queries, then the documents they and the
training queries judge plus the first others) so that a run fits a small machine; sliced figures say so in the
table title and in the JSON, and are not comparable with full-corpus figures.

    HF_HUB_OFFLINE=1 python benchmarks/finetune_transfer.py --domains nl2bash,conala --settings cross-source \\
        --arms zero-shot,plain,teacher-hybrid --out runs/transfer
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.data.dataset import RetrievalDataset
from embedlab.data.loaders import load_beir, load_sts
from embedlab.embedding import EmbeddingCache, embed
from embedlab.evaluate.compare import metric_names
from embedlab.evaluate.metrics import RunScores, evaluate_run
from embedlab.evaluate.sts import sts_correlation
from embedlab.files import format_table, write_json_atomic, write_text_atomic
from embedlab.finetune.config import FinetuneConfig
from embedlab.finetune.pairs import pairs_from_judgements, pseudo_pairs
from embedlab.finetune.run import _difference, _run_from_vectors, finetune
from embedlab.finetune.splits import make_splits
from embedlab.manifest import build_manifest
from embedlab.models.loading import load_encoder
from embedlab.paths import cache_root

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOMAINS = ("scifact", "nl2bash", "conala", "stdlib-docs")
SETTINGS = ("same-source", "cross-source")
METRICS = metric_names((1, 10, 100))

# Settings of each embedlab arm over the defaults; "teacher" arms are cross-source unless the setting says both.
EMBEDLAB_ARMS: dict[str, dict[str, Any]] = {
    "embedlab": {},
    "lr2e-5": {"learning_rate": 2e-5},
    "no-hn": {"hard_negatives": 0},
    "epochs1": {"epochs": 1.0},
    "random-batches": {"batch_order": "random"},  # the batch order before 2026-12-03 (session 23)
    "msl128": {"max_seq_length": 128},  # the longest batches cost far more than their tokens (2026-12-04)
    "teacher-bm25": {"teacher": "bm25"},
    "teacher-hybrid": {"teacher": "hybrid:mpnet-base"},
    "teacher-mpnet": {"teacher": "mpnet-base"},
    "teacher-mpnet-lr1e-4": {"teacher": "mpnet-base", "teacher_learning_rate": 1e-4},
    "teacher-mpnet-e6": {"teacher": "mpnet-base", "epochs": 6.0},
    "teacher-mpnet-max5000": {"teacher": "mpnet-base", "pseudo_max": 5000},  # the cap before 2026-12-03
    "teacher-mpnet-all": {"teacher": "mpnet-base", "pseudo_max": 20000},
    "teacher-mpnet-lr4e-5": {"teacher": "mpnet-base", "teacher_learning_rate": 4e-5},
    # the corpus-query kinds before docstring questions for Python code joined them (2026-12-04, session 25)
    "teacher-mpnet-no-api-docs": {"teacher": "mpnet-base", "pseudo_queries": ("title", "cloze", "keywords")},
    "teacher-mpnet-api-docs-only": {"teacher": "mpnet-base", "pseudo_queries": ("api-docs",)},
    "teacher-mpnet-random-batches": {"teacher": "mpnet-base", "batch_order": "random"},
    "teacher-auto": {"teacher": "auto"},
    "teacher-auto-fast": {"teacher": "auto", "teacher_negatives": 1, "max_seq_length": 128},
    "teacher-auto-fast-inbatch": {
        "teacher": "auto",
        "teacher_negatives": 1,
        "max_seq_length": 128,
        "teacher_in_batch": True,
    },
    "teacher-mpnet-inbatch": {"teacher": "mpnet-base", "teacher_in_batch": True},
    "embedlab-dev20": {"dev_fraction": 0.2},
    "teacher-minilm": {"teacher": "minilm-l6"},
    "query-side-hybrid": {"teacher": "hybrid:mpnet-base", "train_side": "query"},
    "query-side-bm25": {"teacher": "bm25", "train_side": "query"},
    "query-side-mpnet": {"teacher": "mpnet-base", "train_side": "query"},
    "query-side-mpnet-e10": {"teacher": "mpnet-base", "train_side": "query", "query_side_epochs": 10.0},
}


# ------------------------------------------------------------------------------------------------------
# Data: every domain as a BEIR folder with train and test judgements


def _write_beir(folder: Path, corpus: list[dict[str, Any]], queries: list[dict[str, Any]], qrels: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "corpus.jsonl", "".join(json.dumps(d) + "\n" for d in corpus))
    write_text_atomic(folder / "queries.jsonl", "".join(json.dumps(q) + "\n" for q in queries))
    for split, table in qrels.items():
        rows = "".join(f"{q}\t{d}\t{g}\n" for q, docs in table.items() for d, g in docs.items())
        write_text_atomic(folder / "qrels" / f"{split}.tsv", "query-id\tcorpus-id\tscore\n" + rows)
    return folder


def _as_rows(dataset: RetrievalDataset) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    corpus = [{"_id": d.id, "title": d.title, "text": d.text} for d in dataset.corpus]
    queries = [{"_id": q.id, "text": q.text} for q in dataset.queries]
    return corpus, queries


def prepare_domain(name: str, out: Path, *, max_test: int | None, max_documents: int | None) -> tuple[Path, str]:
    """A BEIR folder for ``name`` under ``out`` (sliced when asked) and a one-line description of the slice."""
    folder = out / "data" / name
    if name == "stdlib-docs":
        from embedlab.data.stdlib_docs import load_stdlib_docs

        dataset = load_stdlib_docs()
        ids = [q.id for q in dataset.queries]
        random.Random(0).shuffle(ids)
        test_ids = set(ids[: len(ids) // 5])  # one document per query: a query split is a document split
        qrels = {
            "train": {q: dict(dataset.qrels[q]) for q in ids if q not in test_ids},
            "test": {q: dict(dataset.qrels[q]) for q in ids if q in test_ids},
        }
        corpus, queries = _as_rows(dataset)
        source = RetrievalDataset(dataset.name, dataset.corpus, dataset.queries, qrels["test"])
        train_qrels, test_qrels = qrels["train"], qrels["test"]
    else:
        train = load_beir(DATA / name, "train")
        test = load_beir(DATA / name, "test")
        source = test
        corpus, _ = _as_rows(test)
        queries = [{"_id": q.id, "text": q.text} for q in (*train.queries, *test.queries)]
        train_qrels = {q: dict(d) for q, d in train.qrels.items()}
        test_qrels = {q: dict(d) for q, d in test.qrels.items()}
    sliced = []
    if max_test is not None and len(test_qrels) > max_test:
        keep = sorted(test_qrels)
        random.Random(0).shuffle(keep)
        test_qrels = {q: test_qrels[q] for q in keep[:max_test]}
        sliced.append(f"{max_test} test queries")
    if max_documents is not None and len(corpus) > max_documents:
        needed = {d for table in (train_qrels, test_qrels) for docs in table.values() for d in docs}
        judged = [d for d in corpus if d["_id"] in needed][:max_documents]
        kept_ids = {d["_id"] for d in judged}
        corpus = judged + [d for d in corpus if d["_id"] not in kept_ids][: max(0, max_documents - len(judged))]
        kept_ids = {d["_id"] for d in corpus}
        train_qrels = {q: t for q, t in train_qrels.items() if set(t) <= kept_ids}
        test_qrels = {q: t for q, t in test_qrels.items() if set(t) <= kept_ids}
        sliced.append(f"{len(corpus)} documents")
    used = set(train_qrels) | set(test_qrels)
    queries = [q for q in queries if q["_id"] in used]
    _write_beir(folder, corpus, queries, {"train": train_qrels, "test": test_qrels})
    del source
    note = f"{name}: " + (", ".join(sliced) + " (sliced)" if sliced else "full")
    return folder, note


# ------------------------------------------------------------------------------------------------------
# Scoring


def _scores(model: str | Path, test: RetrievalDataset, cache: EmbeddingCache | None) -> RunScores:
    encoder = load_encoder(model)
    docs = embed(encoder, [d.full_text for d in test.corpus], role="document", cache=cache, show_progress=True)
    queries = embed(encoder, [q.text for q in test.queries], role="query", cache=cache)
    return evaluate_run(_run_from_vectors(test, queries, docs, 100), test.qrels, METRICS)


def _sts(model: str | Path, sts: Any, cache: EmbeddingCache | None) -> float | None:
    if sts is None:
        return None
    encoder = load_encoder(model)
    left = embed(encoder, [p.text1 for p in sts.pairs], role="document", cache=cache)
    right = embed(encoder, [p.text2 for p in sts.pairs], role="document", cache=cache)
    return float(sts_correlation(np.einsum("ij,ij->i", left, right).tolist(), [p.score for p in sts.pairs])["spearman"])


def plain_arm(folder: Path, setting: str, out: Path, budget_minutes: float, seed: int = 0) -> tuple[Path, float]:
    """Plain sentence-transformers MNRL (batch 32, 1 epoch, lr 2e-5, fp32) on the setting's training pairs."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embedlab.finetune.train import DeadlineStop, base_model_path, deadline_callback

    train, test = load_beir(folder, "train"), load_beir(folder, "test")
    splits = make_splits(train, test, dev_fraction=0, seed=seed)  # the leakage rule, as every arm has it
    if setting == "same-source":
        pairs = pairs_from_judgements(splits.train)
    else:
        defaults = FinetuneConfig()
        pairs = pseudo_pairs(train.corpus, defaults.pseudo_queries, per_kind=defaults.pseudo_max, seed=seed)
    model = SentenceTransformer(base_model_path("minilm-l6"), device="cpu")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "plain-checkpoints"),
        num_train_epochs=1,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_steps=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
    )
    data = {"anchor": [p.example.query for p in pairs], "positive": [p.example.positive for p in pairs]}
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(data),
        loss=MultipleNegativesRankingLoss(model),
        callbacks=[deadline_callback(60 * budget_minutes, reserve=0.0, stop=DeadlineStop(), evaluate=False)],
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save(str(out / "plain-model"))
    return out / "plain-model", seconds


def run_arm(
    arm: str,
    setting: str,
    folder: Path,
    out: Path,
    *,
    budget: float,
    sts: Any,
    guard: Path | None,
    cache: EmbeddingCache,
) -> dict[str, Any] | None:
    test = load_beir(folder, "test")
    zero = _scores("minilm-l6", test, cache)
    started = time.perf_counter()
    if arm == "zero-shot":
        means = dict(zero.means)
        return {"before": means, "after": means, "sts": _sts("minilm-l6", sts, cache), "train_seconds": 0.0}
    if arm == "plain":
        path, seconds = plain_arm(folder, setting, out, budget)
        after = _scores(path, test, None)
        return {
            "before": dict(zero.means),
            "after": dict(after.means),
            "difference": _difference(zero, after, "ndcg@10", 0),
            "sts": _sts(path, sts, None),
            "train_seconds": seconds,
        }
    settings = dict(EMBEDLAB_ARMS[arm])
    teacher = settings.get("teacher")
    if setting == "cross-source":
        if not teacher:
            return None  # corpus queries need a teacher to be labelled
        settings["train_queries"] = "corpus"
    elif teacher:
        settings["train_queries"] = "both"
    config = FinetuneConfig.create(time_budget_minutes=budget or None, **settings)
    result = finetune(
        folder,
        config=config,
        out=out,
        guard=guard,
        cache=cache,
        echo=lambda line: print(line, flush=True),
        show_progress=True,
    )
    print(result, flush=True)
    candidate = result.extra.get("candidate_after")
    return {
        "before": dict(result.before.means),
        "after": dict(result.after.means),
        "difference": result.extra.get("test_difference"),
        "candidate_after": candidate["means"] if candidate else None,
        "dev_decision": result.extra.get("dev_decision"),
        "dev_base": result.training.get("dev_base_ndcg@10"),
        "dev_best_checkpoint": result.training.get("dev_best_ndcg@10"),
        "sts": result.guard.after if result.guard else None,
        "sts_before": result.guard.before if result.guard else None,
        "train_seconds": result.training.get("train_seconds"),
        "steps": result.training.get("steps"),
        "teacher": result.extra.get("teacher"),
        "corpus_queries": result.extra.get("corpus_queries"),
        "wall_command_seconds": time.perf_counter() - started,
    }


# ------------------------------------------------------------------------------------------------------
# Tables


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def tables(results: dict[str, dict[str, Any]], notes: dict[str, str]) -> str:
    lines = []
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for key, row in results.items():
        domain, setting, arm = key.split("|")
        groups.setdefault((domain, setting), []).append((arm, row))
    worst: dict[str, tuple[float, str]] = {}
    for (domain, setting), rows in sorted(groups.items()):
        table = []
        for arm, row in rows:
            diff = row.get("difference") or {}
            interval = diff.get("difference_interval") or {}
            delta = row["after"]["ndcg@10"] - row["before"]["ndcg@10"]
            candidate = row.get("candidate_after")
            table.append(
                [
                    arm,
                    _fmt(row["before"]["ndcg@10"]),
                    _fmt(row["after"]["ndcg@10"]),
                    _fmt(delta, True),
                    f"{_fmt(interval.get('low'), True)} … {_fmt(interval.get('high'), True)}" if interval else "-",
                    _fmt(candidate["ndcg@10"]) if candidate else "-",
                    f"{_fmt(row.get('dev_base'))} → {_fmt(row.get('dev_best_checkpoint'))}"
                    if row.get("dev_base")
                    else "-",
                    _fmt(row["after"].get("recall@100")),
                    _fmt(row.get("sts")),
                    f"{(row.get('wall_seconds') or 0) / 60:.1f}",
                ]
            )
            low = interval.get("low", delta) if interval else delta
            name = f"{domain}/{setting}"
            if arm not in worst or low < worst[arm][0]:
                worst[arm] = (low, f"{name}: Δ {100 * delta:+.2f}, CI low {100 * low:+.2f}")
        title = f"## {domain} — {setting} ({notes.get(domain, '')})"
        headers = ["arm", "before", "after", "Δ", "95% CI of Δ", "rejected", "dev base → best", "R@100", "STSb", "min"]
        lines += [title, "", format_table(headers, table), ""]
    lines += ["## Summary: each arm's worst domain and setting (by the low end of the 95% CI of Δ nDCG@10)", ""]
    lines.append(format_table(["arm", "worst case"], [[arm, text] for arm, (_, text) in sorted(worst.items())]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--arms", default="zero-shot,plain,embedlab,teacher-hybrid")
    parser.add_argument("--out", type=Path, default=Path("runs/transfer"))
    parser.add_argument("--guard", type=Path, default=DATA / "stsb")
    parser.add_argument("--time-budget", type=float, default=15.0, help="minutes of training per arm; 0: none")
    parser.add_argument("--max-test-queries", type=int, default=None)
    parser.add_argument("--max-documents", type=int, default=None)
    args = parser.parse_args()
    cache = EmbeddingCache(cache_root())
    sts = load_sts(args.guard, "test") if args.guard else None
    guard = args.guard / "sts-test.csv" if args.guard else None
    results_dir = args.out / "results"
    notes: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    for file in sorted(results_dir.glob("*.json")) if results_dir.exists() else []:
        saved = json.loads(file.read_text())
        results[saved["key"]] = saved["row"]
        notes.update(saved.get("notes", {}))
    for domain in [d.strip() for d in args.domains.split(",") if d.strip()]:
        folder, note = prepare_domain(
            domain, args.out, max_test=args.max_test_queries, max_documents=args.max_documents
        )
        notes[domain] = note
        for setting in [s.strip() for s in args.settings.split(",") if s.strip()]:
            for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
                if arm not in ("zero-shot", "plain", *EMBEDLAB_ARMS):
                    raise SystemExit(f"unknown arm '{arm}': zero-shot, plain, {', '.join(EMBEDLAB_ARMS)}")
                key = f"{domain}|{setting}|{arm}"
                if key in results:
                    continue
                print(f"== {key} ({note})", flush=True)
                started = time.perf_counter()
                row = run_arm(
                    arm, setting, folder, args.out / "arms" / key.replace("|", "-"),
                    budget=args.time_budget, sts=sts, guard=guard, cache=cache,
                )  # fmt: skip
                if row is None:
                    print(f"   skipped: {arm} has no teacher, and {setting} trains on corpus queries only")
                    continue
                row["wall_seconds"] = time.perf_counter() - started
                results[key] = row
                write_json_atomic(
                    results_dir / f"{key.replace('|', '-')}.json",
                    {"key": key, "row": row, "notes": {domain: note}, "manifest": build_manifest(command="bench")},
                )
    text = tables(results, notes)
    print(text)
    write_text_atomic(args.out / "transfer.md", text + "\n")
    write_json_atomic(args.out / "transfer.json", {"results": results, "notes": notes})


if __name__ == "__main__":
    main()
