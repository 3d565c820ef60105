"""What `select` recommends, deployed: bm25 and hybrid indexes served over HTTP return what compare/select rank,
and the OpenAI embeddings API answers the official `openai` client and LangChain's OpenAIEmbeddings."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from embedlab.cli import app as cli
from embedlab.evaluate.metrics import rank
from embedlab.fusion import RRF_K, reciprocal_rank_fusion
from embedlab.index import IndexManifest, IndexSearcher, build_index
from embedlab.index.build import FUSION_DEPTH, parse_system
from embedlab.retrieval import BM25Retriever, DenseRetriever
from embedlab.serve import create_app

KEY = "hybrid-key-31c9"
runner = CliRunner()


@pytest.fixture(scope="module")
def reference_runs(scifact_small, minilm_encoder, vector_cache) -> dict[str, dict[str, dict[str, float]]]:
    """compare's bm25 and minilm-l6 runs and select's hybrid of them, at select's depth."""
    lexical = BM25Retriever().retrieve(scifact_small, k=FUSION_DEPTH).run
    dense = DenseRetriever(minilm_encoder, cache=vector_cache).retrieve(scifact_small, k=FUSION_DEPTH).run
    return {"bm25": lexical, "hybrid": reciprocal_rank_fusion([lexical, dense], k=RRF_K, depth=FUSION_DEPTH)}


