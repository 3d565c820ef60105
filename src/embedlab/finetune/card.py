"""The model card written into every fine-tuned model folder (``README.md``), beside ``embedlab_finetune.json``.

It says what someone picking up the folder needs to trust it: the base model, the training data (source,
content hash, sizes by origin), the loss and every hyperparameter, the before/after table on the held-out
split, the regression guard, package versions, hardware and wall time. The YAML front matter carries the base
model's licence, so embedlab reads it back like any model folder's.

Example::

    >>> write_model_card(Path("runs/ft/model"), result.to_dict())   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedlab.files import markdown_table, write_json_atomic, write_text_atomic


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def render_model_card(result: dict[str, Any]) -> str:
    """The card's Markdown from a :meth:`FinetuneResult.to_dict` payload."""
    config = result["config"]
    base = result["base"]
    manifest = result["manifest"]
    data = result["data"]
    rows = [
        [m, _pct(result["before"]["means"][m]), _pct(result["after"]["means"][m]),
         f"{100 * (result['after']['means'][m] - result['before']['means'][m]):+.2f}"]
        for m in result["headline_metrics"]
    ]  # fmt: skip
    hyper = [[k, f"`{v}`"] for k, v in config.items()]
    pairs = result["pairs"]["by_origin"]
    lines = [
        "---",
        f"license: {base.get('licence') or 'unknown'}",
        "library_name: sentence-transformers",
        f"base_model: {base.get('model_id') or config['base']}",
        "tags: [sentence-transformers, embedlab, fine-tuned]",
        "---",
        "",
        f"# {config['base']} fine-tuned on {data['name']} ({result['mode']})",
        "",
        "Made by `embedlab finetune`. Load it with `SentenceTransformer(path)` or use the folder as an embedlab "
        "model (`--models path`).",
        "",
        "## Held-out evaluation",
        "",
        f"{data['test']['queries']} test queries never used in training, {data['test']['documents']} documents. "
        "Scores ×100.",
        "",
        markdown_table(["metric", "base", "fine-tuned", "change"], rows),
        "",
    ]
    deltas = result["per_query"]
    lines.append(
        f"Per query ({result['primary']}): {deltas['improved']} better, {deltas['worse']} worse, "
        f"{deltas['unchanged']} unchanged."
    )
    lines += ["", *(f"- {note}" for note in result.get("notes", []))]
    evaluation = result.get("eval")
    if evaluation:
        before, after = evaluation["before"]["means"], evaluation["after"]["means"]
        lines += [
            "",
            f"On the separate evaluation set `{evaluation['data']['source']}` ({evaluation['data']['queries']} "
            "queries, the headline):",
            "",
            markdown_table(
                ["metric", "base", "fine-tuned", "change"],
                [
                    [m, _pct(before[m]), _pct(after[m]), f"{100 * (after[m] - before[m]):+.2f}"]
                    for m in result["headline_metrics"]
                    if m in before
                ],
            ),
        ]
    guard = result.get("guard")
    if guard:
        lines += [
            "",
            f"Regression guard ({guard['name']}, {guard['pairs']} pairs): STS Spearman {_pct(guard['before'])} → "
            f"{_pct(guard['after'])} ({-guard['drop_points']:+.2f} points)"
            + (" — **dropped by more than the limit**" if guard["warning"] else ""),
        ]
    lines += [
        "",
        "## Training data",
        "",
        f"Source `{data['source']}`, content hash `{data['content_hash']}`; {result['pairs']['total']} training "
        "examples: " + ", ".join(f"{n} {origin}" for origin, n in pairs.items()) + ".",
        f"Train / dev / test queries: {data['train']['queries']} / {data['dev']['queries']} / "
        f"{data['test']['queries']}; leakage check: {'clean' if result['leakage']['clean'] else 'LEAKS'}.",
    ]
    mining = result.get("mining")
    if mining:
        low, high = mining["rank_window"]
        lines.append(
            f"Hard negatives: {mining['n']} per pair by {mining['miner']} from ranks {low + 1}–{high}, "
            f"{100 * mining['relative_margin']:g}% relative margin; {mining['dropped_as_false_negatives']} "
            "candidates dropped as likely false negatives."
        )
    training = result["training"]
    lines += [
        "",
        "## Training",
        "",
        f"Loss `{config['loss']}`"
        + (f", precision {training['precision']}" if "precision" in training else "")
        + (f", {training['train_seq_length']} tokens a text" if training.get("train_seq_length") else "")
        + f"; training took {training['train_seconds']:.0f} s; the whole run {result['wall_seconds']:.0f} s.",
        "",
        markdown_table(["hyperparameter", "value"], hyper),
        "",
        "## Environment",
        "",
        markdown_table(
            ["", ""],
            [
                [
                    "hardware",
                    f"{manifest['hardware']['cpu']}, {manifest['hardware']['threads']} threads, "
                    f"flags {' '.join(manifest['hardware']['cpu_flags']) or '-'}",
                ],
                ["python", manifest["python"]],
                *[[name, version] for name, version in manifest["packages"].items()],
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def write_model_card(model_dir: Path, result: dict[str, Any]) -> Path:
    """Write ``README.md`` (the card) and ``embedlab_finetune.json`` (every figure) into ``model_dir``."""
    write_json_atomic(model_dir / "embedlab_finetune.json", result)
    return write_text_atomic(model_dir / "README.md", render_model_card(result))
