"""The export gate on real data: it refuses what loses more nDCG@10 than allowed (with the figures), accepts a
float32 ONNX export of minilm-l6 on SciFact, and the exported folder loads back and encodes like the original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.data.dataset import RetrievalDataset
from embedlab.errors import EmbedlabError, ModelError
from embedlab.export import ExportRefused, export_model
from embedlab.models.backends import BACKENDS, EXPORT_META
from embedlab.models.encoders import ExportedEncoder
from embedlab.models.loading import load_encoder

pytestmark = pytest.mark.skipif(BACKENDS["onnx"].unavailable() is not None, reason="onnxruntime is not installed")


def test_gate_refuses_a_drop_beyond_the_limit(scifact_small: RetrievalDataset, vector_cache, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    # Allowing at most -1 points means the export must *gain* a point: float32 ONNX cannot.
    with pytest.raises(ExportRefused) as refused:
        export_model("minilm-l6", "onnx", out, scifact_small, max_ndcg_drop=-1.0, cache=vector_cache)
    result = refused.value.result
    assert not result.accepted and not out.exists()
    assert 0.6 < result.baseline_ndcg <= 1.0
    assert abs(result.drop) < 0.5  # the same model in float32: essentially no change
    message = str(refused.value)
    assert f"{100 * result.baseline_ndcg:.2f}" in message and f"{100 * result.exported_ndcg:.2f}" in message
    assert "refused" in str(result)


def test_float32_onnx_export_passes_and_loads_back(
    scifact_small: RetrievalDataset, vector_cache, tmp_path: Path
) -> None:
    out = tmp_path / "minilm-onnx"
    result = export_model("minilm-l6", "onnx", out, scifact_small, cache=vector_cache)
    assert result.accepted and result.out == out and result.drop <= 0.5
    described = json.loads((out / EXPORT_META).read_text())
    assert described["backend"] == "onnx" and described["gate"]["accepted"] is True
    assert described["gate"]["baseline"] == result.baseline_ndcg
    assert described["manifest"]["data"]["content_hash"] == scifact_small.content_hash
    assert (out / "model.onnx").exists() and (out / "tokenizer.json").exists()

    loaded = load_encoder(out)
    assert isinstance(loaded, ExportedEncoder) and loaded.spec.name == out.name and loaded.dim == 384
    texts = [d.full_text for d in scifact_small.corpus[:6]] + [q.text for q in scifact_small.queries[:2]]
    original = load_encoder("minilm-l6").encode(texts, role="document")
    again = loaded.encode(texts, role="document")
    assert np.einsum("ij,ij->i", original, again).min() > 0.9999
    assert loaded.fingerprint != load_encoder("minilm-l6").fingerprint
    with pytest.raises(ModelError, match="exported for backend 'onnx'"):
        load_encoder(out, backend="onnx-int8")


def test_export_command_refuses_in_one_line_and_writes_nothing(
    scifact_small: RetrievalDataset, embedlab_cache: Path, tmp_path: Path
) -> None:
    data = _write_beir(tmp_path / "data", scifact_small)
    out = tmp_path / "refused"
    args = ["export", "minilm-l6", "--backend", "onnx", "--data", str(data), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-ndcg-drop", "-1", "--cache", str(embedlab_cache)])
    assert result.exit_code == 2, result.output
    assert "error: export refused" in result.stderr and "allowed: -1.00" in result.stderr
    assert "refused" in result.stdout  # the figures, as a table
    assert not out.exists()


def test_only_sentence_transformers_models_export(scifact_small: RetrievalDataset, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="only sentence-transformers models"):
        export_model("minilm-l6-int8", "onnx", tmp_path / "x", scifact_small)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(EmbedlabError, match="not an empty folder"):
        export_model("minilm-l6", "onnx", tmp_path / "busy", scifact_small)


def _write_beir(folder: Path, dataset: RetrievalDataset) -> Path:
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for d in dataset.corpus:
            out.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for q in dataset.queries:
            out.write(json.dumps({"_id": q.id, "text": q.text}) + "\n")
    (folder / "qrels").mkdir()
    rows = [f"{qid}\t{doc}\t{score}" for qid, docs in dataset.qrels.items() for doc, score in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def test_compare_runs_on_the_chosen_backend(
    scifact_small: RetrievalDataset, embedlab_cache: Path, tmp_path: Path
) -> None:
    """``compare --backend onnx`` encodes with ONNX Runtime (its vectors are cached by the gate tests above)."""
    data = _write_beir(tmp_path / "data", scifact_small)
    args = ["compare", "--data", str(data), "--models", "minilm-l6", "--k", "10", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--backend", "onnx", "--cache", str(embedlab_cache)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "out" / "compare.json").read_text())
    onnx = load_encoder("minilm-l6", backend="onnx")
    assert payload["results"][0]["fingerprint"] == onnx.fingerprint != load_encoder("minilm-l6").fingerprint
    assert payload["results"][0]["means"]["ndcg@10"] > 0.6
