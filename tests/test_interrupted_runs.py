"""Long runs never lose work: ``kill -9`` in the middle, or a full disk, then the same command again.

Each run is the real ``embedlab`` CLI in a child process. A kill is a real SIGKILL the child sends itself at a
chosen point (the Nth call of a function, see :data:`KILLER`), so the point is exact and the test repeatable;
one test also kills from outside at an arbitrary moment. A full disk is a real one: a small tmpfs where mounting
one is allowed (root), otherwise a file-size limit (``RLIMIT_FSIZE``, the kernel refusing the write the same
way). Real SciFact text and the packaged minilm-l6; vectors are cached once per session, so the children only
load the model.

``embedlab embed`` does not exist yet, so there is no kill test for it; the embedding cache is covered by
``compare`` (killed while writing a shard, and on a full disk).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import embedlab
from embedlab.data.dataset import RetrievalDataset
from embedlab.embedding import EmbeddingCache, text_key
from embedlab.index.build import IndexManifest
from embedlab.index.searcher import IndexSearcher

pytestmark = pytest.mark.slow

# Runs the CLI after wrapping one function so that its Nth call kills the process with SIGKILL, "before" the
# call or "after" it returns: python -c KILLER module:Qualified.name N before|after embedlab-args...
KILLER = """
import importlib, os, signal, sys
target, nth, when, *args = sys.argv[1:]
module, _, qualname = target.partition(":")
owner = importlib.import_module(module)
*parents, name = qualname.split(".")
for parent in parents:
    owner = getattr(owner, parent)
original, calls = getattr(owner, name), [0]
def killing(*a, **k):
    calls[0] += 1
    if calls[0] == int(nth) and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*a, **k)
    if calls[0] == int(nth) and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, name, killing)
