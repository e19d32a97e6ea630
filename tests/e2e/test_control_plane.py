"""The e2e harness itself, proven against the real API server (local kube-apiserver or kind).

These tests pin what later e2e tests rely on: the SparkApplication CRD subset is accepted and
enforced like upstream's (structural schema, status subresource, driverInfo required), RBAC
applies to ServiceAccount identities, and kopf 1.45 runs against this API server.
"""

from __future__ import annotations

import copy
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import CRD_SUBSET_LABEL, SPARK_CRD_NAME, ApiResponse, Cluster, ControlPlane

GROUP_VERSION = "sparkoperator.k8s.io/v1beta2"


def apps_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    path = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/sparkapplications"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def spark_application(name: str, **spec_overrides: Any) -> dict[str, Any]:
    """A SparkApplication like the ones the offload operator launches (every field it uses)."""
    spec: dict[str, Any] = {
        "type": "Python",
        "mode": "cluster",
        "image": "registry.example.com/iceberg-offload-spark:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "mainApplicationFile": "local:///opt/iceberg-offload/spark_jobs/offload.py",
        "arguments": ["--table", "trades", "--window-start", "2026-11-01T00:00:00Z"],
        "sparkVersion": "3.5.9",
        "pythonVersion": "3",
        "restartPolicy": {
            "type": "OnFailure",
            "onFailureRetries": 2,
            "onFailureRetryInterval": 30,
            "onSubmissionFailureRetries": 3,
            "onSubmissionFailureRetryInterval": 20,
        },
        "sparkConf": {"spark.sql.catalog.demo": "org.apache.iceberg.spark.SparkCatalog"},
        "hadoopConf": {"fs.s3a.path.style.access": "true"},
        "deps": {"jars": ["local:///opt/jars/iceberg.jar"], "pyFiles": ["local:///opt/job.zip"]},
        "timeToLiveSeconds": 3600,
        "driver": {
            "cores": 1,
            "coreLimit": "1200m",
            "memory": "1g",
            "memoryOverhead": "512m",
            "serviceAccount": "spark-driver",
            "labels": {"app.kubernetes.io/name": "iceberg-offload"},
            "annotations": {"iceberg-offload.io/table": "trades"},
            "env": [
                {"name": "OFFLOAD_MODE", "value": "append"},
                {
                    "name": "CLICKHOUSE_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "clickhouse", "key": "password"}},
                },
            ],
            "envFrom": [{"secretRef": {"name": "s3-credentials"}}, {"configMapRef": {"name": "offload"}}],
        },
        "executor": {"cores": 2, "instances": 2, "memory": "2g", "serviceAccount": "spark-executor"},
    }
    spec.update(spec_overrides)
    return {"apiVersion": GROUP_VERSION, "kind": "SparkApplication", "metadata": {"name": name}, "spec": spec}


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def printed_row(table: str) -> dict[str, str]:
    """The first row of ``kubectl get`` output, by column (cells may be blank)."""
    header, row = table.splitlines()[:2]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return {header[a:b].strip(): row[a:b].strip() for a, b in bounds}


def created(response: ApiResponse) -> dict[str, Any]:
    assert response.status == 201, response.text
    body: dict[str, Any] = response.body
    return body


# -- the CRD ----------------------------------------------------------------------------------


def test_spark_crd_is_established_with_upstream_shape(control_plane: Cluster) -> None:
    # The approval condition is set by a controller of its own and may trail Established.
    deadline = time.monotonic() + 30
    while True:
        crd = control_plane.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{SPARK_CRD_NAME}")
        assert crd.status == 200, crd.text
        conditions = {c["type"]: c["status"] for c in crd.body["status"]["conditions"]}
        if conditions.get("KubernetesAPIApprovalPolicyConformant") == "True" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert conditions.get("Established") == "True"
    assert conditions.get("KubernetesAPIApprovalPolicyConformant") == "True", conditions  # the protected group
    (version,) = [v for v in crd.body["spec"]["versions"] if v["name"] == "v1beta2"]
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[-5:] == ["Status", "Attempts", "Start", "Finish", "Age"]
    resources = control_plane.kubectl("api-resources", "--api-group=sparkoperator.k8s.io", "-o", "wide", check=True)
    assert "sparkapp" in resources.stdout and "SparkApplication" in resources.stdout


