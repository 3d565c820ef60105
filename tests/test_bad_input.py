"""A catalogue of bad input, over every command: each answered in one line naming what, where and the fix.

One table (:data:`CASES`): data files, CLI options, model folders, index folders and HTTP requests. A CLI case
must exit with status 2, print exactly one ``error:`` line on stderr holding ``where`` (the file and line, the
option or the folder) and ``fix`` (what to do), no traceback, and leave nothing in its ``--out`` folder. An HTTP
case must answer its 4xx status with a JSON ``detail`` naming ``where``. Inputs are tiny files written once per
module; the models are bm25 and the packaged minilm-l6 (one tiny index, built once). The inputs that should be
*accepted* (aliases, a folder with one unreadable file, duplicate judgements with a policy) follow the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from embedlab.cli import app

runner = CliRunner()

CORPUS = "".join(
    json.dumps({"_id": f"d{i}", "title": f"Title {i}", "text": text}) + "\n"
    for i, text in enumerate(
        ["Cats purr when they are content.", "Dogs bark at strangers.", "Vitamin D comes from sunlight.",
         "Aspirin thins the blood.", "Rain falls from clouds."]
    )
)  # fmt: skip
QUERIES = "".join(
    json.dumps({"_id": f"q{i}", "text": text}) + "\n"
    for i, text in enumerate(["which animal purrs?", "where does vitamin D come from?"])
)
QRELS = "query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td2\t1\n"


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _beir(root: Path, corpus: str | bytes = CORPUS, queries: str | bytes = QUERIES, qrels: str | bytes = QRELS) -> str:
    _write(root / "corpus.jsonl", corpus)
    _write(root / "queries.jsonl", queries)
    _write(root / "qrels" / "test.tsv", qrels)
    return str(root)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every file a case names, by key (``{key}`` in a case's arguments)."""
    root = tmp_path_factory.mktemp("bad-input")
    paths: dict[str, str] = {"root": str(root)}
    paths["good"] = _beir(root / "good")
    # BEIR folders, one problem each
    paths["bad_json"] = _beir(root / "bad-json", corpus=CORPUS + '{"_id": "d9", "text": \n')
    paths["no_id"] = _beir(root / "no-id", corpus=CORPUS + '{"text": "no id"}\n')
    paths["dup_id"] = _beir(root / "dup-id", corpus=CORPUS + json.dumps({"_id": "d1", "text": "again"}) + "\n")
    paths["latin1"] = _beir(root / "latin1", queries=QUERIES.encode() + b'{"_id": "q9", "text": "caf\xe9"}\n')
    paths["qrels_fields"] = _beir(root / "qrels-fields", qrels=QRELS + "q0\td1\n")
    paths["qrels_grade"] = _beir(root / "qrels-grade", qrels=QRELS + "q0\td1\thigh\n")
    paths["qrels_unknown"] = _beir(root / "qrels-unknown", qrels=QRELS + "q0\td99\t1\n")
    paths["qrels_dup"] = _beir(root / "qrels-dup", qrels=QRELS + "q0\td0\t2\n")
    paths["no_queries"] = str(_write(root / "no-queries" / "corpus.jsonl", CORPUS).parent)
    _write(root / "no-queries" / "qrels" / "test.tsv", QRELS)
    paths["empty_query"] = _beir(root / "empty-query", queries=QUERIES + json.dumps({"_id": "q2", "text": " "}) + "\n",
                                 qrels=QRELS + "q2\td1\t1\n")  # fmt: skip
    # pair files
    paths["pairs_no_query"] = str(_write(root / "p-noquery.csv", "title,positive\nx,y\n"))
    paths["pairs_empty"] = str(_write(root / "p-empty.csv", ""))
    paths["pairs_array"] = str(_write(root / "p-array.jsonl", '{"query": "a", "positive": "b"}\n["a", "b"]\n'))
    paths["pairs_extra"] = str(_write(root / "p-extra.tsv", "query\tpositive\na\tb\tc\n"))
    paths["pairs_same"] = str(_write(root / "p-same.csv", "query,positive,negative\na,b,b\n"))
    paths["pairs_two_names"] = str(_write(root / "p-two.csv", "query,anchor,positive\na,b,c\n"))
    paths["xlsx"] = str(_write(root / "data.xlsx", b"PK\x03\x04"))
    # folders of documents
    (root / "empty-folder").mkdir()
    paths["empty_folder"] = str(root / "empty-folder")
    paths["only_broken_pdf"] = str(_write(root / "broken-only" / "a.pdf", b"%PDF-1.4\nnot a pdf").parent)
    _write(root / "one-broken" / "good.txt", "Cats purr when they are content.")
    _write(root / "one-broken" / "bad.pdf", b"%PDF-1.4\nnot a pdf")
    paths["one_broken"] = str(root / "one-broken")
    # STS files
    paths["sts_no_header"] = str(_write(root / "sts.csv", "a,b,3\n"))
    paths["sts_score"] = str(_write(root / "sts-score.tsv", "sentence1\tsentence2\tscore\na\tb\tvery\n"))
    # model folders
    paths["not_a_model"] = str(_write(root / "not-a-model" / "config.json", '{"foo": 1}').parent)
    (root / "empty-model").mkdir()
    paths["empty_model"] = str(root / "empty-model")
    paths["broken_config"] = str(_write(root / "broken-config" / "config.json", "{not json").parent)
    # files where a folder is expected
    paths["a_file"] = str(_write(root / "a-file.txt", "I am a file"))
    # index folders
    paths["no_index"] = str(root / "empty-model")
    paths["bad_manifest"] = str(_write(root / "bad-manifest" / "index.json", "{").parent)
    paths["not_index_manifest"] = str(_write(root / "other-manifest" / "index.json", '{"kind": "compare"}').parent)
    return paths


