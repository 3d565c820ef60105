"""``embedlab index`` (build an index, or ``--sweep`` to measure what approximate search costs), ``embedlab serve``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, cast

import typer

from embedlab.cli._app import (
    BUNDLED,
    BackendOption,
    CacheOption,
    DataOption,
    DuplicateJudgementsOption,
    EngineOption,
    RayAddressOption,
    StrictOption,
    app,
    backend_scope,
    check_positive,
    embed_on_engine,
    load_retrieval_data,
    open_cache,
    open_engine,
    out_folder,
    user_errors,
)
from embedlab.errors import EmbedlabError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _quiet_milvus() -> None:
    # pymilvus logs every failed call with a traceback; embedlab reports the failure itself, in one line. Milvus
    # Lite's in-process gRPC server logs a traceback for AllocTimestamp, which pymilvus 3 calls and Lite lacks.
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)


def _dims(value: str | None) -> int | None:
    if value is None or value.strip().lower() in {"", "full", "none"}:
        return None
    try:
        return int(value)
    except ValueError:
        raise EmbedlabError(f"--dim takes a whole number of dimensions, e.g. 256 (got '{value}')") from None


@app.command()
@user_errors
def index(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="What to index: a dense model (catalog name, fine-tuned folder, hub id), bm25, or hybrid[:MODEL] "
            "(BM25 and MODEL, default minilm-l6, fused by reciprocal rank fusion as `select` measures it).",
        ),
    ] = "minilm-l6",
    data: DataOption = BUNDLED,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Index folder (default indexes/<data name>); with --sweep the report folder (runs/sweep-<data name>).",
        ),
    ] = None,
    store: Annotated[str, typer.Option("--store", help="faiss (embedded, in --out) or milvus.")] = "faiss",
    uri: Annotated[
        str | None,
        typer.Option("--uri", help="Milvus: a local path ending in .db (Milvus Lite) or http(s)://host:19530."),
    ] = None,
    collection: Annotated[str, typer.Option(help="Milvus collection name.")] = "documents",
    index_kind: Annotated[str, typer.Option("--index", help="flat (exact), hnsw or ivf.")] = "flat",
    quantize: Annotated[str, typer.Option("--quantize", help="none, int8, binary or pq.")] = "none",
    dim: Annotated[
        str | None, typer.Option("--dim", help="Keep the first N dimensions (Matryoshka), renormalised.")
    ] = None,
    hnsw_m: Annotated[int, typer.Option("--hnsw-m", help="HNSW neighbours per node.")] = 32,
    ef_construction: Annotated[int, typer.Option(help="HNSW candidate list while building.")] = 100,
    ef_search: Annotated[int, typer.Option(help="HNSW candidate list while searching.")] = 128,
    nlist: Annotated[int | None, typer.Option(help="IVF cells (default: 4·√documents).")] = None,
    nprobe: Annotated[int, typer.Option(help="IVF cells searched per query.")] = 16,
    pq_m: Annotated[int | None, typer.Option(help="PQ sub-vectors (default: dimension / 4).")] = None,
    sweep: Annotated[
        bool, typer.Option("--sweep", help="Measure recall, nDCG, speed and memory of many settings instead.")
    ] = False,
    target: Annotated[float, typer.Option(help="--sweep: the recall@10 against exact search to reach.")] = 0.99,
    split: Annotated[str, typer.Option(help="--sweep: the judgement split whose queries are measured.")] = "test",
    batch_size: Annotated[int, typer.Option(help="Documents per upsert batch.")] = 256,
    cache_dir: CacheOption = None,
    duplicate_judgements: DuplicateJudgementsOption = "error",
    strict: StrictOption = False,
    backend: BackendOption = "auto",
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Index a corpus into a vector store (re-running resumes and never duplicates), or sweep index settings.

    --model bm25 keeps the text for BM25 (scored as `compare` scores bm25); --model hybrid:MODEL keeps both halves in
    one store (FAISS with a bm25s index beside it; one Milvus collection with a BM25 function) and serves their
    reciprocal rank fusion, as `select` ranks its hybrid. --index/--quantize/--dim apply to the dense half.

    faiss takes --index flat/hnsw/ivf with --quantize none/int8/binary/pq (not hnsw with pq).

    milvus takes flat/none, hnsw/none, hnsw/int8, ivf/none and ivf/int8.

    --sweep measures flat, HNSW and IVF settings against exact search and recommends those reaching --target.

    Example:

        embedlab index --model minilm-l6 --data ../shared/data/scifact --store faiss --index hnsw --out indexes/scifact

        embedlab index --model minilm-l6 --data ../shared/data/scifact --store milvus --out indexes/scifact-milvus

        embedlab index --model hybrid:minilm-l6 --data ../shared/data/scifact --out indexes/scifact-hybrid

        embedlab index --model bm25 --data ../shared/data/scifact --store milvus --out indexes/scifact-bm25

        embedlab index --model minilm-l6 --data ../shared/data/scifact --store milvus --engine ray --out indexes/sf

        embedlab index --sweep --model minilm-l6 --data ../shared/data/scifact --out runs/sweep
    """
    from embedlab.index.config import IndexConfig, IndexKind, Quantization
    from embedlab.index.store import check_supported

    _quiet_milvus()
    if out is not None:
        out_folder(out)
    check_positive("--batch-size", batch_size)
    config = IndexConfig(
        index=cast(IndexKind, index_kind),  # validated by IndexConfig
        quantize=cast(Quantization, quantize),
        dim=_dims(dim),
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef_search=ef_search,
        nlist=nlist,
        nprobe=nprobe,
        pq_m=pq_m,
    )
    if not sweep:
        check_supported(store, config)
    scope = backend_scope(backend)
    runner = open_engine(engine, ray_address)
    dataset = load_retrieval_data(data, split, duplicate_judgements=duplicate_judgements, strict=strict)
    cache = open_cache(cache_dir)
    from embedlab.models.backends import using_corpus

    corpus = using_corpus(d.full_text for d in dataset.corpus)  # `auto` is judged on these documents
    with using_corpus(d.full_text for d in dataset.corpus):
        # The sweep also encodes the queries; an index needs only the documents.
        run = embed_on_engine(runner, dataset, [model], cache=cache, backend=backend, batch_size=32, queries=sweep)
    if sweep:
        from embedlab.index.build import parse_system
        from embedlab.index.sweep import sweep as run_sweep

        if parse_system(model)[0] != "dense":
            raise EmbedlabError(
                f"--sweep measures a dense model's vector index; give the model itself (e.g. --model minilm-l6), "
                f"not '{model}'"
            )

        typer.echo(
            f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries ({split})", err=True
        )
        with scope, corpus:
            result = run_sweep(dataset, model, target=target, cache=cache, show_progress=True)
        typer.echo(str(result))
        paths = result.write(out or Path("runs") / f"sweep-{dataset.name}")
        typer.echo(f"wrote {paths['json']}, {paths['markdown']} and {paths['plot']}", err=True)
        return
    from embedlab.index.build import build_index

    out = out or Path("indexes") / dataset.name
    typer.echo(f"{dataset.name}: {len(dataset.corpus)} documents -> {store} ({out})", err=True)
    model = model.strip()
    shards = None
    if run is not None and run.models:
        from embedlab.scale.shards import ShardSet

        # The vectors come from the document shards the Ray run wrote, not from the cache nor the encoder.
        dense = run.models[0].model
        shards = ShardSet(run.out, model=dense, backend=backend, role="document", shard_size=run.shard_size)
    with scope, corpus:
        manifest = build_index(
            dataset,
            model,
            out=out,
            store=store,
            uri=uri,
            collection=collection,
            config=config,
            cache=cache,
            batch_size=batch_size,
            show_progress=True,
            shards=shards,
        )
    typer.echo(str(manifest))
    resumed = manifest.counts.get("unchanged", 0) and manifest.counts.get("added", 0) + manifest.counts.get(
        "updated", 0
    )
    if manifest.lexical and store == "milvus" and uri is None and resumed:
        typer.echo(
            "note: Milvus Lite keeps BM25 statistics per segment and this run added one, so BM25 scores now differ "
            "from `compare`'s; for identical ones, rebuild into an empty --out in one run",
            err=True,
        )
    typer.echo(f"wrote {out / 'index.json'}; serve it with: embedlab serve --index {out}", err=True)


