"""Query-side distillation: fine-tune only the query encoder; documents keep the base model's vectors.

The full-model recipes move every document vector, and gains measured on documents near the training data did not
carry over to the rest (the transfer issue; the README's "Fine-tuning: what to expect"). Here the documents stay
where the base model put them, and only a copy of the model that encodes *queries* learns. For each training query
(judged, or made from the corpus) the base model retrieves ``depth`` candidates (the query's known positive forced
in); a teacher scores them; the student's softmax over ``scale × cosine`` to the fixed candidate vectors is pulled
towards the teacher's softmax at temperature ``tau`` (KL divergence, a listwise distillation).

Why this shape:

- a corpus already indexed with the base model stays valid: only queries are encoded with the new weights;
- a document the training never touched is scored exactly as before, so what the model learns is how to place a
  query among the documents, not how to move the documents it happened to see;
- it is cheap: only queries (short) go through the network, candidates come from the embedding cache.

Measured once on SciFact (all-MiniLM-L6-v2, leakage rule, 15,338 queries: the judged training queries plus
corpus queries, labelled by BM25 + mpnet-base; one epoch, 479 steps; ``benchmarks/finetune_query_side.py``): at the
dev-best step (400) dev 67.43 → 72.27 and the held-out test queries 64.51 → 66.09 nDCG@10 (+1.58); the full-model
MarginMSE recipe on the same kind of labels had reached dev 70.52 and test 63.72 (the README). Four epochs plateau
there (test 65.3–66.5 from step 480 to 1,917), while the teacher reranking the same candidates scores 69.76: a
student distilled this way recovers about a third of its teacher's gain on SciFact's claims.

It does not carry over to queries of another kind than the training ones. Cross-source on CoNaLa and nl2bash
(training queries: keywords made from the code; measured: the real questions; ``benchmarks/finetune_transfer.py``,
teachers BM25, BM25 + mpnet-base and mpnet-base, up to 10 epochs) no step beat the base significantly on the dev
questions; the rejected models scored 65.80 against the base's 66.06 (CoNaLa) and 53.54 against 53.37 (nl2bash).
The query tower learns where *its training queries* belong, so it helps when they resemble the user's (judged
queries, or a log of real ones), not when they are keyword lists. The full-model recipe with the same mpnet-base
teacher, which also moves the documents, gained +1.94 on nl2bash (95% CI +1.19 to +2.70).

Saved, the model is a standard sentence-transformers folder with a ``Router``: ``encode_query`` runs the tuned
modules, ``encode_document`` (and plain ``encode``) the base ones.

Example::

    >>> rows = candidate_rows(query_vectors, document_vectors, positives, depth=50)             # doctest: +SKIP
    >>> outcome = train_query_encoder(model, queries, rows, teacher_scores, document_vectors)   # doctest: +SKIP
    >>> save_query_side_model(model, base_path, out / "model")                                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from embedlab.errors import EmbedlabError
from embedlab.retrieval import exact_top_k

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vectors = NDArray[np.float32]


def candidate_rows(
    queries: Vectors, documents: Vectors, positives: Sequence[int | None], *, depth: int
) -> NDArray[np.int64]:
    """The base model's top ``depth`` corpus rows per query, the known positive put in the last place if missing."""
    _, found = exact_top_k(queries, documents, min(depth, len(documents)))
    rows = np.array(found, dtype=np.int64)
    for i, positive in enumerate(positives):
        if positive is not None and positive not in rows[i]:
            rows[i, -1] = positive
    return rows


@dataclass
class QuerySideOutcome:
    """How query-side training went: the step chosen on dev (0: the base model), the curves and the time."""

    steps: int
    best_step: int
    train_seconds: float
    queries: int
    depth: int
    dev_history: list[dict[str, float]] = field(default_factory=list)
    loss_history: list[float] = field(default_factory=list)

    @property
    def kept_base(self) -> bool:
        return self.best_step == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": "query",
            "steps": self.steps,
            "best_step": self.best_step,
            "kept_base": self.kept_base,
            "train_seconds": round(self.train_seconds, 2),
            "queries": self.queries,
            "candidates_per_query": self.depth,
            "dev_history": self.dev_history,
            "loss_every_10_steps": self.loss_history,
        }


