"""The bundled default data set: Python standard-library docstrings as a retrieval task.

:func:`load_stdlib_docs` builds a small but real :class:`~embedlab.data.dataset.RetrievalDataset` at run time,
with no download and no files, from the documentation the running interpreter ships with. It is what embedlab
measures on when a user has not given data of their own yet, and what the quick checks and examples use.

How it is built, deterministically:

* For each module in :data:`STDLIB_MODULES` (a fixed list of pure, well-documented modules), take every
  public function and class the module defines itself — the object's ``__module__`` is the module, one of
  its submodules (``json.decoder`` for ``json.JSONDecoder``) or its C accelerator (``_heapq`` for ``heapq``);
  re-exports and aliases are skipped — and the public methods, class methods and static methods that each
  such class defines in its own body.
* Only an object's *own* docstring counts (a method that overrides without a docstring is skipped rather
  than inheriting its parent's). The docstring is cleaned with :func:`inspect.getdoc`.
* The **query** is the docstring's summary: the first sentence of its first paragraph, on one line
  (see :func:`split_summary`). Summaries that read as code rather than prose (``"[sep] -> string"``) are
  skipped.
* The one **relevant document** is the object's signature (``json.dumps(obj, *, skipkeys=False, ...)``,
  via :func:`inspect.signature`; ``class`` in front for classes) followed by the rest of the docstring —
  never the summary itself. Objects with less than ``MIN_DOC_CHARS`` characters of docstring left after the
  summary are skipped.
* Summaries that occur more than once ("Return a copy of ...") are ambiguous queries: every object
  carrying one is dropped.
* The candidates are sorted by id; when there are more than ``max_pairs``, evenly spaced ones are kept
  (the i-th of ``max_pairs`` is candidate ``i * n // max_pairs``), so every module stays represented.
  No randomness.

Document ids are qualified names (``"json.dumps"``, ``"fractions.Fraction.limit_denominator"``); a query's
id is its document's id with a ``q:`` prefix, so that no query id equals a document id (BEIR's evaluator
drops such pairs by default). The title is left empty because the signature that starts the text already
names the object; ``metadata`` records ``module``, ``qualname`` and ``kind`` (``function``, ``class`` or
``method``).

The content depends on the Python version (docstrings change between releases), which is why ``source``
names it; within one version and platform, two builds are identical (same
:attr:`~embedlab.data.dataset.RetrievalDataset.content_hash`). Memory addresses in default values
(``<object object at 0x7f...>``) are removed from signatures for that reason. ``os.path`` is left out on
purpose: it is ``posixpath`` or ``ntpath`` depending on the platform.

Example::

    >>> from embedlab.data.stdlib_docs import load_stdlib_docs
    >>> ds = load_stdlib_docs()
    >>> ds.name, ds.split
    ('python-stdlib-docs', 'test')
    >>> len(ds.queries), len(ds.corpus)
    (600, 600)
    >>> query = next(q for q in ds.queries if q.id == "q:json.dumps")
    >>> query.text
    'Serialize ``obj`` to a JSON formatted ``str``.'
    >>> (doc_id,) = ds.qrels[query.id]
    >>> print(ds.documents_by_id[doc_id].text[:60])
    json.dumps(obj, *, skipkeys=False, ensure_ascii=True, check_
"""

from __future__ import annotations

import importlib
import inspect
import platform
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from embedlab.data.dataset import Document, Query, RetrievalDataset
from embedlab.errors import EmbedlabError

STDLIB_MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.utils",
    "enum",
    "fnmatch",
    "fractions",
    "functools",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "html",
    "http.cookies",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "mimetypes",
    "numbers",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "shlex",
    "shutil",
    "smtplib",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "traceback",
    "types",
    "typing",
    "unittest",
    "urllib.parse",
    "uuid",
    "warnings",
    "weakref",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
)
"""The modules the data set is drawn from, in a fixed order."""

DEFAULT_MAX_PAIRS = 600
"""Default cap on query/document pairs: large enough for stable means, small enough to encode in seconds."""

MIN_DOC_CHARS = 40
"""Objects whose docstring, less the summary, is shorter than this are skipped (too little to retrieve)."""

DATASET_NAME = "python-stdlib-docs"

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bvs)[.!?](?=\s|$)")
_SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)\s*(-{1,2}>.*)?$")
# a summary that reads as code, not prose ("[sep] -> string")
CODE_LIKE = re.compile(r"->|\s--\s|\s=\s|\||^[\w.\[\]]+\(")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    module: str
    qualname: str
    kind: str
    summary: str
    text: str


