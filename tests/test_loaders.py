"""Loaders: real SciFact and STS Benchmark, pairs files, folders of documents, and every kind of bad input."""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path

import pytest

from embedlab.data.loaders import (
    DataWarning,
    TrainingExample,
    load_beir,
    load_dataset,
    load_folder,
    load_pairs,
    load_sts,
    load_training_pairs,
)
from embedlab.errors import DataError

# ----------------------------------------------------------------------------------------------------
# Helpers


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def _jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


GOOD_CORPUS = _jsonl(
    {"_id": "d1", "title": "Cats", "text": "Cats purr."},
    {"_id": "d2", "title": "", "text": "Dogs bark."},
    {"_id": "d3", "title": "Only a title", "text": ""},
)
GOOD_QUERIES = _jsonl({"_id": "q1", "text": "which animal purrs?"}, {"_id": "q2", "text": "who barks?"})
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"


def _beir(
    root: Path,
    corpus: str | bytes = GOOD_CORPUS,
    queries: str | bytes = GOOD_QUERIES,
    qrels: str | bytes = GOOD_QRELS,
    split: str = "test",
) -> Path:
    _write(root / "corpus.jsonl", corpus)
    _write(root / "queries.jsonl", queries)
    _write(root / "qrels" / f"{split}.tsv", qrels)
    return root


def _data_error(call: object, *args: object, **kwargs: object) -> str:
    assert callable(call)
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


