# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
BIN := $(VENV)/bin

.PHONY: demo test bench clean

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

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
