# Two commands on a fresh machine: `make demo` (the offline end-to-end demo) and `make test`.
# Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel of this pin is what a machine without a GPU should get; an unpinned `torch`
# pulls several GB of CUDA packages. The library itself does not pin torch (Colab brings its own).
TORCH_PIN ?= torch==2.13.0
EXTRAS ?= dev,book

.PHONY: demo test test-fast book bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/robustft demo --out results/demo

# Every test: unit tests, and every notebook executed end to end and compared by nbval.
test: $(VENV)/.installed
	$(PY) -m pytest tests notebooks --nbval --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

test-fast: $(VENV)/.installed
	$(PY) -m pytest tests -x -q -p no:cacheprovider

book: $(VENV)/.installed
	$(VENV)/bin/jupyter-book build book/

bench: $(VENV)/.installed
	$(PY) -m robustft.kernels.benchmark

clean-venv:
	rm -rf $(VENV)
