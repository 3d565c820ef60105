"""Load test of `embedlab serve` on loopback: latency percentiles, queries per second and the server's memory.

Either point it at a running server on this machine (``--url http://127.0.0.1:8000``; other hosts are refused) or
give it index folders (``--index DIR [DIR ...]``): it then starts ``embedlab serve`` for each on a free 127.0.0.1
port in a child process with a random API key, waits for ``/health``, runs the load and stops the children.
Requests carry the data set's query texts (``--data``, a BEIR folder; otherwise a few built-in queries), cycled, to
each of ``--endpoints``: ``search`` (POST /search, whatever the index serves: dense, bm25 or hybrid) and
``embeddings`` (POST /v1/embeddings, the OpenAI API, one text per request, the model named by GET /v1/models), at
each of ``--concurrency`` (e.g. ``1,4,16``) requests in flight; several servers take turns at each step, so a
machine that gets busier slows them alike. ``--passes`` repeats the whole plan. Each run is bounded: at most
``--requests`` requests (≤ 10,000) and ``--max-seconds`` seconds (≤ 600). Latency is measured per request by the
client, so it includes the HTTP round trip and the query's encoding; QPS is completed requests over the run's
wall time. With ``--index`` (or ``--pid``) each server's resident memory is sampled every 0.2 s: at the start of
each run, its end and its peak; the last lines say how much it grew from the end of the first pass to the end of
the last.

    python benchmarks/serve_load.py --index indexes/scifact indexes/scifact-hybrid --data ../shared/data/scifact \\
        --endpoints search,embeddings --concurrency 1,4,16 --requests 200 --passes 2

prints one row per pass, endpoint, concurrency and server, e.g. (SciFact on 2 busy shared cores, see the README)::

    server     endpoint  requests  errors  concurrency  p50 ms  p95 ms  p99 ms  mean ms   QPS  RSS start MB  end MB
    dense #1   search         200       0            4   129.8   213.2   230.8    129.8  30.2         717.7   725.9
    hybrid #1  search         200       0            4   141.8   211.1   223.9    144.3  27.3         814.0   826.0

(and a ``max MB`` column).
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
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil

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
    endpoint: str = "search"
    rss_start_mb: float | None = None
    rss_end_mb: float | None = None
    rss_max_mb: float | None = None

    def cells(self) -> list[str]:
        memory = (self.rss_start_mb, self.rss_end_mb, self.rss_max_mb)
        return [
            self.endpoint,
            str(self.requests),
            str(self.errors),
            str(self.concurrency),
            *(f"{v:.1f}" for v in (self.p50_ms, self.p95_ms, self.p99_ms, self.mean_ms, self.qps)),
            *("-" if v is None else f"{v:.1f}" for v in memory),
        ]

    def table(self) -> str:
        return table([self])


HEADERS = ["endpoint", "requests", "errors", "concurrency", "p50 ms", "p95 ms", "p99 ms", "mean ms", "QPS"]
HEADERS += ["RSS start MB", "end MB", "max MB"]


def table(results: Sequence[LoadResult], names: Sequence[str] | None = None) -> str:
    headers = ["server", *HEADERS] if names else HEADERS
    rows = [
        headers,
        *([n, *r.cells()] if names else r.cells() for n, r in zip(names or [""] * len(results), results, strict=True)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            x.ljust(w) if i < len(headers) - len(HEADERS) + 1 else x.rjust(w)
            for i, (x, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


class MemorySampler:
    """Resident memory of a process, sampled in a thread every ``interval`` seconds while in a ``with`` block."""

    def __init__(self, pid: int | None, interval: float = 0.2):
        self.process = psutil.Process(pid) if pid else None
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        if self.process is not None:
            self.samples.append(self.process.memory_info().rss / 1e6)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def figures(self) -> dict[str, float | None]:
        if not self.samples:
            return {"rss_start_mb": None, "rss_end_mb": None, "rss_max_mb": None}
        return {"rss_start_mb": self.samples[0], "rss_end_mb": self.samples[-1], "rss_max_mb": max(self.samples)}


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
    with serve_child(index, startup_seconds=startup_seconds) as (url, key, _):
        yield url, key


@contextmanager
def serve_child(index: Path, *, startup_seconds: float = 300.0) -> Iterator[tuple[str, str, int]]:
    """:func:`serve_in_child`, yielding the child's process id too."""
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
            yield url, key, child.pid
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


def _request(endpoint: str, query: str, *, k: int, model: str) -> tuple[str, dict[str, object]]:
    if endpoint == "embeddings":
        return "/v1/embeddings", {"model": model, "input": query, "encoding_format": "float"}
    return "/search", {"query": query, "k": k}


async def _load(
    url: str,
    queries: Sequence[str],
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
    k: int,
    api_key: str,
    endpoint: str = "search",
    model: str = "",
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
                path, body = _request(endpoint, query, k=k, model=model)
                try:
                    response = await client.post(path, json=body)
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
    endpoint: str = "search",
    pid: int | None = None,
) -> LoadResult:
    """Send at most ``requests`` requests to ``endpoint`` (``search`` or ``embeddings``; ``concurrency`` at a time,
    at most ``max_seconds``) to a loopback URL; ``pid``: the server's process, whose memory is sampled."""
    url = check_loopback(url)
    requests = max(1, min(requests, MAX_REQUESTS))
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    max_seconds = max(1.0, min(max_seconds, MAX_SECONDS))
    queries = list(queries) or list(FALLBACK_QUERIES)
    model = served_model(url, api_key) if endpoint == "embeddings" else ""
    common = {"k": k, "api_key": api_key, "endpoint": endpoint, "model": model}
    if warmup:
        asyncio.run(_load(url, queries, requests=warmup, concurrency=1, max_seconds=30, **common))  # type: ignore[arg-type]
    with MemorySampler(pid) as memory:
        latencies, errors, seconds = asyncio.run(
            _load(url, queries, requests=requests, concurrency=concurrency, max_seconds=max_seconds, **common)  # type: ignore[arg-type]
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
        endpoint=endpoint,
        **memory.figures(),
    )


