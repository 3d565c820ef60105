"""The ``embedlab`` command: a thin shell over the library. Each command parses, calls the API, prints, writes.

One module per command group registers its commands on the shared Typer ``app``. Errors the user can fix
(:class:`~embedlab.errors.EmbedlabError`) print as one line, ``error: ...``, and exit 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys

from embedlab.cli import compare, deploy, embed, export, finetune, select  # noqa: F401  (each registers its commands)
from embedlab.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    app()
