"""Artifacts: the exported graphs non-PyTorch backends run from, built once per model and cached.

Each :class:`Artifact` in :data:`ARTIFACTS` is one build step from its parent (the ONNX export from the PyTorch
model; fusion, OpenVINO conversion and int8 quantisation from the export). :func:`ensure_artifact` builds a step
and its parents the first time, atomically, under ``<cache>/exports/<model fingerprint>/<artifact>-<recipe hash>/``.
No ``optimum`` is involved: export is ``torch.onnx.export``, int8 is ONNX Runtime's dynamic quantisation or NNCF's.

Example::

    >>> folder = ensure_artifact("openvino", encoder)   # encoder: a SentenceTransformerEncoder
    >>> sorted(p.name for p in folder.iterdir())[:2]
    ['embedlab-export.json', 'graph.json']
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from embedlab.errors import ModelError
from embedlab.files import write_json_atomic
from embedlab.models.backends.runners import EXPORT_META, EXPORT_SCHEMA, ModelSource, normalise
from embedlab.models.backends.texts import CalibrationSample, calibration_texts
from embedlab.models.encoders import ENCODING_VERSION, cpu_threads, file_digest

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

GRAPH_INFO = "graph.json"
ONNX_OPSET = 17


@dataclass(frozen=True)
class Artifact:
    """A cached build step: ``build(source, parent_folder, out_folder, fit_texts)`` writes the model file into
    ``out``. A ``fitted`` step learns from ``fit_texts`` (int8 scales, which layers stay float): its folder and its
    vectors are keyed by them too; the other steps ignore them."""

    name: str
    model_file: str
    recipe: str
    build: Callable[[ModelSource, Path | None, Path, Sequence[str]], None]
    parent: str | None = None
    fitted: bool = False


def _export_onnx(source: ModelSource, parent: Path | None, out: Path, fit: Sequence[str]) -> None:
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


def _optimise_onnx(source: ModelSource, parent: Path | None, out: Path, fit: Sequence[str]) -> None:
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


def _sensitive_matmuls(folder: Path, model_path: Path, fit: Sequence[str]) -> dict[str, float]:
    """The groups of :func:`_weight_matmul_groups` that int8 hurts on their own: each group is quantised alone
    (ONNX Runtime, dynamic, per channel) and run on the 16 longest ``fit`` texts (the most activations to
    quantise); a group below :data:`SENSITIVE_COSINE` is named with its mean cosine. (all-mpnet-base-v2's FFN
    output layers fall to 0.89 on the bundled texts, every other group of it and of MiniLM stays ≥ 0.994.)
    Measured, not assumed: the same rule serves any model."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer

    graph = json.loads((folder / GRAPH_INFO).read_text())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=min(graph["max_tokens"], 256))
    tokenizer.enable_padding(pad_id=graph["pad_id"])
    texts = sorted(fit, key=len)[-16:]
    feeds = []
    for start in range(0, len(texts), 4):
        encodings = tokenizer.encode_batch(list(texts[start : start + 4]))
        available = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feeds.append({n: available[n] for n in graph["inputs"]})
    reference = normalise(np.concatenate(_ort_outputs(model_path, feeds)))
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
            vectors = normalise(np.concatenate(_ort_outputs(trial, feeds)))
            cosine = float(np.einsum("ij,ij->i", vectors, reference).mean())
            if cosine < SENSITIVE_COSINE:
                sensitive[group] = cosine
    return sensitive


def _quantise_onnx_int8(source: ModelSource, parent: Path | None, out: Path, fit: Sequence[str]) -> None:
    """Dynamic int8 (uint8 activations, int8 weights), per channel — per-tensor scales lose too much (MiniLM's
    mean cosine to float32 fell to 0.94 with them, 0.995 per channel) — except the layer groups that int8 alone
    hurts (:func:`_sensitive_matmuls`, recorded in ``int8.json``), which stay float32."""
    assert parent is not None
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _copy_side_files(parent, out, "model.onnx")
    sensitive = _sensitive_matmuls(parent, parent / "model.onnx", fit)
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


def _openvino_ir(source: ModelSource, parent: Path | None, out: Path, fit: Sequence[str]) -> None:
    """The exported graph converted to OpenVINO's format, weights kept in float32."""
    assert parent is not None
    import openvino

    _copy_side_files(parent, out, "model.onnx")
    converted = openvino.convert_model(str(parent / "model.onnx"))
    openvino.save_model(converted, str(out / "openvino_model.xml"), compress_to_fp16=False)


