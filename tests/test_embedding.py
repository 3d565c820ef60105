"""The embedding cache: each text encoded once per model; interrupted or corrupted writes are never trusted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from embedlab.embedding import EmbeddingCache, count_truncated, embed
from embedlab.models.loading import load_encoder

TEXTS = ["alpha beta", "gamma delta", "alpha beta", "epsilon"]


def test_duplicates_encoded_once_and_order_kept(tmp_path: Path, hashing_encoder) -> None:
    vectors = embed(hashing_encoder, TEXTS, role="document", cache=EmbeddingCache(tmp_path))
    assert hashing_encoder.calls == [3]
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors, hashing_encoder.encode(TEXTS, role="document"))


def test_second_run_reads_cache_and_only_new_texts_are_encoded(tmp_path: Path, hashing_encoder) -> None:
    first = embed(hashing_encoder, TEXTS, role="document", cache=EmbeddingCache(tmp_path))
    fresh_cache = EmbeddingCache(tmp_path)  # a new process would start like this
    again = embed(hashing_encoder, [*TEXTS, "zeta"], role="document", cache=fresh_cache)
    assert hashing_encoder.calls == [3, 1]
    np.testing.assert_array_equal(again[:4], first)


def test_roles_are_cached_apart(tmp_path: Path, hashing_encoder) -> None:
    cache = EmbeddingCache(tmp_path)
    embed(hashing_encoder, TEXTS, role="document", cache=cache)
    embed(hashing_encoder, TEXTS, role="query", cache=cache)
    assert hashing_encoder.calls == [3, 3]


def test_corrupted_shard_is_discarded_and_reencoded(tmp_path: Path, hashing_encoder, caplog) -> None:
    embed(hashing_encoder, TEXTS, role="document", cache=EmbeddingCache(tmp_path))
    shards = list((tmp_path / "embeddings").rglob("*.npz"))
    assert len(shards) == 1
    shards[0].write_bytes(shards[0].read_bytes()[:40])  # as if the disk filled up mid-write
    # A library configuring logging earlier in the suite (logging.config, disable_existing_loggers) can disable
    # this module's logger; the warning itself is what is checked here.
    logging.getLogger("embedlab.embedding").disabled = False
    caplog.set_level(logging.WARNING, logger="embedlab.embedding")
    vectors = embed(hashing_encoder, TEXTS, role="document", cache=EmbeddingCache(tmp_path))
    assert hashing_encoder.calls == [3, 3]
    assert "discarding unreadable cache shard" in caplog.text
    np.testing.assert_array_equal(vectors, hashing_encoder.encode(TEXTS, role="document"))


def test_interrupted_encoding_resumes_from_the_stored_shards(tmp_path: Path, hashing_encoder) -> None:
    texts = [f"text number {i}" for i in range(10)]
    original = hashing_encoder.encode

    def fail_on_third_shard(batch, **kwargs):
        if len(hashing_encoder.calls) == 2:
            raise KeyboardInterrupt
        return original(batch, **kwargs)

    hashing_encoder.encode = fail_on_third_shard
    with pytest.raises(KeyboardInterrupt):
        embed(hashing_encoder, texts, role="document", cache=EmbeddingCache(tmp_path), shard_size=4)
    hashing_encoder.encode = original
    assert not list((tmp_path / "embeddings").rglob(".tmp-*")), "no temporary file may be left behind"
    embed(hashing_encoder, texts, role="document", cache=EmbeddingCache(tmp_path), shard_size=4)
    assert hashing_encoder.calls[-1] == 2  # 8 of 10 texts were already stored


def test_real_model_vectors_round_trip_through_the_cache(tmp_path: Path) -> None:
    encoder = load_encoder("minilm-l6")
    texts = ["Vitamin D deficiency is common in the elderly.", "Aspirin reduces the risk of stroke."]
    direct = encoder.encode(texts, role="document")
    cached = embed(encoder, texts, role="document", cache=EmbeddingCache(tmp_path))
    reread = embed(encoder, texts, role="document", cache=EmbeddingCache(tmp_path))
    np.testing.assert_allclose(cached, direct, atol=1e-6)
    np.testing.assert_array_equal(reread, cached)


def test_count_truncated(hashing_encoder) -> None:
    assert count_truncated(hashing_encoder, ["one two", "one two three four five six seven eight nine"]) == 1


def test_count_truncated_is_cached_per_set_of_texts(tmp_path: Path, hashing_encoder, monkeypatch) -> None:
    texts = ["one two", "one two three four five six seven eight nine"]
    assert count_truncated(hashing_encoder, texts, cache=EmbeddingCache(tmp_path)) == 1

    def fail(_: object) -> None:
        raise AssertionError("tokenised again")

    monkeypatch.setattr(hashing_encoder, "token_counts", fail)
    assert count_truncated(hashing_encoder, texts, cache=EmbeddingCache(tmp_path)) == 1
    with pytest.raises(AssertionError, match="tokenised again"):  # other texts: counted, not read
        count_truncated(hashing_encoder, [*texts, "three"], cache=EmbeddingCache(tmp_path))
