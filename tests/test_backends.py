"""Every backend that runs here encodes real text like float32 PyTorch; fingerprints keep backends apart; the
calibration behind ``auto`` is measured once, cached per model and machine, and reused; batches pad only to their
longest text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.errors import ModelError
from embedlab.models import backends
from embedlab.models.backends import (
    BACKENDS,
    CHECK_TEXTS,
    BackendMeasurement,
    Calibration,
    QualityGate,
    TokenizedRunner,
    calibrate,
    calibration_path,
    calibration_texts,
    machine_identity,
    machine_key,
    quick_backends,
    using_backend,
)
from embedlab.models.encoders import SentenceTransformerEncoder
from embedlab.models.loading import load_encoder

# The least cosine to the float32 vectors each precision must keep on every text (measured here: float32
# backends ≥ 0.99999, bfloat16 ≥ 0.9999, int8 ≥ 0.991; the bounds leave room for other CPUs).
MIN_COSINE = {"float32": 0.9999, "bfloat16": 0.99, "int8": 0.97}


@pytest.fixture(scope="module")
def texts(scifact_small) -> list[str]:
    """Real abstracts, short to long (several exceed the 256-token limit), and real claims."""
    corpus = sorted((d.full_text for d in scifact_small.corpus), key=len)
    return [corpus[i] for i in range(0, len(corpus), len(corpus) // 10)] + [q.text for q in scifact_small.queries[:4]]


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    encoder = load_encoder("minilm-l6", backend="torch")
    assert isinstance(encoder, SentenceTransformerEncoder)
    return encoder


@pytest.fixture(scope="module")
def reference(minilm: SentenceTransformerEncoder, texts: list[str]) -> np.ndarray:
    return minilm.encode(texts, role="document")


@pytest.mark.parametrize("name", [n for n in BACKENDS if n != "torch"])
def test_backend_agrees_with_float32(
    name: str, minilm: SentenceTransformerEncoder, texts: list[str], reference: np.ndarray
) -> None:
    backend = BACKENDS[name]
    reason = backend.unavailable()
    if reason:
        pytest.skip(f"{name}: {reason}")
    encoder = minilm.with_backend(name)
    vectors = encoder.encode(texts, role="document", batch_size=4)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cosines = np.einsum("ij,ij->i", vectors, reference)
    assert cosines.min() >= MIN_COSINE[backend.precision], (name, cosines.min())
    # Batch-mates do not change a text's vector beyond the backend's precision (onnx-int8 quantises activations
    # per batch, so there they move within its int8 bound).
    reordered = encoder.encode(texts[::-1], role="document", batch_size=4)[::-1]
    same = MIN_COSINE["int8"] if name == "onnx-int8" else 0.999
    assert np.einsum("ij,ij->i", reordered, vectors).min() >= same
    assert encoder.dim == 384
    if backend.artifact is not None:
        assert encoder.token_counts(texts).max() > 256  # counted before truncation, without the PyTorch model


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_torch_bf16_multiplies_in_bfloat16_on_the_models_device(device: str, texts: list[str]) -> None:
    float32 = load_encoder("minilm-l6", device=device, backend="torch")
    bf16 = load_encoder("minilm-l6", device=device, backend="torch-bf16")
    assert isinstance(bf16, SentenceTransformerEncoder)
    seen: list[torch.dtype] = []
    layer = next(m for m in bf16.model.modules() if isinstance(m, torch.nn.Linear))
    hook = layer.register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
    try:
        vectors = bf16.encode(texts, role="document")
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert next(bf16.model.parameters()).device.type == device
    cosines = np.einsum("ij,ij->i", vectors, float32.encode(texts, role="document"))
    assert cosines.min() > 0.999 and cosines.max() < 1 - 1e-7  # close to float32, yet not float32


def test_fingerprint_differs_per_backend_and_float32_keeps_its_own(minilm: SentenceTransformerEncoder) -> None:
    fingerprints = {name: minilm.with_backend(name).fingerprint for name in BACKENDS}
    assert len(set(fingerprints.values())) == len(BACKENDS)
    assert fingerprints["torch"] == load_encoder("minilm-l6").fingerprint == minilm.source_fingerprint


def test_default_backend_is_float32_and_scoped() -> None:
    encoder = load_encoder("minilm-l6")
    assert isinstance(encoder, SentenceTransformerEncoder) and encoder.backend == "torch"
    with using_backend("onnx"):
        scoped = load_encoder("minilm-l6")
        assert isinstance(scoped, SentenceTransformerEncoder) and scoped.backend == "onnx"
        assert load_encoder("minilm-l6", backend="torch-bf16").backend == "torch-bf16"  # type: ignore[attr-defined]
    assert load_encoder("minilm-l6").backend == "torch"  # type: ignore[attr-defined]


def test_unknown_backend_suggests_close_names() -> None:
    with pytest.raises(ModelError, match="did you mean onnx"):
        load_encoder("minilm-l6", backend="onx")


def test_batches_are_length_sorted_and_padded_to_their_longest(
    minilm: SentenceTransformerEncoder, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if BACKENDS["onnx"].unavailable():
        pytest.skip("onnxruntime is not installed")
    encoder = minilm.with_backend("onnx")
    encoder.prepare()
    runner = encoder._runner
    assert isinstance(runner, TokenizedRunner)
    widths, real = [], []
    original = runner.infer

    def spy(feeds: dict[str, np.ndarray]) -> np.ndarray:
        widths.append(feeds["input_ids"].shape[1])
        real.append(int(feeds["attention_mask"].sum(axis=1).max()))
        return original(feeds)

    monkeypatch.setattr(runner, "infer", spy)
    encoder.encode(texts, role="document", batch_size=3)
    assert widths == real  # no batch is padded beyond its longest text
    assert widths == sorted(widths)  # texts go in by length
    assert max(widths) == 256  # long abstracts are truncated to the model's limit


def test_calibration_is_written_then_reused(
    minilm: SentenceTransformerEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if BACKENDS["onnx"].unavailable():
        pytest.skip("onnxruntime is not installed")
    first = calibrate(minilm, backends=["onnx"], texts=6, rounds=1, root=tmp_path)
    path = calibration_path(minilm.source_fingerprint, root=tmp_path)
    assert path.exists() and not first.cached
    saved = json.loads(path.read_text())
    assert saved["machine"] == machine_identity() and saved["machine_key"] == machine_key()
    assert saved["manifest"]["schema_version"] >= 1
    assert {m["backend"] for m in saved["measurements"]} == {"torch", "onnx"}
    torch_row, onnx_row = first.measurement("torch"), first.measurement("onnx")
    assert torch_row is not None and onnx_row is not None
    assert torch_row.passed and torch_row.mean_cosine == pytest.approx(1.0, abs=1e-6)
    assert onnx_row.passed and onnx_row.docs_per_second and onnx_row.docs_per_second > 0
    assert first.chosen in {"torch", "onnx"}
    assert "onnx" in str(first)

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached calibration must not measure again")

    monkeypatch.setattr(SentenceTransformerEncoder, "encode", no_encoding)
    second = calibrate(minilm, backends=["onnx"], texts=6, rounds=1, root=tmp_path)
    assert second.cached and second.chosen == first.chosen
    assert second.to_dict()["measurements"] == first.to_dict()["measurements"]
    # A stricter gate is another question: it is measured again, not answered from the cache.
    with pytest.raises(AssertionError, match="must not measure"):
        calibrate(minilm, backends=["onnx"], texts=6, rounds=1, root=tmp_path, gate=QualityGate(min_cosine=0.999))


def test_auto_without_a_calibration_skips_the_quantisation_builds() -> None:
    quick = quick_backends()
    assert "torch" in quick and "onnx" in quick
    assert not [name for name in quick if BACKENDS[name].precision == "int8"]
    assert {name for name in BACKENDS if BACKENDS[name].precision == "int8"} == {"onnx-int8", "openvino-int8"}


def test_gate_rejects_backends_that_move_the_vectors() -> None:
    gate = QualityGate()
    assert gate.failures(BackendMeasurement("x", mean_cosine=0.999, min_cosine=0.99)) == []
    assert gate.failures(BackendMeasurement("x", mean_cosine=0.95, min_cosine=0.9))
    assert gate.failures(BackendMeasurement("x", mean_cosine=1.0, min_cosine=1.0, ndcg_drop=0.8))


def test_auto_runs_the_calibrated_choice(minilm: SentenceTransformerEncoder) -> None:
    """Plumbing: a calibration on file for this model and machine decides what ``auto`` runs, without measuring."""
    measured = [BackendMeasurement(name, docs_per_second=1.0, mean_cosine=1.0, min_cosine=1.0) for name in BACKENDS]
    for m in measured:
        m.passed = True
    calibration = Calibration(
        model="minilm-l6",
        fingerprint=minilm.source_fingerprint,
        machine=machine_identity(),
        machine_key=machine_key(),
        chosen="onnx",
        texts=32,
        rounds=2,
        gate=QualityGate(),
        measurements=measured,
        manifest={
            "eval_data": None,
            "recipes": {name: b.full_recipe for name, b in BACKENDS.items()},
            "check_texts": CHECK_TEXTS,
        },
    )
    path = calibration_path(minilm.source_fingerprint)
    saved = path.read_text() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_dict()))
    try:
        auto = load_encoder("minilm-l6", backend="auto")
        assert isinstance(auto, SentenceTransformerEncoder)
        assert auto.resolved_backend == "onnx"
        assert auto.fingerprint == minilm.with_backend("onnx").fingerprint
    finally:
        if saved is None:
            path.unlink()
        else:
            path.write_text(saved)


def test_backends_command_lists_what_runs_here() -> None:
    result = CliRunner().invoke(app, ["backends"])
    assert result.exit_code == 0, result.output
    for name in BACKENDS:
        assert name in result.stdout
    assert backends.machine_identity()["cpu"] in result.stdout


def test_compare_rejects_an_unknown_backend_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", "--models", "bm25", "--backend", "onnx-int4", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "unknown backend 'onnx-int4'" in result.output


def test_quantisation_is_checked_on_texts_it_was_not_fitted_to() -> None:
    fit, check = calibration_texts(64, half="fit"), calibration_texts(64, half="check")
    assert len(set(fit)) == len(set(check)) == 64
    assert not set(fit) & set(check)
    assert len(check[-1]) > 10 * len(check[0])  # short to long, as the texts a model meets
