"""Where embedlab keeps what it builds once and reuses: unpacked models, distilled models, embeddings.

``EMBEDLAB_CACHE`` overrides the default ``~/.cache/embedlab``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = Path(os.environ.get("EMBEDLAB_CACHE") or Path.home() / ".cache" / "embedlab")
    root.mkdir(parents=True, exist_ok=True)
    return root
