"""Writes that never leave a half-written file: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable_like_open(fd: int) -> None:
    """Give a ``mkstemp`` file (always 0600) the permissions ``open`` would have: reports are meant to be shared."""
    os.fchmod(fd, 0o666 & ~_umask())


def write_text_atomic(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        readable_like_open(handle)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _is_figure(cell: str) -> bool:
    try:
        float(cell.rstrip("%×xM").replace(",", ""))
    except ValueError:
        return cell in {"-", ""}
    return True


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, figures right-aligned; what ``__str__`` of result objects prints."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_is_figure(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "| " + " | ".join(headers) + " |"
    rule = "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in rows)])
