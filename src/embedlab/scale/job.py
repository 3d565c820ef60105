"""Embed a data set's corpus and queries with several models, on an engine, into shards and the embedding cache.

:func:`embed_dataset` is what ``embedlab embed`` runs: for each model and role (documents, then queries) it plans
the shards (:func:`~embedlab.scale.shards.plan_shards`), keeps those already written, has the engine
(:mod:`embedlab.scale.engines`: ``local`` or ``ray``) encode the rest, writes each shard as soon as it is complete,
and puts its vectors into the :class:`~embedlab.embedding.EmbeddingCache`. It returns an :class:`EmbedRun` whose
manifest (``embed.json``) records the data hash, the engine, and per model the fingerprints and backends that made
the vectors, the counts and the seconds.

:func:`prefill` is what ``--engine ray`` on ``compare``, ``select`` and ``index`` runs first: the same, into a
shard folder inside the cache (``<cache>/shards/<data hash>``), so that the local path that follows finds every
vector in the cache and encodes nothing.

Example::

    >>> run = embed_dataset(dataset, ["minilm-l6"], out=Path("runs/embed"), engine=get_engine("ray"), cache=cache)
    >>> print(run)
    model      backend        fingerprint       documents  queries  written  reused  seconds
    ...
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedlab.data.dataset import RetrievalDataset
from embedlab.embedding import EmbeddingCache, text_key
from embedlab.errors import EmbedlabError
from embedlab.files import format_table, write_json_atomic
from embedlab.manifest import build_manifest
from embedlab.models.encoders import Role
from embedlab.scale.corpus import READ_DRIVER, READ_RAY, CorpusFile
from embedlab.scale.engines import Engine
from embedlab.scale.shards import EncodedShard, ShardSet, ShardTask, plan_shards

EMBED_SCHEMA_VERSION = 1
MANIFEST_FILE = "embed.json"
DEFAULT_SHARD_SIZE = 1024


@dataclass
class ModelEmbedding:
    """One model's part of an embed run."""

    model: str
    backend: str
    """The backend asked for (``auto`` included); ``backends`` says what each node resolved it to."""
    fingerprints: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    documents: int = 0
    queries: int = 0
    shards_written: int = 0
    shards_reused: int = 0
    encoded: int = 0
    """Texts in the shards this run wrote (the others were reused)."""
    cached: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend_requested": self.backend,
            "fingerprints": self.fingerprints,
            "backends": self.backends,
            "documents": self.documents,
            "queries": self.queries,
            "shards_written": self.shards_written,
            "shards_reused": self.shards_reused,
            "texts_encoded": self.encoded,
            "vectors_added_to_cache": self.cached,
            "seconds": self.seconds,
            "texts_per_second": self.encoded / self.seconds if self.seconds > 0 and self.encoded else None,
        }


@dataclass
class EmbedRun:
    """What an embed run did: per model, the vectors' fingerprints, counts and time; the manifest of the folder."""

    out: Path
    data: dict[str, Any]
    engine: dict[str, Any]
    shard_size: int
    models: list[ModelEmbedding]
    seconds: float

    def __str__(self) -> str:
        rows = [
            [
                m.model,
                ",".join(m.backends) or "-",
                ",".join(f[:12] for f in m.fingerprints) or "-",
                str(m.documents),
                str(m.queries),
                str(m.shards_written),
                str(m.shards_reused),
                f"{m.seconds:.1f}",
            ]
            for m in self.models
        ]
        headers = ["model", "backend", "fingerprint", "documents", "queries", "written", "reused", "seconds"]
        return format_table(headers, rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": EMBED_SCHEMA_VERSION,
            "data": self.data,
            "engine": self.engine,
            "shard_size": self.shard_size,
            "models": [m.to_dict() for m in self.models],
            "seconds": self.seconds,
            "manifest": build_manifest(command="embed", wall_seconds=self.seconds),
        }

    def write(self) -> Path:
        return write_json_atomic(self.out / MANIFEST_FILE, self.to_dict())


def _texts(dataset: RetrievalDataset | CorpusFile, role: Role) -> tuple[list[str], list[str]]:
    if role == "document":
        assert isinstance(dataset, RetrievalDataset)  # a CorpusFile's documents never come to the driver
        return [d.id for d in dataset.corpus], [d.full_text for d in dataset.corpus]
    return [q.id for q in dataset.queries], [q.text for q in dataset.queries]


def _pending_spans(corpus: CorpusFile, shards: ShardSet) -> list[int]:
    """The corpus' shards not on disk as the scan planned them (absent, damaged, or for other texts)."""
    return [i for i, digest in enumerate(corpus.shard_digests) if not shards.matches_digest(i, digest)]