def load_stdlib_docs(max_pairs: int = DEFAULT_MAX_PAIRS) -> RetrievalDataset:
    """Build the standard-library docstring data set (see the module docstring for how).

    Args:
        max_pairs: the most query/document pairs to keep (at least 1). With the default and Python 3.11 the
            data set has 600 pairs, drawn from 775 unambiguous candidates.

    Returns:
        A ``RetrievalDataset`` named ``"python-stdlib-docs"``, split ``"test"``, with one query per document
        and one judgement (grade 1) per query.
    """
    if max_pairs < 1:
        raise EmbedlabError(f"max_pairs must be at least 1, got {max_pairs}")
    entries = _select(_unambiguous(sorted(_candidates(), key=lambda e: e.id)), max_pairs)
    corpus = tuple(
        Document(
            id=e.id,
            text=e.text,
            metadata={"module": e.module, "qualname": e.qualname, "kind": e.kind},
        )
        for e in entries
    )
    queries = tuple(Query(id=f"q:{e.id}", text=e.summary) for e in entries)
    qrels = {f"q:{e.id}": {e.id: 1} for e in entries}
    return RetrievalDataset(
        name=DATASET_NAME,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        source=f"python {platform.python_version()} stdlib",
        split="test",
    )


def split_summary(doc: str) -> tuple[str, str]:
    """Split a cleaned docstring into (summary, rest).

    The summary is the first sentence of the first paragraph with its whitespace collapsed to single spaces;
    the rest is everything after it (the first paragraph's remaining sentences, then the other paragraphs).
    A first paragraph made only of call signatures (``"chain(*iterables) --> chain object"``, common in C
    modules) is dropped first.

        >>> split_summary("Return the sum.  Floats are summed exactly.\\n\\nSee also math.fsum.")
        ('Return the sum.', 'Floats are summed exactly.\\n\\nSee also math.fsum.')
    """
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc.strip()) if p.strip()]
    if paragraphs and all(_SIGNATURE_LINE.match(line.strip()) for line in paragraphs[0].splitlines()):
        paragraphs = paragraphs[1:]
    if not paragraphs:
        return "", ""
    first = _WHITESPACE.sub(" ", paragraphs[0])
    end = _SENTENCE_END.search(first)
    if end is None:
        summary, remainder = first, ""
    else:
        summary, remainder = first[: end.end()], first[end.end() :].strip()
    rest = "\n\n".join(p for p in [remainder, *paragraphs[1:]] if p)
    return summary.strip(), rest


def _candidates() -> Iterator[_Entry]:
    for module_name in STDLIB_MODULES:
        module = importlib.import_module(module_name)
        accelerator = "_" + module.__name__.rsplit(".", 1)[-1]
        for name in sorted(_public_names(module)):
            obj = getattr(module, name, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            if getattr(obj, "__name__", None) != name or not _defined_in(obj, module.__name__, accelerator):
                continue  # an alias or a re-export
            kind = "class" if inspect.isclass(obj) else "function"
            entry = _entry(module_name, name, obj, kind)
            if entry is not None:
                yield entry
            if inspect.isclass(obj):
                yield from _methods(module_name, obj)


def _defined_in(obj: Any, module_name: str, accelerator: str) -> bool:
    home = getattr(obj, "__module__", None) or ""
    return home in (module_name, accelerator) or home.startswith(module_name + ".")


def _public_names(module: Any) -> Sequence[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return [n for n in names if not n.startswith("_")]


def _methods(module_name: str, cls: type) -> Iterator[_Entry]:
    for name in sorted(vars(cls)):
        if name.startswith("_"):
            continue
        attr = vars(cls)[name]
        if isinstance(attr, (classmethod, staticmethod)):
            attr = attr.__func__
        if not (inspect.isfunction(attr) or inspect.ismethoddescriptor(attr) or inspect.isbuiltin(attr)):
            continue
        if getattr(attr, "__name__", None) != name:
            continue  # an alias such as ``Path.__fspath__ = Path.__str__``
        entry = _entry(module_name, f"{cls.__name__}.{name}", attr, "method")
        if entry is not None:
            yield entry


def _entry(module_name: str, qualname: str, obj: Any, kind: str) -> _Entry | None:
    if not isinstance(getattr(obj, "__doc__", None), str):
        return None  # no docstring of its own (inspect.getdoc would borrow the parent's)
    doc = inspect.getdoc(obj)
    if not doc:
        return None
    summary, rest = split_summary(doc)
    if not summary or CODE_LIKE.search(summary) or len(rest) < MIN_DOC_CHARS:
        return None  # no summary, a summary that is code rather than prose, or too little left to retrieve
    if _normalise(summary) in _normalise(rest):
        return None  # the document would contain its own query
    ident = f"{module_name}.{qualname}"
    signature = f"{'class ' if kind == 'class' else ''}{ident}{_signature(obj)}"
    return _Entry(ident, module_name, qualname, kind, summary, f"{signature}\n\n{rest}")


def _signature(obj: Any) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return _ADDRESS.sub("", text)


def _normalise(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip().casefold()


def _unambiguous(entries: Sequence[_Entry]) -> list[_Entry]:
    counts = Counter(_normalise(e.summary) for e in entries)
    return [e for e in entries if counts[_normalise(e.summary)] == 1]


def _select(entries: Sequence[_Entry], max_pairs: int) -> list[_Entry]:
    n = len(entries)
    if n <= max_pairs:
        return list(entries)
    return [entries[i * n // max_pairs] for i in range(max_pairs)]
