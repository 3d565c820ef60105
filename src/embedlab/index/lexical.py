"""The lexical half of an index: BM25 over the documents' text, scored exactly as ``embedlab compare`` scores it.

:class:`LexicalIndex` is a bm25s index (built by :func:`embedlab.retrieval.build_bm25`: the same tokenizer, stop
words, ``k1`` and ``b`` as the ``bm25`` baseline) whose rows carry the store's int64 keys. The FAISS store keeps
one beside ``index.faiss``, in a folder ``bm25-<generation>`` written under a temporary name and renamed into
place, so an interrupted build never leaves a half-written one; older generations are removed once the new one
is recorded. Milvus has BM25 built in (:mod:`embedlab.index.milvus_store`) and needs none of this.

Example::

    >>> lexical = LexicalIndex.build(np.array([7, 9]), ["aspirin and colon cancer", "vitamin D in bone"])
    >>> lexical.search(["vitamin D"], k=10)
    [[(9, 0.46...)]]
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embedlab.retrieval import bm25_top_k, build_bm25

KEYS_FILE = "keys.npy"


class LexicalIndex:
    """A bm25s index whose rows are keys. Build with :meth:`build` or :meth:`read`, never ``__init__``."""

    def __init__(self, model: Any, keys: NDArray[np.int64]):
        self.model = model
        self.keys = keys

    @classmethod
    def build(cls, keys: NDArray[np.int64], texts: Sequence[str]) -> LexicalIndex:
        return cls(build_bm25(texts), np.asarray(keys, dtype=np.int64))

    @classmethod
    def read(cls, folder: Path) -> LexicalIndex:
        import bm25s

        model = bm25s.BM25.load(str(folder), show_progress=False)
        return cls(model, np.load(Path(folder) / KEYS_FILE))

    def write(self, folder: Path) -> None:
        """Save into ``folder`` (which must not exist yet) through a temporary folder renamed into place."""
        folder = Path(folder)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            self.model.save(str(tmp), show_progress=False)
            np.save(tmp / KEYS_FILE, self.keys)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def search(
        self, texts: Sequence[str], *, k: int, keys: NDArray[np.int64] | None = None
    ) -> list[list[tuple[int, float]]]:
        """Per text, up to ``k`` ``(key, score)`` pairs, best first, score > 0; ``keys`` restricts the search."""
        mask = np.isin(self.keys, keys).astype(np.float32) if keys is not None else None
        found = bm25_top_k(self.model, texts, k, weight_mask=mask)
        return [[(int(self.keys[row]), score) for row, score in hits] for hits in found]