@pytest.fixture(scope="module")
def tiny_index(inputs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat FAISS index of the five good documents with minilm-l6, and an incomplete copy of its manifest."""
    from embedlab.data.loaders import load_beir
    from embedlab.index import IndexConfig, build_index

    out = tmp_path_factory.mktemp("tiny-index") / "index"
    build_index(load_beir(inputs["good"]), "minilm-l6", out=out, store="faiss", config=IndexConfig())
    manifest = json.loads((out / "index.json").read_text())
    _write(Path(inputs["root"]) / "incomplete" / "index.json", json.dumps({**manifest, "complete": False}))
    inputs["incomplete"] = str(Path(inputs["root"]) / "incomplete")
    inputs["index"] = str(out)
    return out


@dataclass(frozen=True)
class Case:
    """A bad input and what the answer must name. ``args``: CLI arguments (``{key}`` from :func:`inputs`,
    ``{out}`` a fresh folder) or, for ``http``, ``(method, path, body, headers)``."""

    name: str
    args: tuple[Any, ...]
    where: str
    fix: str
    http: int | None = None
    needs_index: bool = field(default=False)


def cli(name: str, *args: str, where: str, fix: str, needs_index: bool = False) -> Case:
    return Case(name, args, where, fix, needs_index=needs_index)


def http(name: str, status: int, method: str, path: str, body: Any, where: str, headers: Any = None) -> Case:
    return Case(name, (method, path, body, headers), where, "", http=status, needs_index=True)


COMPARE = ("compare", "--models", "bm25", "--out", "{out}", "--data")
KEY = {"X-API-Key": "k"}

CASES = [
    # --- data files (BEIR) ---
    cli("malformed JSON", *COMPARE, "{bad_json}", where="corpus.jsonl:6", fix="one complete JSON object per line"),
    cli("missing _id", *COMPARE, "{no_id}", where="corpus.jsonl:6", fix="give every document an '_id'"),
    cli("duplicate _id", *COMPARE, "{dup_id}", where="corpus.jsonl:6", fix="unique '_id'"),
    cli("not UTF-8", *COMPARE, "{latin1}", where="queries.jsonl:3", fix="re-save the file as UTF-8"),
    cli("qrels two fields", *COMPARE, "{qrels_fields}", where="test.tsv:4", fix="query-id<TAB>corpus-id<TAB>score"),
    cli("qrels grade", *COMPARE, "{qrels_grade}", where="test.tsv:4", fix="whole-number relevance grades"),
    cli("qrels unknown id", *COMPARE, "{qrels_unknown}", where="test.tsv:4", fix="--allow-unknown-ids"),
    cli("duplicate judgement", *COMPARE, "{qrels_dup}", where="test.tsv:4", fix="--duplicate-judgements last or max"),
    cli("no such split", *COMPARE, "{good}", "--split", "dev", where="dev.tsv", fix="choose one of the splits"),
    cli("no queries.jsonl", *COMPARE, "{no_queries}", where="queries.jsonl", fix="one query per line"),
    cli("empty judged query", *COMPARE, "{empty_query}", where="queries.jsonl:3", fix="non-empty 'text'"),
    # --- data files (pairs, documents, STS) ---
    cli("pairs without query", *COMPARE, "{pairs_no_query}", where="p-noquery.csv:1", fix="header row naming"),
    cli("empty pairs file", *COMPARE, "{pairs_empty}", where="p-empty.csv", fix="start with a header row"),
    cli("pairs JSON array", *COMPARE, "{pairs_array}", where="p-array.jsonl:2", fix="one JSON object"),
    cli("pairs extra field", *COMPARE, "{pairs_extra}", where="p-extra.tsv:2", fix="remove the extra fields"),
    cli("negative = positive", *COMPARE, "{pairs_same}", where="p-same.csv:2", fix="remove it from the negatives"),
    cli("query named twice", *COMPARE, "{pairs_two_names}", where="p-two.csv:1", fix="name the query once"),
    cli("unknown file type", *COMPARE, "{xlsx}", where="data.xlsx", fix="a .jsonl/.csv/.tsv file of pairs"),
    cli("no such data", *COMPARE, "{root}/nowhere", where="nowhere", fix="give a BEIR folder"),
    cli("embed malformed JSON", "embed", "--out", "{out}", "--data", "{bad_json}", where="corpus.jsonl:6", fix="JSON"),
    cli("unknown engine", *COMPARE, "{good}", "--engine", "rey", where="--engine rey", fix="choose one of local, ray"),
    cli("stray --ray-address", *COMPARE, "{good}", "--ray-address", "h:1", where="--ray-address", fix="--engine ray"),
    cli(
        "empty folder",
        "index",
        "--model",
        "minilm-l6",
        "--out",
        "{out}",
        "--data",
        "{empty_folder}",
        where="empty-folder",
        fix="load a folder of .txt",
    ),
    cli(
        "only unreadable PDF",
        "index",
        "--model",
        "minilm-l6",
        "--out",
        "{out}",
        "--data",
        "{only_broken_pdf}",
        where="a.pdf",
        fix="opens in a PDF viewer",
    ),
    cli(
        "--strict with an unreadable PDF",
        "index",
        "--model",
        "minilm-l6",
        "--out",
        "{out}",
        "--strict",
        "--data",
        "{one_broken}",
        where="bad.pdf",
        fix="opens in a PDF viewer",
    ),
    cli(
        "STS without header",
        "sts",
        "--out",
        "{out}",
        "--data",
        "{sts_no_header}",
        where="sts.csv:1",
        fix="add a header row sentence1,sentence2,score",
    ),
    cli(
        "STS score",
        "sts",
        "--out",
        "{out}",
        "--data",
        "{sts_score}",
        where="sts-score.tsv:2",
        fix="write 'score' as a number",
    ),
    cli(
        "STS missing",
        "sts",
        "--out",
        "{out}",
        "--data",
        "{root}/nowhere.csv",
        where="nowhere.csv",
        fix="STS Benchmark folder",
    ),
    # --- CLI options ---
    cli(
        "--out is a file",
        "compare",
        "--models",
        "bm25",
        "--data",
        "{good}",
        "--out",
        "{a_file}",
        where="a-file.txt",
        fix="give a folder",
    ),
    cli(
        "--out under a file",
        "select",
        "--models",
        "minilm-l6",
        "--data",
        "{good}",
        "--out",
        "{a_file}/report",
        where="a-file.txt",
        fix="give another folder",
    ),
    cli("--k not numbers", *COMPARE, "{good}", "--k", "1,ten", where="--k", fix="e.g. 1,3,10,100"),
    cli("--k zero", *COMPARE, "{good}", "--k", "0", where="--k", fix="e.g. 1,3,10,100"),
    cli(
        "--batch-size zero",
        "compare",
        "--models",
        "minilm-l6",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--batch-size",
        "0",
        where="--batch-size",
        fix="1 or more",
    ),
    cli("--backend unknown", *COMPARE, "{good}", "--backend", "cuda-int4", where="cuda-int4", fix="onnx"),
    cli(
        "--duplicate-judgements unknown",
        *COMPARE,
        "{qrels_dup}",
        "--duplicate-judgements",
        "first",
        where="--duplicate-judgements",
        fix="error, last, max",
    ),
    cli(
        "select --metric",
        "select",
        "--models",
        "minilm-l6",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--metric",
        "ndcg@7",
        where="ndcg@7",
        fix="needs the cut-off 7 in --k",
    ),
    cli(
        "select --test",
        "select",
        "--models",
        "minilm-l6",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--test",
        "anova",
        where="anova",
        fix="randomization",
    ),
    cli("index --index", "index", "--out", "{out}", "--data", "{good}", "--index", "lsh", where="lsh", fix="hnsw"),
    cli(
        "index hnsw+pq",
        "index",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--index",
        "hnsw",
        "--quantize",
        "pq",
        where="pq",
        fix="flat/pq",
    ),
    cli("index --dim", "index", "--out", "{out}", "--data", "{good}", "--dim", "half", where="--dim", fix="e.g. 256"),
    cli("index --dim too big", "index", "--out", "{out}", "--data", "{good}", "--dim", "4096", where="4096", fix="384"),
    cli(
        "index --store",
        "index",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--store",
        "pinecone",
        where="pinecone",
        fix="faiss",
    ),
    cli(
        "index --uri",
        "index",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--store",
        "milvus",
        "--uri",
        "{root}/x.sqlite",
        where="x.sqlite",
        fix=".db",
    ),
    cli(
        "finetune --rank-window",
        "finetune",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--rank-window",
        "far",
        where="--rank-window",
        fix="e.g. 3-50",
    ),
    cli(
        "finetune --matryoshka",
        "finetune",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--matryoshka",
        "384,half",
        where="--matryoshka",
        fix="e.g. 384,256,128",
    ),
    cli(
        "finetune --loss",
        "finetune",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--loss",
        "hinge",
        where="hinge",
        fix="mnrl",
    ),
    cli(
        "finetune --out is a file",
        "finetune",
        "--out",
        "{a_file}",
        "--data",
        "{good}",
        where="a-file.txt",
        fix="give a folder",
    ),
    cli(
        "finetune no data",
        "finetune",
        "--out",
        "{out}",
        "--data",
        "{root}/nowhere",
        where="nowhere",
        fix="give a BEIR folder",
    ),
    cli(
        "export --backend",
        "export",
        "minilm-l6",
        "--out",
        "{out}",
        "--data",
        "{good}",
        "--backend",
        "tpu",
        where="tpu",
        fix="onnx",
    ),
    cli(
        "export --out is a file",
        "export",
        "minilm-l6",
        "--out",
        "{a_file}",
        "--data",
        "{good}",
        where="a-file.txt",
        fix="give a folder",
    ),
    cli("serve --port", "serve", "--index", "{good}", "--port", "0", where="--port", fix="between 1 and 65535"),
    # --- model folders ---
    cli(
        "--models not a model's config",
        *COMPARE,
        "{good}",
        "--models",
        "{not_a_model}",
        where="not-a-model",
        fix="a folder saved by SentenceTransformer.save",
    ),
    cli(
        "--models config not JSON",
        *COMPARE,
        "{good}",
        "--models",
        "{broken_config}",
        where="broken-config",
        fix="a folder saved by SentenceTransformer.save",
    ),
    cli(
        "--models empty folder",
        *COMPARE,
        "{good}",
        "--models",
        "{empty_model}",
        where="empty-model",
        fix="modules.json",
    ),
    cli("--models unknown name", *COMPARE, "{good}", "--models", "minilm-l7", where="minilm-l7", fix="minilm-l6"),
    cli(
        "index bm25 with an ANN index",
        "index",
        "--model",
        "bm25",
        "--index",
        "hnsw",
        "--out",
        "{out}",
        "--data",
        "{good}",
        where="bm25",
        fix="dense model",
    ),
    # --- index folders ---
    cli("serve no index", "serve", "--index", "{no_index}", where="empty-model", fix="embedlab index"),
    cli("serve unreadable manifest", "serve", "--index", "{bad_manifest}", where="index.json", fix="rebuild"),
    cli("serve other manifest", "serve", "--index", "{not_index_manifest}", where="index.json", fix="rebuild"),
    cli(
        "serve incomplete index",
        "serve",
        "--index",
        "{incomplete}",
        where="incomplete",
        fix="re-run the same",
        needs_index=True,
    ),
    cli(
        "index into another model's folder",
        "index",
        "--model",
        "{not_a_model}",
        "--data",
        "{good}",
        "--out",
        "{index}",
        where="not-a-model",
        fix="SentenceTransformer.save",
        needs_index=True,
    ),
    cli(
        "index with other settings",
        "index",
        "--index",
        "hnsw",
        "--data",
        "{good}",
        "--out",
        "{index}",
        where="index",
        fix="give another --out folder",
        needs_index=True,
    ),
    # --- HTTP requests ---
    http("no query", 422, "POST", "/search", {"k": 3}, where="query", headers=KEY),
    http("k zero", 422, "POST", "/search", {"query": "cats", "k": 0}, where="k", headers=KEY),
    http("k too big", 422, "POST", "/search", {"query": "cats", "k": 1000}, where="k", headers=KEY),
    http("k as text", 422, "POST", "/search", {"query": "cats", "k": "3"}, where="k", headers=KEY),
    http("unknown field", 422, "POST", "/search", {"query": "cats", "top": 3}, where="top", headers=KEY),
    http("empty query", 422, "POST", "/search", {"query": ""}, where="query", headers=KEY),
    http(
        "bad filter field", 422, "POST", "/search", {"query": "cats", "filter": {"a b": 1}}, where="filter", headers=KEY
    ),
    http("malformed JSON", 422, "POST", "/search", b'{"query": ', where="body", headers=KEY),
    http("too large", 413, "POST", "/search", {"query": "x" * 200_000}, where="larger than", headers=KEY),
    http("no API key", 401, "POST", "/search", {"query": "cats"}, where="X-API-Key"),
    http(
        "wrong API key", 403, "POST", "/search", {"query": "cats"}, where="wrong API key", headers={"X-API-Key": "no"}
    ),
    http("embed nothing", 422, "POST", "/embed", {"texts": []}, where="texts", headers=KEY),
    http("embed role", 422, "POST", "/embed", {"texts": ["a"], "role": "passage"}, where="role", headers=KEY),
    http("GET /search", 405, "GET", "/search", None, where="Method Not Allowed", headers=KEY),
]


def test_the_catalogue_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 40
    commands = {case.args[0] for case in CASES if case.http is None}
    assert commands >= {"compare", "sts", "select", "index", "finetune", "export", "serve"}
    assert sum(case.http is not None for case in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_answered_in_one_line(case: Case, inputs: dict[str, str], request, tmp_path: Path) -> None:
    if case.needs_index:
        request.getfixturevalue("tiny_index")
    if case.http is not None:
        _check_http(case, request.getfixturevalue("service"))
        return
    out = tmp_path / "out"
    args = [arg.format(out=out, **inputs) for arg in case.args]
    before = _snapshot(Path(inputs["root"]))
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert case.where in errors[0] and case.fix in errors[0], errors[0]
    # Nothing half-written: the fresh --out folder is absent or empty, and no input folder changed.
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    assert _snapshot(Path(inputs["root"])) == before


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def service(tiny_index: Path) -> Any:
    from fastapi.testclient import TestClient

    from embedlab.serve import create_app

    with TestClient(create_app(tiny_index, api_key="k", max_k=20, max_query_chars=300)) as client:
        yield client


def _check_http(case: Case, client: Any) -> None:
    method, path, body, headers = case.args
    if isinstance(body, bytes):
        response = client.request(method, path, content=body, headers={**headers, "content-type": "application/json"})
    else:
        response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == case.http, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert case.where in json.dumps(response.json()["detail"]) or case.where in response.json()["detail"]
    assert "Traceback" not in response.text and 'File "' not in response.text


# --- what should be accepted, and how it is reported ----------------------------------------------------------


def test_sentence_transformers_and_question_answer_columns_are_accepted(tmp_path: Path) -> None:
    triplets = _write(
        tmp_path / "triplets.csv", "anchor,positive,negative\nwhich animal purrs?,Cats purr.,Dogs bark.\n"
    )
    qa = _write(tmp_path / "qa.jsonl", json.dumps({"question": "which animal purrs?", "answer": "Cats purr."}) + "\n")
    for data in (triplets, qa):
        out = tmp_path / data.stem
        result = runner.invoke(app, ["compare", "--models", "bm25", "--data", str(data), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "compare.json").read_text())["dataset"]["queries"] == 1


def test_an_unreadable_file_in_a_folder_is_skipped_and_listed(inputs: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["index", "--model", "minilm-l6", "--data", inputs["one_broken"], "--out",
                                 str(tmp_path / "index")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "bad.pdf" in result.stderr and "cannot read the PDF" in result.stderr
    manifest = json.loads((tmp_path / "index" / "index.json").read_text())
    assert manifest["counts"]["stored"] == 1
    assert [item["file"] for item in manifest["data"]["load_report"]["skipped_files"]] == ["bad.pdf"]


def test_duplicate_judgements_are_kept_once_on_request_and_counted(inputs: dict[str, str], tmp_path: Path) -> None:
    for policy in ("last", "max"):
        out = tmp_path / policy
        result = runner.invoke(
            app,
            ["compare", "--models", "bm25", "--out", str(out), "--data", inputs["qrels_dup"],
             "--duplicate-judgements", policy],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "1 duplicate judgement(s), 1 with a different grade" in result.stderr
        report = json.loads((out / "compare.json").read_text())["dataset"]["load_report"]
        assert report["duplicate_judgements"] == {"rows": 1, "conflicting": 1, "kept": policy}
        assert "1 duplicate judgement(s)" in (out / "compare.md").read_text()


@pytest.mark.parametrize("command", ["compare", "select", "index", "export", "finetune"])
def test_the_decisions_are_documented_in_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.replace("│", " ").split())
    assert "anchor/positive/negative" in text and "question/answer" in text
    if command != "finetune":  # finetune loads its splits itself: defaults (skip unreadable files, refuse duplicates)
        assert "--strict" in text and "--duplicate-judgements" in text and "'last'" in text
