"""Questions written from the docstrings of what Python code calls, on the real CoNaLa and SciFact corpora."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from embedlab.data.loaders import load_beir
from embedlab.finetune.api_docs import describe_snippet, summary
from embedlab.finetune.pairs import pseudo_pairs


def test_calls_are_described_by_their_documentation_and_the_snippets_names_are_quoted() -> None:
    query = describe_snippet("os.kill(os.getpid(), signal.SIGUSR1)")
    assert query is not None and "kill a process" in query and "process id" in query
    hexed = describe_snippet("bytes.fromhex('4a4b4c').decode('utf-8')")
    assert hexed is not None and "hexadecimal" in hexed and "'4a4b4c'" in hexed
    # a method of an unknown receiver is found on the builtin types; a variable name is quoted as people quote it
    same = describe_snippet("all(x == myList[0] for x in myList)")
    assert same is not None and same.startswith("return True if") and "`myList`" in same
    # ... or on the classes of the modules the snippet names
    # names a snippet binds for itself (comprehension targets, lambda arguments, results) are not quoted
    joined = describe_snippet("r = int(''.join(map(lambda t: t[0], rows)))")
    assert joined is not None and joined.endswith("`rows`") and "`r`" not in joined and "`t`" not in joined
    # `df` is a pandas DataFrame by convention
    framed = describe_snippet("df.div(df.sum(axis=1), axis=0)")
    assert framed is not None and "division of dataframe" in framed and "`df`" in framed
    dated = describe_snippet("day = datetime.date.today(); day.weekday()")
    assert dated is not None and "day of the week" in dated and "`day`" in dated


def test_signature_lines_of_builtins_are_not_taken_for_descriptions() -> None:
    assert summary(dict) == "new empty dictionary"
    assert (summary(dict.update) or "").startswith("update D from")
    assert (summary(str.format) or "").startswith("return a formatted version")
    assert summary(zip) == "yield tuples until an input is exhausted"  # not its doctest
    assert summary(str.swapcase) == "convert uppercase characters to lowercase and lowercase characters to uppercase"


def test_text_that_is_not_python_gets_no_query(shared_data: Path) -> None:
    scifact = load_beir(shared_data / "scifact", split="test")
    assert [describe_snippet(d.text) for d in scifact.corpus[:300]] == [None] * 300
    assert describe_snippet("x = 1") is None  # Python, but it calls nothing


def test_only_standard_library_and_listed_modules_are_imported() -> None:
    # run apart: the test process may already hold any module
    code = (
        "import sys; from embedlab.finetune.api_docs import describe_snippet; "
        "describe_snippet('antigravity.fly(); this.s.upper(); __hello__.main(); idlelib.idle.run(); "
        "seaborn.heatmap(df)'); "
        "print(*(m in sys.modules for m in ('antigravity', 'this', '__hello__', 'idlelib.idle', 'seaborn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"] * 5  # seaborn is installed here, but not listed


def test_most_conala_snippets_get_a_query_made_of_documentation_words(shared_data: Path) -> None:
    corpus = load_beir(shared_data / "conala", split="test").corpus
    pairs = pseudo_pairs(corpus, ["api-docs"], per_kind=len(corpus), seed=0)
    assert {p.origin for p in pairs} == {"api-docs"}
    assert len(pairs) >= 0.6 * len(corpus)
    by_id = {d.id: d for d in corpus}
    assert all(by_id[p.positive_id].full_text == p.example.positive for p in pairs)
    # the queries say in words what the code does: most of their words are not in the snippet
    fresh = [
        len({w for w in p.example.query.lower().split() if w not in p.example.positive.lower()})
        / len(p.example.query.split())
        for p in pairs
    ]
    assert sorted(fresh)[len(fresh) // 2] > 0.5
    capped = pseudo_pairs(corpus, ["api-docs"], per_kind=100, seed=0)
    assert len({p.positive_id for p in capped}) == 100  # the cap counts documents
    # a snippet of several documented calls gets the joined question and one question per call
    per_document: dict[str, list[str]] = {}
    for pair in pairs:
        per_document.setdefault(pair.positive_id, []).append(pair.example.query)
    several = [queries for queries in per_document.values() if len(queries) > 1]
    assert several and all(len(queries) in (3, 4) for queries in several)
    # (a description has at least three words)
    assert all(len(q) < len(joined) and " ".join(q.split()[:3]) in joined for joined, *calls in several for q in calls)


def test_finetune_trains_on_docstring_questions_labelled_by_a_teacher(small_conala: Path, tmp_path: Path) -> None:
    """End to end: `--pseudo-queries api-docs` makes the corpus queries that the teacher labels and the model learns."""
    import json

    from typer.testing import CliRunner

    from embedlab.cli import app

    out = tmp_path / "ft"
    args = ["finetune", "--data", str(small_conala), "--out", str(out), "--teacher", "bm25", "--train-queries",
            "corpus", "--pseudo-queries", "keywords,api-docs", "--epochs", "1", "--batch-size", "8",
            "--precision", "fp32", "--time-budget", "0"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "finetune.json").read_text())
    made = payload["corpus_queries"]["made"]
    assert made["api-docs"] >= 0.5 * made["keywords"] > 0
    assert payload["config"]["pseudo_queries"] == ["keywords", "api-docs"]
    assert payload["teacher"]["examples"] > made["keywords"] // 2
    assert payload["training"]["steps"] > 0
    # One-line snippets and questions: trained at a length that fits them (a multiple of 64), saved at 256.
    assert payload["training"]["train_seq_length"] in (64, 128, 192) and "training at" in result.output
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out / "model"), device="cpu").max_seq_length == 256
