"""What runs a batch of texts: sentence-transformers' own ``encode`` (PyTorch, optionally under autocast), or a
tokenise-once, sort-by-length, pad-per-batch loop over an exported graph (ONNX Runtime, OpenVINO).

A runner is opened by a backend of :mod:`~embedlab.models.backends.registry` from a :class:`RunnerContext` (the
artifact folder of :mod:`~embedlab.models.backends.artifacts`, or the PyTorch model). :class:`ExportInfo` reads the
``embedlab-export.json`` that describes such a folder.

Example::

    >>> runner = OnnxRuntimeRunner(folder, threads=2)          # nothing is read until the first batch
    >>> runner.encode(["a cat"], prompt="", batch_size=8, normalize=True, show_progress=False).shape
    (1, 384)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from embedlab.errors import ModelError
from embedlab.models.catalog import ModelSpec
from embedlab.models.encoders import Vectors

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EXPORT_META = "embedlab-export.json"
EXPORT_SCHEMA = 1


class Runner(Protocol):
    """Runs one model on one backend. Vectors come back float32, one row per text, in order."""

    def encode(
        self, texts: Sequence[str], *, prompt: str, batch_size: int, normalize: bool, show_progress: bool
    ) -> Vectors: ...


class ModelSource(Protocol):
    """What artifacts are built from: a loaded sentence-transformers model and the fingerprint of its float32
    vectors (:class:`~embedlab.models.encoders.SentenceTransformerEncoder` is one)."""

    spec: ModelSpec
    source: str

    @property
    def model(self) -> SentenceTransformer: ...

    @property
    def source_fingerprint(self) -> str: ...


@dataclass(frozen=True)
class RunnerContext:
    """What a backend needs to open a runner: the artifact folder (non-PyTorch backends) or the torch model."""

    threads: int
    folder: Path | None = None
    model: Callable[[], SentenceTransformer] | None = None


def normalise(vectors: NDArray[Any]) -> Vectors:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class TorchRunner:
    """sentence-transformers' own ``encode`` (it sorts by length and pads per batch), optionally under autocast."""

    def __init__(self, model: Callable[[], SentenceTransformer], *, threads: int, autocast: str | None = None):
        self._model = model
        self.threads = threads
        self.autocast = autocast

    def encode(
        self, texts: Sequence[str], *, prompt: str, batch_size: int, normalize: bool, show_progress: bool
    ) -> Vectors:
        import torch

        model = self._model()
        if torch.get_num_threads() > self.threads:
            # PyTorch defaults to the physical cores; only a narrower CPU affinity (a container) lowers that.
            torch.set_num_threads(self.threads)
        # Autocast on the model's own device: a CPU autocast leaves a GPU model in float32 without a word.
        context: contextlib.AbstractContextManager[Any] = (
            torch.autocast(model.device.type, dtype=getattr(torch, self.autocast))
            if self.autocast
            else contextlib.nullcontext()
        )
        with context:
            vectors = model.encode(
                list(texts),
                prompt=prompt or None,
                batch_size=batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=normalize,
            )
        vectors = np.asarray(vectors, dtype=np.float32)
        # Under autocast the norm is computed in reduced precision: normalise again in float32.
        return normalise(vectors) if normalize and self.autocast else vectors


@dataclass(frozen=True)
class ExportInfo:
    """The ``embedlab-export.json`` of an artifact or exported folder: read it with :meth:`read`."""

    folder: Path
    data: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> ExportInfo:
        path = Path(folder) / EXPORT_META
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: not a readable embedlab export ({exc})") from exc
        if data.get("schema_version") != EXPORT_SCHEMA:
            raise ModelError(f"{path}: export schema {data.get('schema_version')} is not {EXPORT_SCHEMA}")
        return cls(Path(folder), data)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(**self.data["spec"])

    @property
    def max_tokens(self) -> int:
        return int(self.data["max_tokens"])

    @property
    def dim(self) -> int:
        return int(self.data["dim"])

    @property
    def inputs(self) -> list[str]:
        return list(self.data["inputs"])

    @property
    def pad_id(self) -> int:
        return int(self.data.get("pad_id", 0))

    @property
    def backend(self) -> str | None:
        """The backend an exported folder runs on (cache artifacts serve several and name none)."""
        return self.data.get("backend")

    @property
    def model_file(self) -> Path:
        return self.folder / self.data["model_file"]

    @property
    def tokenizer_file(self) -> Path:
        return self.folder / self.data.get("tokenizer_file", "tokenizer.json")


