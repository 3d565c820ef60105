"""The output of ``embedlab embed``: vectors as Parquet shards per model and role, and a manifest.

A folder written by :func:`~embedlab.scale.job.embed_dataset` looks like::

    <out>/embed.json                                   the manifest (see EmbedManifest)
    <out>/<model>/documents/shard-00000.parquet        rows 0 … shard_size-1 of the corpus, in corpus order
    <out>/<model>/queries/shard-00000.parquet          the queries, the same way

Shard ``i`` of a role always holds rows ``[i·shard_size, (i+1)·shard_size)`` of that role's texts, so the plan of a
run is a pure function of the data: a re-run (after a crash, a killed driver, or with one more model) reads every
shard that is already there and matches its plan, and encodes only the others. Each shard is written to a
temporary file and renamed into place, so a killed run leaves whole shards or none.

Columns of a shard: ``id`` (document or query id), ``key`` (the :func:`~embedlab.embedding.text_key` of the text in
its role: what the embedding cache is keyed by), ``vector`` (float32, fixed size), ``fingerprint`` (the encoder
fingerprint of the process that encoded the row: with ``--backend auto`` each node picks its own backend, and a
fingerprint names the vectors exactly), ``backend``. The Parquet schema metadata records the model and the
requested backend; a shard written for another model or backend, or for other texts, is not reused.

:meth:`ShardSet.fill_cache` puts every row into the :class:`~embedlab.embedding.EmbeddingCache` under its
fingerprint, so that ``compare``, ``select`` and ``index`` on the same data encode nothing again.

Example::

    >>> shards = ShardSet(Path("runs/embed"), model="minilm-l6", backend="auto", role="document", shard_size=1024)
    >>> shards.missing(plan)          # the shard numbers still to encode
    >>> shards.write(encoded)         # one EncodedShard, atomically
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from embedlab.embedding import EmbeddingCache
from embedlab.errors import RETRY_FIX, EmbedlabError
from embedlab.models.encoders import Role

SHARD_SCHEMA = "embedlab-shard-1"
ROLE_FOLDERS: dict[Role, str] = {"document": "documents", "query": "queries"}


@dataclass(frozen=True)
class ShardTask:
    """One shard to encode: its role, its number and the rows it covers (ids, texts, cache keys), in order."""

    role: Role
    index: int
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    keys: tuple[str, ...]


@dataclass
class EncodedShard:
    """What an engine returns for a :class:`ShardTask`: one vector per row, in the task's order."""

    role: Role
    index: int
    ids: list[str]
    keys: list[str]
    vectors: NDArray[np.float32]
    fingerprints: list[str]
    backends: list[str]


def plan_shards(
    role: Role, ids: Sequence[str], texts: Sequence[str], keys: Sequence[str], shard_size: int
) -> list[ShardTask]:
    """Cut rows into shards of ``shard_size`` in order (the last one shorter): the same data, the same plan."""
    if shard_size < 1:
        raise EmbedlabError(f"--shard-size must be 1 or more (got {shard_size})")
    return [
        ShardTask(
            role=role,
            index=number,
            ids=tuple(ids[start : start + shard_size]),
            texts=tuple(texts[start : start + shard_size]),
            keys=tuple(keys[start : start + shard_size]),
        )
        for number, start in enumerate(range(0, len(ids), shard_size))
    ]