def train_query_encoder(
    model: SentenceTransformer,
    queries: Sequence[str],
    candidates: NDArray[np.int64],
    teacher_scores: NDArray[np.float32],
    documents: Vectors,
    *,
    epochs: float = 1.0,
    learning_rate: float = 2e-5,
    batch_size: int = 32,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    tau: float = 0.05,
    scale: float = 20.0,
    seed: int = 0,
    dev_score: Callable[[SentenceTransformer], float] | None = None,
    eval_steps: int = 100,
    time_budget_seconds: float | None = None,
    show_progress: bool = False,
) -> QuerySideOutcome:
    """Train ``model`` (in place) so its query vectors rank ``candidates`` as the teacher does; see the module.

    ``dev_score`` (higher is better) is measured before training and every ``eval_steps``; ``model`` ends holding
    the best weights seen, the base's included. Without it the last weights are kept.
    """
    import torch

    if len(queries) != len(candidates) or candidates.shape != teacher_scores.shape:
        raise EmbedlabError(
            f"query-side training: {len(queries)} queries, candidates {candidates.shape}, "
            f"teacher scores {teacher_scores.shape} do not match"
        )
    if len(queries) < batch_size:
        raise EmbedlabError(f"query-side training needs at least one batch: {len(queries)} queries < {batch_size}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    started = time.perf_counter()
    fixed = torch.from_numpy(np.ascontiguousarray(documents, dtype=np.float32))
    targets = torch.softmax(torch.from_numpy(np.asarray(teacher_scores, dtype=np.float32)) / tau, dim=-1)
    rows = torch.from_numpy(candidates)
    steps = max(1, int(epochs * len(queries) / batch_size))
    warmup = max(1, round(warmup_ratio * steps))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    outcome = QuerySideOutcome(steps=steps, best_step=0, train_seconds=0.0, queries=len(queries), depth=rows.shape[1])

    best_score = float("-inf")
    best_state: dict[str, Any] | None = None

    def evaluate(step: int) -> None:
        nonlocal best_score, best_state
        if dev_score is None:
            return
        model.eval()
        with torch.no_grad():
            score = float(dev_score(model))
        model.train()
        outcome.dev_history.append({"step": step, "ndcg@10": score})
        if score > best_score:
            best_score, outcome.best_step = score, step
            best_state = copy.deepcopy(model.state_dict())

    evaluate(0)
    order = list(range(len(queries)))
    step = 0
    running = 0.0
    model.train()
    with tqdm(total=steps, desc="query-side training", unit="step", disable=not show_progress) as bar:
        while step < steps:
            rng.shuffle(order)
            for start in range(0, len(order) - batch_size + 1, batch_size):
                batch = order[start : start + batch_size]
                features = model.tokenize([queries[i] for i in batch])
                features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
                vectors = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1).cpu()
                logits = scale * torch.einsum("bd,bkd->bk", vectors, fixed[rows[batch]])
                loss = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), targets[batch], reduction="batchmean")
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                step += 1
                running += float(loss.item())
                bar.update(1)
                if step % 10 == 0:
                    outcome.loss_history.append(round(running / 10, 5))
                    running = 0.0
                over_budget = time_budget_seconds is not None and time.perf_counter() - started > time_budget_seconds
                if step % eval_steps == 0 or step == steps or over_budget:
                    evaluate(step)
                if step >= steps or over_budget:
                    steps = step
                    break
    outcome.steps = steps
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    outcome.train_seconds = time.perf_counter() - started
    return outcome


def save_query_side_model(tuned: SentenceTransformer, base_path: str, model_dir: Path) -> Path:
    """Save a sentence-transformers folder that routes queries to ``tuned`` and documents to the base model."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    base = SentenceTransformer(base_path, device="cpu")
    tuned.cpu()
    # SentenceTransformer iterates torch modules; Router wants its own Module type (the same objects).
    query_modules: list[Any] = [*tuned]
    router = Router.for_query_document(query_modules=query_modules, document_modules=[*base])
    routed = SentenceTransformer(modules=[router], device="cpu")
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-", dir=model_dir.parent))
    routed.save(str(staging))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    staging.rename(model_dir)
    return model_dir