@pytest.mark.kind_only
def test_real_spark_operator_is_installed_on_kind(control_plane: Cluster) -> None:
    crd = control_plane.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{SPARK_CRD_NAME}")
    assert crd.status == 200, "the Spark Operator's CRD is not installed (helm install spark-operator first)"
    assert CRD_SUBSET_LABEL not in (crd.body["metadata"].get("labels") or {}), (
        "the CRD is this suite's hand-written subset, not the real Spark Operator's"
    )
    deployments = control_plane.request(
        "GET", "/apis/apps/v1/deployments?labelSelector=app.kubernetes.io%2Fname%3Dspark-operator"
    )
    assert deployments.status == 200, deployments.text
    assert any((d.get("status") or {}).get("availableReplicas", 0) >= 1 for d in deployments.body["items"]), (
        "no available Spark Operator deployment (label app.kubernetes.io/name=spark-operator)"
    )


def test_valid_sparkapplication_and_status_subresource(control_plane: Cluster, namespace: str) -> None:
    app = spark_application("offload-trades-1")
    body = created(control_plane.request("POST", apps_path(namespace), app))
    assert body["spec"] == app["spec"], "a field the operator sets was pruned by the CRD schema"
    assert body["metadata"]["generation"] == 1

    # Status can be written only through /status; driverInfo is required there, as upstream.
    status = {
        "applicationState": {"state": "COMPLETED"},
        "driverInfo": {
            "podName": "offload-trades-1-driver",
            "webUIAddress": "10.0.0.17:4040",
            "webUIPort": 4040,
            "webUIServiceName": "offload-trades-1-ui-svc",
        },
        "executionAttempts": 1,
        "submissionAttempts": 1,
        "submissionID": "7d5c4c1e-0000-4000-8000-000000000001",
        "sparkApplicationId": "spark-0123456789abcdef",
        "lastSubmissionAttemptTime": "2026-11-25T10:00:00Z",
        "terminationTime": "2026-11-25T10:03:00Z",
        "executorState": {"offload-trades-1-exec-1": "COMPLETED"},
    }
    patched = control_plane.request(
        "PATCH",
        apps_path(namespace, "offload-trades-1", "status"),
        {"status": status},
        content_type="application/merge-patch+json",
    )
    assert patched.status == 200, patched.text
    assert patched.body["status"] == status
    assert patched.body["metadata"]["generation"] == 1, "a status write must not bump the generation"

    # A status write through the main resource is ignored (status subresource semantics).
    ignored = control_plane.request(
        "PATCH",
        apps_path(namespace, "offload-trades-1"),
        {"status": {"applicationState": {"state": "FAILED"}, "driverInfo": {}}},
        content_type="application/merge-patch+json",
    )
    assert ignored.status == 200, ignored.text
    assert ignored.body["status"]["applicationState"]["state"] == "COMPLETED"

    # ... and a status without driverInfo is invalid.
    no_driver_info = copy.deepcopy(patched.body)
    del no_driver_info["status"]["driverInfo"]
    rejected = control_plane.request("PUT", apps_path(namespace, "offload-trades-1", "status"), no_driver_info)
    assert rejected.status == 422, rejected.text
    assert "driverInfo" in rejected.text

    table = control_plane.kubectl("get", "sparkapp", "offload-trades-1", "-n", namespace, check=True)
    row = printed_row(table.stdout)
    assert (row["STATUS"], row["ATTEMPTS"], row["START"], row["FINISH"]) == (
        "COMPLETED",
        "1",
        "2026-11-25T10:00:00Z",
        "2026-11-25T10:03:00Z",
    )