def model_folder_name(model: str) -> str:
    """A folder name for a model name, folder or hub id (``org/name`` → ``org--name``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model.strip().rstrip("/")).strip("-.") or "model"


class ShardSet:
    """The shards of one model and one role in an ``embed`` output folder."""

    def __init__(self, out: Path, *, model: str, backend: str, role: Role, shard_size: int):
        self.folder = Path(out) / model_folder_name(model) / ROLE_FOLDERS[role]
        self.model = model
        self.backend = backend
        self.role = role
        self.shard_size = shard_size

    def path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.parquet"

    def _metadata(self) -> dict[bytes, bytes]:
        return {
            b"embedlab": json.dumps(
                {"schema": SHARD_SCHEMA, "model": self.model, "backend": self.backend, "role": self.role}
            ).encode()
        }

    def matches(self, task: ShardTask) -> bool:
        """True when the shard on disk was written for this model, backend and exactly these texts."""
        keys = self._keys(task.index)
        return keys is not None and tuple(keys) == task.keys

    def matches_digest(self, index: int, digest: str) -> bool:
        """:meth:`matches` for a shard planned by row range: its keys' digest instead of the keys themselves."""
        from embedlab.scale.corpus import shard_digest

        keys = self._keys(index)
        return keys is not None and shard_digest(keys) == digest

    def _keys(self, index: int) -> list[str] | None:
        """The cache keys of shard ``index`` on disk, or ``None`` if it is absent, damaged or another model's."""
        import pyarrow.parquet as pq

        path = self.path(index)
        if not path.exists():
            return None
        try:
            schema = pq.read_schema(path)
            meta = json.loads((schema.metadata or {}).get(b"embedlab", b"{}"))
            if meta != json.loads(self._metadata()[b"embedlab"]):
                return None
            keys: list[str] = pq.read_table(path, columns=["key"]).column("key").to_pylist()
        except Exception:  # a damaged shard is encoded again, never trusted
            return None
        return keys

    def missing(self, tasks: Sequence[ShardTask]) -> list[ShardTask]:
        """The tasks whose shard is absent, damaged or written for something else."""
        return [task for task in tasks if not self.matches(task)]

    def write(self, shard: EncodedShard) -> Path:
        """Write one shard atomically (temporary file, then rename)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        vectors = np.ascontiguousarray(shard.vectors, dtype=np.float32)
        dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        table = pa.table(
            {
                "id": pa.array(shard.ids, pa.string()),
                "key": pa.array(shard.keys, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
                "fingerprint": pa.array(shard.fingerprints, pa.string()),
                "backend": pa.array(shard.backends, pa.string()),
            }
        ).replace_schema_metadata(self._metadata())
        target = self.path(shard.index)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".parquet")
        except OSError as exc:
            raise EmbedlabError(f"{self.folder}: cannot write a shard ({exc.strerror}) (fix: {RETRY_FIX})") from exc
        try:
            with os.fdopen(handle, "wb") as out:
                pq.write_table(table, out)
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise EmbedlabError(f"{self.folder}: cannot write a shard ({exc.strerror}) (fix: {RETRY_FIX})") from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read(self, index: int) -> EncodedShard:
        import pyarrow.parquet as pq

        table = pq.read_table(self.path(index))
        column = table.column("vector").combine_chunks()
        dim = column.type.list_size
        vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
        return EncodedShard(
            role=self.role,
            index=index,
            ids=table.column("id").to_pylist(),
            keys=table.column("key").to_pylist(),
            vectors=vectors,
            fingerprints=table.column("fingerprint").to_pylist(),
            backends=table.column("backend").to_pylist(),
        )

    def fill_cache(self, cache: EmbeddingCache, shard: EncodedShard) -> int:
        """Put the shard's rows the cache lacks into it, under each row's fingerprint; return how many."""
        added = 0
        for fingerprint in dict.fromkeys(shard.fingerprints):
            rows = [i for i, f in enumerate(shard.fingerprints) if f == fingerprint]
            keys = [shard.keys[i] for i in rows]
            have = cache.get(fingerprint, keys)
            todo = [i for i, key in zip(rows, keys, strict=True) if key not in have]
            # Duplicate texts share a key: store each key once.
            todo = list({shard.keys[i]: i for i in todo}.values())
            if todo:
                cache.put(fingerprint, [shard.keys[i] for i in todo], shard.vectors[todo])
                added += len(todo)
        return added


def read_vectors(out: Path, *, model: str, role: Role) -> tuple[list[str], NDArray[np.float32]]:
    """Every id and vector of one model and role in an ``embed`` folder, in shard order (for checks and tools)."""
    import pyarrow.parquet as pq

    folder = Path(out) / model_folder_name(model) / ROLE_FOLDERS[role]
    ids: list[str] = []
    parts: list[NDArray[np.float32]] = []
    for path in sorted(folder.glob("shard-*.parquet")):
        table = pq.read_table(path, columns=["id", "vector"])
        column = table.column("vector").combine_chunks()
        ids.extend(table.column("id").to_pylist())
        parts.append(column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), -1))
    if not parts:
        raise EmbedlabError(f"{folder}: no shards (fix: run `embedlab embed` for model '{model}' first)")
    return ids, np.concatenate(parts)
