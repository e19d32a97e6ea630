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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


# -- the operator's end-to-end tests: the OffloadTable CRD, the Spark Operator stand-in, scenarios --

STANDIN_REASON = (
    "the Spark Operator stand-in serves only the local kube-apiserver; on kind the real Spark Operator "
    "runs SparkApplications (see the kind_only tests)"
)


@pytest.fixture(scope="session")
def offload_crd(control_plane: Cluster) -> str:
    """The operator's CRDs (``crds/offloadtables.offload.k2.io.yaml``, and the OffloadBackfill's:
    the operator watches both), applied and Established; the OffloadTable CRD's name."""
    from standin.harness import BACKFILL_CRD, BACKFILL_CRD_NAME, OFFLOAD_CRD, OFFLOAD_CRD_NAME

    for path, name in ((OFFLOAD_CRD, OFFLOAD_CRD_NAME), (BACKFILL_CRD, BACKFILL_CRD_NAME)):
        applied = control_plane.kubectl("apply", "-f", str(path))
        if applied.returncode != 0:
            pytest.fail(f"the CRD {name} was rejected: {applied.stderr.strip()}", pytrace=False)
        _wait_established(control_plane, name)
    return OFFLOAD_CRD_NAME


@pytest.fixture(scope="session")
def standin(control_plane: Cluster, offload_crd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's Spark Operator stand-in (``tests/e2e/standin``): one process, one warm
    SparkSession, the embedded ClickHouse (password-protected, 127.0.0.1) and the SQLite Iceberg
    catalog. Scenarios share it and isolate themselves by namespace, ClickHouse database and
    Iceberg namespace (:class:`standin.harness.Scenario`)."""
    if e2e_cluster_kind() == "kind":
        pytest.skip(STANDIN_REASON)
    from standin.harness import StandInProcess

    state_dir = tmp_path_factory.mktemp("standin")
    try:
        process = StandInProcess.start(
            kubeconfig=control_plane.kubeconfig, state_dir=state_dir, password=secrets.token_urlsafe(18)
        )
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def scenario(
    control_plane: Cluster, standin: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """``scenario(label)``: a fresh :class:`standin.harness.Scenario` (namespace served by the
    stand-in, own ClickHouse database and Iceberg namespace); its operators are stopped and its
    namespace deleted afterwards."""
    from standin.harness import Scenario

    made: list[Scenario] = []

    def make(label: str | None = None) -> Scenario:
        created = Scenario.create(control_plane, standin, label or request.node.name, tmp_path / f"s{len(made)}")
        made.append(created)
        return created

    yield make
    for item in made:
        item.close()
