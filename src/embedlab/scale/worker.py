"""What every engine does where the encoding runs: load one model once, encode rows of any role, make shards.

:class:`ShardEncoder` is shared by :class:`~embedlab.scale.engines.LocalEngine` (in this process) and
:class:`~embedlab.scale.ray_engine.EncodeActor` (one per Ray actor), so the two engines keep only what differs:
where the rows come from and how the results get back. Both encode through :func:`embedlab.embedding.embed`, so a
text gets the same vector on either engine for backends that give a text the same vector in any batch.

Example::

    >>> worker = ShardEncoder.load("minilm-l6", "auto")
    >>> shard = worker.shard(task)                  # an EncodedShard, vectors in the task's order
    >>> vectors = worker.encode(texts, roles)       # rows of mixed roles (a Ray batch)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from embedlab.embedding import EmbeddingCache, embed
from embedlab.models.encoders import Encoder, Role
from embedlab.scale.shards import EncodedShard, ShardTask


def encoder_backend(encoder: Encoder) -> str:
    """The backend an encoder runs on (``auto`` resolved); models of other kinds have one runtime: their kind."""
    resolved = getattr(encoder, "resolved_backend", None)
    return str(resolved) if resolved else encoder.spec.kind


class ShardEncoder:
    """One loaded encoder, its fingerprint and resolved backend, and the encoding both engines share."""

    def __init__(self, encoder: Encoder, *, batch_size: int = 32, cache: EmbeddingCache | None = None):
        self.encoder = encoder
        self.fingerprint = encoder.fingerprint
        self.backend = encoder_backend(encoder)
        self.batch_size = batch_size
        self.cache = cache

    @classmethod
    def load(
        cls,
        model: str,
        backend: str,
        *,
        batch_size: int = 32,
        cache: EmbeddingCache | None = None,
        sample: Any = None,
        factory: Callable[[str, str], Encoder] | None = None,
    ) -> ShardEncoder:
        """Load ``model`` once; ``sample`` is the driver's corpus sample, so that ``auto`` judges, and int8 is
        fitted, on the user's documents wherever this runs (and the fingerprints match the local path's)."""
        from embedlab.models.backends import using_sample

        with using_sample(sample):
            if factory is not None:
                encoder = factory(model, backend)
            else:
                from embedlab.models.loading import load_encoder

                encoder = load_encoder(model, backend=backend)
            # Resolves `auto` inside the sample's scope: the fingerprint names the backend chosen for it.
            return cls(encoder, batch_size=batch_size, cache=cache)

    def encode(self, texts: Sequence[str], roles: Sequence[str]) -> NDArray[np.float32]:
        """One vector per text, each encoded in its own role; texts of one role go to :func:`embed` together,
        which sorts them by length over the whole batch: a Ray batch of a whole shard pads as little as the local
        path (batches of 256 in arrival order cost the Ray engine about 15% on MiniLM)."""
        vectors = np.zeros((len(texts), self.encoder.dim), dtype=np.float32)
        for role in dict.fromkeys(roles):
            rows = [i for i, r in enumerate(roles) if r == role]
            vectors[rows] = embed(
                self.encoder,
                [texts[i] for i in rows],
                role=cast(Role, role),
                cache=self.cache,
                batch_size=self.batch_size,
            )
        return vectors

    def shard(self, task: ShardTask) -> EncodedShard:
        """The task encoded: its rows in order, with this encoder's fingerprint and backend on each."""
        return EncodedShard(
            role=task.role,
            index=task.index,
            ids=list(task.ids),
            keys=list(task.keys),
            vectors=self.encode(task.texts, [task.role] * len(task.texts)),
            fingerprints=[self.fingerprint] * len(task.ids),
            backends=[self.backend] * len(task.ids),
        )


def progress_bar(tasks: Sequence[ShardTask] | int, description: str, show: bool) -> Any:
    """The one progress bar of an encode call, counted in texts (``tasks``: the tasks, or the texts' count)."""
    from tqdm.auto import tqdm

    total = tasks if isinstance(tasks, int) else sum(len(t.ids) for t in tasks)
    return tqdm(total=total, desc=description, unit="text", disable=not show)
