# Two commands: `make simulate` installs everything and runs the fleet simulator;
# `make test` runs lint, types, import contracts and the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install simulate test lint bench bench-operator chart-crds e2e-kind clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

simulate: install
	$(BIN)/valet simulate $(ARGS)

lint: install
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/simulate_wall_time.py

bench-operator: install
	$(BIN)/python benchmarks/operator_heal_latency.py $(ARGS)

# The chart ships a copy of crds/ (tests/chart/test_crds_drift.py fails when they differ).
chart-crds:
	cp crds/*.yaml charts/valet/files/crds/

# Needs Docker, kind, kubectl and helm; see e2e/README.md.
e2e-kind: install
	e2e/kind.sh $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
