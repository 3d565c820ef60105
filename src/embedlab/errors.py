"""Errors a user can act on.

Every error embedlab raises on purpose is an :class:`EmbedlabError`. The CLI prints it as one line
(``error: <message>``) and exits with status 2, never with a traceback. A :class:`DataError` names the file,
the line when there is one, what is wrong and how to fix it::

    >>> str(DataError("queries.jsonl", "missing field '_id'", line=12, fix="give every query an '_id'"))
    "queries.jsonl:12: missing field '_id' (fix: give every query an '_id')"
"""

from __future__ import annotations

from pathlib import Path

RETRY_FIX = "free some space (or fix the permissions) and run the same command again: it resumes where it stopped"
"""The fix for a write that failed (a full disk): every write is atomic, so a re-run picks up where it stopped."""


class EmbedlabError(Exception):
    """An error with a message meant for the user; the CLI prints it on one line."""


class DataError(EmbedlabError):
    """Bad input data: names the file, the line (1-based, when known), the problem and the fix."""

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, fix: str | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else self.path
        message = f"{where}: {problem}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)


class ModelError(EmbedlabError):
    """A model that cannot be found, loaded or used as asked."""
