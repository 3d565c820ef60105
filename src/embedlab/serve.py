"""The search service: an index folder behind HTTP (FastAPI), for ``embedlab serve``.

:func:`create_app` opens the index once (:class:`~embedlab.index.searcher.IndexSearcher`: the store and the model
it was built with) and returns a FastAPI application. ``/search`` answers with whatever was indexed: the dense
model, ``bm25`` or the ``hybrid`` (hits ranked as ``embedlab compare``/``select`` rank that system); a ``bm25``
index has no model, so it serves no embeddings.

=======================  ========================================================================================
``POST /search``         ``{"query": "...", "k": 10, "filter": {"source": "a.pdf"}}`` → ``{"hits": [{"id",
                         "score", "payload"}, ...], "k", "model", "took_ms"}``; hits best first; ``filter`` is
                         equality on payload fields (optional).
``POST /embed``          ``{"texts": ["...", ...], "role": "query"}`` → ``{"vectors": [[...]], "dim", "model"}``,
                         the vectors as the index holds them (truncated to its dimension, unit length).
``POST /v1/embeddings``  the OpenAI embeddings API, so OpenAI's clients and LangChain's ``OpenAIEmbeddings``
                         (``check_embedding_ctx_length=False``) use the served model: ``{"input": "..." or [...],
                         "model", "encoding_format": "float"|"base64"}`` → ``{"object": "list", "data":
                         [{"object": "embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens",
                         "total_tokens"}}``; the vectors are ``/embed``'s (query role unless ``input_type``
                         says ``document``), base64 is little-endian float32 as OpenAI sends it.
``GET /v1/models``       the served model in OpenAI's list shape (``model`` must name it: its catalog name, the
                         folder or hub id it loads from).
``GET /health``          ``{"status": "ok", "documents", "model", "store", "index"}``; never needs the key.
``GET /docs``            the OpenAPI documentation (``/openapi.json`` is the spec).
=======================  ========================================================================================

Guards: with ``api_key`` set, every route but ``/health`` and the docs needs the key, in ``X-API-Key`` or as
``Authorization: Bearer <key>`` (what OpenAI clients send): missing: 401, wrong: 403; compared in constant time.
Errors under ``/v1/`` come in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}`` (invalid
requests 400, as OpenAI answers them), so its clients raise their usual exceptions. ``k`` is 1…``max_k``, texts
1…``max_query_chars`` characters, ``/embed`` and ``/v1/embeddings`` take at most ``max_texts`` texts, filters at
most 16 fields (422 otherwise, naming the field); a body over ``max_body_bytes`` is refused with 413 before it is
parsed. Every other error is JSON ``{"detail": ...}``; an
unexpected one is logged server-side and answered ``500 {"detail": "internal server error"}`` with nothing of
its internals.

Example::

    >>> app = create_app(Path("indexes/scifact"), api_key=os.environ.get("EMBEDLAB_API_KEY"))
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)      # what `embedlab serve` does
    $ curl -s localhost:8000/search -H 'content-type: application/json' -d '{"query": "vitamin D", "k": 3}'
"""

from __future__ import annotations

import importlib.metadata
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal

from embedlab.errors import EmbedlabError
from embedlab.index.searcher import IndexSearcher
from embedlab.index.store import FIELD_NAME
from embedlab.models.encoders import Encoder

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
OPENAI_PREFIX = "/v1/"
MAX_FILTER_FIELDS = 16
MAX_FILTER_VALUE_CHARS = 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: answer 413 to a request whose body exceeds ``max_bytes`` (declared or actually sent)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.responses import JSONResponse

        message = f"request body larger than {self.max_bytes} bytes"
        body = openai_error(message, code="request_too_large") if is_openai(scope) else {"detail": message}
        response = JSONResponse(body, status_code=413)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def is_openai(scope: Scope) -> bool:
    """Whether a request is for the OpenAI-compatible routes (whose errors take OpenAI's shape)."""
    return str(scope.get("path", "")).startswith(OPENAI_PREFIX)