def embed_dataset(
    dataset: RetrievalDataset | CorpusFile,
    models: Sequence[str],
    *,
    out: Path,
    engine: Engine,
    backend: str = "auto",
    cache: EmbeddingCache | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 32,
    roles: Sequence[Role] = ("document", "query"),
    show_progress: bool = False,
) -> EmbedRun:
    """Embed ``dataset`` with each of ``models`` on ``engine`` into shards under ``out`` (see the module
    docstring); resumes from the shards already there. Writes ``out/embed.json`` when done and returns the run.

    ``dataset`` may be a :class:`~embedlab.scale.corpus.CorpusFile` (:func:`~embedlab.scale.corpus.scan_beir`) on
    the ``ray`` engine: Ray Data then reads the documents on the cluster and this process never holds them."""
    names = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not names:
        raise EmbedlabError("give at least one model to embed with (--models)")
    if batch_size < 1:
        raise EmbedlabError(f"--batch-size must be 1 or more (got {batch_size})")
    on_file = isinstance(dataset, CorpusFile)
    if isinstance(dataset, CorpusFile):
        if dataset.shard_size != shard_size:
            raise EmbedlabError(f"the corpus was scanned for shards of {dataset.shard_size}, not {shard_size}")
        if not hasattr(engine, "encode_corpus"):
            raise EmbedlabError(f"engine {engine.name} cannot read a corpus file (fix: use --engine ray)")
    started = time.perf_counter()
    out = Path(out)
    results = []
    for model in names:
        result = ModelEmbedding(model=model, backend=backend)
        tick = time.perf_counter()
        sets: dict[str, ShardSet] = {}
        todo: list[ShardTask] = []
        spans: list[int] = []
        for role in roles:
            shards = sets[role] = ShardSet(out, model=model, backend=backend, role=role, shard_size=shard_size)
            if isinstance(dataset, CorpusFile) and role == "document":
                planned = set(range(len(dataset.shard_digests)))
                spans = _pending_spans(dataset, shards)
                missing_numbers = set(spans)
                count = dataset.documents
            else:
                ids, texts = _texts(dataset, role)
                tasks = plan_shards(role, ids, texts, [text_key(t, role) for t in texts], shard_size)
                missing = shards.missing(tasks)
                todo.extend(missing)
                planned, missing_numbers, count = {t.index for t in tasks}, {t.index for t in missing}, len(ids)
            _remove_beyond(shards, len(planned))
            for index in sorted(planned - missing_numbers):
                reused = shards.read(index)
                result.shards_reused += 1
                _note(result, reused)
                if cache is not None:
                    result.cached += shards.fill_cache(cache, reused)
            if role == "document":
                result.documents = count
            else:
                result.queries = count

        def keep(shard: EncodedShard, sets: dict[str, ShardSet] = sets, result: ModelEmbedding = result) -> None:
            shards = sets[shard.role]
            shards.write(shard)
            result.shards_written += 1
            result.encoded += len(shard.ids)
            _note(result, shard)
            if cache is not None:
                result.cached += shards.fill_cache(cache, shard)

        if isinstance(dataset, CorpusFile):
            engine.encode_corpus(  # type: ignore[attr-defined]  # checked above
                model=model,
                backend=backend,
                corpus=dataset,
                pending=spans,
                tasks=todo,
                on_shard=keep,
                batch_size=batch_size,
                show_progress=show_progress,
            )
        else:
            engine.encode(
                model=model,
                backend=backend,
                tasks=todo,
                on_shard=keep,
                batch_size=batch_size,
                cache=cache,
                show_progress=show_progress,
            )
        result.seconds = time.perf_counter() - tick
        results.append(result)
    run = EmbedRun(
        out=out,
        data={
            "name": dataset.name,
            "source": dataset.source,
            "content_hash": dataset.content_hash,
            "documents": dataset.documents if isinstance(dataset, CorpusFile) else len(dataset.corpus),
            "queries": len(dataset.queries),
            "read": READ_RAY if on_file else READ_DRIVER,
        },
        engine=engine.describe(),
        shard_size=shard_size,
        models=results,
        seconds=time.perf_counter() - started,
    )
    run.write()
    return run


def _note(result: ModelEmbedding, shard: EncodedShard) -> None:
    for fingerprint in dict.fromkeys(shard.fingerprints):
        if fingerprint not in result.fingerprints:
            result.fingerprints.append(fingerprint)
    for backend in dict.fromkeys(shard.backends):
        if backend not in result.backends:
            result.backends.append(backend)


def _remove_beyond(shards: ShardSet, count: int) -> None:
    """Shards numbered past the plan come from larger data written here before; they would read as this data's."""
    if not shards.folder.exists():
        return
    for path in shards.folder.glob("shard-*.parquet"):
        try:
            number = int(path.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if number >= count:
            path.unlink(missing_ok=True)


def dense_models(models: Sequence[str]) -> list[str]:
    """The models among ``models`` that have vectors: ``bm25`` left out, ``hybrid:MODEL`` as ``MODEL``."""
    from embedlab.index.build import parse_system

    dense: list[str] = []
    for name in models:
        retrieval, model = parse_system(name.strip())
        if retrieval != "bm25" and isinstance(model, str) and model.strip():
            dense.append(model.strip())
    return list(dict.fromkeys(dense))


def prefill(
    dataset: RetrievalDataset,
    models: Sequence[str],
    *,
    engine: Engine,
    cache: EmbeddingCache,
    backend: str = "auto",
    batch_size: int = 32,
    roles: Sequence[Role] = ("document", "query"),
    shard_size: int = DEFAULT_SHARD_SIZE,
    show_progress: bool = False,
) -> EmbedRun | None:
    """Embed the dense ones of ``models`` on ``engine`` into ``cache`` (shards kept under ``<cache>/shards/``, so
    an interrupted run resumes); ``None`` when there is nothing dense to embed."""
    dense = dense_models(models)
    if not dense:
        return None
    out = cache.root / "shards" / dataset.content_hash[:16]
    return embed_dataset(
        dataset,
        dense,
        out=out,
        engine=engine,
        backend=backend,
        cache=cache,
        shard_size=shard_size,
        batch_size=batch_size,
        roles=roles,
        show_progress=show_progress,
    )
