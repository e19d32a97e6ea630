"""The runbook with the REAL Spark Operator: only on kind (``E2E_CLUSTER=kind``).

Here no pods run, so these tests skip (the stand-in versions are in ``test_operator_runbook.py``).
On kind they need what a real run needs, given by environment variables (the test fails, naming
the missing ones, rather than pass without running anything):

* ``E2E_KIND_SPARK_IMAGE``: the Spark image with the offload job (``spark_jobs/offload.py``);
* ``E2E_KIND_CLICKHOUSE_HOST`` / ``E2E_KIND_CLICKHOUSE_PORT`` / ``E2E_KIND_CLICKHOUSE_PASSWORD``:
  a ClickHouse server with the runbook's DDL (user ``offload``), reachable from the pods AND from
  this machine (the operator runs here and mirrors into ``offload_watermarks``);
* ``E2E_KIND_CATALOG_URI`` / ``E2E_KIND_CATALOG_WAREHOUSE`` (and ``E2E_KIND_CATALOG_PASSWORD``):
  the Iceberg catalog with the ``cold`` tables, reachable from both too;
* the Spark Operator installed by its Helm chart, watching the test namespace, and a
  ``iceberg-offload-spark`` ServiceAccount allowed to run Spark drivers there.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster
from standin.harness import (
    EVERY_MINUTE,
    OperatorProcess,
    condition,
    load_yaml_documents,
    to_yaml,
    wait_for,
)

REQUIRED = (
    "E2E_KIND_SPARK_IMAGE",
    "E2E_KIND_CLICKHOUSE_HOST",
    "E2E_KIND_CLICKHOUSE_PORT",
    "E2E_KIND_CLICKHOUSE_PASSWORD",
    "E2E_KIND_CATALOG_URI",
    "E2E_KIND_CATALOG_WAREHOUSE",
)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def kind_settings() -> dict[str, str]:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(f"E2E_CLUSTER=kind needs {', '.join(missing)} (see this module's docstring)", pytrace=False)
    return {name: os.environ[name] for name in REQUIRED}


@pytest.fixture
def kind_namespace(control_plane: Cluster, offload_crd: str) -> Iterator[str]:
    name = f"e2e-kind-runbook-{secrets.token_hex(3)}"
    control_plane.create_namespace(name, labels={"iceberg-offload.e2e/test": "true"})
    try:
        yield name
    finally:
        control_plane.delete_namespace(name)


@pytest.mark.kind_only
def test_runbook_two_cycles_with_the_real_spark_operator(
    control_plane: Cluster, kind_namespace: str, kind_settings: dict[str, str], tmp_path: Path
) -> None:
    connections = load_yaml_documents(EXAMPLES / "00-connections.yaml")
    for doc in connections:
        if doc["kind"] == "ConfigMap":
            doc["data"]["ICEBERG_OFFLOAD_CATALOG_URI"] = kind_settings["E2E_KIND_CATALOG_URI"]
            doc["data"]["ICEBERG_OFFLOAD_CATALOG_WAREHOUSE"] = kind_settings["E2E_KIND_CATALOG_WAREHOUSE"]
        elif doc["metadata"]["name"] == "clickhouse-offload":
            doc["stringData"]["password"] = kind_settings["E2E_KIND_CLICKHOUSE_PASSWORD"]
        else:
            doc["stringData"]["password"] = os.environ.get("E2E_KIND_CATALOG_PASSWORD", "unused")
    tables = [d for p in sorted(EXAMPLES.glob("[1-9]*.yaml")) for d in load_yaml_documents(p)]
    for doc in tables:
        spec = doc["spec"]
        spec["source"]["connection"]["host"] = kind_settings["E2E_KIND_CLICKHOUSE_HOST"]
        spec["source"]["connection"]["port"] = int(kind_settings["E2E_KIND_CLICKHOUSE_PORT"])
        spec["schedule"], spec["safetyBuffer"] = EVERY_MINUTE, "10s"
        spec.setdefault("spark", {})["image"] = kind_settings["E2E_KIND_SPARK_IMAGE"]
    applied = control_plane.kubectl("apply", "-n", kind_namespace, "-f", "-", input=to_yaml([*connections, *tables]))
    assert applied.returncode == 0, applied.stderr
    operator = OperatorProcess(kind_namespace, control_plane.kubeconfig, tmp_path / "operator.log").start()
    try:

        def two_cycles() -> bool:
            operator.check_alive()
            for doc in tables:
                name = doc["metadata"]["name"]
                got = control_plane.request(
                    "GET", f"/apis/offload.k2.io/v1alpha1/namespaces/{kind_namespace}/offloadtables/{name}"
                ).body
                runs = control_plane.request(
                    "GET",
                    f"/apis/sparkoperator.k8s.io/v1beta2/namespaces/{kind_namespace}/sparkapplications"
                    f"?labelSelector=offload.k2.io%2Ftable%3D{name}",
                ).body["items"]
                states = [((r.get("status") or {}).get("applicationState") or {}).get("state") for r in runs]
                status = got.get("status") or {}
                if states.count("COMPLETED") < 2 or status.get("consecutiveFailures") != 0:
                    return False
                if condition(got, "Ready").get("status") != "True":
                    return False
            return True

        wait_for(two_cycles, timeout=900, what="two completed cycles with the real Spark Operator", interval=5)
    finally:
        operator.stop()
