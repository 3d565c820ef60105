"""An index folder opened for text queries: the store, the encoder, and the settings they were built with.

:meth:`IndexSearcher.open` reads ``index.json`` (refusing an incomplete build), opens the store read-side and
loads the model it names, on the backend it was indexed with — once. The encoder's fingerprint must equal the one
recorded, so a model that changed since indexing is an error rather than silently wrong results.
:meth:`IndexSearcher.search` embeds query texts in the query role, truncates them as the index was built
(``--dim``) and asks the store. Encoding is serialised by a lock (tokenizers are not safe to share between
threads); store searches are not.

What it searches is what was indexed (``index.json``'s ``retrieval``): the dense model's vectors; ``bm25`` (no
model is loaded); or the ``hybrid``, both halves fused by reciprocal rank fusion over each half's top ``depth``
with the recorded constant. BM25 and hybrid hits come ordered as ``compare`` and ``select`` rank them (by score,
ties by document id as trec_eval orders them, out of the same candidate depth), so the service returns what
``select`` measured.

This is what ``embedlab serve`` (:mod:`embedlab.serve`) puts behind HTTP.

Example::

    >>> searcher = IndexSearcher.open(Path("indexes/scifact"))
    >>> searcher.search(["aspirin lowers the risk of colorectal cancer"], k=3)[0][0].id
    '1234567'
    >>> searcher.close()
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from embedlab.errors import EmbedlabError
from embedlab.evaluate.metrics import rank
from embedlab.fusion import RRF_K
from embedlab.index.build import FUSION_DEPTH, IndexManifest
from embedlab.index.config import IndexConfig
from embedlab.index.store import Hit, VectorStore, Where, open_store
from embedlab.models.encoders import Encoder, Role, Vectors
from embedlab.models.loading import load_encoder


class IndexSearcher:
    """A store and its encoder; build with :meth:`open` (``__init__`` does no I/O)."""

    def __init__(self, manifest: IndexManifest, store: VectorStore, encoder: Encoder | None, folder: Path):
        self.manifest = manifest
        self.store = store
        self.encoder = encoder
        self.folder = folder
        self._encode_lock = threading.Lock()

    @classmethod
    def open(cls, folder: Path, *, encoder: Encoder | None = None) -> IndexSearcher:
        """Open the index in ``folder``; ``encoder`` replaces loading the recorded model (it must match it)."""
        folder = Path(folder)
        manifest = IndexManifest.read(folder)
        if not manifest.complete:
            raise EmbedlabError(
                f"{folder}: the index build did not finish; re-run the same `embedlab index` command to complete it"
            )
        if manifest.retrieval == "bm25":
            encoder = None
        else:
            encoder = encoder or load_encoder(str(manifest.model["source"]), backend=manifest.model.get("backend"))
        if encoder is not None and encoder.fingerprint != manifest.model.get("fingerprint"):
            raise EmbedlabError(
                f"{folder}: the model '{manifest.model.get('source')}' is not the one this index was built with "
                f"(fingerprint {encoder.fingerprint}, index {manifest.model.get('fingerprint')}); re-index"
            )
        store = open_store(
            manifest.store,
            index_dir=folder,
            uri=manifest.uri,
            collection=manifest.collection,
            config=manifest.resolved,
            dim=(manifest.resolved.dim or 0) if encoder is not None else 0,
            lexical=manifest.lexical,
        )
        return cls(manifest, store, encoder, folder)

    @property
    def config(self) -> IndexConfig:
        return self.manifest.resolved

    @property
    def dim(self) -> int:
        return self.config.dim or (self.encoder.dim if self.encoder is not None else 0)

    @property
    def retrieval(self) -> str:
        return self.manifest.retrieval

    def embed(self, texts: Sequence[str], *, role: Role = "query") -> Vectors:
        """Vectors as the index holds them: encoded in ``role``, truncated to the index dimension."""
        if self.encoder is None:
            raise EmbedlabError(f"{self.folder}: a bm25 index has no embedding model")
        with self._encode_lock:
            vectors = self.encoder.encode(list(texts), role=role, batch_size=max(1, min(len(texts), 32)))
        return self.config.prepare(vectors)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model's tokenizer makes of each text (special tokens included, before truncation)."""
        if self.encoder is None:
            raise EmbedlabError(f"{self.folder}: a bm25 index has no embedding model")
        with self._encode_lock:
            return [int(n) for n in self.encoder.token_counts(list(texts))]

    def search(
        self,
        texts: Sequence[str],
        *,
        k: int = 10,
        where: Where | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best documents for each query text, best first."""
        if not texts:
            return []
        depth = int(self.manifest.fusion.get("depth", FUSION_DEPTH))
        if self.retrieval == "bm25":
            # From the same depth as compare's run, so ties at the k-th place resolve as compare's ranking does.
            found = self.store.search_text(texts=texts, k=max(k, depth), where=where)
            return [_ranked(hits, k) for hits in found]
        if self.retrieval == "hybrid":
            return self.store.search_hybrid(
                queries=self.embed(texts, role="query"),
                texts=texts,
                k=k,
                depth=max(k, depth),
                rrf_k=int(self.manifest.fusion.get("k", RRF_K)),
                where=where,
                ef_search=ef_search,
                nprobe=nprobe,
            )
        return self.store.search(
            queries=self.embed(texts, role="query"), k=k, where=where, ef_search=ef_search, nprobe=nprobe
        )

    def count(self) -> int:
        return self.store.count()

    def close(self) -> None:
        self.store.close()


def _ranked(hits: Sequence[Hit], k: int) -> list[Hit]:
    """The ``k`` best hits by score, ties by id as trec_eval orders them (:func:`~embedlab.evaluate.metrics.rank`)."""
    by_id = {hit.id: hit for hit in hits}
    return [by_id[doc_id] for doc_id in rank({hit.id: hit.score for hit in hits}, k)]
