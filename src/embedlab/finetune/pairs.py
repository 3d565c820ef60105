"""Training examples for fine-tuning, from whatever the user has.

Every source gives :class:`TrainPair` objects — a :class:`~embedlab.data.loaders.TrainingExample` (query,
positive, negatives, score) plus where it came from and which corpus documents are its positives, so hard
negative mining never picks a known positive:

* :func:`pairs_from_judgements` — a retrieval data set's judgements: one pair per (query, relevant document);
* :func:`pairs_from_file` — a pair or triplet file (JSONL/CSV/TSV, see :func:`~embedlab.data.loaders.load_pairs`);
* :func:`pairs_from_scored` — scored sentence pairs (STS-style) for the cosine-similarity and CoSENT losses;
* pseudo-queries made offline from the corpus (:data:`PSEUDO_QUERY_MAKERS`, :func:`pseudo_pairs`):
  :func:`title_pairs` (a document's title is the query, its body the positive), :func:`cloze_pairs` (inverse
  cloze: one sentence is the query, the rest of its passage the positive) and :func:`keyword_pairs` (a
  document's most distinctive words, by tf-idf over the corpus, as a keyword query — what people type into a
  search box, and the only kind that works for one-line documents such as shell commands or code) and
  :func:`api_doc_pairs` (for Python code: what the snippet's calls do, in their docstrings' words);
* optionally :func:`llm_pairs`: an OpenAI-compatible chat endpoint, given by URL, writes one question per
  document (off unless a URL is given; sent through httpx).

:class:`PairSet` counts examples by origin and keeps a few for the report.

Example::

    >>> pairs = title_pairs(dataset.corpus, limit=1000, seed=0)       # doctest: +SKIP
    >>> pairs[0].example.query, pairs[0].origin                        # doctest: +SKIP
    ('Cats purr when content', 'title')
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedlab.data.dataset import Document, RetrievalDataset, ScoredPairs
from embedlab.data.loaders import TrainingExample, load_training_pairs
from embedlab.errors import EmbedlabError

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
_MIN_QUERY_WORDS = 4


@dataclass(frozen=True)
class TrainPair:
    """One training example, its origin, and the corpus documents that are positives for its query."""

    example: TrainingExample
    origin: str
    query_id: str = ""
    positive_id: str = ""
    positive_ids: frozenset[str] = frozenset()

    def with_negatives(self, negatives: Sequence[str]) -> TrainPair:
        ex = self.example
        return TrainPair(
            example=TrainingExample(query=ex.query, positive=ex.positive, negatives=tuple(negatives), score=ex.score),
            origin=self.origin,
            query_id=self.query_id,
            positive_id=self.positive_id,
            positive_ids=self.positive_ids,
        )


@dataclass(frozen=True)
class PairSet:
    """The training examples of a run, with counts by origin and a few examples for the report."""

    pairs: tuple[TrainPair, ...]
    notes: tuple[str, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.origin for p in self.pairs))

    def examples(self, per_origin: int = 2) -> list[dict[str, Any]]:
        shown: Counter[str] = Counter()
        out = []
        for pair in self.pairs:
            if shown[pair.origin] < per_origin:
                shown[pair.origin] += 1
                ex = pair.example
                out.append(
                    {
                        "origin": pair.origin,
                        "query": ex.query,
                        "positive": ex.positive[:300],
                        "negatives": [n[:300] for n in ex.negatives],
                        "score": ex.score,
                    }
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": len(self.pairs),
            "by_origin": self.counts(),
            "examples": self.examples(),
            "notes": list(self.notes),
        }


def pairs_from_judgements(dataset: RetrievalDataset) -> list[TrainPair]:
    """One pair per (query, relevant document), in query order; the positive is the document's full text."""
    docs = dataset.documents_by_id
    out = []
    for query in dataset.queries:
        relevant = [d for d, grade in dataset.qrels.get(query.id, {}).items() if grade > 0 and d in docs]
        for doc_id in relevant:
            out.append(
                TrainPair(
                    example=TrainingExample(query=query.text, positive=docs[doc_id].full_text),
                    origin="judgements",
                    query_id=query.id,
                    positive_id=doc_id,
                    positive_ids=frozenset(relevant),
                )
            )
    return out


