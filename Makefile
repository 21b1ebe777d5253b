# Fresh machine: `make bench` runs the main job, `make test` the tests. Both create .venv first.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# The torch/torchvision pair that installs on the project's machines (a CUDA build that also runs on CPU).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install test bench docs gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q $(TORCH) -e ".[test,docs]"
	touch $@

test: install
	$(PYTHON) -m pytest

bench: install
	$(VENV)/bin/gnbench bench yaml_configs/bench/digits.yaml

# Build the site, then open every page in headless Chromium: no console error, broken image,
# unrendered formula, sideways page overflow, lost text (an HTML tag swallowed from the Markdown) or page
# taller than its bound (SCREENSHOTS=DIR keeps a PNG per page).
docs: install
	$(VENV)/bin/mkdocs build --strict
	$(PYTHON) docs/check_site.py $(if $(SCREENSHOTS),--screenshots $(SCREENSHOTS))

# The prepared GPU check (issue 5): the perf matrix into docs/performance.md (under 8 min on one H100),
# then the CUDA-only tests. GPU_PYTHON is a Python with torch and this package installed.
GPU_PYTHON ?= $(PYTHON)
gpu-check:
	$(GPU_PYTHON) -m gn_plugin.experiments.perf --device cuda --write-docs docs/performance.md --json docs/results/perf-cuda.json
	$(GPU_PYTHON) -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py

clean:
	rm -rf $(VENV) site runs
