"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data sets in ``../shared/data`` (SciFact, STS Benchmark); skips when it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


# --- models, caches and small real data sets -------------------------------------------------------

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from embedlab.data.dataset import RetrievalDataset  # noqa: E402
from embedlab.models.catalog import ModelSpec  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def embedlab_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for the session (unpacked and distilled models, vectors), unless EMBEDLAB_CACHE names one."""
    given = os.environ.get("EMBEDLAB_CACHE")
    root = Path(given) if given else tmp_path_factory.mktemp("embedlab-cache")
    os.environ["EMBEDLAB_CACHE"] = str(root)
    yield root


@pytest.fixture(scope="session")
def scifact_test(shared_data: Path) -> RetrievalDataset:
    from embedlab.data.loaders import load_beir

    return load_beir(shared_data / "scifact", split="test")


@pytest.fixture(scope="session")
def scifact_small(scifact_test: RetrievalDataset) -> RetrievalDataset:
    """40 real SciFact test queries over 300 real abstracts: their relevant ones plus the first others."""
    queries = scifact_test.queries[:40]
    relevant = {d for q in queries for d in scifact_test.qrels[q.id]}
    others = [d for d in scifact_test.corpus if d.id not in relevant][: 300 - len(relevant)]
    corpus = tuple(d for d in scifact_test.corpus if d.id in relevant or d in others)
    return RetrievalDataset(
        name="scifact-small",
        corpus=corpus,
        queries=queries,
        qrels={q.id: dict(scifact_test.qrels[q.id]) for q in queries},
        source=scifact_test.source,
        split="test",
    )


class HashingEncoder:
    """A tiny deterministic bag-of-words encoder for plumbing tests (not a model of meaning)."""

    def __init__(self, dim: int = 64, name: str = "hashing"):
        self.spec = ModelSpec(
            name=name,
            model_id=name,
            kind="sentence-transformers",
            dim=dim,
            parameters=0,
            max_tokens=8,
            licence="MIT",
            size_mb=0.0,
        )
        self.calls: list[int] = []

    @property
    def dim(self) -> int:
        return self.spec.dim or 0

    @property
    def fingerprint(self) -> str:
        return f"{self.spec.name}-{self.dim}"

    def encode(
        self, texts: Sequence[str], *, role: str, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([len(re.findall(r"\w+", t)) for t in texts], dtype=np.int64)


@pytest.fixture
def hashing_encoder() -> HashingEncoder:
    return HashingEncoder()


@pytest.fixture(scope="session")
def vector_cache(embedlab_cache: Path):
    """One embedding cache for the session, so a real model encodes each test text once."""
    from embedlab.embedding import EmbeddingCache

    return EmbeddingCache(embedlab_cache)


# --- a model folder as `embedlab finetune` saves it (the real all-MiniLM-L6-v2, saved by sentence-transformers) ---


@pytest.fixture(scope="session")
def saved_minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged minilm-l6 saved with ``SentenceTransformer.save`` into a folder of its own (``minilm-ft``),
    as a fine-tuned model folder is; tests write the training record (``embedlab_training.json``) they need
    into it. The record does not change the folder's vector fingerprint, so its vectors are encoded once."""
    from sentence_transformers import SentenceTransformer

    from embedlab.models import packaged
    from embedlab.models.catalog import get_spec

    package = get_spec("minilm-l6").package
    assert package is not None
    folder = tmp_path_factory.mktemp("models") / "minilm-ft"
    SentenceTransformer(str(packaged.locate(package)), device="cpu").save(str(folder))
    return folder


# --- embedlab select: one real selection shared by tests/test_select.py and tests/test_report_html.py ---------