@app.command()
@user_errors
def serve(
    index_dir: Annotated[Path, typer.Option("--index", help="An index folder made by `embedlab index`.")],
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key; when it is set, requests need it.")
    ] = "EMBEDLAB_API_KEY",
    max_k: Annotated[int, typer.Option(help="The largest k a search may ask for.")] = 100,
) -> None:
    """Serve an index over HTTP: POST /search, POST /embed, the OpenAI embeddings API (POST /v1/embeddings,
    GET /v1/models), GET /health, OpenAPI docs at /docs.

    /search answers with what was indexed (a dense model, bm25 or the hybrid). OpenAI clients and LangChain's
    OpenAIEmbeddings (check_embedding_ctx_length=False) use the served model with base_url http://HOST:PORT/v1 and
    model set to its name. The API key is read from the environment (never from the command line, where other
    users could see it); clients send it in the X-API-Key header or as Authorization: Bearer KEY.

    Example:

        EMBEDLAB_API_KEY=change-me embedlab serve --index indexes/scifact --host 127.0.0.1 --port 8000
    """
    from embedlab.serve import run

    _quiet_milvus()
    if not (1 <= port <= 65535):
        raise EmbedlabError(f"--port must be between 1 and 65535 (got {port})")
    api_key = os.environ.get(api_key_env) or None
    if host not in LOOPBACK and api_key is None:
        typer.echo(f"warning: serving on {host} without an API key; set {api_key_env} to require one", err=True)
    run(index_dir, host=host, port=port, api_key=api_key, max_k=max_k)
