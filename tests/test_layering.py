"""The stages stay layered: every module imports alone (no import circle hides behind an import order), and the
model layer reaches no stage above it, not even inside a function."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import embedlab

SRC = Path(embedlab.__file__).parent

# Stages above the models: what a module under embedlab.models must never import (they import the models).
ABOVE_MODELS = (
    "embedlab.cli",
    "embedlab.cost",
    "embedlab.embedding",
    "embedlab.evaluate",
    "embedlab.export",
    "embedlab.finetune",
    "embedlab.fusion",
    "embedlab.index",
    "embedlab.recommend",
    "embedlab.report",
    "embedlab.retrieval",
    "embedlab.select",
    "embedlab.serve",
)

STAGE_MODULES = sorted(
    {"embedlab.models.backends"}
    | {
        info.name
        for info in pkgutil.walk_packages([str(SRC)], prefix="embedlab.")
        if info.name.startswith(("embedlab.models.", "embedlab.data.", "embedlab.evaluate."))
        or info.name.count(".") == 1
    }
)


def imported_names(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (relative imports resolved)."""
    module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_model_layer_imports_nothing_above_it() -> None:
    files = sorted((SRC / "models").rglob("*.py"))
    assert any(f.parent.name == "backends" for f in files)  # the backends package is among them
    offending = {
        str(f.relative_to(SRC)): sorted(n for n in imported_names(f) if n.startswith(ABOVE_MODELS)) for f in files
    }
    assert {f: names for f, names in offending.items() if names} == {}


def test_the_check_sees_imports_inside_functions() -> None:
    sample = SRC / "models" / "backends" / "calibration.py"
    assert "embedlab.manifest.build_manifest" in imported_names(sample)  # imported inside calibrate()


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_each_module_imports_alone(module: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC.parent), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