sys.argv = ["embedlab", *args]
from embedlab.cli import main
main()
"""
CLI = "import sys; sys.argv[0] = 'embedlab'; from embedlab.cli import main; main()"


def _env() -> dict[str, str]:
    source = str(Path(embedlab.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}


def run_cli(*args: str, kill_at: tuple[str, int, str] | None = None, limit_bytes: int | None = None):
    """The CLI in a child process; ``kill_at`` = (function, Nth call, "before"/"after"); ``limit_bytes`` caps the
    size of any file it writes."""
    code = [sys.executable, "-c", KILLER, *map(str, kill_at)] if kill_at else [sys.executable, "-c", CLI]

    def limit() -> None:
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [*code, *args], env=_env(), capture_output=True, text=True, timeout=600, preexec_fn=limit, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(text in errors[0] for text in expected), errors


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, scifact_test: RetrievalDataset, minilm_encoder, vector_cache):
    """A BEIR folder of 48 real SciFact abstracts and 6 queries, their vectors already in the session cache."""
    from embedlab.embedding import embed

    root = tmp_path_factory.mktemp("interrupted") / "scifact-48"
    queries = scifact_test.queries[:6]
    relevant = {d for q in queries for d in scifact_test.qrels[q.id]}
    documents = [d for d in scifact_test.corpus if d.id in relevant]
    documents += [d for d in scifact_test.corpus if d.id not in relevant][: 48 - len(documents)]
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n"
                                               for d in documents))  # fmt: skip
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q.id, "text": q.text}) + "\n" for q in queries))
    rows = "".join(f"{q.id}\t{d}\t{g}\n" for q in queries for d, g in scifact_test.qrels[q.id].items())
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    embed(minilm_encoder, [d.full_text for d in documents], role="document", cache=vector_cache)
    embed(minilm_encoder, [q.text for q in queries], role="query", cache=vector_cache)
    return root


def _top_ids(index: Path, minilm_encoder, corpus: Path) -> list[list[str]]:
    queries = [json.loads(line)["text"] for line in (corpus / "queries.jsonl").read_text().splitlines()]
    searcher = IndexSearcher.open(index, encoder=minilm_encoder)
    try:
        return [[hit.id for hit in hits] for hits in searcher.search(queries, k=10)]
    finally:
        searcher.close()


@pytest.fixture(scope="module")
def reference(corpus: Path, minilm_encoder, tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The top 10 of every query from an index built in one uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "index"
    result = run_cli("index", "--model", "minilm-l6", "--data", str(corpus), "--out", str(out), "--batch-size", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    return _top_ids(out, minilm_encoder, corpus)


FAISS_UPSERT = "embedlab.index.faiss_store:FaissStore.upsert"
MILVUS_UPSERT = "embedlab.index.milvus_store:MilvusStore.upsert"


@pytest.mark.parametrize(
    ("store", "kill_at", "durable"),
    [
        ("faiss", (FAISS_UPSERT, 3, "after"), 24),  # between batches: three of six batches stored
        ("faiss", (FAISS_UPSERT, 4, "before"), 24),  # with the fourth batch embedded, not yet stored
        ("faiss", ("embedlab.index.faiss_store:FaissIndex.write", 1, "before"), 48),  # every record, no index file
        ("milvus", (MILVUS_UPSERT, 3, "after"), None),
        ("milvus", ("embedlab.index.milvus_store:MilvusStore.commit", 1, "before"), None),
    ],
    ids=[
        "faiss-between-batches",
        "faiss-before-upsert",
        "faiss-before-index-write",
        "milvus-between-batches",
        "milvus-before-flush",
    ],
)
def test_index_killed_then_rerun_loses_and_duplicates_nothing(
    store: str, kill_at: tuple[str, int, str], durable: int | None, corpus: Path, reference, minilm_encoder,
    tmp_path: Path,
) -> None:  # fmt: skip
    out = tmp_path / "index"
    args = ["index", "--model", "minilm-l6", "--data", str(corpus), "--out", str(out), "--batch-size", "8",
            "--store", store, *(["--uri", str(tmp_path / "milvus.db")] if store == "milvus" else [])]  # fmt: skip
    killed = run_cli(*args, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not IndexManifest.read(out).complete  # readable, and says it did not finish
    with pytest.raises(embedlab.errors.EmbedlabError, match="did not finish"):
        IndexSearcher.open(out, encoder=minilm_encoder)

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    manifest = IndexManifest.read(out)
    counts = manifest.counts
    assert manifest.complete and counts["stored"] == counts["documents"] == 48 and counts["extra"] == 0
    assert counts["added"] + counts["unchanged"] == 48 and counts["updated"] == 0
    if durable is not None:  # FAISS's records commit once per batch: exactly the batches before the kill stay
        assert counts["unchanged"] == durable
    else:  # Milvus Lite: whatever it had made durable is kept, never counted twice
        assert counts["unchanged"] <= 48
    assert _top_ids(out, minilm_encoder, corpus) == reference


def test_index_killed_from_outside_at_any_moment_then_rerun(corpus: Path, reference, minilm_encoder, tmp_path) -> None:
    """The kill of the issue: SIGKILL from another process while it indexes, repeated until a run finishes."""
    out = tmp_path / "index"
    # A cache of its own: the run encodes as it goes, so there is time to kill it in the middle.
    args = ["index", "--model", "minilm-l6", "--data", str(corpus), "--out", str(out), "--batch-size", "4",
            "--cache", str(tmp_path / "cache")]  # fmt: skip
    records = out / "records.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CLI, *args], env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while child.poll() is None and time.monotonic() < deadline:
        if records.exists() and records.stat().st_size > 0 and _stored(records) >= 8:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    child.wait(timeout=60)
    stored = _stored(records)
    assert child.returncode == -signal.SIGKILL and 8 <= stored <= 48
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    counts = IndexManifest.read(out).counts
    assert counts["unchanged"] == stored and counts["added"] == 48 - stored and counts["stored"] == 48
    assert _top_ids(out, minilm_encoder, corpus) == reference


def _stored(records: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{records}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def test_compare_killed_while_writing_a_cache_shard(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query,positive\nwhich animal purrs?,Cats purr.\nwhat do dogs do?,Dogs bark.\n")
    cache = tmp_path / "cache"
    args = ["compare", "--models", "minilm-l6", "--data", str(pairs), "--out", str(tmp_path / "out"),
            "--cache", str(cache)]  # fmt: skip
    # The documents' shard finished; killed with the queries' shard written but not yet renamed into place.
    killed = run_cli(*args, kill_at=("numpy:savez", 2, "after"))
    assert killed.returncode == -signal.SIGKILL
    folder = next((cache / "embeddings").iterdir())
    assert len(list(folder.glob(".tmp-*"))) == 1 and len(list(folder.glob("[!.]*.npz"))) == 1
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "encode minilm-l6 queries" in rerun.stderr and "encode minilm-l6 documents" not in rerun.stderr
    assert "discarding" not in rerun.stderr
    payload = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert payload["results"][0]["name"] == "minilm-l6" and payload["dataset"]["queries"] == 2


# --- a full disk ----------------------------------------------------------------------------------------------


def _can_mount_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode == 0:
        subprocess.run(["umount", str(folder)], check=True)
    return done.returncode == 0


@contextmanager
def small_disk(folder: Path, kind: str, size_kb: int) -> Iterator[Callable[[], None]]:
    """A folder that fills after ``size_kb``: yields ``grow()``, which gives it room for the next run."""
    if kind == "tmpfs":
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], check=True)
        try:
            yield lambda: subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
        finally:  # lazily: a Milvus Lite searcher of this process may still hold its files open
            subprocess.run(["umount", "--lazy", str(folder)], check=True)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        yield lambda: None


@pytest.fixture(scope="module")
def kind(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small tmpfs where this process may mount one (root), otherwise a file-size limit."""
    return "tmpfs" if _can_mount_tmpfs(tmp_path_factory.mktemp("probe") / "disk") else "file-size-limit"


