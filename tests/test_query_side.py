"""Query-side distillation with the packaged all-MiniLM-L6-v2 on real SciFact text (tiny: tens of queries)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedlab.data.loaders import load_beir
from embedlab.finetune.pairs import keyword_pairs, pairs_from_judgements
from embedlab.finetune.query_side import candidate_rows, save_query_side_model, train_query_encoder
from embedlab.finetune.teacher import BM25Teacher
from embedlab.finetune.train import base_model_path
from embedlab.models.encoders import SentenceTransformerEncoder
from embedlab.models.loading import load_encoder

pytestmark = pytest.mark.slow


def _top1_agreement(vectors: np.ndarray, documents: np.ndarray, rows: np.ndarray, teacher: np.ndarray) -> float:
    student = np.einsum("id,ikd->ik", vectors, documents[rows])
    return float((student.argmax(1) == teacher.argmax(1)).mean())


def test_query_encoder_learns_the_teachers_ranking_and_documents_do_not_move(small_beir: Path, tmp_path: Path) -> None:
    dataset = load_beir(small_beir, "train")
    corpus = list(dataset.corpus)
    base = load_encoder("minilm-l6", backend="torch")
    assert isinstance(base, SentenceTransformerEncoder)
    documents = base.encode([d.full_text for d in corpus], role="document")
    pairs = pairs_from_judgements(dataset) + keyword_pairs(corpus, limit=40, seed=0)
    queries = [p.example.query for p in pairs]
    row_of = {d.id: i for i, d in enumerate(corpus)}
    rows = candidate_rows(
        base.encode(queries, role="query"), documents, [row_of[p.positive_id] for p in pairs], depth=10
    )
    assert rows.shape == (len(pairs), 10)
    assert all(row_of[p.positive_id] in rows[i] for i, p in enumerate(pairs))  # the positive is always a candidate
    labels = BM25Teacher(corpus).score(queries, rows)
    before = _top1_agreement(base.encode(queries, role="query"), documents, rows, labels)

    student = base.model
    outcome = train_query_encoder(
        student, queries, rows, labels, documents, epochs=6, learning_rate=1e-4, batch_size=8, seed=0
    )
    assert outcome.steps == 6 * len(queries) // 8 and outcome.best_step == 0 and not outcome.dev_history
    after = _top1_agreement(
        student.encode(queries, normalize_embeddings=True, convert_to_numpy=True), documents, rows, labels
    )
    assert after > before + 0.1, (before, after)

    model_dir = save_query_side_model(student, base_model_path("minilm-l6"), tmp_path / "model")
    tuned = load_encoder(model_dir, backend="auto")
    assert isinstance(tuned, SentenceTransformerEncoder)
    assert tuned.routes_by_role and tuned.resolved_backend == "torch"  # an exported graph has one route only
    texts = [d.full_text for d in corpus[:5]]
    fresh_base = load_encoder("minilm-l6", backend="torch")
    np.testing.assert_allclose(
        tuned.encode(texts, role="document"), fresh_base.encode(texts, role="document"), atol=1e-5
    )
    assert not np.allclose(tuned.encode(queries[:5], role="query"), fresh_base.encode(queries[:5], role="query"))
    with pytest.raises(Exception, match="torch"):
        _ = load_encoder(model_dir, backend="onnx").resolved_backend


def test_cli_query_side_reports_and_keeps_documents(small_beir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from embedlab.cli import app

    out = tmp_path / "ft"
    args = ["finetune", "--data", str(small_beir), "--out", str(out), "--teacher", "bm25", "--train-side", "query",
            "--pseudo-queries", "keywords", "--batch-size", "8", "--time-budget", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "finetune.json").read_text())
    training = payload["training"]
    assert training["side"] == "query" and training["queries"] > 0
    assert training["dev_history"][0]["step"] == 0  # the base is a candidate: dev picks it unless a step beats it
    routed = (out / "model" / "router_config.json").is_file()
    kept_base = training["kept_base"] or not (payload["dev_decision"] or {}).get("significant", False)
    assert routed != kept_base  # a Router model exactly when the tuned queries were kept
    assert "teacher" in payload and payload["teacher"]["name"] == "bm25"

    refused = CliRunner().invoke(app, ["finetune", "--data", str(small_beir), "--out", str(tmp_path / "x"),
                                       "--train-side", "query"])  # fmt: skip
    assert refused.exit_code != 0 and "teacher" in refused.output and "Traceback" not in refused.output


def test_teacher_auto_measures_each_candidate_on_dev_and_takes_the_best(small_beir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from embedlab.cli import app
    from embedlab.finetune.teacher import AUTO_TEACHERS

    out = tmp_path / "ft"
    args = ["finetune", "--data", str(small_beir), "--out", str(out), "--teacher", "auto", "--train-side", "query",
            "--pseudo-queries", "keywords", "--batch-size", "8", "--time-budget", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "finetune.json").read_text())
    trials = payload["teacher_candidates"]
    assert [t["name"] for t in trials] == list(AUTO_TEACHERS)
    assert len({t["base_ndcg@10"] for t in trials}) == 1  # one dev set, one base score, every candidate on it
    best = max(trials, key=lambda t: t["teacher_ndcg@10"])
    assert payload["teacher"]["name"] == best["name"]
    assert payload["config"]["teacher"] == best["name"]  # the saved config names what taught, not "auto"
