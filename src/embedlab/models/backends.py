"""Inference backends: the ways to run one sentence-transformers model on a CPU, and picking the fastest good one.

A sentence-transformers model can be run by several runtimes at several precisions. Each is a :class:`Backend`
in :data:`BACKENDS`, by name:

=================  ===========  ========  ==================================================================
name               runtime      weights   how
=================  ===========  ========  ==================================================================
``torch``          PyTorch      float32   sentence-transformers' own ``encode`` (the reference)
``torch-bf16``     PyTorch      bfloat16  the same under ``torch.autocast`` (LayerNorm and softmax stay float32)
``onnx``           ONNX Runtime float32   the model exported with ``torch.onnx.export``, attention fused
``onnx-int8``      ONNX Runtime int8      that graph, dynamically quantised (per-channel int8 weights)
``openvino``       OpenVINO     float32   the exported graph compiled by OpenVINO, float32 inference
``openvino-bf16``  OpenVINO     bfloat16  the same, bfloat16 inference (CPUs with avx512_bf16 or AMX only)
``openvino-int8``  OpenVINO     int8      NNCF post-training int8 (weights and activations), calibrated once
=================  ===========  ========  ==================================================================

``auto`` is not a backend but a choice: :func:`calibrate` runs every available backend on the same real texts,
interleaved (so a busy machine slows them alike), keeps those whose vectors stay close to the float32 ones
(mean cosine ≥ 0.995 and every cosine ≥ 0.97 by default; optionally also nDCG@10 on given data), and picks the
fastest. The result is cached as JSON in ``<cache>/calibration/`` per model fingerprint and machine (CPU model,
the flags that matter, threads, runtime versions), so it is measured once per model per machine.

Non-PyTorch backends run from *artifacts* built once per model and cached under
``<cache>/exports/<model fingerprint>/<artifact>-<recipe hash>/``: an ONNX graph (the whole sentence-transformers
pipeline — transformer, pooling, normalisation — taking ``input_ids``/``attention_mask``[/``token_type_ids``]
and returning ``sentence_embedding``), the tokenizer, and ``embedlab-export.json`` describing them. ``embedlab export``
writes the same folder (see :mod:`embedlab.export`), and :func:`embedlab.models.loading.load_encoder` loads such
a folder back. No ``optimum`` is involved (it pins old transformers): export is ``torch.onnx.export``, int8 is
onnxruntime's own dynamic quantisation or NNCF's (``openvino-int8``, needs the ``nncf`` package).

``onnx-int8`` quantises activations per batch (one scale per tensor, as ONNX Runtime's dynamic quantisation does),
so a text's vector moves slightly with the texts it is batched with (cosine ≥ 0.99 to itself measured); every
other backend gives a text the same vector in any batch, up to float rounding.

Encoding wastes no work: texts are tokenised once, sorted by token count into batches, each batch is padded only
to its longest text, and each runtime runs on the cores this process may use
(:func:`~embedlab.models.encoders.cpu_threads`; PyTorch keeps its default of the physical cores unless that is
more).
(For the PyTorch backends sentence-transformers already sorts by length and pads per batch; duplicates are
removed earlier, by :func:`embedlab.embedding.embed`.)

Example::

    >>> from embedlab.models.loading import load_encoder
    >>> encoder = load_encoder("minilm-l6", backend="onnx-int8")   # exported and quantised once, then cached
    >>> encoder.encode(["a cat", "a dog"], role="document").shape
    (2, 384)
    >>> print(calibrate(load_encoder("minilm-l6")))   # what `auto` picks here, and why: one row per backend
    minilm-l6 on AMD EPYC, 2 threads, flags avx2,avx512_bf16,avx512_vnni,avx512f
    backend        docs/s  × torch  mean cos  min cos  ndcg@10  passed         why not
    ...
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from embedlab.errors import ModelError
from embedlab.files import format_table, write_json_atomic
from embedlab.models.catalog import ModelSpec
from embedlab.models.encoders import ENCODING_VERSION, Vectors, cpu_threads, file_digest

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedlab.data.dataset import RetrievalDataset

log = logging.getLogger(__name__)

Runtime = Literal["torch", "onnxruntime", "openvino"]
Precision = Literal["float32", "bfloat16", "int8"]

AUTO = "auto"
EXPORT_META = "embedlab-export.json"
GRAPH_INFO = "graph.json"
EXPORT_SCHEMA = 1
CALIBRATION_SCHEMA = 1
ONNX_OPSET = 17


# --- what runs a batch of texts -----------------------------------------------------------------------------


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


def _normalise(vectors: NDArray[Any]) -> Vectors:
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
        return _normalise(vectors) if normalize and self.autocast else vectors


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

    def infer(self, feeds: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        raise NotImplementedError

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
            width = max(len(e.ids) for e in batch)
            ids = np.full((len(batch), width), self.info.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            types = np.zeros((len(batch), width), dtype=np.int64)
            for row, enc in enumerate(batch):
                ids[row, : len(enc.ids)] = enc.ids
                mask[row, : len(enc.ids)] = 1
                types[row, : len(enc.ids)] = enc.type_ids
            available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            out[index] = self.infer({name: available[name] for name in self.info.inputs})
        return _normalise(out) if normalize else out


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
    """OpenVINO on the CPU; ``precision`` is its inference precision hint (``""``: the CPU's default)."""

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


# --- artifacts: exported graphs, built once per model and cached ---------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """A cached build step: ``build(source, parent_folder, out_folder)`` writes the model file into ``out``."""

    name: str
    model_file: str
    recipe: str
    build: Callable[[ModelSource, Path | None, Path], None]
    parent: str | None = None


def _export_onnx(source: ModelSource, parent: Path | None, out: Path) -> None:
    """The whole sentence-transformers pipeline as one ONNX graph, traced with eager attention (fusable)."""
    import torch
    from sentence_transformers import SentenceTransformer

    loaded = source.model
    for module in loaded:
        if getattr(module, "include_prompt", True) is False and (
            source.spec.query_prefix or source.spec.document_prefix
        ):
            raise ModelError(f"{source.spec.name}: pooling that leaves the prompt out cannot be exported")
    # A second copy with eager attention: its graph is the one ONNX Runtime's fusions recognise.
    try:
        with _quiet():
            model = SentenceTransformer(source.source, device="cpu", model_kwargs={"attn_implementation": "eager"})
    except (TypeError, ValueError, OSError):
        model = loaded
    model.eval()
    sample = model.preprocess(["an example sentence", "a second, somewhat longer example sentence to pad"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Pipeline(torch.nn.Module):
        def __init__(self, inner: SentenceTransformer):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            return self.inner(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            Pipeline(model).eval(),
            tuple(sample[n] for n in names),
            str(out / "model.onnx"),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    model.tokenizer.save_pretrained(str(out))
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    graph = {
        "inputs": names,
        "pad_id": int(model.tokenizer.pad_token_id or 0),
        "dim": _st_dim(model),
        "max_tokens": int(model.get_max_seq_length() or 512),
        "num_heads": int(getattr(config, "num_attention_heads", 0) or 0),
        "hidden_size": int(getattr(config, "hidden_size", 0) or 0),
    }
    (out / GRAPH_INFO).write_text(json.dumps(graph, indent=2))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _copy_side_files(parent: Path, out: Path, model_file: str) -> None:
    """Everything but the parent's model file (tokenizer, inputs) goes along to the derived artifact."""
    for item in parent.iterdir():
        if item.name in {model_file, EXPORT_META} or item.name.startswith("."):
            continue
        if item.is_file():
            shutil.copy2(item, out / item.name)


def _verification_feeds(folder: Path, graph: dict[str, Any]) -> list[dict[str, NDArray[np.int64]]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=128)
    tokenizer.enable_padding(pad_id=graph["pad_id"])
    texts = calibration_texts(8)
    encodings = tokenizer.encode_batch(texts)
    available = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    return [{n: available[n] for n in graph["inputs"]}]


def _ort_outputs(path: Path, feeds: list[dict[str, NDArray[np.int64]]]) -> list[NDArray[np.float32]]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [np.asarray(session.run(["sentence_embedding"], f)[0]) for f in feeds]


def _optimise_onnx(source: ModelSource, parent: Path | None, out: Path) -> None:
    """ONNX Runtime's transformer fusions (attention, LayerNorm, GELU); kept only if the outputs do not change."""
    assert parent is not None
    _copy_side_files(parent, out, "model.onnx")
    meta = json.loads((parent / GRAPH_INFO).read_text())
    try:
        from onnxruntime.transformers import optimizer

        with _quiet(), _silence_logs("onnxruntime"):
            optimised = optimizer.optimize_model(
                str(parent / "model.onnx"),
                model_type="bert",
                num_heads=meta["num_heads"],
                hidden_size=meta["hidden_size"],
                opt_level=1,
            )
            optimised.save_model_to_file(str(out / "model.onnx"))
        feeds = _verification_feeds(parent, meta)
        before, after = _ort_outputs(parent / "model.onnx", feeds), _ort_outputs(out / "model.onnx", feeds)
        if max(float(np.abs(b - a).max()) for b, a in zip(before, after, strict=True)) > 1e-4:
            raise ValueError("fused graph changes the vectors")
    except Exception as exc:  # any failure of the optional fusion step falls back to the plain graph
        log.info("%s: ONNX fusion not used (%s); keeping the plain graph", source.spec.name, exc)
        shutil.copy2(parent / "model.onnx", out / "model.onnx")


@contextlib.contextmanager
def _silence_logs(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


SENSITIVE_COSINE = 0.99
"""A group of layers whose int8 quantisation alone takes the mean cosine to float32 below this stays float: it
alone costs more than the whole model may lose (:class:`QualityGate`), so no int8 model with it could pass."""


def _weight_matmul_groups(model_path: Path) -> dict[str, list[str]]:
    """MatMul nodes with a constant weight, grouped by their name with layer numbers taken out
    (``.../layer.3/output/dense/MatMul`` → ``.../layer.N/output/dense/MatMul``): one group per kind of layer."""
    import re

    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in constants and node.name:
            groups.setdefault(re.sub(r"\d+", "N", node.name), []).append(node.name)
    return groups


def _sensitive_matmuls(folder: Path, model_path: Path) -> dict[str, float]:
    """The groups of :func:`_weight_matmul_groups` that int8 hurts on their own: each group is quantised alone
    (ONNX Runtime, dynamic, per channel) and run on real texts; a group below :data:`SENSITIVE_COSINE` is named
    with its mean cosine. (all-mpnet-base-v2's FFN output layers fall to 0.89 here, every other group of it and
    of MiniLM stays ≥ 0.994.) Measured, not assumed: the same rule serves any model."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer

    graph = json.loads((folder / GRAPH_INFO).read_text())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=min(graph["max_tokens"], 256))
    tokenizer.enable_padding(pad_id=graph["pad_id"])
    texts = calibration_texts(32, half="fit")[16:]  # the longer half: the most activations to quantise
    feeds = []
    for start in range(0, len(texts), 4):
        encodings = tokenizer.encode_batch(list(texts[start : start + 4]))
        available = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feeds.append({n: available[n] for n in graph["inputs"]})
    reference = _normalise(np.concatenate(_ort_outputs(model_path, feeds)))
    sensitive = {}
    with tempfile.TemporaryDirectory() as tmp:
        for group, nodes in _weight_matmul_groups(model_path).items():
            trial = Path(tmp) / "trial.onnx"
            with _quiet(), _silence_logs("root"):
                quantize_dynamic(
                    str(model_path),
                    str(trial),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    nodes_to_quantize=nodes,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
            vectors = _normalise(np.concatenate(_ort_outputs(trial, feeds)))
            cosine = float(np.einsum("ij,ij->i", vectors, reference).mean())
            if cosine < SENSITIVE_COSINE:
                sensitive[group] = cosine
    return sensitive


def _quantise_onnx_int8(source: ModelSource, parent: Path | None, out: Path) -> None:
    """Dynamic int8 (uint8 activations, int8 weights), per channel — per-tensor scales lose too much (MiniLM's
    mean cosine to float32 fell to 0.94 with them, 0.995 per channel) — except the layer groups that int8 alone
    hurts (:func:`_sensitive_matmuls`, recorded in ``int8.json``), which stay float32."""
    assert parent is not None
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _copy_side_files(parent, out, "model.onnx")
    sensitive = _sensitive_matmuls(parent, parent / "model.onnx")
    groups = _weight_matmul_groups(parent / "model.onnx")
    excluded = [node for group in sensitive for node in groups[group]]
    (out / "int8.json").write_text(json.dumps({"float_groups": sensitive, "float_nodes": excluded}, indent=2))
    with _quiet(), _silence_logs("root"):
        quantize_dynamic(
            str(parent / "model.onnx"),
            str(out / "model.onnx"),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            nodes_to_exclude=excluded,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _openvino_ir(source: ModelSource, parent: Path | None, out: Path) -> None:
    """The exported graph converted to OpenVINO's format, weights kept in float32."""
    assert parent is not None
    import openvino

    _copy_side_files(parent, out, "model.onnx")
    converted = openvino.convert_model(str(parent / "model.onnx"))
    openvino.save_model(converted, str(out / "openvino_model.xml"), compress_to_fp16=False)


def _openvino_int8(source: ModelSource, parent: Path | None, out: Path) -> None:
    """NNCF post-training int8 (weights and activations, static scales; SmoothQuant for transformers), calibrated
    on :func:`calibration_texts`; the layer groups int8 alone hurts (:func:`_sensitive_matmuls`) stay float.
    Static scales give a text the same vector whatever its batch-mates."""
    assert parent is not None
    import nncf
    import openvino
    from tokenizers import Tokenizer

    _copy_side_files(parent, out, "model.onnx")
    graph = json.loads((parent / GRAPH_INFO).read_text())
    tokenizer = Tokenizer.from_file(str(parent / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=graph["max_tokens"])
    tokenizer.no_padding()
    texts = calibration_texts(64, half="fit")
    batches = []
    for start in range(0, len(texts), 8):
        encodings = tokenizer.encode_batch(list(texts[start : start + 8]))
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), graph["pad_id"], dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
            types[row, : len(enc.ids)] = enc.type_ids
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        batches.append({name: available[name] for name in graph["inputs"]})
    sensitive = _sensitive_matmuls(parent, parent / "model.onnx")
    groups = _weight_matmul_groups(parent / "model.onnx")
    excluded = [node for group in sensitive for node in groups[group]]
    (out / "int8.json").write_text(json.dumps({"float_groups": sensitive, "float_nodes": excluded}, indent=2))
    model = openvino.Core().read_model(str(parent / "model.onnx"))
    nncf.set_log_level(logging.ERROR)
    with _quiet(), contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
        quantised = nncf.quantize(
            model,
            nncf.Dataset(batches),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(batches),
            ignored_scope=nncf.IgnoredScope(names=excluded, validate=False),
        )
    openvino.save_model(quantised, str(out / "openvino_model.xml"), compress_to_fp16=False)


ARTIFACTS: dict[str, Artifact] = {
    a.name: a
    for a in (
        Artifact("onnx-export", "model.onnx", "torch.onnx.export-eager-v1", _export_onnx),
        Artifact("onnx-fused", "model.onnx", "ort-bert-fusion-v1", _optimise_onnx, parent="onnx-export"),
        Artifact(
            "onnx-int8",
            "model.onnx",
            "ort-dynamic-int8-per-channel-sensitive-float-v4",
            _quantise_onnx_int8,
            "onnx-fused",
        ),
        Artifact("openvino", "openvino_model.xml", "openvino-ir-v1", _openvino_ir, parent="onnx-export"),
        Artifact(
            "openvino-int8",
            "openvino_model.xml",
            "nncf-ptq-int8-mixed-sensitive-float-v4",
            _openvino_int8,
            "onnx-export",
        ),
    )
}
"""Build steps, each from its ``parent`` (the ONNX export is built from the torch model itself)."""


def _artifact_recipe(name: str) -> str:
    """The recipes of a step and all its parents: a change to any of them makes new vectors."""
    artifact = ARTIFACTS[name]
    return artifact.recipe if artifact.parent is None else f"{_artifact_recipe(artifact.parent)}+{artifact.recipe}"


def exports_root() -> Path:
    from embedlab.paths import cache_root

    return cache_root() / "exports"


def ensure_artifact(name: str, source: ModelSource, *, root: Path | None = None) -> Path:
    """The folder of artifact ``name`` for this model, built (with its parents) the first time, atomically."""
    artifact = ARTIFACTS[name]
    # The folder is named by the recipe too: a changed recipe builds anew instead of reusing a stale artifact.
    recipe = hashlib.sha256(_artifact_recipe(name).encode()).hexdigest()[:8]
    target = (root or exports_root()) / source.source_fingerprint / f"{name}-{recipe}"
    if (target / EXPORT_META).exists():
        return target
    parent = ensure_artifact(artifact.parent, source, root=root) if artifact.parent else None
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        out = Path(tmp) / "artifact"
        out.mkdir()
        try:
            artifact.build(source, parent, out)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{source.spec.name}: building the {name} artifact failed: {exc}") from exc
        graph = json.loads((out / GRAPH_INFO).read_text())
        meta = {
            "schema_version": EXPORT_SCHEMA,
            "artifact": name,
            "recipe": _artifact_recipe(name),
            "model_file": artifact.model_file,
            "tokenizer_file": "tokenizer.json",
            "inputs": graph["inputs"],
            "pad_id": graph["pad_id"],
            "dim": graph["dim"],
            "max_tokens": graph["max_tokens"],
            "spec": source.spec.to_dict(),
            "source_fingerprint": source.source_fingerprint,
            "build_seconds": time.perf_counter() - started,
        }
        write_json_atomic(out / EXPORT_META, meta)
        try:
            out.rename(target)
        except OSError:
            if not (target / EXPORT_META).exists():  # another process built it first: theirs is as good
                raise
    _remove_stale(target)
    return target


def _remove_stale(current: Path) -> None:
    """Builds of the same artifact by an older recipe are never used again: delete them (they are large)."""
    import re

    name = current.name.rsplit("-", 1)[0]
    for sibling in current.parent.iterdir():
        if sibling != current and re.fullmatch(re.escape(name) + r"-[0-9a-f]{8}", sibling.name):
            shutil.rmtree(sibling, ignore_errors=True)


def _st_dim(model: SentenceTransformer) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    assert dim is not None
    return int(dim)


# --- the registry ---------------------------------------------------------------------------------------------


def _has_bf16() -> str | None:
    from embedlab.manifest import hardware

    flags = set(hardware()["cpu_flags"])
    return None if flags & {"avx512_bf16", "amx_bf16"} else "this CPU has no bfloat16 instructions"


@dataclass(frozen=True)
class Backend:
    """One way to run a sentence-transformers model. ``recipe`` goes into the encoder's fingerprint."""

    name: str
    runtime: Runtime
    precision: Precision
    recipe: str
    description: str
    open: Callable[[RunnerContext], Runner]
    artifact: str | None = None
    modules: tuple[str, ...] = ()
    requirement: Callable[[], str | None] | None = None

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (a missing package, a missing CPU feature), or ``None``."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return f"the package '{module}' is not installed"
        return self.requirement() if self.requirement else None

    @property
    def full_recipe(self) -> str:
        return self.recipe if self.artifact is None else f"{_artifact_recipe(self.artifact)}+{self.recipe}"


def _folder(context: RunnerContext) -> Path:
    assert context.folder is not None
    return context.folder


def _model(context: RunnerContext) -> Callable[[], SentenceTransformer]:
    assert context.model is not None
    return context.model


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            "torch",
            "torch",
            "float32",
            "torch-float32",  # the fingerprint tag float32 vectors always had: existing caches stay valid
            "sentence-transformers' default path: PyTorch, float32 (the reference)",
            lambda c: TorchRunner(_model(c), threads=c.threads),
        ),
        Backend(
            "torch-bf16",
            "torch",
            "bfloat16",
            "torch-autocast-bfloat16-v1",
            "PyTorch under bfloat16 autocast (matrix products in bfloat16, LayerNorm and softmax in float32)",
            lambda c: TorchRunner(_model(c), threads=c.threads, autocast="bfloat16"),
        ),
        Backend(
            "onnx",
            "onnxruntime",
            "float32",
            "onnxruntime-v1",
            "ONNX Runtime, float32, attention fused",
            lambda c: OnnxRuntimeRunner(_folder(c), threads=c.threads),
            artifact="onnx-fused",
            modules=("onnxruntime", "onnx"),
        ),
        Backend(
            "onnx-int8",
            "onnxruntime",
            "int8",
            "onnxruntime-v1",
            "ONNX Runtime, dynamic int8 (per-channel int8 weights, uint8 activations; VNNI where the CPU has it)",
            lambda c: OnnxRuntimeRunner(_folder(c), threads=c.threads),
            artifact="onnx-int8",
            modules=("onnxruntime", "onnx"),
        ),
        Backend(
            "openvino",
            "openvino",
            "float32",
            "openvino-f32-v1",
            "OpenVINO, float32 inference",
            lambda c: OpenVinoRunner(_folder(c), threads=c.threads, precision="f32"),
            artifact="openvino",
            modules=("openvino", "onnx"),
        ),
        Backend(
            "openvino-bf16",
            "openvino",
            "bfloat16",
            "openvino-bf16-v1",
            "OpenVINO, bfloat16 inference (needs avx512_bf16 or AMX)",
            lambda c: OpenVinoRunner(_folder(c), threads=c.threads, precision="bf16"),
            artifact="openvino",
            modules=("openvino", "onnx"),
            requirement=_has_bf16,
        ),
        Backend(
            "openvino-int8",
            "openvino",
            "int8",
            "openvino-default-precision-v1",
            "OpenVINO, int8 weights and activations (NNCF post-training quantisation, static scales)",
            lambda c: OpenVinoRunner(_folder(c), threads=c.threads, precision=""),
            artifact="openvino-int8",
            modules=("openvino", "onnx", "nncf"),
        ),
    )
}

BACKEND_CHOICES = (AUTO, *BACKENDS)
"""What ``--backend`` accepts."""


def quick_backends() -> tuple[str, ...]:
    """What ``auto`` measures when no calibration is cached: every backend without a quantisation build.

    Quantising a base-size model takes minutes here (NNCF and ONNX Runtime's int8 both ran 80–110 s on mpnet-base,
    more than encoding a small corpus), so ``auto`` leaves int8 out unless a full calibration exists:
    ``embedlab backends --model M`` measures every backend once, and ``auto`` reuses that.
    """
    return tuple(name for name, backend in BACKENDS.items() if backend.precision != "int8")


def auto_backend(encoder: Any) -> str:
    """The backend ``auto`` runs ``encoder`` on: a cached calibration's choice, else a quick calibration's."""
    return calibrate(encoder, backends=quick_backends(), texts=16).chosen


def get_backend(name: str) -> Backend:
    """The backend called ``name``; an unknown name answers with the closest valid ones."""
    backend = BACKENDS.get(name)
    if backend is None:
        close = difflib.get_close_matches(name, BACKEND_CHOICES, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelError(f"unknown backend '{name}': {hint}backends are {', '.join(BACKEND_CHOICES)}")
    return backend


def check_backend_name(name: str) -> str:
    """``name`` when it is ``auto`` or a registered backend; otherwise a ModelError with "did you mean"."""
    if name != AUTO:
        get_backend(name)
    return name


def available_backends() -> dict[str, str | None]:
    """Every backend and why it cannot run here (``None`` when it can)."""
    return {name: backend.unavailable() for name, backend in BACKENDS.items()}


_DEFAULT: contextvars.ContextVar[str] = contextvars.ContextVar("embedlab_backend", default="torch")


def default_backend() -> str:
    """The backend :func:`~embedlab.models.loading.load_encoder` uses when none is named: ``torch`` (float32,
    deterministic, what the tests and the library expect) unless a caller chose another with
    :func:`using_backend` — the CLI does, with ``auto``."""
    return _DEFAULT.get()


@contextlib.contextmanager
def using_backend(name: str) -> Iterator[str]:
    """Within the block, encoders loaded without an explicit backend use ``name`` (``auto`` included)."""
    token = _DEFAULT.set(check_backend_name(name))
    try:
        yield name
    finally:
        _DEFAULT.reset(token)


# --- calibration: which backend is fastest here, among those that keep the vectors -----------------------------


@cache
def calibration_texts(n: int = 32, *, half: Literal["fit", "check"] = "check") -> tuple[str, ...]:
    """``n`` real texts spanning short to long: evenly spaced, by length, over one half of the bundled
    stdlib-docs corpus.

    The corpus, sorted by length, is dealt alternately into two halves: ``"fit"`` texts set what quantisation
    learns (scales, which layers stay float), ``"check"`` texts measure the result (:func:`calibrate`), so a
    quantised model is never judged on the texts it was fitted to. (Judged on its own calibration texts,
    all-MiniLM-L6-v2's OpenVINO int8 scored a mean cosine of 0.9975 to float32; on SciFact abstracts, 0.9946.)
    """
    from embedlab.data.stdlib_docs import load_stdlib_docs

    texts = sorted((d.full_text for d in load_stdlib_docs().corpus), key=len)[0 if half == "fit" else 1 :: 2]
    n = max(1, min(n, len(texts)))
    return tuple(texts[(i * (len(texts) - 1)) // max(n - 1, 1)] for i in range(n))


CHECK_TEXTS = "stdlib-docs-odd-half-v1"
"""Names the texts :func:`calibrate` measures on; a cached calibration measured on other texts is not reused."""


def machine_identity() -> dict[str, Any]:
    """What makes a speed measurement valid on another day: CPU, its flags that matter, threads, runtimes."""
    from embedlab.manifest import hardware

    info = hardware()
    versions = {}
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"cpu": info["cpu"], "cpu_flags": info["cpu_flags"], "threads": cpu_threads(), "versions": versions}


def machine_key() -> str:
    return hashlib.sha256(json.dumps(machine_identity(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class QualityGate:
    """When a backend's vectors are close enough to float32's: cosines on the calibration texts and, when
    evaluation data is given, nDCG@10 lost in points (×100).

    The mean-cosine bound is set from measurements here, not from theory: MiniLM on ``openvino-int8`` (mean
    cosine 0.9975 on the calibration texts) gained 0.6 nDCG@10 points on full SciFact, while all-mpnet-base-v2
    on it (0.9943) lost 1.35 on a 40-query SciFact sample; 0.995 keeps the first and drops the second.
    """

    min_mean_cosine: float = 0.995
    min_cosine: float = 0.97
    max_ndcg_drop: float = 0.5

    def failures(self, measurement: BackendMeasurement) -> list[str]:
        reasons = []
        if measurement.mean_cosine is not None and measurement.mean_cosine < self.min_mean_cosine:
            reasons.append(f"mean cosine {measurement.mean_cosine:.4f} < {self.min_mean_cosine}")
        if measurement.min_cosine is not None and measurement.min_cosine < self.min_cosine:
            reasons.append(f"min cosine {measurement.min_cosine:.4f} < {self.min_cosine}")
        if measurement.ndcg_drop is not None and measurement.ndcg_drop > self.max_ndcg_drop:
            reasons.append(f"nDCG@10 drop {measurement.ndcg_drop:.2f} > {self.max_ndcg_drop} points")
        return reasons


@dataclass
class BackendMeasurement:
    """One backend on the calibration texts. Speeds are the best of the interleaved rounds."""

    backend: str
    docs_per_second: float | None = None
    mean_cosine: float | None = None
    min_cosine: float | None = None
    ndcg_at_10: float | None = None
    ndcg_drop: float | None = None
    prepare_seconds: float | None = None
    passed: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Calibration:
    """What ``auto`` picks for one model on one machine, and the figures behind it."""

    model: str
    fingerprint: str
    machine: dict[str, Any]
    machine_key: str
    chosen: str
    texts: int
    rounds: int
    gate: QualityGate
    measurements: list[BackendMeasurement]
    manifest: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def measurement(self, backend: str) -> BackendMeasurement | None:
        return next((m for m in self.measurements if m.backend == backend), None)

    def __str__(self) -> str:
        reference = self.measurement("torch")
        base = reference.docs_per_second if reference and reference.docs_per_second else None
        rows = []
        for m in sorted(self.measurements, key=lambda m: -(m.docs_per_second or 0.0)):
            speed = m.docs_per_second
            rows.append(
                [
                    m.backend,
                    f"{speed:.1f}" if speed else "-",
                    f"{speed / base:.2f}" if speed and base else "-",
                    f"{m.mean_cosine:.4f}" if m.mean_cosine is not None else "-",
                    f"{m.min_cosine:.4f}" if m.min_cosine is not None else "-",
                    f"{100 * m.ndcg_at_10:.2f}" if m.ndcg_at_10 is not None else "-",
                    ("yes" if m.passed else "no") + ("  <- chosen" if m.backend == self.chosen else ""),
                    m.reason or "",
                ]
            )
        table = format_table(
            ["backend", "docs/s", "× torch", "mean cos", "min cos", "ndcg@10", "passed", "why not"], rows
        )
        where = f"{self.machine['cpu']}, {self.machine['threads']} threads, flags {','.join(self.machine['cpu_flags'])}"
        note = " (cached)" if self.cached else ""
        return f"{self.model} on {where}{note}\n{table}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": CALIBRATION_SCHEMA,
            "kind": "calibration",
            "model": self.model,
            "fingerprint": self.fingerprint,
            "machine": self.machine,
            "machine_key": self.machine_key,
            "chosen": self.chosen,
            "texts": self.texts,
            "rounds": self.rounds,
            "gate": asdict(self.gate),
            "measurements": [m.to_dict() for m in self.measurements],
            "manifest": self.manifest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            model=data["model"],
            fingerprint=data["fingerprint"],
            machine=data["machine"],
            machine_key=data["machine_key"],
            chosen=data["chosen"],
            texts=data["texts"],
            rounds=data["rounds"],
            gate=QualityGate(**data["gate"]),
            measurements=[BackendMeasurement(**m) for m in data["measurements"]],
            manifest=data.get("manifest", {}),
        )


def calibration_path(fingerprint: str, *, root: Path | None = None) -> Path:
    from embedlab.paths import cache_root

    return (root or cache_root()) / "calibration" / f"{fingerprint}-{machine_key()}.json"


def _usable_cached(
    path: Path, backends: Sequence[str], gate: QualityGate, texts: int, with_data: str | None
) -> Calibration | None:
    try:
        calibration = Calibration.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    measured = {m.backend for m in calibration.measurements}
    same_data = calibration.manifest.get("eval_data") == with_data
    recipes = calibration.manifest.get("recipes", {})
    same_recipes = all(recipes.get(name) == BACKENDS[name].full_recipe for name in backends)
    if (
        calibration.manifest.get("check_texts") == CHECK_TEXTS
        and set(backends) <= measured
        and calibration.gate == gate
        and calibration.texts >= texts
        and same_data
        and same_recipes
    ):
        calibration.cached = True
        return calibration
    return None


def calibrate(
    encoder: Any,
    *,
    backends: Sequence[str] | None = None,
    texts: int = 32,
    rounds: int = 2,
    batch_size: int = 8,
    gate: QualityGate | None = None,
    eval_data: RetrievalDataset | None = None,
    refresh: bool = False,
    root: Path | None = None,
    show_progress: bool | None = None,
) -> Calibration:
    """Measure each backend on ``texts`` real texts and pick the fastest that passes ``gate``; cached.

    ``encoder`` is a :class:`~embedlab.models.encoders.SentenceTransformerEncoder` (any backend: only its model
    is used). ``backends`` defaults to every available one. Speeds are the best of ``rounds`` rounds, the
    backends interleaved within each round. With ``eval_data``, nDCG@10 on it is measured for every backend
    too (the whole corpus is encoded by each: slow) and gated by ``gate.max_ndcg_drop``. A cached result is
    reused when it covers the asked backends, built by the same recipes, with the same gate and data and at least
    as many texts;
    ``refresh`` measures again.
    A progress bar shows on a terminal (``show_progress=None``), always (``True``) or never (``False``).
    """
    from embedlab.manifest import build_manifest
    from embedlab.models.encoders import SentenceTransformerEncoder

    if not isinstance(encoder, SentenceTransformerEncoder):
        raise ModelError(f"'{encoder.spec.name}' is not a sentence-transformers model: it has one runtime only")
    gate = gate or QualityGate()
    wanted = list(backends) if backends is not None else list(BACKENDS)
    for name in wanted:
        get_backend(name)
    if "torch" not in wanted:
        wanted.insert(0, "torch")  # the reference every other backend is compared with
    fingerprint = encoder.source_fingerprint
    path = calibration_path(fingerprint, root=root)
    data_hash = eval_data.content_hash if eval_data is not None else None
    if not refresh:
        cached = _usable_cached(path, wanted, gate, texts, data_hash)
        if cached is not None:
            return cached
    from tqdm.auto import tqdm

    started = time.perf_counter()
    sample = list(calibration_texts(texts))
    measurements = {name: BackendMeasurement(name) for name in wanted}
    encoders: dict[str, SentenceTransformerEncoder] = {}
    progress = tqdm(
        total=len(wanted),
        desc=f"calibrating backends for {encoder.spec.name} (once per model and machine)",
        disable=None if show_progress is None else not show_progress,
    )
    for name in wanted:
        progress.update(1)
        reason = BACKENDS[name].unavailable()
        if reason is None and BACKENDS[name].runtime != "torch" and encoder.device != "cpu":
            reason = f"runs on the CPU only (the model is on {encoder.device})"
        if reason:
            measurements[name].reason = reason
            continue
        candidate = encoder.with_backend(name)
        t0 = time.perf_counter()
        try:
            candidate.prepare()
            candidate.encode(sample[:4], role="document", batch_size=batch_size)  # warm-up
        except Exception as exc:  # a backend that cannot build or run here is reported, never fatal
            if name == "torch":
                raise  # the reference itself: nothing to compare with
            measurements[name].reason = f"failed: {exc}".splitlines()[0][:200]
            log.warning("backend %s unusable for %s: %s", name, encoder.spec.name, exc)
            continue
        measurements[name].prepare_seconds = time.perf_counter() - t0
        encoders[name] = candidate
    progress.total = len(wanted) + len(encoders) * (max(1, rounds) + (1 if eval_data is not None else 0))
    progress.refresh()
    best: dict[str, float] = {}
    vectors: dict[str, Vectors] = {}
    for _ in range(max(1, rounds)):
        for name, candidate in encoders.items():
            t0 = time.perf_counter()
            vectors[name] = candidate.encode(sample, role="document", batch_size=batch_size)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
            progress.update(1)
    reference = vectors.get("torch")
    baseline_ndcg = None
    for name, candidate in encoders.items():
        m = measurements[name]
        m.docs_per_second = len(sample) / best[name] if best[name] > 0 else float("inf")
        if reference is not None:
            cosines = np.einsum("ij,ij->i", _normalise(vectors[name]), _normalise(reference))
            m.mean_cosine, m.min_cosine = float(cosines.mean()), float(cosines.min())
        if eval_data is not None:
            m.ndcg_at_10 = retrieval_ndcg(candidate, eval_data, batch_size=max(batch_size, 32))
            progress.update(1)
            if name == "torch":
                baseline_ndcg = m.ndcg_at_10
    progress.close()
    for name in encoders:
        m = measurements[name]
        if baseline_ndcg is not None and m.ndcg_at_10 is not None:
            m.ndcg_drop = 100 * (baseline_ndcg - m.ndcg_at_10)
        failures = gate.failures(m)
        m.passed = not failures
        m.reason = "; ".join(failures) or None
    passing = [m for m in measurements.values() if m.passed and m.docs_per_second]
    chosen = max(passing, key=lambda m: m.docs_per_second or 0.0).backend if passing else "torch"
    calibration = Calibration(
        model=encoder.spec.name,
        fingerprint=fingerprint,
        machine=machine_identity(),
        machine_key=machine_key(),
        chosen=chosen,
        texts=len(sample),
        rounds=max(1, rounds),
        gate=gate,
        measurements=list(measurements.values()),
        manifest=build_manifest(
            command="calibrate",
            models=[encoder.spec.name],
            eval_data=data_hash,
            recipes={name: BACKENDS[name].full_recipe for name in wanted},
            check_texts=CHECK_TEXTS,
            wall_seconds=0.0,
        ),
    )
    calibration.manifest["wall_seconds"] = time.perf_counter() - started
    write_json_atomic(path, calibration.to_dict())
    return calibration


def retrieval_ndcg(
    encoder: Any, dataset: RetrievalDataset, *, batch_size: int = 32, cache: Any = None, show_progress: bool = False
) -> float:
    """Mean nDCG@10 of exact dense retrieval with ``encoder`` on ``dataset`` (0–1), vectors through ``cache``."""
    from embedlab.evaluate.metrics import evaluate_run
    from embedlab.retrieval import DenseRetriever

    retriever = DenseRetriever(encoder, cache=cache, batch_size=batch_size)
    outcome = retriever.retrieve(dataset, k=10, show_progress=show_progress)
    return float(evaluate_run(outcome.run, dataset.qrels, ["ndcg@10"]).means["ndcg@10"])


def fingerprint_of(source_fingerprint: str, backend: str) -> str:
    """The fingerprint of ``backend``'s vectors of a model whose float32 fingerprint is ``source_fingerprint``."""
    if backend == "torch":
        return source_fingerprint
    recipe = get_backend(backend).full_recipe
    return hashlib.sha256(repr((ENCODING_VERSION, source_fingerprint, backend, recipe)).encode()).hexdigest()[:16]


def folder_fingerprint(folder: Path, *extra: object) -> str:
    """A fingerprint of an exported folder's files (its description excepted: it records times) plus settings."""
    digest = hashlib.sha256(repr((ENCODING_VERSION, *extra)).encode())
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = file.relative_to(folder)
        if file.name == EXPORT_META or any(part.startswith(".") for part in relative.parts):
            continue
        stat = file.stat()
        digest.update(str(relative).encode())
        digest.update(file_digest(file.resolve(), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def describe_backends() -> list[dict[str, Any]]:
    """Every backend as data: name, runtime, precision, what it does, and why it cannot run here (or ``None``)."""
    return [
        {
            "name": b.name,
            "runtime": b.runtime,
            "precision": b.precision,
            "description": b.description,
            "unavailable": b.unavailable(),
        }
        for b in BACKENDS.values()
    ]
