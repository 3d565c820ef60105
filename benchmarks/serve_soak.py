"""Soak test of `embedlab serve`: many concurrent searches for minutes; every status counted, memory watched.

Starts ``embedlab serve`` for ``--index`` on a free 127.0.0.1 port in a child process (as ``serve_load.py`` does),
then keeps ``--concurrency`` POST /search requests in flight for ``--seconds`` (≤ 600) with the data set's query
texts (``--data``, a BEIR folder), cycled, and ``k`` cycled through 1, 10 and 100. It counts every answer by
status class (2xx, 4xx, 5xx) and every transport error, and samples the server's resident memory (RSS) every
``--sample-seconds``. Memory growth is measured from the end of ``--warmup-seconds`` (allocators, caches and the
first requests of every shape settle by then) to the end of the run.

    python benchmarks/serve_soak.py --index indexes/scifact --data ../shared/data/scifact --concurrency 16 --seconds 300

prints the figures and whether they meet the bar (no 5xx, no transport error, RSS growth < 10%)::

    requests  2xx    4xx  5xx  transport errors  QPS   p50 ms  p99 ms  RSS warm MB  RSS end MB  RSS max MB  growth
    ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from serve_load import load_queries, serve_in_child

MAX_SECONDS = 600.0
K_VALUES = (1, 10, 100)
MAX_GROWTH = 0.10


@dataclass
class SoakResult:
    concurrency: int
    seconds: float
    statuses: dict[str, int]
    transport_errors: int
    qps: float
    p50_ms: float
    p99_ms: float
    rss_warm_mb: float
    rss_end_mb: float
    rss_max_mb: float
    rss_samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.transport_errors

    @property
    def growth(self) -> float:
        return (self.rss_end_mb - self.rss_warm_mb) / self.rss_warm_mb

    @property
    def passed(self) -> bool:
        return self.statuses.get("5xx", 0) == 0 and self.transport_errors == 0 and self.growth < MAX_GROWTH

    def table(self) -> str:
        headers = ["requests", "2xx", "4xx", "5xx", "transport errors", "QPS", "p50 ms", "p99 ms", "RSS warm MB",
                   "RSS end MB", "RSS max MB", "growth"]  # fmt: skip
        cells = [
            str(self.requests),
            *(str(self.statuses.get(c, 0)) for c in ("2xx", "4xx", "5xx")),
            str(self.transport_errors),
            *(f"{v:.1f}" for v in (self.qps, self.p50_ms, self.p99_ms, self.rss_warm_mb, self.rss_end_mb)),
            f"{self.rss_max_mb:.1f}",
            f"{100 * self.growth:+.1f}%",
        ]
        widths = [max(len(h), len(c)) for h, c in zip(headers, cells, strict=True)]
        rows = ("  ".join(x.rjust(w) for x, w in zip(row, widths, strict=True)) for row in (headers, cells))
        verdict = "PASS" if self.passed else "FAIL"
        return "\n".join([*rows, f"{verdict}: no 5xx, no transport error, RSS growth < {100 * MAX_GROWTH:.0f}%"])


class RssSampler(threading.Thread):
    """Samples a process's resident memory every ``every`` seconds until stopped: (seconds since start, MB)."""

    def __init__(self, pid: int, every: float):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.started = time.monotonic()
        self._stop_event = threading.Event()

    def sample(self) -> float:
        mb = self.process.memory_info().rss / 2**20
        self.samples.append((time.monotonic() - self.started, mb))
        return mb

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


async def _soak(
    url: str, queries: Sequence[str], *, concurrency: int, seconds: float, api_key: str
) -> tuple[Counter[str], int, list[float], float]:
    statuses: Counter[str] = Counter()
    transport_errors = 0
    latencies: list[float] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": api_key}, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal issued, transport_errors
            while time.perf_counter() < deadline:
                body = {"query": queries[issued % len(queries)], "k": K_VALUES[issued % len(K_VALUES)]}
                issued += 1
                tick = time.perf_counter()
                try:
                    response = await client.post("/search", json=body)
                except httpx.HTTPError:
                    transport_errors += 1
                    continue
                statuses[f"{response.status_code // 100}xx"] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - tick)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, transport_errors, latencies, time.perf_counter() - started


def soak(
    url: str,
    pid: int,
    queries: Sequence[str],
    *,
    api_key: str,
    concurrency: int = 16,
    seconds: float = 300.0,
    warmup_seconds: float = 30.0,
    sample_seconds: float = 5.0,
) -> SoakResult:
    """Run the soak against a server at ``url`` whose process is ``pid``; the warm-up is part of the run."""
    seconds = max(1.0, min(seconds, MAX_SECONDS))
    sampler = RssSampler(pid, sample_seconds)
    sampler.sample()
    sampler.start()
    warm: list[float] = []
    timer = threading.Timer(min(warmup_seconds, seconds / 2), lambda: warm.append(sampler.sample()))
    timer.start()
    try:
        statuses, errors, latencies, wall = asyncio.run(
            _soak(url, queries, concurrency=concurrency, seconds=seconds, api_key=api_key)
        )
    finally:
        timer.cancel()
        sampler.stop()
    end = sampler.sample()
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return SoakResult(
        concurrency=concurrency,
        seconds=wall,
        statuses=dict(statuses),
        transport_errors=errors,
        qps=len(latencies) / wall,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        rss_warm_mb=warm[0] if warm else sampler.samples[0][1],
        rss_end_mb=end,
        rss_max_mb=max(mb for _, mb in sampler.samples),
        rss_samples=sampler.samples,
    )


def server_pid() -> int:
    """The `embedlab serve` child this process started (serve_in_child starts exactly one)."""
    children = psutil.Process(os.getpid()).children()
    if len(children) != 1:
        raise SystemExit(f"error: expected one server child process, found {len(children)}")
    return children[0].pid


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="index folder: `embedlab serve` is started for it")
    parser.add_argument("--data", help="BEIR folder whose queries are sent (default: a few built-in queries)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=300.0, help=f"length of the run (≤ {MAX_SECONDS:.0f})")
    parser.add_argument("--warmup-seconds", type=float, default=30.0, help="memory growth is measured from here")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="how often RSS is sampled")
    parser.add_argument("--json", type=Path, help="also write the figures (and every RSS sample) to this file")
    args = parser.parse_args(argv)
    queries = load_queries(args.data, args.split)
    with serve_in_child(args.index) as (url, key):
        result = soak(
            url,
            server_pid(),
            queries,
            api_key=key,
            concurrency=args.concurrency,
            seconds=args.seconds,
            warmup_seconds=args.warmup_seconds,
            sample_seconds=args.sample_seconds,
        )
    print(result.table())
    if args.json:
        args.json.write_text(json.dumps({**asdict(result), "growth": result.growth, "passed": result.passed}) + "\n")
    raise SystemExit(0 if result.passed else 1)


if __name__ == "__main__":
    main()
