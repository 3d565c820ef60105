"""``embedlab select``: compare, hybrid, cost, statistics, recommendation and report in one command."""

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
    RayAddressOption,
    StrictOption,
    app,
    backend_scope,
    check_positive,
    embed_on_engine,
    load_evaluation_data,
    open_cache,
    open_engine,
    out_folder,
    parse_k_values,
    split_list,
    user_errors,
)
from embedlab.models.catalog import catalog_names

DEFAULT_MODELS = ",".join(catalog_names())


@app.command("select")
@user_errors
def select_command(
    data: DataOption = BUNDLED,
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Comma-separated candidates: catalog names, folders, hub ids. BM25 and the hybrid are always added.",
        ),
    ] = DEFAULT_MODELS,
    split: Annotated[str, typer.Option(help="Judgement split to evaluate (BEIR qrels/<split>.tsv).")] = "test",
    k: Annotated[str, typer.Option("--k", help="Cut-offs for every metric.")] = "1,3,10,100",
    metric: Annotated[str, typer.Option(help="The metric that ranks the models and decides ties.")] = "ndcg@10",
    max_latency_ms: Annotated[
        float | None, typer.Option(help="Longest acceptable single-query encoding latency, p95, in ms.")
    ] = None,
    max_dim: Annotated[int | None, typer.Option(help="Largest acceptable embedding dimension.")] = None,
    max_size_mb: Annotated[float | None, typer.Option(help="Largest acceptable model size on disk, in MB.")] = None,
    licence: Annotated[
        str | None, typer.Option("--licence", help="Acceptable licences, comma-separated (e.g. Apache-2.0,MIT).")
    ] = None,
    min_throughput: Annotated[
        float | None, typer.Option(help="Slowest acceptable document encoding, in documents per second.")
    ] = None,
    cost_docs: Annotated[int, typer.Option(help="Documents sampled to measure cost.")] = 64,
    cost_queries: Annotated[int, typer.Option(help="Queries sampled to measure throughput and latency.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the cost sample, the bootstrap and the tests.")] = 0,
    test: Annotated[str, typer.Option(help="Paired test against the best: randomization or t-test.")] = "randomization",
    out: Annotated[Path, typer.Option("--out", help="Folder for the report (HTML, Markdown, JSON).")] = Path(
        "runs/select"
    ),
    batch_size: Annotated[int, typer.Option(help="Texts per encoder batch.")] = 32,
    cache_dir: CacheOption = None,
    allow_unknown_ids: Annotated[
        bool, typer.Option(help="Drop judgements naming unknown queries or documents instead of failing.")
    ] = False,
    duplicate_judgements: DuplicateJudgementsOption = "error",
    strict: StrictOption = False,
    backend: BackendOption = "auto",
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Choose a model for your data: quality with confidence intervals, measured cost, a recommendation, a report.

    Runs every candidate plus BM25 and a hybrid (BM25 fused with the best dense model), tests every model
    against the best (paired, Holm-corrected), measures cost on this machine (throughput, latency, memory,
    size, index bytes), applies your constraints, recommends a model with its reasons, says whether
    fine-tuning should pay off (with the exact embedlab finetune command, its teacher, never training on the
    queries evaluated here) and writes report.html, report.md and report.json into --out. A model trained on the
    evaluated queries or their relevant documents is marked †.

    Example:

        embedlab select --data ../shared/data/scifact --max-latency-ms 50 --licence Apache-2.0,MIT --out runs/scifact
    """
    from embedlab.recommend import Constraints
    from embedlab.select import SelectConfig, select

    out_folder(out)
    check_positive("--batch-size", batch_size)
    config = SelectConfig(
        models=tuple(split_list(models)),
        k_values=tuple(parse_k_values(k)),
        metric=metric,
        constraints=Constraints(
            max_latency_ms=max_latency_ms,
            max_dim=max_dim,
            max_size_mb=max_size_mb,
            licences=tuple(split_list(licence or "")),
            min_throughput=min_throughput,
        ),
        cost_documents=cost_docs,
        cost_queries=cost_queries,
        seed=seed,
        test=test,
        batch_size=batch_size,
    )
    scope = backend_scope(backend)
    runner = open_engine(engine, ray_address)
    dataset = load_evaluation_data(data, split, allow_unknown_ids, duplicate_judgements, strict)
    cache = open_cache(cache_dir)
    from embedlab.models.backends import using_corpus

    with scope, using_corpus(d.full_text for d in dataset.corpus):  # `auto` is judged on these documents
        embed_on_engine(runner, dataset, list(config.models), cache=cache, backend=backend, batch_size=batch_size)
        selection = select(
            dataset,
            config,
            cache=cache,
            data_ref=data,
            split=split,
            out=out,
            show_progress=True,
        )
    typer.echo(str(selection))
    paths = selection.write(out)
    typer.echo(f"wrote {paths['html']}, {paths['markdown']} and {paths['json']}", err=True)
