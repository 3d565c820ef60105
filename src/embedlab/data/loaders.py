"""Loaders: build a :class:`RetrievalDataset` or :class:`ScoredPairs` from files on disk.

Every loader reads its files line by line (SciFact's 8 MB corpus loads in a fraction of a second), checks what
it reads, and stops at the first problem with a :class:`~embedlab.errors.DataError` that names the file, the
1-based line and the fix. Bad data never surfaces as a raw traceback.

Formats
-------
:func:`load_beir` — a BEIR folder::

    corpus.jsonl    {"_id": "d1", "title": "...", "text": "...", "metadata": {}}  (title, metadata optional)
    queries.jsonl   {"_id": "q1", "text": "..."}
    qrels/test.tsv  query-id<TAB>corpus-id<TAB>score     (a header line; integer grades, > 0 is relevant)

  Only the queries judged in the chosen split are kept (in the order of ``queries.jsonl``); the whole corpus
  is kept. Ids may be JSON strings or integers (integers become strings). Texts are kept exactly as written.
  Errors: malformed JSON, missing or empty ``_id``, duplicate ids, a document whose text and title are both
  empty, a kept query with empty text, non-UTF-8 bytes, a qrels line without three fields, a grade that is not
  an integer (``2.0`` is accepted as 2, ``0.5`` is not), the same judgement twice (unless
  ``duplicate_judgements`` is ``"last"`` or ``"max"``: then one grade is kept and ``load_report`` counts the
  duplicates, as trec_eval and BEIR keep one), a missing
  ``qrels/<split>.tsv`` (the error lists the splits there are), and judgements naming query or document ids
  that do not exist. Unknown ids are counted and up to three are shown; with ``allow_unknown_ids=True`` those
  rows are dropped with a :class:`DataWarning` instead.

:func:`load_pairs` — query–document pairs, as JSONL or CSV/TSV with a header row:

  ``query`` and ``positive`` (or ``document``) are required; sentence-transformers' own names (``anchor``,
  ``positive``, ``negative``) and question–answer files (``question``, ``answer``) are accepted as aliases of
  ``query`` and ``positive`` (two names for the same column in one file are an error); ``negative`` is
  optional (in JSONL a string or a list of strings, also accepted as ``negatives``; in CSV/TSV one or more
  columns ``negative``,
  ``negative_1``, ``negative2``, ... whose empty cells are skipped); ``score`` (a number) is optional. Other
  fields are ignored.
  CSV is parsed with standard CSV quoting; TSV is split on tabs with no quoting (quote characters are text).
  Texts are stripped of surrounding whitespace. Ids are derived from the text (``q-`` or ``d-`` and the first
  16 hex digits of its SHA-256), so identical texts share one id and two loads give the same ids. The data set
  has one query per distinct query text and one document per distinct positive or negative text, in order of
  first appearance. Each positive is judged with grade 1; negatives are in the corpus as distractors and are
  **not** judged (a judgement of 0 is never stored, as in BEIR, where an unjudged document counts as
  irrelevant). ``score`` does not change the grade: it is kept for training.

:func:`load_training_pairs` — the same files as :func:`load_pairs`, one :class:`TrainingExample` per row with
its negatives and score, for fine-tuning.

:func:`load_sts` — sentence pairs with a similarity score, as :class:`ScoredPairs`:

  (a) the STS Benchmark layout (``sts-test.csv``, or a folder holding ``sts-<split>.csv``): no header;
  tab-separated genre, file, year, id, score, sentence1, sentence2, sometimes with extra trailing fields.
  Lines are split on tabs and fields 4, 5 and 6 (0-based) are taken; quote characters are text, not CSV
  quoting.
  (b) a plain file with a header naming ``sentence1``, ``sentence2`` and ``score``: tab-separated (split on
  tabs), comma-separated (CSV quoting), or JSONL with those keys. A folder may hold ``<split>.tsv``,
  ``<split>.csv`` or ``<split>.jsonl`` instead of ``sts-<split>.csv``.

:func:`load_folder` — a folder tree (or one file) of ``.txt``, ``.md``/``.markdown``, ``.html``/``.htm`` and
``.pdf`` files, as a corpus with no queries:

  Text comes from pypdf (PDF, pages joined by a blank line), BeautifulSoup with Python's own parser (HTML:
  scripts and styles removed, one line per block element) or the file itself (text and Markdown, read as is).
  Text files must be UTF-8; an HTML file may instead declare its charset in a ``<meta>`` tag. Each file is cut
  into chunks of at most ``chunk_tokens`` tokens overlapping by at most ``overlap_tokens``
  (:mod:`embedlab.data.chunking`; ``tokenizer`` as described there, default a word-and-punctuation count).
  Document ids are ``<relative/path>#<chunk index>`` with the index from 0; the title is the HTML ``<title>``
  or else the file stem; ``metadata`` holds ``source`` (the relative path), ``chunk``, ``start`` and ``end``
  (character offsets in the extracted text), ``tokens`` and, for PDFs, ``page`` (1-based page where the chunk
  starts). Files are visited in sorted order of their relative paths, so two loads are identical. Hidden files
  and folders (names starting with ``.``) are skipped. A file with no extractable text (a scanned PDF) and a
  file that cannot be read (a damaged or password-protected PDF, a text file that is not UTF-8) are skipped
  with a :class:`DataWarning` and listed in the dataset's ``load_report["skipped_files"]`` (``strict=True``
  makes an unreadable file a :class:`~embedlab.errors.DataError`); a folder with no text at all, or a single
  file given on its own that cannot be read, is a :class:`~embedlab.errors.DataError`.

:func:`load_dataset` — picks the loader from the path: a folder with ``corpus.jsonl`` is BEIR, a
``.jsonl``, ``.csv`` or ``.tsv`` file is pairs, any other folder (or a ``.txt``/``.md``/``.html``/``.pdf``
file) is documents.
STS files are not retrieval data: load them with :func:`load_sts`.

Example::

    >>> ds = load_beir("../shared/data/scifact", split="test")           # doctest: +SKIP
    >>> ds.stats()                                                        # doctest: +SKIP
    {'documents': 5183, 'queries': 300, 'judgements': 339}
    >>> sts = load_sts("../shared/data/stsb", split="test")              # doctest: +SKIP
    >>> len(sts.pairs)                                                    # doctest: +SKIP
    1379
    >>> docs = load_folder("manuals/", chunk_tokens=200, overlap_tokens=20)  # doctest: +SKIP
    >>> docs.corpus[0].id                                                 # doctest: +SKIP
    'guide/install.md#0'
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Container, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from embedlab.data.chunking import chunk_text
from embedlab.data.dataset import Document, Query, RetrievalDataset, ScoredPair, ScoredPairs
from embedlab.errors import DataError

__all__ = [
    "DOCUMENT_SUFFIXES",
    "DUPLICATE_POLICIES",
    "PAIR_SUFFIXES",
    "DataWarning",
    "TrainingExample",
    "load_beir",
    "load_dataset",
    "load_folder",
    "load_pairs",
    "load_sts",
    "load_training_pairs",
]

DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
PAIR_SUFFIXES = (".jsonl", ".csv", ".tsv")

_UTF8_FIX = "re-save the file as UTF-8"

DuplicatePolicy = Literal["error", "last", "max"]
DUPLICATE_POLICIES: tuple[DuplicatePolicy, ...] = ("error", "last", "max")
_MAX_EXAMPLES = 3


class DataWarning(UserWarning):
    """Data that was loaded, but not all of it: rows dropped on request, files with no text."""


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One training row: a query, its relevant text, optional hard negatives and an optional score."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    score: float | None = None


# ----------------------------------------------------------------------------------------------------
# Reading lines


def _open_binary(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise DataError(path, f"cannot read the file: {exc.strerror or exc}", fix="check the path") from exc


def _decode_line(path: Path, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            path,
            f"bytes that are not UTF-8 (0x{raw[exc.start]:02x} at byte {exc.start + 1})",
            line=lineno,
            fix=_UTF8_FIX,
        ) from None


def _raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its line ending), streamed."""
    with _open_binary(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            yield lineno, _decode_line(path, lineno, raw)


def _lines(path: Path) -> Generator[tuple[int, str], None, None]:
    """Non-blank lines without their line ending."""
    for lineno, line in _raw_lines(path):
        line = line.rstrip("\r\n")
        if line.strip():
            yield lineno, line


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in _lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                path,
                f"malformed JSON ({exc.msg} at column {exc.colno})",
                line=lineno,
                fix="write one complete JSON object per line",
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                path,
                f"expected a JSON object, found {type(record).__name__}",
                line=lineno,
                fix="write one JSON object ({...}) per line",
            )
        yield lineno, record


