"""Query-side distillation: fine-tune only the query encoder; the corpus keeps the base model's vectors.

An experiment towards the transfer issue (fine-tuning that helps on documents it never saw). The full-model
recipes move the document vectors too, and on SciFact under the leakage rule they gained on the documents they
trained near and lost on the rest (see the README's "Fine-tuning: what to expect"). Here the documents stay where
the base model put them, and only the query tower learns to reproduce a teacher's ranking of each training
query's candidates:

- training queries: the judged training queries (dev split removed) plus pseudo-queries made from the corpus
  (title, inverse cloze, keywords; none from a dev-relevant document, none equal to a dev or test query);
- candidates: the base model's top ``--depth`` documents for each query (its known positive forced in);
- labels: the teacher's scores over those candidates (``hybrid:mpnet-base`` by default, through the embedding
  cache), turned into a distribution with temperature ``--tau``;
- loss: KL divergence between that distribution and the student's softmax over ``--scale`` × cosine, the
  documents' vectors fixed (so the index built with the base model stays valid after fine-tuning).

It prints nDCG@10 on the dev queries and the held-out test queries every ``--eval-every`` steps, base first.

Example::

    EMBEDLAB_CACHE=/tmp/cache python benchmarks/finetune_query_side.py --data ../shared/data/scifact --epochs 1
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from sentence_transformers import SentenceTransformer

from embedlab.data.dataset import RetrievalDataset
from embedlab.data.loaders import load_beir
from embedlab.embedding import EmbeddingCache, embed
from embedlab.evaluate.metrics import evaluate_run
from embedlab.finetune.pairs import TrainPair, pairs_from_judgements, pseudo_pairs
from embedlab.finetune.splits import make_splits, near_duplicate_key
from embedlab.finetune.teacher import load_teacher
from embedlab.models.loading import load_encoder
from embedlab.retrieval import exact_top_k


def ndcg_at_10(model: SentenceTransformer, dataset: RetrievalDataset, documents: NDArray[np.float32]) -> float:
    """nDCG@10 (points) of ``model``'s query vectors against the fixed document vectors."""
    model.eval()
    with torch.no_grad():
        queries = model.encode(
            [q.text for q in dataset.queries], batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
    model.train()
    scores, rows = exact_top_k(np.asarray(queries, dtype=np.float32), documents, 10)
    ids = [d.id for d in dataset.corpus]
    run = {
        q.id: {ids[int(j)]: float(s) for s, j in zip(srow, jrow, strict=True)}
        for q, srow, jrow in zip(dataset.queries, scores, rows, strict=True)
    }
    return 100 * evaluate_run(run, dataset.qrels, ["ndcg@10"]).means["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--base", default="minilm-l6")
    parser.add_argument("--teacher", default="hybrid:mpnet-base")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tau", type=float, default=0.05, help="teacher temperature")
    parser.add_argument("--scale", type=float, default=20.0, help="student logits: scale × cosine")
    parser.add_argument("--depth", type=int, default=50, help="candidates per training query")
    parser.add_argument("--per-kind", type=int, default=5000, help="pseudo-queries per kind, at most")
    parser.add_argument("--no-judged", action="store_true", help="train on corpus-made queries only")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    started = time.perf_counter()
    cache_root = os.environ.get("EMBEDLAB_CACHE")
    cache = EmbeddingCache(Path(cache_root)) if cache_root else None
    print(f"CPU: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")

    train, test = load_beir(args.data, "train"), load_beir(args.data, "test")
    splits = make_splits(train, test, dev_fraction=0.1, seed=args.seed)  # as its README figures were measured
    corpus = list(train.corpus)
    row_of = {d.id: i for i, d in enumerate(corpus)}
    base = load_encoder(args.base, backend="torch")
    documents = embed(base, [d.full_text for d in corpus], role="document", cache=cache, show_progress=True)

    dev_documents = {d for q in splits.dev.qrels for d in splits.dev.qrels[q]}
    held = {near_duplicate_key(q.text) for q in (*splits.test.queries, *splits.dev.queries)}
    pairs: list[TrainPair] = [] if args.no_judged else pairs_from_judgements(splits.train)
    for pair in pseudo_pairs(corpus, ("title", "cloze", "keywords"), per_kind=args.per_kind, seed=args.seed):
        if pair.positive_id not in dev_documents and near_duplicate_key(pair.example.query) not in held:
            pairs.append(pair)
    queries = [p.example.query for p in pairs]
    print(f"{len(pairs)} training queries")

    base_queries = embed(base, queries, role="query", cache=cache, show_progress=True)
    _, found = exact_top_k(base_queries, documents, args.depth)
    rows = np.asarray(found, dtype=np.int64)
    for i, pair in enumerate(pairs):
        if row_of[pair.positive_id] not in rows[i]:
            rows[i, -1] = row_of[pair.positive_id]
    teacher = load_teacher(args.teacher, corpus, cache=cache, show_progress=True)
    labels = np.concatenate(
        [teacher.score(queries[s : s + 2048], rows[s : s + 2048]) for s in range(0, len(queries), 2048)]
    )
    print(f"teacher {args.teacher} scored {rows.size} (query, candidate) pairs ({time.perf_counter() - started:.0f} s)")

    model: SentenceTransformer = base.model
    before = ndcg_at_10(model, splits.dev, documents), ndcg_at_10(model, splits.test, documents)
    print(f"base: dev {before[0]:.2f}  test {before[1]:.2f}")
    fixed = torch.from_numpy(documents)
    targets = torch.softmax(torch.from_numpy(labels) / args.tau, dim=-1)
    candidates = torch.from_numpy(rows)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.01)
    steps = int(args.epochs * len(queries) / args.batch_size)
    warmup = max(1, round(0.1 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    order = list(range(len(queries)))
    step = 0
    model.train()
    while step < steps:
        rng.shuffle(order)
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            if step >= steps:
                break
            batch = order[start : start + args.batch_size]
            features = model.tokenize([queries[i] for i in batch])
            vectors = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)
            logits = args.scale * torch.einsum("bd,bkd->bk", vectors, fixed[candidates[batch]])
            loss = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), targets[batch], reduction="batchmean")
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % args.eval_every == 0 or step == steps:
                dev = ndcg_at_10(model, splits.dev, documents)
                held_out = ndcg_at_10(model, splits.test, documents)
                elapsed = time.perf_counter() - started
                print(
                    f"step {step}/{steps}: loss {loss.item():.4f}  dev {dev:.2f} ({dev - before[0]:+.2f})  "
                    f"test {held_out:.2f} ({held_out - before[1]:+.2f})  ({elapsed:.0f} s)"
                )


if __name__ == "__main__":
    main()
