"""Scale-out on a real Ray cluster on loopback (a head and a worker node, one CPU each, started here).

Every test uses the packaged all-MiniLM-L6-v2 on the ``torch`` backend (a text gets the same vector in any batch)
and a small real SciFact slice, so Ray's vectors must equal the local path's to float tolerance.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.data.dataset import RetrievalDataset
from embedlab.embedding import EmbeddingCache
from embedlab.scale import embed_dataset, get_engine
from embedlab.scale.shards import read_vectors

ray = pytest.importorskip("ray")

MODEL = "minilm-l6"
DOCS, QUERIES = 64, 8
runner = CliRunner()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A two-node Ray cluster on loopback; this process is connected to it as the driver."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def scifact_tiny(scifact_test: RetrievalDataset) -> RetrievalDataset:
    """8 real SciFact test queries over 64 real abstracts: their relevant ones plus the first others."""
    queries = scifact_test.queries[:QUERIES]
    relevant = {d for q in queries for d in scifact_test.qrels[q.id]}
    others = [d for d in scifact_test.corpus if d.id not in relevant][: DOCS - len(relevant)]
    corpus = tuple(d for d in scifact_test.corpus if d.id in relevant or d in others)
    assert len(corpus) == DOCS
    return RetrievalDataset(
        name="scifact-tiny",
        corpus=corpus,
        queries=queries,
        qrels={q.id: dict(scifact_test.qrels[q.id]) for q in queries},
        source=scifact_test.source,
        split="test",
    )


@pytest.fixture(scope="module")
def tiny_folder(scifact_tiny: RetrievalDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The slice as a BEIR folder, for the CLI and the driver subprocess."""
    folder = tmp_path_factory.mktemp("scifact-tiny")
    with (folder / "corpus.jsonl").open("w") as out:
        for d in scifact_tiny.corpus:
            out.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for q in scifact_tiny.queries:
            out.write(json.dumps({"_id": q.id, "text": q.text}) + "\n")
    (folder / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{d}\t{g}" for q, docs in scifact_tiny.qrels.items() for d, g in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def local_run(scifact_tiny: RetrievalDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same slice embedded by the local engine, no cache."""
    out = tmp_path_factory.mktemp("embed-local")
    embed_dataset(scifact_tiny, [MODEL], out=out, engine=get_engine("local"), backend="torch", shard_size=16)
    return out


def _assert_same_vectors(out: Path, reference: Path, dataset: RetrievalDataset) -> None:
    for role, expected in (("document", [d.id for d in dataset.corpus]), ("query", [q.id for q in dataset.queries])):
        ids, vectors = read_vectors(out, model=MODEL, role=role)
        ref_ids, ref_vectors = read_vectors(reference, model=MODEL, role=role)
        assert ids == expected == ref_ids  # every text exactly once, in order
        np.testing.assert_allclose(vectors, ref_vectors, atol=1e-5)


def _parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _started_here(pid: int) -> bool:
    """True when this test process is an ancestor of ``pid``: never touch another user's Ray."""
    for _ in range(16):
        pid = _parent(pid)
        if pid == os.getpid():
            return True
        if pid <= 1:
            return False
    return False


def _worker_pids(marker: str = "MapWorker") -> list[int]:
    """Ray actor processes of Ray Data's pool in this test's cluster (their process title names the operator)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "EncodeActor" in cmdline and _started_here(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _shards(out: Path) -> list[Path]:
    return sorted((out / MODEL / "documents").glob("shard-*.parquet"))


@pytest.mark.slow
def test_ray_vectors_equal_local_and_fill_the_cache(
    ray_cluster: str, scifact_tiny: RetrievalDataset, local_run: Path, tmp_path: Path, monkeypatch
) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    engine = get_engine("ray", address=ray_cluster)
    run = embed_dataset(
        scifact_tiny, [MODEL], out=tmp_path / "ray", engine=engine, backend="torch", cache=cache, shard_size=16
    )
    _assert_same_vectors(tmp_path / "ray", local_run, scifact_tiny)
    described = run.to_dict()
    assert described["engine"]["actors"] == 2  # one per node
    assert described["engine"]["duplicates_dropped"] == 0
    model = described["models"][0]
    assert model["backends"] == ["torch"] and model["documents"] == len(scifact_tiny.corpus)
    assert model["shards_written"] == DOCS // 16 + 1 and model["shards_reused"] == 0  # shards of 16
    assert json.loads((tmp_path / "ray" / "embed.json").read_text())["data"]["content_hash"] == (
        scifact_tiny.content_hash
    )

    # The local path on the same data now reads every vector from the cache: it must not encode one text.
    from embedlab.evaluate.compare import compare
    from embedlab.models.encoders import SentenceTransformerEncoder

    def refuse(*args, **kwargs):
        raise AssertionError("encoded a text that the Ray run had put in the cache")

    with monkeypatch.context() as patch:
        patch.setattr(SentenceTransformerEncoder, "encode", refuse)
        from_ray = compare(scifact_tiny, [MODEL], k_values=(10,), cache=cache)
    local = compare(scifact_tiny, [MODEL], k_values=(10,), cache=EmbeddingCache(tmp_path / "fresh"))
    assert from_ray.results[0].scores.per_query == local.results[0].scores.per_query
    assert from_ray.results[0].mean("ndcg@10") == local.results[0].mean("ndcg@10") > 0.3


@pytest.mark.slow
def test_a_killed_worker_leaves_every_document_embedded_exactly_once(
    ray_cluster: str, scifact_tiny: RetrievalDataset, local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    engine = get_engine("ray", address=ray_cluster)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            # 2 texts per encoder call, 16 per actor call: several calls, so the kill lands mid-run.
            embed_dataset(scifact_tiny, [MODEL], out=out, engine=engine, backend="torch", shard_size=8, batch_size=2)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while thread.is_alive() and time.monotonic() < deadline and killed is None:
        pids = _worker_pids()
        if pids and _shards(out):
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(timeout=240)
    assert killed is not None, "the run ended before a worker could be killed"
    assert not thread.is_alive() and not failures, failures
    _assert_same_vectors(out, local_run, scifact_tiny)
    model = json.loads((out / "embed.json").read_text())["models"][0]
    assert model["shards_written"] == DOCS // 8 + QUERIES // 8  # shards of 8


def test_the_scan_of_a_beir_corpus_is_the_loaders_view(tiny_folder: Path, scifact_tiny: RetrievalDataset) -> None:
    """What the driver keeps of a corpus Ray Data reads: the loader's hash, queries and auto sample, no texts."""
    from embedlab.embedding import text_key
    from embedlab.models.backends import corpus_sample
    from embedlab.scale.corpus import scan_beir, shard_digest

    corpus = scan_beir(tiny_folder, "test", shard_size=16)
    assert corpus is not None and corpus.documents == DOCS and corpus.id_type == "string"
    assert corpus.content_hash == scifact_tiny.content_hash and corpus.queries == scifact_tiny.queries
    assert corpus.sample == corpus_sample(d.full_text for d in scifact_tiny.corpus)
    keys = [text_key(d.full_text, "document") for d in scifact_tiny.corpus]
    assert corpus.shard_digests == tuple(shard_digest(keys[i : i + 16]) for i in range(0, DOCS, 16))

    mixed = tiny_folder.parent / "mixed-ids"
    mixed.mkdir(exist_ok=True)
    for name in ("queries.jsonl", "qrels"):
        target = mixed / name
        if not target.exists():
            target.symlink_to(tiny_folder / name)
    lines = (tiny_folder / "corpus.jsonl").read_text().splitlines()
    lines.append(json.dumps({"_id": 7, "text": "an integer id among string ids"}))
    (mixed / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    assert scan_beir(mixed, "test", shard_size=16) is None  # Ray Data would read _id as one type: the driver reads

    from embedlab.data.loaders import load_beir
    from embedlab.errors import DataError

    repeated = tiny_folder.parent / "repeated-ids"  # refused by the scan with the loader's own error
    repeated.mkdir()
    for name in ("queries.jsonl", "qrels"):
        (repeated / name).symlink_to(tiny_folder / name)
    first = json.loads(lines[0])
    (repeated / "corpus.jsonl").write_text("\n".join([*lines[:-1], json.dumps({**first, "text": "again"})]) + "\n")
    with pytest.raises(DataError) as scanned:
        scan_beir(repeated, "test", shard_size=16)
    with pytest.raises(DataError) as loaded:
        load_beir(repeated, "test")
    assert str(scanned.value) == str(loaded.value) and f"duplicate _id '{first['_id']}'" in str(scanned.value)


@pytest.mark.slow
def test_ray_data_reads_a_beir_corpus_and_the_results_equal_local(
    ray_cluster: str, tiny_folder: Path, scifact_tiny: RetrievalDataset, local_run: Path, tmp_path: Path, monkeypatch
) -> None:
    import embedlab.cli.embed as embed_cli
    import embedlab.data.loaders as loaders

    def refuse(*args, **kwargs):
        raise AssertionError("the driver loaded the corpus")

    monkeypatch.setattr(embed_cli, "load_retrieval_data", refuse)
    monkeypatch.setattr(loaders, "_read_beir_corpus", refuse)
    # Small blocks (about 11 documents each here): the rows are numbered across blocks that straddle shards.
    monkeypatch.setattr(ray.data.DataContext.get_current(), "target_max_block_size", 16 * 1024)
    out = tmp_path / "ray"
    args = ["embed", "--data", str(tiny_folder), "--models", MODEL, "--out", str(out), "--engine", "ray"]
    args += ["--ray-address", ray_cluster, "--backend", "torch", "--shard-size", "16"]
    args += ["--cache", str(tmp_path / "cache")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    _assert_same_vectors(out, local_run, scifact_tiny)
    for role in ("documents", "queries"):  # the same shards, row for row
        names = sorted(p.name for p in (out / MODEL / role).glob("shard-*.parquet"))
        assert names == sorted(p.name for p in (local_run / MODEL / role).glob("shard-*.parquet"))
    manifest = json.loads((out / "embed.json").read_text())
    local = json.loads((local_run / "embed.json").read_text())
    assert manifest["data"]["read"] == "ray-data" and local["data"]["read"] == "driver"
    for key in ("content_hash", "documents", "queries"):
        assert manifest["data"][key] == local["data"][key]
    model = manifest["models"][0]
    assert (model["shards_written"], model["shards_reused"]) == (DOCS // 16 + 1, 0)
    assert model["texts_encoded"] == DOCS + QUERIES and model["vectors_added_to_cache"] == DOCS + QUERIES

    (out / MODEL / "documents" / "shard-00002.parquet").unlink()  # resume: only the missing shard is read again
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = json.loads((out / "embed.json").read_text())["models"][0]
    assert (model["shards_written"], model["shards_reused"], model["texts_encoded"]) == (1, DOCS // 16, 16)
    _assert_same_vectors(out, local_run, scifact_tiny)


def _driver(args: list[str]) -> subprocess.Popen[bytes]:
    code = "import sys; from embedlab.cli import main; sys.argv = ['embedlab', *sys.argv[1:]]; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ)
    )


@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_written_shards(
    ray_cluster: str, tiny_folder: Path, scifact_tiny: RetrievalDataset, local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    args = ["embed", "--data", str(tiny_folder), "--models", MODEL, "--out", str(out), "--engine", "ray"]
    # 2 texts per encoder call, 16 (two shards) per actor call: shards arrive a few at a time, so the kill lands
    # mid-run.
    args += ["--ray-address", ray_cluster, "--backend", "torch", "--shard-size", "8", "--batch-size", "2"]
    args += ["--cache", str(tmp_path / "cache")]
    first = _driver(args)
    deadline = time.monotonic() + 120
    while first.poll() is None and len(_shards(out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, f"the first run ended before it was killed: {first.stderr.read().decode()[-2000:]}"
    written = len(_shards(out))
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert written >= 2 and not (out / "embed.json").exists()  # killed before it finished

    second = _driver(args)
    _, stderr = second.communicate(timeout=240)
    assert second.returncode == 0, stderr.decode()[-2000:]
    model = json.loads((out / "embed.json").read_text())["models"][0]
    assert model["shards_reused"] >= written
    assert model["shards_reused"] + model["shards_written"] == DOCS // 8 + QUERIES // 8
    assert model["texts_encoded"] == DOCS + QUERIES - 8 * model["shards_reused"]  # the reused were not redone
    _assert_same_vectors(out, local_run, scifact_tiny)


@pytest.mark.slow
def test_compare_and_index_take_engine_ray(ray_cluster: str, tiny_folder: Path, tmp_path: Path) -> None:
    common = ["--data", str(tiny_folder), "--models", f"{MODEL},bm25", "--backend", "torch", "--k", "10"]
    result = runner.invoke(app, ["compare", *common, "--out", str(tmp_path / "local")])
    assert result.exit_code == 0, result.output
    cache = tmp_path / "ray-cache"
    on_cluster = ["--engine", "ray", "--ray-address", ray_cluster, "--cache", str(cache)]
    result = runner.invoke(app, ["compare", *common, "--out", str(tmp_path / "ray"), *on_cluster])
    assert result.exit_code == 0, result.output
    local = json.loads((tmp_path / "local" / "compare.json").read_text())
    on_ray = json.loads((tmp_path / "ray" / "compare.json").read_text())
    assert [r["means"] for r in on_ray["results"]] == [r["means"] for r in local["results"]]
    assert list((cache / "shards").iterdir()), "the Ray run keeps its shards in the cache"

    # index --engine ray: the vectors come from the Parquet shards the Ray run wrote (not the cache, not the
    # encoder: both refused here), one shard per upsert batch, into Milvus Lite as the local path lays them out.
    import embedlab.index.build as build

    def refuse(*args, **kwargs):
        raise AssertionError("index --engine ray encoded or read the cache instead of reading the shards")

    index_args = ["index", "--model", MODEL, "--data", str(tiny_folder), "--store", "milvus", "--backend", "torch"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "embed", refuse)
        result = runner.invoke(
            app, [*index_args, "--out", str(tmp_path / "index-ray"), *on_cluster, "--cache", str(tmp_path / "c2")]
        )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*index_args, "--out", str(tmp_path / "index-local")])
    assert result.exit_code == 0, result.output
    ray_manifest = json.loads((tmp_path / "index-ray" / "index.json").read_text())
    local_manifest = json.loads((tmp_path / "index-local" / "index.json").read_text())
    for key in ("store", "collection", "model", "resolved", "retrieval", "data"):
        assert ray_manifest[key] == local_manifest[key]
    assert ray_manifest["counts"] == local_manifest["counts"] and local_manifest["counts"]["stored"] == DOCS
    ray_rows, local_rows = _milvus_rows(tmp_path / "index-ray"), _milvus_rows(tmp_path / "index-local")
    assert list(ray_rows) == list(local_rows) and len(ray_rows) == DOCS  # the same ids, fields and payloads
    for doc_id, row in ray_rows.items():
        other = local_rows[doc_id]
        assert {k: v for k, v in row.items() if k != "vector"} == {k: v for k, v in other.items() if k != "vector"}
        np.testing.assert_allclose(row["vector"], other["vector"], atol=1e-5)


def _milvus_rows(index: Path) -> dict[str, dict]:
    """Every row of an index folder's Milvus Lite collection, by id (the collection's own fields)."""
    from pymilvus import MilvusClient

    manifest = json.loads((index / "index.json").read_text())
    client = MilvusClient(uri=str(index / "milvus.db"))
    try:
        rows = client.query(manifest["collection"], filter="", output_fields=["*"], limit=10_000)
    finally:
        client.close()
    return {str(r["id"]): {k: v for k, v in r.items()} for r in sorted(rows, key=lambda r: str(r["id"]))}


def test_bad_engine_options_are_one_line_errors(tiny_folder: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["embed", "--data", str(tiny_folder), "--engine", "rey", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "did you mean ray?" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["compare", "--data", str(tiny_folder), "--ray-address", "127.0.0.1:1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--ray-address needs --engine ray" in result.output
    result = runner.invoke(app, ["embed", "--data", str(tiny_folder), "--shard-size", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--shard-size must be 1 or more" in result.output


@pytest.mark.parametrize("command", ["embed", "compare", "select", "index"])
def test_engine_options_are_documented(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--engine" in result.output and "--ray-address" in result.output
    if command == "embed":
        assert "Example" in result.output and "embedlab embed --data" in result.output


def test_local_shards_resume_and_are_not_reused_for_other_texts_or_backends(tmp_path: Path) -> None:
    """Plumbing with the tiny hashing encoder: what a re-run keeps, re-encodes and removes."""
    from conftest import HashingEncoder

    from embedlab.data.dataset import Document, Query
    from embedlab.scale.engines import LocalEngine

    encoders: list[HashingEncoder] = []

    def factory(model: str, backend: str) -> HashingEncoder:
        encoders.append(HashingEncoder(name=model))
        return encoders[-1]

    def dataset(n: int, prefix: str = "text") -> RetrievalDataset:
        corpus = tuple(Document(f"d{i}", f"{prefix} number {i}") for i in range(n))
        return RetrievalDataset(name="toy", corpus=corpus, queries=(Query("q1", "number"),), qrels={"q1": {"d0": 1}})

    def run(data: RetrievalDataset, backend: str = "torch") -> dict:
        result = embed_dataset(
            data, ["toy"], out=tmp_path, engine=LocalEngine(factory), backend=backend, shard_size=4, batch_size=2
        )
        return result.to_dict()["models"][0]

    first = run(dataset(10))
    assert (first["shards_written"], first["shards_reused"], first["texts_encoded"]) == (3 + 1, 0, 11)
    loads = len(encoders)
    assert run(dataset(10))["shards_reused"] == 4 and len(encoders) == loads  # all reused: no model even loaded

    (tmp_path / "toy" / "documents" / "shard-00001.parquet").write_bytes(b"not parquet")  # a damaged shard
    again = run(dataset(10))
    assert (again["shards_written"], again["texts_encoded"]) == (1, 4)

    other_backend = run(dataset(10), backend="onnx")
    assert other_backend["shards_reused"] == 0  # written for another backend: never mixed in

    smaller = run(dataset(5, prefix="other"))  # other texts, fewer shards: none reused, none left over
    assert smaller["shards_reused"] == 0
    ids, vectors = read_vectors(tmp_path, model="toy", role="document")
    assert ids == [f"d{i}" for i in range(5)] and vectors.shape == (5, 64)
