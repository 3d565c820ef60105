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
``openvino-int8``  OpenVINO     int8      NNCF post-training int8 (weights and activations), fitted to texts
=================  ===========  ========  ==================================================================

``auto`` is not a backend but a choice: :func:`calibrate` runs every available backend on the same real texts,
interleaved (so a busy machine slows them alike), keeps those whose vectors stay close to the float32 ones
(mean cosine ≥ 0.995 and every cosine ≥ 0.97 by default; optionally also nDCG@10 on given data), and picks the
fastest. The result is cached as JSON in ``<cache>/calibration/`` per model fingerprint and machine (CPU model,
the flags that matter, threads, runtime versions), so it is measured once per model per machine.

The texts it judges on are the user's own when a command has them: inside :func:`using_corpus` (``compare``,
``select``, ``index``, ``export`` and ``embed`` wrap their work in it) a seeded sample of the corpus gives the check
texts and, disjoint from them, the texts int8 is fitted to (:class:`CalibrationSample`); the calibration is then
cached per model × machine × sample, and a large corpus (:data:`INT8_CORPUS_TEXTS`) brings the int8 backends into
``auto``'s choice. Without a corpus, bundled stdlib-docs texts serve (and ``auto`` leaves int8 out). A proxy corpus
can pass a backend that is poor on the user's domain: all-mpnet-base-v2's int8 kept a mean cosine of 0.9938 to
float32 on the bundled texts but 0.9608 on SciFact.

Non-PyTorch backends run from *artifacts* built once per model and cached under
``<cache>/exports/<model fingerprint>/<artifact>-<recipe hash>[-<sample digest>]/`` (int8 artifacts are keyed by
the texts they were fitted to): an ONNX graph (the whole sentence-transformers
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

The package has one concern per module, each importable alone (stages below it only; nothing from retrieval or
evaluation):

* :mod:`~embedlab.models.backends.runners` — what runs a batch of texts (PyTorch, ONNX Runtime, OpenVINO);
* :mod:`~embedlab.models.backends.texts` — the texts calibration and quantisation use;
* :mod:`~embedlab.models.backends.artifacts` — ONNX export and quantisation, built once and cached;
* :mod:`~embedlab.models.backends.registry` — the backend table, names, the default backend;
* :mod:`~embedlab.models.backends.calibration` — measuring the backends and picking ``auto``'s.

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

from embedlab.models.backends.artifacts import (
    ARTIFACTS,
    GRAPH_INFO,
    ONNX_OPSET,
    SENSITIVE_COSINE,
    SMOOTH_QUANT_ALPHAS,
    Artifact,
    artifact_folder,
    artifact_recipe,
    ensure_artifact,
    exports_root,
    folder_fingerprint,
)
from embedlab.models.backends.calibration import (
    CALIBRATION_SCHEMA,
    INT8_CORPUS_TEXTS,
    BackendMeasurement,
    Calibration,
    NdcgCheck,
    QualityGate,
    auto_backend,
    calibrate,
    calibration_path,
    machine_identity,
    machine_key,
)
from embedlab.models.backends.registry import (
    AUTO,
    BACKEND_CHOICES,
    BACKENDS,
    Backend,
    Precision,
    Runtime,
    available_backends,
    check_backend_name,
    default_backend,
    describe_backends,
    fingerprint_of,
    get_backend,
    quick_backends,
    using_backend,
)
from embedlab.models.backends.runners import (
    EXPORT_META,
    EXPORT_SCHEMA,
    ExportInfo,
    ModelSource,
    OnnxRuntimeRunner,
    OpenVinoRunner,
    Runner,
    RunnerContext,
    TokenizedRunner,
    TorchRunner,
    normalise,
)
from embedlab.models.backends.texts import (
    CHECK_TEXTS,
    MIN_CORPUS_TEXTS,
    CalibrationSample,
    calibration_texts,
    corpus_sample,
    current_sample,
    using_corpus,
    using_sample,
)

__all__ = [
    "ARTIFACTS",
    "AUTO",
    "BACKENDS",
    "BACKEND_CHOICES",
    "CALIBRATION_SCHEMA",
    "CHECK_TEXTS",
    "EXPORT_META",
    "EXPORT_SCHEMA",
    "GRAPH_INFO",
    "INT8_CORPUS_TEXTS",
    "MIN_CORPUS_TEXTS",
    "ONNX_OPSET",
    "SENSITIVE_COSINE",
    "SMOOTH_QUANT_ALPHAS",
    "Artifact",
    "Backend",
    "BackendMeasurement",
    "Calibration",
    "CalibrationSample",
    "ExportInfo",
    "ModelSource",
    "NdcgCheck",
    "OnnxRuntimeRunner",
    "OpenVinoRunner",
    "Precision",
    "QualityGate",
    "Runner",
    "RunnerContext",
    "Runtime",
    "TokenizedRunner",
    "TorchRunner",
    "artifact_folder",
    "artifact_recipe",
    "auto_backend",
    "available_backends",
    "calibrate",
    "calibration_path",
    "calibration_texts",
    "check_backend_name",
    "corpus_sample",
    "current_sample",
    "default_backend",
    "describe_backends",
    "ensure_artifact",
    "exports_root",
    "fingerprint_of",
    "folder_fingerprint",
    "get_backend",
    "machine_identity",
    "machine_key",
    "normalise",
    "quick_backends",
    "using_backend",
    "using_corpus",
    "using_sample",
]
