"""The Spark Operator stand-in itself: what the operator's e2e tests rely on it to do.

The kubelet's environment rules, a run deleted while in flight (cancelled, never executed), an
application never executed twice, and a driver that cannot start because a Secret is missing.
SparkApplications are created here by hand, without the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from standin.harness import SPARK_GROUP_VERSION, RunRecord, Scenario
from standin.kubelet import EnvResolutionError, resolve_env


class _Objects:
    def __init__(self, config_maps: Mapping[str, Mapping[str, str]], secrets: Mapping[str, Mapping[str, str]]) -> None:
        self.config_maps, self.secrets = config_maps, secrets

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.config_maps.get(name)

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get(name)


def test_environment_is_resolved_like_the_kubelet() -> None:
    objects = _Objects(
        {"catalog": {"ICEBERG_OFFLOAD_CATALOG_NAME": "demo", "HOST": "from-config-map", "bad key": "skipped"}},
        {"ch": {"password": "s3cret"}},
    )
    container = {
        "envFrom": [{"configMapRef": {"name": "catalog"}}, {"configMapRef": {"name": "catalog"}, "prefix": "X_"}],
        "env": [
            {"name": "HOST", "value": "from-env"},  # env overrides envFrom
            {"name": "URL", "value": "http://$(HOST):8123/$(UNDEFINED)/$$(HOST)"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "ch", "key": "password"}}},
            {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
    }
    env = resolve_env(container, namespace="ns1", pod_name="p", reader=objects)
    assert env == {
        "ICEBERG_OFFLOAD_CATALOG_NAME": "demo",
        "HOST": "from-env",
        "X_ICEBERG_OFFLOAD_CATALOG_NAME": "demo",
        "X_HOST": "from-config-map",
        "URL": "http://from-env:8123/$(UNDEFINED)/$(HOST)",
        "PASSWORD": "s3cret",
        "NS": "ns1",
    }
    missing_key = {"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "ch", "key": "other"}}}]}
    with pytest.raises(EnvResolutionError, match="couldn't find key other in Secret ns1/ch"):
        resolve_env(missing_key, namespace="ns1", pod_name="p", reader=objects)
    missing_map = {"envFrom": [{"configMapRef": {"name": "absent"}}]}
    with pytest.raises(EnvResolutionError, match='configmap "absent" not found'):
        resolve_env(missing_map, namespace="ns1", pod_name="p", reader=objects)


def _app(name: str, *, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A SparkApplication as the operator makes them (labels included), with a job that fails fast."""
    pod = {"cores": 1, "memory": "512m", "env": env or [], "envFrom": [{"configMapRef": {"name": "iceberg-catalog"}}]}
    return {
        "apiVersion": SPARK_GROUP_VERSION,
        "kind": "SparkApplication",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "iceberg-offload", "offload.k2.io/table": "by-hand"},
        },
        "spec": {
            "type": "Python",
            "mode": "cluster",
            "image": "unused",
            "mainApplicationFile": "local:///opt/iceberg-offload/spark_jobs/offload.py",
            "sparkVersion": "3.5.9",
            "arguments": ["--table", "by_hand"],  # no --target: the job exits 2 at once
            "restartPolicy": {"type": "Never"},
            "driver": pod,
            "executor": {**pod, "instances": 1},
        },
    }


def _state(s: Scenario, name: str) -> dict[str, Any]:
    got = s.cluster.request("GET", f"/apis/{SPARK_GROUP_VERSION}/namespaces/{s.namespace}/sparkapplications/{name}")
    return dict((got.body or {}).get("status") or {}) if got.ok else {}


def _records(s: Scenario, name: str) -> list[RunRecord]:
    return [r for r in s.standin.runs(s.namespace) if r.name == name]


def test_deleted_run_is_cancelled_and_no_application_runs_twice(scenario: Callable[..., Scenario]) -> None:
    s = scenario("standin")
    s.apply_connections()  # the catalog ConfigMap the applications' envFrom names
    path = f"/apis/{SPARK_GROUP_VERSION}/namespaces/{s.namespace}/sparkapplications"
    s.standin.hold(s.namespace)
    assert s.cluster.request("POST", path, _app("held")).status == 201
    s.wait(
        lambda: (_state(s, "held").get("applicationState") or {}).get("state") == "RUNNING",
        timeout=15,
        what="the held application RUNNING",
    )
    status = _state(s, "held")
    assert status["submissionAttempts"] == 1 and status["executionAttempts"] == 1, status
    assert "podName" not in status["driverInfo"] and status["lastSubmissionAttemptTime"], status
    first_uid = _records(s, "held")[0].uid

    # Deleted while running: cancelled, never executed.
    assert s.cluster.request("DELETE", f"{path}/held").ok
    s.wait(lambda: _records(s, "held")[0].state == "CANCELLED", timeout=10, what="the deleted run cancelled")
    assert _records(s, "held")[0].started_at is None, "a deleted run was executed"

    # A new object of the same name is a new application; it runs once, to its end.
    assert s.cluster.request("POST", path, _app("held")).status == 201
    s.wait(lambda: len(_records(s, "held")) == 2, timeout=10, what="the new application seen")
    s.standin.release(s.namespace)
    s.wait(
        lambda: (_state(s, "held").get("applicationState") or {}).get("state") == "FAILED",
        timeout=30,
        what="the re-created application to run and fail (its job has no --target)",
    )
    status = _state(s, "held")
    assert "exited with code 2" in status["applicationState"]["errorMessage"], status
    assert status.get("terminationTime"), status
    cancelled, executed = _records(s, "held")
    assert (cancelled.uid, cancelled.state) == (first_uid, "CANCELLED")
    assert executed.state == "FAILED" and executed.exit_code == 2, executed

    # Touching the finished application does not run it again.
    patched = s.cluster.request(
        "PATCH",
        f"{path}/held",
        {"metadata": {"labels": {"touched": "yes"}}},
        content_type="application/merge-patch+json",
    )
    assert patched.ok, patched.text
    s.holds(lambda: len(_records(s, "held")) == 2, seconds=2, what="the application not executed again")


def test_missing_secret_fails_the_driver_like_a_kubelet(scenario: Callable[..., Scenario]) -> None:
    s = scenario("standin-secret")
    s.apply_connections()
    path = f"/apis/{SPARK_GROUP_VERSION}/namespaces/{s.namespace}/sparkapplications"
    env = [{"name": "ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "p"}}}]
    assert s.cluster.request("POST", path, _app("no-secret", env=env)).status == 201
    s.wait(
        lambda: (_state(s, "no-secret").get("applicationState") or {}).get("state") == "FAILED",
        timeout=30,
        what="the application with a missing Secret to fail",
    )
    message = _state(s, "no-secret")["applicationState"]["errorMessage"]
    assert "CreateContainerConfigError" in message and 'secret "gone" not found' in message, message