def test_full_disk_while_caching_leaves_the_cache_readable(kind: str, corpus: Path, tmp_path: Path) -> None:
    limit = 48 * 1024 if kind != "tmpfs" else None
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query,positive\nwhich animal purrs?,Cats purr.\nwhat do dogs do?,Dogs bark.\n")
    with small_disk(tmp_path / "disk", kind, size_kb=48) as grow:
        cache = tmp_path / "disk" / "cache"
        small = run_cli("compare", "--models", "minilm-l6", "--data", str(pairs), "--out", str(tmp_path / "small"),
                        "--cache", str(cache), limit_bytes=limit)  # fmt: skip
        assert small.returncode == 0, small.stderr[-3000:]  # a small first run fits
        folder = next((cache / "embeddings").iterdir())
        before = sorted(p.name for p in folder.glob("*.npz"))
        args = ["compare", "--models", "minilm-l6", "--data", str(corpus), "--out", str(tmp_path / "out"),
                "--cache", str(cache)]  # fmt: skip
        full = run_cli(*args, limit_bytes=limit)  # 48 abstracts' vectors do not
        assert_one_line_error(full, str(folder), "run the same command again")
        assert not list(folder.glob(".tmp-*"))  # nothing half-written left behind
        assert sorted(p.name for p in folder.glob("*.npz")) == before
        keys = [text_key(t, "document") for t in ("Cats purr.", "Dogs bark.")]
        assert len(EmbeddingCache(cache).get(folder.name, keys)) == 2  # what was there still reads back
        grow()
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "discarding" not in done.stderr
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["dataset"]["documents"] == 48


