"""A corpus that Ray Data reads on the cluster, so that the driver of ``embed --engine ray`` never holds its texts.

Where the data is a BEIR folder, :func:`scan_beir` streams its ``corpus.jsonl`` once on the driver, holding no
text: it checks every line as :func:`~embedlab.data.loaders.load_beir` does (through the loader's own
:func:`~embedlab.data.loaders.beir_document`), counts the documents, computes the data set's ``content_hash``
(the one :class:`~embedlab.data.dataset.RetrievalDataset` gives), a digest of the cache keys of each shard (what
resuming compares a shard on disk with), and the corpus sample that ``auto`` judges on (the same sample
:func:`~embedlab.models.backends.using_corpus` draws: positions first, then a second pass reads only the picked
texts). What it keeps per document is two 64-bit hashes (the id's, for duplicate ids and the judgements' check,
and the text's, for the sample's distinct texts): 1.6 GB at 100M documents, against about 150 GB of text.

:func:`ray_rows` then has Ray Data read the file (``ray.data.read_json`` with the column types the scan found),
numbers the blocks in file order from their row counts, and builds each pending row's id, ``full_text`` and cache
key in Ray tasks, with the loader's function: the rows are the ones the local loader makes, shard ``i`` being
rows ``[i·shard_size, (i+1)·shard_size)`` as in :mod:`embedlab.scale.shards`.

Limits: every node must see the file at the same path (a shared file system; Ray Data also reads ``s3://`` and
other URIs, which the scan does not); one file is one Ray read task (Ray Data parallelises across files, not within
one); the blocks are held in the cluster's object store (which spills to disk) until they are encoded. Other
layouts (pairs files, folders of documents, chunked text) are loaded by the driver as before.

Example::

    >>> corpus = scan_beir(Path("../shared/data/scifact"), "test", shard_size=1024)
    >>> corpus.documents, corpus.content_hash[:12]
    (5183, '...')
    >>> rows = ray_rows(corpus, pending=[0, 3])     # a Ray Dataset: role, shard, row, id, key, text
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from embedlab.data.dataset import Document, Qrels, Query, finish_content_hash, update_content_hash
from embedlab.data.loaders import (
    DuplicatePolicy,
    beir_document,
    beir_judged,
    beir_paths,
    duplicate_id_error,
    iter_beir_corpus,
    json_records,
)
from embedlab.embedding import text_key
from embedlab.errors import DataError, EmbedlabError
from embedlab.models.backends.texts import CalibrationSample, sample_of, sample_positions

READ_RAY = "ray-data"
READ_DRIVER = "driver"
_INT64 = (-(2**63), 2**63 - 1)


def shard_digest(keys: Iterable[str]) -> str:
    """A digest of a shard's cache keys, in order: two shards with the same digest hold the same texts."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode() + b"\n")
    return digest.hexdigest()


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class _SortedHashes:
    """A set of strings held as sorted 64-bit hashes (a corpus' ids, without the ids)."""

    def __init__(self, hashes: NDArray[np.uint64]):
        self.sorted = np.sort(hashes)

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        value = np.uint64(_hash64(item))
        at = int(np.searchsorted(self.sorted, value))
        return at < len(self.sorted) and self.sorted[at] == value


@dataclass(frozen=True)
class CorpusFile:
    """A BEIR folder as the Ray path sees it: the corpus file and what the scan learned; queries and judgements
    loaded (they are small)."""

    name: str
    source: str
    split: str
    path: Path
    documents: int
    queries: tuple[Query, ...]
    qrels: Qrels
    content_hash: str
    shard_size: int
    shard_digests: tuple[str, ...]
    id_type: str
    """``string`` or ``int64``: how every ``_id`` in the file is written (Ray Data reads the column as that)."""
    sample: CalibrationSample | None = None
    load_report: Mapping[str, Any] = field(default_factory=dict)

    def shard_rows(self, index: int) -> int:
        return min(self.shard_size, self.documents - index * self.shard_size)


def scan_beir(
    folder: Path,
    split: str = "test",
    *,
    shard_size: int,
    duplicate_judgements: DuplicatePolicy = "error",
    allow_unknown_ids: bool = False,
) -> CorpusFile | None:
    """Stream a BEIR folder's corpus once (see the module docstring); ``None`` when Ray Data could not read the
    file as the loader does (ids written both as strings and as integers, integers past 64 bits, a byte-order
    mark): the caller then loads the data on the driver. Bad data raises the loader's errors."""
    if shard_size < 1:
        raise EmbedlabError(f"--shard-size must be 1 or more (got {shard_size})")
    root = Path(folder)
    corpus_path, queries_path, qrels_path = beir_paths(root, split, duplicate_judgements)
    with corpus_path.open("rb") as handle:
        if handle.read(3) == b"\xef\xbb\xbf":
            return None
    digest = hashlib.sha256()
    ids: array[int] = array("Q")
    texts: array[int] = array("Q")
    digests: list[str] = []
    shard = hashlib.sha256()
    kinds: set[str] = set()
    count = 0
    for line, record in json_records(corpus_path):
        doc = beir_document(record, corpus_path, line)
        raw = record["_id"]
        kinds.add("string" if isinstance(raw, str) else "int64" if _INT64[0] <= raw <= _INT64[1] else "big")
        update_content_hash(digest, doc)
        full_text = doc.full_text
        shard.update(text_key(full_text, "document").encode() + b"\n")
        ids.append(_hash64(doc.id))
        texts.append(_hash64(full_text))
        count += 1
        if count % shard_size == 0:
            digests.append(shard.hexdigest())
            shard = hashlib.sha256()
    if count % shard_size:
        digests.append(shard.hexdigest())
    if not count:
        raise DataError(corpus_path, "no documents", fix="write one JSON document per line")
    id_hashes = np.frombuffer(ids, dtype=np.uint64)
    known = _SortedHashes(id_hashes)
    if len(np.unique(known.sorted)) < count:
        _raise_duplicate(corpus_path, id_hashes)
    kept, qrels, report = beir_judged(
        queries_path,
        qrels_path,
        known,
        split=split,
        allow_unknown_ids=allow_unknown_ids,
        duplicate_judgements=duplicate_judgements,
    )
    if len(kinds) != 1 or "big" in kinds:
        return None
    return CorpusFile(
        name=root.resolve().name,
        source=str(root),
        split=split,
        path=corpus_path,
        documents=count,
        queries=kept,
        qrels=qrels,
        content_hash=finish_content_hash(digest, kept, qrels),
        shard_size=shard_size,
        shard_digests=tuple(digests),
        id_type=kinds.pop(),
        sample=_sample(corpus_path, np.frombuffer(texts, dtype=np.uint64)),
        load_report=report,
    )


