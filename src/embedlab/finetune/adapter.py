"""A linear adapter: learn one matrix over the frozen base model's vectors, instead of fine-tuning it.

The base model's vectors of queries and documents come from the embedding cache (documents the comparison or
the mining already encoded are not encoded again). The adapter maps every vector ``v`` to
``normalise(W v)`` — the same map on both sides, so the adapted model is still one encoder — with ``W``
starting at the identity (the adapter starts as the base model) and trained with the in-batch-negatives
objective of MNRL (plus the mined hard negatives, when there are any) in plain PyTorch on vectors: seconds,
not minutes, on a CPU. The dev split picks the best epoch, the identity included.

Saved, the adapted model is the base model's modules followed by a ``Dense`` layer (no bias, no activation)
holding ``W`` and a ``Normalize``: a standard sentence-transformers folder.

Example::

    >>> outcome = train_adapter(query_vectors, positive_vectors, epochs=30, learning_rate=1e-3)  # doctest: +SKIP
    >>> adapted = outcome.adapter.transform(document_vectors)                                     # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embedlab.errors import EmbedlabError

Vectors = NDArray[np.float32]


@dataclass(frozen=True)
class LinearAdapter:
    """``W`` of shape (dim, dim); :meth:`transform` maps rows ``v`` to ``normalise(W v)``."""

    weight: NDArray[np.float32]

    @classmethod
    def identity(cls, dim: int) -> LinearAdapter:
        return cls(np.eye(dim, dtype=np.float32))

    def transform(self, vectors: Vectors) -> Vectors:
        out = np.asarray(vectors, dtype=np.float32) @ self.weight.T
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class AdapterOutcome:
    adapter: LinearAdapter
    epochs: int
    best_epoch: int
    train_seconds: float
    dev_history: list[dict[str, float]] = field(default_factory=list)
    loss_history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
            "dev_history": self.dev_history,
            "loss_history": self.loss_history,
            "weight_distance_from_identity": float(
                np.linalg.norm(self.adapter.weight - np.eye(len(self.adapter.weight)))
            ),
        }


def train_adapter(
    queries: Vectors,
    positives: Vectors,
    negatives: Vectors | None = None,
    *,
    epochs: int = 30,
    learning_rate: float = 1e-3,
    batch_size: int = 64,
    scale: float = 20.0,
    seed: int = 0,
    dev_score: Callable[[LinearAdapter], float] | None = None,
) -> AdapterOutcome:
    """Train ``W`` on (query, positive[, negatives]) vectors; ``negatives`` has shape (n, k, dim).

    With ``dev_score`` (higher is better) the best epoch is kept, epoch 0 (the identity) included; without
    it, the last.
    """
    import torch

    if len(queries) != len(positives) or len(queries) < 2:
        raise EmbedlabError("the adapter needs at least 2 (query, positive) pairs of vectors")
    dim = queries.shape[1]
    generator = torch.Generator().manual_seed(seed)
    weight = torch.nn.Parameter(torch.eye(dim))
    optimiser = torch.optim.Adam([weight], lr=learning_rate)
    q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    p_all = torch.from_numpy(np.ascontiguousarray(positives, dtype=np.float32))
    n_all = torch.from_numpy(np.ascontiguousarray(negatives, dtype=np.float32)) if negatives is not None else None

    def current() -> LinearAdapter:
        return LinearAdapter(weight.detach().numpy().copy())

    best = current()
    best_score = dev_score(best) if dev_score else None
    best_epoch = 0
    dev_history = [{"epoch": 0.0, "ndcg@10": best_score}] if best_score is not None else []
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(q_all), generator=generator)
        total = 0.0
        for i in range(0, len(order), batch_size):
            index = order[i : i + batch_size]
            q = torch.nn.functional.normalize(q_all[index] @ weight.T, dim=-1)
            docs = [p_all[index]]
            if n_all is not None:
                docs.append(n_all[index].reshape(-1, dim))
            d = torch.nn.functional.normalize(torch.cat(docs) @ weight.T, dim=-1)
            logits = scale * q @ d.T
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(index)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        losses.append(total / len(order))
        if dev_score is not None:
            score = dev_score(current())
            dev_history.append({"epoch": float(epoch), "ndcg@10": score})
            if best_score is None or score > best_score:
                best, best_score, best_epoch = current(), score, epoch
        else:
            best, best_epoch = current(), epoch
    return AdapterOutcome(
        adapter=best,
        epochs=epochs,
        best_epoch=best_epoch,
        train_seconds=time.perf_counter() - start,
        dev_history=dev_history,
        loss_history=losses,
    )


def save_adapter_model(base_path: str, adapter: LinearAdapter, model_dir: Path) -> Path:
    """The base model plus ``Dense(W)`` and ``Normalize``, saved as a sentence-transformers folder."""
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    base = SentenceTransformer(base_path, device="cpu")
    dim = adapter.weight.shape[0]
    dense = Dense(
        in_features=dim,
        out_features=dim,
        bias=False,
        activation_function=None,
        init_weight=torch.from_numpy(adapter.weight.copy()),
    )
    model = SentenceTransformer(modules=[*base, dense, Normalize()], device="cpu")
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(model_dir))
    return model_dir