@pytest.mark.parametrize("store", ["faiss", "milvus"])
def test_full_disk_while_indexing_leaves_the_index_readable(
    store: str, kind: str, corpus: Path, reference, minilm_encoder, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    with small_disk(disk, kind, size_kb=96) as grow:
        out = disk / "index"
        args = ["index", "--model", "minilm-l6", "--data", str(corpus), "--out", str(out), "--batch-size", "8",
                "--store", store, *(["--uri", str(disk / "milvus.db")] if store == "milvus" else [])]  # fmt: skip
        full = run_cli(*args, limit_bytes=48 * 1024 if kind != "tmpfs" else None)
        assert_one_line_error(full, "run the same command again")
        assert not IndexManifest.read(out).complete  # the manifest reads back and says it did not finish
        grow()
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
        manifest = IndexManifest.read(out)
        assert manifest.complete and manifest.counts["stored"] == 48 and manifest.counts["extra"] == 0
        assert manifest.counts["added"] + manifest.counts["unchanged"] == 48
        assert _top_ids(out, minilm_encoder, corpus) == reference


# --- fine-tuning ------------------------------------------------------------------------------------------------

FINETUNE = ("--epochs", "2", "--batch-size", "8", "--max-seq-length", "64", "--precision", "fp32", "--time-budget",
            "0", "--hard-negatives", "0")  # fmt: skip


@pytest.fixture(scope="module")
def finetune_data(scifact_slice) -> Path:
    """A BEIR folder of real SciFact: 32 train and 8 test queries over 80 abstracts."""
    return scifact_slice(32, 8, 80)


@pytest.fixture(scope="module")
def uninterrupted_finetune(finetune_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finetune-whole") / "run"
    done = run_cli("finetune", "--data", str(finetune_data), "--out", str(out), *FINETUNE)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _weights(checkpoint: Path) -> dict[str, object]:
    from safetensors.numpy import load_file

    return load_file(str(checkpoint / "model.safetensors"))


# Killed while saving the second checkpoint (its weights and optimizer written, not its trainer state): the run
# must resume from the first, complete one, not fail on the half-saved one.
@pytest.mark.parametrize("kill_at", [("transformers.trainer:Trainer._save_rng_state", 2, "before")], ids=["mid-save"])
def test_finetune_killed_resumes_from_its_last_checkpoint_to_the_same_result(
    kill_at: tuple[str, int, str], finetune_data: Path, uninterrupted_finetune: Path, tmp_path: Path
) -> None:
    import numpy as np

    from embedlab.finetune.train import latest_checkpoint

    out = tmp_path / "run"
    args = ["finetune", "--data", str(finetune_data), "--out", str(out), *FINETUNE]
    whole = json.loads((uninterrupted_finetune / "finetune.json").read_text())
    first_name = f"checkpoint-{whole['training']['steps'] // 2}"  # two epochs, one checkpoint each
    killed = run_cli(*args, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = out / "work" / "checkpoints"
    assert latest_checkpoint(checkpoints) == checkpoints / first_name  # the half-saved second one is not one
    assert not (out / "finetune.json").exists()

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {first_name}" in resumed.stderr
    again = json.loads((out / "finetune.json").read_text())
    assert again["training"]["resumed_from"] == first_name and whole["training"]["resumed_from"] is None
    for key in ("steps", "loss_history", "dev_history", "best_checkpoint", "kept_base"):
        assert again["training"][key] == whole["training"][key], key
    for key in ("before", "after", "per_query"):
        assert again[key] == whole[key], key
    # The last checkpoint's weights are those of the uninterrupted run, and training did change them.
    final = sorted(checkpoints.glob("checkpoint-*"))[-1].name
    reference, resumed_weights = (
        _weights(uninterrupted_finetune / "work" / "checkpoints" / final),
        _weights(checkpoints / final),
    )
    assert reference.keys() == resumed_weights.keys()
    assert all(np.allclose(reference[k], resumed_weights[k], rtol=0, atol=1e-6) for k in reference)
    first = _weights(uninterrupted_finetune / "work" / "checkpoints" / first_name)
    assert any(not np.array_equal(first[k], reference[k]) for k in reference)
