"""The texts calibration and quantisation run on: fit texts (what int8 scales are fitted to) and check texts (what
a backend is judged on), never the same.

Without a user corpus they are :func:`calibration_texts`, drawn from the bundled stdlib-docs corpus.

Example::

    >>> fit, check = calibration_texts(64, half="fit"), calibration_texts(32)
    >>> set(fit) & set(check)
    set()
"""

from __future__ import annotations

from functools import cache
from typing import Literal


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
