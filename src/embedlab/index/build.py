"""Indexing: embed a corpus and upsert it into a vector store in batches — idempotent, resumable, recorded.

:func:`build_index` walks the corpus in batches of ``batch_size`` documents. For each batch it asks the store
which ids it already holds and with which content hash (SHA-256 of id, title, text and payload); only new or
changed documents are embedded (through the :class:`~embedlab.embedding.EmbeddingCache`, so vectors that
``embedlab compare`` computed are reused), truncated to the index dimension, and upserted with their payload
(``title``, ``text``, ``source`` and any scalar metadata such as ``page``). Each batch is durable when upserted,
so an interrupted run resumes where it stopped and a finished one re-runs as a no-op; upserts replace by id, so
nothing is ever duplicated. Documents that are in the index but no longer in the data are kept and counted as
``extra``.

**What is indexed** is a retrieval system, as ``embedlab select`` recommends one: a dense model (a catalog name,
a folder, a hub id or an :class:`~embedlab.models.encoders.Encoder`), ``bm25`` (no model: the store keeps the
text for BM25, scored as ``embedlab compare`` scores its ``bm25`` baseline) or ``hybrid[:MODEL]`` (both halves in
one store, fused at search time by reciprocal rank fusion with :data:`~embedlab.fusion.RRF_K` over each half's
top :data:`FUSION_DEPTH`, as ``select`` builds its hybrid; the dense half defaults to :data:`HYBRID_DEFAULT`).
:func:`parse_system` reads these names.

The index folder gets ``index.json``, the :class:`IndexManifest`: the store and where it lives, the model (name,
how to load it again, encoder fingerprint, dimension), the settings asked for and as resolved, the data (name,
corpus hash), the counts and the wall times, plus :func:`~embedlab.manifest.build_manifest`. It is written
with ``complete: false`` before the first batch and rewritten with ``complete: true`` at the end; ``embedlab
serve`` refuses an incomplete index. Re-indexing a folder with another model or other settings is an error
(use another folder), never a silent mix.

Example::

    >>> manifest = build_index(dataset, "minilm-l6", out=Path("indexes/scifact"), store="faiss",
    ...                        config=IndexConfig(index="hnsw"), cache=EmbeddingCache(Path(".cache")))
    >>> print(manifest)
    store   index               model      documents  added  updated  unchanged  stored
    faiss   hnsw M32 ef128 d384 minilm-l6       5183   5183        0          0    5183
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from embedlab.data.dataset import Document, RetrievalDataset
from embedlab.embedding import EmbeddingCache, embed
from embedlab.errors import EmbedlabError
from embedlab.files import format_table, write_json_atomic
from embedlab.fusion import RRF_K
from embedlab.index.config import IndexConfig
from embedlab.index.store import FIELD_NAME, check_supported, get_store_type, open_store
from embedlab.manifest import SCHEMA_VERSION, build_manifest
from embedlab.models.catalog import find_spec
from embedlab.models.encoders import Encoder
from embedlab.models.loading import load_encoder

if TYPE_CHECKING:
    from embedlab.scale.shards import EncodedShard, ShardSet

MANIFEST_FILE = "index.json"
RETRIEVALS = ("dense", "bm25", "hybrid")
HYBRID_DEFAULT = "minilm-l6"
FUSION_DEPTH = 100
"""Candidates each half of a hybrid contributes to the fusion: ``select``'s default depth (its largest cut-off)."""


def parse_system(model: str | Path | Encoder, retrieval: str | None = None) -> tuple[str, str | Path | Encoder | None]:
    """``(retrieval, dense model)`` for what ``embedlab index --model`` takes: ``bm25`` → ``("bm25", None)``,
    ``hybrid`` / ``hybrid:MODEL`` → ``("hybrid", MODEL)``, anything else → ``("dense", model)``. ``retrieval``
    (``dense``, ``bm25``, ``hybrid``) overrides the name's, e.g. to index an :class:`Encoder` as a hybrid."""
    if retrieval is not None and retrieval not in RETRIEVALS:
        raise EmbedlabError(f"unknown retrieval '{retrieval}'; valid: {', '.join(RETRIEVALS)}")
    if isinstance(model, str):
        name = model.strip()
        spec = find_spec(name)
        if name == "bm25" or (spec is not None and spec.kind == "bm25"):
            return "bm25", None
        if name == "hybrid" or name.startswith("hybrid:"):
            dense = name.partition(":")[2].strip() or HYBRID_DEFAULT
            if dense == "bm25" or dense.startswith("hybrid"):
                raise EmbedlabError(f"'{name}': the hybrid's second half must be a dense model, e.g. hybrid:minilm-l6")
            return "hybrid", dense
    return retrieval or "dense", model


