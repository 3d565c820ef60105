"""Split discipline for fine-tuning: what may train, what selects the checkpoint, what measures the gain.

Four rules, each checked and counted in a :class:`LeakageReport`:

1. **Test queries never train.** A training query with the id *or the text* of a test query is removed from
   training; texts are compared as :func:`near_duplicate_key` folds them (case, punctuation and word order
   ignored), so "How do I sort a list?" and "how to sort a list" do not meet, but "Sort a list, in Python" and
   "in python: sort a list" do.
2. **Documents judged relevant to a test query are not training positives**, unless ``allow_test_positives``:
   a model that saw the test answers as positives would be measured on what it memorised. Such judgements are
   dropped from training (the documents stay in the corpus: they are still retrieved and still count).
3. **A dev split carved from the training queries** (never from the test ones) picks the checkpoint.
4. **The dev split mirrors the test shift**: judgements of the remaining training queries on documents relevant
   to a dev query are dropped as well, and training queries that near-duplicate a dev query are removed. A dev
   split that shares answers with training measures memory, not transfer: on SciFact such a dev split climbed
   67 → 82 nDCG@10 while the test queries moved 64.5 → 65.1. With the rule, dev is measured on documents the
   model was never shown as answers — the situation of the test queries and of the user's own.

:func:`holdout_split` makes a test split when the data has only one (a fraction of the queries, chosen by a
seeded shuffle, so two runs agree); :func:`make_splits` applies the rules and carves the dev split.

Example::

    >>> splits = make_splits(train, test, dev_fraction=0.1, dev_min=20, dev_max=100, seed=0)  # doctest: +SKIP
    >>> print(splits.leakage)                                                                 # doctest: +SKIP
    check                                   count
    --------------------------------------  -----
    training queries that are test queries      0
    ...
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from embedlab.data.dataset import RetrievalDataset
from embedlab.errors import EmbedlabError
from embedlab.files import format_table

_WORD = re.compile(r"\w+")


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def near_duplicate_key(text: str) -> str:
    """The words of ``text``, lower-cased, deduplicated and sorted: equal keys mark near-duplicate queries."""
    return " ".join(sorted(set(_WORD.findall(text.lower()))))


@dataclass(frozen=True)
class LeakageReport:
    """What the split rules found and removed; every count is of the data as given."""

    train_queries_given: int
    test_queries: int
    train_queries: int
    dev_queries: int
    same_id_as_test: tuple[str, ...]
    same_text_as_test: tuple[str, ...]
    test_relevant_documents: int
    train_judgements_on_test_documents: int
    dropped_judgements: int
    queries_left_without_positive: int
    allow_test_positives: bool
    dev_test_overlap: int
    train_test_overlap_after: int
    dev_relevant_documents: int = 0
    dropped_for_dev: int = 0
    near_duplicates_of_dev: int = 0

    @property
    def clean(self) -> bool:
        """True when nothing that trains or selects the checkpoint can see a test query or its answers."""
        leaked_positives = self.train_judgements_on_test_documents - self.dropped_judgements
        return self.train_test_overlap_after == 0 and self.dev_test_overlap == 0 and leaked_positives == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_queries_given": self.train_queries_given,
            "test_queries": self.test_queries,
            "train_queries": self.train_queries,
            "dev_queries": self.dev_queries,
            "same_id_as_test": list(self.same_id_as_test),
            "same_text_as_test": list(self.same_text_as_test),
            "test_relevant_documents": self.test_relevant_documents,
            "train_judgements_on_test_documents": self.train_judgements_on_test_documents,
            "dropped_judgements": self.dropped_judgements,
            "queries_left_without_positive": self.queries_left_without_positive,
            "allow_test_positives": self.allow_test_positives,
            "dev_test_overlap": self.dev_test_overlap,
            "train_test_overlap_after": self.train_test_overlap_after,
            "dev_relevant_documents": self.dev_relevant_documents,
            "dropped_for_dev": self.dropped_for_dev,
            "near_duplicates_of_dev": self.near_duplicates_of_dev,
            "clean": self.clean,
        }

    def rows(self) -> list[list[str]]:
        return [
            ["training queries given", str(self.train_queries_given)],
            ["training queries that are test queries (id), removed", str(len(self.same_id_as_test))],
            ["training queries with a test query's text, removed", str(len(self.same_text_as_test))],
            ["documents relevant to test queries", str(self.test_relevant_documents)],
            ["training judgements on those documents", str(self.train_judgements_on_test_documents)],
            [
                "  dropped" + (" (kept: --allow-test-positives)" if self.allow_test_positives else ""),
                str(self.dropped_judgements),
            ],
            ["training queries left without a positive, removed", str(self.queries_left_without_positive)],
            ["documents relevant to dev queries", str(self.dev_relevant_documents)],
            ["training judgements on those documents, dropped (dev mirrors test)", str(self.dropped_for_dev)],
            ["training queries that near-duplicate a dev query, removed", str(self.near_duplicates_of_dev)],
            ["training / dev / test queries", f"{self.train_queries} / {self.dev_queries} / {self.test_queries}"],
            ["overlap left (train-test, dev-test)", f"{self.train_test_overlap_after}, {self.dev_test_overlap}"],
        ]

    def __str__(self) -> str:
        verdict = "clean" if self.clean else "LEAKS: test data can reach training"
        return format_table(["leakage check", "count"], self.rows()) + f"\n({verdict})"


@dataclass(frozen=True)
class Splits:
    """Training, dev and test data sets over one corpus, and the report of what the rules removed."""

    train: RetrievalDataset
    dev: RetrievalDataset
    test: RetrievalDataset
    leakage: LeakageReport


def holdout_split(
    dataset: RetrievalDataset, *, fraction: float, seed: int
) -> tuple[RetrievalDataset, RetrievalDataset]:
    """(train, test): a seeded ``fraction`` of the judged queries (at least one) becomes the test split."""
    ids = [q.id for q in dataset.queries if q.id in dataset.qrels]
    if len(ids) < 2:
        raise EmbedlabError(
            f"{dataset.name}: {len(ids)} judged queries, too few to hold any out for testing "
            "(fix: give a separate test split, or more judged queries)"
        )
    shuffled = ids[:]
    random.Random(seed).shuffle(shuffled)
    n_test = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    test_ids = set(shuffled[:n_test])
    train = dataset.subset(query_ids=[i for i in ids if i not in test_ids])
    test = dataset.subset(query_ids=test_ids)
    return _renamed(train, "train"), _renamed(test, "test")


def _renamed(dataset: RetrievalDataset, split: str) -> RetrievalDataset:
    return RetrievalDataset(
        name=dataset.name,
        corpus=dataset.corpus,
        queries=dataset.queries,
        qrels={q: dict(d) for q, d in dataset.qrels.items()},
        source=dataset.source,
        split=split,
    )


def dev_size(n_train: int, *, fraction: float, low: int, high: int) -> int:
    """How many training queries the dev split takes: ``fraction`` of them within [low, high], at most half."""
    if fraction <= 0 or n_train < 4:
        return 0
    return max(0, min(n_train // 2, max(low, min(high, round(fraction * n_train)))))


def make_splits(
    train: RetrievalDataset,
    test: RetrievalDataset,
    *,
    dev_fraction: float = 0.2,
    dev_min: int = 20,
    dev_max: int = 100,
    allow_test_positives: bool = False,
    seed: int = 0,
    dev_only: bool = False,
    held_out: RetrievalDataset | None = None,
) -> Splits:
    """Apply the split rules (see the module docstring) and carve the dev split from the training queries.

    ``dev_only``: the judged training queries do not train (only queries made from the corpus do), so up to
    ``dev_max`` of them become the dev split and the training split may be empty. ``held_out``: a second data
    set measured after training (``--eval``) whose queries are treated like test queries and whose relevant
    documents, matched by text, like test documents.
    """
    held_queries = [*test.queries, *(held_out.queries if held_out is not None else ())]
    test_ids = {q.id for q in test.queries}
    test_texts = {near_duplicate_key(q.text) for q in held_queries}
    test_documents = {d for q in test.qrels for d, grade in test.qrels[q].items() if grade > 0}
    if held_out is not None:
        held_texts = {
            held_out.documents_by_id[d].full_text
            for q in held_out.qrels
            for d, grade in held_out.qrels[q].items()
            if grade > 0 and d in held_out.documents_by_id
        }
        test_documents |= {d.id for d in train.corpus if d.full_text in held_texts}
    same_id = tuple(q.id for q in train.queries if q.id in test_ids)
    same_text = tuple(q.id for q in train.queries if q.id not in test_ids and near_duplicate_key(q.text) in test_texts)
    removed = set(same_id) | set(same_text)

    qrels: dict[str, dict[str, int]] = {}
    on_test_documents = dropped = 0
    for query in train.queries:
        if query.id in removed:
            continue
        judged = {d: g for d, g in train.qrels.get(query.id, {}).items() if g > 0}
        hits = {d for d in judged if d in test_documents}
        on_test_documents += len(hits)
        if hits and not allow_test_positives:
            dropped += len(hits)
            judged = {d: g for d, g in judged.items() if d not in hits}
        if judged:
            qrels[query.id] = judged
    kept = [q for q in train.queries if q.id in qrels]
    without_positive = sum(1 for q in train.queries if q.id not in removed and q.id not in qrels)

    shuffled = [q.id for q in kept]
    random.Random(seed).shuffle(shuffled)
    n_dev = (
        min(len(kept), dev_max) if dev_only else dev_size(len(kept), fraction=dev_fraction, low=dev_min, high=dev_max)
    )
    dev_ids = set(shuffled[:n_dev])
    # Rule 4: nothing that trains may share an answer or a near-duplicate text with a dev query.
    dev_documents = {d for q in dev_ids for d in qrels[q]}
    dev_texts = {near_duplicate_key(q.text) for q in kept if q.id in dev_ids}
    dropped_for_dev = near_dev = 0
    train_ids = []
    for query in kept:
        if query.id in dev_ids:
            continue
        if near_duplicate_key(query.text) in dev_texts:
            near_dev += 1
            continue
        judged = qrels[query.id]
        shared = {d for d in judged if d in dev_documents}
        if shared:
            dropped_for_dev += len(shared)
            qrels[query.id] = judged = {d: g for d, g in judged.items() if d not in shared}
        if judged:
            train_ids.append(query.id)
    if dev_only:
        train_ids = []
    elif not train_ids:
        raise EmbedlabError(
            f"{train.name}: no training query is left after the split rules "
            f"({len(removed)} overlap the test queries, {without_positive} lost every positive, "
            f"{len(dev_ids)} became dev queries)"
        )
    base = RetrievalDataset(
        name=train.name, corpus=train.corpus, queries=tuple(kept), qrels=qrels, source=train.source, split="train"
    )
    train_set = base.subset(query_ids=train_ids)
    dev_set = _renamed(base.subset(query_ids=dev_ids), "dev")
    report = LeakageReport(
        train_queries_given=len(train.queries),
        test_queries=len(test.queries),
        train_queries=len(train_set.queries),
        dev_queries=len(dev_set.queries),
        same_id_as_test=same_id,
        same_text_as_test=same_text,
        test_relevant_documents=len(test_documents),
        train_judgements_on_test_documents=on_test_documents,
        dropped_judgements=dropped,
        queries_left_without_positive=without_positive,
        allow_test_positives=allow_test_positives,
        dev_test_overlap=len({q.id for q in dev_set.queries} & test_ids),
        train_test_overlap_after=len({q.id for q in train_set.queries} & test_ids),
        dev_relevant_documents=len(dev_documents),
        dropped_for_dev=dropped_for_dev,
        near_duplicates_of_dev=near_dev,
    )
    return Splits(train=train_set, dev=dev_set, test=test, leakage=report)