@pytest.fixture(scope="session")
def small_selection(scifact_small, vector_cache, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """``select`` on scifact_small with the real minilm-l6 (BM25 and the hybrid are added), written once.

    Returns ``(selection, out_folder)``; cost is measured on a small sample (8 documents, 4 queries).
    """
    from embedlab.select import SelectConfig, select

    out = tmp_path_factory.mktemp("select") / "out"
    config = SelectConfig(models=("minilm-l6",), cost_documents=8, cost_queries=4, resamples=1000)
    selection = select(scifact_small, config, cache=vector_cache, data_ref=str(shared_data / "scifact"), out=out)
    selection.write(out)
    return selection, out


# --- embedlab index / serve: the real minilm-l6 and one flat FAISS index of scifact_small ---------------------


@pytest.fixture(scope="session")
def minilm_encoder():
    """The packaged all-MiniLM-L6-v2, loaded once for the session."""
    from embedlab.models.loading import load_encoder

    return load_encoder("minilm-l6")


@pytest.fixture(scope="session")
def scifact_small_flat_index(scifact_small, minilm_encoder, vector_cache, tmp_path_factory: pytest.TempPathFactory):
    """An exact (flat) FAISS index of scifact_small built with minilm-l6; returns its folder."""
    from embedlab.index import IndexConfig, build_index

    out = tmp_path_factory.mktemp("index") / "scifact-small-flat"
    build_index(scifact_small, minilm_encoder, out=out, store="faiss", config=IndexConfig(), cache=vector_cache)
    return out


@pytest.fixture(scope="session", autouse=True)
def float32_backend_in_cli() -> None:
    """CLI commands default to ``--backend auto`` (a one-off calibration per model and machine); tests run PyTorch
    float32 unless they name a backend, so they stay deterministic and never calibrate by surprise."""
    os.environ.setdefault("EMBEDLAB_BACKEND", "torch")


@contextmanager
def serve_in_thread(application: Any) -> Iterator[str]:
    """Run an ASGI application with uvicorn on a free 127.0.0.1 port in a thread; yield its URL, stop it after."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", lifespan="off"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def live_server() -> Any:
    """:func:`serve_in_thread`, for tests: ``with live_server(app) as url: ...``."""
    return serve_in_thread


def _write_beir(folder: Path, dataset: RetrievalDataset) -> Path:
    folder.mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for doc in dataset.corpus:
            out.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for query in dataset.queries:
            out.write(json.dumps({"_id": query.id, "text": query.text}) + "\n")
    (folder / "qrels").mkdir()
    rows = [f"{q}\t{d}\t{g}" for q, docs in dataset.qrels.items() for d, g in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def write_beir() -> Any:
    """``write_beir(folder, dataset)``: the dataset written as a BEIR folder (corpus, queries, qrels/test.tsv)."""
    return _write_beir


def _beir_slice(source: Path, out: Path, *, train_queries: int, test_queries: int, documents: int) -> Path:
    """A real BEIR folder cut down: the first train and test queries, their relevant documents, then others."""

    def qrels(split: str) -> dict[str, dict[str, str]]:
        table: dict[str, dict[str, str]] = {}
        for line in (source / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
            query, doc, grade = line.split("\t")
            table.setdefault(query, {})[doc] = grade
        return table

    train, test = qrels("train"), qrels("test")
    train_ids, test_ids = list(train)[:train_queries], list(test)[:test_queries]
    needed = {d for q in train_ids for d in train[q]} | {d for q in test_ids for d in test[q]}
    docs = [json.loads(line) for line in (source / "corpus.jsonl").open()]
    kept = [d for d in docs if d["_id"] in needed]
    kept += [d for d in docs if d["_id"] not in needed][: documents - len(kept)]
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in kept))
    queries = {json.loads(line)["_id"]: line for line in (source / "queries.jsonl").open()}
    (out / "queries.jsonl").write_text("".join(queries[q] for q in train_ids + test_ids))
    for split, table, ids in (("train", train, train_ids), ("test", test, test_ids)):
        rows = "".join(f"{q}\t{d}\t{s}\n" for q in ids for d, s in table[q].items())
        (out / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return out


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Any:
    """``scifact_slice(train_queries, test_queries, documents)``: a BEIR folder of real SciFact, made once per shape."""
    made: dict[tuple[int, int, int], Path] = {}

    def make(train_queries: int, test_queries: int, documents: int) -> Path:
        shape = (train_queries, test_queries, documents)
        if shape not in made:
            out = tmp_path_factory.mktemp("scifact-slice") / "scifact"
            made[shape] = _beir_slice(
                shared_data / "scifact", out, train_queries=train_queries, test_queries=test_queries,
                documents=documents,
            )  # fmt: skip
        return made[shape]

    return make


@pytest.fixture(scope="session")
def small_beir(scifact_slice: Any) -> Path:
    """A BEIR folder of real SciFact: 24 train and 8 test queries over 80 abstracts."""
    return scifact_slice(24, 8, 80)


@pytest.fixture(scope="session")
def small_conala(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A BEIR folder of real CoNaLa (how-to intents -> one-line Python): 40 train and 12 test queries, 160 snippets."""
    out = tmp_path_factory.mktemp("conala-slice") / "conala"
    return _beir_slice(shared_data / "conala", out, train_queries=40, test_queries=12, documents=160)


class TrainingInterrupted(Exception):
    """Raised by :func:`interrupt_at_save`'s callback: a run killed mid-training."""


@pytest.fixture
def interrupt_at_save() -> tuple[type[Exception], Any]:
    """(error, callback): the trainer callback raises ``error`` at the first checkpoint saved from step 2 on."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= 2:
                raise TrainingInterrupted

    return TrainingInterrupted, StopAfter()
