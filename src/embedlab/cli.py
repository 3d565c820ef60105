"""The ``embedlab`` command: a thin shell over the library. Each command parses, calls the API, prints, writes.

Errors the user can fix (:class:`~embedlab.errors.EmbedlabError`) print as one line, ``error: ...``, and exit 2.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from embedlab.errors import EmbedlabError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="embedlab",
    help="Which embedding model should I use for my data, and how much does fine-tuning help?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

BUNDLED = "stdlib-docs"


def user_errors(command: F) -> F:
    """Turn an EmbedlabError into one line on stderr and exit status 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EmbedlabError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _k_values(value: str) -> list[int]:
    try:
        ks = [int(k) for k in _split_list(value)]
    except ValueError:
        raise EmbedlabError(f"--k takes whole numbers separated by commas, e.g. 1,3,10,100 (got '{value}')") from None
    if not ks or min(ks) < 1:
        raise EmbedlabError(f"--k takes positive whole numbers, e.g. 1,3,10,100 (got '{value}')")
    return ks


def load_retrieval_data(data: str, split: str, allow_unknown_ids: bool = False) -> Any:
    """The bundled default for ``stdlib-docs``; otherwise a BEIR folder, a pairs file or a folder of documents."""
    if data == BUNDLED:
        from embedlab.data.stdlib_docs import load_stdlib_docs

        return load_stdlib_docs()
    from embedlab.data.loaders import load_dataset

    path = Path(data)
    if not path.exists():
        raise EmbedlabError(
            f"{data}: no such file or folder (fix: give a BEIR folder, a pairs file, "
            f"a folder of documents, or '{BUNDLED}' for the bundled default)"
        )
    return load_dataset(path, split=split, allow_unknown_ids=allow_unknown_ids)


def _cache(cache_dir: Path | None) -> Any:
    from embedlab.embedding import EmbeddingCache
    from embedlab.paths import cache_root

    return EmbeddingCache(cache_dir or cache_root())


DataOption = Annotated[
    str, typer.Option("--data", help=f"BEIR folder, pairs file (.jsonl/.csv), folder of documents, or '{BUNDLED}'.")
]
ModelsOption = Annotated[
    str, typer.Option("--models", help="Comma-separated: catalog names (see `embedlab models`), folders, hub ids.")
]
OutOption = Annotated[Path, typer.Option("--out", help="Folder for the JSON and Markdown results.")]
CacheOption = Annotated[
    Path | None, typer.Option("--cache", help="Embedding cache folder (default: $EMBEDLAB_CACHE or ~/.cache/embedlab).")
]


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
) -> None:
    """Rank candidate models on your data: nDCG, Recall, Precision, MRR and MAP at every cut-off.

    Example:

        embedlab compare --data ../shared/data/scifact --models minilm-l6,mpnet-base,bm25 --out runs/scifact
    """
    from embedlab.evaluate.compare import compare as run_compare

    dataset = load_retrieval_data(data, split, allow_unknown_ids)
    if not dataset.queries:
        raise EmbedlabError(f"{data}: no queries with judgements in split '{split}' to evaluate")
    typer.echo(f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries ({split})", err=True)
    comparison = run_compare(
        dataset,
        _split_list(models),
        k_values=_k_values(k),
        cache=_cache(cache_dir),
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
) -> None:
    """Score models on scored sentence pairs: Spearman and Pearson of cosine similarity against gold scores.

    Example:

        embedlab sts --data ../shared/data/stsb --models minilm-l6,mpnet-base --out runs/stsb
    """
    from embedlab.data.loaders import load_sts
    from embedlab.evaluate.compare import compare_sts

    path = Path(data)
    if not path.exists():
        raise EmbedlabError(
            f"{data}: no such file or folder (fix: give an STS Benchmark folder or a scored-pairs file)"
        )
    pairs = load_sts(path, split=split)
    result = compare_sts(pairs, _split_list(models), cache=_cache(cache_dir), batch_size=batch_size, show_progress=True)
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


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    app()