def bm25_description() -> dict[str, Any]:
    """The ``model`` entry of a BM25 index: what scores it (the settings of ``compare``'s ``bm25``)."""
    from embedlab.retrieval import BM25_B, BM25_K1, BM25_STOPWORDS

    fingerprint = f"bm25s k1={BM25_K1} b={BM25_B} stopwords={BM25_STOPWORDS}"
    return {"name": "bm25", "source": "bm25", "backend": None, "fingerprint": fingerprint, "dim": 0}


def model_source(encoder: Encoder) -> str:
    """What :func:`~embedlab.models.loading.load_encoder` needs to load this model again: the catalog name, or the
    folder / hub id it came from."""
    return encoder.spec.name if find_spec(encoder.spec.name) is not None else encoder.spec.model_id


def describe_model(encoder: Encoder) -> dict[str, Any]:
    """Name, how to load it again (source and, for models with several runtimes, the backend), fingerprint, dim."""
    backend = getattr(encoder, "resolved_backend", None) or getattr(encoder, "backend", None)
    return {
        "name": encoder.spec.name,
        "source": model_source(encoder),
        "backend": backend if isinstance(backend, str) else None,
        "fingerprint": encoder.fingerprint,
        "dim": encoder.dim,
    }


def document_payload(document: Document, source: str) -> dict[str, Any]:
    """What a hit carries: scalar metadata (e.g. ``page``, ``chunk``), then ``title``, ``text`` and ``source``."""
    payload: dict[str, Any] = {
        key: value
        for key, value in document.metadata.items()
        if FIELD_NAME.match(key) and isinstance(value, str | int | float | bool)
    }
    payload["title"] = document.title
    payload["text"] = document.text
    payload.setdefault("source", source)
    return payload


