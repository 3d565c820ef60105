"""``embedlab export`` (a model for a faster backend, gated on nDCG@10) and ``embedlab backends`` (what runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedlab.cli._app import (
    BUNDLED,
    CacheOption,
    DataOption,
    DuplicateJudgementsOption,
    StrictOption,
    app,
    check_positive,
    load_retrieval_data,
    open_cache,
    out_folder,
    user_errors,
)
from embedlab.errors import EmbedlabError


@app.command()
@user_errors
def export(
    model: Annotated[
        str, typer.Argument(help="Catalog name, sentence-transformers folder (fine-tuned ones too) or hub id.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the exported model into (new or empty).")],
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="auto (the fastest that keeps the vectors here), torch, torch-bf16, onnx, onnx-int8, openvino, "
            "openvino-bf16 or openvino-int8.",
        ),
    ] = "auto",
    data: DataOption = BUNDLED,
    split: Annotated[
        str, typer.Option(help="Judgement split the gate evaluates on (BEIR qrels/<split>.tsv).")
    ] = "test",
    max_ndcg_drop: Annotated[
        float, typer.Option("--max-ndcg-drop", help="Most nDCG@10 points (×100) the export may lose against float32.")
    ] = 0.5,
    batch_size: Annotated[int, typer.Option(help="Texts per encoder batch.")] = 32,
    cache_dir: CacheOption = None,
    duplicate_judgements: DuplicateJudgementsOption = "error",
    strict: StrictOption = False,
) -> None:
    """Export a model for a faster backend, but only if nDCG@10 on your data drops by at most --max-ndcg-drop points.

    The model is evaluated on --data twice, as it is (PyTorch, float32) and on --backend; a larger drop refuses the
    export with the measured figures and writes nothing. The folder loads back with `--models DIR` anywhere.

    Example:

        embedlab export minilm-l6 --backend onnx-int8 --data ../shared/data/scifact --out models/minilm-int8
    """
    from embedlab.export import ExportRefused, export_model
    from embedlab.models.backends import check_backend_name, using_corpus

    check_backend_name(backend)
    out_folder(out)
    check_positive("--batch-size", batch_size)
    dataset = load_retrieval_data(data, split, duplicate_judgements=duplicate_judgements, strict=strict)
    if not dataset.queries:
        raise EmbedlabError(f"{data}: no queries with judgements in split '{split}' to gate the export on")
    typer.echo(
        f"gating {model} on {backend}: nDCG@10 on {dataset.name} ({len(dataset.corpus)} documents, "
        f"{len(dataset.queries)} queries), at most {max_ndcg_drop} points lost",
        err=True,
    )
    try:
        with using_corpus(d.full_text for d in dataset.corpus):  # `auto` and int8 scales from these documents
            result = export_model(
                model,
                backend,
                out,
                dataset,
                max_ndcg_drop,
                cache=open_cache(cache_dir),
                batch_size=batch_size,
                show_progress=True,
            )
    except ExportRefused as refused:
        typer.echo(str(refused.result))
        raise
    typer.echo(str(result))
    typer.echo(f"wrote {out} (embedlab-export.json holds the gate's figures and the manifest)", err=True)


@app.command()
@user_errors
def backends(
    model: Annotated[
        str | None, typer.Option("--model", help="Also calibrate this model: speed and agreement of every backend.")
    ] = None,
    refresh: Annotated[bool, typer.Option(help="Measure again even if this machine's result is cached.")] = False,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="With --model: judge the backends on a seeded sample of this corpus (BEIR folder, pairs file or "
            "folder of documents), as compare/select/index/export do, and fit int8 to it. Default: bundled texts.",
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="The split of --data to read (its corpus is the same in all).")] = "test",
) -> None:
    """List the inference backends and whether each runs here; with --model, what `--backend auto` picks and why.

    The table says which texts the gate judged on: a sample of --data's corpus, or the bundled texts.

    Example:

        embedlab backends --model minilm-l6 --data ../shared/data/scifact
    """
    from embedlab.files import format_table
    from embedlab.manifest import hardware
    from embedlab.models.backends import calibrate, describe_backends
    from embedlab.models.encoders import SentenceTransformerEncoder
    from embedlab.models.loading import load_encoder

    info = hardware()
    typer.echo(f"{info['cpu']}, {info['threads']} threads, flags: {', '.join(info['cpu_flags']) or '-'}")
    rows = [
        [b["name"], b["runtime"], b["precision"], "yes" if b["unavailable"] is None else f"no: {b['unavailable']}"]
        for b in describe_backends()
    ]
    typer.echo(format_table(["backend", "runtime", "precision", "runs here"], rows))
    if model is None:
        return
    encoder = load_encoder(model, backend="torch")
    if not isinstance(encoder, SentenceTransformerEncoder):
        raise EmbedlabError(f"'{model}' is a {encoder.spec.kind} model: it has one runtime, nothing to calibrate")
    typer.echo("", err=True)
    from embedlab.models.backends import using_corpus

    corpus = [d.full_text for d in load_retrieval_data(data, split).corpus] if data is not None else []
    with using_corpus(corpus):
        typer.echo(str(calibrate(encoder, refresh=refresh, show_progress=True)))