def served_model(url: str, api_key: str) -> str:
    """The model a server's OpenAI API serves (GET /v1/models)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(f"{url}/v1/models", headers=headers, timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"error: {url}/v1/models answered {response.status_code}: this index serves no embeddings")
    return str(response.json()["data"][0]["id"])


@dataclass(frozen=True)
class Server:
    """A server under test: its name in the table, URL, key and (for memory) process id."""

    name: str
    url: str
    api_key: str
    pid: int | None


def run_all(
    servers: Sequence[Server],
    queries: Sequence[str],
    *,
    endpoints: Sequence[str],
    concurrencies: Sequence[int],
    passes: int = 1,
    **settings: object,
) -> list[tuple[str, int, LoadResult]]:
    """:func:`run_load` for every pass, endpoint and concurrency, the servers taking turns at each (so a machine
    that gets busier halfway slows them alike); rows are ``(server name, pass, result)``."""
    rows = []
    for number in range(1, passes + 1):
        for endpoint in endpoints:
            for concurrency in concurrencies:
                for server in servers:
                    result = run_load(
                        server.url, queries, endpoint=endpoint, concurrency=concurrency, api_key=server.api_key,
                        pid=server.pid, **settings,  # type: ignore[arg-type]
                    )  # fmt: skip
                    rows.append((server.name, number, result))
    return rows


def memory_growth(rows: Sequence[tuple[str, int, LoadResult]], server: str) -> str | None:
    """How a server's memory moved from the end of its first pass to the end of its last."""
    passes = sorted({number for name, number, _ in rows if name == server})
    ends = {
        number: [r.rss_end_mb for name, n, r in rows if name == server and n == number and r.rss_end_mb is not None]
        for number in passes
    }
    if len(passes) < 2 or not ends[passes[0]] or not ends[passes[-1]]:
        return None
    first, last = ends[passes[0]][-1], ends[passes[-1]][-1]
    peak = max(r.rss_max_mb or 0 for name, _, r in rows if name == server)
    return (
        f"{server}: RSS at the end of pass {passes[0]} {first:.1f} MB, of pass {passes[-1]} {last:.1f} MB "
        f"({last - first:+.1f} MB); peak {peak:.1f} MB"
    )


def load_queries(data: str | None, split: str) -> list[str]:
    if not data:
        return list(FALLBACK_QUERIES)
    from embedlab.data.loaders import load_dataset

    return [q.text for q in load_dataset(Path(data), split=split).queries]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--index",
        type=Path,
        nargs="+",
        help="index folders: start `embedlab serve` for each on 127.0.0.1 (taking turns)",
    )
    target.add_argument("--url", help="a running server on this machine, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key-env", default="EMBEDLAB_API_KEY", help="with --url: variable holding the key")
    parser.add_argument("--data", help="BEIR folder whose queries are sent (default: a few built-in queries)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--requests", type=int, default=300, help=f"at most this many per run (≤ {MAX_REQUESTS})")
    parser.add_argument(
        "--concurrency", default="4", help=f"requests in flight, one run each, e.g. 1,4,16 (≤ {MAX_CONCURRENCY})"
    )
    parser.add_argument("--endpoints", default="search", help="search, embeddings or both (search,embeddings)")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, to sample its memory")
    parser.add_argument("--max-seconds", type=float, default=60.0, help=f"stop after this long (≤ {MAX_SECONDS:.0f})")
    parser.add_argument("--passes", type=int, default=1, help="run the whole plan this many times (memory over time)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    queries = load_queries(args.data, args.split)
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if not endpoints or set(endpoints) - {"search", "embeddings"}:
        raise SystemExit(f"error: --endpoints takes search and/or embeddings (got {args.endpoints!r})")
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        raise SystemExit(f"error: --concurrency takes whole numbers, e.g. 1,4,16 (got {args.concurrency!r})") from None
    plan = {"endpoints": endpoints, "concurrencies": concurrencies, "passes": max(1, args.passes)}
    plan |= {"requests": args.requests, "max_seconds": args.max_seconds, "k": args.k}
    with ExitStack() as stack:
        if args.url:
            servers = [Server(args.url, args.url, os.environ.get(args.api_key_env, ""), args.pid)]
        else:
            servers = []
            for index in args.index:
                url, key, pid = stack.enter_context(serve_child(index))
                servers.append(Server(index.name, url, key, pid))
        rows = run_all(servers, queries, **plan)  # type: ignore[arg-type]
    print(table([r for _, _, r in rows], names=[f"{name} #{number}" for name, number, _ in rows]))
    for server in servers:
        growth = memory_growth(rows, server.name)
        if growth:
            print(growth)
    if args.json:
        figures = [{"server": name, "pass": number, **asdict(r)} for name, number, r in rows]
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
