"""The two immutable data set types every stage works on.

:class:`RetrievalDataset` holds a corpus, queries and relevance judgements (qrels) for one split;
:class:`ScoredPairs` holds sentence pairs with a gold similarity score (STS). Both are frozen: a stage
that needs a different view (a subset, another split) builds a new object with :meth:`RetrievalDataset.subset`
or the loaders. Both carry a ``content_hash`` (SHA-256 over a canonical serialisation) that reports record, so
a figure can always be traced to the exact data it was measured on.

Example::

    >>> ds = RetrievalDataset(
    ...     name="toy",
    ...     corpus=(Document("d1", "Cats purr."), Document("d2", "Dogs bark.")),
    ...     queries=(Query("q1", "which animal purrs?"),),
    ...     qrels={"q1": {"d1": 1}},
    ... )
    >>> ds.stats()
    {'documents': 2, 'queries': 1, 'judgements': 1}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

Qrels = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class Document:
    """One retrievable unit: a document or a chunk of one. ``metadata`` holds e.g. the source path."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def full_text(self) -> str:
        """What an encoder sees: title and text joined the way BEIR does (title, a space, the text)."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    text: str


def update_content_hash(digest: Any, doc: Document) -> None:
    """Add one document to a :attr:`RetrievalDataset.content_hash` digest (documents in corpus order): a reader
    that streams a corpus computes the same hash without holding it."""
    digest.update(json.dumps(["d", doc.id, doc.title, doc.text]).encode())


def finish_content_hash(digest: Any, queries: Iterable[Query], qrels: Qrels) -> str:
    """The hash, once every document is in: the queries and judgements follow, as the dataset's own hash does."""
    for query in queries:
        digest.update(json.dumps(["q", query.id, query.text]).encode())
    for qid in sorted(qrels):
        digest.update(json.dumps(["r", qid, sorted(qrels[qid].items())]).encode())
    return str(digest.hexdigest())


def _freeze_qrels(qrels: Qrels) -> Mapping[str, Mapping[str, int]]:
    return MappingProxyType({q: MappingProxyType(dict(docs)) for q, docs in qrels.items()})


@dataclass(frozen=True)
class RetrievalDataset:
    """Corpus, queries and graded judgements (``qrels[query_id][doc_id] = grade``; grade > 0 is relevant).

    Only queries that have at least one judgement are evaluated; the loaders keep exactly those for the
    chosen split.
    """

    name: str
    corpus: tuple[Document, ...]
    queries: tuple[Query, ...]
    qrels: Qrels
    source: str = ""
    split: str = ""
    load_report: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """What the loader accepted but did not load as written: ``skipped_files`` (``[{"file", "problem"}]``) and
    ``duplicate_judgements`` (``{"rows", "conflicting", "kept"}``). Empty when everything loaded as written."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpus", tuple(self.corpus))
        object.__setattr__(self, "queries", tuple(self.queries))
        object.__setattr__(self, "qrels", _freeze_qrels(self.qrels))

    @cached_property
    def documents_by_id(self) -> Mapping[str, Document]:
        return MappingProxyType({d.id: d for d in self.corpus})

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of corpus, queries and judgements, independent of the name and the source path."""
        digest = hashlib.sha256()
        for doc in self.corpus:
            update_content_hash(digest, doc)
        return finish_content_hash(digest, self.queries, self.qrels)

    def stats(self) -> dict[str, int]:
        return {
            "documents": len(self.corpus),
            "queries": len(self.queries),
            "judgements": sum(len(docs) for docs in self.qrels.values()),
        }

    def subset(self, *, query_ids: Iterable[str] | None = None, max_queries: int | None = None) -> RetrievalDataset:
        """The same corpus with fewer queries (in their original order); judgements follow the queries."""
        keep = set(query_ids) if query_ids is not None else {q.id for q in self.queries}
        queries = [q for q in self.queries if q.id in keep][:max_queries]
        kept_ids = {q.id for q in queries}
        return RetrievalDataset(
            name=self.name,
            corpus=self.corpus,
            queries=tuple(queries),
            qrels={q: dict(d) for q, d in self.qrels.items() if q in kept_ids},
            source=self.source,
            split=self.split,
            load_report=self.load_report,
        )

    def describe(self) -> dict[str, Any]:
        """What a report records about the data: name, source, split, counts, content hash and, when the loader
        skipped or merged anything, its ``load_report``."""
        described = {
            "name": self.name,
            "source": self.source,
            "split": self.split,
            **self.stats(),
            "content_hash": self.content_hash,
        }
        if self.load_report:
            described["load_report"] = dict(self.load_report)
        return described


def load_notes(load_report: Mapping[str, Any]) -> list[str]:
    """A :attr:`RetrievalDataset.load_report` in words, one line per fact, for the Markdown and HTML reports."""
    notes = [f"skipped {item['file']}: {item['problem']}" for item in load_report.get("skipped_files", ())]
    duplicates = load_report.get("duplicate_judgements")
    if duplicates:
        notes.append(
            f"{duplicates['rows']} duplicate judgement(s), {duplicates['conflicting']} with another grade: kept the "
            f"{'highest' if duplicates['kept'] == 'max' else 'last'} grade"
        )
    return notes


@dataclass(frozen=True, slots=True)
class ScoredPair:
    text1: str
    text2: str
    score: float


@dataclass(frozen=True)
class ScoredPairs:
    """Sentence pairs with a gold similarity score (e.g. STS Benchmark, scored 0–5)."""

    name: str
    pairs: tuple[ScoredPair, ...]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(self.pairs))

    @cached_property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for pair in self.pairs:
            digest.update(json.dumps([pair.text1, pair.text2, pair.score]).encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "pairs": len(self.pairs), "content_hash": self.content_hash}
