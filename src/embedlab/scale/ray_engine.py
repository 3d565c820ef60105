"""The ``ray`` engine: Ray Data encodes the shards across a cluster, with one model load per actor.

The pending rows (role, shard number, row number, id, cache key, text) go into a Ray Dataset: read from the corpus
file by Ray Data on the cluster (:meth:`RayEngine.encode_corpus`, :mod:`embedlab.scale.corpus`), or handed over
by the driver, one block per shard (``ray.data.from_arrow``: the queries, and data only the driver can load);
``map_batches`` runs :class:`EncodeActor` over them with an actor pool
(``ray.data.ActorPoolStrategy``). Each actor loads the model once, in its constructor, and resolves the backend on
its own node — with ``auto``, each node's calibration picks the fastest backend that keeps the vectors there — and
returns, per row, the vector and the fingerprint of the encoder that made it. The driver reads the results as they
stream in (``iter_batches``), groups them by shard, and hands each complete shard to ``on_shard``.

Sizing: by default one actor per node (each takes the CPUs of the smallest node); ``actors`` and
``cpus_per_actor`` override. An actor reserves three quarters of its CPUs in Ray's accounting, not all of them:
with every CPU reserved by actors, Ray Data's own tasks starve and the pool deadlocks (seen on 2-CPU machines).

Faults: Ray Data's actor pool restarts actors without limit and retries their tasks (its defaults,
``max_restarts=-1`` and ``max_task_retries=-1``), so a killed worker process costs the batch it was encoding,
which runs again elsewhere. The output of a batch whose actor died is never delivered, and the driver keeps one
row per (role, shard, row) whatever arrives, so each text is written exactly once (:attr:`RayEngine.duplicates`
counts any dropped repeat). A killed *driver* loses only the shards not yet written; a re-run encodes the rest
(see :mod:`embedlab.scale.shards`).

Workers need embedlab importable and, for packaged models, the model packages installed on every node; they use
their own node's ``EMBEDLAB_CACHE`` for exported backends and calibrations. With no ``address``, a local Ray is
started with this machine's CPUs and stopped again by :meth:`RayEngine.close`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from embedlab.embedding import EmbeddingCache
from embedlab.errors import EmbedlabError
from embedlab.models.backends import current_sample
from embedlab.models.encoders import Role
from embedlab.scale.shards import EncodedShard, ShardTask
from embedlab.scale.worker import ShardEncoder, progress_bar

if TYPE_CHECKING:
    from embedlab.scale.corpus import CorpusFile

RESERVED_SHARE = 0.75
"""The share of an actor's CPUs it reserves in Ray's accounting; the rest keeps Ray Data's own tasks running."""


class EncodeActor:
    """A Ray Data actor: loads one model once, then encodes every batch it is given (documents and queries)."""

    def __init__(self, *, model: str, backend: str, batch_size: int, threads: int, sample: Any = None):
        import ray
        import torch

        # Ray sets OMP_NUM_THREADS to the whole CPUs an actor reserves (1 for a fractional share); the actor is
        # sized to use ``threads`` cores (OpenVINO and ONNX Runtime take theirs from the CPU affinity, which Ray
        # leaves whole).
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        self.worker = ShardEncoder.load(model, backend, batch_size=batch_size, sample=sample)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.worker.encode([str(t) for t in batch["text"]], [str(r) for r in batch["role"]])
        count = len(vectors)
        return {
            "role": batch["role"],
            "shard": batch["shard"],
            "row": batch["row"],
            "id": batch["id"],
            "key": batch["key"],
            "vector": vectors,
            "fingerprint": np.array([self.worker.fingerprint] * count, dtype=object),
            "backend": np.array([self.worker.backend] * count, dtype=object),
            "node": np.array([self.node] * count, dtype=object),
        }


