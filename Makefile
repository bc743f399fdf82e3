# mmrec — the two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv (pinned by requirements.lock) when missing, then runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MMREC := $(VENV)/bin/mmrec
STAMP := $(VENV)/.mmrec-installed
PYTEST_ARGS ?=

.PHONY: demo demo-beside test lint typecheck format bench clean-demo

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c requirements.lock -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

# Train and evaluate VIP5 (full-catalogue ranking head on the bundled MiniLM) on the shipped demo catalogue
# (assets/demo); prints the test metrics at the end.
demo: $(STAMP)
	$(MMREC) embed --config configs/embed/demo.yaml
	$(MMREC) fit --config configs/vip5_demo.yaml

# The trained demo model's test metrics beside MostPop's on the same split and protocol, then one JSON line
# (`make demo` is to end with it; DEMO_RUN is the run folder `mmrec fit` wrote).
DEMO_RUN ?= runs/vip5_demo
demo-beside: $(STAMP)
	$(PY) bench/beside_mostpop.py --run $(DEMO_RUN)

# The whole test suite (real-data tests skip when ../shared/data is absent).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# mypy on the packages listed in pyproject's [tool.mypy] `files` (the base layer and the model contract).
typecheck: $(STAMP)
	$(PY) -m mypy

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean-demo:
	rm -rf runs/demo cache/demo
