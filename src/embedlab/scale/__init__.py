"""Scale-out: embed corpora that outgrow one machine, on an existing distributed engine (Ray Data).

- :mod:`embedlab.scale.shards` — the output of ``embedlab embed``: Parquet shards per model and role, resumable.
- :mod:`embedlab.scale.engines` — where encoding runs: ``local`` (this process) or ``ray``.
- :mod:`embedlab.scale.ray_engine` — the Ray Data engine: an actor pool, one model load per actor.
- :mod:`embedlab.scale.corpus` — a BEIR corpus that Ray Data reads on the cluster (the driver scans it, holding no
  text).
- :mod:`embedlab.scale.job` — :func:`embed_dataset` (``embedlab embed``) and :func:`prefill` (``--engine ray`` on
  ``compare``, ``select`` and ``index``: embed on the cluster into the cache, then run the local path).
"""

from embedlab.scale.engines import ENGINES, Engine, LocalEngine, get_engine
from embedlab.scale.job import EmbedRun, embed_dataset, prefill

__all__ = ["ENGINES", "EmbedRun", "Engine", "LocalEngine", "embed_dataset", "get_engine", "prefill"]