def _one_line(exc: BaseException) -> str:
    """The last informative line of a (long, multi-line) Ray error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or [type(exc).__name__])[-1][:300]


class RayEngine:
    """Encodes shards with Ray Data on the cluster at ``address`` (``None``: a local Ray started here)."""

    name = "ray"

    def __init__(self, *, address: str | None = None, actors: int | None = None, cpus_per_actor: float | None = None):
        if actors is not None and actors < 1:
            raise EmbedlabError(f"--ray-actors must be 1 or more (got {actors})")
        if cpus_per_actor is not None and cpus_per_actor <= 0:
            raise EmbedlabError(f"CPUs per actor must be more than 0 (got {cpus_per_actor})")
        self.address = address
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.duplicates = 0
        self.rows_per_node: dict[str, int] = {}
        self._started = False
        self._pool: tuple[int, float] | None = None

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            self._quiet()
            return
        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                # A Ray private to this process, on loopback: token auth would only write a token under $HOME.
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
                self._started = True
        except Exception as exc:
            where = self.address or "a local Ray"
            raise EmbedlabError(
                f"cannot start or reach {where}: {_one_line(exc)} (fix: check --ray-address, e.g. 10.0.0.5:6379, "
                "or leave it out to start a local Ray)"
            ) from None
        self._quiet()

    @staticmethod
    def _quiet() -> None:
        import ray.data

        # The driver shows one bar of its own; Ray Data's would log a status block every few seconds.
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"

    def pool(self) -> tuple[int, float]:
        """How many actors, and the CPUs each reserves, for the cluster as it is now."""
        if self._pool is None:
            import ray

            self._connect()
            node_cpus = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
            node_cpus = [c for c in node_cpus if c > 0] or [1.0]
            per_actor = self.cpus_per_actor or min(node_cpus)
            actors = self.actors or max(1, sum(int(c // per_actor) for c in node_cpus))
            self._pool = (actors, per_actor * RESERVED_SHARE)
        return self._pool

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
        """See :class:`~embedlab.scale.engines.Engine`. ``cache`` is not read here: the workers may be other
        machines; the caller fills the cache from the shards."""
        self.encode_corpus(
            model=model,
            backend=backend,
            corpus=None,
            pending=(),
            tasks=tasks,
            on_shard=on_shard,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    def encode_corpus(
        self,
        *,
        model: str,
        backend: str,
        corpus: CorpusFile | None,
        pending: Sequence[int],
        tasks: Sequence[ShardTask] = (),
        on_shard: Callable[[EncodedShard], None],
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> None:
        """Encode the document shards numbered ``pending`` of ``corpus``, which Ray Data reads on the cluster
        (:func:`~embedlab.scale.corpus.ray_rows`), together with ``tasks`` (rows the driver holds: the queries);
        ``on_shard`` gets each shard as in :meth:`encode`. A shard whose keys do not match the scan's digest is an
        error, never written."""
        if not tasks and not (corpus and pending):
            return
        import pyarrow as pa
        import ray
        import ray.data

        actors, reserved = self.pool()
        expected: dict[tuple[str, int], tuple[int, str | None]] = {
            (task.role, task.index): (len(task.ids), None) for task in tasks
        }
        parts = []
        if corpus is not None and pending:
            from embedlab.scale.corpus import ray_rows

            expected.update({("document", i): (corpus.shard_rows(i), corpus.shard_digests[i]) for i in pending})
            try:
                parts.append(ray_rows(corpus, pending, cpus=max(0.05, 1 - RESERVED_SHARE)))
            except EmbedlabError:
                raise
            except Exception as exc:
                raise EmbedlabError(
                    f"Ray Data could not read {corpus.path}: {_one_line(exc)} (fix: check that every node sees the "
                    "file at this path, or run with --engine local)"
                ) from None
        if tasks:
            tables = [
                pa.table(
                    {
                        "role": pa.array([task.role] * len(task.ids), pa.string()),
                        "shard": pa.array([task.index] * len(task.ids), pa.int64()),
                        "row": pa.array(range(len(task.ids)), pa.int64()),
                        "id": pa.array(task.ids, pa.string()),
                        "key": pa.array(task.keys, pa.string()),
                        "text": pa.array(task.texts, pa.string()),
                    }
                )
                for task in tasks
            ]
            parts.append(ray.data.from_arrow(tables))
        rows = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
        dataset = rows.map_batches(
            EncodeActor,
            fn_constructor_kwargs={
                "model": model,
                "backend": backend,
                "batch_size": batch_size,
                "threads": max(1, math.ceil(reserved / RESERVED_SHARE - 1e-9)),
                "sample": current_sample(),
            },
            # A whole shard per batch: the actor sorts it by length as the local path sorts its shards.
            batch_size=max(count for count, _ in expected.values()),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=reserved,
        )
        self._collect(model, dataset, expected, on_shard, actors=actors, show_progress=show_progress)

    def _collect(
        self,
        model: str,
        dataset: Any,
        expected: dict[tuple[str, int], tuple[int, str | None]],
        on_shard: Callable[[EncodedShard], None],
        *,
        actors: int,
        show_progress: bool,
    ) -> None:
        """Read the actors' rows as they stream in, one row per (role, shard, row), and hand each shard on as
        soon as it is complete."""
        from embedlab.scale.corpus import shard_digest

        expected = dict(expected)
        pending: dict[tuple[str, int], dict[int, tuple[str, str, np.ndarray, str, str]]] = {}
        total = sum(count for count, _ in expected.values())
        try:
            plural = "s" if actors > 1 else ""
            with progress_bar(total, f"embed {model} on ray ({actors} actor{plural})", show_progress) as progress:
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    fresh = 0
                    for role, shard, row, doc_id, key, vector, fingerprint, resolved, node in zip(
                        batch["role"].tolist(),
                        batch["shard"].tolist(),
                        batch["row"].tolist(),
                        batch["id"].tolist(),
                        batch["key"].tolist(),
                        batch["vector"],
                        batch["fingerprint"],
                        batch["backend"],
                        batch["node"],
                        strict=True,
                    ):
                        where = (str(role), int(shard))
                        rows = pending.setdefault(where, {})
                        if row in rows or where not in expected:
                            self.duplicates += 1
                            continue
                        rows[row] = (
                            str(doc_id),
                            str(key),
                            np.asarray(vector, dtype=np.float32),
                            str(fingerprint),
                            str(resolved),
                        )
                        self.rows_per_node[str(node)] = self.rows_per_node.get(str(node), 0) + 1
                        fresh += 1
                        count, digest = expected[where]
                        if len(rows) == count:
                            shard_rows = pending.pop(where)
                            ordered = [shard_rows[i] for i in range(count)]
                            if digest is not None and shard_digest(r[1] for r in ordered) != digest:
                                raise EmbedlabError(
                                    f"shard {where[1]}: the texts Ray Data read differ from the driver's scan of "
                                    "the same file (fix: check that every node sees the same corpus file, or run "
                                    "with --engine local)"
                                )
                            self._deliver(where, ordered, on_shard)
                            del expected[where]
                    progress.update(fresh)
        except EmbedlabError:
            raise
        except Exception as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise EmbedlabError(
                f"the Ray job encoding {model} failed: {_one_line(exc)} (fix: check that every node has embedlab "
                "and the model installed, then run the same command again: it resumes from the written shards)"
            ) from None
        if expected:
            raise EmbedlabError(
                f"the Ray job for {model} ended with {len(expected)} shard(s) incomplete (fix: run the same command "
                "again: it resumes from the written shards)"
            )

    @staticmethod
    def _deliver(
        where: tuple[str, int],
        ordered: list[tuple[str, str, np.ndarray, str, str]],
        on_shard: Callable[[EncodedShard], None],
    ) -> None:
        on_shard(
            EncodedShard(
                role=cast(Role, where[0]),
                index=where[1],
                ids=[r[0] for r in ordered],
                keys=[r[1] for r in ordered],
                vectors=np.stack([r[2] for r in ordered]).astype(np.float32, copy=False),
                fingerprints=[r[3] for r in ordered],
                backends=[r[4] for r in ordered],
            )
        )

    def describe(self) -> dict[str, object]:
        actors, reserved = self._pool or (0, 0.0)
        info: dict[str, Any] = {
            "name": self.name,
            "address": self.address or "local",
            "actors": actors,
            "cpus_reserved_per_actor": reserved,
            "rows_per_node": dict(self.rows_per_node),
            "duplicates_dropped": self.duplicates,
        }
        return info

    def close(self) -> None:
        """Stop the local Ray this engine started (a cluster given by address is left running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
