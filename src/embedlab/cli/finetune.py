"""``embedlab finetune``: adapt a model to your data and prove the gain on held-out queries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedlab.cli._app import (
    PAIR_COLUMNS,
    CacheOption,
    DuplicateJudgementsOption,
    app,
    open_cache,
    out_folder,
    parse_k_values,
    split_list,
    user_errors,
)
from embedlab.errors import EmbedlabError
from embedlab.finetune.config import FinetuneConfig

# The CLI's defaults are the library's: one place decides the recipe.
_DEFAULTS = FinetuneConfig.create()


def _window(value: str) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in value.replace("-", ",").split(","))
    except ValueError:
        raise EmbedlabError(f"--rank-window takes two ranks, e.g. 3-50 (got '{value}')") from None
    return low, high


@app.command()
@user_errors
def finetune(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help=f"BEIR folder (train → test judgements), pairs file ({PAIR_COLUMNS}), or a folder of documents "
            "(unreadable files are skipped and listed).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for model/, finetune.json, finetune.md.")],
    base: Annotated[str, typer.Option("--base", help="Model to fine-tune: catalog name, folder or hub id.")] = (
        "minilm-l6"
    ),
    loss: Annotated[
        str,
        typer.Option(
            help="mnrl, cached-mnrl, triplet, cosine, cosent, contrastive, online-contrastive; "
            "matryoshka:<loss> wraps one."
        ),
    ] = "mnrl",
    hard_negatives: Annotated[int, typer.Option(help="Mined hard negatives per pair (0: none).")] = (
        _DEFAULTS.hard_negatives
    ),
    epochs: Annotated[float, typer.Option(help="Passes over the training data (the dev split picks the best).")] = (
        _DEFAULTS.epochs
    ),
    adapter: Annotated[bool, typer.Option("--adapter", help="Train only a linear map over frozen vectors.")] = False,
    train_side: Annotated[
        str,
        typer.Option(
            help="'both': the whole model learns; 'query': only queries' encoder learns the teacher's ranking, "
            "documents keep the base vectors (no re-indexing; needs --teacher)."
        ),
    ] = _DEFAULTS.train_side,
    batch_size: Annotated[int, typer.Option(help="Examples per step (in-batch negatives for MNRL).")] = (
        _DEFAULTS.batch_size
    ),
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = _DEFAULTS.learning_rate,
    miner: Annotated[str, typer.Option(help="Rank candidates for negatives with the base 'model' or 'bm25'.")] = (
        "model"
    ),
    rank_window: Annotated[str, typer.Option(help="Ranks negatives come from, e.g. 3-50.")] = (
        "-".join(map(str, _DEFAULTS.rank_window))
    ),
    margin: Annotated[float, typer.Option(help="Drop candidates scoring above (1 - margin) × the positive.")] = (
        _DEFAULTS.relative_margin
    ),
    max_negative_score: Annotated[
        float | None, typer.Option(help="Also drop candidates scoring above this (absolute threshold).")
    ] = None,
    export_suspects: Annotated[
        Path | None, typer.Option("--export-suspects", help="Write dropped candidates (JSONL) for review.")
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help=f"Extra pair/triplet file (JSONL/CSV/TSV; {PAIR_COLUMNS}).")
    ] = None,
    scored: Annotated[
        Path | None, typer.Option("--scored", help="Scored sentence pairs for cosine/cosent/contrastive losses.")
    ] = None,
    guard: Annotated[
        Path | None, typer.Option("--guard", help="General-domain STS data, e.g. ../shared/data/stsb.")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Label corpus queries with a stronger system and train with MarginMSE: a dense model, bm25, "
            "hybrid[:MODEL], a CrossEncoder folder, or auto (bm25, mpnet-base and their hybrid each rerank the dev "
            "queries; the best teaches). Default: the best system of a select report in --out."
        ),
    ] = None,
    train_queries: Annotated[
        str,
        typer.Option(
            help="judged (training judgements), corpus (only queries made from the corpus, labelled by the "
            "teacher), both, or auto (judged, plus corpus queries when there is a teacher)."
        ),
    ] = _DEFAULTS.train_queries,
    pseudo_queries: Annotated[
        str,
        typer.Option(
            help="Kinds of corpus queries: title, cloze, keywords, api-docs (Python code: what its calls' "
            "docstrings say it does), comma-separated."
        ),
    ] = ",".join(_DEFAULTS.pseudo_queries),
    teacher_negatives: Annotated[int, typer.Option(help="Negatives per corpus query, each with a margin.")] = (
        _DEFAULTS.teacher_negatives
    ),
    teacher_learning_rate: Annotated[
        float, typer.Option(help="Peak learning rate when only teacher-labelled corpus queries train.")
    ] = _DEFAULTS.teacher_learning_rate,
    teacher_in_batch: Annotated[
        bool,
        typer.Option(
            "--teacher-in-batch",
            help="Teach each corpus query the teacher's margin against every document of the batch (other rows' "
            "positives and negatives too, scored at each step), not only its own negatives: more signal per step "
            "for the same encoding, which helps when training is bound by a slow CPU and the time budget ends it "
            "early. Dense, bm25 or hybrid teachers (not a CrossEncoder).",
        ),
    ] = _DEFAULTS.teacher_in_batch,
    eval_data: Annotated[
        str | None,
        typer.Option(
            "--eval",
            help="Separate labelled data (BEIR folder or pairs file) measured before and after: never trained on, "
            "never picks the checkpoint; the report's headline.",
        ),
    ] = None,
    matryoshka: Annotated[str, typer.Option(help="Matryoshka dimensions, e.g. 384,256,128,64.")] = "",
    llm_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint that writes pseudo-queries (off by default).")
    ] = None,
    allow_test_positives: Annotated[
        bool, typer.Option(help="Let documents relevant to test queries be training positives (leaks!).")
    ] = False,
    precision: Annotated[str, typer.Option(help="auto (measure), fp32 or bf16.")] = "auto",
    batch_order: Annotated[
        str,
        typer.Option(help="length: batches of texts of similar length (less padding, faster steps); random."),
    ] = "length",
    time_budget: Annotated[
        float,
        typer.Option(
            help="Minutes of training at most (0: no limit); the learning rate decays to zero by the deadline."
        ),
    ] = 15.0,
    max_seq_length: Annotated[
        int | None,
        typer.Option(
            help="Tokens per text while training [default: 99.9% of the training texts fit, rounded up to 64]; "
            "the saved model reads the base length."
        ),
    ] = None,
    k: Annotated[str, typer.Option("--k", help="Cut-offs for every metric.")] = "1,3,10,100",
    seed: Annotated[int, typer.Option(help="Seed for splits, sampling and training.")] = 0,
    duplicate_judgements: DuplicateJudgementsOption = "error",
    cache_dir: CacheOption = None,
) -> None:
    """Fine-tune a model on your data and measure it on queries it never saw, before and after.

    Splits are strict (test queries and their relevant documents never train; a dev split whose answers never
    train picks the checkpoint, and the base model is kept unless the dev gain is significant), hard negatives
    are mined with false negatives dropped, and the saved folder loads with SentenceTransformer(path). With
    --teacher, queries made from the whole corpus are labelled by the teacher's score margins (GPL-style). An
    interrupted run resumes from its last checkpoint in the same --out.

    Examples:

        embedlab finetune --data ../shared/data/scifact --base minilm-l6 --guard ../shared/data/stsb --out runs/ft

        embedlab finetune --data docs/ --train-queries corpus --teacher hybrid:mpnet-base --eval judged/ --out runs/ft

        # every corpus query learns the teacher's margins against the whole batch (more signal per step)
        embedlab finetune --data ../shared/data/scifact --teacher bm25 --teacher-in-batch --out runs/tib

        # only the query encoder learns: an index built with the base model stays valid
        embedlab finetune --data ../shared/data/scifact --teacher hybrid:mpnet-base --train-side query --out runs/q
    """
    from embedlab.finetune.run import finetune as run_finetune

    out_folder(out)
    if export_suspects is not None and export_suspects.is_dir():
        raise EmbedlabError(f"--export-suspects {export_suspects}: is a folder (fix: name a .jsonl file)")
    try:
        dims = tuple(int(d) for d in split_list(matryoshka)) if matryoshka else ()
    except ValueError:
        raise EmbedlabError(
            f"--matryoshka takes whole numbers separated by commas, e.g. 384,256,128 (got '{matryoshka}')"
        ) from None
    config = FinetuneConfig.create(
        base=base,
        loss=loss,
        hard_negatives=hard_negatives,
        epochs=epochs,
        adapter=adapter,
        train_side=train_side,
        batch_size=batch_size,
        learning_rate=learning_rate,
        miner=miner,
        rank_window=_window(rank_window),
        relative_margin=margin,
        max_negative_score=max_negative_score,
        matryoshka_dims=dims,
        llm_url=llm_url,
        allow_test_positives=allow_test_positives,
        precision=precision,
        batch_order=batch_order,
        time_budget_minutes=time_budget or None,
        max_seq_length=max_seq_length,
        k_values=tuple(parse_k_values(k)),
        seed=seed,
        teacher=teacher,
        train_queries=train_queries,
        duplicate_judgements=duplicate_judgements,
        pseudo_queries=tuple(split_list(pseudo_queries)),
        teacher_negatives=teacher_negatives,
        teacher_learning_rate=teacher_learning_rate,
        teacher_in_batch=teacher_in_batch,
    )
    result = run_finetune(
        data,
        config=config,
        out=out,
        pairs_file=pairs,
        scored_file=scored,
        guard=guard,
        eval_data=eval_data,
        export_suspects=export_suspects,
        cache=open_cache(cache_dir),
        echo=lambda line: typer.echo(line, err=True),
        show_progress=True,
    )
    typer.echo(str(result))
    typer.echo(f"wrote {result.model_dir}, {out / 'finetune.json'} and {out / 'finetune.md'}", err=True)
    if result.add_to_report(out):
        typer.echo(f"added the fine-tuning section to the report in {out}", err=True)
