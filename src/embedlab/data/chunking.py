"""Split long text into overlapping chunks of at most N tokens.

An embedding model reads a bounded number of tokens (256 or 512 for most small models) and silently drops the
rest, so a long document is indexed as several chunks. :func:`chunk_text` cuts a text into chunks of at
most ``chunk_tokens`` tokens; consecutive chunks share their boundary words (at most ``overlap_tokens``
tokens) so a sentence cut in two is still whole in one of them. :func:`embedlab.data.loaders.load_folder`
uses it to turn a folder of files into a corpus.

How it cuts:

- The text is first split into *units*: runs of word characters (``\\w+``) and single other non-space
  characters (punctuation). Chunks start and end on unit boundaries, never inside a word, and a chunk's text
  is the original text from its first unit to its last (inner whitespace and line breaks are kept).
- Each unit is counted as some number of tokens. With no ``tokenizer`` every unit is one token, so the count
  is a simple word-and-punctuation count. With a ``tokenizer`` each unit is counted by it (see below); a
  unit's count is taken in isolation, which slightly over-counts sub-word tokens at word joins, so chunks stay
  within the model's budget.
- A unit longer than ``chunk_tokens`` on its own (a long URL, a base64 blob) is cut into pieces by characters.
- Each new chunk begins with the longest tail of the previous chunk that fits in ``overlap_tokens`` tokens,
  and always moves forward by at least one unit.

``tokenizer`` can be any of:

- a HuggingFace tokenizer (``AutoTokenizer.from_pretrained(...)``) or any object with ``tokenize(text)``
  returning a sequence of tokens; special tokens are not counted;
- an object with ``encode(text)`` (called with ``add_special_tokens=False`` when it accepts it), e.g. a
  ``tokenizers.Tokenizer``;
- an object with a ``tokenizer`` attribute that is one of the above, e.g. a ``SentenceTransformer``;
- a plain callable ``str -> sequence``.

Arguments are checked: ``chunk_tokens`` must be at least 1 and ``0 <= overlap_tokens < chunk_tokens``, or
:class:`ChunkingError` is raised.

Example::

    >>> chunks = chunk_text("one two three four five six seven", chunk_tokens=4, overlap_tokens=1)
    >>> [c.text for c in chunks]
    ['one two three four', 'four five six seven']
    >>> chunks[1].start, chunks[1].tokens
    (14, 4)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from embedlab.errors import EmbedlabError

__all__ = ["Chunk", "ChunkingError", "chunk_text", "count_tokens", "token_counter"]

_UNIT = re.compile(r"\w+|[^\w\s]")

TokenCounter = Callable[[str], int]


class ChunkingError(EmbedlabError, ValueError):
    """Chunking asked for with impossible sizes, or with a tokenizer embedlab cannot use."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk: its position among the chunks, its text, its character span in the source and its size."""

    index: int
    text: str
    start: int
    end: int
    tokens: int


def token_counter(tokenizer: Any = None) -> TokenCounter:
    """A function ``str -> number of tokens`` for ``tokenizer`` (any of the kinds in the module docstring).

    ``None`` gives the default: the number of word and punctuation units.
    """
    if tokenizer is None:
        return lambda text: len(_UNIT.findall(text))
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and (callable(getattr(inner, "tokenize", None)) or callable(getattr(inner, "encode", None))):
        tokenizer = inner
    tokenize = getattr(tokenizer, "tokenize", None)
    if callable(tokenize):
        return lambda text: len(tokenize(text))
    encode = getattr(tokenizer, "encode", None)
    if callable(encode):

        def count_encoded(text: str) -> int:
            try:
                return len(encode(text, add_special_tokens=False))
            except TypeError:
                return len(encode(text))

        return count_encoded
    if callable(tokenizer):
        return lambda text: len(tokenizer(text))
    raise ChunkingError(
        f"cannot count tokens with a {type(tokenizer).__name__}: it has no tokenize() or encode() method"
    )


def count_tokens(text: str, tokenizer: Any = None) -> int:
    """How many tokens ``text`` has for ``tokenizer`` (default: word and punctuation units)."""
    return token_counter(tokenizer)(text)


def _units(text: str, count: TokenCounter, chunk_tokens: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) of each unit; units over ``chunk_tokens`` are cut into pieces that fit."""
    cache: dict[str, int] = {}
    units: list[tuple[int, int, int]] = []
    for match in _UNIT.finditer(text):
        word = match.group()
        n = cache.get(word)
        if n is None:
            n = cache[word] = max(1, count(word))
        if n <= chunk_tokens:
            units.append((match.start(), match.end(), n))
        else:
            units.extend(_split_long(word, match.start(), n, count, chunk_tokens))
    return units


def _split_long(word: str, offset: int, n: int, count: TokenCounter, chunk_tokens: int) -> list[tuple[int, int, int]]:
    """Cut one over-long unit into character pieces of at most ``chunk_tokens`` tokens each."""
    pieces: list[tuple[int, int, int]] = []
    start = 0
    while start < len(word):
        # Guess a piece length from the average characters per token, then shrink until it fits.
        length = max(1, math.floor(len(word) * chunk_tokens / n))
        while True:
            piece = word[start : start + length]
            tokens = max(1, count(piece))
            if tokens <= chunk_tokens or length == 1:
                break
            length = max(1, length * chunk_tokens // tokens)
        pieces.append((offset + start, offset + start + len(piece), min(tokens, chunk_tokens)))
        start += len(piece)
    return pieces


def chunk_text(
    text: str,
    *,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    tokenizer: Any = None,
) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``chunk_tokens`` tokens that overlap by at most ``overlap_tokens``.

    Returns an empty list for text with no words. See the module docstring for how the cuts are placed.
    """
    if chunk_tokens < 1:
        raise ChunkingError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ChunkingError(
            f"overlap_tokens must be at least 0 and less than chunk_tokens ({chunk_tokens}), got {overlap_tokens}"
        )
    units = _units(text, token_counter(tokenizer), chunk_tokens)
    return [
        Chunk(
            index=i,
            text=text[units[a][0] : units[b - 1][1]],
            start=units[a][0],
            end=units[b - 1][1],
            tokens=t,
        )
        for i, (a, b, t) in enumerate(_windows([u[2] for u in units], chunk_tokens, overlap_tokens))
    ]


def _windows(sizes: Sequence[int], chunk_tokens: int, overlap_tokens: int) -> list[tuple[int, int, int]]:
    """Half-open unit ranges ``[a, b)`` with their token totals, as described in the module docstring."""
    windows: list[tuple[int, int, int]] = []
    start = 0
    while start < len(sizes):
        end, total = start, 0
        while end < len(sizes) and total + sizes[end] <= chunk_tokens:
            total += sizes[end]
            end += 1
        windows.append((start, end, total))
        if end == len(sizes):
            break
        # The next chunk starts with the longest tail of this one that fits in the overlap, moving on by >= 1.
        next_start, tail = end, 0
        while next_start - 1 > start and tail + sizes[next_start - 1] <= overlap_tokens:
            next_start -= 1
            tail += sizes[next_start]
        start = next_start
    return windows
