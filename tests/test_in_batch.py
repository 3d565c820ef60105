"""In-batch teacher distillation (``--teacher-in-batch``): the loss against its formula, and real tiny runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from embedlab.data.dataset import Document
from embedlab.data.loaders import load_beir
from embedlab.errors import EmbedlabError
from embedlab.finetune.config import FinetuneConfig
from embedlab.finetune.losses import LossPart, loss_data
from embedlab.finetune.pairs import keyword_pairs, pairs_from_judgements
from embedlab.finetune.teacher import (
    BM25Teacher,
    LabelledTriples,
    MarginExample,
    in_batch_part,
    label_triples,
    margin_loss_data,
    refuse_in_batch_cross_encoder,
)
from embedlab.finetune.train import base_model_path, bf16_supported, train_model
from embedlab.models.loading import load_encoder

pytestmark = pytest.mark.slow

TINY = {"batch_size": 4, "max_seq_length": 48, "time_budget_minutes": None, "seed": 0}


@pytest.fixture(scope="module")
def corpus(small_beir: Path) -> tuple[Document, ...]:
    return load_beir(small_beir, "test").corpus


@pytest.fixture(scope="module")
def student() -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(base_model_path("minilm-l6"), device="cpu")
    model.max_seq_length = 48
    model.eval()  # no dropout: the loss and the direct computation must see the same vectors
    return model


def _triples(corpus: tuple[Document, ...], rows: list[list[int]], queries: list[str], scale: float) -> LabelledTriples:
    examples = tuple(
        MarginExample(
            query=q,
            positive=corpus[r[0]].full_text,
            negatives=tuple(corpus[i].full_text for i in r[1:]),
            margins=tuple(0.0 for _ in r[1:]),  # not read by the in-batch loss: it asks the teacher itself
            origin="keywords",
            rows=tuple(r),
        )
        for q, r in zip(queries, rows, strict=True)
    )
    return LabelledTriples("bm25", examples, {}, {}, 0, False, 0.0, scale=scale)


def _loss_on(loss: Any, model: Any, data_columns: dict[str, list[Any]], ids: list[int]) -> float:
    names = [n for n in data_columns if n != "label"]
    features = [model.preprocess([data_columns[n][i] for i in ids]) for n in names]
    with torch.no_grad():
        value = loss(features, torch.tensor([data_columns["label"][i] for i in ids]))
    return float(value)


def test_in_batch_loss_is_the_formula_and_one_row_is_margin_mse(corpus: tuple[Document, ...], student: Any) -> None:
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    from sentence_transformers.util import pairwise_cos_sim

    teacher = BM25Teacher(corpus)
    # Real claims over real abstracts: each query's positive, then two other abstracts
    queries = [
        "vitamin D deficiency and bone fractures",
        "gene expression in tumour cells",
        "antibiotic resistance in bacteria",
        "neurons of the adult brain",
        "insulin and diabetes risk",
    ]
    rows = [[0, 5, 9], [1, 6, 10], [2, 7, 11], [3, 8, 12], [4, 13, 14]]
    scale = 0.7
    triples = _triples(corpus, rows, queries, scale)
    part = in_batch_part(triples, teacher)
    assert part.loss == "in-batch-margin-mse" and part.data.columns["label"] == [0, 1, 2, 3, 4]
    assert [n for n in part.data.columns] == ["query", "positive", "negative_1", "negative_2", "label"]
    assert part.make is not None
    loss = part.make(student)

    ids = [3, 0, 4]  # a shuffled batch: the label, not the position, finds the row
    got = _loss_on(loss, student, part.data.columns, ids)

    # Directly: every query against every document of the batch, one (query, document) at a time
    doc_rows = [rows[i][c] for c in range(3) for i in ids]  # positives of the batch, then each negative column
    q = student.encode([queries[i] for i in ids], normalize_embeddings=True, convert_to_numpy=True)
    d = student.encode([corpus[r].full_text for r in doc_rows], normalize_embeddings=True, convert_to_numpy=True)
    s = q @ d.T
    t = np.array([[teacher.score([queries[i]], np.array([[r]]))[0, 0] for r in doc_rows] for i in ids])
    terms = [
        ((s[a, a] - s[a, j]) - scale * (t[a, a] - t[a, j])) ** 2
        for a in range(len(ids))
        for j in range(len(doc_rows))
        if j != a
    ]
    assert len(terms) == 3 * 9 - 3
    assert got == pytest.approx(float(np.mean(terms)), rel=1e-3, abs=1e-6)
    assert got > 0

    # One row: MarginMSE (cosine) on that row's own negatives with the teacher's scaled margins
    one = _loss_on(loss, student, part.data.columns, [2])
    own = teacher.score([queries[2]], np.array([rows[2]]))[0]
    margins = torch.tensor([[scale * (own[0] - own[1]), scale * (own[0] - own[2])]], dtype=torch.float32)
    reference = MarginMSELoss(student, similarity_fct=pairwise_cos_sim)
    columns = margin_loss_data(triples).columns
    features = [student.preprocess([columns[n][2]]) for n in ("query", "positive", "negative_1", "negative_2")]
    with torch.no_grad():
        expected = float(reference(features, margins))
    assert one == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_a_dense_teacher_encodes_the_training_queries_once(
    corpus: tuple[Document, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedlab.finetune.teacher import DenseTeacher, load_teacher

    teacher = load_teacher("minilm-l6", corpus[:20], backend=None)
    assert isinstance(teacher, DenseTeacher)
    queries = ["vitamin D and bone fractures", "antibiotic resistance"]
    rows = np.array([[0, 3, 7], [1, 2, 19]])
    expected = teacher.score(queries, rows)
    teacher.remember(queries)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a remembered query was encoded again")

    monkeypatch.setattr(teacher.encoder, "encode", refuse)
    np.testing.assert_allclose(teacher.score(queries[::-1], rows[::-1]), expected[::-1], rtol=1e-5, atol=1e-6)


def test_in_batch_trains_beside_judged_pairs_in_bf16_and_resumes(
    small_beir: Path, corpus: tuple[Document, ...], tmp_path: Path, interrupt_at_save: tuple[type[Exception], Any]
) -> None:
    """Two data sets in one run (judged MNRL pairs, which bring the NO_DUPLICATES sampler, and in-batch corpus rows),
    bf16 autocast where the CPU has it, interrupted after the checkpoint of step 2 and resumed."""
    encoder = load_encoder("minilm-l6")
    teacher = BM25Teacher(corpus)
    triples = label_triples(
        keyword_pairs(corpus, limit=8, seed=0), corpus, teacher=teacher, student=encoder, negatives=2
    )
    judged = loss_data("mnrl", [p.example for p in pairs_from_judgements(load_beir(small_beir, "train"))[:4]])
    parts = {"judged": LossPart("mnrl", judged), "corpus": in_batch_part(triples, teacher)}
    precision = "bf16" if bf16_supported() else "fp32"
    config = FinetuneConfig.create(
        epochs=1, learning_rate=1e-4, checkpoint_steps=2, precision=precision, teacher="bm25", teacher_in_batch=True,
        **TINY,
    )  # fmt: skip

    work, model_dir = tmp_path / "work", tmp_path / "model"
    lines: list[str] = []
    interrupted, stop = interrupt_at_save
    with pytest.raises(interrupted):
        train_model(config, parts, dev=None, work_dir=work, model_dir=model_dir, callbacks=[stop])
    outcome = train_model(config, parts, dev=None, work_dir=work, model_dir=model_dir, echo=lines.append)
    assert outcome.resumed_from == "checkpoint-2"
    assert outcome.precision == precision
    assert outcome.steps == outcome.planned_steps == 1 + 2  # 4 judged rows and 8 corpus rows, 4 a step
    assert any("8 corpus examples (4 texts each, in-batch-margin-mse)" in line for line in lines), lines
    assert all(math.isfinite(h["loss"]) for h in outcome.loss_history)
    assert (model_dir / "config_sentence_transformers.json").is_file()


def test_cli_finetune_with_teacher_in_batch_records_it(small_beir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from embedlab.cli import app

    out = tmp_path / "ft"
    args = ["finetune", "--data", str(small_beir), "--out", str(out), "--teacher", "bm25", "--train-queries",
            "corpus", "--pseudo-queries", "keywords", "--teacher-in-batch", "--epochs", "0.25", "--batch-size", "8",
            "--max-seq-length", "48", "--precision", "fp32", "--time-budget", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "finetune.json").read_text())
    assert payload["config"]["teacher_in_batch"] is True
    assert payload["teacher"]["in_batch"] is True and payload["teacher"]["examples"] > 0
    assert json.loads((out / "model" / "config_sentence_transformers.json").read_text())
    assert payload["training"]["steps"] >= 1
    assert "in-batch-margin-mse" in result.output and "in-batch MarginMSE" in result.output


def test_teacher_in_batch_is_refused_where_it_cannot_work(small_beir: Path, tmp_path: Path) -> None:
    """A CrossEncoder folder (recognised, as load_teacher does, by its config alone: the refusal comes before any
    model loads), and runs with nothing to distil; each a one-line error with the fix."""
    from typer.testing import CliRunner

    from embedlab.cli import app

    cross = tmp_path / "reranker"
    cross.mkdir()
    (cross / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    with pytest.raises(EmbedlabError, match=r"CrossEncoder.*fix: drop --teacher-in-batch"):
        refuse_in_batch_cross_encoder(str(cross))
    refuse_in_batch_cross_encoder("bm25")  # no error

    base = ["finetune", "--data", str(small_beir), "--teacher-in-batch", "--time-budget", "0"]
    for n, (extra, needle) in enumerate(
        (
            (["--teacher", str(cross), "--train-queries", "corpus"], "CrossEncoder"),
            (["--train-queries", "judged"], "this run has none"),
            (["--teacher", "bm25", "--train-side", "query"], "--train-side query"),
        )
    ):
        result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / f"out{n}"), *extra])
        assert result.exit_code != 0 and needle in result.output, result.output
        assert "--teacher-in-batch" in result.output and "fix:" in result.output
        assert "Traceback" not in result.output
