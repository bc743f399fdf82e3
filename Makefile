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
	$(PY) -c "from mmrec.cli.lightning import warm_help; warm_help()"  # `mmrec fit --help` etc. answer at once
	@touch $(STAMP)

venv: $(STAMP)

# Train and evaluate VIP5 (full-catalogue ranking head on the bundled MiniLM) on the shipped demo catalogue
# (assets/demo); ends with its test metrics beside MostPop's on the same split, as one JSON line.
# DEMO_RUN is the run folder `mmrec fit` writes: the logger's save_dir/name in configs/vip5_demo.yaml
# (beside_mostpop.py takes its latest version_*, the one just trained; tests/test_readme_commands.py checks it).
DEMO_RUN ?= runs/vip5_demo
demo: $(STAMP)
	$(MMREC) embed --config configs/embed/demo.yaml
	$(MMREC) fit --config configs/vip5_demo.yaml
	$(PY) bench/beside_mostpop.py --run $(DEMO_RUN)

# Only the last step of `make demo`: the trained demo model beside MostPop (one JSON line at the end).
demo-beside: $(STAMP)
	$(PY) bench/beside_mostpop.py --run $(DEMO_RUN)

# Lint, type-check (mypy on pyproject's [tool.mypy] files: ~1 min with an empty .mypy_cache on 2 cores,
# ~1-5 s once cached) and the whole test suite (real-data tests skip when ../shared/data is absent).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# mypy on pyproject's [tool.mypy] `files`: the whole library, model zoo and adapters included.
typecheck: $(STAMP)
	$(PY) -m mypy

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean-demo:
	rm -rf $(DEMO_RUN) cache/demo