def json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line, JSON object) of a JSONL file, streamed; blank lines skipped; bad lines are DataErrors."""
    return _json_lines(path)


def _require_file(path: Path, fix: str) -> None:
    if not path.is_file():
        raise DataError(path, "file not found", fix=fix)


# ----------------------------------------------------------------------------------------------------
# Fields


def _id_field(record: Mapping[str, Any], key: str, path: Path, line: int, what: str) -> str:
    if key not in record:
        raise DataError(path, f"missing field '{key}'", line=line, fix=f"give every {what} an '{key}'")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(
            path,
            f"field '{key}' must be a string or an integer, found {type(value).__name__}",
            line=line,
            fix=f"write the {what} id as a string",
        )
    text = str(value)
    if not text.strip():
        raise DataError(path, f"empty '{key}'", line=line, fix=f"give every {what} a non-empty '{key}'")
    return text


def _str_field(record: Mapping[str, Any], key: str, path: Path, line: int, *, required: bool) -> str:
    if key not in record:
        if required:
            raise DataError(path, f"missing field '{key}'", line=line, fix=f"add a '{key}' string to every line")
        return ""
    value = record[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(
            path,
            f"field '{key}' must be a string, found {type(value).__name__}",
            line=line,
            fix=f"write '{key}' as a JSON string",
        )
    return value


def _parse_grade(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _parse_score(raw: Any, path: Path, line: int, field: str = "score") -> float:
    if isinstance(raw, bool):
        value = math.nan
    elif isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = math.nan
    else:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(path, f"{field} {raw!r} is not a number", line=line, fix=f"write '{field}' as a number")
    return value


# ----------------------------------------------------------------------------------------------------
# BEIR


def load_beir(
    path: str | os.PathLike[str],
    split: str = "test",
    *,
    name: str | None = None,
    allow_unknown_ids: bool = False,
    duplicate_judgements: DuplicatePolicy = "error",
) -> RetrievalDataset:
    """Load a BEIR folder for one split: the whole corpus, the queries judged in ``qrels/<split>.tsv``.

    ``name`` defaults to the folder name. ``duplicate_judgements`` says what a second judgement of the same query
    and document does: ``"error"`` (the default) refuses the file, ``"last"`` keeps the later grade, ``"max"``
    the higher one; either way the dataset's ``load_report`` counts them. See the module docstring for the format
    and the checks.
    """
    root = Path(path)
    corpus_path, queries_path, qrels_path = beir_paths(root, split, duplicate_judgements)
    corpus = _read_beir_corpus(corpus_path)
    kept, qrels, report = beir_judged(
        queries_path,
        qrels_path,
        {doc.id for doc in corpus},
        split=split,
        allow_unknown_ids=allow_unknown_ids,
        duplicate_judgements=duplicate_judgements,
    )
    return RetrievalDataset(
        name=name or root.resolve().name,
        corpus=corpus,
        queries=kept,
        qrels=qrels,
        source=str(root),
        split=split,
        load_report=report,
    )


def beir_paths(root: Path, split: str, duplicate_judgements: str = "error") -> tuple[Path, Path, Path]:
    """corpus.jsonl, queries.jsonl and qrels/<split>.tsv of a BEIR folder, each checked to exist."""
    if duplicate_judgements not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicate_judgements must be one of {', '.join(DUPLICATE_POLICIES)}")
    if not root.is_dir():
        raise DataError(
            root,
            "not a folder",
            fix="pass a BEIR folder holding corpus.jsonl, queries.jsonl and qrels/<split>.tsv",
        )
    corpus_path, queries_path, qrels_dir = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels"
    _require_file(corpus_path, "a BEIR folder needs corpus.jsonl with one document per line")
    _require_file(queries_path, "a BEIR folder needs queries.jsonl with one query per line")
    qrels_path = qrels_dir / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
        fix = (
            f"choose one of the splits there are: {', '.join(splits)}"
            if splits
            else f"add qrels/{split}.tsv (query-id, corpus-id, score; tab-separated)"
        )
        raise DataError(qrels_path, f"no judgements for split '{split}'", fix=fix)
    return corpus_path, queries_path, qrels_path


def beir_judged(
    queries_path: Path,
    qrels_path: Path,
    doc_ids: Container[str],
    *,
    split: str,
    allow_unknown_ids: bool = False,
    duplicate_judgements: DuplicatePolicy = "error",
) -> tuple[tuple[Query, ...], dict[str, dict[str, int]], dict[str, Any]]:
    """The judged queries (in file order), the judgements and the load report of a BEIR split, checked against
    ``doc_ids`` (any container: a reader that streams the corpus need not hold the ids as strings)."""
    queries, query_lines = _read_beir_queries(queries_path)
    qrels, unknown_count, unknown_examples, duplicates = _read_qrels(
        qrels_path, set(query_lines), doc_ids, duplicate_judgements
    )
    if unknown_count:
        problem = f"{unknown_count} judgement row(s) name ids not in queries.jsonl or corpus.jsonl, e.g. " + "; ".join(
            f"line {line}: {what}" for line, what in unknown_examples
        )
        if not allow_unknown_ids:
            raise DataError(
                qrels_path,
                problem,
                line=unknown_examples[0][0],
                fix="check that the qrels belong to this corpus and these queries, "
                "or pass --allow-unknown-ids (allow_unknown_ids=True in the API) to drop those rows",
            )
        warnings.warn(f"{qrels_path}: dropped {problem}", DataWarning, stacklevel=3)
    if not qrels:
        raise DataError(qrels_path, f"no judgements in split '{split}'", fix="add judgement rows to the file")

    kept = tuple(query for query in queries if query.id in qrels)
    for query in kept:
        if not query.text.strip():
            raise DataError(
                queries_path,
                f"query '{query.id}' has empty text",
                line=query_lines[query.id],
                fix="give every judged query a non-empty 'text'",
            )
    if duplicates["rows"]:
        warnings.warn(
            f"{qrels_path}: {duplicates['rows']} duplicate judgement(s), {duplicates['conflicting']} with a "
            f"different grade; kept the {'higher' if duplicate_judgements == 'max' else 'later'} grade",
            DataWarning,
            stacklevel=3,
        )
    return kept, qrels, {"duplicate_judgements": duplicates} if duplicates["rows"] else {}


def beir_document(record: Mapping[str, Any], path: Path, line: int) -> Document:
    """One corpus.jsonl record as a :class:`Document`, checked as :func:`load_beir` checks it (every reader of a
    BEIR corpus, e.g. a Ray worker reading it, builds its documents here, so ids and texts are identical)."""
    doc_id = _id_field(record, "_id", path, line, "document")
    text = _str_field(record, "text", path, line, required=True)
    title = _str_field(record, "title", path, line, required=False)
    if not text.strip() and not title.strip():
        raise DataError(
            path,
            f"document '{doc_id}' has empty text and no title",
            line=line,
            fix="give the document a 'text' or a 'title', or remove the line",
        )
    metadata = record.get("metadata")
    return Document(id=doc_id, text=text, title=title, metadata=metadata if isinstance(metadata, dict) else {})


def iter_beir_corpus(path: Path) -> Iterator[tuple[int, Document]]:
    """(1-based line, document) of a corpus.jsonl, streamed and checked line by line (duplicate ids are the
    caller's to find: that needs every id)."""
    for line, record in _json_lines(path):
        yield line, beir_document(record, path, line)


def duplicate_id_error(path: Path, doc_id: str, first_line: int, line: int) -> DataError:
    """A document id seen a second time in a corpus.jsonl (the loader and the Ray scan both refuse it)."""
    return DataError(
        path,
        f"duplicate _id '{doc_id}' (first on line {first_line})",
        line=line,
        fix="give every document a unique '_id'",
    )


def _read_beir_corpus(path: Path) -> tuple[Document, ...]:
    documents: list[Document] = []
    first_line: dict[str, int] = {}
    for line, doc in iter_beir_corpus(path):
        if doc.id in first_line:
            raise duplicate_id_error(path, doc.id, first_line[doc.id], line)
        first_line[doc.id] = line
        documents.append(doc)
    if not documents:
        raise DataError(path, "no documents", fix="write one JSON document per line")
    return tuple(documents)


def _read_beir_queries(path: Path) -> tuple[list[Query], dict[str, int]]:
    queries: list[Query] = []
    first_line: dict[str, int] = {}
    for line, record in _json_lines(path):
        query_id = _id_field(record, "_id", path, line, "query")
        if query_id in first_line:
            raise DataError(
                path,
                f"duplicate _id '{query_id}' (first on line {first_line[query_id]})",
                line=line,
                fix="give every query a unique '_id'",
            )
        first_line[query_id] = line
        queries.append(Query(id=query_id, text=_str_field(record, "text", path, line, required=True)))
    return queries, first_line


_QRELS_HEADER_NAMES = frozenset({"query-id", "query_id", "queryid", "qid", "query"})


def _read_qrels(
    path: Path, query_ids: set[str], doc_ids: Container[str], duplicate_judgements: DuplicatePolicy = "error"
) -> tuple[dict[str, dict[str, int]], int, list[tuple[int, str]], dict[str, Any]]:
    """Judgements naming known ids, the number of rows naming unknown ids, up to 3 examples of those, and what
    was done with duplicate judgements (``rows``, ``conflicting``: with another grade, ``kept``: the policy)."""
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    duplicates: dict[str, Any] = {"rows": 0, "conflicting": 0, "kept": duplicate_judgements}
    unknown_count = 0
    unknown_examples: list[tuple[int, str]] = []
    first = True
    for line, text in _lines(path):
        parts = [part.strip() for part in (text.split("\t") if "\t" in text else text.split())]
        if first:
            first = False
            if parts[0].lower() in _QRELS_HEADER_NAMES:
                continue
        if len(parts) != 3:
            raise DataError(
                path,
                f"expected 3 tab-separated fields (query-id, corpus-id, score), found {len(parts)}",
                line=line,
                fix="write one judgement per line: query-id<TAB>corpus-id<TAB>score",
            )
        query_id, doc_id, raw_grade = parts
        grade = _parse_grade(raw_grade)
        if grade is None:
            raise DataError(
                path,
                f"score {raw_grade!r} is not an integer",
                line=line,
                fix="write whole-number relevance grades (0 = not relevant, 1, 2, ... = relevant)",
            )
        missing = [
            f"unknown {kind} '{value}'"
            for kind, value, known in (("query", query_id, query_ids), ("document", doc_id, doc_ids))
            if value not in known
        ]
        if missing:
            unknown_count += 1
            if len(unknown_examples) < _MAX_EXAMPLES:
                unknown_examples.append((line, " and ".join(missing)))
            continue
        if (query_id, doc_id) in first_line:
            if duplicate_judgements == "error":
                raise DataError(
                    path,
                    f"duplicate judgement for query '{query_id}' and document '{doc_id}' "
                    f"(first on line {first_line[query_id, doc_id]})",
                    line=line,
                    fix="keep one line per query and document, or pass --duplicate-judgements last or max "
                    "(duplicate_judgements= in the API) to keep one of them",
                )
            previous = qrels[query_id][doc_id]
            duplicates["rows"] += 1
            duplicates["conflicting"] += previous != grade
            if duplicate_judgements == "max":
                grade = max(grade, previous)
        first_line.setdefault((query_id, doc_id), line)
        qrels.setdefault(query_id, {})[doc_id] = grade
    return qrels, unknown_count, unknown_examples, duplicates


# ----------------------------------------------------------------------------------------------------
# Pairs


def _text_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def load_pairs(path: str | os.PathLike[str], *, name: str | None = None) -> RetrievalDataset:
    """A retrieval data set from a JSONL/CSV/TSV file of query–positive pairs (negatives become distractors).

    ``name`` defaults to the file stem. See the module docstring for the fields, ids and judgements.
    """
    file = Path(path)
    queries: dict[str, Query] = {}
    documents: dict[str, Document] = {}
    qrels: dict[str, dict[str, int]] = {}
    for _, example in _pair_rows(file):
        query_id = _text_id("q", example.query)
        queries.setdefault(query_id, Query(id=query_id, text=example.query))
        for text in (example.positive, *example.negatives):
            doc_id = _text_id("d", text)
            documents.setdefault(doc_id, Document(id=doc_id, text=text))
        qrels.setdefault(query_id, {})[_text_id("d", example.positive)] = 1
    return RetrievalDataset(
        name=name or file.stem,
        corpus=tuple(documents.values()),
        queries=tuple(queries.values()),
        qrels=qrels,
        source=str(file),
    )


def load_training_pairs(path: str | os.PathLike[str]) -> list[TrainingExample]:
    """One :class:`TrainingExample` per row of a JSONL/CSV/TSV pairs file, in file order."""
    return [example for _, example in _pair_rows(Path(path))]


def _pair_rows(file: Path) -> Iterator[tuple[int, TrainingExample]]:
    suffix = file.suffix.lower()
    if suffix not in PAIR_SUFFIXES:
        raise DataError(file, f"unknown pairs file type '{suffix}'", fix="use a .jsonl, .csv or .tsv file")
    _require_file(file, "check the path")
    rows = _json_pair_rows(file) if suffix == ".jsonl" else _table_pair_rows(file, tsv=suffix == ".tsv")
    empty = True
    for line, example in rows:
        empty = False
        yield line, example
    if empty:
        raise DataError(file, "no pairs", fix="write one query–positive pair per line")


def _clean_text(value: str, field: str, path: Path, line: int) -> str:
    text = value.strip()
    if not text:
        raise DataError(path, f"empty '{field}'", line=line, fix=f"give every row a non-empty '{field}'")
    return text


def _example(
    path: Path,
    line: int,
    query: str,
    positive: str,
    negatives: Iterable[str],
    score: Any,
    positive_field: str,
    query_field: str = "query",
) -> TrainingExample:
    example = TrainingExample(
        query=_clean_text(query, query_field, path, line),
        positive=_clean_text(positive, positive_field, path, line),
        negatives=tuple(_clean_text(n, "negative", path, line) for n in negatives),
        score=None if score is None else _parse_score(score, path, line),
    )
    if example.positive in example.negatives:
        raise DataError(
            path,
            "a negative is the same text as the positive",
            line=line,
            fix="remove it from the negatives",
        )
    return example


def _json_pair_rows(path: Path) -> Iterator[tuple[int, TrainingExample]]:
    for line, record in _json_lines(path):
        query_field = _query_field(record.keys(), path, line)
        positive_field = _positive_field(record.keys(), path, line)
        negatives: list[str] = []
        for key in ("negative", "negatives"):
            value = record.get(key)
            items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
            if value is not None and (items is None or not all(isinstance(item, str) for item in items)):
                raise DataError(
                    path,
                    f"field '{key}' must be a string or a list of strings",
                    line=line,
                    fix=f'write \'{key}\' as "text" or ["text", ...]',
                )
            negatives.extend(items or [])
        score = record.get("score")
        yield (
            line,
            _example(
                path,
                line,
                _str_field(record, query_field, path, line, required=True),
                _str_field(record, positive_field, path, line, required=True),
                negatives,
                score,
                positive_field,
                query_field,
            ),
        )


# sentence-transformers' own column names (anchor, positive, negative) and question–answer files are accepted.
QUERY_FIELDS = ("query", "anchor", "question")
POSITIVE_FIELDS = ("positive", "document", "answer")


def _one_of(names: tuple[str, ...], fields: Iterable[str], path: Path, line: int, what: str) -> str | None:
    present = [name for name in names if name in fields]
    if len(present) > 1:
        raise DataError(
            path,
            f"both {' and '.join(repr(name) for name in present)} given",
            line=line,
            fix=f"name the {what} once, as '{names[0]}'",
        )
    return present[0] if present else None


def _query_field(fields: Iterable[str], path: Path, line: int) -> str:
    fields = list(fields)
    found = _one_of(QUERY_FIELDS, fields, path, line, "query")
    if found is None:
        raise DataError(
            path,
            "missing field 'query' (or 'anchor', 'question')",
            line=line,
            fix="give every row its query as 'query'",
        )
    return found


def _positive_field(fields: Iterable[str], path: Path, line: int) -> str:
    found = _one_of(POSITIVE_FIELDS, list(fields), path, line, "relevant text")
    if found is None:
        raise DataError(
            path,
            "missing field 'positive' (or 'document', 'answer')",
            line=line,
            fix="give every row the relevant text as 'positive'",
        )
    return found


_NEGATIVE_COLUMN = re.compile(r"negatives?(?:[ _-]?\d+)?")


def _table_records(path: Path, *, tsv: bool) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, fields) for each non-blank record; TSV splits on tabs, CSV uses quoting."""
    if tsv:
        for line, text in _lines(path):
            yield line, text.split("\t")
        return
    last_line = [0]  # the line the CSV reader has read up to

    def feed() -> Iterator[str]:
        for line, text in _raw_lines(path):
            last_line[0] = line
            yield text

    reader = csv.reader(feed(), strict=True)
    previous = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(
                path, f"malformed CSV ({exc})", line=last_line[0], fix="check the quoting on this line"
            ) from None
        first, previous = previous + 1, last_line[0]
        if any(cell.strip() for cell in row):
            yield first, row


def _table_pair_rows(path: Path, *, tsv: bool) -> Iterator[tuple[int, TrainingExample]]:
    records = _table_records(path, tsv=tsv)
    header_line, header = next(records, (0, []))
    if not header:
        raise DataError(path, "empty file", fix="start with a header row: query, positive (negative, score)")
    columns = [cell.strip().lower() for cell in header]
    if not any(name in columns for name in QUERY_FIELDS):
        looks_sts = "sentence1" in columns or len(header) >= 7 or (not tsv and "\t" in ",".join(header))
        raise DataError(
            path,
            "missing column 'query' (or 'anchor', 'question') in the header row",
            line=header_line,
            fix="this looks like an STS file: load it with load_sts"
            if looks_sts
            else "start the file with a header row naming the columns query, positive (and negative, score)",
        )
    query_field = _query_field(columns, path, header_line)
    positive_field = _positive_field(columns, path, header_line)
    query_at, positive_at = columns.index(query_field), columns.index(positive_field)
    negative_at = [i for i, column in enumerate(columns) if _NEGATIVE_COLUMN.fullmatch(column)]
    score_at = columns.index("score") if "score" in columns else None
    for line, row in records:
        if len(row) > len(header):
            raise DataError(
                path,
                f"{len(row)} fields but the header has {len(header)}",
                line=line,
                fix="remove the extra fields" + (" (TSV fields cannot contain tabs)" if tsv else " or quote them"),
            )
        row = row + [""] * (len(header) - len(row))
        score = row[score_at].strip() if score_at is not None else ""
        yield (
            line,
            _example(
                path,
                line,
                row[query_at],
                row[positive_at],
                [row[i] for i in negative_at if row[i].strip()],
                score or None,
                positive_field,
                query_field,
            ),
        )


# ----------------------------------------------------------------------------------------------------
# STS


def load_sts(path: str | os.PathLike[str], split: str = "test", *, name: str | None = None) -> ScoredPairs:
    """Sentence pairs with gold scores: an STS Benchmark file or folder, or a sentence1/sentence2/score file.

    ``split`` picks ``sts-<split>.csv`` (or ``<split>.tsv``/``.csv``/``.jsonl``) when ``path`` is a folder.
    ``name`` defaults to the file stem. Scores are kept as given (STS Benchmark: 0–5).
    """
    file = _sts_file(Path(path), split)
    rows = _json_sts_rows(file) if file.suffix.lower() == ".jsonl" else _table_sts_rows(file)
    pairs: list[ScoredPair] = []
    for line, text1, text2, raw_score in rows:
        if not text1.strip() or not text2.strip():
            raise DataError(file, "empty sentence", line=line, fix="give every pair two non-empty sentences")
        pairs.append(ScoredPair(text1=text1, text2=text2, score=_parse_score(raw_score, file, line)))
    if not pairs:
        raise DataError(file, "no sentence pairs", fix="write one scored pair per line")
    return ScoredPairs(name=name or file.stem, pairs=tuple(pairs), source=str(file))


def _sts_file(path: Path, split: str) -> Path:
    if not path.is_dir():
        _require_file(path, "check the path")
        return path
    for candidate in (f"sts-{split}.csv", f"{split}.tsv", f"{split}.csv", f"{split}.jsonl"):
        if (path / candidate).is_file():
            return path / candidate
    splits = sorted(p.stem.removeprefix("sts-") for p in path.glob("sts-*.csv"))
    fix = f"choose one of the splits there are: {', '.join(splits)}" if splits else f"add sts-{split}.csv"
    raise DataError(path, f"no STS file for split '{split}'", fix=fix)


def _json_sts_rows(path: Path) -> Iterator[tuple[int, str, str, Any]]:
    for line, record in _json_lines(path):
        if "score" not in record:
            raise DataError(path, "missing field 'score'", line=line, fix="give every pair a numeric 'score'")
        yield (
            line,
            _str_field(record, "sentence1", path, line, required=True),
            _str_field(record, "sentence2", path, line, required=True),
            record["score"],
        )


_STS_COLUMNS = ("sentence1", "sentence2", "score")


def _table_sts_rows(path: Path) -> Iterator[tuple[int, str, str, str]]:
    lines = _lines(path)
    first = next(lines, None)
    lines.close()
    if first is None:
        raise DataError(path, "no sentence pairs", fix="write one scored pair per line")
    header_line, first_text = first
    tab_fields = [field.strip().lower() for field in first_text.split("\t")]
    if all(column in tab_fields for column in _STS_COLUMNS):
        at = [tab_fields.index(column) for column in _STS_COLUMNS]
        for line, text in _lines(path):
            if line == header_line:
                continue
            fields = text.split("\t")
            if len(fields) <= max(at):
                raise DataError(
                    path,
                    f"{len(fields)} tab-separated fields, the header has {len(tab_fields)}",
                    line=line,
                    fix="write sentence1, sentence2 and score on every line, separated by tabs",
                )
            yield line, fields[at[0]], fields[at[1]], fields[at[2]]
    elif len(tab_fields) >= 7:
        yield from _stsb_rows(path)
    else:
        records = _table_records(path, tsv=False)
        _, header = next(records)
        columns = [cell.strip().lower() for cell in header]
        if not all(column in columns for column in _STS_COLUMNS):
            raise DataError(
                path,
                "not an STS file: no header naming sentence1, sentence2 and score, and not the STS "
                "Benchmark layout (7 tab-separated fields, the score fifth)",
                line=header_line,
                fix="add a header row sentence1,sentence2,score",
            )
        at = [columns.index(column) for column in _STS_COLUMNS]
        for line, row in records:
            if len(row) <= max(at):
                raise DataError(
                    path,
                    f"{len(row)} fields, the header has {len(columns)}",
                    line=line,
                    fix="write sentence1, sentence2 and score on every line",
                )
            yield line, row[at[0]], row[at[1]], row[at[2]]


def _stsb_rows(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """STS Benchmark lines: split on tabs only (quotes are text) and take fields 4, 5 and 6."""
    for line, text in _lines(path):
        fields = text.split("\t")
        if len(fields) < 7:
            raise DataError(
                path,
                f"{len(fields)} tab-separated fields, the STS Benchmark layout has at least 7",
                line=line,
                fix="write genre, file, year, id, score, sentence1, sentence2 separated by tabs",
            )
        yield line, fields[5], fields[6], fields[4]


# ----------------------------------------------------------------------------------------------------
# Folders of documents


def load_folder(
    path: str | os.PathLike[str],
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    tokenizer: Any = None,
    *,
    name: str | None = None,
    strict: bool = False,
) -> RetrievalDataset:
    """A corpus (no queries) of token-bounded, overlapping chunks of the documents under ``path``.

    ``path`` may also be a single document file. ``name`` defaults to the folder (or file) name. A file in the
    folder that cannot be read (a damaged or password-protected PDF, a text file that is not UTF-8, no read
    permission) is skipped: it is named in a :class:`DataWarning` and in the dataset's
    ``load_report["skipped_files"]``; with ``strict=True`` it is a :class:`~embedlab.errors.DataError` instead.
    See the module docstring for the file types, ids and metadata, and :mod:`embedlab.data.chunking` for
    ``tokenizer``.
    """
    root = Path(path)
    # Check the sizes and the tokenizer before reading any file.
    chunk_text("", chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens, tokenizer=tokenizer)
    if root.is_file():
        if root.suffix.lower() not in DOCUMENT_SUFFIXES:
            raise DataError(root, f"unsupported file type '{root.suffix}'", fix=_FOLDER_FIX)
        files = [(root.name, root)]
    elif root.is_dir():
        files = _document_files(root)
    else:
        raise DataError(root, "no such file or folder", fix="check the path")
    if not files:
        raise DataError(root, "no documents found", fix=_FOLDER_FIX)

    documents: list[Document] = []
    empty: list[str] = []
    unreadable: list[DataError] = []
    for relative, file in files:
        try:
            title, text, page_starts = _extract(file)
        except DataError as error:
            # One bad file among many should not stop the load: it is listed instead (strict: it stops it).
            if strict or root.is_file():
                raise
            unreadable.append(error)
            continue
        chunks = chunk_text(text, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens, tokenizer=tokenizer)
        if not chunks:
            empty.append(relative)
        for chunk in chunks:
            metadata: dict[str, Any] = {
                "source": relative,
                "chunk": chunk.index,
                "start": chunk.start,
                "end": chunk.end,
                "tokens": chunk.tokens,
            }
            if page_starts is not None:
                metadata["page"] = bisect.bisect_right(page_starts, chunk.start)
            documents.append(
                Document(
                    id=f"{relative}#{chunk.index}",
                    text=chunk.text,
                    title=title or file.stem,
                    metadata=metadata,
                )
            )
    if not documents:
        if unreadable:
            raise DataError(
                root,
                f"no readable text in {len(files)} file(s); {len(unreadable)} could not be read, the first "
                f"{unreadable[0].path}: {unreadable[0].problem}",
                fix=unreadable[0].fix,
            )
        raise DataError(root, f"no text found in {len(files)} file(s)", fix="check the files are not empty or scanned")
    if unreadable:
        warnings.warn(
            f"{root}: skipped {len(unreadable)} unreadable file(s): " + "; ".join(map(str, unreadable)),
            DataWarning,
            stacklevel=2,
        )
    if empty:
        warnings.warn(
            f"{root}: skipped {len(empty)} file(s) with no text (scanned PDFs need OCR first), e.g. "
            + ", ".join(empty[:_MAX_EXAMPLES]),
            DataWarning,
            stacklevel=2,
        )
    skipped = [
        {"file": Path(error.path).relative_to(root).as_posix(), "problem": str(error)} for error in unreadable
    ] + [{"file": relative, "problem": "no text (a scanned PDF needs OCR first)"} for relative in empty]
    return RetrievalDataset(
        name=name or root.resolve().name,
        corpus=tuple(documents),
        queries=(),
        qrels={},
        source=str(root),
        load_report={"skipped_files": skipped} if skipped else {},
    )


_FOLDER_FIX = f"load a folder of {', '.join(DOCUMENT_SUFFIXES)} files"


def _document_files(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of the supported, non-hidden files under ``root``, sorted by that path."""
    found: list[tuple[str, Path]] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [sub for sub in subfolders if not sub.startswith(".")]
        for file_name in names:
            if file_name.startswith(".") or Path(file_name).suffix.lower() not in DOCUMENT_SUFFIXES:
                continue
            file = Path(folder, file_name)
            found.append((file.relative_to(root).as_posix(), file))
    return sorted(found)


