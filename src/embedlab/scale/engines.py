"""Engines: where the encoding of shards runs — this process (``local``) or a Ray cluster (``ray``).

An :class:`Engine` takes a model name, a backend name and the :class:`~embedlab.scale.shards.ShardTask`
s still to encode, and hands back each :class:`~embedlab.scale.shards.EncodedShard` to ``on_shard`` as soon as it
is complete (the caller writes it, so a killed run keeps every shard handed back before). Engines are picked by
name from :data:`ENGINES` (:func:`get_engine`).

- ``local`` loads the model once in this process and encodes shard after shard
  (:class:`~embedlab.scale.worker.ShardEncoder`, through :func:`embedlab.embedding.embed`), so texts already in
  the embedding cache are not encoded again.
- ``ray`` (:class:`~embedlab.scale.ray_engine.RayEngine`) runs Ray Data's ``map_batches`` over the pending rows
  with an actor pool: each actor loads the model once and resolves the backend (``auto`` included) on its own
  node; the driver collects the rows by shard.

Example::

    >>> engine = get_engine("ray", address=None)    # None: start a local Ray with this machine's CPUs
    >>> engine.encode(model="minilm-l6", backend="auto", tasks=tasks, on_shard=write)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Protocol

from embedlab.embedding import EmbeddingCache
from embedlab.errors import EmbedlabError
from embedlab.models.backends import current_sample
from embedlab.models.encoders import Encoder
from embedlab.scale.shards import EncodedShard, ShardTask
from embedlab.scale.worker import ShardEncoder, encoder_backend, progress_bar

__all__ = ["ENGINES", "Engine", "LocalEngine", "encoder_backend", "get_engine"]


class Engine(Protocol):
    """Encodes shards; calls ``on_shard`` once per task, with all the task's rows, in the task's order."""

    name: str

    def encode(
        self,
        *,
        model: str,
        backend: str,
        tasks: Sequence[ShardTask],
        on_shard: Callable[[EncodedShard], None],
        batch_size: int = 32,
        cache: EmbeddingCache | None = None,
        show_progress: bool = False,
    ) -> None: ...

    def describe(self) -> dict[str, object]:
        """What ran the work (for the manifest): engine name, cluster address, actors, nodes."""
        ...

    def close(self) -> None:
        """Release what the engine started (a local Ray); a cluster given by address keeps running."""
        ...


class LocalEngine:
    """Encodes in this process, one model load per :meth:`encode` call."""

    name = "local"

    def __init__(self, encoder_factory: Callable[[str, str], Encoder] | None = None):
        self._factory = encoder_factory

    def encode(
        self,
        *,
        model: str,
        backend: str,
        tasks: Sequence[ShardTask],
        on_shard: Callable[[EncodedShard], None],
        batch_size: int = 32,
        cache: EmbeddingCache | None = None,
        show_progress: bool = False,
    ) -> None:
        if not tasks:
            return
        worker = ShardEncoder.load(
            model, backend, batch_size=batch_size, cache=cache, sample=current_sample(), factory=self._factory
        )
        with progress_bar(tasks, f"embed {model}", show_progress) as progress:
            for task in tasks:
                on_shard(worker.shard(task))
                progress.update(len(task.ids))

    def describe(self) -> dict[str, object]:
        return {"name": self.name}

    def close(self) -> None:
        return None


ENGINES = ("local", "ray")


def get_engine(
    name: str, *, address: str | None = None, actors: int | None = None, cpus_per_actor: float | None = None
) -> Engine:
    """The engine called ``name``; ``address`` (a Ray cluster, ``host:port`` or ``ray://...``) and the actor
    settings apply to ``ray``. An unknown name answers with the valid ones."""
    if name == "local":
        if address:
            raise EmbedlabError("--ray-address needs --engine ray (fix: add --engine ray, or drop --ray-address)")
        return LocalEngine()
    if name == "ray":
        try:
            import ray.data  # noqa: F401
        except ImportError:
            raise EmbedlabError(
                "--engine ray needs Ray Data, which is not installed (fix: pip install 'embedlab[ray]')"
            ) from None
        from embedlab.scale.ray_engine import RayEngine

        return RayEngine(address=address, actors=actors, cpus_per_actor=cpus_per_actor)
    close = difflib.get_close_matches(name, ENGINES, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise EmbedlabError(f"--engine {name}: unknown engine ({hint}fix: choose one of {', '.join(ENGINES)})")