def pairs_from_file(path: str | os.PathLike[str]) -> list[TrainPair]:
    """Pairs or triplets from a JSONL/CSV/TSV file (``query``, ``positive``, optional ``negative``, ``score``)."""
    return [TrainPair(example=ex, origin="pairs-file") for ex in load_training_pairs(Path(path))]


def pairs_from_scored(pairs: ScoredPairs) -> list[TrainPair]:
    """Scored sentence pairs as examples with a score (for the cosine-similarity, CoSENT and contrastive losses)."""
    return [
        TrainPair(example=TrainingExample(query=p.text1, positive=p.text2, score=p.score), origin="scored")
        for p in pairs.pairs
    ]


def _sample(documents: Sequence[Document], limit: int, seed: int) -> list[Document]:
    chosen = list(documents)
    if len(chosen) > limit:
        chosen = random.Random(seed).sample(chosen, limit)
    return chosen


def title_pairs(corpus: Iterable[Document], *, limit: int, seed: int = 0) -> list[TrainPair]:
    """Title → body pairs for documents with a title of at least four words that differs from a file name."""
    usable = [
        d
        for d in corpus
        if d.title and d.text.strip() and len(d.title.split()) >= _MIN_QUERY_WORDS and d.title.strip() != d.text.strip()
    ]
    return [
        TrainPair(
            example=TrainingExample(query=d.title.strip(), positive=d.text.strip()),
            origin="title",
            positive_id=d.id,
            positive_ids=frozenset({d.id}),
        )
        for d in _sample(usable, limit, seed)
    ]


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage (a light rule: end punctuation followed by a capital, digit or bracket)."""
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]


def cloze_pairs(corpus: Iterable[Document], *, limit: int, seed: int = 0) -> list[TrainPair]:
    """Inverse cloze: one sentence (not the first) is the query, the passage without it the positive.

    Only passages of three or more sentences are used, and only sentences of at least four words.
    """
    rng = random.Random(seed)
    out = []
    documents = [d for d in corpus if len(split_sentences(d.text)) >= 3]
    for doc in _sample(documents, limit, seed):
        sentences = split_sentences(doc.text)
        choices = [i for i, s in enumerate(sentences) if len(s.split()) >= _MIN_QUERY_WORDS]
        if not choices:
            continue
        pick = rng.choice(choices)
        rest = " ".join(s for i, s in enumerate(sentences) if i != pick)
        positive = f"{doc.title} {rest}".strip() if doc.title else rest
        out.append(
            TrainPair(
                example=TrainingExample(query=sentences[pick], positive=positive),
                origin="cloze",
                positive_id=doc.id,
                positive_ids=frozenset({doc.id}),
            )
        )
    return out


_TERM = re.compile(r"[^\W_]{2,}")
# Code names are words run together: split camelCase where a lower-case letter meets a capitalised word
# (getElementById -> get Element By Id), not inside acronyms (mRNA, IgG, HTTPServer stay whole).
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z][a-z])")


def _terms(text: str, stopwords: frozenset[str]) -> list[str]:
    return [t for t in _TERM.findall(_CAMEL.sub(" ", text).lower()) if t not in stopwords]


def keyword_pairs(corpus: Iterable[Document], *, limit: int, seed: int = 0) -> list[TrainPair]:
    """A keyword query per document: 2–5 of its words with the highest tf-idf in the corpus, in text order.

    Documents with fewer than two distinct non-stop-words are skipped. The number of words is drawn per document
    (seeded), so queries of several lengths train.
    """
    import math

    from bm25s.stopwords import STOPWORDS_EN

    stopwords = frozenset(STOPWORDS_EN)
    documents = list(corpus)
    tokenised = [_terms(d.full_text, stopwords) for d in documents]
    frequency = Counter(t for terms in tokenised for t in set(terms))
    n = len(documents)
    rng = random.Random(seed)
    out = []
    usable = [d for d, terms in zip(documents, tokenised, strict=True) if len(set(terms)) >= 2]
    chosen = {id(d) for d in _sample(usable, limit, seed)}
    for doc, terms in zip(documents, tokenised, strict=True):
        if id(doc) not in chosen:
            continue
        counts = Counter(terms)
        weight = {t: c * math.log(1 + n / frequency[t]) for t, c in counts.items()}
        size = min(len(counts), rng.randint(2, 5))
        top = set(sorted(weight, key=lambda t: (-weight[t], t))[:size])
        seen: list[str] = []
        for term in terms:
            if term in top and term not in seen:
                seen.append(term)
        out.append(
            TrainPair(
                example=TrainingExample(query=" ".join(seen), positive=doc.full_text),
                origin="keywords",
                positive_id=doc.id,
                positive_ids=frozenset({doc.id}),
            )
        )
    return out


def api_doc_pairs(corpus: Iterable[Document], *, limit: int, seed: int = 0) -> list[TrainPair]:
    """For Python code: questions written from the docstrings of what a snippet calls, and its quoted names.

    ``bytes.fromhex('4a4b4c').decode('utf-8')`` -> "decode the bytes using the codec registered for encoding;
    create a bytes object from a string of hexadecimal numbers 'utf-8' '4a4b4c'" (:mod:`embedlab.finetune.api_docs`),
    and, where a snippet makes several documented calls, one question per call as well. Documents that are not
    Python, or call nothing documented, get none.
    """
    from embedlab.finetune.api_docs import snippet_questions

    documents = list(corpus)
    questions = {id(d): snippet_questions(d.text) for d in documents}
    return [
        TrainPair(
            example=TrainingExample(query=query, positive=doc.full_text),
            origin="api-docs",
            positive_id=doc.id,
            positive_ids=frozenset({doc.id}),
        )
        for doc in _sample([d for d in documents if questions[id(d)]], limit, seed)
        for query in questions[id(doc)]
    ]


PSEUDO_QUERY_MAKERS = {"title": title_pairs, "cloze": cloze_pairs, "keywords": keyword_pairs, "api-docs": api_doc_pairs}


def pseudo_pairs(corpus: Sequence[Document], kinds: Sequence[str], *, per_kind: int, seed: int = 0) -> list[TrainPair]:
    """Pseudo-query pairs of every kind in ``kinds`` (at most ``per_kind`` documents each), in that order."""
    unknown = [k for k in kinds if k not in PSEUDO_QUERY_MAKERS]
    if unknown:
        raise EmbedlabError(f"unknown pseudo-query kind(s) {unknown}: use {', '.join(PSEUDO_QUERY_MAKERS)}")
    return [pair for kind in kinds for pair in PSEUDO_QUERY_MAKERS[kind](corpus, limit=per_kind, seed=seed)]


LLM_PROMPT = (
    "Write one short search query that a person would type to find the passage below. "
    "Answer with the query only.\n\nPassage:\n{passage}"
)


def _chat_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def llm_pairs(
    corpus: Sequence[Document],
    *,
    url: str,
    model: str,
    limit: int,
    seed: int = 0,
    timeout: float = 60.0,
    api_key: str | None = None,
    max_passage_chars: int = 2000,
) -> list[TrainPair]:
    """One generated query per sampled document, from an OpenAI-compatible ``/chat/completions`` endpoint.

    ``url`` is the API base (``http://host:port/v1``) or the full ``.../chat/completions`` address. The key,
    when one is needed, comes from ``api_key`` or ``$EMBEDLAB_LLM_API_KEY``. An unreachable endpoint or an
    answer without ``choices[0].message.content`` is an :class:`EmbedlabError`.
    """
    import httpx

    key = api_key or os.environ.get("EMBEDLAB_LLM_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    endpoint = _chat_url(url)
    out = []
    with httpx.Client(timeout=timeout, headers=headers) as client:
        for doc in _sample(corpus, limit, seed):
            body = {
                "model": model,
                "temperature": 0,
                "messages": [{"role": "user", "content": LLM_PROMPT.format(passage=doc.full_text[:max_passage_chars])}],
            }
            try:
                response = client.post(endpoint, json=body)
                response.raise_for_status()
                content = response.json()["choices"][0]["message"]["content"]
            except httpx.HTTPError as exc:
                raise EmbedlabError(f"the query-writing endpoint {endpoint} failed: {exc}") from None
            except (KeyError, IndexError, TypeError, ValueError):
                raise EmbedlabError(
                    f"the query-writing endpoint {endpoint} did not answer like an OpenAI-compatible chat API "
                    "(no choices[0].message.content)"
                ) from None
            query = " ".join(str(content).strip().strip('"').split())
            if query:
                out.append(
                    TrainPair(
                        example=TrainingExample(query=query, positive=doc.full_text),
                        origin="llm",
                        positive_id=doc.id,
                        positive_ids=frozenset({doc.id}),
                    )
                )
    return out