def content_hash(document: Document, payload: Mapping[str, Any]) -> str:
    text = json.dumps([document.id, document.title, document.text, dict(payload)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class IndexManifest:
    """What an index folder holds and how it was made (``index.json``); see the module docstring.

    ``str(manifest)`` is one table row per index::

        store  index                model      documents  added  updated  unchanged  stored
        faiss  hnsw M32 ef128 d384  minilm-l6       5183   5183        0          0    5183
    """

    store: str
    uri: str | None
    collection: str
    model: Mapping[str, Any]
    config: IndexConfig
    resolved: IndexConfig
    data: Mapping[str, Any]
    counts: Mapping[str, int] = field(default_factory=dict)
    complete: bool = False
    seconds: Mapping[str, float] = field(default_factory=dict)
    manifest: Mapping[str, Any] = field(default_factory=dict)
    retrieval: str = "dense"
    fusion: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lexical(self) -> bool:
        """Whether the store keeps the BM25 half."""
        return self.retrieval in ("bm25", "hybrid")

    @property
    def system(self) -> str:
        """What is served, as ``--model`` names it: the model, ``bm25`` or ``hybrid:MODEL``."""
        name = str(self.model.get("name", ""))
        return f"hybrid:{name}" if self.retrieval == "hybrid" else name

    @property
    def label(self) -> str:
        """The index as a short phrase, e.g. ``hnsw M32 ef128 d384 + bm25``."""
        if self.retrieval == "bm25":
            return "bm25"
        return f"{self.resolved.label} + bm25" if self.retrieval == "hybrid" else self.resolved.label

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "index",
            "retrieval": self.retrieval,
            "fusion": dict(self.fusion),
            "store": self.store,
            "uri": self.uri,
            "collection": self.collection,
            "model": dict(self.model),
            "config": self.config.to_dict(),
            "resolved": self.resolved.to_dict(),
            "data": dict(self.data),
            "counts": dict(self.counts),
            "complete": self.complete,
            "seconds": dict(self.seconds),
            "manifest": dict(self.manifest),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexManifest:
        if data.get("kind") != "index":
            raise EmbedlabError('not an embedlab index manifest (no "kind": "index")')
        return cls(
            store=data["store"],
            uri=data.get("uri"),
            collection=data.get("collection", "documents"),
            model=data["model"],
            config=IndexConfig.from_dict(data["config"]),
            resolved=IndexConfig.from_dict(data["resolved"]),
            data=data["data"],
            counts=data.get("counts", {}),
            complete=bool(data.get("complete")),
            seconds=data.get("seconds", {}),
            manifest=data.get("manifest", {}),
            retrieval=data.get("retrieval", "dense"),
            fusion=data.get("fusion", {}),
        )

    @classmethod
    def read(cls, folder: Path) -> IndexManifest:
        path = Path(folder) / MANIFEST_FILE
        if not path.exists():
            raise EmbedlabError(f"{folder}: no index here (no {MANIFEST_FILE}; build one with `embedlab index`)")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError, EmbedlabError) as exc:
            raise EmbedlabError(
                f"{path}: unreadable index manifest ({exc}) (fix: rebuild the index with `embedlab index`)"
            ) from None

    def write(self, folder: Path) -> Path:
        return write_json_atomic(Path(folder) / MANIFEST_FILE, self.to_dict())

    def _row(self) -> list[str]:
        counts = self.counts
        return [
            self.store,
            self.label,
            self.system,
            *(str(counts.get(name, 0)) for name in ("documents", "added", "updated", "unchanged", "stored")),
        ]

    def __str__(self) -> str:
        headers = ["store", "index", "model", "documents", "added", "updated", "unchanged", "stored"]
        table = format_table(headers, [self._row()])
        return table if self.complete else table + "\n(incomplete: re-run the same command to finish)"


def _batches(corpus: tuple[Document, ...], size: int) -> list[tuple[Document, ...]]:
    return [corpus[start : start + size] for start in range(0, len(corpus), size)]


def build_index(
    dataset: RetrievalDataset,
    model: str | Path | Encoder,
    *,
    out: Path,
    store: str = "faiss",
    uri: str | None = None,
    collection: str = "documents",
    config: IndexConfig | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    encode_batch_size: int = 32,
    show_progress: bool = False,
    retrieval: str | None = None,
    shards: ShardSet | None = None,
) -> IndexManifest:
    """Index ``dataset.corpus`` into ``store`` for ``model`` — a dense model, ``bm25`` or ``hybrid[:MODEL]``
    (``retrieval`` overrides, see :func:`parse_system`); see the module docstring. Returns the manifest.

    ``shards`` (the document shards ``embedlab embed`` or ``--engine ray`` wrote for this model and data): the
    vectors come from them, one shard in memory at a time, and each shard is one upsert batch; rows a node
    encoded with another backend than this process resolves are encoded here, so the index holds only vectors of
    the fingerprint its manifest names. Against a Milvus server (``uri`` ``http://...``) with Ray running, Ray
    tasks upsert the shards in parallel (:func:`_upsert_shards_on_ray`); Milvus Lite takes them from here."""
    started = time.perf_counter()
    config = config or IndexConfig()
    out = Path(out)
    if batch_size < 1:
        raise EmbedlabError(f"batch size must be ≥ 1 (got {batch_size})")
    if not dataset.corpus:
        raise EmbedlabError(f"{dataset.name}: the corpus is empty; nothing to index")
    store = get_store_type(store).name
    check_supported(store, config)
    retrieval, dense = parse_system(model, retrieval)
    if retrieval == "bm25":
        if config.build_key() != IndexConfig().build_key():
            raise EmbedlabError(
                "bm25 has no vectors: --index, --quantize, --dim and their settings apply to a dense model or a hybrid"
            )
        encoder = None
        resolved = config
        described = bm25_description()
    else:
        assert dense is not None
        encoder = dense if isinstance(dense, Encoder) else load_encoder(dense)
        resolved = config.resolved(documents=len(dataset.corpus), model_dim=encoder.dim)
        described = describe_model(encoder)
    lexical = retrieval != "dense"
    fusion = {"method": "rrf", "k": RRF_K, "depth": FUSION_DEPTH} if retrieval == "hybrid" else {}
    source = dataset.name or "data"
    payloads = [document_payload(d, source) for d in dataset.corpus]
    hashes = [content_hash(d, p) for d, p in zip(dataset.corpus, payloads, strict=True)]
    manifest = IndexManifest(
        store=store,
        uri=uri,
        collection=collection,
        model=described,
        config=config,
        resolved=resolved,
        retrieval=retrieval,
        fusion=fusion,
        data={
            "name": dataset.name,
            "source": dataset.source,
            "documents": len(dataset.corpus),
            "corpus_hash": hashlib.sha256("".join(hashes).encode()).hexdigest(),
            **({"load_report": dict(dataset.load_report)} if dataset.load_report else {}),
        },
    )
    _check_compatible(out, manifest)
    position = {d.id: i for i, d in enumerate(dataset.corpus)}
    counts = {"documents": len(dataset.corpus), "added": 0, "updated": 0, "unchanged": 0}
    seconds = {"encode": 0.0, "upsert": 0.0}
    dim = (resolved.dim or 0) if encoder is not None else 0
    vector_store = open_store(
        store, index_dir=out, uri=uri, collection=collection, config=resolved, dim=dim, create=True, lexical=lexical
    )
    try:
        # Only once the store opened: a refused --uri leaves no manifest behind.
        manifest.write(out)
        from tqdm.auto import tqdm

        batches: Iterable[tuple[Sequence[Document], EncodedShard | None]] = (
            _shard_batches(dataset.corpus, shards)
            if shards is not None and encoder is not None
            else ((b, None) for b in _batches(dataset.corpus, batch_size))
        )
        parallel: list[tuple[int, list[Document]]] = []  # shards Ray tasks upsert
        with tqdm(
            total=len(dataset.corpus), desc=f"index {manifest.system}", unit="doc", disable=not show_progress
        ) as progress:
            for batch, shard in batches:
                stored = vector_store.content_hashes(ids=[d.id for d in batch])
                todo = [d for d in batch if stored.get(d.id) != hashes[position[d.id]]]
                counts["unchanged"] += len(batch) - len(todo)
                counts["updated"] += sum(1 for d in todo if d.id in stored)
                counts["added"] += sum(1 for d in todo if d.id not in stored)
                if todo and shard is not None and _parallel_upserts(store, uri, shard, encoder):
                    parallel.append((shard.index, todo))  # a Ray task upserts it, below
                    progress.update(len(batch))
                    continue
                if todo:
                    tick = time.perf_counter()
                    texts = [d.full_text for d in todo]
                    if encoder is not None and shard is not None:
                        rows = [position[d.id] - position[batch[0].id] for d in todo]
                        vectors = resolved.prepare(
                            _shard_vectors(shard, rows, texts, encoder, cache=cache, batch_size=encode_batch_size)
                        )
                    elif encoder is not None:
                        vectors = resolved.prepare(
                            embed(encoder, texts, role="document", cache=cache, batch_size=encode_batch_size)
                        )
                    else:
                        vectors = np.zeros((len(todo), 0), dtype=np.float32)
                    seconds["encode"] += time.perf_counter() - tick
                    tick = time.perf_counter()
                    vector_store.upsert(
                        ids=[d.id for d in todo],
                        vectors=vectors,
                        payloads=[payloads[position[d.id]] for d in todo],
                        content_hashes=[hashes[position[d.id]] for d in todo],
                        texts=texts if lexical else None,
                    )
                    seconds["upsert"] += time.perf_counter() - tick
                progress.update(len(batch))
        if parallel:
            assert shards is not None and uri is not None
            tick = time.perf_counter()
            _upsert_shards_on_ray(
                shards,
                parallel,
                uri=uri,
                collection=collection,
                config=resolved,
                dim=dim,
                lexical=lexical,
                payloads=payloads,
                hashes=hashes,
                position=position,
            )
            seconds["upsert"] += time.perf_counter() - tick
        tick = time.perf_counter()
        vector_store.commit()
        seconds["commit"] = time.perf_counter() - tick
        stored_count = vector_store.count()
        index_bytes = vector_store.size_bytes()
    finally:
        vector_store.close()
    counts["stored"] = stored_count
    counts["extra"] = max(0, stored_count - len(dataset.corpus))
    seconds["total"] = time.perf_counter() - started
    done = replace(
        manifest,
        counts=counts,
        complete=True,
        seconds=seconds,
        manifest=build_manifest(
            command="index",
            data={"content_hash": dataset.content_hash, "source": dataset.source},
            index_bytes=index_bytes,
            wall_seconds=seconds["total"],
        ),
    )
    done.write(out)
    return done


def _shard_batches(corpus: Sequence[Document], shards: ShardSet) -> Iterator[tuple[list[Document], EncodedShard]]:
    """The corpus in the shards' row ranges, each with its shard (read one at a time); shards must match it."""
    size = shards.shard_size
    for number, start in enumerate(range(0, len(corpus), size)):
        batch = list(corpus[start : start + size])
        if not shards.path(number).exists():
            raise EmbedlabError(f"{shards.path(number)}: shard missing (fix: run the same command again to embed it)")
        shard = shards.read(number)
        if shard.ids != [d.id for d in batch]:
            raise EmbedlabError(
                f"{shards.path(number)}: holds other documents than rows {start}-{start + len(batch) - 1} of the "
                "corpus (fix: run `embedlab embed` on this data again into the same folder)"
            )
        yield batch, shard


def _shard_vectors(
    shard: EncodedShard,
    rows: Sequence[int],
    texts: Sequence[str],
    encoder: Encoder,
    *,
    cache: EmbeddingCache | None,
    batch_size: int,
) -> NDArray[np.float32]:
    """The shard's vectors of ``rows`` (``texts``: theirs); rows another backend made (a node's ``auto``) are
    encoded by ``encoder``."""
    vectors = np.array(shard.vectors[list(rows)], dtype=np.float32)
    other = [j for j, row in enumerate(rows) if shard.fingerprints[row] != encoder.fingerprint]
    if other:
        encoded = embed(encoder, [texts[j] for j in other], role="document", cache=cache, batch_size=batch_size)
        vectors[other] = encoded
    return vectors


def _parallel_upserts(store: str, uri: str | None, shard: EncodedShard, encoder: Encoder | None) -> bool:
    """Ray tasks upsert a shard when the store is a Milvus server, Ray is up, and every row is the manifest's
    fingerprint (else this process re-encodes some rows, and upserts the shard itself)."""
    if store != "milvus" or not uri or not uri.startswith(("http://", "https://")) or encoder is None:
        return False
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized()) and all(f == encoder.fingerprint for f in shard.fingerprints)


