"""Indexing into FAISS and Milvus Lite: settings, every index type, filters, idempotent and resumable builds."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedlab.cli import app
from embedlab.data.dataset import Document, RetrievalDataset
from embedlab.embedding import embed
from embedlab.errors import EmbedlabError
from embedlab.index import STORES, IndexConfig, IndexManifest, IndexSearcher, build_index, check_supported, faiss_store
from embedlab.index.faiss_store import INDEX_FILE, FaissIndex, FaissStore
from embedlab.index.milvus_store import MilvusStore, where_expression
from embedlab.retrieval import exact_top_k

runner = CliRunner()


def tagged(dataset: RetrievalDataset) -> RetrievalDataset:
    """The same corpus with a source and a page in every document's metadata, for filters."""
    corpus = tuple(
        replace(d, metadata={"source": "odd.pdf" if i % 2 else "even.pdf", "page": i % 5})
        for i, d in enumerate(dataset.corpus)
    )
    return replace(dataset, corpus=corpus)


def exact_ids(searcher_vectors, doc_vectors, doc_ids, k=10) -> list[list[str]]:
    _, index = exact_top_k(searcher_vectors, doc_vectors, k)
    return [[doc_ids[j] for j in row] for row in index]


# --- settings ---------------------------------------------------------------------------------------------


def test_config_resolves_defaults_and_refuses_what_does_not_fit() -> None:
    config = IndexConfig(index="ivf", quantize="pq").resolved(documents=5183, model_dim=384)
    assert (config.dim, config.nlist, config.pq_m) == (384, 132, 96)  # 4·√5183 = 288, capped at 5183 // 39
    assert IndexConfig(index="hnsw", dim=256).resolved(documents=10, model_dim=384).label == "hnsw M32 ef128 d256"
    with pytest.raises(EmbedlabError, match="larger than the model's dimension"):
        IndexConfig(dim=512).resolved(documents=10, model_dim=384)
    with pytest.raises(EmbedlabError, match="divisible by 8"):
        IndexConfig(quantize="binary", dim=100).resolved(documents=10, model_dim=384)
    with pytest.raises(EmbedlabError, match="must divide"):
        IndexConfig(quantize="pq", pq_m=7).resolved(documents=10, model_dim=384)
    with pytest.raises(EmbedlabError, match="did you mean 'hnsw'"):
        IndexConfig(index="hsnw")  # type: ignore[arg-type]
    with pytest.raises(EmbedlabError, match="≥ 1"):
        IndexConfig(ef_search=0)
    with pytest.raises(EmbedlabError, match="unknown index settings"):
        IndexConfig.from_dict({"index": "flat", "efsearch": 3})


def test_matryoshka_truncation_renormalises_without_touching_the_input() -> None:
    vectors = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    before = vectors.copy()
    cut = IndexConfig(dim=4).prepare(vectors)
    assert cut.shape == (5, 4)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(cut * np.linalg.norm(vectors[:, :4], axis=1, keepdims=True), vectors[:, :4], rtol=1e-5)
    np.testing.assert_array_equal(vectors, before)


def test_each_store_says_which_combinations_it_has() -> None:
    with pytest.raises(EmbedlabError) as error:
        check_supported("milvus", IndexConfig(quantize="pq"))
    message = str(error.value)
    assert "\n" not in message and "flat/none" in message and "hnsw/int8" in message and "flat/pq" not in message
    with pytest.raises(EmbedlabError, match="valid --index/--quantize pairs: flat/none, flat/int8"):
        check_supported("faiss", IndexConfig(index="hnsw", quantize="pq"))
    with pytest.raises(EmbedlabError, match="did you mean 'milvus'"):
        check_supported("milvsu", IndexConfig())
    assert set(STORES) == {"faiss", "milvus"}


def test_milvus_filters_are_escaped_expressions() -> None:
    assert where_expression({"source": 'a" or id != "', "page": 3, "ok": True}) == (
        'payload["source"] == "a\\" or id != \\"" and payload["page"] == 3 and payload["ok"] == true'
    )
    with pytest.raises(EmbedlabError, match="identifier"):
        where_expression({'x"] or 1==1 or payload["y': 1})


# --- every FAISS index type, with the tiny hashing encoder (plumbing) --------------------------------------


FAISS_COMBOS = sorted(STORES["faiss"].supports)


