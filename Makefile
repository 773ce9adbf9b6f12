# `make demo` installs everything and shows valet healing a simulated cluster (no cluster
# needed); `make simulate` runs the fleet simulator; `make test` runs lint, types, import
# contracts and the whole test suite (with the real-API tier whenever KUBEBUILDER_ASSETS
# names envtest binaries: `make envtest`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real Kubernetes control-plane binaries (envtest layout), bundled beside the checkout.
ENVTEST_ARCHIVE ?= ../shared/envtest/kubernetes-v1.36.2-linux-amd64.tar.xz
ENVTEST_DIR := .cache/envtest

.PHONY: install demo simulate test lint bench bench-operator chart-crds e2e-kind envtest clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# A control plane (kube-apiserver from KUBEBUILDER_ASSETS, else the bundled emulator),
# simulated GPU nodes, the operator and a script of faults, live; ARGS="--headless" for logs.
demo: install
	$(BIN)/valet demo $(ARGS)

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

# Unpacks kube-apiserver, etcd, kube-controller-manager and kube-scheduler into
# .cache/envtest/bin; then `export KUBEBUILDER_ASSETS=$PWD/.cache/envtest/bin`.
envtest: $(ENVTEST_DIR)/bin/kube-apiserver

$(ENVTEST_DIR)/bin/kube-apiserver: $(ENVTEST_ARCHIVE)
	mkdir -p $(ENVTEST_DIR)
	tar -xJf $(ENVTEST_ARCHIVE) -C $(ENVTEST_DIR)
	touch $@

# The chart ships a copy of crds/ (tests/chart/test_crds_drift.py fails when they differ).
chart-crds:
	cp crds/*.yaml charts/valet/files/crds/

# Needs Docker, kind, kubectl and helm; see e2e/README.md.
e2e-kind: install
	e2e/kind.sh $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis .cache
