"""The bundled stdlib docstring data set: deterministic, well formed, no query leaked into its document."""

from __future__ import annotations

import inspect
import re
import statistics
import time

import pytest

from embedlab.data.dataset import RetrievalDataset
from embedlab.data.stdlib_docs import DATASET_NAME, load_stdlib_docs, split_summary
from embedlab.errors import EmbedlabError


@pytest.fixture(scope="module")
def built() -> tuple[RetrievalDataset, float]:
    start = time.perf_counter()
    dataset = load_stdlib_docs()
    return dataset, time.perf_counter() - start


def test_builds_in_a_few_seconds(built):
    _, seconds = built
    assert seconds < 5


def test_two_builds_are_identical(built):
    dataset, _ = built
    again = load_stdlib_docs()
    assert again.content_hash == dataset.content_hash
    assert [d.metadata for d in again.corpus] == [d.metadata for d in dataset.corpus]


def test_size_and_identity(built):
    dataset, _ = built
    assert 400 <= len(dataset.queries) <= 700
    assert len(dataset.corpus) == len(dataset.queries)
    assert dataset.name == DATASET_NAME
    assert dataset.split == "test"
    assert re.fullmatch(r"python \d+\.\d+\.\d+\S* stdlib", dataset.source)
    modules = {d.metadata["module"] for d in dataset.corpus}
    assert len(modules) >= 30


def test_each_query_has_exactly_one_relevant_existing_document(built):
    dataset, _ = built
    assert set(dataset.qrels) == {q.id for q in dataset.queries}
    doc_ids = [d.id for d in dataset.corpus]
    assert len(set(doc_ids)) == len(doc_ids)
    assert not set(doc_ids) & set(dataset.qrels), "query ids must differ from document ids"
    for query in dataset.queries:
        judged = dataset.qrels[query.id]
        assert len(judged) == 1
        ((doc_id, grade),) = judged.items()
        assert grade == 1
        assert doc_id in dataset.documents_by_id
        assert query.id == f"q:{doc_id}"


def test_no_document_contains_its_query(built):
    dataset, _ = built
    for query in dataset.queries:
        (doc_id,) = dataset.qrels[query.id]
        document = dataset.documents_by_id[doc_id]
        assert query.text not in document.full_text
        assert " ".join(query.text.split()) not in " ".join(document.full_text.split())


def test_queries_are_unique_prose_and_documents_start_with_the_signature(built):
    dataset, _ = built
    texts = [q.text for q in dataset.queries]
    assert len(set(texts)) == len(texts)
    for query in dataset.queries:
        assert "\n" not in query.text
        assert "->" not in query.text
    for document in dataset.corpus:
        first_line = document.text.splitlines()[0]
        assert first_line.removeprefix("class ").startswith(f"{document.id}(")
        assert " at 0x" not in first_line, "memory addresses make the content hash change between runs"
        assert len(document.text) - len(first_line) >= 40


def test_a_known_pair_matches_the_docstring(built):
    dataset, _ = built
    documents = dataset.documents_by_id
    queries = {q.id: q.text for q in dataset.queries}
    doc_id = next(d for d in documents if d.startswith("statistics.") and documents[d].metadata["kind"] == "function")
    summary, rest = split_summary(inspect.getdoc(getattr(statistics, doc_id.removeprefix("statistics."))) or "")
    assert queries[f"q:{doc_id}"] == summary
    assert documents[doc_id].text.endswith(rest)
    assert documents[doc_id].title == ""


def test_max_pairs_caps_and_spreads_deterministically():
    small = load_stdlib_docs(max_pairs=50)
    assert len(small.queries) == 50
    assert small.content_hash == load_stdlib_docs(max_pairs=50).content_hash
    assert len({d.metadata["module"] for d in small.corpus}) >= 20  # evenly spaced, not the first 50
    with pytest.raises(EmbedlabError, match="max_pairs"):
        load_stdlib_docs(max_pairs=0)


@pytest.mark.parametrize(
    ("doc", "summary", "rest"),
    [
        (
            "Return the sum.  Floats are exact.\n\nSee math.fsum.",
            "Return the sum.",
            "Floats are exact.\n\nSee math.fsum.",
        ),
        ("Split a path,\nkeeping the tail.\n\nMore text.", "Split a path, keeping the tail.", "More text."),
        ("Pick one, e.g. the first. Then stop.", "Pick one, e.g. the first.", "Then stop."),
        (
            "chain(*iterables) --> chain object\n\nReturn a chain object.\n\nMore.",
            "Return a chain object.",
            "More.",
        ),
        ("No full stop at all", "No full stop at all", ""),
        ("", "", ""),
    ],
)
def test_split_summary(doc, summary, rest):
    assert split_summary(doc) == (summary, rest)
