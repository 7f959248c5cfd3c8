# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
BIN := $(VENV)/bin

.PHONY: demo test bench clean gpu gpu-wheels

# The base install: no torch. Planning and the doctor must work with only this.
$(VENV)/.base-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $@

# The model-free parse tier (docvortex, pypdfium2, reportlab): still no torch.
$(VENV)/.flash-installed: $(VENV)/.base-installed
	$(PIP) -e '.[flash]'
	touch $@

# Dev install: CPU torch from the local wheel FIRST, so nothing later pulls a CUDA build;
# never torchvision (it fails to import beside CPU torch and breaks transformers' Qwen2-VL).
# The dev extra brings mineru==4.0.12 (its clients, for the /v1 tests): its base install has no torch, and
# the check below fails the install if anything ever pulls torchvision in.
$(VENV)/.dev-installed: $(VENV)/.base-installed
	$(PIP) torch==2.13.0
	$(PIP) -e '.[engine,flash,api,ui,dev]'
	@if $(PY) -c "import torchvision" 2>/dev/null; then echo "torchvision is installed in $(VENV): remove it (pip uninstall torchvision)"; exit 1; fi
	touch $@

# Offline: the sample PDF is generated here and, with no model downloaded, `parse` picks flash.
demo: $(VENV)/.flash-installed
	$(BIN)/mineru-fit doctor
	$(BIN)/mineru-fit plan
	$(BIN)/mineru-fit plan --vram 8 --engine sglang --mem-fraction-static 0.3 --load-in-4bit --max-model-len 2048
	$(BIN)/mineru-fit sample-pdf out/demo/sample.pdf
	$(BIN)/mineru-fit parse out/demo/sample.pdf -o out/demo/output
	@echo "Markdown: out/demo/output/sample/flash/sample.md"

test: $(VENV)/.dev-installed
	$(BIN)/lint-imports
	$(PY) -m pytest -q

bench: $(VENV)/.dev-installed
	$(PY) benchmarks/plan_speed.py
	@if [ -d ../shared/eval ]; then $(PY) benchmarks/flash_overhead.py; else echo "flash_overhead: no ../shared/eval PDFs (pass a folder: $(PY) benchmarks/flash_overhead.py DIR)"; fi

# Every GPU figure still owed, unattended on one H100/H200 in under 8 minutes (docs/gpu-run.md).
# There it runs under the machine's own python3 (torch with CUDA; no network), with the wheels
# `make gpu-wheels` put in .whl/; copies of what it writes go to GPU_OUT (the device tool's $OUT).
# GPU_DRY=1: every step at tiny size on the CPU, into GPU_OUT only (a test runs it).
# GPU_ARGS: more flags for benchmarks/gpu_run.py (e.g. --skip memory_table for a second try).
GPU_OUT ?= $(or $(OUT),$(if $(GPU_DRY),out/gpu-dry,out/gpu))
GPU_PYTHON ?= $(if $(GPU_DRY),$(PY),python3)
GPU_DEPS ?= $(if $(GPU_DRY),$(VENV)/.dev-installed)
gpu: $(GPU_DEPS)
	$(GPU_PYTHON) benchmarks/gpu_run.py --out-dir $(GPU_OUT) $(if $(GPU_DRY),--dry,--wheels .whl) $(GPU_ARGS)

# The wheels the GPU machine lacks (pydantic, FastAPI, uvicorn, bitsandbytes' CUDA 13 build), into .whl/.
gpu-wheels: $(VENV)/.dev-installed
	$(PY) scripts/gpu_wheelhouse.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