@pytest.fixture(scope="module")
def hybrid_index(scifact_small, minilm_encoder, vector_cache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hybrid") / "faiss"
    build_index(scifact_small, minilm_encoder, retrieval="hybrid", out=out, cache=vector_cache, batch_size=100)
    return out


@pytest.fixture(scope="module")
def served(hybrid_index: Path, minilm_encoder, live_server) -> Iterator[str]:
    with live_server(create_app(hybrid_index, api_key=KEY, encoder=minilm_encoder)) as url:
        yield url


def agreement(searcher: IndexSearcher, dataset, run) -> float:
    same = [[h.id for h in searcher.search([q.text], k=10)[0]] == rank(run[q.id], 10) for q in dataset.queries]
    return float(np.mean(same))


def test_system_names_parse() -> None:
    assert parse_system("bm25") == ("bm25", None)
    assert parse_system("hybrid") == ("hybrid", "minilm-l6")
    assert parse_system("hybrid:mpnet-base") == ("hybrid", "mpnet-base")
    assert parse_system("models/tuned") == ("dense", "models/tuned")
    with pytest.raises(Exception, match="dense model"):
        parse_system("hybrid:bm25")


def test_served_hybrid_top_10_equals_selects_hybrid(served: str, scifact_small, reference_runs) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    same = []
    with httpx.Client(base_url=served, headers=headers, timeout=60) as client:
        health = client.get("/health").json()
        assert health["model"] == "hybrid:minilm-l6" and health["index"] == "flat d384 + bm25"
        for query in scifact_small.queries:
            response = client.post("/search", json={"query": query.text, "k": 10})
            assert response.status_code == 200, response.text
            hits = response.json()["hits"]
            assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
            same.append([h["id"] for h in hits] == rank(reference_runs["hybrid"][query.id], 10))
    assert np.mean(same) >= 0.99


def test_bm25_index_from_the_cli_matches_compare_and_serves_no_embeddings(
    scifact_small, reference_runs, tmp_path: Path, live_server, write_beir
) -> None:
    data = write_beir(tmp_path / "data", scifact_small)
    out = tmp_path / "bm25"
    result = runner.invoke(cli, ["index", "--model", "bm25", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = IndexManifest.read(out)
    assert manifest.retrieval == "bm25" and manifest.model["dim"] == 0 and manifest.complete
    assert not (out / "index.faiss").exists() and list(out.glob("bm25-*"))
    searcher = IndexSearcher.open(out)
    assert searcher.encoder is None
    assert agreement(searcher, scifact_small, reference_runs["bm25"]) == 1.0
    query = scifact_small.queries[0].text
    assert [len(hits) for hits in searcher.search([query], k=5, where={"source": "data"})] == [5]
    assert searcher.search([query], k=5, where={"source": "nowhere"}) == [[]]
    searcher.close()
    with live_server(create_app(out)) as url:
        body = httpx.post(f"{url}/search", json={"query": scifact_small.queries[0].text, "k": 3}).json()
        assert [h["id"] for h in body["hits"]] == rank(reference_runs["bm25"][scifact_small.queries[0].id], 3)
        assert httpx.post(f"{url}/embed", json={"texts": ["a"]}).status_code == 404
        assert httpx.get(f"{url}/v1/models").status_code == 404
    refused = runner.invoke(cli, ["index", "--model", "bm25", "--data", str(data), "--out", str(out), "--index=hnsw"])
    assert refused.exit_code == 2 and "bm25 has no vectors" in refused.output


def test_milvus_bm25_and_hybrid_agree_with_compare(
    scifact_small, minilm_encoder, vector_cache, reference_runs, tmp_path: Path
) -> None:
    """Milvus analyses text itself: the standard tokenizer with bm25s' stop words plus every single-character word
    gives bm25s' tokens (benchmarks/hybrid_agreement.py measures it on all of SciFact: 300/300)."""
    for retrieval in ("bm25", "hybrid"):
        out = tmp_path / retrieval
        model = "bm25" if retrieval == "bm25" else minilm_encoder
        build_index(scifact_small, model, retrieval=retrieval, out=out, store="milvus", cache=vector_cache)
        searcher = IndexSearcher.open(out, encoder=minilm_encoder)
        assert agreement(searcher, scifact_small, reference_runs[retrieval]) >= 0.99
        filtered = searcher.search([scifact_small.queries[0].text], k=5, where={"source": "scifact-small"})[0]
        assert len(filtered) == 5
        assert searcher.search([scifact_small.queries[0].text], k=5, where={"source": "nowhere"}) == [[]]
        searcher.close()


def test_a_killed_hybrid_milvus_build_resumes_without_loss_or_duplicates(
    scifact_small, embedlab_cache: Path, tmp_path: Path, write_beir
) -> None:
    data = write_beir(tmp_path / "data", scifact_small)
    out = tmp_path / "index"
    command = [sys.executable, "-c", "from embedlab.cli import main; main()", "index", "--model", "hybrid:minilm-l6"]
    command += ["--data", str(data), "--out", str(out), "--store", "milvus", "--batch-size", "4"]
    env = {**os.environ, "EMBEDLAB_CACHE": str(embedlab_cache), "EMBEDLAB_BACKEND": "torch"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    wal = out / "milvus.db" / "collections" / "documents" / "wal"
    while not any(wal.glob("wal_data_*")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until Milvus Lite has logged the first upserted batch
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not IndexManifest.read(out).complete  # killed in the middle
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = IndexManifest.read(out)
    total = len(scifact_small.corpus)
    assert manifest.complete and manifest.counts["stored"] == total
    assert manifest.counts["unchanged"] > 0 and manifest.counts["added"] > 0  # the kill came mid-way; kept its work
    searcher = IndexSearcher.open(out)
    everything = searcher.store.search_text(texts=[" ".join(d.full_text for d in scifact_small.corpus)], k=2 * total)
    assert len(everything[0]) == len({h.id for h in everything[0]}) == total
    searcher.close()


# --- the OpenAI embeddings API --------------------------------------------------------------------------


def embed_vectors(url: str, texts: list[str]) -> np.ndarray:
    response = httpx.post(f"{url}/embed", json={"texts": texts}, headers={"X-API-Key": KEY}, timeout=60)
    assert response.status_code == 200, response.text
    return np.array(response.json()["vectors"], dtype=np.float32)


def test_the_openai_client_round_trips_with_the_key(served: str) -> None:
    import openai

    texts = ["vitamin D and bone density", "statins lower cholesterol", "a cat"]
    expected = embed_vectors(served, texts)
    client = openai.OpenAI(base_url=f"{served}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["minilm-l6"]
    as_base64 = client.embeddings.create(model="minilm-l6", input=texts)  # the client asks for base64 by default
    as_float = client.embeddings.create(model="minilm-l6", input=texts, encoding_format="float")
    for response in (as_base64, as_float):
        assert [d.index for d in response.data] == [0, 1, 2] and response.model == "minilm-l6"
        np.testing.assert_allclose(np.array([d.embedding for d in response.data]), expected, atol=1e-6)
        assert response.usage.prompt_tokens == response.usage.total_tokens > len(texts)
    one = client.embeddings.create(model="minilm-l6", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, expected[0], atol=1e-6)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="minilm-l6", input=["x"] * 33)
    assert len(client.embeddings.create(model="minilm-l6", input="x", dimensions=384).data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="minilm-l6", input="x", dimensions=256)


def test_the_openai_api_refuses_without_the_key(served: str) -> None:
    import openai

    body = {"model": "minilm-l6", "input": "statins"}
    missing = httpx.post(f"{served}/v1/embeddings", json=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key" and "detail" not in missing.json()
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=f"{served}/v1", api_key="wrong", max_retries=0).embeddings.create(**body)
    bad = httpx.post(f"{served}/v1/embeddings", json={**body, "encoding_format": "int8"}, headers={"X-API-Key": KEY})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "encoding_format"
    raw = httpx.post(f"{served}/v1/embeddings", json={**body, "encoding_format": "base64"}, headers={"X-API-Key": KEY})
    vector = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, embed_vectors(served, ["statins"])[0], atol=1e-6)


def test_langchain_openai_embeddings_equal_embed(served: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="minilm-l6",
        base_url=f"{served}/v1",
        api_key=KEY,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,  # send text, not tiktoken ids (OpenAI's own tokenizer)
        chunk_size=16,
        max_retries=0,
    )
    documents = [f"document {i} about vitamin D" for i in range(20)]  # two requests of at most 16
    expected = np.concatenate([embed_vectors(served, documents[:16]), embed_vectors(served, documents[16:])])
    np.testing.assert_allclose(np.array(embeddings.embed_documents(documents)), expected, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query("statins"), embed_vectors(served, ["statins"])[0], atol=1e-6)
