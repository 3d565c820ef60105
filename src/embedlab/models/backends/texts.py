"""The texts calibration and quantisation run on: fit texts (what int8 scales are fitted to) and check texts (what
a backend is judged on), never the same.

When a command has the user's corpus it runs inside :func:`using_corpus`, and both come from a seeded sample of
that corpus (:class:`CalibrationSample`): a backend is then judged on the user's own kind of text, and int8 scales
are fitted to it. Without a corpus they are :func:`calibration_texts`, drawn from the bundled stdlib-docs corpus.

Example::

    >>> fit, check = calibration_texts(64, half="fit"), calibration_texts(32)
    >>> set(fit) & set(check)
    set()
    >>> with using_corpus(d.full_text for d in dataset.corpus) as sample:
    ...     print(sample.describe())
    a seeded sample of the corpus (32 check texts, 64 other texts to fit int8 to, of 5,183 distinct texts; ...)
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal


@cache
def calibration_texts(n: int = 32, *, half: Literal["fit", "check"] = "check") -> tuple[str, ...]:
    """``n`` real texts spanning short to long: evenly spaced, by length, over one half of the bundled
    stdlib-docs corpus.

    The corpus, sorted by length, is dealt alternately into two halves: ``"fit"`` texts set what quantisation
    learns (scales, which layers stay float), ``"check"`` texts measure the result (:func:`calibrate`), so a
    quantised model is never judged on the texts it was fitted to. (Judged on its own calibration texts,
    all-MiniLM-L6-v2's OpenVINO int8 scored a mean cosine of 0.9975 to float32; on SciFact abstracts, 0.9946.)
    """
    from embedlab.data.stdlib_docs import load_stdlib_docs

    texts = sorted((d.full_text for d in load_stdlib_docs().corpus), key=len)[0 if half == "fit" else 1 :: 2]
    n = max(1, min(n, len(texts)))
    return tuple(texts[(i * (len(texts) - 1)) // max(n - 1, 1)] for i in range(n))


CHECK_TEXTS = "stdlib-docs-odd-half-v1"
"""Names the texts :func:`calibrate` measures on; a cached calibration measured on other texts is not reused."""


STDLIB_TEXTS = "stdlib-docs"
MIN_CORPUS_TEXTS = 16
"""Below this many distinct texts a corpus cannot give both fit and check texts worth the name: the bundled texts
serve instead."""


@dataclass(frozen=True)
class CalibrationSample:
    """Fit and check texts drawn, seeded, from a user's corpus: what ``auto`` gates on and int8 is fitted to.

    ``fit`` and ``check`` are disjoint. ``digest`` names the sample: calibrations and int8 artifacts made from it
    are cached under it, so another corpus (or the same corpus grown enough to change the sample) measures anew.
    """

    fit: tuple[str, ...]
    check: tuple[str, ...]
    corpus_texts: int
    seed: int = 0

    @property
    def digest(self) -> str:
        payload = json.dumps([self.fit, self.check], ensure_ascii=False).encode()
        return hashlib.sha256(payload).hexdigest()[:12]

    def describe(self) -> str:
        return (
            f"a seeded sample of the corpus ({len(self.check)} check texts, {len(self.fit)} other texts to fit int8 "
            f"to, of {self.corpus_texts:,} distinct texts; seed {self.seed}, sample {self.digest})"
        )

    def texts_dict(self) -> dict[str, Any]:
        """Everything the sample is, texts included: ``CalibrationSample(**sample.texts_dict())`` rebuilds it."""
        return {"fit": list(self.fit), "check": list(self.check), "corpus_texts": self.corpus_texts, "seed": self.seed}

    @classmethod
    def from_texts_dict(cls, data: dict[str, Any]) -> CalibrationSample:
        return cls(
            fit=tuple(data["fit"]), check=tuple(data["check"]), corpus_texts=data["corpus_texts"], seed=data["seed"]
        )

    def to_dict(self) -> dict[str, Any]:
        """The sample described (no texts): what reports and manifests record."""
        return {
            "source": "corpus",
            "digest": self.digest,
            "fit": len(self.fit),
            "check": len(self.check),
            "corpus_texts": self.corpus_texts,
            "seed": self.seed,
        }


def corpus_sample(texts: Iterable[str], *, fit: int = 64, check: int = 32, seed: int = 0) -> CalibrationSample | None:
    """A :class:`CalibrationSample` of ``texts`` (duplicates and blank texts left out), or ``None`` when fewer than
    :data:`MIN_CORPUS_TEXTS` distinct texts remain. A small corpus gives a third of its sample to checking."""
    distinct = list(dict.fromkeys(t for t in texts if t.strip()))
    positions = sample_positions(len(distinct), fit=fit, check=check, seed=seed)
    if positions is None:
        return None
    return sample_of([distinct[i] for i in positions], len(distinct), fit=fit, check=check, seed=seed)


def sample_positions(distinct: int, *, fit: int = 64, check: int = 32, seed: int = 0) -> list[int] | None:
    """Which of ``distinct`` texts (numbered in order of first appearance) :func:`corpus_sample` picks, in its
    order; ``None`` below :data:`MIN_CORPUS_TEXTS`. A reader that streams a corpus draws the same sample with this
    and :func:`sample_of`, reading only the picked texts."""
    if distinct < MIN_CORPUS_TEXTS:
        return None
    # random.sample picks by position, so sampling the positions picks what sampling the texts would.
    return random.Random(seed).sample(range(distinct), min(distinct, fit + check))


def sample_of(
    picked: Sequence[str], distinct: int, *, fit: int = 64, check: int = 32, seed: int = 0
) -> CalibrationSample:
    """The :class:`CalibrationSample` of the texts :func:`sample_positions` picked, in its order."""
    n_check = min(check, len(picked) // 3) if len(picked) < fit + check else check
    return CalibrationSample(
        fit=tuple(picked[n_check:]), check=tuple(picked[:n_check]), corpus_texts=distinct, seed=seed
    )


_SAMPLE: contextvars.ContextVar[CalibrationSample | None] = contextvars.ContextVar("embedlab_corpus", default=None)


def current_sample() -> CalibrationSample | None:
    """The sample of the corpus the caller is working on (:func:`using_corpus`), or ``None``."""
    return _SAMPLE.get()


@contextlib.contextmanager
def using_corpus(texts: Iterable[str]) -> Iterator[CalibrationSample | None]:
    """Within the block, ``auto`` calibrates and gates on a seeded sample of ``texts`` (the user's corpus), and int8
    artifacts are fitted to it; encoders created in the block keep that sample. Commands that read a corpus
    (``compare``, ``select``, ``index``, ``export``, ``embed``) wrap their work in it::

        with using_backend("auto"), using_corpus(d.full_text for d in dataset.corpus):
            ...

    A corpus too small to sample (:func:`corpus_sample` gives ``None``) leaves the bundled texts in use."""
    with using_sample(corpus_sample(texts)) as sample:
        yield sample


@contextlib.contextmanager
def using_sample(sample: CalibrationSample | None) -> Iterator[CalibrationSample | None]:
    """:func:`using_corpus` with the sample already drawn (a worker process gets its caller's this way)."""
    token = _SAMPLE.set(sample)
    try:
        yield sample
    finally:
        _SAMPLE.reset(token)