def _minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one line of Helvetica text per page, with a correct cross-reference table."""
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for text in pages:
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objects)} 0 R >>"
        )
        kids.append(len(objects))
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# ----------------------------------------------------------------------------------------------------
# Real data: SciFact (BEIR) and the STS Benchmark


@pytest.mark.parametrize(("split", "queries", "judgements"), [("test", 300, 339), ("train", 809, 919)])
def test_scifact_loads_with_the_published_counts(shared_data: Path, split: str, queries: int, judgements: int) -> None:
    ds = load_beir(shared_data / "scifact", split=split)
    assert ds.stats() == {"documents": 5183, "queries": queries, "judgements": judgements}
    assert (ds.name, ds.split) == ("scifact", split)
    assert {q.id for q in ds.queries} == set(ds.qrels)
    assert all(grade == 1 for docs in ds.qrels.values() for grade in docs.values())
    assert all(doc_id in ds.documents_by_id for docs in ds.qrels.values() for doc_id in docs)


def test_scifact_splits_are_disjoint_and_loads_are_deterministic(shared_data: Path) -> None:
    test, train = load_beir(shared_data / "scifact", "test"), load_beir(shared_data / "scifact", "train")
    assert not {q.id for q in test.queries} & {q.id for q in train.queries}
    again = load_dataset(shared_data / "scifact", split="test")
    assert again.content_hash == test.content_hash != train.content_hash
    # Queries keep the order of queries.jsonl.
    lines = (shared_data / "scifact" / "queries.jsonl").read_text().splitlines()
    in_file_order = [json.loads(line)["_id"] for line in lines]
    assert [q.id for q in test.queries] == [i for i in in_file_order if i in test.qrels]
    doc = test.corpus[0]
    assert doc.id == "4983" and doc.title.startswith("Microstructural development") and doc.text


def test_stsb_test_loads_1379_pairs_with_quotes_intact(shared_data: Path) -> None:
    sts = load_sts(shared_data / "stsb" / "sts-test.csv")
    assert len(sts.pairs) == 1379
    assert all(0 <= p.score <= 5 for p in sts.pairs)
    assert sts.pairs[0].text1 == "A girl is styling her hair." and sts.pairs[0].score == 2.5
    # Line 649: a quote opened and never closed; a CSV parser would swallow the following lines.
    assert sts.pairs[648].text2 == 'I always go by the rule "When in doubt, throw it out!'
    assert sts.pairs[648].score == 4
    # Line 643: quotes and extra trailing fields (a source URL) that must not leak into the sentences.
    assert sts.pairs[642].text2 == 'My answer to your question is "Probably Not".'
    assert not any("StackExchange" in p.text1 + p.text2 for p in sts.pairs)
    assert sum('"' in p.text1 + p.text2 for p in sts.pairs) == 50
    from_folder = load_sts(shared_data / "stsb", split="test")
    assert from_folder.content_hash == sts.content_hash
    assert [len(load_sts(shared_data / "stsb", split=s).pairs) for s in ("train", "dev")] == [5749, 1500]


# ----------------------------------------------------------------------------------------------------
# BEIR: good and bad input


def test_small_beir_folder(tmp_path: Path) -> None:
    ds = load_beir(_beir(tmp_path / "toy"))
    assert ds.stats() == {"documents": 3, "queries": 2, "judgements": 2}
    assert ds.qrels["q2"]["d2"] == 2
    assert ds.documents_by_id["d3"].full_text == "Only a title"
    assert ds.name == "toy" and ds.source == str(tmp_path / "toy")


def test_beir_keeps_only_judged_queries_and_accepts_integer_ids(tmp_path: Path) -> None:
    corpus = _jsonl({"_id": 7, "text": "seven"}, {"_id": "8", "text": "eight"})
    queries = _jsonl({"_id": 1, "text": "one"}, {"_id": "2", "text": "two"}, {"_id": "3", "text": ""})
    ds = load_beir(_beir(tmp_path, corpus, queries, "query-id\tcorpus-id\tscore\n2\t7\t2.0\n"))
    assert [q.id for q in ds.queries] == ["2"]  # the unjudged query with empty text is not an error
    assert dict(ds.qrels["2"]) == {"7": 2}


def test_beir_qrels_without_header_and_files_with_a_byte_order_mark(tmp_path: Path) -> None:
    root = _beir(tmp_path, corpus=b"\xef\xbb\xbf" + GOOD_CORPUS.encode(), qrels="q1 d1 1\nq2\td2\t1\n")
    assert load_beir(root).stats() == {"documents": 3, "queries": 2, "judgements": 2}
    _write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n")
    assert "test.tsv: no judgements in split 'test'" in _data_error(load_beir, root)


@pytest.mark.parametrize(
    ("file", "content", "line", "expected"),
    [
        ("corpus.jsonl", GOOD_CORPUS + '{"_id": "d4", "text": "unfinished\n', 4, "malformed JSON"),
        ("corpus.jsonl", GOOD_CORPUS + "[1, 2]\n", 4, "expected a JSON object"),
        ("corpus.jsonl", GOOD_CORPUS + _jsonl({"text": "no id"}), 4, "missing field '_id'"),
        ("corpus.jsonl", GOOD_CORPUS + _jsonl({"_id": "d4", "title": "t"}), 4, "missing field 'text'"),
        ("corpus.jsonl", GOOD_CORPUS + _jsonl({"_id": "d4", "text": 5}), 4, "must be a string"),
        ("corpus.jsonl", GOOD_CORPUS + _jsonl({"_id": "d1", "text": "again"}), 4, "duplicate _id 'd1'"),
        ("corpus.jsonl", GOOD_CORPUS + _jsonl({"_id": "d4", "title": " ", "text": ""}), 4, "empty text"),
        ("corpus.jsonl", GOOD_CORPUS + _jsonl({"_id": "", "text": "x"}), 4, "empty '_id'"),
        ("queries.jsonl", GOOD_QUERIES + _jsonl({"_id": "q1", "text": "dup"}), 3, "duplicate _id 'q1'"),
        ("queries.jsonl", _jsonl({"_id": "q1", "text": "  "}, {"_id": "q2", "text": "x"}), 1, "empty text"),
        ("queries.jsonl", GOOD_QUERIES + _jsonl({"id": "q3", "text": "x"}), 3, "missing field '_id'"),
        ("qrels/test.tsv", GOOD_QRELS + "q1\td2\t0.5\n", 4, "score '0.5' is not an integer"),
        ("qrels/test.tsv", GOOD_QRELS + "q1\td2\thigh\n", 4, "score 'high' is not an integer"),
        ("qrels/test.tsv", GOOD_QRELS + "q1\td2\n", 4, "expected 3 tab-separated fields"),
        ("qrels/test.tsv", GOOD_QRELS + "\nq1\td1\t1\n", 5, "duplicate judgement"),
    ],
)
def test_bad_beir_input_names_file_line_and_fix(
    tmp_path: Path, file: str, content: str, line: int, expected: str
) -> None:
    root = _beir(tmp_path)
    _write(root / file, content)
    message = _data_error(load_beir, root)
    assert f"{Path(file).name}:{line}: " in message
    assert expected in message
    assert "(fix: " in message


@pytest.mark.parametrize("file", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_non_utf8_bytes_name_the_line(tmp_path: Path, file: str) -> None:
    root = _beir(tmp_path)
    original = (root / file).read_bytes().splitlines(keepends=True)
    original[1] = original[1].replace(b"d", b"\xe9", 1) if file != "queries.jsonl" else b'{"_id": "q\xff"}\n'
    _write(root / file, b"".join(original))
    message = _data_error(load_beir, root)
    assert f"{Path(file).name}:2: bytes that are not UTF-8" in message and "UTF-8" in message


def test_unknown_ids_are_counted_with_three_examples(tmp_path: Path) -> None:
    qrels = GOOD_QRELS + "q9\td1\t1\nq1\td9\t1\nq8\td8\t1\nq7\td1\t1\n"
    root = _beir(tmp_path, qrels=qrels)
    message = _data_error(load_beir, root)
    assert "test.tsv:4: 4 judgement row(s) name ids" in message
    assert "line 4: unknown query 'q9'" in message and "line 5: unknown document 'd9'" in message
    assert "line 6: unknown query 'q8' and unknown document 'd8'" in message
    assert "q7" not in message  # only three examples
    assert "allow_unknown_ids=True" in message
    with pytest.warns(DataWarning, match="dropped 4 judgement row"):
        ds = load_beir(root, allow_unknown_ids=True)
    assert ds.stats() == {"documents": 3, "queries": 2, "judgements": 2}


def test_missing_split_lists_the_splits_there_are(tmp_path: Path) -> None:
    root = _beir(tmp_path)
    _write(root / "qrels" / "dev.tsv", GOOD_QRELS)
    message = _data_error(load_beir, root, split="train")
    assert "train.tsv" in message and "no judgements for split 'train'" in message
    assert "dev, test" in message


def test_missing_beir_files(tmp_path: Path) -> None:
    root = _beir(tmp_path)
    (root / "queries.jsonl").unlink()
    assert "queries.jsonl: file not found" in _data_error(load_beir, root)
    assert "not a folder" in _data_error(load_beir, tmp_path / "nowhere")
    assert "no such file or folder" in _data_error(load_dataset, tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------------
# Pairs


PAIRS_JSONL = _jsonl(
    {"query": "what purrs?", "positive": "Cats purr.", "negative": ["Dogs bark.", "Cows moo."], "score": 0.9},
    {"query": "what barks?", "document": "Dogs bark.", "negative": "Cats purr."},
    {"query": "what purrs?", "positive": "  Lions purr too. ", "id": "ignored"},
)


def test_pairs_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.jsonl", "\n" + PAIRS_JSONL)
    ds = load_pairs(path)
    assert ds.stats() == {"documents": 4, "queries": 2, "judgements": 3}
    assert [d.text for d in ds.corpus] == ["Cats purr.", "Dogs bark.", "Cows moo.", "Lions purr too."]
    assert ds.name == "pairs" and ds.split == ""
    by_text = {d.text: d.id for d in ds.corpus}
    purrs = next(q.id for q in ds.queries if q.text == "what purrs?")
    assert dict(ds.qrels[purrs]) == {by_text["Cats purr."]: 1, by_text["Lions purr too."]: 1}
    assert all(d.id.startswith("d-") and len(d.id) == 18 for d in ds.corpus)
    assert all(q.id.startswith("q-") for q in ds.queries)
    # Negatives are distractors, never judged.
    assert by_text["Cows moo."] not in {d for docs in ds.qrels.values() for d in docs}
    # Ids depend on the text only: the same text in another file gets the same id.
    other = load_pairs(_write(tmp_path / "other.jsonl", _jsonl({"query": "x", "positive": "Cows moo."})))
    assert other.corpus[0].id == by_text["Cows moo."]
    assert load_pairs(path).content_hash == ds.content_hash
    assert load_dataset(path).content_hash == ds.content_hash

    examples = load_training_pairs(path)
    assert examples == [
        TrainingExample("what purrs?", "Cats purr.", ("Dogs bark.", "Cows moo."), 0.9),
        TrainingExample("what barks?", "Dogs bark.", ("Cats purr.",), None),
        TrainingExample("what purrs?", "Lions purr too.", (), None),
    ]


def test_pairs_csv_with_quoting_and_several_negative_columns(tmp_path: Path) -> None:
    content = (
        "query,positive,negative_1,negative_2,score\n"
        '"what, exactly, purrs?","Cats purr, loudly.",Dogs bark.,,1\n'
        "\n"
        'what barks?,"Dogs ""bark"",\nover two lines",Cats purr.,Cows moo.,\n'
    )
    path = _write(tmp_path / "pairs.csv", content)
    examples = load_training_pairs(path)
    assert examples == [
        TrainingExample("what, exactly, purrs?", "Cats purr, loudly.", ("Dogs bark.",), 1.0),
        TrainingExample("what barks?", 'Dogs "bark",\nover two lines', ("Cats purr.", "Cows moo."), None),
    ]
    assert load_pairs(path).stats() == {"documents": 5, "queries": 2, "judgements": 2}
    # The line number of a record after a multi-line one is still right.
    bad = content + "where?,,\n"
    assert "pairs.csv:6: empty 'positive'" in _data_error(load_pairs, _write(tmp_path / "pairs.csv", bad))


def test_pairs_tsv_keeps_quotes_as_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.tsv", 'query\tdocument\n"quoted" query\tsays "hi\n')
    assert load_training_pairs(path) == [TrainingExample('"quoted" query', 'says "hi')]


@pytest.mark.parametrize(
    ("name", "content", "line", "expected"),
    [
        ("p.jsonl", PAIRS_JSONL + '{"query": "x", "positive": }\n', 4, "malformed JSON"),
        ("p.jsonl", PAIRS_JSONL + _jsonl({"positive": "x"}), 4, "missing field 'query'"),
        ("p.jsonl", PAIRS_JSONL + _jsonl({"query": "x"}), 4, "missing field 'positive' (or 'document', 'answer')"),
        ("p.jsonl", _jsonl({"query": "x", "positive": "y", "document": "z"}), 1, "both 'positive' and"),
        ("p.jsonl", PAIRS_JSONL + _jsonl({"query": " ", "positive": "y"}), 4, "empty 'query'"),
        (
            "p.jsonl",
            PAIRS_JSONL + _jsonl({"query": "x", "positive": "y", "negative": [1]}),
            4,
            "list of strings",
        ),
        ("p.jsonl", PAIRS_JSONL + _jsonl({"query": "x", "positive": "y", "negative": ["y"]}), 4, "same text"),
        (
            "p.jsonl",
            PAIRS_JSONL + _jsonl({"query": "x", "positive": "y", "score": "high"}),
            4,
            "not a number",
        ),
        ("p.jsonl", PAIRS_JSONL + _jsonl({"query": "x", "positive": "y", "score": True}), 4, "not a number"),
        ("p.csv", "query,positive\nx,y\n,z\n", 3, "empty 'query'"),
        ("p.csv", "query,positive,score\nx,y,1\nx,z,lots\n", 3, "not a number"),
        ("p.csv", "query,positive\nx,y\nx,y,z\n", 3, "3 fields but the header has 2"),
        ("p.csv", 'query,positive\nx,y\nx,"unfinished\n', 3, "malformed CSV"),
        ("p.csv", "title,answer\nx,y\n", 1, "missing column 'query' (or 'anchor', 'question')"),
        ("p.csv", "query,context\nx,y\n", 1, "missing field 'positive'"),
        ("p.csv", "query,anchor,positive\nx,y,z\n", 1, "both 'query' and 'anchor' given"),
        ("p.jsonl", _jsonl({"question": "x", "positive": "y", "answer": "z"}), 1, "both 'positive' and 'answer'"),
        ("p.tsv", "query\tpositive\nx\ty\tz\n", 2, "3 fields but the header has 2"),
        ("p.csv", b"query,positive\nx,caf\xe9\n", 2, "bytes that are not UTF-8"),
        ("p.jsonl", b'{"query": "x", "positive": "y"}\n{"query": "\xff"}\n', 2, "bytes that are not UTF-8"),
    ],
)
def test_bad_pairs_name_file_line_and_fix(
    tmp_path: Path, name: str, content: str | bytes, line: int, expected: str
) -> None:
    path = _write(tmp_path / name, content)
    for loader in (load_pairs, load_training_pairs):
        message = _data_error(loader, path)
        assert f"{name}:{line}: " in message and expected in message and "(fix: " in message


def test_empty_pairs_files_and_sts_files_given_as_pairs(tmp_path: Path, shared_data: Path) -> None:
    assert "no pairs" in _data_error(load_pairs, _write(tmp_path / "e.jsonl", "\n\n"))
    assert "empty file" in _data_error(load_pairs, _write(tmp_path / "e.csv", ""))
    assert "no pairs" in _data_error(load_pairs, _write(tmp_path / "h.csv", "query,positive\n"))
    message = _data_error(load_dataset, shared_data / "stsb" / "sts-test.csv")
    assert "sts-test.csv:1: " in message and "load_sts" in message


# ----------------------------------------------------------------------------------------------------
# STS: plain files and bad input


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("s.tsv", 'score\tsentence1\tsentence2\n4.5\tA "quoted\tB\n\n0\tC\tD\n'),
        ("s.csv", 'sentence1,sentence2,score\n"A ""quoted",B,4.5\nC,D,0\n'),
        (
            "s.jsonl",
            _jsonl({"sentence1": 'A "quoted', "sentence2": "B", "score": 4.5})
            + _jsonl({"sentence1": "C", "sentence2": "D", "score": 0}),
        ),
    ],
)
def test_plain_sts_files(tmp_path: Path, name: str, content: str) -> None:
    pairs = load_sts(_write(tmp_path / name, content)).pairs
    assert [(p.text1, p.text2, p.score) for p in pairs] == [('A "quoted', "B", 4.5), ("C", "D", 0.0)]


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("g\tf\t2012\t1\t2.5\tA\tB\ng\tf\t2012\t2\tfive\tA\tB\n", 2, "score 'five' is not a number"),
        ("g\tf\t2012\t1\t2.5\tA\tB\ng\tf\t2012\t2\t2.5\tA\n", 2, "6 tab-separated fields"),
        ("g\tf\t2012\t1\t2.5\tA\tB\ng\tf\t2012\t2\t2.5\t \tB\n", 2, "empty sentence"),
        ("g\tf\t2012\t1\tnan\tA\tB\n", 1, "not a number"),
        ("hello,world\n", 1, "not an STS file"),
        ("sentence1\tsentence2\tscore\nA\tB\n", 2, "2 tab-separated fields"),
        (b"g\tf\t2012\t1\t2.5\tA\tB\ng\tf\t2012\t2\t2.5\t\xe9\tB\n", 2, "bytes that are not UTF-8"),
    ],
)
def test_bad_sts_input(tmp_path: Path, content: str | bytes, line: int, expected: str) -> None:
    message = _data_error(load_sts, _write(tmp_path / "sts-test.csv", content))
    assert f"sts-test.csv:{line}: " in message and expected in message and "(fix: " in message


def test_sts_folder_without_the_split_lists_the_splits(tmp_path: Path) -> None:
    _write(tmp_path / "sts-dev.csv", "g\tf\t2012\t1\t2.5\tA\tB\n")
    _write(tmp_path / "sts-train.csv", "g\tf\t2012\t1\t2.5\tA\tB\n")
    message = _data_error(load_sts, tmp_path, split="test")
    assert str(tmp_path) in message and "dev, train" in message


# ----------------------------------------------------------------------------------------------------
# Folders of documents


LONG_TEXT = " ".join(f"word{i}" for i in range(100))


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    _write(root / "guide" / "install.md", "# Install\n\nRun `pip install embedlab`.\n")
    _write(
        root / "b.html",
        "<html><head><title> The  Page </title><style>p {color: red}</style>"
        "<script>var hidden = 1;</script></head><body><h1>Heading</h1><p>First <b>bold</b> para.</p>"
        "<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table></body></html>",
    )
    _write(root / "c.pdf", _minimal_pdf(["Hello from page one (first).", "Second page text."]))
    _write(root / "long.txt", LONG_TEXT)
    _write(root / "Zeta.TXT", "upper-case suffix")
    _write(root / ".hidden" / "secret.txt", "not loaded")
    _write(root / ".dotfile.md", "not loaded")
    _write(root / "image.png", b"\x89PNG\r\n")
    return root


def test_folder_of_documents(documents: Path) -> None:
    ds = load_folder(documents, chunk_tokens=30, overlap_tokens=5)
    ids = [d.id for d in ds.corpus]
    assert ids == ["Zeta.TXT#0", "b.html#0", "c.pdf#0", "guide/install.md#0"] + [f"long.txt#{i}" for i in range(4)]
    assert ds.stats() == {"documents": 8, "queries": 0, "judgements": 0}
    by_id = ds.documents_by_id

    html = by_id["b.html#0"]
    assert html.title == "The Page"
    assert html.text == "Heading\nFirst bold para.\none\ntwo\na b"
    assert "hidden" not in html.text and "color" not in html.text

    pdf = ds.corpus[2]
    assert pdf.title == "c" and pdf.metadata["page"] == 1
    assert "Hello from page one (first)." in pdf.text and "Second page text." in pdf.text

    md = by_id["guide/install.md#0"]
    assert md.title == "install" and md.text.startswith("# Install")
    assert md.metadata == {"source": "guide/install.md", "chunk": 0, "start": 0, "end": 38, "tokens": 9}

    chunks = [by_id[f"long.txt#{i}"] for i in range(4)]
    words = [c.text.split() for c in chunks]
    assert words[0] == LONG_TEXT.split()[:30]
    assert all(after[:5] == before[-5:] for before, after in itertools.pairwise(words))
    assert words[-1][-1] == "word99"
    assert [c.metadata["chunk"] for c in chunks] == [0, 1, 2, 3]
    assert all(LONG_TEXT[c.metadata["start"] : c.metadata["end"]] == c.text for c in chunks)

    again = load_dataset(documents, chunk_tokens=30, overlap_tokens=5)
    assert again.content_hash == ds.content_hash
    assert load_folder(documents).content_hash != ds.content_hash  # other chunk sizes, other data


def test_pdf_pages_are_recorded_per_chunk(tmp_path: Path) -> None:
    pages = [" ".join(f"p{n}w{i}" for i in range(20)) for n in (1, 2, 3)]
    ds = load_folder(_write(tmp_path / "three.pdf", _minimal_pdf(pages)), chunk_tokens=20, overlap_tokens=0)
    assert [d.text for d in ds.corpus] == pages
    assert [d.metadata["page"] for d in ds.corpus] == [1, 2, 3]
    assert [d.id for d in ds.corpus] == ["three.pdf#0", "three.pdf#1", "three.pdf#2"]
    assert ds.name == "three.pdf"


def test_folder_with_a_tokenizer(documents: Path) -> None:
    class CharTokenizer:
        def tokenize(self, text: str) -> list[str]:
            return list(text)

    ds = load_folder(documents, chunk_tokens=40, overlap_tokens=0, tokenizer=CharTokenizer())
    assert all(len(d.text.replace(" ", "").replace("\n", "")) <= 40 for d in ds.corpus)


def test_html_declaring_another_charset(tmp_path: Path) -> None:
    page = '<html><head><meta charset="iso-8859-1"><title>Caf\xe9</title></head><body>cr\xe8me</body></html>'
    ds = load_folder(_write(tmp_path / "d" / "p.html", page.encode("latin-1")).parent)
    assert (ds.corpus[0].title, ds.corpus[0].text) == ("Café", "crème")


def test_files_without_text_are_skipped_with_a_warning(documents: Path) -> None:
    _write(documents / "empty.txt", "  \n")
    with pytest.warns(DataWarning, match=r"skipped 1 file\(s\) with no text.*empty.txt"):
        ds = load_folder(documents)
    assert not any(d.id.startswith("empty.txt") for d in ds.corpus)


def test_bad_documents(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _write(root / "a.txt", "fine")
    _write(root / "b.txt", b"line one\nline two caf\xe9\n")
    assert "b.txt:2: bytes that are not UTF-8" in _data_error(load_folder, root, strict=True)
    (root / "b.txt").unlink()
    _write(root / "broken.pdf", b"%PDF-1.4\nthis is not a pdf at all")
    message = _data_error(load_folder, root, strict=True)
    assert "broken.pdf: cannot read the PDF" in message and "(fix: " in message
    assert "broken.pdf: cannot read the PDF" in _data_error(load_folder, root / "broken.pdf")  # one file: no skip
    (root / "broken.pdf").unlink()
    (root / "a.txt").write_text(" ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert "no text found in 1 file(s)" in _data_error(load_folder, root)
    (root / "a.txt").unlink()
    assert "no documents found" in _data_error(load_folder, root)
    with pytest.raises(ValueError, match="overlap_tokens"):
        load_folder(root, chunk_tokens=10, overlap_tokens=10)


def test_unreadable_files_in_a_folder_are_skipped_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    _write(root / "a.txt", "fine text about cats")
    _write(root / "sub" / "broken.pdf", b"%PDF-1.4\nthis is not a pdf at all")
    _write(root / "latin1.txt", b"caf\xe9\n")
    with pytest.warns(DataWarning, match=r"skipped 2 unreadable file\(s\).*latin1.txt:1.*broken.pdf"):
        ds = load_folder(root)
    assert [d.id for d in ds.corpus] == ["a.txt#0"]
    skipped = ds.load_report["skipped_files"]
    assert [item["file"] for item in skipped] == ["latin1.txt", "sub/broken.pdf"]
    assert "cannot read the PDF" in skipped[1]["problem"] and ds.describe()["load_report"]["skipped_files"]
    (root / "a.txt").unlink()
    message = _data_error(load_folder, root)  # nothing readable at all: an error naming the first bad file
    assert "no readable text in 2 file(s)" in message and "latin1.txt" in message and "(fix: " in message


def test_column_aliases_of_sentence_transformers_and_question_answer_files(tmp_path: Path) -> None:
    triplets = _write(tmp_path / "t.csv", "anchor,positive,negative\nwho purrs?,cats purr,dogs bark\n")
    qa = _write(tmp_path / "qa.jsonl", _jsonl({"question": "who purrs?", "answer": "cats purr"}))
    for loaded in (load_training_pairs(triplets), load_training_pairs(qa)):
        assert loaded[0].query == "who purrs?" and loaded[0].positive == "cats purr"
    assert load_training_pairs(triplets)[0].negatives == ("dogs bark",)
    assert load_pairs(qa).stats() == {"documents": 1, "queries": 1, "judgements": 1}


def test_duplicate_judgements_error_by_default_or_keep_last_or_max(tmp_path: Path) -> None:
    beir = _beir(tmp_path / "beir")
    qrels = beir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q1\td1\t2\nq1\td1\t1\n")
    assert "duplicate judgement" in _data_error(load_beir, beir)
    with pytest.warns(DataWarning, match="2 duplicate judgement"):
        last = load_beir(beir, duplicate_judgements="last")
    with pytest.warns(DataWarning):
        highest = load_beir(beir, duplicate_judgements="max")
    assert last.qrels["q1"]["d1"] == 1 and highest.qrels["q1"]["d1"] == 2
    assert last.load_report["duplicate_judgements"] == {"rows": 2, "conflicting": 2, "kept": "last"}
    assert last.stats()["judgements"] == load_beir(_beir(tmp_path / "clean")).stats()["judgements"]


def test_load_dataset_dispatch(tmp_path: Path, documents: Path) -> None:
    beir = _beir(tmp_path / "beir")
    assert load_dataset(beir).stats()["queries"] == 2
    assert load_dataset(documents / "guide" / "install.md").corpus[0].id == "install.md#0"
    message = _data_error(load_dataset, documents / "image.png")
    assert "image.png: cannot tell how to load" in message and "load_sts" in message