SMOOTH_QUANT_ALPHAS = (-1.0, 0.8)
"""SmoothQuant settings :func:`_openvino_int8` tries (NNCF's ``smooth_quant_alphas.matmul``; -1 is off), keeping
the one whose vectors stay closest to float32 on held-out fit texts: it helps some models and corpora, not all.
(On a SciFact sample, all-mpnet-base-v2 int8 everywhere: mean cosine 0.9950 at 0.8, 0.9834 at NNCF's default 0.95;
all-MiniLM-L6-v2: 0.9977 at 0.8, 0.9952 off.)"""

ALL_INT8_MIN_COSINE = 0.995
"""When int8 everywhere keeps at least this mean cosine on the held-out fit texts (the gate's own bound), the
layers int8 alone hurts are not searched for: keeping them float costs speed (all-mpnet-base-v2's FFN output layers
in float ran about 1.6× slower here) and, with SmoothQuant, bought no quality on SciFact (0.9914 against 0.9950)."""


def _token_batches(folder: Path, texts: Sequence[str], batch_size: int = 8) -> list[dict[str, NDArray[np.int64]]]:
    """``texts`` as the graph's inputs, in batches padded to their longest text (no longer than the model's limit)."""
    from tokenizers import Tokenizer

    graph = json.loads((folder / GRAPH_INFO).read_text())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=graph["max_tokens"])
    tokenizer.no_padding()
    batches = []
    for start in range(0, len(texts), batch_size):
        encodings = tokenizer.encode_batch(list(texts[start : start + batch_size]))
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
    return batches


def _openvino_vectors(model: Any, batches: list[dict[str, NDArray[np.int64]]]) -> NDArray[np.float32]:
    import openvino

    config = {"INFERENCE_NUM_THREADS": cpu_threads(), "INFERENCE_PRECISION_HINT": "f32"}
    request = openvino.Core().compile_model(model, "CPU", config).create_infer_request()
    return normalise(np.concatenate([np.array(request.infer(b)["sentence_embedding"]) for b in batches]))


def _nncf_int8(parent: Path, batches: list[dict[str, NDArray[np.int64]]], alpha: float, float_nodes: list[str]) -> Any:
    import nncf
    import openvino
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    nncf.set_log_level(logging.ERROR)
    with _quiet(), contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
        return nncf.quantize(
            openvino.Core().read_model(str(parent / "model.onnx")),
            nncf.Dataset(batches),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(batches),
            ignored_scope=nncf.IgnoredScope(names=float_nodes, validate=False),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)
            ),
        )


def _openvino_int8(source: ModelSource, parent: Path | None, out: Path, fit: Sequence[str]) -> None:
    """NNCF post-training int8 (weights and activations, static scales), fitted to ``fit`` (the user's corpus
    sample, or :func:`calibration_texts`). Scales are fitted on three quarters of ``fit``; the remaining quarter
    chooses: int8 everywhere at each :data:`SMOOTH_QUANT_ALPHAS` setting, and — only if none keeps
    :data:`ALL_INT8_MIN_COSINE` — the best setting with the layer groups int8 alone hurts
    (:func:`_sensitive_matmuls`) left float; the closest to float32 is kept. ``int8.json`` records every trial.
    Static scales give a text the same vector whatever its batch-mates."""
    assert parent is not None
    import openvino

    _copy_side_files(parent, out, "model.onnx")
    # Every fourth text is held out to choose between trials; the check texts stay unseen for the gate.
    held_out = list(fit[1::4]) if len(fit) >= 8 else list(fit)
    scale_texts = [t for i, t in enumerate(fit) if i % 4 != 1] if len(fit) >= 8 else list(fit)
    batches = _token_batches(parent, scale_texts)
    checks = _token_batches(parent, held_out)
    reference = _openvino_vectors(openvino.Core().read_model(str(parent / "model.onnx")), checks)
    trials: list[dict[str, Any]] = []
    best: Any = None

    def trial(alpha: float, float_groups: dict[str, float], float_nodes: list[str]) -> None:
        nonlocal best
        quantised = _nncf_int8(parent, batches, alpha, float_nodes)
        cosine = float(np.einsum("ij,ij->i", _openvino_vectors(quantised, checks), reference).mean())
        if not trials or cosine > max(t["held_out_mean_cosine"] for t in trials):
            best = quantised
        trials.append({"smooth_quant_alpha": alpha, "float_groups": float_groups, "held_out_mean_cosine": cosine})

    for alpha in SMOOTH_QUANT_ALPHAS:
        trial(alpha, {}, [])
    leader = max(trials, key=lambda t: t["held_out_mean_cosine"])
    if leader["held_out_mean_cosine"] < ALL_INT8_MIN_COSINE:
        sensitive = _sensitive_matmuls(parent, parent / "model.onnx", fit)
        if sensitive:
            groups = _weight_matmul_groups(parent / "model.onnx")
            trial(leader["smooth_quant_alpha"], sensitive, [node for group in sensitive for node in groups[group]])
    chosen = max(range(len(trials)), key=lambda i: trials[i]["held_out_mean_cosine"])
    record = {
        **trials[chosen],
        "trials": trials,
        "fit_texts": len(scale_texts),
        "held_out_texts": len(held_out),
    }
    (out / "int8.json").write_text(json.dumps(record, indent=2))
    openvino.save_model(best, str(out / "openvino_model.xml"), compress_to_fp16=False)


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
            fitted=True,
        ),
        Artifact("openvino", "openvino_model.xml", "openvino-ir-v1", _openvino_ir, parent="onnx-export"),
        Artifact(
            "openvino-int8",
            "openvino_model.xml",
            "nncf-ptq-int8-mixed-smoothquant-choice-sensitive-float-if-needed-v6",
            _openvino_int8,
            "onnx-export",
            fitted=True,
        ),
    )
}
"""Build steps, each from its ``parent`` (the ONNX export is built from the torch model itself)."""


