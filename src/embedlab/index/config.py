"""What an index is built with: one validated :class:`IndexConfig`, saved with every index and sweep point.

An index has a **kind** (``flat``: exact; ``hnsw``: a proximity graph; ``ivf``: an inverted file over k-means
cells), a **quantization** of the stored vectors (``none``: float32; ``int8``: 8-bit scalar quantization, 4×
smaller; ``binary``: one bit per dimension, 32× smaller, scored by Hamming distance; ``pq``: product quantization,
4-bit codes of 4-dimensional sub-vectors, 32× smaller), and a **dimension**: ``dim`` keeps the first ``dim``
components of every vector and L2-normalises them again (Matryoshka truncation; models trained with a Matryoshka
loss lose little, others lose more — :mod:`embedlab.index.sweep` measures it).

Build settings: ``hnsw_m`` (graph neighbours per node), ``ef_construction`` (candidate list while building),
``nlist`` (IVF cells; ``None`` picks ``4·√N`` capped at ``N/39`` so every cell has training points), ``pq_m``
(sub-vectors; ``None`` picks ``dim/4``). Search settings, which a query may override: ``ef_search`` (HNSW candidate
list) and ``nprobe`` (IVF cells visited).

:meth:`IndexConfig.resolved` fills every ``None`` from the corpus size and the model's dimension and checks that
the numbers fit together; stores only ever see resolved configs. Which stores accept which ``(index, quantize)``
pairs is declared by each store in :mod:`embedlab.index.store`.

Example::

    >>> config = IndexConfig(index="hnsw", quantize="int8", dim=256)
    >>> config.resolved(documents=5183, model_dim=384).label
    'hnsw M32 ef128 int8 d256'
    >>> IndexConfig(index="hsnw")
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: unknown index 'hsnw'; did you mean 'hnsw'? Valid: flat, hnsw, ivf
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

import numpy as np

from embedlab.errors import EmbedlabError
from embedlab.models.encoders import Vectors

IndexKind = Literal["flat", "hnsw", "ivf"]
Quantization = Literal["none", "int8", "binary", "pq"]

INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)

# Bits per dimension each quantization stores (PQ: 4-bit codes of 4-dimensional sub-vectors).
BITS_PER_DIMENSION = {"none": 32.0, "int8": 8.0, "binary": 1.0, "pq": 1.0}


def choose(value: str, valid: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``valid``; otherwise an error that suggests the closest valid name."""
    if value in valid:
        return value
    close = difflib.get_close_matches(value, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    raise EmbedlabError(f"unknown {what} '{value}'{hint} Valid: {', '.join(valid)}")


@dataclass(frozen=True)
class IndexConfig:
    """How to build and search an index; see the module docstring for every field."""

    index: IndexKind = "flat"
    quantize: Quantization = "none"
    dim: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 100
    ef_search: int = 128
    nlist: int | None = None
    nprobe: int = 16
    pq_m: int | None = None

    def __post_init__(self) -> None:
        choose(self.index, INDEX_KINDS, "index")
        choose(self.quantize, QUANTIZATIONS, "quantization")
        for name in ("dim", "hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise EmbedlabError(f"index setting {name} must be a whole number ≥ 1 (got {value!r})")

    @property
    def is_resolved(self) -> bool:
        return (
            self.dim is not None
            and (self.index != "ivf" or self.nlist is not None)
            and (self.quantize != "pq" or self.pq_m is not None)
        )

    def resolved(self, *, documents: int, model_dim: int) -> IndexConfig:
        """Every ``None`` filled in for a corpus of ``documents`` vectors of ``model_dim``; inconsistent numbers
        raise :class:`EmbedlabError` naming the fix."""
        dim = self.dim or model_dim
        if dim > model_dim:
            raise EmbedlabError(f"--dim {dim} is larger than the model's dimension {model_dim}")
        if self.quantize == "binary" and dim % 8:
            raise EmbedlabError(f"binary quantization needs a dimension divisible by 8 (got {dim})")
        nlist = self.nlist
        if self.index == "ivf":
            nlist = nlist or max(1, min(round(4 * math.sqrt(documents)), documents // 39))
            if nlist > max(documents, 1):
                raise EmbedlabError(f"nlist {nlist} is larger than the {documents} documents to index; lower --nlist")
        pq_m = self.pq_m
        if self.quantize == "pq":
            pq_m = pq_m or max(1, dim // 4)
            if dim % pq_m:
                raise EmbedlabError(f"pq_m {pq_m} must divide the dimension {dim} (e.g. {dim // 4})")
        return replace(self, dim=dim, nlist=nlist, pq_m=pq_m)

    def with_search(self, *, ef_search: int | None = None, nprobe: int | None = None) -> IndexConfig:
        """The same index searched with other settings."""
        return replace(self, ef_search=ef_search or self.ef_search, nprobe=nprobe or self.nprobe)

    def prepare(self, vectors: Vectors) -> Vectors:
        """Vectors as this index stores and searches them: the first ``dim`` components, L2-normalised again
        when truncated. Returns a new array; the input is never modified."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.dim is None or self.dim >= vectors.shape[1]:
            return vectors.copy()
        cut = vectors[:, : self.dim]
        return (cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    @property
    def label(self) -> str:
        """A short name for tables and plots, e.g. ``hnsw M32 ef128 int8 d256``."""
        parts: list[str] = [self.index]
        if self.index == "hnsw":
            parts += [f"M{self.hnsw_m}", f"ef{self.ef_search}"]
        elif self.index == "ivf":
            parts += [f"nlist{self.nlist if self.nlist else 'auto'}", f"nprobe{self.nprobe}"]
        if self.quantize != "none":
            parts.append(self.quantize if self.quantize != "pq" else f"pq{self.pq_m or ''}")
        if self.dim is not None:
            parts.append(f"d{self.dim}")
        return " ".join(parts)

    def bytes_per_vector(self) -> float:
        """Bytes a vector's code takes in the index (graph links and cell lists not counted)."""
        if self.dim is None:
            raise EmbedlabError("resolve the config first (the dimension is not known yet)")
        return self.dim * BITS_PER_DIMENSION[self.quantize] / 8

    def build_key(self) -> tuple[Any, ...]:
        """What decides the built index (search settings excluded): points with one key share one build."""
        return (self.index, self.quantize, self.dim, self.hnsw_m, self.ef_construction, self.nlist, self.pq_m)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error, never ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EmbedlabError(f"unknown index settings {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**data)