@pytest.mark.parametrize(("kind", "quantize"), FAISS_COMBOS, ids=[f"{i}-{q}" for i, q in FAISS_COMBOS])
def test_every_faiss_index_type_builds_searches_and_filters(
    kind: str, quantize: str, scifact_small, hashing_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tagged(scifact_small)
    config = IndexConfig(index=kind, quantize=quantize)  # type: ignore[arg-type]
    manifest = build_index(dataset, hashing_encoder, out=tmp_path, config=config, batch_size=100)
    assert manifest.complete and manifest.counts["stored"] == len(dataset.corpus)
    searcher = IndexSearcher.open(tmp_path, encoder=hashing_encoder)
    texts = [d.full_text for d in dataset.corpus[:5]]
    results = searcher.search(texts, k=10)
    for hits in results:
        assert len(hits) == 10 and len({h.id for h in hits}) == 10
        assert all(h.id in dataset.documents_by_id for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert set(hits[0].payload) >= {"title", "text", "source", "page"}
    if quantize in {"none", "int8"}:
        assert [hits[0].id for hits in results] == [d.id for d in dataset.corpus[:5]]
    # Filters: scored exactly when few documents match, through FAISS's selector when many do.
    for limit in (faiss_store.EXACT_FILTER_LIMIT, 0):
        monkeypatch.setattr(faiss_store, "EXACT_FILTER_LIMIT", limit)
        filtered = searcher.search(texts, k=10, where={"source": "odd.pdf", "page": 3})
        assert all(h.payload["source"] == "odd.pdf" and h.payload["page"] == 3 for hits in filtered for h in hits)
        assert any(filtered)
    assert searcher.search(texts[:1], k=10, where={"source": "nowhere"}) == [[]]
    searcher.close()


def test_faiss_reports_too_few_documents_to_train_in_one_line() -> None:
    vectors = np.eye(4, 16, dtype=np.float32)
    config = IndexConfig(index="ivf", nlist=8).resolved(documents=400, model_dim=16)
    with pytest.raises(EmbedlabError, match="could not build") as error:
        FaissIndex.build(vectors, np.arange(4), config)
    assert "\n" not in str(error.value)


# --- real model, real data: idempotent, resumable, exact ----------------------------------------------------


@pytest.mark.parametrize(
    ("store", "store_class", "config", "retrieval"),
    [
        ("faiss", FaissStore, IndexConfig(index="hnsw"), "dense"),
        ("milvus", MilvusStore, IndexConfig(index="hnsw"), "dense"),
        ("faiss", FaissStore, IndexConfig(index="hnsw"), "hybrid"),
        ("milvus", MilvusStore, IndexConfig(index="hnsw"), "hybrid"),
    ],
    ids=["faiss", "milvus-lite", "faiss-hybrid", "milvus-lite-hybrid"],
)
def test_indexing_is_idempotent_and_resumes_after_an_interruption(
    store: str,
    store_class,
    config: IndexConfig,
    retrieval: str,
    scifact_small,
    minilm_encoder,
    vector_cache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "index"
    real_upsert = store_class.upsert
    calls = []

    def failing_upsert(self, **kwargs):
        calls.append(len(kwargs["ids"]))
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return real_upsert(self, **kwargs)

    common = {
        "out": out, "store": store, "config": config, "cache": vector_cache, "batch_size": 64, "retrieval": retrieval,
    }  # fmt: skip
    monkeypatch.setattr(store_class, "upsert", failing_upsert)
    with pytest.raises(RuntimeError, match="power cut"):
        build_index(scifact_small, minilm_encoder, **common)
    monkeypatch.setattr(store_class, "upsert", real_upsert)
    assert not IndexManifest.read(out).complete
    with pytest.raises(EmbedlabError, match="did not finish"):
        IndexSearcher.open(out, encoder=minilm_encoder)

    resumed = build_index(scifact_small, minilm_encoder, **common)
    total = len(scifact_small.corpus)
    assert resumed.complete
    assert resumed.counts["unchanged"] == 128 and resumed.counts["added"] == total - 128
    assert resumed.counts["stored"] == total

    again = build_index(scifact_small, minilm_encoder, **common)
    assert again.counts["unchanged"] == total and again.counts["added"] == again.counts["updated"] == 0

    first = scifact_small.corpus[0]
    changed = replace(scifact_small, corpus=(replace(first, text=first.text + " (revised)"), *scifact_small.corpus[1:]))
    updated = build_index(changed, minilm_encoder, **common)
    assert updated.counts["updated"] == 1 and updated.counts["stored"] == total

    manifest = json.loads((out / "index.json").read_text())
    assert manifest["model"]["fingerprint"] == minilm_encoder.fingerprint
    assert manifest["data"]["documents"] == total and len(manifest["data"]["corpus_hash"]) == 64
    assert manifest["manifest"]["schema_version"] >= 1 and "packages" in manifest["manifest"]
    searcher = IndexSearcher.open(out, encoder=minilm_encoder)
    assert searcher.count() == total
    hits = searcher.search([changed.queries[0].text], k=total)[0]
    assert len(hits) >= 0.9 * total and len({h.id for h in hits}) == len(hits)  # HNSW may miss a few
    assert next(h for h in searcher.search([changed.corpus[0].full_text], k=1)[0]).payload["text"].endswith("(revised)")
    if retrieval == "hybrid":  # the BM25 half holds every document once, the revised one with its new text
        lexical = searcher.store.search_text(texts=["(revised)"], k=total)[0]
        revised = {d.id for d in changed.corpus if re.search(r"\brevised\b", d.full_text.lower())}
        assert first.id in revised and {h.id for h in lexical} == revised
        everything = searcher.store.search_text(texts=[" ".join(d.full_text for d in changed.corpus)], k=2 * total)[0]
        assert len(everything) == len({h.id for h in everything}) == total
    searcher.close()
    if store == "faiss":
        stored = FaissIndex.read(out / INDEX_FILE, resumed.resolved)
        assert stored.ntotal == total  # the FAISS index itself holds no duplicate


def test_milvus_lite_flat_index_returns_the_exact_top_10(scifact_small, minilm_encoder, vector_cache, tmp_path) -> None:
    build_index(scifact_small, minilm_encoder, out=tmp_path, store="milvus", cache=vector_cache)
    searcher = IndexSearcher.open(tmp_path, encoder=minilm_encoder)
    documents = embed(minilm_encoder, [d.full_text for d in scifact_small.corpus], role="document", cache=vector_cache)
    queries = [q.text for q in scifact_small.queries]
    expected = exact_ids(
        embed(minilm_encoder, queries, role="query", cache=vector_cache),
        documents,
        [d.id for d in scifact_small.corpus],
    )
    served = [[h.id for h in hits] for hits in searcher.search(queries, k=10)]
    assert np.mean([a == b for a, b in zip(served, expected, strict=True)]) >= 0.99
    none = searcher.search(queries[:1], k=5, where={"source": 'x" or id != "'})
    assert none == [[]]
    searcher.close()


def test_milvus_uri_must_be_a_db_path_or_a_cluster(tmp_path) -> None:
    config = IndexConfig().resolved(documents=10, model_dim=8)
    with pytest.raises(EmbedlabError, match=r"must end in \.db"):
        MilvusStore.open(str(tmp_path / "milvus"), config=config, dim=8, create=True)
    with pytest.raises(EmbedlabError, match="no Milvus Lite database here"):
        MilvusStore.open(str(tmp_path / "missing.db"), config=config, dim=8)


def test_an_index_folder_refuses_another_model_or_other_settings(scifact_small, hashing_encoder, tmp_path) -> None:
    from conftest import HashingEncoder

    build_index(scifact_small, hashing_encoder, out=tmp_path, config=IndexConfig())
    with pytest.raises(EmbedlabError, match="another --out"):
        build_index(scifact_small, hashing_encoder, out=tmp_path, config=IndexConfig(index="hnsw"))
    other = HashingEncoder(name="other")
    with pytest.raises(EmbedlabError, match="another --out"):
        build_index(scifact_small, other, out=tmp_path, config=IndexConfig())
    with pytest.raises(EmbedlabError, match="not the one this index was built with"):
        IndexSearcher.open(tmp_path, encoder=other)
    with pytest.raises(EmbedlabError, match="no index here"):
        IndexSearcher.open(tmp_path / "missing")


def test_metadata_payloads_keep_scalars_only(hashing_encoder, tmp_path) -> None:
    dataset = RetrievalDataset(
        name="notes",
        corpus=(
            Document("a#0", "cats purr", title="Cats", metadata={"source": "a.md", "page": 2, "tags": ["x"]}),
            Document("b#0", "dogs bark", title="Dogs"),
        ),
        queries=(),
        qrels={},
    )
    build_index(dataset, hashing_encoder, out=tmp_path)
    searcher = IndexSearcher.open(tmp_path, encoder=hashing_encoder)
    hits = {h.id: h.payload for h in searcher.search(["cats"], k=2)[0]}
    assert hits["a#0"] == {"source": "a.md", "page": 2, "title": "Cats", "text": "cats purr"}
    assert hits["b#0"] == {"source": "notes", "title": "Dogs", "text": "dogs bark"}
    searcher.close()


# --- the command ---------------------------------------------------------------------------------------------


def test_index_command_builds_and_reruns_without_duplicates(
    scifact_small, embedlab_cache, tmp_path, write_beir
) -> None:
    data = write_beir(tmp_path / "data", scifact_small)
    args = ["index", "--model", "minilm-l6", "--data", str(data), "--out", str(tmp_path / "idx"), "--index", "ivf"]
    args += ["--quantize", "int8", "--dim", "256", "--cache", str(embedlab_cache)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "ivf nlist7 nprobe16 int8 d256" in first.stdout
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    manifest = IndexManifest.read(tmp_path / "idx")
    assert manifest.counts["unchanged"] == manifest.counts["stored"] == len(scifact_small.corpus)
    assert manifest.resolved.dim == 256 and manifest.model["source"] == "minilm-l6"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "milvus", "--quantize", "binary"], "valid --index/--quantize pairs"),
        (["--index", "graph"], "unknown index 'graph'"),
        (["--dim", "many"], "--dim takes a whole number"),
    ],
)
def test_index_command_answers_bad_settings_in_one_line(args, message, tmp_path) -> None:
    result = runner.invoke(app, ["index", "--data", "stdlib-docs", "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and "\n" not in result.output.strip()
    assert message in result.output


@pytest.mark.parametrize("command", ["index", "serve"])
def test_deploy_commands_have_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"embedlab {command}" in result.output
