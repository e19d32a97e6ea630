"""Fixtures for the end-to-end tests: a real Kubernetes API with the SparkApplication CRD.

``E2E_CLUSTER`` selects the cluster:

* ``apiserver`` (default): a local etcd + kube-apiserver 1.20 started once per test session
  (:class:`cluster.ControlPlane`).  The binary is built once per machine by
  ``make kube-apiserver`` (``tests/e2e/cluster/build-kube-apiserver.sh``); without it the
  fixtures FAIL (CI builds it, so a missing binary is a broken setup, not a reason to skip).
* ``kind``: the current context of ``$KUBECONFIG`` (or ``~/.kube/config``), only if its name
  starts with ``kind-`` (never a real cluster).  There the real Spark Operator's CRD is used when
  installed; the hand-written subset is applied only when it is missing.

Tests marked ``kind_only`` need the real Spark Operator and skip unless ``E2E_CLUSTER=kind``.

Identities: static users are fixed when the session's control plane starts, so the ones the
suite needs are declared in :data:`STATIC_USERS` below.  Identities decided by a test itself
(e.g. the operator's ServiceAccount from a Helm chart) should use
``control_plane.token_for("system:serviceaccount:<ns>:<name>")`` /
``control_plane.kubeconfig_for(...)``, which fall back to the TokenRequest API (real
ServiceAccount tokens, also on kind).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import (
    BUILD_SCRIPT,
    SPARK_CRD_FILE,
    SPARK_CRD_NAME,
    Cluster,
    ControlPlane,
    ControlPlaneError,
    ExistingCluster,
    default_apiserver_binary,
    service_account_user,
)

E2E_DIR = Path(__file__).resolve().parent

#: A ServiceAccount-like static user with no RBAC at all (tests grant it what they need).
RBAC_PROBE_USER, _RBAC_PROBE_GROUPS = service_account_user("e2e-rbac", "probe")
#: Static users of the session's local control plane: name -> groups.
STATIC_USERS: dict[str, list[str]] = {
    RBAC_PROBE_USER: _RBAC_PROBE_GROUPS,
}

KIND_ONLY_REASON = (
    "needs a kind cluster with the real Spark Operator (E2E_CLUSTER=kind); no Docker engine on this machine"
)


def e2e_cluster_kind() -> str:
    value = os.environ.get("E2E_CLUSTER", "apiserver").strip() or "apiserver"
    if value not in ("apiserver", "kind"):
        raise pytest.UsageError(f"E2E_CLUSTER={value!r}: expected 'apiserver' (default) or 'kind'")
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"kind_only: {KIND_ONLY_REASON}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if e2e_cluster_kind() == "kind":
        return
    skip = pytest.mark.skip(reason=KIND_ONLY_REASON)
    for item in items:
        if item.get_closest_marker("kind_only") is not None:
            item.add_marker(skip)


def _apply_spark_crd(cluster: Cluster) -> None:
    applied = cluster.kubectl("apply", "-f", str(SPARK_CRD_FILE))
    if applied.returncode != 0:
        pytest.fail(f"the SparkApplication CRD was rejected: {applied.stderr.strip()}", pytrace=False)


def _wait_established(cluster: Cluster, crd: str, timeout: float = 30.0) -> None:
    waited = cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", f"--timeout={int(timeout)}s")
    if waited.returncode != 0:
        pytest.fail(f"CRD {crd} not Established: {waited.stderr.strip()}", pytrace=False)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Cluster]:
    """The session's Kubernetes API (see the module docstring), with the SparkApplication CRD."""
    if e2e_cluster_kind() == "kind":
        try:
            existing = ExistingCluster(require_context_prefix="kind-")
        except ControlPlaneError as err:
            pytest.fail(f"E2E_CLUSTER=kind: {err}", pytrace=False)
        try:
            crd = existing.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{SPARK_CRD_NAME}")
            if crd.status == 404:  # no Spark Operator installed: fall back to the subset
                _apply_spark_crd(existing)
            _wait_established(existing, SPARK_CRD_NAME)
            yield existing
        finally:
            existing.close()
        return

    binary = default_apiserver_binary()
    if not binary.is_file():
        pytest.fail(
            f"kube-apiserver binary not found at {binary}: run `make kube-apiserver` "
            f"({BUILD_SCRIPT.relative_to(E2E_DIR.parent.parent)}) once on this machine "
            "(or set KUBE_APISERVER_BINARY)",
            pytrace=False,
        )
    plane = ControlPlane(extra_users=STATIC_USERS)
    try:
        plane.start()
    except ControlPlaneError as err:
        pytest.fail(f"the local control plane did not start: {err}", pytrace=False)
    try:
        _apply_spark_crd(plane)
        _wait_established(plane, SPARK_CRD_NAME)
        yield plane
    finally:
        plane.stop()


def _namespace_name(node_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")
    slug = re.sub(r"^test-", "", slug)[:40].strip("-") or "test"
    return f"e2e-{slug}-{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def rbac_probe_user() -> str:
    """A ServiceAccount-like user (``system:serviceaccount:e2e-rbac:probe``) with no RBAC at all.

    A static token on the local control plane; a TokenRequest token on kind.
    """
    return RBAC_PROBE_USER


@pytest.fixture
def namespace(control_plane: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (with everything in it) afterwards."""
    name = _namespace_name(request.node.name)
    control_plane.create_namespace(name, labels={"iceberg-offload.e2e/test": "true"})
    try:
        yield name
    finally:
        control_plane.delete_namespace(name)
