# Fresh machine: `make bench` runs the main job, `make test` the tests. Both create .venv first.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# The torch/torchvision pair that installs on the project's machines (a CUDA build that also runs on CPU).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install test bench docs clean

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

docs: install
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) site runs
