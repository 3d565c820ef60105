"""The embedded vector store: FAISS in-process, saved in the index folder, no server to run.

Two files make the store, both in the index folder:

``records.sqlite``
    the source of truth — one row per document: its string ``id``, an integer ``key`` (FAISS's id, never
    reused), the payload (JSON), the content hash and the vector at full float32 precision. Upserts replace rows
    by ``id`` in one transaction per batch, so an interrupted build keeps every finished batch and a re-run
    never duplicates.
``index.faiss``
    the searchable dense index, built by :meth:`FaissStore.commit` from every stored vector (so IVF and PQ train on
    the whole corpus, and HNSW, which cannot delete, is simply rebuilt), wrapped in ``IndexIDMap2`` so results
    come back as keys, and written to a temporary file then renamed into place. A commit counter in the
    database tells whether the file is current; searching a stale index is an error that says to re-run
    ``embedlab index``.
``bm25-<generation>/``
    with ``lexical=True`` (a ``bm25`` or ``hybrid`` index), the BM25 half: a persisted bm25s index over the
    documents' text (table ``lexical`` of the database), rebuilt by the same commit
    (:mod:`embedlab.index.lexical`). A ``bm25`` index has dimension 0: no vectors and no ``index.faiss``.

:meth:`FaissStore.search_text` ranks by BM25 alone; :meth:`FaissStore.search_hybrid` fuses the dense and the BM25
top-``depth`` with :func:`~embedlab.fusion.reciprocal_rank_fusion`, exactly as ``embedlab select`` builds its
hybrid.

:class:`FaissIndex` is the bare index (build, search, size) with no files, which :mod:`embedlab.index.sweep` uses
to measure every setting. Index types come from FAISS's factory strings, one per ``(index, quantize)`` pair in
:data:`FACTORIES` (a registry): e.g. ``HNSW32_SQ8`` for ``hnsw/int8``, ``IVF128,PQ96x4fs`` for ``ivf/pq``,
``BHNSW32`` over ``np.packbits`` sign codes for ``hnsw/binary``.

FAISS runs with one OpenMP thread unless told otherwise (``threads``): a server runs one search per request thread
anyway, and on a busy 2-core machine multi-threaded FAISS was measured 2–30× slower per single query and up to
100× slower to train PQ than single-threaded, because OpenMP threads wait on one another for cores.

Filters (``where``) select keys with SQLite's ``json_extract`` over the payloads. When at most
:data:`EXACT_FILTER_LIMIT` documents match, or the index cannot restrict its search (PQ fast-scan, binary), the
matching documents are scored exactly from their stored vectors; otherwise FAISS searches with an
``IDSelectorBatch``.

Example::

    >>> store = FaissStore.open(Path("indexes/scifact"), config=config, dim=384, create=True)
    >>> store.upsert(ids=ids, vectors=vectors, payloads=payloads, content_hashes=hashes)
    >>> store.commit()
    >>> hits = store.search(queries=query_vectors, k=10, where={"source": "scifact"})
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from embedlab.errors import RETRY_FIX, EmbedlabError
from embedlab.files import readable_like_open
from embedlab.fusion import reciprocal_rank_fusion
from embedlab.index.config import IndexConfig
from embedlab.index.lexical import LexicalIndex
from embedlab.index.store import Hit, Where, check_where
from embedlab.models.encoders import Vectors
from embedlab.retrieval import exact_top_k

INDEX_FILE = "index.faiss"
RECORDS_FILE = "records.sqlite"
EXACT_FILTER_LIMIT = 4096
DEFAULT_THREADS = 1
SQL_CHUNK = 900

Keys = NDArray[np.int64]

FACTORIES: Mapping[tuple[str, str], Callable[[IndexConfig], str]] = MappingProxyType(
    {
        ("flat", "none"): lambda c: "Flat",
        ("flat", "int8"): lambda c: "SQ8",
        ("flat", "pq"): lambda c: f"PQ{c.pq_m}x4fs",
        ("flat", "binary"): lambda c: "BFlat",
        ("hnsw", "none"): lambda c: f"HNSW{c.hnsw_m}",
        ("hnsw", "int8"): lambda c: f"HNSW{c.hnsw_m}_SQ8",
        ("hnsw", "binary"): lambda c: f"BHNSW{c.hnsw_m}",
        ("ivf", "none"): lambda c: f"IVF{c.nlist},Flat",
        ("ivf", "int8"): lambda c: f"IVF{c.nlist},SQ8",
        ("ivf", "pq"): lambda c: f"IVF{c.nlist},PQ{c.pq_m}x4fs",
        ("ivf", "binary"): lambda c: f"BIVF{c.nlist}",
    }
)
"""FAISS factory string per (index, quantize) pair; ``B…`` strings are binary indexes over sign bits."""


def _faiss() -> Any:
    """The faiss module, imported on first use (its type stubs miss the search-parameter classes)."""
    import faiss

    return faiss


@contextmanager
def omp_threads(threads: int) -> Iterator[None]:
    """Run FAISS with ``threads`` OpenMP threads in this thread, then restore the previous setting."""
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def factory_string(config: IndexConfig) -> str:
    try:
        return FACTORIES[(config.index, config.quantize)](config)
    except KeyError:
        raise EmbedlabError(f"FAISS has no index '{config.index}' with quantize '{config.quantize}'") from None


def binary_codes(vectors: Vectors) -> NDArray[np.uint8]:
    """One bit per dimension: 1 where the component is positive (packed 8 per byte)."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


