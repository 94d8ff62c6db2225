# Set-up and entry points. `make venv` builds .venv in the order that works (see ../shared/env/install.md):
# pinned torch/torchvision first, then cython, then basicsr without build isolation (its sdist imports torch at
# build time; with isolation pip would resolve an unpinned torch), then this project in editable mode.
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PY) -m venv $(VENV)
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q cython numpy
	$(PIP) install -q --no-build-isolation basicsr==1.4.2
	$(PIP) install -q --no-build-isolation -e '.[test]' $(TORCH_PINS)
	touch $@

demo: venv
	scripts/run_demo.sh $(VENV)/bin/python

test: venv
	$(VENV)/bin/python -m pytest -q tests