def artifact_recipe(name: str) -> str:
    """The recipes of a step and all its parents: a change to any of them makes new vectors."""
    artifact = ARTIFACTS[name]
    return artifact.recipe if artifact.parent is None else f"{artifact_recipe(artifact.parent)}+{artifact.recipe}"


def exports_root() -> Path:
    from embedlab.paths import cache_root

    return cache_root() / "exports"


def fit_texts(sample: CalibrationSample | None) -> tuple[str, ...]:
    """What fitted artifacts learn from: the sample's fit texts, or the bundled ones without a corpus."""
    return sample.fit if sample is not None else calibration_texts(64, half="fit")


def artifact_folder(name: str, source: ModelSource, *, sample: CalibrationSample | None = None) -> str:
    """The folder name of artifact ``name``: by recipe (a changed recipe builds anew instead of reusing a stale
    artifact) and, for a fitted one made from a corpus sample, by the sample too."""
    recipe = hashlib.sha256(artifact_recipe(name).encode()).hexdigest()[:8]
    fitted = sample is not None and ARTIFACTS[name].fitted
    return f"{name}-{recipe}" + (f"-{sample.digest}" if fitted and sample is not None else "")


def ensure_artifact(
    name: str, source: ModelSource, *, root: Path | None = None, sample: CalibrationSample | None = None
) -> Path:
    """The folder of artifact ``name`` for this model, built (with its parents) the first time, atomically.
    Fitted steps learn from ``sample``'s fit texts (the user's corpus), or from the bundled texts without one."""
    artifact = ARTIFACTS[name]
    target = (root or exports_root()) / source.source_fingerprint / artifact_folder(name, source, sample=sample)
    if (target / EXPORT_META).exists():
        return target
    parent = ensure_artifact(artifact.parent, source, root=root, sample=sample) if artifact.parent else None
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        out = Path(tmp) / "artifact"
        out.mkdir()
        try:
            artifact.build(source, parent, out, fit_texts(sample))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{source.spec.name}: building the {name} artifact failed: {exc}") from exc
        graph = json.loads((out / GRAPH_INFO).read_text())
        meta = {
            "schema_version": EXPORT_SCHEMA,
            "artifact": name,
            "recipe": artifact_recipe(name),
            "model_file": artifact.model_file,
            "tokenizer_file": "tokenizer.json",
            "inputs": graph["inputs"],
            "pad_id": graph["pad_id"],
            "dim": graph["dim"],
            "max_tokens": graph["max_tokens"],
            "spec": source.spec.to_dict(),
            "source_fingerprint": source.source_fingerprint,
            "fit_texts": (sample.to_dict() if sample is not None else "stdlib-docs") if artifact.fitted else None,
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
    """Builds of the same artifact from the same texts by an older recipe are never used again: delete them (they
    are large). Builds from other corpora's samples stay."""
    import re

    match = re.fullmatch(r"(.+)-([0-9a-f]{8})(-[0-9a-f]{12})?", current.name)
    if match is None:
        return
    artifact, suffix = match.group(1), match.group(3) or ""
    pattern = re.escape(artifact) + r"-[0-9a-f]{8}" + re.escape(suffix)
    for sibling in current.parent.iterdir():
        if sibling != current and re.fullmatch(pattern, sibling.name):
            shutil.rmtree(sibling, ignore_errors=True)


def _st_dim(model: SentenceTransformer) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    assert dim is not None
    return int(dim)


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
