"""The backend table: every way embedlab runs a sentence-transformers model, by name, and the default one.

:data:`BACKENDS` maps a name to a :class:`Backend` (runtime, precision, the artifact it runs from, how it opens a
runner, what it needs installed). :func:`get_backend` answers an unknown name with the closest valid ones;
:func:`using_backend` scopes the backend encoders get when none is named (the CLI's ``--backend``).

Example::

    >>> get_backend("onnx-int8").precision
    'int8'
    >>> with using_backend("auto"):
    ...     encoder = load_encoder("minilm-l6")     # resolves to the calibrated choice on first use
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import hashlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from embedlab.errors import ModelError
from embedlab.models.backends.artifacts import ARTIFACTS, artifact_recipe
from embedlab.models.backends.runners import OnnxRuntimeRunner, OpenVinoRunner, Runner, RunnerContext, TorchRunner
from embedlab.models.encoders import ENCODING_VERSION

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Runtime = Literal["torch", "onnxruntime", "openvino"]
Precision = Literal["float32", "bfloat16", "int8"]

AUTO = "auto"


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
        return self.recipe if self.artifact is None else f"{artifact_recipe(self.artifact)}+{self.recipe}"

    @property
    def fitted(self) -> bool:
        """Whether its artifact learns from calibration texts (int8 scales): then a corpus sample changes its
        vectors, and its fingerprint names the sample."""
        return self.artifact is not None and ARTIFACTS[self.artifact].fitted


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


def fingerprint_of(source_fingerprint: str, backend: str, *, sample: str | None = None) -> str:
    """The fingerprint of ``backend``'s vectors of a model whose float32 fingerprint is ``source_fingerprint``;
    ``sample`` is the digest of the corpus sample a fitted (int8) backend learnt from, if not the bundled texts."""
    if backend == "torch":
        return source_fingerprint
    chosen = get_backend(backend)
    settings: tuple[object, ...] = (ENCODING_VERSION, source_fingerprint, backend, chosen.full_recipe)
    if chosen.fitted and sample is not None:
        settings = (*settings, sample)
    return hashlib.sha256(repr(settings).encode()).hexdigest()[:16]


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
