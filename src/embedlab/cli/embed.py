"""``embedlab embed``: corpus and query vectors as Parquet shards, on this machine or a Ray cluster."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

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
    each actor choosing its backend (auto) on its own node; a killed worker's batch runs again elsewhere. A BEIR
    folder's corpus.jsonl is read by Ray Data on the cluster (every node must see it at the same path); this
    process only scans it once, holding no text. Other data (pairs files, folders of documents) is read here.

    Example:

        embedlab embed --data ../shared/data/scifact --models minilm-l6,mpnet-base --out runs/embed --engine ray
    """
    from embedlab.models.backends import check_backend_name, using_corpus, using_sample
    from embedlab.scale.engines import get_engine
    from embedlab.scale.job import dense_models, embed_dataset

    out_folder(out)
    check_positive("--batch-size", batch_size)
    check_positive("--shard-size", shard_size)
    check_backend_name(backend)
    runner = get_engine(engine, address=ray_address, actors=ray_actors)
    try:
        corpus = None
        if runner.name == "ray" and data != BUNDLED and (Path(data) / "corpus.jsonl").is_file():
            corpus = _scan(Path(data), split, shard_size, duplicate_judgements)
        if corpus is not None:
            dataset: Any = corpus
            documents, scope = corpus.documents, using_sample(corpus.sample)
        else:
            dataset = load_retrieval_data(data, split, duplicate_judgements=duplicate_judgements, strict=strict)
            # `auto` is judged on these documents
            documents, scope = len(dataset.corpus), using_corpus(d.full_text for d in dataset.corpus)
        names = dense_models(split_list(models))
        read = "read by Ray Data" if corpus is not None else "read here"
        typer.echo(
            f"{dataset.name}: {documents} documents ({read}), {len(dataset.queries)} queries -> {out} ({runner.name})",
            err=True,
        )
        with scope:
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


def _scan(folder: Path, split: str, shard_size: int, duplicate_judgements: str) -> Any:
    """The BEIR folder scanned for Ray Data to read (None: the file needs the driver's loader); the loader's
    warnings printed as load_retrieval_data prints them."""
    from embedlab.data.loaders import DUPLICATE_POLICIES, DataWarning
    from embedlab.errors import EmbedlabError
    from embedlab.scale.corpus import scan_beir

    if duplicate_judgements not in DUPLICATE_POLICIES:
        raise EmbedlabError(
            f"--duplicate-judgements takes {', '.join(DUPLICATE_POLICIES)} (got '{duplicate_judgements}')"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        corpus = scan_beir(
            folder,
            split,
            shard_size=shard_size,
            duplicate_judgements=duplicate_judgements,  # checked above
        )
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            typer.echo(f"warning: {warning.message}", err=True)
    return corpus
