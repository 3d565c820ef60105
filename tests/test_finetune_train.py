"""Real fine-tuning with the packaged all-MiniLM-L6-v2 on real SciFact text: kept tiny (tens of pairs, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedlab.data.dataset import RetrievalDataset
from embedlab.embedding import EmbeddingCache, embed
from embedlab.errors import EmbedlabError
from embedlab.finetune.adapter import save_adapter_model, train_adapter
from embedlab.finetune.config import FinetuneConfig
from embedlab.finetune.losses import loss_data
from embedlab.finetune.pairs import pairs_from_judgements
from embedlab.finetune.train import DeadlineStop, base_model_path, deadline_callback, train_model
from embedlab.models.loading import load_encoder

pytestmark = pytest.mark.slow

TINY = {"batch_size": 8, "max_seq_length": 64, "precision": "fp32", "time_budget_minutes": None, "seed": 0}


def _cosines(model: Any, pairs: list[tuple[str, str]]) -> np.ndarray:
    model.max_seq_length = 64  # as trained; keeps the check quick
    left = model.encode([a for a, _ in pairs], normalize_embeddings=True)
    right = model.encode([b for _, b in pairs], normalize_embeddings=True)
    return np.einsum("ij,ij->i", left, right)


def test_cli_finetune_end_to_end(small_beir: Path, tmp_path: Path, shared_data: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from typer.testing import CliRunner

    from embedlab.cli import app

    out = tmp_path / "ft"
    guard = tmp_path / "guard.tsv"
    sts_lines = (shared_data / "stsb" / "sts-test.csv").read_text(encoding="utf-8").splitlines()[:60]
    guard.write_text("sentence1\tsentence2\tscore\n" + "".join(
        f"{f[5]}\t{f[6]}\t{f[4]}\n" for f in (line.split("\t") for line in sts_lines)
    ))  # fmt: skip
    args = ["finetune", "--data", str(small_beir), "--out", str(out), "--epochs", "1", "--batch-size", "8",
            "--max-seq-length", "64", "--precision", "fp32", "--time-budget", "0", "--guard", str(guard),
            "--export-suspects", str(tmp_path / "suspects.jsonl")]  # fmt: skip
    from embedlab.report import add_section, load_report

    add_section(out, "selection", {"winner": "minilm-l6"}, "minilm-l6 wins.", "<p>minilm-l6 wins.</p>")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = load_report(out)
    assert report is not None and [s.name for s in report.sections] == ["selection", "finetune"]
    assert "Fine-tuning" in (out / "report.html").read_text()
    assert "fine-tuned" in result.stdout and "estimated" in result.output

    payload = json.loads((out / "finetune.json").read_text())
    assert payload["leakage"]["clean"] and payload["config"]["hard_negatives"] == 1
    assert payload["mining"]["pairs"] == payload["pairs"]["total"]
    assert (tmp_path / "suspects.jsonl").exists()
    deltas = payload["per_query"]["deltas"]
    assert len(deltas) == payload["data"]["test"]["queries"] == 8
    assert payload["guard"]["pairs"] == 60 and -1 <= payload["guard"]["after"] <= 1
    assert payload["manifest"]["schema_version"] and payload["training"]["steps"] >= 1
    assert payload["training"]["learning_rate"] == payload["config"]["learning_rate"]  # judged pairs: the main rate
    assert (out / "finetune.md").read_text().startswith("# embedlab finetune")

    # A standard folder: plain sentence-transformers and embedlab both load it; the card is inside.
    model_dir = out / "model"
    card = (model_dir / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "Held-out evaluation" in card
    tuned = SentenceTransformer(str(model_dir), device="cpu")
    base = SentenceTransformer(base_model_path("minilm-l6"), device="cpu")
    assert tuned.max_seq_length == base.max_seq_length  # trained at 64 tokens, used at the base length
    changed = [
        not np.allclose(a.detach().numpy(), b.detach().numpy())
        for a, b in zip(tuned.parameters(), base.parameters(), strict=True)
    ]
    decision = payload["dev_decision"]
    # The base model is kept unless the dev gain is significant, and the report says which.
    if decision is not None and not decision["significant"]:
        assert not any(changed) and any("not significant" in w for w in payload["warnings"])
        assert payload["after"]["means"] == payload["before"]["means"]
    elif decision is not None:
        assert any(changed)
    assert any("in-distribution" in n for n in result.stdout.splitlines())
    # The saved model records what it trained on when it is not the base unchanged.
    from embedlab.data.loaders import load_beir
    from embedlab.finetune.provenance import read_provenance

    record = read_provenance(model_dir)
    if any(changed):
        assert record is not None and record.overlap(load_beir(small_beir, "test")).queries == 0
        assert record.overlap(load_beir(small_beir, "train")).queries > 0
    else:
        assert record is None
    encoder = load_encoder(model_dir)
    assert encoder.encode(["a claim"], role="query").shape == (1, 384)


def test_teacher_labels_corpus_queries_and_eval_is_the_headline(small_beir: Path, tmp_path: Path) -> None:
    """Corpus queries only (no human training judgement), BM25 as the teacher, a separate --eval set."""
    from typer.testing import CliRunner

    from embedlab.cli import app
    from embedlab.finetune.run import teacher_advice

    held = tmp_path / "eval"
    (held / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (held / name).write_text((small_beir / name).read_text())
    (held / "qrels" / "test.tsv").write_text((small_beir / "qrels" / "test.tsv").read_text())
    out = tmp_path / "ft"
    args = ["finetune", "--data", str(small_beir), "--out", str(out), "--teacher", "bm25", "--train-queries",
            "corpus", "--pseudo-queries", "keywords", "--eval", str(held), "--epochs", "1", "--batch-size", "8",
            "--max-seq-length", "64", "--precision", "fp32", "--time-budget", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "finetune.json").read_text())
    assert payload["train_queries"] == "corpus"
    assert payload["pairs"]["total"] == 0  # no judged pair trained
    assert payload["training"]["learning_rate"] == payload["config"]["teacher_learning_rate"] == 2e-5
    assert payload["teacher"]["name"] == "bm25" and payload["teacher"]["examples"] > 0
    own = payload["teacher"]["dev"]  # the teacher's own score, on the dev queries
    assert 0 < own["teacher_ndcg@10"] <= 1 and 0 < own["base_ndcg@10"] <= 1
    assert payload["corpus_queries"]["made"] == {"keywords": 80}
    # dev: every judged training query (they do not train here), and no corpus query on a dev answer
    assert payload["data"]["dev"]["queries"] > 0 and payload["data"]["train"]["queries"] == 0
    assert payload["corpus_queries"]["dropped_positive_relevant_to_dev_query"] > 0
    assert payload["eval"]["data"]["queries"] == 8 and payload["data"]["in_distribution"] is False
    assert "on the --eval set" in result.stdout and "headline" in result.stdout
    assert payload["dev_decision"] is None or "significant" in payload["dev_decision"]
    advice = teacher_advice(payload, str(small_beir))
    assert advice is None or advice in payload["notes"]  # said in the report when the teacher stays ahead
    # --eval is the only judged data: corpus queries are held out as dev, so the base is still kept unless the
    # dev gain is significant
    out2 = tmp_path / "ft2"
    args2 = ["finetune", "--data", str(held), "--out", str(out2), "--teacher", "bm25", "--train-queries", "corpus",
             "--pseudo-queries", "keywords", "--eval", str(held), "--epochs", "1", "--batch-size", "8",
             "--max-seq-length", "64", "--precision", "fp32", "--time-budget", "0"]  # fmt: skip
    result2 = CliRunner().invoke(app, args2)
    assert result2.exit_code == 0, result2.output
    second = json.loads((out2 / "finetune.json").read_text())
    assert "corpus queries held out as dev" in second["dev_from_corpus_queries"]
    assert second["data"]["dev"]["queries"] > 0
    assert second["dev_decision"] is not None or second["training"]["kept_base"]
    assert teacher_advice(second, str(held)) is None  # corpus-query dev is no ground to send a user to the teacher

    # the labels are cached by content: a second labelling reads them back
    from embedlab.data.loaders import load_beir
    from embedlab.embedding import EmbeddingCache
    from embedlab.finetune.pairs import keyword_pairs
    from embedlab.finetune.teacher import BM25Teacher, label_triples

    corpus = load_beir(small_beir, "test").corpus
    pairs = keyword_pairs(corpus, limit=20, seed=0)
    cache = EmbeddingCache(tmp_path / "cache")
    encoder = load_encoder("minilm-l6")
    first = label_triples(pairs, corpus, teacher=BM25Teacher(corpus), student=encoder, negatives=2, cache=cache)
    again = label_triples(pairs, corpus, teacher=BM25Teacher(corpus), student=encoder, negatives=2, cache=cache)
    assert not first.cached and again.cached
    assert [e.margins for e in first.examples] == [e.margins for e in again.examples]
    assert all(len(e.negatives) == 2 and e.positive not in e.negatives for e in first.examples)
    assert first.scale > 0


def test_training_raises_held_in_similarity_and_resumes(
    small_beir: Path, tmp_path: Path, interrupt_at_save: tuple[type[Exception], Any]
) -> None:
    from sentence_transformers import SentenceTransformer

    from embedlab.data.loaders import load_beir

    train = load_beir(small_beir, "train")
    pairs = pairs_from_judgements(train)[:8]
    data = loss_data("mnrl", [p.example for p in pairs])
    config = FinetuneConfig.create(epochs=2, learning_rate=1e-4, checkpoint_steps=1, **{**TINY, "batch_size": 4})

    work, model_dir = tmp_path / "work", tmp_path / "model"
    interrupted, stop = interrupt_at_save
    with pytest.raises(interrupted):
        train_model(config, data, dev=None, work_dir=work, model_dir=model_dir, callbacks=[stop])
    assert not model_dir.exists()
    outcome = train_model(config, data, dev=None, work_dir=work, model_dir=model_dir)
    assert outcome.resumed_from == "checkpoint-2"
    assert outcome.steps == 4 and outcome.precision == "fp32"

    held_in = [(p.example.query, p.example.positive) for p in pairs]
    before = _cosines(SentenceTransformer(base_model_path("minilm-l6"), device="cpu"), held_in)
    after = _cosines(SentenceTransformer(str(model_dir), device="cpu"), held_in)
    assert after.mean() > before.mean()


def test_loss_mismatch_fails_before_training(small_beir: Path, tmp_path: Path) -> None:
    from embedlab.finetune.run import finetune

    config = FinetuneConfig.create(loss="cosent", **TINY)
    with pytest.raises(EmbedlabError, match="needs a similarity score"):
        finetune(small_beir, config=config, out=tmp_path / "x")
    assert not (tmp_path / "x" / "model").exists()


def test_adapter_trains_a_linear_map_over_cached_vectors(
    scifact_small: RetrievalDataset, vector_cache: EmbeddingCache, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder("minilm-l6")
    pairs = pairs_from_judgements(scifact_small)[:24]
    queries = embed(encoder, [p.example.query for p in pairs], role="query", cache=vector_cache)
    positives = embed(encoder, [p.example.positive for p in pairs], role="document", cache=vector_cache)
    outcome = train_adapter(queries, positives, epochs=40, learning_rate=2e-3, batch_size=8, seed=0)
    adapter = outcome.adapter
    base_cos = np.einsum("ij,ij->i", queries, positives)
    tuned_cos = np.einsum("ij,ij->i", adapter.transform(queries), adapter.transform(positives))
    assert tuned_cos.mean() > base_cos.mean()
    assert not np.allclose(adapter.weight, np.eye(384))

    model_dir = save_adapter_model(base_model_path("minilm-l6"), adapter, tmp_path / "adapted")
    model = SentenceTransformer(str(model_dir), device="cpu")
    text = [pairs[0].example.query]
    expected = adapter.transform(encoder.encode(text, role="query"))
    assert np.allclose(model.encode(text, normalize_embeddings=False), expected, atol=1e-4)


def test_deadline_stops_before_the_budget_with_a_last_checkpoint() -> None:
    from transformers import TrainerControl, TrainerState

    now = [0.0]
    stop = DeadlineStop()
    callback = deadline_callback(10.0, reserve=1.0, stop=stop, clock=lambda: now[0])
    state, control = TrainerState(max_steps=10), TrainerControl()
    callback.on_train_begin(None, state, control)
    for step, at in enumerate([2.0, 4.0, 6.0], start=1):  # 2 s a step: 6 + 2 + 1 s of reserve still fits in 10
        state.global_step, now[0] = step, at
        callback.on_step_end(None, state, control)
        assert not control.should_training_stop
    state.global_step, now[0] = 4, 8.0  # the next step and the final evaluation would end at 11 s
    callback.on_step_end(None, state, control)
    assert control.should_training_stop and control.should_save and control.should_evaluate
    assert stop.step == 4

    # Without a dev split there is nothing to evaluate: the stop only saves.
    stop, control = DeadlineStop(), TrainerControl()
    callback = deadline_callback(1.0, reserve=5.0, stop=stop, evaluate=False, clock=lambda: now[0])
    callback.on_train_begin(None, state, control)
    state.global_step = 5
    callback.on_step_end(None, state, control)
    assert stop.step == 5 and control.should_training_stop and control.should_save and not control.should_evaluate

    # The last planned step never counts as a stop: the run ends there anyway.
    stop, control = DeadlineStop(), TrainerControl()
    callback = deadline_callback(1.0, reserve=5.0, stop=stop, clock=lambda: now[0])
    callback.on_train_begin(None, state, control)
    state.global_step = state.max_steps
    callback.on_step_end(None, state, control)
    assert stop.step is None and not control.should_training_stop


def test_step_estimate_times_batches_of_the_run_and_leaves_the_model_unchanged(shared_data: Path) -> None:
    """nl2bash commands sorted short to long: the first batch is no typical batch, the run's own batches are."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embedlab.finetune.losses import LossData
    from embedlab.finetune.train import measure_step_seconds, training_batches

    model = SentenceTransformer(base_model_path("minilm-l6"))
    commands = [json.loads(line)["text"] for line in (shared_data / "nl2bash" / "corpus.jsonl").open()][:2000]
    lengths = [len(ids) for ids in model.tokenizer(commands, truncation=True, max_length=256)["input_ids"]]
    by_length = [c for _, c in sorted(zip(lengths, commands, strict=True))]
    data = LossData({"anchor": by_length, "positive": by_length})

    grouped, grouped_tokens = training_batches(model, data, batch_size=32, order="length", seed=0)
    shuffled, random_tokens = training_batches(model, data, batch_size=32, order="random", seed=0)
    for batches in (grouped, shuffled):
        assert sorted(i for batch in batches for i in batch) == list(range(2000))
    assert grouped_tokens.mean() < 0.8 * random_tokens.mean()
    assert grouped_tokens.mean() > 2 * min(grouped_tokens)  # far above the shortest batch the first rows would give

    before = [p.detach().clone() for p in model.parameters()]
    estimate = measure_step_seconds(
        model, MultipleNegativesRankingLoss(model), data, batch_size=32, precisions=["fp32"], order="length"
    )
    assert set(estimate) == {"fp32"} and 0 < estimate["fp32"] < 60
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())


def test_deadline_decays_the_learning_rate_with_the_time_left() -> None:
    import torch
    from transformers import TrainerControl, TrainerState, get_linear_schedule_with_warmup

    now = [0.0]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=100)
    callback = deadline_callback(101.0, reserve=1.0, stop=DeadlineStop(), clock=lambda: now[0])
    callback.on_train_begin(None, TrainerState(max_steps=100), TrainerControl(), lr_scheduler=scheduler)

    def rate_after(step: int, at: float) -> float:
        now[0] = at
        optimizer.step()
        scheduler.step()
        assert scheduler.last_epoch == step
        return float(optimizer.param_groups[0]["lr"])

    assert rate_after(1, 0.5) == pytest.approx(0.99)  # on time: the step schedule rules
    assert rate_after(2, 75.0) == pytest.approx(0.25)  # 10 s a step, not 1: three quarters of the time gone
    assert rate_after(3, 100.0) == pytest.approx(0.0)  # the deadline (less the reserve): no rate left
