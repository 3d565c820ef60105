"""What a fine-tuned model trained on, and the marks it earns where it is evaluated on that.

The record is checked on real SciFact queries and abstracts; ``compare`` runs the real all-MiniLM-L6-v2 saved into
a folder of its own (the ``saved_minilm`` fixture), through the library and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import write_beir
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.data.dataset import Document, Query, RetrievalDataset
from embedlab.errors import DataError
from embedlab.evaluate.compare import compare
from embedlab.finetune.provenance import (
    PROVENANCE_FILE,
    TrainingOverlap,
    TrainingProvenance,
    describe_data,
    fold_query,
    read_provenance,
)
from embedlab.models.encoders import content_fingerprint

runner = CliRunner()


def _relevant(dataset: RetrievalDataset, query_index: int) -> list[Document]:
    query = dataset.queries[query_index]
    by_id = dataset.documents_by_id
    return [by_id[d] for d, grade in dataset.qrels[query.id].items() if grade > 0]


def _leaky_record(dataset: RetrievalDataset) -> tuple[TrainingProvenance, int, int]:
    """A record that trained on five of ``dataset``'s queries (spelt differently) and on the relevant documents of
    three of them (two by id and text, one by text alone, as a pairs file gives it); returns the record and the
    expected query and document counts."""
    queries = ["  " + q.text.upper().replace(" ", "   ") for q in dataset.queries[:5]]
    queries.append("a training query that is not in the evaluated data")
    with_ids = [(d.id, d.full_text) for i in (0, 1) for d in _relevant(dataset, i)]
    text_only = [("", d.full_text) for d in _relevant(dataset, 2)]
    unrelated = [("not-a-scifact-id", "A negative that is in no evaluated corpus.")]
    record = TrainingProvenance.from_training(
        base="minilm-l6",
        data=[{"source": "pairs.jsonl", "content_hash": "0" * 64}],
        queries=queries,
        documents=[*with_ids, *text_only, *unrelated],
    )
    expected_documents = len({d.id for i in (0, 1, 2) for d in _relevant(dataset, i)})
    return record, 5, expected_documents


def _clean_record(dataset: RetrievalDataset) -> TrainingProvenance:
    return TrainingProvenance.from_training(
        base="minilm-l6",
        data=[{"source": "elsewhere", "content_hash": "1" * 64}],
        queries=["what do cats eat", "how to list files in a folder"],
        documents=[("d1", "Cats eat fish."), ("", "ls lists the files of a folder.")],
    )


def test_record_round_trips_and_counts_what_it_trained_on(scifact_small, tmp_path: Path) -> None:
    record, queries, documents = _leaky_record(scifact_small)
    path = record.write(tmp_path)
    assert path == tmp_path / PROVENANCE_FILE
    payload = json.loads(path.read_text())
    assert payload["schema_version"] == 1 and payload["base"] == "minilm-l6"
    assert payload["query_sha256"] == sorted(payload["query_sha256"]) and len(payload["query_sha256"]) == 6
    assert read_provenance(tmp_path) == record
    assert read_provenance(tmp_path / "no-record-here") is None
    assert fold_query("  What  causes\tFever? ") == "what causes fever?"

    overlap = record.overlap(scifact_small)
    assert (overlap.queries, overlap.relevant_documents) == (queries, documents)
    assert overlap.evaluated_queries == len(scifact_small.queries) and not overlap.clean
    assert overlap.describe() == (
        f"trained on 5 of {len(scifact_small.queries)} evaluated queries and {documents} of their relevant documents"
    )
    assert overlap.to_dict()["clean"] is False
    # The other queries of the same data set: the model saw none of them, but it did see some of their documents
    # only if those are shared; counted exactly.
    others = scifact_small.subset(query_ids=[q.id for q in scifact_small.queries[5:]])
    seen = {d.id for i in (0, 1, 2) for d in _relevant(scifact_small, i)}
    relevant_to_others = {d for q in others.qrels for d in others.qrels[q]}
    assert record.overlap(others) == TrainingOverlap(0, len(seen & relevant_to_others), len(others.queries))
    assert _clean_record(scifact_small).overlap(scifact_small).clean


def test_a_document_id_counts_only_on_the_corpus_it_trained_on(scifact_small) -> None:
    ids = [d.id for d in _relevant(scifact_small, 0)]
    # The trainer saw these ids with other texts (e.g. chunks): the ids alone prove nothing on a foreign corpus.
    documents = [(i, f"a chunk of {i}") for i in ids]
    foreign = TrainingProvenance.from_training(
        base="b", data=[{"source": "other", "content_hash": "2" * 64}], queries=[], documents=documents
    )
    assert foreign.overlap(scifact_small).relevant_documents == 0
    # Trained on another split of the same corpus (same corpus hash): the ids are the same documents.
    train_split = scifact_small.subset(query_ids=[q.id for q in scifact_small.queries[20:]])
    same_corpus = TrainingProvenance.from_training(
        base="b", data=[describe_data(train_split)], queries=[], documents=documents
    )
    assert same_corpus.overlap(scifact_small).relevant_documents == len(set(ids))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{oops", f"{PROVENANCE_FILE}:1: not valid JSON"),
        ('{"kind": "something-else"}', 'expected a JSON object with "kind": "embedlab-training"'),
        (
            '{"kind": "embedlab-training", "schema_version": 1, "base": "b", "data": [], "document_ids": [], '
            '"query_sha256": ["not-a-hash"], "document_sha256": []}',
            "'query_sha256' must be a list of SHA-256 hex digests",
        ),
        ('{"kind": "embedlab-training", "schema_version": 7}', "schema_version 7; this embedlab reads version 1"),
    ],
)
def test_a_corrupt_record_names_the_file_and_the_fix(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / PROVENANCE_FILE).write_text(content)
    with pytest.raises(DataError, match="fix: ") as caught:
        read_provenance(tmp_path)
    assert problem in str(caught.value) and str(tmp_path / PROVENANCE_FILE) in str(caught.value)


def test_the_record_does_not_change_the_vector_fingerprint(saved_minilm: Path, scifact_small) -> None:
    (saved_minilm / PROVENANCE_FILE).unlink(missing_ok=True)
    before = content_fingerprint(saved_minilm, "settings")
    _leaky_record(scifact_small)[0].write(saved_minilm)
    assert content_fingerprint(saved_minilm, "settings") == before
    (saved_minilm / "extra.txt").write_text("a file that could change vectors")
    assert content_fingerprint(saved_minilm, "settings") != before
    (saved_minilm / "extra.txt").unlink()


def test_compare_marks_a_model_evaluated_on_what_it_trained_on(
    saved_minilm: Path, scifact_small, vector_cache, tmp_path: Path
) -> None:
    record, queries, documents = _leaky_record(scifact_small)
    record.write(saved_minilm)
    comparison = compare(scifact_small, [str(saved_minilm), "bm25"], k_values=(1, 10), cache=vector_cache)
    result = next(r for r in comparison.results if r.name == "minilm-ft")
    assert result.training_overlap == TrainingOverlap(queries, documents, len(scifact_small.queries))
    assert next(r for r in comparison.results if r.name == "bm25").training_overlap is None
    footnote = (
        f"† minilm-ft: trained on 5 of {len(scifact_small.queries)} evaluated queries and {documents} of their "
        "relevant documents — its score is not a fair comparison"
    )
    text = str(comparison)
    assert "minilm-ft †" in text and footnote in text.splitlines() and "bm25 †" not in text
    paths = comparison.write(tmp_path)
    markdown = paths["markdown"].read_text()
    assert "| minilm-ft † |" in markdown and footnote in markdown
    payload = json.loads(paths["json"].read_text())
    overlaps = {r["name"]: r["training_overlap"] for r in payload["results"]}
    assert overlaps["bm25"] is None
    assert overlaps["minilm-ft"]["queries"] == 5 and overlaps["minilm-ft"]["clean"] is False

    _clean_record(scifact_small).write(saved_minilm)
    clean = compare(scifact_small, [str(saved_minilm)], k_values=(1, 10), cache=vector_cache)
    assert "†" not in str(clean) and "†" not in clean.to_markdown()
    assert clean.results[0].training_overlap is not None and clean.results[0].training_overlap.clean
    assert clean.to_dict()["results"][0]["training_overlap"]["clean"] is True
    # Same folder, same weights: the scores do not depend on the record.
    assert clean.results[0].scores.means == result.scores.means


def test_cli_compare_marks_and_refuses_a_corrupt_record(
    saved_minilm: Path, scifact_small, embedlab_cache: Path, tmp_path: Path
) -> None:
    data = write_beir(tmp_path / "data", scifact_small)
    record, _, documents = _leaky_record(scifact_small)
    record.write(saved_minilm)
    args = ["compare", "--data", str(data), "--models", f"{saved_minilm},bm25", "--k", "1,10"]
    args += ["--out", str(tmp_path / "out"), "--cache", str(embedlab_cache)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "minilm-ft †" in result.stdout
    assert f"† minilm-ft: trained on 5 of {len(scifact_small.queries)} evaluated queries and {documents}" in (
        result.stdout
    )

    (saved_minilm / PROVENANCE_FILE).write_text("{oops")
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    # The data loads first (its one-line summary goes to stderr), then the record fails before any model runs.
    lines = result.output.strip().splitlines()
    assert [line for line in lines if "Traceback" in line or line.startswith("error")] == [lines[-1]]
    assert lines[-1].startswith(f"error: {saved_minilm / PROVENANCE_FILE}:1: not valid JSON")
    assert "fix: fine-tune the model again" in lines[-1]
    _clean_record(scifact_small).write(saved_minilm)


def test_overlap_of_an_empty_record_and_a_data_set_without_relevant_documents() -> None:
    dataset = RetrievalDataset("toy", (Document("d1", "Cats purr."),), (Query("q1", "Which animal purrs?"),), {})
    record = TrainingProvenance.from_training(base="b", data=[], queries=["which  animal PURRS?"], documents=[])
    assert record.overlap(dataset) == TrainingOverlap(1, 0, 1)


def test_an_exported_fine_tuned_model_keeps_its_record(
    saved_minilm: Path, scifact_small, vector_cache, tmp_path: Path
) -> None:
    from embedlab.evaluate.compare import training_overlap
    from embedlab.export import export_model

    record, queries, documents = _leaky_record(scifact_small)
    record.write(saved_minilm)
    out = tmp_path / "minilm-ft-bf16"
    export_model(str(saved_minilm), "torch-bf16", out, scifact_small, cache=vector_cache)
    assert read_provenance(out) == record
    assert training_overlap(str(out), scifact_small) == TrainingOverlap(queries, documents, len(scifact_small.queries))
