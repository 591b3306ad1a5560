# The two entry points of the README: `make run` (pipeline on the embedded data) and
# `make test` (the suite). Both set up .venv on a fresh machine first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.dev-installed-stamp

# dvc's stage commands call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PYTHONHASHSEED := 0
# setup installs with --no-compile and Python caches the bytecode of what is imported: where the
# environment sets PYTHONDONTWRITEBYTECODE every stage would recompile torch, mlflow, ... (~10 s each).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup setup-dev run lint test test-all bench browser postgres clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	# constraints.txt pins the whole tree; torch==2.13.0 resolves to the local CPU wheel.
	# --no-compile: byte-compiling every installed module (torch, mlflow, ...) took ~110 of this
	# step's ~165 s on 2 cores; Python compiles the modules actually imported on first use (~20 s).
	$(BIN)/python -m pip install -q --no-compile -e '.[notebook]' -c constraints.txt
	# resemblyzer (feature set dvector; its pretrained weights ship in the wheel) without its
	# declared deps: `webrtcvad` is a C source build (pyproject installs webrtcvad-wheels, the
	# same module prebuilt) and the `typing` backport breaks Python 3.11; librosa, numpy,
	# scipy and torch come pinned from the line above.
	$(BIN)/python -m pip install -q --no-compile --no-deps -c constraints.txt resemblyzer==0.1.4
	# Compile librosa's numba kernels once, serially: parallel first compiles corrupt the cache.
	$(BIN)/python -c "from voiceid.features.jit import warm_jit_caches; warm_jit_caches()"
	touch $(STAMP)

setup: $(STAMP)
	@[ -d .dvc ] || $(BIN)/dvc init -q
	@$(BIN)/dvc config core.analytics false

# pytest, selenium, ruff, mypy: what only the suite and lint need, on top of setup.
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --no-compile -e '.[notebook,dev]' -c constraints.txt
	touch $(DEV_STAMP)

setup-dev: setup $(DEV_STAMP)

# Ends with the selection at a glance (voiceid/analysis/summary.py; `voiceid report` prints it again).
run: setup
	$(BIN)/dvc repro
	@echo
	@$(BIN)/voiceid report

# Debian's chromium + chromedriver for the MLflow UI browser test; skipped where apt
# cannot run (not root, no registry), in which case that one test skips with a reason.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "make browser: could not install chromium; the browser test will skip"; \
	  else echo "make browser: not root or no apt-get; the browser test will skip"; fi; \
	fi

# Debian's PostgreSQL server for the team-mode test (tests/test_team_postgres.py starts a throw-away
# cluster with it, as the `postgres` user, on 127.0.0.1 only); skipped where apt cannot run, in
# which case that test skips with a reason.
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "make postgres: could not install postgresql; the team-mode test will skip"; \
	  else echo "make postgres: not root or no apt-get; the team-mode test will skip"; fi; \
	fi

# Lint and type-check (config in pyproject.toml); `make test` runs it first, so CI fails on it.
lint: setup-dev
	$(BIN)/ruff check voiceid stages && $(BIN)/ruff format --check voiceid stages && $(BIN)/mypy

test: setup-dev browser postgres lint
	$(BIN)/python -m pytest -m "not slow" -q

test-all: setup-dev browser postgres
	$(BIN)/python -m pytest -q

bench: setup
	for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-runs:
	rm -rf mlflow.db mlruns mlartifacts optuna.db