def _extract(file: Path) -> tuple[str, str, list[int] | None]:
    """(title or "", text, character offsets where each PDF page starts or None) for one document file."""
    suffix = file.suffix.lower()
    if suffix == ".pdf":
        return _extract_pdf(file)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DataError(file, f"cannot read the file: {exc.strerror or exc}", fix="check the path") from exc
    if suffix in (".html", ".htm"):
        return (*_extract_html(file, data), None)
    return "", _decode_document(file, data), None


def _decode_document(file: Path, data: bytes, declared: str | None = None) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if declared:
            try:
                return data.decode(declared)
            except (LookupError, UnicodeDecodeError):
                pass
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            file,
            f"bytes that are not UTF-8 (0x{data[exc.start]:02x} at byte {column})",
            line=line,
            fix=_UTF8_FIX,
        ) from None


_BLOCK_TAGS = (
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
    "p", "pre", "section", "table", "tr", "ul",
)  # fmt: skip


def _extract_html(file: Path, data: bytes) -> tuple[str, str]:
    from bs4 import BeautifulSoup
    from bs4.dammit import EncodingDetector

    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    soup = BeautifulSoup(_decode_document(file, data, declared), "html.parser")
    title = " ".join(soup.title.get_text(" ").split()) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    for tag in soup(_BLOCK_TAGS):
        tag.append("\n")
    for tag in soup(["td", "th"]):
        tag.append(" ")
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
    return title, "\n".join(line for line in lines if line)


