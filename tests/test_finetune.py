"""Fine-tuning without training: splits and leakage, loss/data fit, hard-negative filtering, pseudo-queries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from embedlab.data.dataset import Document, Query, RetrievalDataset
from embedlab.data.loaders import TrainingExample
from embedlab.errors import EmbedlabError
from embedlab.finetune.config import FinetuneConfig
from embedlab.finetune.losses import get_loss, loss_data, matryoshka_dims
from embedlab.finetune.negatives import mine_hard_negatives
from embedlab.finetune.pairs import TrainPair, cloze_pairs, llm_pairs, pairs_from_judgements, title_pairs
from embedlab.finetune.splits import holdout_split, make_splits, near_duplicate_key

# --- splits ------------------------------------------------------------------------------------------

CORPUS = tuple(Document(f"d{i}", f"document number {i} about topic {i % 3}") for i in range(10))


def _dataset(queries: dict[str, str], qrels: dict[str, dict[str, int]], split: str) -> RetrievalDataset:
    return RetrievalDataset(
        name="toy",
        corpus=CORPUS,
        queries=tuple(Query(q, t) for q, t in queries.items()),
        qrels=qrels,
        split=split,
    )


def _leaky_pair() -> tuple[RetrievalDataset, RetrievalDataset]:
    test = _dataset({"t1": "What is topic one?", "t2": "Topic two please"}, {"t1": {"d1": 1}, "t2": {"d2": 1}}, "test")
    train = _dataset(
        {
            "t1": "same id as a test query",
            "a": "  what IS topic   one? ",  # the text of a test query, differently spaced and cased
            "b": "positive is a test document",
            "c": "one leaky, one clean positive",
            **{f"q{i}": f"clean query {i}" for i in range(8)},
        },
        {
            "t1": {"d5": 1},
            "a": {"d6": 1},
            "b": {"d1": 1},
            "c": {"d2": 1, "d7": 1},
            **{f"q{i}": {f"d{3 + i % 7}": 1} for i in range(8)},
        },
        "train",
    )
    return train, test


def test_split_rules_remove_test_queries_and_test_positives() -> None:
    train, test = _leaky_pair()
    splits = make_splits(train, test, dev_fraction=0.25, dev_min=2, dev_max=5, seed=0)
    report = splits.leakage
    assert report.same_id_as_test == ("t1",)
    assert report.same_text_as_test == ("a",)
    assert report.train_judgements_on_test_documents == 2  # b->d1, c->d2
    assert report.dropped_judgements == 2
    assert report.queries_left_without_positive == 1  # b lost its only positive
    assert report.clean
    used = {q.id for q in splits.train.queries} | {q.id for q in splits.dev.queries}
    assert used.isdisjoint({"t1", "a", "b"})
    dev_documents = {d for q in splits.dev.qrels for d in splits.dev.qrels[q]}
    if "c" in splits.dev.qrels:
        assert dict(splits.dev.qrels["c"]) == {"d7": 1}
    else:  # d2 dropped (a test answer); d7 too when a dev query shares it (rule 4), and then c has nothing left
        assert dict(splits.train.qrels.get("c", {})) == ({} if "d7" in dev_documents else {"d7": 1})
    assert {q.id for q in splits.dev.queries}.isdisjoint({q.id for q in splits.train.queries})
    positives = {d for q in splits.train.qrels for d in splits.train.qrels[q]}
    assert positives.isdisjoint({"d1", "d2"})
    assert "leakage check" in str(report) and "(clean)" in str(report)


@pytest.mark.parametrize("seed", range(6))
def test_dev_split_shares_no_answer_and_no_near_duplicate_with_training(seed: int) -> None:
    queries = {f"q{i}": f"how to sort list number {i}" for i in range(12)}
    queries["dup"] = "Number 0: how to SORT list?"  # the words of q0 in another order: a near-duplicate
    qrels = {f"q{i}": {f"d{i % 4}": 1} for i in range(12)} | {"dup": {"d9": 1}}
    train = _dataset(queries, qrels, "train")
    test = _dataset({"t": "an unrelated test query"}, {"t": {"d8": 1}}, "test")
    splits = make_splits(train, test, dev_fraction=0.25, dev_min=3, dev_max=3, seed=seed)
    dev_ids = {q.id for q in splits.dev.queries}
    dev_documents = {d for q in splits.dev.qrels for d in splits.dev.qrels[q]}
    train_documents = {d for q in splits.train.qrels for d in splits.train.qrels[q]}
    assert len(dev_ids) == 3
    assert dev_documents and train_documents.isdisjoint(dev_documents)
    assert splits.leakage.dropped_for_dev > 0
    assert splits.leakage.dev_relevant_documents == len(dev_documents)
    train_ids = {q.id for q in splits.train.queries}
    assert not ({"q0", "dup"} & dev_ids and {"q0", "dup"} & train_ids)  # near-duplicates never straddle
    if len({"q0", "dup"} & dev_ids) == 1:
        assert splits.leakage.near_duplicates_of_dev >= 1
    assert "dev mirrors test" in str(splits.leakage)


def test_near_duplicate_key_ignores_case_punctuation_and_order() -> None:
    assert near_duplicate_key("Sort a list, in Python!") == near_duplicate_key("in python: sort a LIST")
    assert near_duplicate_key("How do I sort a list?") != near_duplicate_key("how to sort a list")


def test_allowing_test_positives_is_reported_as_a_leak() -> None:
    train, test = _leaky_pair()
    splits = make_splits(train, test, dev_fraction=0, allow_test_positives=True, seed=0)
    assert splits.leakage.dropped_judgements == 0
    assert not splits.leakage.clean
    assert "LEAKS" in str(splits.leakage)
    assert splits.leakage.to_dict()["clean"] is False


def test_holdout_split_is_seeded_and_disjoint() -> None:
    dataset = _dataset({f"q{i}": f"query {i}" for i in range(10)}, {f"q{i}": {"d1": 1} for i in range(10)}, "all")
    train, test = holdout_split(dataset, fraction=0.2, seed=3)
    again, _ = holdout_split(dataset, fraction=0.2, seed=3)
    assert len(test.queries) == 2 and len(train.queries) == 8
    assert {q.id for q in train.queries}.isdisjoint({q.id for q in test.queries})
    assert [q.id for q in train.queries] == [q.id for q in again.queries]


# --- losses ------------------------------------------------------------------------------------------

PAIRS = [TrainingExample("q1", "p1"), TrainingExample("q2", "p2")]
SCORED = [TrainingExample("a", "b", score=4.0), TrainingExample("c", "d", score=1.0)]
WITH_NEGATIVES = [TrainingExample("q1", "p1", ("n1", "n2")), TrainingExample("q2", "p2", ("n3",))]


@pytest.mark.parametrize(
    ("loss", "examples", "needle"),
    [
        ("cosent", PAIRS, "needs a similarity score"),
        ("cosine", PAIRS, "needs a similarity score"),
        ("triplet", PAIRS, "needs a negative"),
        ("mnrl", SCORED, "scored pair"),
        ("contrastive", SCORED, "0/1 labels"),
        ("online-contrastive", PAIRS, "labelled 0/1"),
    ],
)
def test_data_that_does_not_fit_the_loss_is_refused(loss: str, examples: list[TrainingExample], needle: str) -> None:
    with pytest.raises(EmbedlabError, match=needle):
        loss_data(loss, examples)


def test_loss_columns() -> None:
    mnrl = loss_data("mnrl", WITH_NEGATIVES)
    assert list(mnrl.columns) == ["anchor", "positive", "negative_1"]  # the fewest negatives any example has
    assert mnrl.notes
    cosent = loss_data("matryoshka:cosent", SCORED)
    assert cosent.columns["score"] == [1.0, 0.25]  # 0–5 style scores rescaled to [0, 1]
    labelled = loss_data("contrastive", WITH_NEGATIVES)
    assert labelled.columns["label"] == [1, 0, 0, 1, 0]
    assert get_loss("matryoshka:mnrl").in_batch_negatives
    assert matryoshka_dims(384) == [384, 192, 96, 48]
    with pytest.raises(EmbedlabError, match="did you mean mnrl"):
        get_loss("mnlr")


def test_config_is_validated_once() -> None:
    with pytest.raises(EmbedlabError, match="rank_window"):
        FinetuneConfig.create(rank_window=(50, 10))
    with pytest.raises(EmbedlabError, match="learning_rat: Extra inputs"):
        FinetuneConfig.create(learning_rat=1e-5)
    config = FinetuneConfig.create(epochs=1)
    assert config.fingerprint != FinetuneConfig().fingerprint


# --- hard negatives ----------------------------------------------------------------------------------


def test_mining_drops_likely_false_negatives(hashing_encoder: Any) -> None:
    query = "aspirin lowers the risk of heart attack in adults"
    corpus = (
        Document("pos", "aspirin lowers the risk of heart attack in adults over fifty"),
        # An unjudged near-duplicate of the answer: the miner must not use it as a negative.
        Document("dup", "aspirin lowers the risk of heart attack in adults over sixty"),
        Document("near", "aspirin and the heart in older patients"),
        *(Document(f"o{i}", f"unrelated text about rivers mountains {i} weather") for i in range(6)),
    )
    pair = TrainPair(TrainingExample(query, corpus[0].full_text), "judgements", "q", "pos", frozenset({"pos"}))
    mined = mine_hard_negatives([pair], corpus, n=1, encoder=hashing_encoder, rank_window=(0, 9), relative_margin=0.05)
    negatives = mined.pairs[0].example.negatives
    assert negatives == (corpus[2].full_text,)
    assert [s.candidate_id for s in mined.report.suspects] == ["dup"]
    assert mined.report.suspects[0].score > 0.95 * mined.report.suspects[0].positive_score
    assert pair.example.negatives == ()  # the input is not modified
    strict = mine_hard_negatives([pair], corpus, n=1, encoder=hashing_encoder, rank_window=(0, 9), max_score=0.3)
    assert "near" in {s.candidate_id for s in strict.report.suspects}
    assert strict.report.to_dict()["scores"]["dropped"]["count"] >= 2


# --- pseudo-queries ----------------------------------------------------------------------------------


def test_pseudo_queries_from_real_abstracts(scifact_small: RetrievalDataset) -> None:
    titles = title_pairs(scifact_small.corpus, limit=20, seed=0)
    cloze = cloze_pairs(scifact_small.corpus, limit=20, seed=0)
    assert len(titles) == 20 and len(cloze) >= 15
    docs = scifact_small.documents_by_id
    for pair in titles:
        assert pair.example.query == docs[pair.positive_id].title.strip()
        assert pair.example.query not in pair.example.positive
    for pair in cloze:
        assert pair.example.query in docs[pair.positive_id].text.replace("\n", " ") or len(pair.example.query) > 10
        assert pair.example.query not in pair.example.positive  # the sentence is taken out of its passage
    judged = pairs_from_judgements(scifact_small)
    assert len(judged) == sum(len(d) for d in scifact_small.qrels.values())


def test_a_folder_without_queries_gets_pseudo_max_queries_of_each_kind(
    scifact_small: RetrievalDataset, tmp_path: Path
) -> None:
    """``pseudo_max`` is per kind on every path: 6 documents of each of two kinds, not 6 shared between them."""
    from embedlab.finetune.run import load_finetune_data

    folder = tmp_path / "abstracts"
    folder.mkdir()
    for doc in scifact_small.corpus[:30]:
        page = f"<html><head><title>{doc.title}</title></head><body><p>{doc.text}</p></body></html>"
        (folder / f"{doc.id}.html").write_text(page, encoding="utf-8")
    config = FinetuneConfig.create(pseudo_queries=("title", "cloze"), pseudo_max=6)
    loaded = load_finetune_data(folder, config)
    made = [p.origin for p in loaded.pseudo]
    assert made.count("title") == 6 and made.count("cloze") == 6
    assert len(loaded.train.queries) + len(loaded.test.queries) == 12


@pytest.fixture
def chat_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append({"path": self.path, "body": body})
            passage = body["messages"][-1]["content"].split("Passage:\n", 1)[1]
            answer = {"choices": [{"message": {"role": "assistant", "content": f'"what about {passage.split()[0]}?"'}}]}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", received
    server.shutdown()
    server.server_close()


def test_llm_pseudo_queries_from_an_openai_compatible_endpoint(
    chat_server: tuple[str, list[dict[str, Any]]], scifact_small: RetrievalDataset
) -> None:
    url, received = chat_server
    pairs = llm_pairs(scifact_small.corpus, url=url, model="tiny", limit=3, seed=0)
    assert len(pairs) == 3 and len(received) == 3
    assert all(r["path"] == "/v1/chat/completions" and r["body"]["model"] == "tiny" for r in received)
    docs = scifact_small.documents_by_id
    for pair in pairs:
        assert pair.origin == "llm"
        assert pair.example.query == f"what about {docs[pair.positive_id].full_text.split()[0]}?"


def test_unreachable_llm_endpoint_is_a_user_error(scifact_small: RetrievalDataset) -> None:
    with pytest.raises(EmbedlabError, match="endpoint"):
        llm_pairs(scifact_small.corpus, url="http://127.0.0.1:9/v1", model="x", limit=1, timeout=2)


# --- CLI ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--loss", "mnlr"], "did you mean mnrl"),
        (["--rank-window", "50-10"], "rank_window"),
        (["--data", "/no/such/folder"], "no such file or folder"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Any, shared_data: Any, extra: list[str], needle: str) -> None:
    from typer.testing import CliRunner

    from embedlab.cli import app

    args = ["finetune", "--data", str(shared_data / "scifact"), "--out", str(tmp_path), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.startswith("error:") and needle in result.output
    assert "Traceback" not in result.output


# --- corpus queries and teachers -------------------------------------------------------------------


def test_keyword_queries_are_a_documents_most_distinctive_words_in_text_order() -> None:
    from embedlab.data.dataset import Document
    from embedlab.finetune.pairs import keyword_pairs, pseudo_pairs

    corpus = [
        Document("d1", "The kinase phosphorylates the receptor; the receptor binds kinase inhibitors."),
        Document("d2", "The cat sat on the mat."),
        Document("d3", "The dog sat on the mat."),
        Document("d4", "the the the"),
    ]
    pairs = keyword_pairs(corpus, limit=10, seed=0)
    assert {p.positive_id for p in pairs} == {"d1", "d2", "d3"}  # d4 has no content word
    by_id = {p.positive_id: p.example.query.split() for p in pairs}
    assert by_id["d2"][0] == "cat" and "the" not in by_id["d2"]  # the rarest word ranks first, stop words never
    words = by_id["d1"]
    assert 2 <= len(words) <= 5 and len(set(words)) == len(words)
    text = corpus[0].text.lower()
    assert [text.index(w) for w in words] == sorted(text.index(w) for w in words)  # in the order of the text
    assert keyword_pairs(corpus, limit=10, seed=0) == pairs
    assert [p.origin for p in pseudo_pairs(corpus, ["keywords"], per_kind=2, seed=0)] == ["keywords"] * 2
    with pytest.raises(EmbedlabError, match="unknown pseudo-query"):
        pseudo_pairs(corpus, ["summaries"], per_kind=2)


def test_keyword_queries_split_code_names_but_not_acronyms() -> None:
    from embedlab.data.dataset import Document
    from embedlab.finetune.pairs import keyword_pairs

    corpus = [
        Document("c1", "driver.findElementByXpath(xpathQuery)"),
        Document("c2", "mRNA of IgG"),
        Document("c3", "x = 1"),
    ]
    queries = {p.positive_id: p.example.query.split() for p in keyword_pairs(corpus, limit=10, seed=0)}
    assert set(queries) == {"c1", "c2"}  # one letter and a digit: no query
    assert set(queries["c1"]) <= {"driver", "find", "element", "by", "xpath", "query"}  # no "findelementbyxpath"
    assert len(queries["c1"]) >= 2
    assert sorted(queries["c2"]) == ["igg", "mrna"]  # acronyms stay whole


def test_teachers_score_relevant_documents_higher_and_margins_fit_the_loss(scifact_small: RetrievalDataset) -> None:
    import numpy as np

    from embedlab.finetune.losses import get_loss
    from embedlab.finetune.teacher import (
        BM25Teacher,
        HybridTeacher,
        LabelledTriples,
        MarginExample,
        load_teacher,
        margin_loss_data,
    )

    corpus = scifact_small.corpus
    row_of = {d.id: i for i, d in enumerate(corpus)}
    queries = [q for q in scifact_small.queries if q.id in scifact_small.qrels][:20]
    relevant = np.asarray([[row_of[next(iter(scifact_small.qrels[q.id]))]] for q in queries])
    others = np.asarray([[(int(r[0]) + 37) % len(corpus)] for r in relevant])
    rows = np.concatenate([relevant, others], axis=1)
    texts = [q.text for q in queries]
    lexical = BM25Teacher(corpus)
    dense = load_teacher("minilm-l6", corpus, backend=None)
    hybrid = load_teacher("hybrid:minilm-l6", corpus, backend=None)
    assert isinstance(hybrid, HybridTeacher) and hybrid.name == "hybrid:minilm-l6"
    for teacher in (lexical, dense, hybrid):
        scores = teacher.score(texts, rows)
        assert scores.shape == (20, 2)
        assert (scores[:, 0] > scores[:, 1]).mean() >= 0.8, teacher.name  # real claims, their cited abstracts
    bm25 = lexical.score(texts, rows)
    assert bm25.max() <= 1.0 + 1e-6 and bm25.min() >= 0
    assert np.allclose(hybrid.score(texts, rows), 0.5 * (dense.score(texts, rows) + bm25), atol=1e-5)
    # `auto` is judged on a sample of the corpus the teacher scores, the one `select` judges on: the same backend,
    # so select's cached vectors are found
    from embedlab.finetune.teacher import DenseTeacher
    from embedlab.models.backends.texts import corpus_sample

    sample = corpus_sample(d.full_text for d in corpus)
    assert isinstance(dense, DenseTeacher) and sample is not None
    fixed = getattr(dense.encoder, "calibration_sample", None)
    assert fixed is not None and fixed.digest == sample.digest

    triples = LabelledTriples(
        teacher="t",
        examples=(MarginExample("q", "p", ("n1", "n2"), (0.3, 0.1), "keywords"),) * 3,
        positive_scores={},
        negative_scores={},
        inverted=0,
        cached=False,
        seconds=0.0,
    )
    data = margin_loss_data(triples)
    assert list(data.columns) == ["query", "positive", "negative_1", "negative_2", "label"]
    assert data.columns["label"][0] == [0.3, 0.1] and data.texts_per_row == 4
    assert get_loss("margin-mse").data == "margins"
    with pytest.raises(EmbedlabError, match="teacher"):
        loss_data("margin-mse", PAIRS)


def test_teacher_from_a_select_report_names_the_hybrids_dense_part(tmp_path: Path) -> None:
    from embedlab.finetune.teacher import teacher_from_report
    from embedlab.report import add_section

    assert teacher_from_report(tmp_path) is None
    board = {"best": "hybrid", "models": [{"name": "hybrid"}, {"name": "bm25"}, {"name": "mpnet-base"}]}
    add_section(tmp_path, "leaderboard", board, "board", "<p>board</p>")
    assert teacher_from_report(tmp_path) == "hybrid:mpnet-base"
    add_section(tmp_path, "leaderboard", {"best": "bm25", "models": []}, "board", "<p>board</p>")
    assert teacher_from_report(tmp_path) == "bm25"


def test_corpus_training_needs_a_teacher() -> None:
    with pytest.raises(EmbedlabError, match="teacher"):
        FinetuneConfig.create(train_queries="corpus")


def test_teacher_advice_names_a_teacher_well_ahead_of_the_delivered_model() -> None:
    """The figures of a real SciFact run (README): teacher 74.72 on dev, base 67.43, the candidate 70.52 rejected."""
    from embedlab.finetune.run import teacher_advice

    own = {"teacher_ndcg@10": 0.7472, "base_ndcg@10": 0.6743, "pool": 10, "queries": 55}

    def record(tuned: float, significant: bool, base: float = 0.6743) -> dict[str, Any]:
        decision = {"base_ndcg@10": base, "tuned_ndcg@10": tuned, "significant": significant, "p_value": 0.3}
        return {"teacher": {"name": "hybrid:mpnet-base", "dev": own}, "dev_decision": decision}

    rejected = teacher_advice(record(0.7052, False), "../shared/data/scifact")
    assert rejected is not None
    assert "74.72" in rejected and "7.29 above the base model" in rejected and "(67.43)" in rejected
    assert "embedlab index --model hybrid:mpnet-base --data ../shared/data/scifact" in rejected
    kept = teacher_advice(record(0.7201, True), "../shared/data/scifact")
    assert kept is not None and "2.71 above the fine-tuned model" in kept
    assert teacher_advice(record(0.7401, True), "d") is None  # within a point of the teacher: nothing to say
    assert teacher_advice(record(0.7052, False, base=0.6650), "d") is None  # measured another way: no comparison
    assert teacher_advice({"teacher": {"name": "bm25"}, "dev_decision": None}, "d") is None  # no teacher dev score
    no_decision = teacher_advice({"teacher": {"name": "bm25", "dev": own}, "dev_decision": None}, "d")
    assert no_decision is not None and "above the base model" in no_decision  # the base was kept before any gate
    assert teacher_advice({"teacher": {"name": "bm25", "dev": own}, "dev_from_corpus_queries": "held out"}, "d") is None