def openai_error(
    message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An error body as OpenAI's API writes one."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def encode_base64(vector: Any) -> str:
    """A vector as OpenAI's ``encoding_format: base64`` sends it: little-endian float32 bytes, base64."""
    import base64

    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _utf8(text: str) -> str:
    """Refuse text that cannot be encoded (lone surrogates): the tokenizer and the stores would fail on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


def _number(value: Any) -> Any:
    """Numbers only (JSON's 10.0 is the integer 10; "10" and true are not numbers)."""
    if isinstance(value, str | bool):
        raise ValueError("must be a number, not a string or a boolean")
    return value


def create_app(
    index_dir: Path,
    *,
    api_key: str | None = None,
    max_k: int = 100,
    max_query_chars: int = 2048,
    max_texts: int = 32,
    max_body_bytes: int | None = None,
    encoder: Encoder | None = None,
) -> Any:
    """The FastAPI application serving the index in ``index_dir``; see the module docstring.

    ``encoder`` replaces loading the model recorded in the index (it must have the same fingerprint).
    ``max_body_bytes`` defaults to what the largest valid ``/embed`` request can take (six bytes per character,
    JSON's worst case) plus 16 KiB.
    """
    import annotated_types
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import (
        AfterValidator,
        BaseModel,
        BeforeValidator,
        ConfigDict,
        Field,
        Strict,
        StrictBool,
        StringConstraints,
        WithJsonSchema,
    )
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if max_k < 1 or max_query_chars < 1 or max_texts < 1:
        raise EmbedlabError("max_k, max_query_chars and max_texts must be ≥ 1")
    if api_key is not None and not api_key.strip():
        raise EmbedlabError("the API key is empty; unset it to serve without one")
    searcher = IndexSearcher.open(Path(index_dir), encoder=encoder)
    embeds = searcher.encoder is not None
    served_dim = searcher.dim
    if embeds:
        searcher.embed(["warm up"])  # load the model's weights now, not on the first request
    limit = max_body_bytes or 6 * max_query_chars * max_texts + 16 * 1024

    Text = Annotated[str, StringConstraints(min_length=1, max_length=max_query_chars), AfterValidator(_utf8)]
    FieldName = Annotated[str, StringConstraints(pattern=FIELD_NAME.pattern)]
    FilterValue = (
        StrictBool
        | Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
        | Annotated[float, Field(allow_inf_nan=False)]
        | Annotated[str, StringConstraints(max_length=MAX_FILTER_VALUE_CHARS), AfterValidator(_utf8)]
    )

    # pydantic describes constrained keys as patternProperties, which lets any other key through; say it exactly.
    Filter = Annotated[
        dict[FieldName, FilterValue],
        Field(max_length=MAX_FILTER_FIELDS),
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": MAX_FILTER_FIELDS,
                "propertyNames": {"pattern": FIELD_NAME.pattern},
                "additionalProperties": {
                    "anyOf": [
                        {"type": "boolean"},
                        {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
                        {"type": "number"},
                        {"type": "string", "maxLength": MAX_FILTER_VALUE_CHARS},
                    ]
                },
            }
        ),
    ]

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        query: Text = Field(description="The query text.")
        k: Annotated[int, BeforeValidator(_number)] = Field(
            10, ge=1, le=max_k, strict=False, description="How many hits to return."
        )
        filter: Filter | None = Field(None, description="Payload fields the hits must equal, e.g. {'source': 'x'}.")

    class HitModel(BaseModel):
        id: str
        score: float
        payload: dict[str, Any]

    class SearchResponse(BaseModel):
        hits: list[HitModel]
        k: int
        model: str
        took_ms: float

    class EmbedRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        texts: list[Text] = Field(min_length=1, max_length=max_texts)
        role: Literal["query", "document"] = "query"

    class EmbedResponse(BaseModel):
        vectors: list[list[float]]
        dim: int
        model: str

    class OpenAIEmbeddingsRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        input: Text | Annotated[list[Text], Field(min_length=1, max_length=max_texts)] = Field(
            description=f"A text or a list of at most {max_texts} texts (token arrays are not taken)."
        )
        model: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
            description="The served model (GET /v1/models)."
        )
        encoding_format: Literal["float", "base64"] = "float"
        # Constraints before the validator, so the schema says minimum/maximum (JSON's 384.0 is the integer 384).
        dimensions: (
            Annotated[
                int,
                Strict(False),
                annotated_types.Ge(served_dim),
                annotated_types.Le(served_dim),
                BeforeValidator(_number),
            ]
            | None
        ) = Field(None, description=f"The served dimension, {served_dim}, if given (the index fixes it).")
        user: Annotated[str, StringConstraints(max_length=256)] | None = None
        input_type: Literal["query", "document"] = Field(
            "query", description="embedlab extension: the role to encode in (models like e5 tell them apart)."
        )

    class OpenAIEmbedding(BaseModel):
        object: Literal["embedding"]
        index: int
        embedding: list[float] | str

    class OpenAIUsage(BaseModel):
        prompt_tokens: int
        total_tokens: int

    class OpenAIEmbeddingsResponse(BaseModel):
        object: Literal["list"]
        data: list[OpenAIEmbedding]
        model: str
        usage: OpenAIUsage

    class OpenAIModel(BaseModel):
        id: str
        object: Literal["model"]
        created: int
        owned_by: str

    class OpenAIModels(BaseModel):
        object: Literal["list"]
        data: list[OpenAIModel]

    class OpenAIErrorBody(BaseModel):
        message: str
        type: str
        param: str | None
        code: str | None

    class OpenAIError(BaseModel):
        error: OpenAIErrorBody

    class Health(BaseModel):
        status: Literal["ok"]
        documents: int
        model: str
        store: str
        index: str

    class ErrorResponse(BaseModel):
        detail: str | list[dict[str, Any]]

    text = {
        400: "request body is not text (e.g. not UTF-8)",
        401: "API key missing",
        403: "API key wrong",
        404: "no such model",
        413: "request body too large",
        422: "invalid request",
        500: "internal server error",
        503: "the index could not answer",
    }

    def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
        return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}

    def openai_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
        described = {**text, 400: "invalid request"}
        return {code: {"model": OpenAIError, "description": described[code]} for code in codes}

    dependencies = []
    guarded: tuple[int, ...] = (400, 413, 422, 500)
    if api_key is not None:
        header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The service's API key.")
        bearer = HTTPBearer(auto_error=False, description="The service's API key, as OpenAI clients send it.")
        expected = api_key.encode()

        def require_key(given: str | None, credentials: HTTPAuthorizationCredentials | None) -> None:
            given = given or (credentials.credentials if credentials is not None else None)
            if not given:
                raise HTTPException(
                    401, f"missing API key: send it in the {API_KEY_HEADER} header or as Authorization: Bearer"
                )
            if not secrets.compare_digest(given.encode("utf-8", "replace"), expected):
                raise HTTPException(403, "wrong API key")

        require_key.__annotations__ = {
            "given": Annotated[str | None, Depends(header)],
            "credentials": Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            "return": None,
        }
        dependencies.append(Depends(require_key))
        guarded = (401, 403, *guarded)

    manifest = searcher.manifest
    model_name = manifest.system
    embedding_model = str(manifest.model.get("name", ""))
    model_names = {embedding_model, str(manifest.model.get("source", ""))}
    if searcher.encoder is not None:
        model_names.add(searcher.encoder.spec.model_id)
    app = FastAPI(
        title="embedlab search",
        version=importlib.metadata.version("embedlab"),
        description=(
            f"Search over {manifest.data.get('name')} ({manifest.data.get('documents')} documents) with "
            f"{model_name}, {manifest.store} index '{manifest.label}'."
        ),
    )
    app.state.searcher = searcher

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if is_openai(request.scope):
            code = {401: "missing_api_key", 403: "invalid_api_key", 404: "not_found", 405: "method_not_allowed"}
            kind = "authentication_error" if exc.status_code in (401, 403) else "invalid_request_error"
            body = openai_error(str(exc.detail), kind=kind, code=code.get(exc.status_code))
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        if is_openai(request.scope):
            first = exc.errors()[0] if exc.errors() else {}
            where = [str(part) for part in first.get("loc", ()) if part != "body"]
            message = f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid request')}"
            return JSONResponse(openai_error(message, param=where[0] if where else None), status_code=400)
        detail = [
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg")),
                "type": error.get("type"),
            }
            for error in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(EmbedlabError)
    async def index_failed(request: Request, exc: EmbedlabError) -> JSONResponse:
        log.error("index error on %s: %s", request.url.path, exc)
        message = "the index could not answer; see the server log"
        if is_openai(request.scope):
            return JSONResponse(openai_error(message, kind="server_error"), status_code=503)
        return JSONResponse({"detail": message}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        if is_openai(request.scope):
            return JSONResponse(openai_error("internal server error", kind="server_error"), status_code=500)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    def search(request: SearchRequest) -> dict[str, Any]:
        """The ``k`` documents closest to the query, best first, with their payloads."""
        tick = time.perf_counter()
        hits = app.state.searcher.search([request.query], k=request.k, where=request.filter or None)[0]
        return {
            "hits": [hit.to_dict() for hit in hits],
            "k": request.k,
            "model": model_name,
            "took_ms": 1000 * (time.perf_counter() - tick),
        }

    def embed(request: EmbedRequest) -> dict[str, Any]:
        """Vectors of the texts as the index holds them (truncated to its dimension, unit length)."""
        vectors = app.state.searcher.embed(request.texts, role=request.role)
        return {"vectors": vectors.tolist(), "dim": int(vectors.shape[1]), "model": embedding_model}

    def openai_embeddings(request: OpenAIEmbeddingsRequest) -> Any:
        """The OpenAI embeddings API: the served model's vectors, as ``/embed`` returns them."""
        if request.model not in model_names:
            message = f"the model '{request.model}' is not served here; this service serves '{embedding_model}'"
            return JSONResponse(openai_error(message, param="model", code="model_not_found"), status_code=404)
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        vectors = app.state.searcher.embed(texts, role=request.input_type)
        tokens = sum(app.state.searcher.token_counts(texts))
        encode = encode_base64 if request.encoding_format == "base64" else (lambda v: v.tolist())
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "model": embedding_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def openai_models() -> dict[str, Any]:
        """The served model, in the OpenAI list shape."""
        created = int(Path(index_dir, "index.json").stat().st_mtime)
        entry = {"id": embedding_model, "object": "model", "created": created, "owned_by": "embedlab"}
        return {"object": "list", "data": [entry]}

    def health() -> dict[str, Any]:
        """Whether the service is up, and what it serves."""
        return {
            "status": "ok",
            "documents": app.state.searcher.count(),
            "model": model_name,
            "store": manifest.store,
            "index": manifest.label,
        }

    # The request models are local classes, which string annotations (this module's __future__ import) cannot
    # name: give FastAPI the classes themselves.
    search.__annotations__ = {"request": SearchRequest, "return": dict[str, Any]}
    embed.__annotations__ = {"request": EmbedRequest, "return": dict[str, Any]}
    openai_embeddings.__annotations__ = {"request": OpenAIEmbeddingsRequest, "return": Any}
    openai_models.__annotations__ = {"return": dict[str, Any]}
    health.__annotations__ = {"return": dict[str, Any]}
    app.post("/search", response_model=SearchResponse, dependencies=dependencies, responses=errors(*guarded, 503))(
        search
    )
    if embeds:
        app.post("/embed", response_model=EmbedResponse, dependencies=dependencies, responses=errors(*guarded))(embed)
        openai_codes = tuple(c for c in guarded if c != 422)
        app.post(
            "/v1/embeddings",
            response_model=OpenAIEmbeddingsResponse,
            dependencies=dependencies,
            responses=openai_errors(*openai_codes, 404, 503),
        )(openai_embeddings)
        app.get(
            "/v1/models",
            response_model=OpenAIModels,
            dependencies=dependencies,
            responses=openai_errors(*(c for c in openai_codes if c in (401, 403, 500))),
        )(openai_models)
    app.get("/health", response_model=Health, responses=errors(500))(health)
    app.add_middleware(BodyLimit, max_bytes=limit)
    return app


def run(
    index_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_k: int = 100,
    log_level: str = "info",
) -> None:
    """Serve ``index_dir`` with uvicorn until interrupted (what ``embedlab serve`` runs)."""
    import uvicorn

    app = create_app(index_dir, api_key=api_key, max_k=max_k)
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=64, timeout_keep_alive=5)
