"""``auto`` judged on the user's own documents: a seeded, disjoint fit/check sample of the corpus, calibrations and
int8 artifacts cached per sample, and the texts the gate used named in what is printed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.models.backends import (
    BACKENDS,
    INT8_CORPUS_TEXTS,
    MIN_CORPUS_TEXTS,
    BackendMeasurement,
    Calibration,
    QualityGate,
    artifact_folder,
    calibrate,
    calibration_path,
    corpus_sample,
    current_sample,
    machine_identity,
    machine_key,
    using_corpus,
)
from embedlab.models.encoders import SentenceTransformerEncoder
from embedlab.models.loading import load_encoder


@pytest.fixture(scope="module")
def abstracts(scifact_small) -> list[str]:
    return [d.full_text for d in scifact_small.corpus]


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    encoder = load_encoder("minilm-l6", backend="torch")
    assert isinstance(encoder, SentenceTransformerEncoder)
    assert encoder.calibration_sample is None  # fixed now, outside any corpus: the bundled texts' encoder
    return encoder


def test_the_sample_is_seeded_disjoint_and_names_its_texts(abstracts: list[str]) -> None:
    sample = corpus_sample(abstracts + abstracts[:50] + ["", "   "])  # duplicates and blanks are left out
    assert sample is not None
    assert len(sample.fit) == 64 and len(sample.check) == 32
    assert not set(sample.fit) & set(sample.check)
    assert set(sample.fit) | set(sample.check) <= set(abstracts)
    assert sample.corpus_texts == len(set(abstracts))
    assert corpus_sample(abstracts) == sample  # seeded: the same corpus gives the same sample
    assert corpus_sample(abstracts, seed=1) != sample
    assert corpus_sample(abstracts[:-40]) is not None and corpus_sample(abstracts[:-40]).digest != sample.digest  # type: ignore[union-attr]
    assert "sample of the corpus" in sample.describe() and sample.digest in sample.describe()
    small = corpus_sample(abstracts[:30])
    assert small is not None and len(small.check) == 10 and len(small.fit) == 20  # a third checks
    assert corpus_sample(abstracts[: MIN_CORPUS_TEXTS - 1]) is None  # too few: the bundled texts serve


def test_using_corpus_is_scoped_and_fixes_the_encoders_sample(abstracts: list[str]) -> None:
    assert current_sample() is None
    outside = load_encoder("minilm-l6", backend="openvino-int8")
    assert isinstance(outside, SentenceTransformerEncoder)
    assert outside.calibration_sample is None  # used outside: no corpus, and it stays so
    with using_corpus(abstracts) as sample:
        assert sample is not None and current_sample() == sample
        inside = load_encoder("minilm-l6", backend="openvino-int8")
        assert isinstance(inside, SentenceTransformerEncoder)
        assert inside.calibration_sample == sample
        assert outside.calibration_sample is None
        assert inside.with_backend("onnx").calibration_sample == sample
    assert current_sample() is None
    assert inside.calibration_sample == sample  # vectors never change under an encoder


def test_fitted_backends_are_keyed_by_the_sample_and_the_others_are_not(abstracts: list[str]) -> None:
    plain = load_encoder("minilm-l6", backend="torch")
    assert isinstance(plain, SentenceTransformerEncoder)
    bundled = {name: plain.with_backend(name).fingerprint for name in BACKENDS}
    with using_corpus(abstracts) as sample:
        assert sample is not None
        fitted = load_encoder("minilm-l6", backend="torch")
        assert isinstance(fitted, SentenceTransformerEncoder)
        assert fitted.calibration_sample == sample
        for name, backend in BACKENDS.items():
            assert (fitted.with_backend(name).fingerprint != bundled[name]) == backend.fitted, name
            folder = artifact_folder(backend.artifact, fitted, sample=sample) if backend.artifact else ""
            assert (sample.digest in folder) == backend.fitted, name
    assert {name for name, b in BACKENDS.items() if b.fitted} == {"onnx-int8", "openvino-int8"}


def test_calibration_on_the_corpus_is_its_own_and_says_so(
    minilm: SentenceTransformerEncoder, abstracts: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if BACKENDS["onnx"].unavailable():
        pytest.skip("onnxruntime is not installed")
    bundled = calibrate(minilm, backends=["onnx"], texts=6, rounds=1, root=tmp_path)
    seen: list[str] = []
    original = SentenceTransformerEncoder.encode

    def spy(self: SentenceTransformerEncoder, texts: list[str], **kwargs: object) -> np.ndarray:
        seen.extend(texts)
        return original(self, texts, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SentenceTransformerEncoder, "encode", spy)
    with using_corpus(abstracts) as sample:
        assert sample is not None
        encoder = load_encoder("minilm-l6", backend="torch")
        first = calibrate(encoder, backends=["onnx"], texts=6, rounds=1, root=tmp_path)
        again = calibrate(encoder, backends=["onnx"], texts=6, rounds=1, root=tmp_path)
    assert not first.cached and again.cached  # not answered from the bundled texts' calibration
    path = calibration_path(minilm.source_fingerprint, root=tmp_path, sample=sample.digest)
    saved = json.loads(path.read_text())
    assert saved["manifest"]["check_texts"] == f"corpus-sample-{sample.digest}"
    assert saved["manifest"]["calibration_sample"]["corpus_texts"] == sample.corpus_texts
    assert first.texts == 6 and "sample of the corpus" in first.gate_texts
    assert "gate judged on 6 texts: a seeded sample of the corpus" in str(first)
    assert "stdlib-docs" in str(bundled)
    assert set(seen) == set(sample.check[:6])  # measured on the corpus's check texts, never on its fit texts


def _calibration_on_file(encoder: SentenceTransformerEncoder, chosen: str, sample_digest: str | None) -> Path:
    measured = [BackendMeasurement(name, docs_per_second=1.0, mean_cosine=1.0, min_cosine=1.0) for name in BACKENDS]
    for m in measured:
        m.passed = True
    calibration = Calibration(
        model="minilm-l6",
        fingerprint=encoder.source_fingerprint,
        machine=machine_identity(),
        machine_key=machine_key(),
        chosen=chosen,
        texts=32,
        rounds=2,
        gate=QualityGate(),
        measurements=measured,
        manifest={
            "eval_data": None,
            "recipes": {name: b.full_recipe for name, b in BACKENDS.items()},
            "check_texts": f"corpus-sample-{sample_digest}",
        },
        gate_texts="a seeded sample of the corpus (on file)",
    )
    path = calibration_path(encoder.source_fingerprint, sample=sample_digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_dict()))
    return path


def test_auto_runs_the_corpus_calibrations_choice(
    minilm: SentenceTransformerEncoder, abstracts: list[str], shared_data: Path
) -> None:
    """Plumbing: under a corpus, ``auto`` reads the calibration of that sample (every backend, int8 included, for a
    large corpus), and ``embedlab backends --data`` prints which texts it used."""
    corpus = [d.full_text for d in _scifact(shared_data)]
    assert len(corpus) >= INT8_CORPUS_TEXTS
    sample = corpus_sample(corpus)
    assert sample is not None
    path = _calibration_on_file(minilm, "openvino-int8", sample.digest)
    try:
        with using_corpus(corpus):
            auto = load_encoder("minilm-l6", backend="auto")
            assert isinstance(auto, SentenceTransformerEncoder)
            assert auto.resolved_backend == "openvino-int8"
            expected = minilm.with_backend("openvino-int8")
            expected._sample, expected._sample_known = sample, True
            assert auto.fingerprint == expected.fingerprint
        result = CliRunner().invoke(app, ["backends", "--model", "minilm-l6", "--data", str(shared_data / "scifact")])
        assert result.exit_code == 0, result.output
        assert "gate judged on 32 texts: a seeded sample of the corpus (on file)" in result.stdout
        assert "(cached)" in result.stdout
    finally:
        path.unlink()


def _scifact(shared_data: Path) -> list:
    from embedlab.data.loaders import load_beir

    return list(load_beir(shared_data / "scifact", split="test").corpus)


def test_int8_fitted_on_the_corpus_keeps_the_vectors(minilm: SentenceTransformerEncoder, abstracts: list[str]) -> None:
    """Real build: NNCF int8 fitted to a SciFact sample, each SmoothQuant setting tried on held-out fit texts."""
    if BACKENDS["openvino-int8"].unavailable():
        pytest.skip(f"openvino-int8: {BACKENDS['openvino-int8'].unavailable()}")
    with using_corpus(abstracts) as sample:
        assert sample is not None
        encoder = load_encoder("minilm-l6", backend="openvino-int8")
        assert isinstance(encoder, SentenceTransformerEncoder)
        check = list(sample.check)
        vectors = encoder.encode(check, role="document", batch_size=8)
    artifact = encoder.artifact
    assert artifact is not None and artifact.name.endswith(sample.digest)
    record = json.loads((artifact / "int8.json").read_text())
    tried = record["trials"]
    assert [t["smooth_quant_alpha"] for t in tried[:2]] == [-1.0, 0.8]  # int8 everywhere, SmoothQuant off and on
    assert record["held_out_mean_cosine"] == max(t["held_out_mean_cosine"] for t in tried)  # the closest is kept
    # Layers are kept float only when no int8-everywhere trial reached the gate's bound.
    everywhere = max(t["held_out_mean_cosine"] for t in tried[:2])
    assert len(tried) == 2 or (len(tried) == 3 and everywhere < 0.995 and tried[2]["float_groups"])
    assert record["fit_texts"] + record["held_out_texts"] == len(sample.fit)
    meta = json.loads((artifact / "embedlab-export.json").read_text())
    assert meta["fit_texts"]["digest"] == sample.digest
    cosines = np.einsum("ij,ij->i", vectors, minilm.encode(check, role="document"))
    assert cosines.min() >= 0.97 and cosines.mean() >= 0.99
    # Texts of 31-32 tokens encoded alone: a batch exactly 32 tokens wide came out wrong on an AMX Xeon.
    tokenizer = minilm.model.tokenizer
    sentences = [s for text in abstracts[:300] for s in text.split(". ") if len(s) > 20]
    near_32 = [s for s in sentences if len(tokenizer(s)["input_ids"]) in (31, 32)][:6]
    assert near_32
    alone = np.vstack([encoder.encode([s], role="document") for s in near_32])
    assert np.einsum("ij,ij->i", alone, minilm.encode(near_32, role="document")).min() >= 0.97


def test_a_cost_worker_gets_the_callers_sample(abstracts: list[str]) -> None:
    """``select`` measures cost in a fresh process: it must resolve ``auto`` on the same sample as its caller."""
    from embedlab import cost
    from embedlab.models.backends import CalibrationSample, using_sample

    assert cost._active_sample() is None
    with using_corpus(abstracts) as sample:
        assert sample is not None
        sent = json.loads(json.dumps(cost._active_sample()))  # what goes to the worker, through JSON
    rebuilt = CalibrationSample.from_texts_dict(sent)
    assert rebuilt == sample and rebuilt.digest == sample.digest
    with using_sample(rebuilt):
        assert load_encoder("minilm-l6", backend="openvino-int8").calibration_sample == sample  # type: ignore[union-attr]
