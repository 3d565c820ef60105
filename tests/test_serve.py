"""The search service over real HTTP: a uvicorn server on 127.0.0.1 in a thread, a flat FAISS index of real data."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner

from embedlab.cli import app as cli
from embedlab.embedding import embed
from embedlab.errors import EmbedlabError
from embedlab.retrieval import exact_top_k
from embedlab.serve import create_app

KEY = "test-key-7f3a"
MAX_K = 50
MAX_CHARS = 300
runner = CliRunner()


@dataclass
class Served:
    url: str
    app: Any


@pytest.fixture(scope="module")
def served(scifact_small_flat_index: Path, minilm_encoder, live_server) -> Iterator[Served]:
    application = create_app(
        scifact_small_flat_index, api_key=KEY, max_k=MAX_K, max_query_chars=MAX_CHARS, encoder=minilm_encoder
    )
    with live_server(application) as url:
        yield Served(url, application)


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, headers={"X-API-Key": KEY}, timeout=30) as http:
        yield http


def assert_clean_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "detail" in response.json()
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_health_and_the_openapi_spec_are_served(client: httpx.Client, served: Served, scifact_small) -> None:
    health = httpx.get(f"{served.url}/health")  # no key needed
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "documents": len(scifact_small.corpus),
        "model": "minilm-l6",
        "store": "faiss",
        "index": "flat d384",
    }
    spec = client.get("/openapi.json").json()
    assert {"/search", "/embed", "/health"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert spec["paths"]["/search"]["post"]["requestBody"]
    assert client.get("/docs").status_code == 200


def test_served_top_10_equals_the_exact_top_10(
    client: httpx.Client, scifact_small, minilm_encoder, vector_cache
) -> None:
    doc_ids = [d.id for d in scifact_small.corpus]
    documents = embed(minilm_encoder, [d.full_text for d in scifact_small.corpus], role="document", cache=vector_cache)
    queries = embed(minilm_encoder, [q.text for q in scifact_small.queries], role="query", cache=vector_cache)
    _, exact = exact_top_k(queries, documents, 10)
    same = []
    for query, expected in zip(scifact_small.queries, exact, strict=True):
        response = client.post("/search", json={"query": query.text, "k": 10})
        assert response.status_code == 200, response.text
        body = response.json()
        hits = body["hits"]
        assert body["k"] == 10 and body["model"] == "minilm-l6" and len(hits) == 10
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert {"title", "text", "source"} <= set(hits[0]["payload"])
        same.append([h["id"] for h in hits] == [doc_ids[j] for j in expected])
    assert np.mean(same) >= 0.99


def test_sixteen_concurrent_clients_get_what_one_client_gets(served: Served, scifact_small) -> None:
    """A bounded soak (benchmarks/serve_soak.py runs five minutes): 16 clients at once, no error, and every answer
    the one the same query gets alone, although request threads share the tokenizer, the model and the store."""
    from concurrent.futures import ThreadPoolExecutor

    queries = [q.text for q in scifact_small.queries[:8]]
    with httpx.Client(base_url=served.url, headers={"X-API-Key": KEY}, timeout=60) as http:
        alone = {q: [h["id"] for h in http.post("/search", json={"query": q, "k": 10}).json()["hits"]] for q in queries}
    deadline = time.monotonic() + 15

    def client_loop(offset: int) -> list[tuple[int, str, list[str]]]:
        answers = []
        with httpx.Client(base_url=served.url, headers={"X-API-Key": KEY}, timeout=60) as http:
            for turn in range(12):
                if time.monotonic() > deadline:
                    break
                query = queries[(offset + turn) % len(queries)]
                response = http.post("/search", json={"query": query, "k": 10})
                ids = [h["id"] for h in response.json()["hits"]] if response.status_code == 200 else []
                answers.append((response.status_code, query, ids))
        return answers

    with ThreadPoolExecutor(16) as pool:
        answers = [a for batch in pool.map(client_loop, range(16)) for a in batch]
    assert len(answers) >= 16
    assert {status for status, _, _ in answers} == {200}
    assert all(ids == alone[query] for _, query, ids in answers)


def test_search_filters_on_payload_fields(client: httpx.Client, scifact_small) -> None:
    query = scifact_small.queries[0].text
    hits = client.post("/search", json={"query": query, "k": 5, "filter": {"source": "scifact-small"}}).json()["hits"]
    assert len(hits) == 5 and all(h["payload"]["source"] == "scifact-small" for h in hits)
    none = client.post("/search", json={"query": query, "k": 5, "filter": {"source": "elsewhere"}})
    assert none.status_code == 200 and none.json()["hits"] == []


def test_embed_returns_the_index_vectors(client: httpx.Client, minilm_encoder) -> None:
    texts = ["vitamin D and bone density", "a cat"]
    body = client.post("/embed", json={"texts": texts, "role": "document"}).json()
    vectors = np.array(body["vectors"], dtype=np.float32)
    assert body["dim"] == 384 and vectors.shape == (2, 384)
    np.testing.assert_allclose(vectors, minilm_encoder.encode(texts, role="document"), atol=1e-5)


def test_the_api_key_is_required(served: Served) -> None:
    body = {"query": "statins", "k": 3}
    assert_clean_error(httpx.post(f"{served.url}/search", json=body), 401)
    assert_clean_error(httpx.post(f"{served.url}/search", json=body, headers={"X-API-Key": "nope"}), 403)
    assert_clean_error(httpx.post(f"{served.url}/embed", json={"texts": ["a"]}), 401)
    assert httpx.post(f"{served.url}/search", json=body, headers={"X-API-Key": KEY}).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "statins", "k": 0}, "k"),
        ({"query": "statins", "k": MAX_K + 1}, "k"),
        ({"query": "statins", "k": "5"}, "k"),
        ({"query": ""}, "query"),
        ({"query": "x" * (MAX_CHARS + 1)}, "query"),
        ({"query": "statins", "unknown": 1}, "unknown"),
        ({"query": "statins", "filter": {"not a name": "x"}}, "filter"),
        ({"query": "statins", "filter": {"source": {"$ne": 1}}}, "filter"),
        ({"k": 3}, "query"),
    ],
)
def test_bad_searches_get_a_clear_422(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = client.post("/search", json=body)
    assert_clean_error(response, 422)
    assert any(field in error["loc"] for error in response.json()["detail"])


def test_malformed_oversized_and_misrouted_requests(client: httpx.Client) -> None:
    assert_clean_error(client.post("/search", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert_clean_error(client.post("/embed", json={"texts": ["a"] * 33}), 422)
    huge = json.dumps({"query": "x" * 2_000_000}).encode()
    assert_clean_error(client.post("/search", content=huge, headers={"content-type": "application/json"}), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        yield b'{"query": "'
        for _ in range(64):
            yield b"y" * 65536
        yield b'"}'

    assert_clean_error(client.post("/search", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert_clean_error(client.get("/search"), 405)
    assert_clean_error(client.get("/nowhere"), 404)


class Broken:
    def __init__(self, error: Exception):
        self.error = error

    def search(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("secret detail at /srv/index/records.sqlite"), 500), (EmbedlabError("/srv/secret stale"), 503)],
)
def test_failures_answer_json_without_internals(
    client: httpx.Client, served: Served, error: Exception, status: int
) -> None:
    searcher = served.app.state.searcher
    served.app.state.searcher = Broken(error)
    try:
        response = client.post("/search", json={"query": "statins"})
    finally:
        served.app.state.searcher = searcher
    assert_clean_error(response, status)
    assert "secret" not in response.text and "RuntimeError" not in response.text


def test_the_api_fuzzed_from_its_own_spec_never_fails(served: Served) -> None:
    """Valid and invalid requests generated from /openapi.json: never a 5xx, every answer as documented.

    (Hypothesis strategies per operation: schemathesis' lazy pytest fixture does not run on pytest 9.)
    """
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        "POST /search", "POST /embed", "GET /health", "POST /v1/embeddings", "GET /v1/models"
    }  # fmt: skip
    seen: list[int] = []
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @given(case=cases)
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(headers={"X-API-Key": KEY}, timeout=60)
            seen.append(response.status_code)
            assert response.status_code < 500, response.text
            case.validate_response(response, headers={"X-API-Key": KEY})

        check()
    assert 200 in seen and 422 in seen


def test_serve_command_runs_uvicorn_on_the_given_address(
    scifact_small_flat_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    monkeypatch.setenv("EMBEDLAB_API_KEY", "from-the-environment")
    result = runner.invoke(cli, ["serve", "--index", str(scifact_small_flat_index), "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert seen["app"].title == "embedlab search"


def test_serve_command_refuses_a_missing_index(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["serve", "--index", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and "no index here" in result.output
    assert "\n" not in result.output.strip()
