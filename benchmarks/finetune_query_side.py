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

Training is the library's own loop (``embedlab.finetune.query_side.train_query_encoder``, as ``--train-side query``
runs it). It prints nDCG@10 on the dev queries and the held-out test queries every ``--eval-every`` steps, base
first, then the test score of the step the dev queries chose (the test queries never choose).

Example::

    EMBEDLAB_CACHE=/tmp/cache python benchmarks/finetune_query_side.py --data ../shared/data/scifact --epochs 1
"""

from __future__ import annotations

import argparse
import os
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
from embedlab.finetune.query_side import candidate_rows, train_query_encoder
from embedlab.finetune.splits import make_splits, near_duplicate_key
from embedlab.finetune.teacher import load_teacher
from embedlab.manifest import hardware
from embedlab.models.loading import load_encoder
from embedlab.retrieval import exact_top_k


def ranked_ndcg_at_10(dataset: RetrievalDataset, scores: NDArray[np.float32], rows: NDArray[np.int64]) -> float:
    """nDCG@10 (points) of each query's corpus ``rows`` ranked by ``scores`` (same shape)."""
    ids = [d.id for d in dataset.corpus]
    run = {
        q.id: {ids[int(j)]: float(s) for s, j in zip(srow, jrow, strict=True)}
        for q, srow, jrow in zip(dataset.queries, scores, rows, strict=True)
    }
    return 100 * evaluate_run(run, dataset.qrels, ["ndcg@10"]).means["ndcg@10"]


def ndcg_at_10(model: SentenceTransformer, dataset: RetrievalDataset, documents: NDArray[np.float32]) -> float:
    """nDCG@10 (points) of ``model``'s query vectors against the fixed document vectors."""
    model.eval()
    with torch.no_grad():
        queries = model.encode(
            [q.text for q in dataset.queries], batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
    model.train()
    scores, rows = exact_top_k(np.asarray(queries, dtype=np.float32), documents, 10)
    return ranked_ndcg_at_10(dataset, scores, np.asarray(rows, dtype=np.int64))


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
    started = time.perf_counter()
    cache_root = os.environ.get("EMBEDLAB_CACHE")
    cache = EmbeddingCache(Path(cache_root)) if cache_root else None
    machine = hardware()
    print(f"CPU: {machine['cpu']} ({', '.join(machine['cpu_flags'])}), torch threads {torch.get_num_threads()}")

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
    rows = candidate_rows(base_queries, documents, [row_of[p.positive_id] for p in pairs], depth=args.depth)
    teacher = load_teacher(args.teacher, corpus, cache=cache, show_progress=True)
    labels = np.concatenate(
        [teacher.score(queries[s : s + 2048], rows[s : s + 2048]) for s in range(0, len(queries), 2048)]
    )
    print(f"teacher {args.teacher} scored {rows.size} (query, candidate) pairs ({time.perf_counter() - started:.0f} s)")
    # The teacher reranking the base's candidates is what a student distilled from it can reach, at best.
    test_texts = [q.text for q in splits.test.queries]
    test_rows = candidate_rows(
        embed(base, test_texts, role="query", cache=cache), documents, [None] * len(test_texts), depth=args.depth
    )
    ceiling = ranked_ndcg_at_10(splits.test, teacher.score(test_texts, test_rows), test_rows)
    print(f"teacher reranking the base's top {args.depth} for the test queries: {ceiling:.2f}")

    model: SentenceTransformer = base.model
    base_test = ndcg_at_10(model, splits.test, documents)
    curve: list[tuple[float, float]] = []

    def dev_then_test(tuned: SentenceTransformer) -> float:
        """The library's dev score, with the held-out test score printed beside it (never used to choose)."""
        dev, held_out = ndcg_at_10(tuned, splits.dev, documents), ndcg_at_10(tuned, splits.test, documents)
        curve.append((dev, held_out))
        step = min(args.eval_every * (len(curve) - 1), int(args.epochs * len(queries) / args.batch_size))
        print(
            f"step {step}: dev {dev:.2f} ({dev - curve[0][0]:+.2f})  test {held_out:.2f} ({held_out - base_test:+.2f})"
            f"  ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        return dev

    outcome = train_query_encoder(
        model,
        queries,
        rows,
        labels,
        documents,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        tau=args.tau,
        scale=args.scale,
        seed=args.seed,
        dev_score=dev_then_test,
        eval_steps=args.eval_every,
        show_progress=True,
    )
    kept = ndcg_at_10(model, splits.test, documents)
    print(
        f"dev-best step {outcome.best_step} of {outcome.steps}: test {base_test:.2f} -> {kept:.2f} "
        f"({kept - base_test:+.2f}); {outcome.train_seconds:.0f} s of training"
    )


if __name__ == "__main__":
    main()