class FaissIndex:
    """A built FAISS index whose ids are int64 keys. Build with :meth:`build` or :meth:`read`, never ``__init__``."""

    def __init__(self, index: Any, config: IndexConfig, *, threads: int = DEFAULT_THREADS):
        self.index = index
        self.config = config
        self.threads = threads
        self.binary = config.quantize == "binary"
        self._lock = threading.Lock()

    @classmethod
    def build(cls, vectors: Vectors, keys: Keys, config: IndexConfig, *, threads: int = DEFAULT_THREADS) -> FaissIndex:
        """Train (when the type needs it) and fill an index with ``vectors`` under ``keys``."""
        faiss = _faiss()

        if not config.is_resolved:
            raise EmbedlabError("resolve the index config before building")
        assert config.dim is not None
        spec = factory_string(config)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        try:
            if config.quantize == "binary":
                inner = faiss.index_binary_factory(config.dim, spec)
                index = faiss.IndexBinaryIDMap2(inner)
                data: NDArray[Any] = binary_codes(vectors)
            else:
                index = faiss.index_factory(config.dim, f"IDMap2,{spec}", faiss.METRIC_INNER_PRODUCT)
                data = vectors
            inner_index = cls._inner(index, config)
            if config.index == "hnsw":
                inner_index.hnsw.efConstruction = config.ef_construction
            if len(data):
                with omp_threads(threads):
                    index.train(data)
                    index.add_with_ids(data, keys)
        except RuntimeError as exc:  # FAISS reports bad sizes (e.g. too few points to train) as RuntimeError
            first = str(exc).strip().splitlines()[-1]
            raise EmbedlabError(f"FAISS could not build {config.label} over {len(keys)} vectors: {first}") from None
        return cls(index, config, threads=threads)

    @staticmethod
    def _inner(index: Any, config: IndexConfig) -> Any:
        faiss = _faiss()

        if config.quantize == "binary":
            return faiss.downcast_IndexBinary(index.index)
        return faiss.downcast_index(index.index)

    @classmethod
    def read(cls, path: Path, config: IndexConfig, *, threads: int = DEFAULT_THREADS) -> FaissIndex:
        faiss = _faiss()

        reader = faiss.read_index_binary if config.quantize == "binary" else faiss.read_index
        return cls(reader(str(path)), config, threads=threads)

    def write(self, path: Path) -> None:
        """Write to a temporary file beside ``path`` and rename it into place."""
        faiss = _faiss()

        writer = faiss.write_index_binary if self.binary else faiss.write_index
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        readable_like_open(handle)
        os.close(handle)
        try:
            writer(self.index, tmp)
            os.replace(tmp, path)
        except RuntimeError as exc:  # FAISS reports a failed write (a full disk) as a RuntimeError
            Path(tmp).unlink(missing_ok=True)
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise EmbedlabError(f"{path}: cannot write the FAISS index ({reason}) (fix: {RETRY_FIX})") from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def can_select(self) -> bool:
        """Whether FAISS can restrict this index's search to a set of keys (PQ fast-scan and binary cannot)."""
        return not self.binary and not (self.config.index == "flat" and self.config.quantize == "pq")

    def nbytes(self) -> int:
        """Bytes of the serialised index (codes, graph or cell lists, and the id map)."""
        faiss = _faiss()

        serialise = faiss.serialize_index_binary if self.binary else faiss.serialize_index
        return int(serialise(self.index).size)

    def search(
        self,
        queries: Vectors,
        *,
        k: int,
        ef_search: int | None = None,
        nprobe: int | None = None,
        keys: Keys | None = None,
    ) -> tuple[NDArray[np.float32], Keys]:
        """Scores (higher is better) and keys of the ``k`` best per query; key −1 pads missing results.
        ``keys`` restricts the search to those keys (needs :attr:`can_select`)."""
        faiss = _faiss()

        ef_search = ef_search or self.config.ef_search
        nprobe = nprobe or self.config.nprobe
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.binary:
            if keys is not None:
                raise EmbedlabError("a binary FAISS index cannot restrict its search to keys")
            inner = self._inner(self.index, self.config)
            with self._lock, omp_threads(self.threads):
                if self.config.index == "hnsw":
                    inner.hnsw.efSearch = ef_search
                elif self.config.index == "ivf":
                    inner.nprobe = nprobe
                distances, found = self.index.search(binary_codes(queries), k)
            assert self.config.dim is not None
            scores = 1.0 - 2.0 * distances.astype(np.float32) / self.config.dim
            return scores.astype(np.float32), found
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(keys, dtype=np.int64)) if keys is not None else None
        params: Any
        if self.config.index == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=ef_search)
        elif self.config.index == "ivf":
            params = faiss.SearchParametersIVF(nprobe=nprobe)
        elif self.can_select:
            params = faiss.SearchParameters()
        else:
            params = None
        if selector is not None:
            if params is None:
                raise EmbedlabError(f"FAISS cannot restrict a {self.config.label} search to keys")
            params.sel = selector
        with omp_threads(self.threads):
            scores, found = self.index.search(queries, k, params=params)
        return scores, found