@pytest.mark.parametrize(
    ("field", "spec_overrides"),
    [
        ("spec.driver.cores", {"driver": {"cores": 0, "memory": "1g"}}),
        ("spec.executor.instances", {"executor": {"instances": 0}}),
        ("spec.restartPolicy.type", {"restartPolicy": {"type": "Sometimes"}}),
        (
            "spec.restartPolicy.onFailureRetryInterval",
            {"restartPolicy": {"type": "OnFailure", "onFailureRetryInterval": 0}},
        ),
        ("spec.type", {"type": "Go"}),
        ("spec.mode", {"mode": "local"}),
        ("spec.sparkConf", {"sparkConf": {"spark.executor.instances": 2}}),
        ("spec.driver.env", {"driver": {"env": [{"value": "no name"}]}}),
    ],
)
def test_invalid_sparkapplication_is_rejected(
    control_plane: Cluster, namespace: str, field: str, spec_overrides: dict[str, Any]
) -> None:
    response = control_plane.request("POST", apps_path(namespace), spark_application("bad", **spec_overrides))
    assert response.status == 422, response.text
    assert response.reason == "Invalid"
    assert field in response.text


def test_required_spec_fields_are_enforced(control_plane: Cluster, namespace: str) -> None:
    app = spark_application("incomplete")
    del app["spec"]["mainApplicationFile"]
    response = control_plane.request("POST", apps_path(namespace), app)
    assert response.status == 422, response.text
    assert "spec.mainApplicationFile" in response.text


def test_unknown_fields_are_pruned_silently(control_plane: Cluster, namespace: str) -> None:
    """kube-apiserver 1.20 has no strict field validation: a typo'd field simply disappears.

    (A real cluster >= 1.25 would warn, or reject with fieldValidation=Strict.)
    """
    app = spark_application("typo", drvier={"cores": 4})
    body = created(control_plane.request("POST", apps_path(namespace), app))
    assert "drvier" not in body["spec"]


def test_namespace_deletion_leaves_nothing_behind(control_plane: Cluster) -> None:
    """The ``namespace`` fixture's cleanup: no namespace controller runs, ControlPlane emulates it."""
    if not isinstance(control_plane, ControlPlane):
        pytest.skip("on kind the real namespace controller deletes namespaces, asynchronously")
    name = f"e2e-cleanup-{secrets.token_hex(3)}"
    control_plane.create_namespace(name)
    app = spark_application("left-over")
    app["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]  # as if an operator had died
    created(control_plane.request("POST", apps_path(name), app))
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "left-over"}, "data": {"k": "v"}}
    created(control_plane.request("POST", f"/api/v1/namespaces/{name}/configmaps", config_map))

    control_plane.delete_namespace(name)

    assert control_plane.request("GET", f"/api/v1/namespaces/{name}").status == 404
    everywhere = control_plane.request("GET", f"/apis/{GROUP_VERSION}/sparkapplications")
    assert [i for i in everywhere.body["items"] if i["metadata"]["namespace"] == name] == []
    config_maps = control_plane.request("GET", "/api/v1/configmaps")
    assert [i for i in config_maps.body["items"] if i["metadata"]["namespace"] == name] == []


# -- identities and RBAC ------------------------------------------------------------------------


@pytest.fixture(params=["static-token", "token-request"])
def service_account_identity(
    request: pytest.FixtureRequest, control_plane: Cluster, namespace: str, rbac_probe_user: str
) -> Iterator[tuple[str, str, str]]:
    """(username, ServiceAccount namespace, ServiceAccount name) of an identity with no RBAC.

    ``static-token``: the session's static ServiceAccount-like user (no ServiceAccount object).
    ``token-request``: a real ServiceAccount in the test namespace with a TokenRequest token.
    """
    if request.param == "static-token":
        _, _, sa_namespace, sa_name = rbac_probe_user.split(":")
        yield rbac_probe_user, sa_namespace, sa_name
    else:
        user = f"system:serviceaccount:{namespace}:offload-operator"
        control_plane.token_for(user)  # creates the ServiceAccount
        yield user, namespace, "offload-operator"


