"""The Typer application and what every command shares: one-line user errors, data loading, common options."""

from __future__ import annotations

import errno
import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from embedlab.errors import RETRY_FIX, EmbedlabError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="embedlab",
    help="Which embedding model should I use for my data, and how much does fine-tuning help?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

BUNDLED = "stdlib-docs"


_OS_FIXES = {
    errno.ENOSPC: RETRY_FIX,
    errno.EDQUOT: RETRY_FIX,
    errno.EFBIG: "the file system or a limit refuses a file this large; write somewhere else",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.EEXIST: "choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
}


def os_error_message(exc: OSError) -> str:
    """One line for a failed read or write: the path, what the system said and what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    fix = _OS_FIXES.get(exc.errno or 0, "check the path and the disk, then run the same command again")
    return f"{where}{exc.strerror or exc} (fix: {fix})"


def user_errors(command: F) -> F:
    """Turn an EmbedlabError (or a failed read or write: a full disk, a permission) into one line on stderr and
    exit status 2, never a traceback. Writes are atomic, so what was written before the failure stays readable."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EmbedlabError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            typer.echo(f"error: {os_error_message(exc)}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def out_folder(path: Path, option: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be the output folder: not a file, not under a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EmbedlabError(f"{option} {path}: is a file, not a folder (fix: give a folder, new or existing)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise EmbedlabError(f"{option} {path}: {parent} is a file, not a folder (fix: give another folder)")
            break
    return path


def check_positive(option: str, value: int | None) -> None:
    """Counts such as --batch-size: 1 or more (a 0 would otherwise surface as a traceback deep in an encoder)."""
    if value is not None and value < 1:
        raise EmbedlabError(f"{option} must be 1 or more (got {value})")


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_k_values(value: str) -> list[int]:
    try:
        ks = [int(k) for k in split_list(value)]
    except ValueError:
        raise EmbedlabError(f"--k takes whole numbers separated by commas, e.g. 1,3,10,100 (got '{value}')") from None
    if not ks or min(ks) < 1:
        raise EmbedlabError(f"--k takes positive whole numbers, e.g. 1,3,10,100 (got '{value}')")
    return ks


def load_retrieval_data(
    data: str,
    split: str,
    allow_unknown_ids: bool = False,
    duplicate_judgements: str = "error",
    strict: bool = False,
) -> Any:
    """The bundled default for ``stdlib-docs``; otherwise a BEIR folder, a pairs file or a folder of documents.

    What the loader skipped or merged (its warnings: unreadable files, duplicate judgements, dropped rows) is
    printed as ``warning: ...`` lines on stderr; the dataset's ``load_report`` carries it into the reports.
    """
    if data == BUNDLED:
        from embedlab.data.stdlib_docs import load_stdlib_docs

        return load_stdlib_docs()
    from embedlab.data.loaders import DUPLICATE_POLICIES, DataWarning, load_dataset

    if duplicate_judgements not in DUPLICATE_POLICIES:
        raise EmbedlabError(
            f"--duplicate-judgements takes {', '.join(DUPLICATE_POLICIES)} (got '{duplicate_judgements}')"
        )
    path = Path(data)
    if not path.exists():
        raise EmbedlabError(
            f"{data}: no such file or folder (fix: give a BEIR folder, a pairs file, "
            f"a folder of documents, or '{BUNDLED}' for the bundled default)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        dataset = load_dataset(
            path,
            split=split,
            allow_unknown_ids=allow_unknown_ids,
            duplicate_judgements=duplicate_judgements,  # checked above
            strict=strict,
        )
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            typer.echo(f"warning: {warning.message}", err=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return dataset


def load_evaluation_data(
    data: str,
    split: str,
    allow_unknown_ids: bool = False,
    duplicate_judgements: str = "error",
    strict: bool = False,
) -> Any:
    """:func:`load_retrieval_data` for commands that score queries: it must have judged queries; says what it read."""
    dataset = load_retrieval_data(data, split, allow_unknown_ids, duplicate_judgements, strict)
    if not dataset.queries:
        raise EmbedlabError(f"{data}: no queries with judgements in split '{split}' to evaluate")
    typer.echo(f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} queries ({split})", err=True)
    return dataset


def open_cache(cache_dir: Path | None) -> Any:
    from embedlab.embedding import EmbeddingCache
    from embedlab.paths import cache_root

    return EmbeddingCache(cache_dir or cache_root())


PAIR_COLUMNS = "columns query/positive, anchor/positive/negative (sentence-transformers) or question/answer"
DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        help=f"BEIR folder, pairs file (.jsonl/.csv/.tsv; {PAIR_COLUMNS}), folder of documents, or '{BUNDLED}'.",
    ),
]
ModelsOption = Annotated[
    str, typer.Option("--models", help="Comma-separated: catalog names (see `embedlab models`), folders, hub ids.")
]
OutOption = Annotated[Path, typer.Option("--out", help="Folder for the JSON and Markdown results.")]
StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="A folder of documents: stop at a file that cannot be read (damaged PDF, not UTF-8) instead of "
        "skipping it. Skipped files are listed on stderr and in the report.",
    ),
]
DuplicateJudgementsOption = Annotated[
    str,
    typer.Option(
        "--duplicate-judgements",
        help="A BEIR qrels file judging the same query and document twice: error (the default), or keep the "
        "'last' grade or the 'max' grade (as trec_eval and BEIR keep one); the report counts them.",
    ),
]
CacheOption = Annotated[
    Path | None, typer.Option("--cache", help="Embedding cache folder (default: $EMBEDLAB_CACHE or ~/.cache/embedlab).")
]

BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        envvar="EMBEDLAB_BACKEND",
        help="How sentence-transformers models run: auto (the fastest that keeps the vectors, measured once per "
        "model and machine), torch, torch-bf16, onnx, onnx-int8, openvino, openvino-bf16, openvino-int8. "
        "Other model kinds ignore it.",
    ),
]
"""Use as ``backend: BackendOption = "auto"`` and run the work inside ``backend_scope(backend)``."""


def backend_scope(backend: str) -> Any:
    """A context in which every encoder loaded without an explicit backend uses ``backend``. The name is checked
    now (an unknown one raises ModelError with "did you mean"), so create the scope before any slow work."""
    from embedlab.models.backends import check_backend_name, using_backend

    return using_backend(check_backend_name(backend))


EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where documents and queries are encoded: local (this process) or ray (Ray Data, one model load per "
        "actor, across the cluster; the vectors land in the embedding cache, then the command runs as usual).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="--engine ray: the cluster's head (host:port, or ray://host:10001); default: start a local Ray here.",
    ),
]


def open_engine(engine: str, ray_address: str | None) -> Any:
    """The engine by name, checked before any slow work (an unknown name or a stray --ray-address is one line)."""
    from embedlab.scale.engines import get_engine

    return get_engine(engine, address=ray_address)


def embed_on_engine(
    engine: Any, dataset: Any, models: list[str], *, cache: Any, backend: str, batch_size: int, queries: bool = True
) -> Any:
    """With ``--engine ray``, encode the dense ``models``' vectors on the cluster into ``cache`` first, so the local
    path that follows reads them instead of encoding; with ``local``, nothing to do. Closes the engine. Returns the
    embed run (its shards are under ``run.out``), or ``None``."""
    try:
        if engine.name == "local":
            return None
        from embedlab.scale.job import prefill

        run = prefill(
            dataset,
            models,
            engine=engine,
            cache=cache,
            backend=backend,
            batch_size=batch_size,
            roles=("document", "query") if queries else ("document",),
            show_progress=True,
        )
        if run is not None:
            typer.echo(str(run), err=True)
        return run
    finally:
        engine.close()
