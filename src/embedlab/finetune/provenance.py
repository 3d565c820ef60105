"""What a fine-tuned model trained on, so that no later evaluation mistakes memory for skill.

``embedlab finetune`` writes :data:`PROVENANCE_FILE` (``embedlab_training.json``) into the model folder it saves:
the base model, every data set it trained on (source and content hash), and hashes of every training query and
document. :class:`TrainingProvenance` is that record; :meth:`TrainingProvenance.overlap` checks it against a
data set about to be evaluated and returns a :class:`TrainingOverlap`: how many evaluated queries the model
trained on, and how many documents relevant to them it trained on (as positives or negatives). ``embedlab
compare`` and ``embedlab select`` call :func:`read_provenance` on every local model folder they are given and
mark (:data:`TRAINED_MARK`, ``†``) a model whose overlap is not clean: its score there measures recall of its
training data, not retrieval quality, so it is not a fair comparison with the others.

What is recorded, and why hashes:

- **queries**: SHA-256 of each training query's text folded by :func:`fold_query` (lower case, runs of white
  space made one space; the fold the split rules use) — judged, pseudo-, pair-file and dev queries alike (the dev
  queries chose the checkpoint, so they shaped the model too). Hashes, not texts: the record can travel with a
  model without shipping its training data.
- **documents**: the corpus id (when there is one) and the SHA-256 of the full text (title and text as an encoder
  sees them, :attr:`~embedlab.data.Document.full_text`) of every training positive and negative.
- **data**: each training data set's source (path or name) and content hash.

How a relevant document is matched (:meth:`TrainingProvenance.overlap`): a document id alone is ambiguous — ``d1``
in one data set is not ``d1`` in another — so an id counts only when the evaluated data set is one the model
trained on (its :attr:`~embedlab.data.RetrievalDataset.content_hash`, or the hash of its corpus,
:func:`corpus_hash`, is among ``data``'s content hashes: two splits of one BEIR folder share the corpus, so ids
mean the same documents). The text hash is the robust check and applies everywhere: the same text is the same
document under any id, in any data set. Together they also catch a document the trainer saw under another
rendering (e.g. without its title) when the corpus is the same.

Example::

    >>> record = TrainingProvenance.from_training(
    ...     base="minilm-l6",
    ...     data=[describe_data(train)],
    ...     queries=[q.text for q in train.queries],
    ...     documents=[(d.id, d.full_text) for d in positives],
    ... )                                                        # doctest: +SKIP
    >>> record.write(Path("runs/ft/model"))                      # doctest: +SKIP
    >>> read_provenance("runs/ft/model").overlap(test).describe()  # doctest: +SKIP
    'trained on 0 of 300 evaluated queries and 0 of their relevant documents'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedlab.data.dataset import RetrievalDataset
from embedlab.errors import DataError
from embedlab.files import write_json_atomic
from embedlab.finetune.splits import _fold
from embedlab.paths import PROVENANCE_FILE

TRAINED_MARK = "†"
"""Shown after a model's name in every table where it is evaluated on queries or relevant documents it trained on."""

PROVENANCE_SCHEMA_VERSION = 1
PROVENANCE_KIND = "embedlab-training"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def fold_query(text: str) -> str:
    """A query as the overlap checks compare it: lower case, white space runs made one space, ends trimmed.

    >>> fold_query("  What  causes\\tFever? ")
    'what causes fever?'
    """
    return _fold(text)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def query_hash(text: str) -> str:
    """The SHA-256 hex digest of a query's folded text (what :attr:`TrainingProvenance.query_sha256` holds)."""
    return _sha256(fold_query(text))


def document_hash(full_text: str) -> str:
    """The SHA-256 hex digest of a document's full text, exactly as given (no folding: documents are long and
    their exact text identifies them)."""
    return _sha256(full_text)


def corpus_hash(dataset: RetrievalDataset) -> str:
    """SHA-256 of a data set's corpus alone (ids, titles, texts): the same for every split of one BEIR folder."""
    digest = hashlib.sha256()
    for doc in dataset.corpus:
        digest.update(json.dumps(["d", doc.id, doc.title, doc.text]).encode())
    return digest.hexdigest()


def describe_data(dataset: RetrievalDataset, source: str | None = None) -> dict[str, str]:
    """The ``data`` entry of a data set the model trains on: its source, its content hash and its corpus hash
    (the corpus hash lets document ids match across splits of the same corpus)."""
    return {
        "source": source if source is not None else (dataset.source or dataset.name),
        "content_hash": dataset.content_hash,
        "corpus_hash": corpus_hash(dataset),
    }


@dataclass(frozen=True)
class TrainingOverlap:
    """How much of an evaluated data set a fine-tuned model trained on.

    ``queries``: evaluated queries whose folded text was a training query; ``relevant_documents``: distinct
    documents relevant (grade > 0) to the evaluated queries that were training documents; ``evaluated_queries``:
    how many queries were evaluated.
    """

    queries: int
    relevant_documents: int
    evaluated_queries: int

    @property
    def clean(self) -> bool:
        """True when the model trained on none of the evaluated queries and none of their relevant documents."""
        return self.queries == 0 and self.relevant_documents == 0

    def describe(self) -> str:
        """One line, e.g. ``trained on 12 of 300 evaluated queries and 40 of their relevant documents``."""
        return (
            f"trained on {self.queries} of {self.evaluated_queries} evaluated queries and "
            f"{self.relevant_documents} of their relevant documents"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "relevant_documents": self.relevant_documents,
            "evaluated_queries": self.evaluated_queries,
            "clean": self.clean,
            "description": self.describe(),
        }


