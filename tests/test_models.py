"""Every packaged model loads offline and encodes meaningfully; unknown and hub-only names fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from embedlab.errors import ModelError
from embedlab.models.catalog import CATALOG, get_spec
from embedlab.models.encoders import Encoder
from embedlab.models.loading import load_encoder

DENSE = [spec.name for spec in CATALOG if spec.kind != "bm25"]
SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar.",
    "The central bank raised interest rates again.",
]


@pytest.mark.parametrize("name", DENSE)
def test_packaged_model_encodes_related_sentences_closer(name: str) -> None:
    encoder = load_encoder(name)
    assert isinstance(encoder, Encoder)
    vectors = encoder.encode(SENTENCES, role="document")
    assert vectors.shape == (3, encoder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    related, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert related > unrelated + 0.2, (name, related, unrelated)
    assert encoder.dim == get_spec(name).dim


def test_fingerprint_is_stable_and_distinguishes_models() -> None:
    first = load_encoder("minilm-l6").fingerprint
    assert first == load_encoder("minilm-l6").fingerprint
    assert first != load_encoder("minilm-l6-int8").fingerprint


def test_int8_onnx_stays_close_to_float32_model() -> None:
    float32 = load_encoder("minilm-l6").encode(SENTENCES, role="document")
    int8 = load_encoder("minilm-l6-int8").encode(SENTENCES, role="document")
    assert np.einsum("ij,ij->i", float32, int8).min() > 0.95


def test_token_counts_are_not_truncated() -> None:
    encoder = load_encoder("minilm-l3-onnx")
    long_text = "word " * 400
    counts = encoder.token_counts(["short text", long_text])
    assert counts[0] < 10
    assert counts[1] > 400


def test_local_folder_loads_with_spec_filled_in(tmp_path) -> None:
    from embedlab.models.packaged import minilm_l6_folder

    encoder = load_encoder(minilm_l6_folder())
    assert encoder.spec.dim == 384
    assert encoder.spec.parameters is not None and encoder.spec.parameters > 20_000_000
    assert encoder.spec.licence.lower() == "apache-2.0"


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ModelError, match="did you mean minilm-l6"):
        load_encoder("minilm-l7")


def test_hub_id_offline_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="packaged model"):
        load_encoder("embedlab-tests/no-such-model")


def test_not_a_model_folder(tmp_path) -> None:
    with pytest.raises(ModelError, match="not a sentence-transformers model folder"):
        load_encoder(tmp_path)
