"""``embedlab compare``, ``embedlab sts`` and ``embedlab models``."""

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
    OutOption,
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
from embedlab.errors import EmbedlabError


@app.command()
@user_errors
def compare(
    data: DataOption = BUNDLED,
    models: ModelsOption = "minilm-l6,bm25",
    split: Annotated[str, typer.Option(help="Judgement split to evaluate (BEIR qrels/<split>.tsv).")] = "test",
    k: Annotated[str, typer.Option("--k", help="Cut-offs for every metric.")] = "1,3,10,100",
    out: OutOption = Path("runs/compare"),
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
    """Rank candidate models on your data: nDCG, Recall, Precision, MRR and MAP at every cut-off.

    A model folder fine-tuned by embedlab that trained on the evaluated queries or their relevant documents (its
    embedlab_training.json says so) is marked † in the table, with a footnote: its score is not a fair comparison.

    Example:

        embedlab compare --data ../shared/data/scifact --models minilm-l6,mpnet-base,bm25 --out runs/scifact

        embedlab compare --data ../shared/data/scifact --models minilm-l6,bm25 --engine ray --ray-address head:6379
    """
    from embedlab.evaluate.compare import compare as run_compare
    from embedlab.models.backends import using_corpus

    out_folder(out)
    check_positive("--batch-size", batch_size)
    scope = backend_scope(backend)
    k_values = parse_k_values(k)
    runner = open_engine(engine, ray_address)
    dataset = load_evaluation_data(data, split, allow_unknown_ids, duplicate_judgements, strict)
    cache = open_cache(cache_dir)
    with scope, using_corpus(d.full_text for d in dataset.corpus):  # `auto` is judged on these documents
        embed_on_engine(runner, dataset, split_list(models), cache=cache, backend=backend, batch_size=batch_size)
        comparison = run_compare(
            dataset,
            split_list(models),
            k_values=k_values,
            cache=cache,
            batch_size=batch_size,
            show_progress=True,
        )
    typer.echo(str(comparison))
    paths = comparison.write(out)
    typer.echo(f"wrote {paths['json']} and {paths['markdown']}", err=True)


@app.command()
@user_errors
def sts(
    data: Annotated[
        str, typer.Option("--data", help="STS Benchmark folder or file, or a sentence1/sentence2/score file.")
    ],
    models: ModelsOption = "minilm-l6",
    split: Annotated[str, typer.Option(help="STS Benchmark split when --data is its folder.")] = "test",
    out: OutOption = Path("runs/sts"),
    batch_size: Annotated[int, typer.Option(help="Texts per encoder batch.")] = 32,
    cache_dir: CacheOption = None,
    backend: BackendOption = "auto",
) -> None:
    """Score models on scored sentence pairs: Spearman and Pearson of cosine similarity against gold scores.

    Example:

        embedlab sts --data ../shared/data/stsb --models minilm-l6,mpnet-base --out runs/stsb
    """
    from embedlab.data.loaders import load_sts
    from embedlab.evaluate.compare import compare_sts

    out_folder(out)
    check_positive("--batch-size", batch_size)
    scope = backend_scope(backend)
    path = Path(data)
    if not path.exists():
        raise EmbedlabError(
            f"{data}: no such file or folder (fix: give an STS Benchmark folder or a scored-pairs file)"
        )
    pairs = load_sts(path, split=split)
    with scope:
        result = compare_sts(
            pairs, split_list(models), cache=open_cache(cache_dir), batch_size=batch_size, show_progress=True
        )
    typer.echo(str(result))
    paths = result.write(out)
    typer.echo(f"wrote {paths['json']} and {paths['markdown']}", err=True)


@app.command("models")
def list_models() -> None:
    """List the catalog: the candidate models embedlab knows, with their size, dimension and licence.

    Example:

        embedlab models
    """
    from embedlab.files import format_table
    from embedlab.models.catalog import CATALOG

    rows = [
        [
            s.name,
            s.model_id,
            s.kind,
            str(s.dim or "-"),
            f"{s.parameters / 1e6:.1f}M" if s.parameters else "-",
            f"{s.size_mb:.0f}" if s.size_mb else "-",
            s.licence,
            s.install or "(built in)",
        ]
        for s in CATALOG
    ]
    typer.echo(format_table(["name", "model", "kind", "dim", "params", "MB", "licence", "install"], rows))