class TokenizedRunner:
    """Tokenise once, sort by token count, pad each batch to its longest text, run the graph: ONNX/OpenVINO.

    Files are read on first use, not when the runner is made.
    """

    def __init__(self, folder: Path, *, threads: int):
        self.folder = Path(folder)
        self.threads = threads
        self._info: ExportInfo | None = None
        self._tokenizer: Any = None

    @property
    def info(self) -> ExportInfo:
        if self._info is None:
            self._info = ExportInfo.read(self.folder)
        return self._info

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.info.tokenizer_file))
            tokenizer.enable_truncation(max_length=self.info.max_tokens)
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        return self._tokenizer

    def token_counts(self, texts: Sequence[str]) -> NDArray[np.int64]:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.info.tokenizer_file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return np.array([len(e.ids) for e in tokenizer.encode_batch(list(texts))], dtype=np.int64)

    avoided_widths: frozenset[int] = frozenset()
    """Padded widths a runtime gets wrong: a batch of such a width is padded one token further."""

    def infer(self, feeds: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        raise NotImplementedError

    def feeds(self, batch: Sequence[Any]) -> dict[str, NDArray[np.int64]]:
        """The model's inputs for tokenised ``batch``: padded to its longest text (or one further, see
        :attr:`avoided_widths`), with the attention mask and token types."""
        width = max(len(e.ids) for e in batch)
        if width in self.avoided_widths:
            width += 1  # one more masked pad token: the same vectors, another kernel
        ids = np.full((len(batch), width), self.info.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, enc in enumerate(batch):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
            types[row, : len(enc.ids)] = enc.type_ids
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: available[name] for name in self.info.inputs}

    def encode(
        self, texts: Sequence[str], *, prompt: str, batch_size: int, normalize: bool, show_progress: bool
    ) -> Vectors:
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), self.info.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch([prompt + t for t in texts])
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="encode", disable=not show_progress, unit="batch"):
            index = order[start : start + batch_size]
            batch = [encodings[i] for i in index]
            out[index] = self.infer(self.feeds(batch))
        return normalise(out) if normalize else out


class OnnxRuntimeRunner(TokenizedRunner):
    def __init__(self, folder: Path, *, threads: int):
        super().__init__(folder, threads=threads)
        self._session: Any = None

    def infer(self, feeds: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = onnxruntime.InferenceSession(
                str(self.info.model_file), options, providers=["CPUExecutionProvider"]
            )
        return np.asarray(self._session.run(["sentence_embedding"], feeds)[0], dtype=np.float32)


class OpenVinoRunner(TokenizedRunner):
    """OpenVINO on the CPU; ``precision`` is its inference precision hint (``""``: the CPU's default).

    Sequences exactly 32 tokens wide are padded to 33: on an AMX Xeon (OpenVINO's CPU plugin, NNCF int8
    all-MiniLM-L6-v2) a batch of that width whose texts fill 31–32 of its tokens came out wrong (cosine 0.69–0.94 to
    float32 for every such SciFact sentence encoded alone), while widths 31 and 33 and shorter texts padded to 32
    were right (≥ 0.99). A masked pad token changes no vector.
    """

    avoided_widths: frozenset[int] = frozenset({32})

    def __init__(self, folder: Path, *, threads: int, precision: str):
        super().__init__(folder, threads=threads)
        self.precision = precision
        self._request: Any = None

    def infer(self, feeds: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        if self._request is None:
            import openvino

            config: dict[str, Any] = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"}
            if self.precision:
                config["INFERENCE_PRECISION_HINT"] = self.precision
            compiled = openvino.Core().compile_model(str(self.info.model_file), "CPU", config)
            self._request = compiled.create_infer_request()
        result = self._request.infer(feeds)
        return np.array(result["sentence_embedding"], dtype=np.float32)