def _extract_pdf(file: Path) -> tuple[str, str, list[int]]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(file)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DataError(file, "the PDF is password-protected", fix="save an unprotected copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DataError:
        raise
    except Exception as exc:  # pypdf raises many kinds of error on damaged files; each means "cannot read".
        raise DataError(
            file,
            f"cannot read the PDF ({type(exc).__name__}: {exc})",
            fix="check it opens in a PDF viewer, or re-export it",
        ) from exc
    starts: list[int] = []
    text = ""
    for page in pages:
        text += "\n\n" if starts else ""
        starts.append(len(text))
        text += page
    return "", text, starts


# ----------------------------------------------------------------------------------------------------
# Dispatch


def load_dataset(
    path: str | os.PathLike[str],
    split: str = "test",
    *,
    name: str | None = None,
    allow_unknown_ids: bool = False,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    tokenizer: Any = None,
    duplicate_judgements: DuplicatePolicy = "error",
    strict: bool = False,
) -> RetrievalDataset:
    """Load retrieval data with the loader the path calls for (see the module docstring).

    ``split``, ``allow_unknown_ids`` and ``duplicate_judgements`` apply to BEIR folders; the chunking arguments
    and ``strict`` to folders of documents.
    """
    source = Path(path)
    if source.is_dir():
        if (source / "corpus.jsonl").is_file():
            return load_beir(
                source,
                split,
                name=name,
                allow_unknown_ids=allow_unknown_ids,
                duplicate_judgements=duplicate_judgements,
            )
        return load_folder(source, chunk_tokens, overlap_tokens, tokenizer, name=name, strict=strict)
    if not source.exists():
        raise DataError(source, "no such file or folder", fix="check the path")
    suffix = source.suffix.lower()
    if suffix in PAIR_SUFFIXES:
        return load_pairs(source, name=name)
    if suffix in DOCUMENT_SUFFIXES:
        return load_folder(source, chunk_tokens, overlap_tokens, tokenizer, name=name)
    raise DataError(
        source,
        f"cannot tell how to load a '{suffix or 'file without suffix'}'",
        fix="pass a BEIR folder (with corpus.jsonl), a .jsonl/.csv/.tsv file of pairs, or a folder of "
        "documents; load STS files with load_sts",
    )