@dataclass(frozen=True)
class TrainingProvenance:
    """What a fine-tuned model trained on (see the module docstring); written beside its weights."""

    base: str
    data: tuple[dict[str, str], ...]
    query_sha256: frozenset[str]
    document_ids: frozenset[str]
    document_sha256: frozenset[str]

    @classmethod
    def from_training(
        cls,
        *,
        base: str,
        data: Sequence[Mapping[str, str]],
        queries: Iterable[str],
        documents: Iterable[tuple[str, str]],
    ) -> TrainingProvenance:
        """The record of one training run.

        ``data``: one mapping per data set trained on, at least ``source`` and ``content_hash``
        (:func:`describe_data` makes one); ``queries``: the text of every training query (judged, pseudo,
        pair-file and dev); ``documents``: ``(id, full text)`` of every training positive and negative, id ``""``
        when the document has none (a pairs file).
        """
        ids: set[str] = set()
        texts: set[str] = set()
        for doc_id, text in documents:
            if doc_id:
                ids.add(str(doc_id))
            texts.add(document_hash(text))
        return cls(
            base=str(base),
            data=tuple({str(k): str(v) for k, v in entry.items()} for entry in data),
            query_sha256=frozenset(query_hash(q) for q in queries),
            document_ids=frozenset(ids),
            document_sha256=frozenset(texts),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": PROVENANCE_SCHEMA_VERSION,
            "kind": PROVENANCE_KIND,
            "base": self.base,
            "data": [dict(entry) for entry in self.data],
            "query_sha256": sorted(self.query_sha256),
            "document_ids": sorted(self.document_ids),
            "document_sha256": sorted(self.document_sha256),
        }

    def write(self, model_dir: Path) -> Path:
        """Write :data:`PROVENANCE_FILE` into ``model_dir`` (atomically; sorted lists, so equal records are equal
        files); returns its path."""
        return write_json_atomic(Path(model_dir) / PROVENANCE_FILE, self.to_dict())

    def _same_corpus(self, dataset: RetrievalDataset) -> bool:
        hashes = {entry.get(key) for entry in self.data for key in ("content_hash", "corpus_hash")}
        return dataset.content_hash in hashes or corpus_hash(dataset) in hashes

    def overlap(self, dataset: RetrievalDataset) -> TrainingOverlap:
        """How many of ``dataset``'s queries, and of the documents relevant to them, this model trained on."""
        queries = sum(1 for q in dataset.queries if query_hash(q.text) in self.query_sha256)
        evaluated = {q.id for q in dataset.queries}
        relevant = {d for q in evaluated for d, grade in dataset.qrels.get(q, {}).items() if grade > 0}
        by_id = self._same_corpus(dataset) if self.document_ids else False
        documents = dataset.documents_by_id

        def trained_on(doc_id: str) -> bool:
            if by_id and doc_id in self.document_ids:
                return True
            return doc_id in documents and document_hash(documents[doc_id].full_text) in self.document_sha256

        seen = sum(1 for doc_id in relevant if trained_on(doc_id))
        return TrainingOverlap(queries=queries, relevant_documents=seen, evaluated_queries=len(dataset.queries))


def _hashes(payload: Mapping[str, Any], key: str, path: Path) -> frozenset[str]:
    values = payload.get(key)
    if not isinstance(values, list) or not all(isinstance(v, str) and _SHA256.match(v) for v in values):
        raise _corrupt(path, f"'{key}' must be a list of SHA-256 hex digests")
    return frozenset(values)


def _corrupt(path: Path, problem: str) -> DataError:
    return DataError(
        path,
        f"not a valid embedlab training record: {problem}",
        fix=f"fine-tune the model again with embedlab finetune, or delete {PROVENANCE_FILE} if embedlab did not "
        "train this model",
    )


def read_provenance(model_dir: str | os.PathLike[str]) -> TrainingProvenance | None:
    """The record in ``model_dir``, or ``None`` when there is none (a catalog name, a hub id, or any model that
    embedlab did not fine-tune). A file that is there but unreadable is a :class:`~embedlab.errors.DataError`
    naming it and the fix."""
    path = Path(model_dir).expanduser() / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _corrupt(path, f"cannot read it ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(
            path,
            f"not valid JSON ({exc.msg}, column {exc.colno})",
            line=exc.lineno,
            fix=f"fine-tune the model again with embedlab finetune, or delete {PROVENANCE_FILE} if embedlab did "
            "not train this model",
        ) from exc
    if not isinstance(payload, dict) or payload.get("kind") != PROVENANCE_KIND:
        raise _corrupt(path, f'expected a JSON object with "kind": "{PROVENANCE_KIND}"')
    version = payload.get("schema_version")
    if version != PROVENANCE_SCHEMA_VERSION:
        raise DataError(
            path,
            f"training record schema_version {version!r}; this embedlab reads version {PROVENANCE_SCHEMA_VERSION}",
            fix="use the embedlab version that fine-tuned the model, or fine-tune it again",
        )
    base = payload.get("base")
    data = payload.get("data")
    ids = payload.get("document_ids")
    if not isinstance(base, str):
        raise _corrupt(path, "'base' must be a string")
    if not isinstance(data, list) or not all(
        isinstance(e, dict) and all(isinstance(v, str) for v in e.values()) for e in data
    ):
        raise _corrupt(path, "'data' must be a list of objects of strings (source, content_hash)")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _corrupt(path, "'document_ids' must be a list of strings")
    return TrainingProvenance(
        base=base,
        data=tuple(dict(e) for e in data),
        query_sha256=_hashes(payload, "query_sha256", path),
        document_ids=frozenset(ids),
        document_sha256=_hashes(payload, "document_sha256", path),
    )
