# The README's two commands: `make run` and `make test`; `make lint` runs before the tests in CI.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test lint bench soak diagram clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

# the daemon makes var/ (database, "remote" root) itself; inbox/ is in the repository
run: $(STAMP)
	$(BIN)/caseflow run -c config/local.yaml

test: $(STAMP)
	bash .ci/system-deps
	$(BIN)/python -m pytest

# ruff (lint, and the format check) and mypy on engine/ (their settings: pyproject.toml);
# shellcheck on the remote scripts as files (tests/test_remote_scripts.py also checks them as
# they are sent)
SCRIPTS = engine/caseflow/transports/scripts/*.sh engine/caseflow/backends/scripts/*.sh
lint: $(STAMP)
	bash .ci/system-deps
	$(BIN)/ruff check engine
	$(BIN)/ruff format --check engine
	$(BIN)/mypy
	shellcheck --shell=sh --severity=style $(SCRIPTS)

# every benchmark, a table of ratios to the alternatives, bench/last_run.json (about 20
# minutes; `make bench BENCH=--quick` for a small smoke run)
bench: $(STAMP)
	bash .ci/system-deps
	$(BIN)/python bench/run.py --json bench/last_run.json $(BENCH)

# the randomized model-based test of the promises, long (docs/guarantees.md): the local profile
# 400 examples of 30 steps (12,000 steps; about 45 minutes here), the remote profile (real sshd,
# pueue 3.x/4.x, openssh) 25 examples of 30 steps on each of its 4 hosts (3,000 steps);
# SOAK_EXAMPLES / SOAK_REMOTE_EXAMPLES / SOAK_STEPS / SOAK_SEED steer it
SOAK_EXAMPLES        ?= 400
SOAK_REMOTE_EXAMPLES ?= 25
SOAK_STEPS           ?= 30
soak: $(STAMP)
	CASEFLOW_MODEL_EXAMPLES=$(SOAK_EXAMPLES) CASEFLOW_MODEL_STEPS=$(SOAK_STEPS) \
	  CASEFLOW_MODEL_REMOTE_EXAMPLES=$(SOAK_REMOTE_EXAMPLES) CASEFLOW_MODEL_REMOTE_STEPS=$(SOAK_STEPS) \
	  $(if $(SOAK_SEED),CASEFLOW_MODEL_SEED=$(SOAK_SEED)) \
	  $(BIN)/python -m pytest tests/test_model_based.py -p no:cacheprovider -s

diagram: $(STAMP)
	$(BIN)/caseflow diagram --format mermaid -o specs/case_machine.mmd

clean:
	rm -rf $(VENV) var results
	find inbox -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
