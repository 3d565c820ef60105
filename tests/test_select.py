"""The select pipeline on real data with a real model: baselines in, statistics, cost, recommendation, outputs.

The selection itself runs once per session (the ``small_selection`` fixture in conftest.py).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.errors import EmbedlabError
from embedlab.recommend import Constraints
from embedlab.select import SelectConfig

runner = CliRunner()


def test_baselines_statistics_and_costs_are_all_there(small_selection, scifact_small) -> None:
    selection, _ = small_selection
    names = set(selection.statistics.names())
    assert names == {"minilm-l6", "bm25", "hybrid"}  # BM25 added, hybrid of BM25 + the best dense model
    assert set(selection.costs.names()) == names
    hybrid = selection.result("hybrid")
    assert hybrid.spec["parts"] == ["bm25", "minilm-l6"]
    assert set(hybrid.scores.per_query["ndcg@10"]) == {q.id for q in scifact_small.queries}
    assert selection.costs["hybrid"].composed_from == ("minilm-l6", "bm25")
    for model in selection.statistics.models:
        interval = model.intervals["ndcg@10"]
        assert interval.low <= model.means["ndcg@10"] <= interval.high
        assert model.means["ndcg@10"] == selection.result(model.name).mean("ndcg@10")
    curve = selection.recall_curves["minilm-l6"]
    ks = sorted(curve)
    assert ks[-1] == 100 and all(curve[a] <= curve[b] for a, b in itertools.pairwise(ks))


def test_recommendation_is_consistent_with_the_figures(small_selection) -> None:
    selection, out = small_selection
    rec = selection.recommendation
    assert rec.model in selection.statistics.names() and rec.model in rec.feasible
    assert rec.model in rec.tied_with_top
    assert rec.finetune.training is not None  # SciFact has train judgements beside the test split
    assert rec.finetune.command is not None and f"--out {out}" in rec.finetune.command
    assert rec.finetune.base == "minilm-l6"
    # The teacher is the best system other than the base, by the figures of this very selection.
    best_other = next(name for name in selection.statistics.names() if name != "minilm-l6")
    assert rec.finetune.teacher == {"hybrid": "hybrid:minilm-l6"}.get(best_other, best_other)
    assert rec.finetune.teacher_score == selection.result(best_other).mean("ndcg@10")
    assert f"--teacher {rec.finetune.teacher} --out" in rec.finetune.command  # train split beside the test one
    text = str(selection)
    assert "ndcg@10" in text.splitlines()[1] and "95% CI" in text.splitlines()[1]
    assert "Fine-tuning:" in text and rec.headline in text
    system = {"bm25": "bm25", "hybrid": "hybrid:minilm-l6"}.get(rec.model or "", rec.model)
    assert rec.deploy[0].startswith(f"embedlab index --model {system} --data ")
    assert text.splitlines()[-1] == f"  {rec.deploy[1]}" and rec.deploy[1].startswith("embedlab serve --index ")
    markdown = (out / "report.md").read_text()
    assert "### Deploy it" in markdown and rec.deploy[0] in markdown and rec.deploy[1] in markdown


def test_outputs_carry_schema_manifest_and_every_figure(small_selection, scifact_small) -> None:
    selection, out = small_selection
    payload = json.loads((out / "select.json").read_text())
    assert payload["schema_version"] == 1 and payload["kind"] == "select"
    manifest = payload["manifest"]
    assert manifest["data"]["content_hash"] == scifact_small.content_hash
    assert manifest["packages"]["sentence-transformers"] and manifest["hardware"]["threads"] >= 1
    assert set(manifest["seeds"]) == {"bootstrap", "randomization_test", "cost_sample"}
    assert {"compare", "hybrid", "statistics", "cost", "recommend", "total"} <= set(manifest["wall_seconds"])
    assert payload["recommendation"]["model"] == selection.recommendation.model
    assert len(payload["costs"]["models"]) == 3
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1 and report["manifest"]["command"] == "select"
    assert [s["name"] for s in report["sections"]][:3] == ["recommendation", "leaderboard", "plots"]
    assert "report" in report["manifest"]["wall_seconds"]
    compare_json = json.loads((out / "compare.json").read_text())
    assert len(compare_json["results"][0]["per_query"]["ndcg@10"]) == len(scifact_small.queries)
    assert (out / "runs" / "hybrid.trec").exists()
    markdown = (out / "report.md").read_text()
    assert "## Leaderboard" in markdown and "| minilm-l6" in markdown
    assert "(plots/quality-vs-throughput.svg)" in markdown
    assert (out / "plots" / "quality-vs-throughput.svg").read_text().startswith("<svg")


def test_a_model_trained_on_the_evaluated_queries_is_marked_everywhere(
    saved_minilm: Path, scifact_small, vector_cache, shared_data: Path, tmp_path: Path
) -> None:
    from embedlab.finetune.provenance import TrainingProvenance
    from embedlab.select import select

    leaked = scifact_small.queries[:4]
    relevant = {d for q in leaked for d, grade in scifact_small.qrels[q.id].items() if grade > 0}
    by_id = scifact_small.documents_by_id
    TrainingProvenance.from_training(
        base="minilm-l6",
        data=[{"source": "scifact", "content_hash": "3" * 64}],
        queries=[q.text for q in leaked],
        documents=[(d, by_id[d].full_text) for d in relevant],
    ).write(saved_minilm)
    config = SelectConfig(
        models=(str(saved_minilm), "minilm-l6"), cost_documents=4, cost_queries=2, resamples=200, isolate_cost=False
    )
    out = tmp_path / "out"
    data = _write_beir(tmp_path / "data", scifact_small)  # no train split: only the evaluated queries are judged
    selection = select(scifact_small, config, cache=vector_cache, data_ref=str(data), out=out)
    selection.write(out)
    said = f"trained on 4 of {len(scifact_small.queries)} evaluated queries and {len(relevant)} of their relevant"
    # The model (and the hybrid when it is built on it) is marked; the same weights without the record are not.
    hybrid_leaks = selection.result("hybrid").spec["parts"] == ["bm25", "minilm-ft"]
    marked = {"minilm-ft †", "minilm-l6", "bm25", "hybrid †" if hybrid_leaks else "hybrid"}
    assert {row[0].removesuffix(" *") for row in selection.leaderboard()[1]} == marked
    text = str(selection)
    assert f"† minilm-ft: {said}" in text and (f"† hybrid: {said}" in text) == hybrid_leaks
    rec = selection.recommendation
    assert any(r.startswith(f"minilm-ft † {said}") and "not a fair comparison" in r for r in rec.reasons)
    # It is neither fine-tuned further nor a teacher: the clean minilm-l6 is the base, the best clean other system
    # teaches. Only the evaluated queries are judged, so corpus queries train and these ones measure.
    advice = rec.finetune
    clean_others = [n for n in selection.statistics.names() if n not in ("minilm-ft", "minilm-l6")]
    teacher = next(n for n in clean_others if not (n == "hybrid" and hybrid_leaks))
    assert advice.teacher == {"hybrid": "hybrid:minilm-l6"}.get(teacher, teacher) and advice.training is None
    assert advice.command == (
        f"embedlab finetune --data {data} --base minilm-l6 --teacher {advice.teacher} --train-queries corpus "
        f"--eval {data} --out {out}"
    )
    assert advice.command in text and "compare again" not in text
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for rendered in (markdown, html):
        assert "minilm-ft †" in rendered and f"† minilm-ft: {said}" in rendered and "not a fair comparison" in rendered
        assert advice.command in rendered
    report = json.loads((out / "report.json").read_text())
    leaderboard = next(s for s in report["sections"] if s["name"] == "leaderboard")
    assert leaderboard["payload"]["training_overlap"]["minilm-ft"]["queries"] == 4
    models = {m["name"]: m for m in json.loads((out / "select.json").read_text())["models"]}
    assert models["hybrid"]["training_overlap"]["clean"] is False and models["bm25"]["training_overlap"] is None


def test_config_is_validated_once() -> None:
    with pytest.raises(EmbedlabError, match="needs the cut-off 10"):
        SelectConfig(models=("minilm-l6",), k_values=(1, 5))
    with pytest.raises(EmbedlabError, match="at least one model"):
        SelectConfig(models=(" ",))
    with pytest.raises(EmbedlabError, match="unknown test"):
        SelectConfig(models=("bm25",), test="sign")
    config = SelectConfig(models=("minilm-l6", "minilm-l6", "bm25"), constraints=Constraints(max_dim=384))
    assert config.models == ("minilm-l6", "bm25")
    assert config.to_dict()["constraints"]["max_dim"] == 384


def _write_beir(folder: Path, dataset) -> Path:
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in dataset.corpus)
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q.id, "text": q.text}) + "\n" for q in dataset.queries)
    )
    (folder / "qrels").mkdir()
    rows = [f"{q}\t{d}\t{g}" for q, docs in dataset.qrels.items() for d, g in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


def test_cli_answers_impossible_constraints_with_nearest_misses(
    scifact_small, embedlab_cache: Path, tmp_path: Path
) -> None:
    data = _write_beir(tmp_path / "data", scifact_small)
    out = tmp_path / "out"
    args = ["select", "--data", str(data), "--models", "minilm-l3-onnx", "--licence", "GPL-3.0"]
    args += ["--cost-docs", "4", "--cost-queries", "2", "--out", str(out), "--cache", str(embedlab_cache)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "No candidate meets all your constraints (licence in GPL-3.0)" in result.stdout
    assert "--licence: licence" in result.stdout
    payload = json.loads((out / "select.json").read_text())
    assert payload["recommendation"]["model"] is None
    assert set(payload["recommendation"]["nearest_misses"]) == {"minilm-l3-onnx", "bm25", "hybrid"}
    advice = payload["recommendation"]["finetune"]
    assert advice["training"] is None  # this folder has no train split
    assert advice["verdict"] == "not possible" and advice["command"] is None  # an ONNX-only model
    assert (out / "report.html").exists()


def test_cli_help_and_bad_input() -> None:
    result = runner.invoke(app, ["select", "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "embedlab select" in result.output
    result = runner.invoke(app, ["select", "--models", "minilm-l6", "--metric", "ndcg@5", "--k", "1,10"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: --metric ndcg@5 needs the cut-off 5 in --k (got (1, 10))"]


def test_bm25_alone_still_gives_an_answer_and_a_report(scifact_small, tmp_path: Path) -> None:
    from embedlab.select import select

    config = SelectConfig(models=("bm25",), cost_documents=4, cost_queries=2, resamples=200, isolate_cost=False)
    selection = select(scifact_small, config)
    assert selection.statistics.names() == ["bm25"]  # no dense model: no hybrid
    assert selection.recommendation.model == "bm25"
    assert selection.recommendation.finetune.verdict == "not possible"
    paths = selection.write(tmp_path / "out")
    assert "Use bm25." in paths["html"].read_text()
    assert "embedlab index --model bm25 --data" in paths["html"].read_text()
