"""Load test of `embedlab serve` on loopback: latency percentiles and queries per second.

Either point it at a running server on this machine (``--url http://127.0.0.1:8000``; other hosts are refused) or
give it an index folder (``--index DIR``): it then starts ``embedlab serve`` on a free 127.0.0.1 port in a child
process with a random API key, waits for ``/health``, runs the load and stops the child. Requests are POST
/search with the data set's query texts (``--data``, a BEIR folder; otherwise a few built-in queries), cycled,
``--concurrency`` in flight at a time. The run is bounded: at most ``--requests`` requests (≤ 10,000) and
``--max-seconds`` seconds (≤ 600). Latency is measured per request by the client, so it includes the HTTP round
trip and the query's encoding; QPS is completed requests over the run's wall time.

    python benchmarks/serve_load.py --index indexes/scifact --data ../shared/data/scifact --requests 500

prints::

    requests  errors  concurrency  p50 ms  p95 ms  p99 ms  mean ms   QPS
         500       0            4    41.2    63.0    80.9     43.5  91.7
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 64
MAX_SECONDS = 600.0
FALLBACK_QUERIES = (
    "vitamin D deficiency and bone fractures",
    "statins reduce cardiovascular events",
    "aspirin and colorectal cancer risk",
    "gene expression in T cells",
)


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    concurrency: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    qps: float

    def table(self) -> str:
        headers = ["requests", "errors", "concurrency", "p50 ms", "p95 ms", "p99 ms", "mean ms", "QPS"]
        cells = [
            str(self.requests),
            str(self.errors),
            str(self.concurrency),
            *(f"{v:.1f}" for v in (self.p50_ms, self.p95_ms, self.p99_ms, self.mean_ms, self.qps)),
        ]
        widths = [max(len(h), len(c)) for h, c in zip(headers, cells, strict=True)]
        return "\n".join("  ".join(x.rjust(w) for x, w in zip(row, widths, strict=True)) for row in (headers, cells))


def check_loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"error: the load test only targets this machine (127.0.0.1), not {host or url!r}")
    return url.rstrip("/")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_child(index: Path, *, startup_seconds: float = 300.0) -> Iterator[tuple[str, str]]:
    """Start `embedlab serve` for ``index`` on a free loopback port; yield (url, api key); stop it after."""
    port = free_port()
    key = secrets.token_urlsafe(16)
    env = {**os.environ, "EMBEDLAB_API_KEY": key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-c", "from embedlab.cli import main; main()", "serve", "--index", str(index)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile() as log:  # the child's stderr, read back only if it fails to start
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for_health(url, child, log, startup_seconds)
            yield url, key
        finally:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _wait_for_health(url: str, child: subprocess.Popen[bytes], log: IO[bytes], startup_seconds: float) -> None:
    deadline = time.monotonic() + startup_seconds
    while True:
        if child.poll() is not None:
            log.seek(0)
            error = log.read().decode(errors="replace")
            raise SystemExit(f"error: the server exited ({child.returncode}): {error.strip()[-500:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"error: the server did not answer /health within {startup_seconds:.0f} s")
        time.sleep(0.5)


async def _load(
    url: str, queries: Sequence[str], *, requests: int, concurrency: int, max_seconds: float, k: int, api_key: str
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    issued = 0
    started = time.perf_counter()
    deadline = started + max_seconds
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, issued
            while issued < requests and time.perf_counter() < deadline:
                query = queries[issued % len(queries)]
                issued += 1
                tick = time.perf_counter()
                try:
                    response = await client.post("/search", json={"query": query, "k": k})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - tick)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def run_load(
    url: str,
    queries: Sequence[str],
    *,
    requests: int = 300,
    concurrency: int = 4,
    max_seconds: float = 60.0,
    k: int = 10,
    api_key: str = "",
    warmup: int = 8,
) -> LoadResult:
    """Send at most ``requests`` searches (``concurrency`` at a time, at most ``max_seconds``) to a loopback URL."""
    url = check_loopback(url)
    requests = max(1, min(requests, MAX_REQUESTS))
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    max_seconds = max(1.0, min(max_seconds, MAX_SECONDS))
    queries = list(queries) or list(FALLBACK_QUERIES)
    if warmup:
        asyncio.run(_load(url, queries, requests=warmup, concurrency=1, max_seconds=30, k=k, api_key=api_key))
    latencies, errors, seconds = asyncio.run(
        _load(url, queries, requests=requests, concurrency=concurrency, max_seconds=max_seconds, k=k, api_key=api_key)
    )
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return LoadResult(
        requests=len(latencies) + errors,
        errors=errors,
        concurrency=concurrency,
        seconds=seconds,
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        qps=len(latencies) / seconds if seconds > 0 else 0.0,
    )


def load_queries(data: str | None, split: str) -> list[str]:
    if not data:
        return list(FALLBACK_QUERIES)
    from embedlab.data.loaders import load_dataset

    return [q.text for q in load_dataset(Path(data), split=split).queries]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--index", type=Path, help="index folder: start `embedlab serve` for it on 127.0.0.1")
    target.add_argument("--url", help="a running server on this machine, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key-env", default="EMBEDLAB_API_KEY", help="with --url: variable holding the key")
    parser.add_argument("--data", help="BEIR folder whose queries are sent (default: a few built-in queries)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--requests", type=int, default=300, help=f"at most this many (≤ {MAX_REQUESTS})")
    parser.add_argument("--concurrency", type=int, default=4, help=f"requests in flight (≤ {MAX_CONCURRENCY})")
    parser.add_argument("--max-seconds", type=float, default=60.0, help=f"stop after this long (≤ {MAX_SECONDS:.0f})")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    queries = load_queries(args.data, args.split)
    settings = {"requests": args.requests, "concurrency": args.concurrency, "max_seconds": args.max_seconds}
    if args.url:
        result = run_load(args.url, queries, k=args.k, api_key=os.environ.get(args.api_key_env, ""), **settings)
    else:
        with serve_in_child(args.index) as (url, key):
            result = run_load(url, queries, k=args.k, api_key=key, **settings)
    print(result.table())
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")


if __name__ == "__main__":
    main()
