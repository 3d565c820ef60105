"""Where embedlab keeps what it builds once and reuses: unpacked models, distilled models, embeddings.

``EMBEDLAB_CACHE`` overrides the default ``~/.cache/embedlab``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROVENANCE_FILE = "embedlab_training.json"
"""The fine-tuning record's file name inside a saved sentence-transformers model folder (written by
:mod:`embedlab.finetune.provenance`; named here so that the model layer can skip it without importing fine-tuning)."""


def cache_root() -> Path:
    root = Path(os.environ.get("EMBEDLAB_CACHE") or Path.home() / ".cache" / "embedlab")
    root.mkdir(parents=True, exist_ok=True)
    return root
