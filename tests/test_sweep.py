"""The ANN study: recall against exact search, nDCG lost, the recommendation, the report files and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.errors import EmbedlabError
from embedlab.index.config import IndexConfig
from embedlab.index.sweep import SweepGrid, SweepPoint, SweepResult, measure, sweep

runner = CliRunner()

SMALL_GRID = SweepGrid(
    dims=(None, 128),
    flat_quantize=("none", "binary"),
    hnsw_m=(16,),
    hnsw_quantize=("none",),
    ef_search=(4, 64),
    ivf_quantize=("int8",),
    nprobe=(1, 8),
)


def test_sweep_on_real_vectors_measures_recall_against_exact(
    scifact_small, minilm_encoder, vector_cache, tmp_path: Path
) -> None:
    result = sweep(scifact_small, minilm_encoder, grid=SMALL_GRID, cache=vector_cache, min_seconds=0.0)
    labels = [p.config.label for p in result.points]
    assert len(labels) == 4 + 2 + 2 and len(set(labels)) == len(labels)
    for point in result.points:
        assert 0.0 <= point.recall <= 1.0 and 0.0 <= point.ndcg <= 1.0
        assert point.qps > 0 and point.index_bytes > 0 and point.build_seconds >= 0
    exact = result.points[0]
    assert exact.config.label == "flat d384"
    assert exact.recall == 1.0 and exact.ndcg_lost == pytest.approx(0.0, abs=1e-12)
    assert exact.ndcg == pytest.approx(result.exact_ndcg)
    by_label = {p.config.label: p for p in result.points}
    # One bit per dimension keeps a fraction of the float index's bytes and loses recall.
    assert by_label["flat binary d384"].index_bytes < exact.index_bytes / 8
    assert by_label["flat binary d384"].recall < 1.0
    assert by_label["hnsw M16 ef64 d384"].recall >= by_label["hnsw M16 ef4 d384"].recall
    assert by_label["ivf nlist7 nprobe8 int8 d384"].recall >= by_label["ivf nlist7 nprobe1 int8 d384"].recall

    recommendation = result.recommend()
    assert recommendation.fastest is not None and recommendation.fastest.recall >= 0.99
    assert recommendation.smallest is not None
    assert recommendation.smallest.index_bytes == min(p.index_bytes for p in result.reaching())
    assert recommendation.by_index["flat"] is not None

    paths = result.write(tmp_path)
    payload = json.loads(paths["json"].read_text())
    assert payload["kind"] == "sweep" and len(payload["points"]) == len(result.points)
    assert payload["manifest"]["data"]["content_hash"] == scifact_small.content_hash
    assert payload["recommendation"]["fastest"]["recall"] >= 0.99
    assert paths["plot"].read_text().lstrip().startswith("<?xml") and "<svg" in paths["plot"].read_text()
    markdown = paths["markdown"].read_text()
    assert "sweep.svg" in markdown and "hnsw M16 ef64 d384" in markdown
    assert "recall@10" in str(result) and "fastest reaching" in str(result)


def point(label_index: str, recall: float, qps: float, size: int) -> SweepPoint:
    config = IndexConfig(index=label_index, dim=8)  # type: ignore[arg-type]
    return SweepPoint(config, recall, None, None, qps, 0.1, size, 10)


def test_recommendation_picks_the_fastest_and_the_smallest_reaching_the_target() -> None:
    points = [
        point("flat", 1.0, 100.0, 1000),
        point("hnsw", 0.995, 900.0, 1500),
        point("hnsw", 0.95, 5000.0, 1500),  # fastest, but misses the target
        point("ivf", 0.991, 400.0, 800),
    ]
    result = SweepResult(points=points, target=0.99, k=10, exact_ndcg=None, dataset={}, model={}, grid={})
    recommendation = result.recommend()
    assert recommendation.fastest is points[1] and recommendation.smallest is points[3]
    assert recommendation.by_index == {"flat": points[0], "hnsw": points[1], "ivf": points[3]}
    strict = SweepResult(points=points, target=0.999, k=10, exact_ndcg=None, dataset={}, model={}, grid={})
    assert strict.recommend().fastest is points[0] and strict.recommend().by_index["hnsw"] is None
    assert "no setting in the grid" in str(strict)


def test_measure_without_judgements_leaves_ndcg_out() -> None:
    rng = np.random.default_rng(0)
    documents = rng.standard_normal((50, 16)).astype(np.float32)
    documents /= np.linalg.norm(documents, axis=1, keepdims=True)
    grid = SweepGrid(dims=(None,), flat_quantize=("none",), hnsw_m=(), ivf_quantize=())
    points, exact_ndcg = measure(
        documents,
        documents[:5],
        doc_ids=[f"d{i}" for i in range(50)],
        query_ids=list("abcde"),
        grid=grid,
        min_seconds=0,
    )
    assert exact_ndcg is None and len(points) == 1
    assert points[0].recall == 1.0 and points[0].ndcg is None and points[0].ndcg_lost is None


def test_sweep_refuses_data_without_queries_and_bad_targets(scifact_small, hashing_encoder) -> None:
    with pytest.raises(EmbedlabError, match="needs queries"):
        sweep(scifact_small.subset(query_ids=[]), hashing_encoder)
    with pytest.raises(EmbedlabError, match="target"):
        sweep(scifact_small, hashing_encoder, target=1.5)


def test_index_sweep_command_writes_the_report(scifact_small, embedlab_cache: Path, tmp_path: Path, write_beir) -> None:
    data = write_beir(tmp_path / "data", scifact_small)
    out = tmp_path / "sweep"
    args = ["index", "--sweep", "--model", "minilm-l6", "--data", str(data), "--out", str(out)]
    result = runner.invoke(app, [*args, "--cache", str(embedlab_cache)])
    assert result.exit_code == 0, result.output
    assert "fastest reaching recall ≥ 0.99" in result.stdout
    payload = json.loads((out / "sweep.json").read_text())
    labels = {p["label"] for p in payload["points"]}
    assert {
        "flat d384",
        "flat pq96 d384",
        "flat int8 d128",
        "hnsw M32 ef256 d384",
        "ivf nlist7 nprobe64 pq96 d384",
    } <= labels
    assert all(0.0 <= p["recall"] <= 1.0 for p in payload["points"])
    assert next(p for p in payload["points"] if p["label"] == "flat d384")["recall"] == 1.0
    assert (out / "sweep.svg").exists() and (out / "sweep.md").exists()
