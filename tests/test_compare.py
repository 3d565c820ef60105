"""compare() on real SciFact with real models: sensible figures, per-query scores kept, reports written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from embedlab.data.loaders import load_beir
from embedlab.embedding import EmbeddingCache
from embedlab.evaluate.compare import compare, compare_sts, metric_names


def test_metric_names_cover_every_family_and_cut_off() -> None:
    names = metric_names([10, 1])
    assert names == [
        "ndcg@1",
        "ndcg@10",
        "recall@1",
        "recall@10",
        "precision@1",
        "precision@10",
        "mrr@1",
        "mrr@10",
        "map@1",
        "map@10",
    ]


def test_compare_dense_and_bm25_on_scifact(scifact_small, vector_cache, tmp_path: Path) -> None:
    comparison = compare(scifact_small, ["minilm-l6", "bm25"], k_values=(1, 10, 100), cache=vector_cache)
    by_name = {r.name: r for r in comparison.results}
    dense = by_name["minilm-l6"]
    assert set(dense.scores.per_query["ndcg@10"]) == {q.id for q in scifact_small.queries}
    assert 0.6 < dense.mean("ndcg@10") <= 1.0
    assert dense.mean("recall@100") >= dense.mean("recall@10") >= dense.mean("recall@1")
    assert dense.documents_per_second > 0
    table = str(comparison)
    assert table.splitlines()[0].split()[:3] == ["model", "ndcg@10", "recall@100"]
    assert comparison.ranked()[0].name in table.splitlines()[2]

    paths = comparison.write(tmp_path / "out")
    payload = json.loads(paths["json"].read_text())
    assert payload["schema_version"] == 1
    assert payload["dataset"]["content_hash"] == scifact_small.content_hash
    assert payload["manifest"]["packages"]["sentence-transformers"]
    assert len(payload["results"][0]["per_query"]["ndcg@10"]) == len(scifact_small.queries)
    assert "| minilm-l6 |" in paths["markdown"].read_text()
    trec = (tmp_path / "out" / "runs" / "minilm-l6.trec").read_text().splitlines()
    assert len(trec) == 100 * len(scifact_small.queries)


def test_second_compare_reuses_cached_vectors(scifact_small, vector_cache, embedlab_cache: Path) -> None:
    first = compare(scifact_small, ["minilm-l6"], k_values=(10,), cache=vector_cache)
    shards = sorted((embedlab_cache / "embeddings").rglob("*.npz"))
    second = compare(scifact_small, ["minilm-l6"], k_values=(10,), cache=EmbeddingCache(embedlab_cache))
    assert second.results[0].scores.means == first.results[0].scores.means
    assert sorted((embedlab_cache / "embeddings").rglob("*.npz")) == shards  # nothing was encoded again


def test_compare_rerun_on_cached_vectors_loads_neither_torch_nor_the_model(
    scifact_small, vector_cache, embedlab_cache: Path, tmp_path: Path
) -> None:
    # A re-run reads vectors and the truncation count from the cache: importing torch or loading the model would
    # cost more than the whole re-run (seconds, against well under one).
    folder = tmp_path / "scifact-small"
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": d.id, "title": d.title, "text": d.text} for d in scifact_small.corpus]
    queries = [{"_id": q.id, "text": q.text} for q in scifact_small.queries]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries))
    judged = [f"{q}\t{d}\t{g}\n" for q, docs in scifact_small.qrels.items() for d, g in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(judged))
    first = compare(load_beir(folder, split="test"), ["minilm-l6"], k_values=(10,), cache=vector_cache)
    argv = ["embedlab", "compare", "--data", str(folder), "--models", "minilm-l6", "--k", "10"]
    argv += ["--cache", str(embedlab_cache), "--out", str(tmp_path / "out")]
    script = f"""
import sys
sys.argv = {argv!r}
from embedlab.cli import main
try:
    main()
finally:
    print(sorted(m for m in ("torch", "sentence_transformers", "onnxruntime", "openvino") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
    rerun = json.loads((tmp_path / "out" / "compare.json").read_text())["results"][0]
    assert rerun["means"]["ndcg@10"] == first.results[0].mean("ndcg@10")
    assert rerun["truncated_documents"] == first.results[0].truncated_documents


def test_sts_on_real_stsb(shared_data: Path, vector_cache, tmp_path: Path) -> None:
    from embedlab.data.dataset import ScoredPairs
    from embedlab.data.loaders import load_sts

    full = load_sts(shared_data / "stsb" / "sts-test.csv")
    pairs = ScoredPairs(name="stsb-300", pairs=full.pairs[:300], source=full.source)
    result = compare_sts(pairs, ["minilm-l6"], cache=vector_cache)
    assert 0.7 < result.results[0].spearman < 1.0
    assert "minilm-l6" in str(result)
    payload = json.loads(result.write(tmp_path / "out")["json"].read_text())
    assert len(payload["results"][0]["similarities"]) == 300
