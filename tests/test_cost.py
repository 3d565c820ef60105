"""Cost measurement: structure and sanity of real measurements (never timings against thresholds)."""

from __future__ import annotations

import math
import mmap
from pathlib import Path

import pytest

from embedlab.cost import (
    PRECISIONS,
    CostTable,
    combine_costs,
    cost_sample,
    current_rss,
    index_sizes,
    matryoshka_dims,
    measure_cost,
    peak_rss,
)
from embedlab.models import packaged


@pytest.fixture(scope="module")
def sample(scifact_small):
    return cost_sample(scifact_small, documents=8, queries=4, seed=0)


@pytest.fixture(scope="module")
def minilm_cost(sample):
    """minilm-l6 measured the default way: in a fresh process."""
    return measure_cost("minilm-l6", sample)


def test_sample_is_random_reproducible_and_distinct(scifact_small) -> None:
    first = cost_sample(scifact_small, documents=16, queries=8, seed=3)
    assert first == cost_sample(scifact_small, documents=16, queries=8, seed=3)
    assert first.documents != cost_sample(scifact_small, documents=16, queries=8, seed=4).documents
    assert len(set(first.documents)) == 16 and len(set(first.queries)) == 8
    assert first.corpus_documents == len(scifact_small.corpus)
    assert len(cost_sample(scifact_small, documents=10_000, queries=1).documents) == len(scifact_small.corpus)


def test_index_bytes_shrink_with_precision_and_dimension() -> None:
    sizes = index_sizes(768, (256, 64))
    by_key = {(s.format, s.dim): s.bytes_per_document for s in sizes}
    for dim in (768, 256, 64):
        assert by_key[("binary", dim)] < by_key[("int8", dim)] < by_key[("float32", dim)]
        assert by_key[("float32", dim)] == 4 * dim
    assert by_key[("float32", 64)] < by_key[("float32", 256)] < by_key[("float32", 768)]
    assert PRECISIONS["binary"](385) == 49  # bits round up to whole bytes


def test_peak_rss_sees_an_allocation() -> None:
    size = 50_000_000
    before = current_rss()
    with peak_rss() as probe:
        # Fresh anonymous pages, each touched: a heap allocation could reuse pages this long-lived test process
        # already holds resident, and then no RSS figure would move.
        block = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
    block.close()
    assert probe["peak"] - before >= 40_000_000
    assert probe["method"]


def test_real_model_cost_in_a_fresh_process(minilm_cost, sample) -> None:
    cost = minilm_cost
    assert cost.name == "minilm-l6" and cost.dim == 384 and cost.conditions["isolated"] is True
    assert cost.documents.items == len(sample.documents) and cost.queries.items == len(sample.queries)
    for throughput in (cost.documents, cost.queries):
        assert throughput.items_per_second > 0
        assert throughput.tokens_per_second > throughput.items_per_second  # texts are several tokens long
    assert len(cost.latency.samples_ms) == len(sample.queries)
    assert 0 < cost.latency.p50 <= cost.latency.p95
    # Memory: importing torch and loading the weights take resident memory; the peak covers both.
    assert cost.memory.runtime_bytes > 0 and cost.memory.model_bytes > 0
    assert cost.memory.peak_bytes >= cost.memory.model_bytes
    folder = packaged.minilm_l6_folder()
    assert cost.size_bytes == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert cost.index_bytes("int8") < cost.index_bytes("float32")
    assert cost.index_bytes("binary") < cost.index_bytes("int8")
    assert cost.corpus.documents == sample.corpus_documents
    assert cost.corpus.seconds == pytest.approx(sample.corpus_documents / cost.documents_per_second)
    assert cost.corpus.memory_bytes == cost.memory.peak_bytes + cost.corpus.vector_bytes
    assert cost.corpus.vector_bytes == sample.corpus_documents * 384 * 4
    assert cost.to_dict()["latency"]["p95_ms"] == cost.latency.p95


def test_bm25_cost_searches_the_whole_corpus(sample) -> None:
    cost = measure_cost("bm25", sample, isolated=False)
    assert cost.kind == "bm25" and cost.dim is None and cost.size_bytes == 0
    assert cost.documents.items == sample.corpus_documents  # it indexed everything
    assert cost.corpus.basis.startswith("measured on all")
    assert cost.index_bytes("sparse") > 0 and cost.index_bytes("float32") is None
    assert len(cost.latency.samples_ms) == len(sample.queries)


def test_hybrid_cost_adds_its_parts(minilm_cost, sample) -> None:
    bm25 = measure_cost("bm25", sample, isolated=False)
    hybrid = combine_costs("hybrid", [minilm_cost, bm25])
    assert hybrid.composed_from == ("minilm-l6", "bm25") and hybrid.dim == 384
    assert hybrid.documents_per_second < min(minilm_cost.documents_per_second, bm25.documents_per_second)
    assert hybrid.latency.samples_ms[0] == pytest.approx(minilm_cost.latency.samples_ms[0] + bm25.latency.samples_ms[0])
    assert hybrid.index_bytes("float32") == 4 * 384 + bm25.index_bytes("sparse")
    assert hybrid.memory.peak_bytes == minilm_cost.memory.peak_bytes + bm25.memory.peak_bytes
    table = CostTable((minilm_cost, bm25, hybrid))
    lines = str(table).splitlines()
    assert lines[0].split()[:3] == ["model", "docs/s", "tok/s"] and len(lines) == 5
    assert table["hybrid"] is hybrid and "bm25" in table


def test_in_process_measurement_of_an_encoder_object(hashing_encoder, sample) -> None:
    cost = measure_cost(hashing_encoder, sample, batch_size=4)
    assert cost.conditions["isolated"] is False and cost.dim == hashing_encoder.dim
    assert sum(hashing_encoder.calls) >= 2 * len(sample.queries) + len(sample.documents)
    assert math.isfinite(cost.corpus.seconds)


def test_matryoshka_dims_come_from_the_model_card(hashing_encoder, tmp_path: Path) -> None:
    hashing_encoder.source = str(tmp_path)
    assert matryoshka_dims(hashing_encoder) == ()
    (tmp_path / "README.md").write_text(
        'loss: MatryoshkaLoss\n```json\n{"loss": "MultipleNegativesRankingLoss", "matryoshka_dims": [64, 32, 16]}\n```'
    )
    assert matryoshka_dims(hashing_encoder) == (32, 16)  # the full dimension (64) is not a shorter one
    sizes = index_sizes(hashing_encoder.dim, matryoshka_dims(hashing_encoder))
    assert {s.dim for s in sizes} == {64, 32, 16}


def test_a_time_budget_stops_a_slow_model_after_one_batch(hashing_encoder, sample) -> None:
    cost = measure_cost(hashing_encoder, sample, batch_size=2, budget_s=1e-9)
    assert cost.documents.items == 2 and cost.queries.items == 2
    assert len(cost.latency.samples_ms) == 1
    assert cost.conditions["sample_documents"] == 2
    assert cost.corpus.basis == "extrapolated from 2 sampled documents"
