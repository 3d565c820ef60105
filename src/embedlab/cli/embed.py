"""``embedlab embed``: corpus and query vectors as Parquet shards, on this machine or a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedlab.cli._app import (
    BUNDLED,
    BackendOption,
    CacheOption,
    DataOption,
    DuplicateJudgementsOption,
    EngineOption,
    ModelsOption,
    RayAddressOption,
    StrictOption,
    app,
    check_positive,
    load_retrieval_data,
    open_cache,
    out_folder,
    split_list,
    user_errors,
)


@app.command()
@user_errors
def embed(
    data: DataOption = BUNDLED,
    models: ModelsOption = "minilm-l6",
    out: Annotated[Path, typer.Option("--out", help="Folder for the shards and embed.json.")] = Path("runs/embed"),
    split: Annotated[str, typer.Option(help="Whose queries to embed (BEIR qrels/<split>.tsv).")] = "test",
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    ray_actors: Annotated[
        int | None, typer.Option("--ray-actors", help="--engine ray: actors in the pool (default: one per node).")
    ] = None,
    shard_size: Annotated[int, typer.Option(help="Texts per Parquet shard (the unit of resuming).")] = 1024,
    batch_size: Annotated[int, typer.Option(help="Texts per encoder batch.")] = 32,
    cache_dir: CacheOption = None,
    duplicate_judgements: DuplicateJudgementsOption = "error",
    strict: StrictOption = False,
    backend: BackendOption = "auto",
) -> None:
    """Embed a corpus and its queries with each model: Parquet shards, a manifest, and the embedding cache filled.

    Shard i of a model holds rows i·shard-size onwards, with each row's id, vector and the fingerprint of the
    encoder that made it; embed.json records the data hash, the engine, the backends and the seconds. Re-running
    resumes: shards already written for the same texts are kept. The vectors also go into the embedding cache, so
    compare, select and index on the same data encode nothing again.

    With --engine ray, Ray Data encodes on the cluster (--ray-address, or a local Ray): one model load per actor,
    each actor choosing its backend (auto) on its own node; a killed worker's batch runs again elsewhere.

    Example:

        embedlab embed --data ../shared/data/scifact --models minilm-l6,mpnet-base --out runs/embed --engine ray
    """
    from embedlab.models.backends import check_backend_name, using_corpus
    from embedlab.scale.engines import get_engine
    from embedlab.scale.job import dense_models, embed_dataset

    out_folder(out)
    check_positive("--batch-size", batch_size)
    check_positive("--shard-size", shard_size)
    check_backend_name(backend)
    runner = get_engine(engine, address=ray_address, actors=ray_actors)
    try:
        dataset = load_retrieval_data(data, split, duplicate_judgements=duplicate_judgements, strict=strict)
        names = dense_models(split_list(models))
        typer.echo(
            f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries -> {out} ({runner.name})",
            err=True,
        )
        with using_corpus(d.full_text for d in dataset.corpus):  # `auto` is judged on these documents
            run = embed_dataset(
                dataset,
                names,
                out=out,
                engine=runner,
                backend=backend,
                cache=open_cache(cache_dir),
                shard_size=shard_size,
                batch_size=batch_size,
                show_progress=True,
            )
    finally:
        runner.close()
    typer.echo(str(run))
    typer.echo(f"wrote {out / 'embed.json'}", err=True)