def _upsert_shards_on_ray(
    shards: ShardSet,
    todo: Sequence[tuple[int, Sequence[Document]]],
    *,
    uri: str,
    collection: str,
    config: IndexConfig,
    dim: int,
    lexical: bool,
    payloads: Sequence[Mapping[str, Any]],
    hashes: Sequence[str],
    position: Mapping[str, int],
) -> None:
    """One Ray task per shard, each opening the Milvus server at ``uri`` and upserting the shard's ``todo`` rows
    (read from the shard file, which every node must see at the same path). Not tested here: no Milvus server
    runs on this machine."""
    import ray

    upsert: Any = ray.remote(cast(Any, _upsert_shard))  # keyword-only arguments: beyond Ray's type stubs
    refs = [
        upsert.remote(
            path=str(shards.path(number)),
            rows=[position[d.id] - number * shards.shard_size for d in docs],
            ids=[d.id for d in docs],
            payloads=[dict(payloads[position[d.id]]) for d in docs],
            hashes=[hashes[position[d.id]] for d in docs],
            texts=[d.full_text for d in docs] if lexical else None,
            uri=uri,
            collection=collection,
            config=config,
            dim=dim,
            lexical=lexical,
        )
        for number, docs in todo
    ]
    ray.get(refs)


def _upsert_shard(
    *,
    path: str,
    rows: list[int],
    ids: list[str],
    payloads: list[dict[str, Any]],
    hashes: list[str],
    texts: list[str] | None,
    uri: str,
    collection: str,
    config: IndexConfig,
    dim: int,
    lexical: bool,
) -> None:
    """A Ray task: upsert rows of one shard file into the Milvus collection the driver created."""
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=["vector"]).column("vector").combine_chunks()
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)
    store = open_store(
        "milvus", index_dir=Path("."), uri=uri, collection=collection, config=config, dim=dim, lexical=lexical
    )
    try:
        store.upsert(
            ids=ids, vectors=config.prepare(vectors[rows]), payloads=payloads, content_hashes=hashes, texts=texts
        )
    finally:
        store.close()


def _check_compatible(out: Path, manifest: IndexManifest) -> None:
    """An existing index in ``out`` must have been built by the same model, store and settings."""
    if not (out / MANIFEST_FILE).exists():
        return
    existing = IndexManifest.read(out)
    differences = []
    if existing.retrieval != manifest.retrieval:
        differences.append(f"retrieval {existing.retrieval}")
    if existing.store != manifest.store or existing.uri != manifest.uri or existing.collection != manifest.collection:
        differences.append(f"store {existing.store} ({existing.uri or 'in the folder'}, {existing.collection})")
    if existing.model.get("fingerprint") != manifest.model.get("fingerprint"):
        differences.append(f"model {existing.model.get('name')} (fingerprint {existing.model.get('fingerprint')})")
    if existing.resolved.build_key() != manifest.resolved.build_key():
        differences.append(f"settings '{existing.resolved.label}'")
    if differences:
        raise EmbedlabError(
            f"{out}: holds an index built with {'; '.join(differences)}, not with this command's "
            f"(fix: give another --out folder, or delete {out} to rebuild)"
        )
