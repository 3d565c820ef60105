"""The CLI through Typer's CliRunner: it runs the library, writes results, and answers bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedlab.cli import app

runner = CliRunner()


def write_beir(folder: Path, dataset) -> Path:
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for doc in dataset.corpus:
            out.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for query in dataset.queries:
            out.write(json.dumps({"_id": query.id, "text": query.text}) + "\n")
    (folder / "qrels").mkdir()
    rows = [f"{q}\t{d}\t{g}" for q, docs in dataset.qrels.items() for d, g in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("command", ["compare", "sts", "models"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output
    assert f"embedlab {command}" in result.output


def test_compare_command_writes_leaderboard(scifact_small, embedlab_cache: Path, tmp_path: Path) -> None:
    data = write_beir(tmp_path / "scifact-small", scifact_small)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "compare",
            "--data",
            str(data),
            "--models",
            "bm25,minilm-l6",
            "--k",
            "1,10",
            "--out",
            str(out),
            "--cache",
            str(embedlab_cache),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.stdout and "minilm-l6" in result.stdout
    payload = json.loads((out / "compare.json").read_text())
    assert {r["name"] for r in payload["results"]} == {"bm25", "minilm-l6"}
    assert (out / "compare.md").exists()


def test_bad_data_is_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "broken"
    data.mkdir()
    (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "fine"}\n{"_id": "d2", "text": \n')
    (data / "queries.jsonl").write_text('{"_id": "q1", "text": "question"}\n')
    (data / "qrels").mkdir()
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    result = runner.invoke(app, ["compare", "--data", str(data), "--models", "bm25", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "corpus.jsonl:2" in lines[-1]
    assert "Traceback" not in result.output


def test_unknown_model_is_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", "--models", "minilm-l7", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "did you mean minilm-l6" in result.stderr


def test_bad_k_is_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", "--k", "ten", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--k takes whole numbers" in result.stderr


def test_missing_data_path(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no such file or folder" in result.stderr
