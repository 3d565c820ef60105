"""Export a sentence-transformers model for a faster backend, gated on retrieval quality.

:func:`export_model` measures nDCG@10 on the given evaluation data twice — with the model as it is (PyTorch,
float32) and on the target backend (see :mod:`embedlab.models.backends`) — and writes the exported model only if
the loss is at most ``max_ndcg_drop`` points (×100; default 0.5). Otherwise it raises :class:`ExportRefused`,
whose message carries the measured figures and whose ``result`` carries all of them. Vectors go through the
embedding cache, so a refused export re-run with another backend encodes only what is new.

What is written to ``out`` (created; it must be empty or absent):

* ONNX Runtime / OpenVINO backends: the graph (``model.onnx`` or ``openvino_model.xml``/``.bin``), the tokenizer,
  ``graph.json``, and ``embedlab-export.json`` (backend, source model, the gate's figures, manifest);
* PyTorch backends (``torch``, ``torch-bf16``): the sentence-transformers folder plus ``embedlab-export.json``.

:func:`embedlab.models.loading.load_encoder` loads the folder back, on the backend it was exported for.

Example::

    >>> from embedlab.data.loaders import load_beir
    >>> data = load_beir("../shared/data/scifact", split="test")
    >>> result = export_model("minilm-l6", "onnx-int8", Path("models/minilm-int8"), data)
    >>> print(result)
    model      backend    ndcg@10 float32  ndcg@10 exported  drop (points)  allowed  verdict
    ---------  ---------  ---------------  ----------------  -------------  -------  --------
    minilm-l6  onnx-int8            64.51             64.88          -0.37     0.50  exported
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedlab.data.dataset import RetrievalDataset
from embedlab.embedding import EmbeddingCache
from embedlab.errors import EmbedlabError, ModelError
from embedlab.files import format_table, write_json_atomic
from embedlab.finetune.provenance import PROVENANCE_FILE
from embedlab.manifest import build_manifest
from embedlab.models.backends import (
    AUTO,
    EXPORT_META,
    EXPORT_SCHEMA,
    calibrate,
    get_backend,
)
from embedlab.models.encoders import SentenceTransformerEncoder
from embedlab.models.loading import load_encoder
from embedlab.retrieval import retrieval_ndcg

DEFAULT_MAX_NDCG_DROP = 0.5


@dataclass
class ExportResult:
    """The gate's figures (nDCG@10 as 0–1; the drop and its limit in points, ×100) and where the model went."""

    model: str
    backend: str
    baseline_ndcg: float
    exported_ndcg: float
    max_ndcg_drop: float
    dataset: dict[str, Any]
    out: Path | None = None
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        """nDCG@10 points lost (negative when the exported model scores higher)."""
        return 100 * (self.baseline_ndcg - self.exported_ndcg)

    @property
    def accepted(self) -> bool:
        return self.drop <= self.max_ndcg_drop

    def __str__(self) -> str:
        return format_table(
            ["model", "backend", "ndcg@10 float32", "ndcg@10 exported", "drop (points)", "allowed", "verdict"],
            [
                [
                    self.model,
                    self.backend,
                    f"{100 * self.baseline_ndcg:.2f}",
                    f"{100 * self.exported_ndcg:.2f}",
                    f"{self.drop:.2f}",
                    f"{self.max_ndcg_drop:.2f}",
                    "exported" if self.accepted and self.out else ("passed" if self.accepted else "refused"),
                ]
            ],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.manifest.get("schema_version"),
            "kind": "export",
            "model": self.model,
            "backend": self.backend,
            "gate": {
                "metric": "ndcg@10",
                "baseline": self.baseline_ndcg,
                "exported": self.exported_ndcg,
                "drop_points": self.drop,
                "max_drop_points": self.max_ndcg_drop,
                "accepted": self.accepted,
            },
            "dataset": self.dataset,
            "out": str(self.out) if self.out else None,
            "seconds": self.seconds,
            "manifest": self.manifest,
        }


class ExportRefused(EmbedlabError):
    """The exported model lost more nDCG@10 than allowed; ``result`` holds the measured figures."""

    def __init__(self, result: ExportResult):
        self.result = result
        super().__init__(
            f"export refused: {result.model} on {result.backend} scores nDCG@10 {100 * result.exported_ndcg:.2f} "
            f"against {100 * result.baseline_ndcg:.2f} in float32 on {result.dataset.get('name')}, a drop of "
            f"{result.drop:.2f} points (allowed: {result.max_ndcg_drop:.2f}) (fix: try a higher-precision backend "
            "such as openvino-bf16, torch-bf16 or onnx, or allow a larger drop with --max-ndcg-drop)"
        )


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EmbedlabError(f"{out}: already exists and is not an empty folder (fix: choose a new --out)")