class FaissStore:
    """FAISS plus a SQLite sidecar in one folder; see the module docstring. Open with :meth:`open`."""

    name = "faiss"

    def __init__(
        self, folder: Path, connection: sqlite3.Connection, config: IndexConfig, dim: int, *, lexical: bool = False
    ):
        self.folder = folder
        self.config = config
        self.dim = dim
        self.lexical = lexical
        self._db = connection
        self._lock = threading.RLock()
        self._index: FaissIndex | None = None
        self._lexical: LexicalIndex | None = None

    @classmethod
    def open(
        cls, folder: Path, *, config: IndexConfig, dim: int, create: bool = False, lexical: bool = False
    ) -> FaissStore:
        folder = Path(folder)
        path = folder / RECORDS_FILE
        if not path.exists():
            if not create:
                raise EmbedlabError(
                    f"{folder}: no FAISS index here (fix: build one with `embedlab index --store faiss --out {folder}`)"
                )
            folder.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False)
        try:
            with connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS records (key INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL "
                    "UNIQUE, content_hash TEXT NOT NULL, payload TEXT NOT NULL, vector BLOB NOT NULL)"
                )
                connection.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                connection.execute("CREATE TABLE IF NOT EXISTS lexical (key INTEGER PRIMARY KEY, text TEXT NOT NULL)")
                stored = dict(connection.execute("SELECT name, value FROM meta").fetchall())
                if not stored:
                    connection.executemany(
                        "INSERT INTO meta (name, value) VALUES (?, ?)",
                        [
                            ("dim", str(dim)),
                            ("config", json.dumps(config.to_dict())),
                            ("generation", "0"),
                            ("built_generation", "-1"),
                            ("lexical", "1" if lexical else "0"),
                        ],
                    )
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise EmbedlabError(f"{path}: not a readable embedlab FAISS store ({exc})") from None
        if stored:
            built = IndexConfig.from_dict(json.loads(stored["config"]))
            was_lexical = stored.get("lexical") == "1"
            if int(stored["dim"]) != dim or built.build_key() != config.build_key() or was_lexical != lexical:
                connection.close()
                raise EmbedlabError(
                    f"{folder}: holds a FAISS index built as '{built.label}' ({stored['dim']} dims"
                    f"{', with BM25' if was_lexical else ''}), not '{config.label}' ({dim} dims"
                    f"{', with BM25' if lexical else ''}) (fix: use another --out folder)"
                )
        return cls(folder, connection, config, dim, lexical=lexical)

    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def content_hashes(self, *, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(ids), SQL_CHUNK):
                chunk = list(ids[start : start + SQL_CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT id, content_hash FROM records WHERE id IN ({marks})", chunk)
                found.update(rows.fetchall())
        return found

    def upsert(
        self,
        *,
        ids: Sequence[str],
        vectors: Vectors,
        payloads: Sequence[Mapping[str, Any]],
        content_hashes: Sequence[str],
        texts: Sequence[str] | None = None,
    ) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if not vectors.size:  # a bm25 index's rows have no vector
            vectors = vectors.reshape(len(ids), self.dim)
        if not len(ids) == len(vectors) == len(payloads) == len(content_hashes):
            raise EmbedlabError("upsert needs as many vectors, payloads and content hashes as ids")
        if self.lexical and (texts is None or len(texts) != len(ids)):
            raise EmbedlabError("an index with BM25 needs one text per upserted document")
        if len(ids) and vectors.shape[1] != self.dim:
            raise EmbedlabError(f"vectors have {vectors.shape[1]} dimensions; this index holds {self.dim}")
        rows = [
            (doc_id, digest, json.dumps(dict(payload), ensure_ascii=False), vector.tobytes())
            for doc_id, digest, payload, vector in zip(ids, content_hashes, payloads, vectors, strict=True)
        ]
        with self._lock, self._writing(), self._db:
            self._db.executemany(
                "INSERT INTO records (id, content_hash, payload, vector) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO "
                "UPDATE SET content_hash = excluded.content_hash, payload = excluded.payload, vector = excluded.vector",
                rows,
            )
            if self.lexical:
                assert texts is not None
                self._db.executemany(
                    "INSERT INTO lexical (key, text) SELECT key, ? FROM records WHERE id = ? ON CONFLICT(key) DO "
                    "UPDATE SET text = excluded.text",
                    list(zip(texts, ids, strict=True)),
                )
            self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'generation'")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (a full disk) rolls the batch's transaction back and says so in one line."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise EmbedlabError(f"{self.folder / RECORDS_FILE}: cannot write ({exc}) (fix: {RETRY_FIX})") from exc

    def _all_vectors(self) -> tuple[Keys, Vectors]:
        rows = self._db.execute("SELECT key, vector FROM records ORDER BY key").fetchall()
        keys = np.array([row[0] for row in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return keys, vectors

    def _lexical_folder(self, generation: int) -> Path:
        return self.folder / f"bm25-{generation}"

    def _is_built(self, generation: int) -> bool:
        return (
            self._meta("built_generation") == generation
            and (not self.dim or (self.folder / INDEX_FILE).exists())
            and (not self.lexical or self._lexical_folder(generation).exists())
        )

    def commit(self) -> None:
        """Build the FAISS index (and the BM25 half) from every stored document and save them, unless current."""
        with self._lock:
            generation = self._meta("generation")
            if self._is_built(generation):
                return
            index = None
            if self.dim:
                keys, vectors = self._all_vectors()
                index = FaissIndex.build(vectors, keys, self.config)
                index.write(self.folder / INDEX_FILE)
            lexical = None
            if self.lexical:
                rows = self._db.execute("SELECT key, text FROM lexical ORDER BY key").fetchall()
                lexical = LexicalIndex.build(np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows])
                target = self._lexical_folder(generation)
                if not target.exists():
                    lexical.write(target)
            with self._writing(), self._db:
                self._db.execute("UPDATE meta SET value = ? WHERE name = 'built_generation'", (str(generation),))
            for old in self.folder.glob("bm25-*"):  # superseded generations, once the new one is recorded
                if old.name != f"bm25-{generation}":
                    shutil.rmtree(old, ignore_errors=True)
            self._index, self._lexical = index, lexical

    def _stale(self) -> EmbedlabError:
        return EmbedlabError(
            f"{self.folder}: the index is not built or not current (an interrupted build?); "
            f"re-run `embedlab index` with the same settings to finish it"
        )

    def _searchable(self) -> FaissIndex:
        if not self.dim:
            raise EmbedlabError(f"{self.folder}: this is a BM25 index: it has no vectors to search")
        if self._index is None:
            path = self.folder / INDEX_FILE
            if not path.exists() or self._meta("built_generation") != self._meta("generation"):
                raise self._stale()
            self._index = FaissIndex.read(path, self.config)
        return self._index

    def _searchable_text(self) -> LexicalIndex:
        if not self.lexical:
            raise EmbedlabError(f"{self.folder}: this index was built without BM25 (index it as bm25 or hybrid)")
        if self._lexical is None:
            generation = self._meta("generation")
            folder = self._lexical_folder(generation)
            if not folder.exists() or self._meta("built_generation") != generation:
                raise self._stale()
            self._lexical = LexicalIndex.read(folder)
        return self._lexical

    def _matching_keys(self, where: Mapping[str, Any]) -> Keys:
        clauses = " AND ".join("json_extract(payload, ?) = ?" for _ in where)
        params: list[Any] = []
        for name, value in where.items():
            params += [f"$.{name}", value]
        rows = self._db.execute(f"SELECT key FROM records WHERE {clauses} ORDER BY key", params).fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)

    def _vectors_of(self, keys: Keys) -> Vectors:
        by_key: dict[int, bytes] = {}
        for start in range(0, len(keys), SQL_CHUNK):
            chunk = [int(k) for k in keys[start : start + SQL_CHUNK]]
            marks = ",".join("?" * len(chunk))
            by_key.update(self._db.execute(f"SELECT key, vector FROM records WHERE key IN ({marks})", chunk))
        return np.frombuffer(b"".join(by_key[int(k)] for k in keys), dtype=np.float32).reshape(len(keys), self.dim)

    def search(
        self,
        *,
        queries: Vectors,
        k: int,
        where: Where | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise EmbedlabError(f"queries must have shape (n, {self.dim}); got {queries.shape}")
        if k < 1:
            raise EmbedlabError(f"k must be ≥ 1 (got {k})")
        filters = check_where(where)
        with self._lock:
            index = self._searchable()
            if filters:
                keys = self._matching_keys(filters)
                if not len(keys):
                    return [[] for _ in range(len(queries))]
                if len(keys) <= EXACT_FILTER_LIMIT or not index.can_select:
                    scores, rows = exact_top_k(queries, self._vectors_of(keys), k)
                    found = keys[rows]
                else:
                    scores, found = index.search(queries, k=k, ef_search=ef_search, nprobe=nprobe, keys=keys)
            else:
                scores, found = index.search(queries, k=k, ef_search=ef_search, nprobe=nprobe)
            return self._hits(scores, found)

    def search_text(self, *, texts: Sequence[str], k: int, where: Where | None = None) -> list[list[Hit]]:
        """The ``k`` best documents per query text by BM25 alone (documents no query word matches left out)."""
        if k < 1:
            raise EmbedlabError(f"k must be ≥ 1 (got {k})")
        filters = check_where(where)
        with self._lock:
            lexical = self._searchable_text()
            keys = self._matching_keys(filters) if filters else None
            if keys is not None and not len(keys):
                return [[] for _ in texts]
            found = lexical.search(texts, k=k, keys=keys)
            return self._keyed_hits(found)

    def search_hybrid(
        self,
        *,
        queries: Vectors,
        texts: Sequence[str],
        k: int,
        depth: int,
        rrf_k: int,
        where: Where | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """Reciprocal rank fusion (constant ``rrf_k``) of the dense and the BM25 top-``depth``, cut to ``k``;
        a hit's score is its fused score."""
        dense = self.search(queries=queries, k=depth, where=where, ef_search=ef_search, nprobe=nprobe)
        lexical = self.search_text(texts=texts, k=depth, where=where)
        out = []
        for dense_hits, lexical_hits in zip(dense, lexical, strict=True):
            payloads = {h.id: h.payload for h in (*dense_hits, *lexical_hits)}
            runs = [{"q": {h.id: h.score for h in lexical_hits}}, {"q": {h.id: h.score for h in dense_hits}}]
            fused = reciprocal_rank_fusion(runs, k=rrf_k, depth=k).get("q", {})
            out.append([Hit(doc_id, score, payloads[doc_id]) for doc_id, score in fused.items()])
        return out

    def _keyed_hits(self, found: list[list[tuple[int, float]]]) -> list[list[Hit]]:
        records = self._records({key for row in found for key, _ in row})
        return [
            [Hit(records[key][0], score, json.loads(records[key][1])) for key, score in row if key in records]
            for row in found
        ]

    def _records(self, keys: set[int]) -> dict[int, tuple[str, str]]:
        """``key -> (id, payload JSON)`` of the stored documents among ``keys``."""
        wanted = sorted(keys)
        records: dict[int, tuple[str, str]] = {}
        for start in range(0, len(wanted), SQL_CHUNK):
            chunk = wanted[start : start + SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, doc_id, payload in self._db.execute(
                f"SELECT key, id, payload FROM records WHERE key IN ({marks})", chunk
            ):
                records[key] = (doc_id, payload)
        return records

    def _hits(self, scores: NDArray[np.float32], found: Keys) -> list[list[Hit]]:
        records = self._records({int(key) for key in found.ravel() if key >= 0})
        return [
            [
                Hit(records[int(key)][0], float(score), json.loads(records[int(key)][1]))
                for score, key in zip(row_scores, row_keys, strict=True)
                if key >= 0 and int(key) in records
            ]
            for row_scores, row_keys in zip(scores, found, strict=True)
        ]

    def size_bytes(self) -> int | None:
        path = self.folder / INDEX_FILE
        parts = [path] if path.exists() else []
        if self.lexical:
            parts += [p for p in self._lexical_folder(self._meta("built_generation")).glob("*") if p.is_file()]
        return sum(p.stat().st_size for p in parts) if parts else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._index = None
            self._lexical = None