def test_service_account_needs_rbac(
    control_plane: Cluster, namespace: str, service_account_identity: tuple[str, str, str]
) -> None:
    user, sa_namespace, sa_name = service_account_identity
    forbidden = control_plane.request("GET", apps_path(namespace), user=user)
    assert forbidden.status == 403, forbidden.text
    assert forbidden.reason == "Forbidden"

    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "sparkapplication-reader", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["sparkoperator.k8s.io"],
                "resources": ["sparkapplications"],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "sparkapplication-reader", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sparkapplication-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
    }
    created(control_plane.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles", role))
    created(
        control_plane.request(
            "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", binding
        )
    )
    # The RBAC authorizer reads from an informer cache: the grant shows up within milliseconds.
    wait_until(
        lambda: control_plane.request("GET", apps_path(namespace), user=user).status == 200,
        timeout=10,
        what="the RoleBinding to take effect",
    )
    # Only what was granted: creating is still forbidden, elsewhere still forbidden.
    assert control_plane.request("POST", apps_path(namespace), spark_application("x"), user=user).status == 403
    assert control_plane.request("GET", f"/apis/{GROUP_VERSION}/sparkapplications", user=user).status == 403
    # kubectl as that user (through a generated kubeconfig) agrees.
    can_i = control_plane.kubectl(
        "auth", "can-i", "list", "sparkapplications.sparkoperator.k8s.io", "-n", namespace, user=user
    )
    assert can_i.stdout.strip() == "yes", can_i.stderr


# -- kopf -------------------------------------------------------------------------------------------

KOPF_HANDLERS = """
import os
import pathlib

import kopf

CALLS = pathlib.Path(os.environ["E2E_HANDLER_CALLS"])


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    settings.watching.server_timeout = 30
    settings.networking.request_timeout = 30


@kopf.on.create("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
def on_create(name: str, namespace: str, patch: kopf.Patch, **_: object) -> None:
    with CALLS.open("a") as calls:
        calls.write(f"{namespace}/{name}\\n")
    patch.metadata.annotations["e2e.iceberg-offload/handled"] = "yes"
"""


def test_kopf_operator_runs_create_handler_exactly_once(control_plane: Cluster, namespace: str, tmp_path: Path) -> None:
    handlers = tmp_path / "handlers.py"
    handlers.write_text(textwrap.dedent(KOPF_HANDLERS))
    calls = tmp_path / "calls.log"
    calls.touch()
    log = tmp_path / "kopf.log"
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig), "E2E_HANDLER_CALLS": str(calls)}
    with log.open("w") as log_handle:
        operator = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace, str(handlers)],
            env=env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        created(control_plane.request("POST", apps_path(namespace), spark_application("kopf-smoke")))

        def annotated() -> bool:
            if operator.poll() is not None:
                pytest.fail(f"kopf exited with {operator.returncode}:\n{log.read_text()[-3000:]}")
            got = control_plane.request("GET", apps_path(namespace, "kopf-smoke"))
            return bool((got.body["metadata"].get("annotations") or {}).get("e2e.iceberg-offload/handled"))

        wait_until(annotated, timeout=45, what=f"the kopf handler's annotation; kopf log:\n{log.read_text()[-3000:]}")
        # Updates (kopf's own annotation patch, a label change) must not re-run the create handler.
        patched = control_plane.request(
            "PATCH",
            apps_path(namespace, "kopf-smoke"),
            {"metadata": {"labels": {"touched": "yes"}}},
            content_type="application/merge-patch+json",
        )
        assert patched.status == 200, patched.text
        time.sleep(2)
        assert calls.read_text().splitlines() == [f"{namespace}/kopf-smoke"]
    finally:
        if operator.poll() is None:
            os.killpg(operator.pid, signal.SIGINT)
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
                operator.wait(timeout=10)
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
    assert "Handler 'on_create' succeeded" in output, output[-3000:]