def _raise_duplicate(path: Path, id_hashes: NDArray[np.uint64]) -> None:
    """The loader's error for the first repeated id (a second pass, holding only the ids whose hashes repeat)."""
    values, counts = np.unique(id_hashes, return_counts=True)
    repeated = {int(v) for v in values[counts > 1]}
    first_line: dict[str, int] = {}
    for line, doc in iter_beir_corpus(path):
        if _hash64(doc.id) not in repeated:
            continue
        if doc.id in first_line:
            raise duplicate_id_error(path, doc.id, first_line[doc.id], line)
        first_line[doc.id] = line


def _sample(path: Path, text_hashes: NDArray[np.uint64]) -> CalibrationSample | None:
    """The sample ``using_corpus`` would draw from the documents' full texts, reading only the picked ones."""
    _, first = np.unique(text_hashes, return_index=True)
    distinct_rows = np.sort(first)  # rows of the distinct texts, in order of first appearance
    positions = sample_positions(len(distinct_rows))
    if positions is None:
        return None
    wanted = {int(distinct_rows[p]): p for p in positions}
    found: dict[int, str] = {}
    last = max(wanted)
    for row, (line, record) in enumerate(json_records(path)):
        if row in wanted:
            found[wanted[row]] = beir_document(record, path, line).full_text
        if row >= last:
            break
    return sample_of([found[p] for p in positions], len(distinct_rows))


def number_rows(block: Any, start: int, shard_size: int, pending: Sequence[int], source: str) -> Any:
    """One block Ray Data read, as rows of the pending shards (a Ray task): ``start`` is the block's first row in
    the file. Ids and texts are built by the loader's own function, so they are the local loader's."""
    import pyarrow as pa

    wanted = set(pending)
    out: dict[str, list[Any]] = {"role": [], "shard": [], "row": [], "id": [], "key": [], "text": []}
    path = Path(source)
    for offset, record in enumerate(block.to_pylist()):
        number = start + offset
        shard = number // shard_size
        if shard not in wanted:
            continue
        raw_id = record.get("_id")
        clean = {"_id": raw_id, "text": record.get("text"), "title": record.get("title")}
        doc: Document = beir_document(clean, path, number + 1)
        out["role"].append("document")
        out["shard"].append(shard)
        out["row"].append(number % shard_size)
        out["id"].append(doc.id)
        out["key"].append(text_key(doc.full_text, "document"))
        out["text"].append(doc.full_text)
    return pa.table(
        {
            "role": pa.array(out["role"], pa.string()),
            "shard": pa.array(out["shard"], pa.int64()),
            "row": pa.array(out["row"], pa.int64()),
            "id": pa.array(out["id"], pa.string()),
            "key": pa.array(out["key"], pa.string()),
            "text": pa.array(out["text"], pa.string()),
        }
    )


def _num_rows(block: Any) -> int:
    return int(block.num_rows)


def ray_rows(corpus: CorpusFile, pending: Sequence[int], *, cpus: float = 0.25) -> Any:
    """A Ray Dataset of the pending shards' rows (``role``, ``shard``, ``row``, ``id``, ``key``, ``text``), read
    from the corpus file by Ray Data on the cluster; the driver handles only block references and row counts."""
    import pyarrow as pa
    import pyarrow.json as pajson
    import ray
    import ray.data

    schema = pa.schema(
        [
            ("_id", pa.int64() if corpus.id_type == "int64" else pa.string()),
            ("title", pa.string()),
            ("text", pa.string()),
        ]
    )
    context = ray.data.DataContext.get_current()
    kept_order = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # blocks in file order: their row counts number the rows
    try:
        read = ray.data.read_json(
            str(corpus.path.resolve()),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        blocks = read.to_arrow_refs()
    finally:
        context.execution_options.preserve_order = kept_order
    counts = ray.get([ray.remote(_num_rows).options(num_cpus=cpus).remote(b) for b in blocks])
    if sum(counts) != corpus.documents:
        raise EmbedlabError(
            f"{corpus.path}: Ray Data read {sum(counts)} documents where the scan counted {corpus.documents} "
            "(fix: check that every node sees the same file, or run with --engine local)"
        )
    number = ray.remote(number_rows).options(num_cpus=cpus)
    wanted = sorted(set(pending))
    refs = []
    start = 0
    for block, rows in zip(blocks, counts, strict=True):
        first, last = start // corpus.shard_size, (start + rows - 1) // corpus.shard_size
        if rows and bisect.bisect_left(wanted, first) < bisect.bisect_right(wanted, last):  # a pending shard in it
            refs.append(number.remote(block, start, corpus.shard_size, wanted, str(corpus.path.resolve())))
        start += rows
    return ray.data.from_arrow_refs(cast(Any, refs)) if refs else None
