"""Encoding with an on-disk cache: each text is encoded once per model, ever.

Vectors are cached under ``<cache>/embeddings/<encoder fingerprint>/`` in shards (``.npz`` files holding the
texts' SHA-256 keys and their vectors). A shard is written to a temporary file and renamed into place, so an
interrupted run leaves either a whole shard or none; a shard that cannot be read back is discarded with a warning
and its texts are encoded again. Encoding stores a shard every ``shard_size`` texts, so an interrupted comparison
resumes where it stopped. A shard that cannot be written (a full disk) is an
:class:`~embedlab.errors.EmbedlabError` naming the folder; the shards written before it stay readable. The
fingerprint covers the model's weights and every setting that changes its vectors: re-running a comparison with
one more model encodes only that model.

Example::

    >>> cache = EmbeddingCache(Path("/tmp/embedlab-cache"))
    >>> vectors = embed(encoder, ["a cat", "a dog"], role="document", cache=cache)
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from embedlab.errors import RETRY_FIX, EmbedlabError
from embedlab.files import write_text_atomic
from embedlab.models.encoders import Encoder, Role, Vectors

log = logging.getLogger(__name__)

STALE_SECONDS = 24 * 3600


def text_key(text: str, role: Role) -> str:
    """The cache key of a text in a role (queries and documents may get different prefixes)."""
    return hashlib.sha256(f"{role}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """Vectors on disk, keyed by encoder fingerprint and text hash. Loading is lazy and per fingerprint."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._loaded: dict[str, dict[str, NDArray[np.float32]]] = {}

    def _folder(self, fingerprint: str) -> Path:
        return self.root / "embeddings" / fingerprint

    def _entries(self, fingerprint: str) -> dict[str, NDArray[np.float32]]:
        if fingerprint not in self._loaded:
            entries: dict[str, NDArray[np.float32]] = {}
            folder = self._folder(fingerprint)
            for shard in self._shards(folder):
                try:
                    with np.load(shard, allow_pickle=False) as data:
                        keys, vectors = data["keys"], data["vectors"]
                    if len(keys) != len(vectors):
                        raise ValueError("keys and vectors differ in length")
                except Exception as exc:  # any unreadable shard is re-encoded, never trusted
                    log.warning("discarding unreadable cache shard %s: %s", shard, exc)
                    shard.unlink(missing_ok=True)
                    continue
                for key, vector in zip(keys.tolist(), vectors, strict=True):
                    entries[key] = vector
            self._loaded[fingerprint] = entries
        return self._loaded[fingerprint]

    @staticmethod
    def _shards(folder: Path) -> list[Path]:
        """The finished shards. A temporary file (``.tmp-*``) may be another process's shard being written (never
        read it, never delete it) or one left by a killed run (deleted once it is a day old)."""
        if not folder.exists():
            return []
        for leftover in folder.glob(".tmp-*"):
            try:
                if time.time() - leftover.stat().st_mtime > STALE_SECONDS:
                    leftover.unlink(missing_ok=True)
            except OSError:
                pass
        return sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))

    def get(self, fingerprint: str, keys: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        entries = self._entries(fingerprint)
        return {key: entries[key] for key in keys if key in entries}

    def put(self, fingerprint: str, keys: Sequence[str], vectors: Vectors) -> None:
        if not keys:
            return
        folder = self._folder(fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            handle, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
        except OSError as exc:
            raise EmbedlabError(
                f"{folder}: cannot store vectors in the cache ({exc.strerror}) (fix: {RETRY_FIX})"
            ) from exc
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, keys=np.array(keys), vectors=np.asarray(vectors, dtype=np.float32))
            os.replace(tmp, folder / f"{uuid.uuid4().hex}.npz")
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise EmbedlabError(
                f"{folder}: cannot store vectors in the cache ({exc.strerror}) (fix: {RETRY_FIX})"
            ) from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        entries = self._entries(fingerprint)
        for key, vector in zip(keys, vectors, strict=True):
            entries[key] = vector

    def get_count(self, fingerprint: str, name: str) -> int | None:
        """A number stored beside the vectors with :meth:`put_count` (``None`` if absent or unreadable)."""
        try:
            return int((self._folder(fingerprint) / f"{name}.count").read_text(encoding="ascii"))
        except (OSError, ValueError):
            return None

    def put_count(self, fingerprint: str, name: str, value: int) -> None:
        write_text_atomic(self._folder(fingerprint) / f"{name}.count", str(int(value)))

    def size_bytes(self, fingerprint: str) -> int:
        return sum(p.stat().st_size for p in self._shards(self._folder(fingerprint)))


def embed(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    role: Role,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
    shard_size: int = 2048,
) -> Vectors:
    """Vectors for ``texts`` (float32, one row per text, in order); duplicates and cached texts are not encoded."""
    keys = [text_key(t, role) for t in texts]
    unique: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        unique.setdefault(key, text)
    found = cache.get(encoder.fingerprint, list(unique)) if cache is not None else {}
    # Longest first, so that each encoder batch pads only to texts of similar length (and a bad memory estimate
    # shows at once, not at the end).
    missing = sorted((key for key in unique if key not in found), key=lambda k: -len(unique[k]))
    if missing:
        from tqdm.auto import tqdm

        # Closed also on an error, so that the error starts on a line of its own.
        with tqdm(
            total=len(missing),
            desc=f"encode {encoder.spec.name} {'queries' if role == 'query' else 'documents'}",
            unit=role[0:3],
            disable=not show_progress,
        ) as progress:
            # Sub-batches of several encoder batches keep the bar moving; each shard is stored as soon as it is done.
            step = max(batch_size * 8, 1)
            for start in range(0, len(missing), shard_size):
                shard_keys = missing[start : start + shard_size]
                parts = []
                for sub in range(0, len(shard_keys), step):
                    sub_keys = shard_keys[sub : sub + step]
                    parts.append(encoder.encode([unique[k] for k in sub_keys], role=role, batch_size=batch_size))
                    progress.update(len(sub_keys))
                vectors = np.concatenate(parts)
                if cache is not None:
                    cache.put(encoder.fingerprint, shard_keys, vectors)
                found.update(zip(shard_keys, vectors, strict=True))
    if not keys:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)


def count_truncated(encoder: Encoder, texts: Sequence[str], *, cache: EmbeddingCache | None = None) -> int:
    """How many texts exceed the model's maximum tokens (they are truncated when encoded).

    With a cache the count is stored per encoder and set of texts: tokenising a corpus again costs more than
    a re-run that reads every vector from the cache.
    """
    limit = encoder.spec.max_tokens
    if not limit or not texts:
        return 0
    name = ""
    if cache is not None:
        digest = hashlib.sha256()
        for text in texts:
            digest.update(text.encode())
            digest.update(b"\x00")
        name = f"truncated-{limit}-{digest.hexdigest()[:32]}"
        stored = cache.get_count(encoder.fingerprint, name)
        if stored is not None:
            return stored
    count = int((encoder.token_counts(texts) > limit).sum())
    if cache is not None:
        cache.put_count(encoder.fingerprint, name, count)
    return count