def export_model(
    model: str | Path,
    backend: str,
    out: Path,
    eval_data: RetrievalDataset,
    max_ndcg_drop: float = DEFAULT_MAX_NDCG_DROP,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
) -> ExportResult:
    """Export ``model`` for ``backend`` into ``out`` if nDCG@10 on ``eval_data`` drops by ≤ ``max_ndcg_drop`` points.

    ``backend`` may be ``auto`` (the calibrated choice). Raises :class:`ExportRefused` (nothing written) when the
    gate fails, :class:`~embedlab.errors.ModelError` when the model is not a sentence-transformers model.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_out(out)
    if not eval_data.queries:
        raise EmbedlabError(f"{eval_data.name}: no queries with judgements to gate the export on")
    reference = load_encoder(model, backend="torch")
    if not isinstance(reference, SentenceTransformerEncoder):
        raise ModelError(
            f"'{reference.spec.name}' is a {reference.spec.kind} model: only sentence-transformers models are "
            "exported (fix: export its source model, e.g. minilm-l6)"
        )
    calibration = calibrate(reference) if backend == AUTO else None
    chosen = calibration.chosen if calibration is not None else get_backend(backend).name
    target = reference.with_backend(chosen)
    baseline = retrieval_ndcg(reference, eval_data, batch_size=batch_size, cache=cache, show_progress=show_progress)
    exported = retrieval_ndcg(target, eval_data, batch_size=batch_size, cache=cache, show_progress=show_progress)
    result = ExportResult(
        model=reference.spec.name,
        backend=chosen,
        baseline_ndcg=baseline,
        exported_ndcg=exported,
        max_ndcg_drop=max_ndcg_drop,
        dataset=eval_data.describe(),
    )
    fitted_on = target.calibration_sample if get_backend(chosen).fitted else None
    result.manifest = build_manifest(
        command="export",
        models=[str(model)],
        backend=chosen,
        data={"content_hash": eval_data.content_hash, "source": eval_data.source},
        auto_gate_texts=calibration.gate_texts if calibration is not None else None,
        int8_fit_texts=fitted_on.to_dict() if fitted_on is not None else None,
        wall_seconds=time.perf_counter() - started,
    )
    if not result.accepted:
        raise ExportRefused(result)
    result.out = out
    _write(target, result, out)
    result.seconds = time.perf_counter() - started
    return result


def _write(target: SentenceTransformerEncoder, result: ExportResult, out: Path) -> None:
    """Copy the backend's artifact (or save the PyTorch model) into ``out``, atomically: all of it or nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        staged = Path(tmp) / "model"
        if get_backend(result.backend).runtime == "torch":
            target.model.save(str(staged))
        else:
            artifact = target.artifact
            assert artifact is not None
            shutil.copytree(artifact, staged)
        record = Path(target.source) / PROVENANCE_FILE
        if record.is_file():
            # A fine-tuned model keeps the record of what it trained on: compare and select still mark it.
            shutil.copy2(record, staged / PROVENANCE_FILE)
        write_json_atomic(staged / EXPORT_META, _description(target, result))
        if out.exists():
            out.rmdir()  # checked empty above
        staged.rename(out)


def _description(target: SentenceTransformerEncoder, result: ExportResult) -> dict[str, Any]:
    """``embedlab-export.json``: the artifact's own description, plus backend, source and the gate's figures."""
    from embedlab.models.backends import ExportInfo

    base: dict[str, Any]
    artifact = target.artifact
    if artifact is not None:
        base = dict(ExportInfo.read(artifact).data)
    else:
        base = {
            "schema_version": EXPORT_SCHEMA,
            "dim": target.dim,
            "max_tokens": target.max_tokens,
            "inputs": [],
            "model_file": "",
            "spec": target.spec.to_dict(),
        }
    return {
        **base,
        "backend": result.backend,
        "backend_recipe": get_backend(result.backend).full_recipe,
        "source": {"model": result.model, "path": target.source, "fingerprint": target.source_fingerprint},
        "fingerprint": target.fingerprint,
        "gate": result.to_dict()["gate"],
        "dataset": result.dataset,
        "manifest": result.manifest,
    }
