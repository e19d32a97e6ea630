"""The Helm chart against a real API server: accepted, installable, and its RBAC exactly sufficient.

* ``helm template | kubectl apply --dry-run=server`` is accepted for the main value combinations.
* ``helm install`` creates the objects; then the operator runs as a LOCAL process with the
  Deployment's own command line and environment, authenticated as the chart's operator
  ServiceAccount (RBAC enforced), through a recording proxy on 127.0.0.1 that logs every API
  call.  It reconciles the runbook's tables the chart created: reads the catalog ConfigMap and
  the Secrets, creates a run's SparkApplication, writes the status, posts events; when the test
  (playing the Spark Operator) fails the run, it reads the driver's log, records the failure and
  deletes the run (history limit 0).  Every call must be allowed by the chart's Role, and every
  rule of the Role must have been used: sufficient and minimal, measured, not assumed.
* ``kubectl auth can-i`` as the ServiceAccount: no for what the operator must not do.
* Two replicas with peering: one works, the other stands by.

No Spark Operator runs here (tests/e2e/standin/ did not exist when this was written), so runs
stop at "SparkApplication created"; the test writes the terminal state itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import Cluster, ControlPlane
from standin.harness import FAR_AWAY, RUN_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "iceberg-offload"
INSTALL_HELM = ROOT / "scripts" / "install-helm.sh"
RELEASE = "offload"
FULLNAME = f"{RELEASE}-iceberg-offload"
CHART_CRDS = (
    "offloadtables.offload.k2.io",
    "offloadbackfills.offload.k2.io",
    "kopfpeerings.kopf.dev",
    "clusterkopfpeerings.kopf.dev",
)

#: What kopf asks for to follow namespaces and CRDs appearing at run time.  A namespaced operator
#: does not need it: on 403 kopf falls back to the namespaces it was given and the resources it
#: found at start (kopf._core.reactor.observation) -- but only after retrying each request 9 times
#: (about 55 s of ERROR lines during which NO OffloadTable is served).  kopf skips these requests
#: with ``settings.scanning.disabled = True``, which handlers.configure sets: the operator runs
#: here exactly as the Deployment starts it, and must make none of these requests.
KOPF_SCANNING = {
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
TRIGGER = "offload.k2.io/trigger"
RECONCILE_SECONDS = 2


# -- helm --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """helm 3.17.2 from scripts/install-helm.sh (cached after the first run)."""
    proc = subprocess.run([str(INSTALL_HELM)], capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"scripts/install-helm.sh failed: {proc.stderr.strip()}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


def run_helm(helm: Path, *args: str, cluster: Cluster | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm), *args]
    if cluster is not None:
        cmd += ["--kubeconfig", str(cluster.kubeconfig)]
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/iceberg-offload-helm-cache",
        "HELM_CONFIG_HOME": "/tmp/iceberg-offload-helm-config",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120, env=env)
    assert proc.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{proc.stderr}"
    return proc


def render(helm: Path, namespace: str, values: Mapping[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    values_file = tmp_path / f"values-{secrets.token_hex(3)}.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    out = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", namespace, "-f", str(values_file)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def chart_crds(control_plane: Cluster) -> None:
    """The chart's CRDs (helm would install them; dry runs need them first)."""
    control_plane.kubectl("apply", "-f", str(CHART / "crds"), check=True)
    for crd in CHART_CRDS:
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s", check=True)


@contextlib.contextmanager
def extra_namespace(cluster: Cluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{secrets.token_hex(3)}"
    cluster.create_namespace(name, labels={"iceberg-offload.e2e/test": "true"})
    try:
        yield name
    finally:
        cluster.delete_namespace(name)


# -- 1. the rendered chart is valid for the API server -----------------------------------------


def refused_in(log: str) -> bool:
    """Whether the operator's log reports a refused request (its timestamps' milliseconds aside)."""
    text = re.sub(r"^\[[^\]]*\]", "", log, flags=re.MULTILINE)
    return re.search(r"\b403\b|forbidden", text, re.IGNORECASE) is not None


@pytest.mark.parametrize(
    "case",
    ["defaults", "cluster-wide-everything", "two-namespaces-peering"],
)
def test_rendered_chart_is_accepted_by_the_api_server(
    control_plane: Cluster, namespace: str, helm_binary: Path, chart_crds: None, tmp_path: Path, case: str
) -> None:
    with extra_namespace(control_plane, "e2e-chart-other") as other:
        values: dict[str, Any] = {
            "defaults": {},
            # Everything but the ServiceMonitor/PrometheusRule (their CRDs are not on this server).
            "cluster-wide-everything": {
                "clusterWide": True,
                "replicas": 2,
                "runbookTables": {"enabled": True},
                "catalogConfigMap": {"create": True},
                "rbac": {"secretNames": ["clickhouse-offload", "iceberg-catalog"]},
                "fullnameOverride": f"offload-{namespace}"[:63],  # cluster-scoped names: one per test
            },
            "two-namespaces-peering": {
                "watchNamespaces": [namespace, other],
                "replicas": 2,
                "runbookTables": {"enabled": True},
                "catalogConfigMap": {"create": True},
            },
        }[case]
        objects = render(helm_binary, namespace, values, tmp_path)
        manifest = "\n---\n".join(yaml.safe_dump(o) for o in objects)
        applied = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
        assert applied.returncode == 0, applied.stderr
        lines = [line for line in applied.stdout.splitlines() if line.strip()]
        assert len(lines) == len(objects), applied.stdout
        assert all(line.endswith("(server dry run)") for line in lines), applied.stdout
        kinds = {o["kind"] for o in objects}
        if case == "cluster-wide-everything":
            assert {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering", "OffloadTable"} <= kinds
            assert "Role" in kinds  # the Spark driver's, never the operator's
        else:
            assert not {"ClusterRole", "ClusterRoleBinding"} & kinds


# -- a recording proxy between the operator and the API server -----------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str
    status: int

    @property
    def attributes(self) -> tuple[str, str, str, str | None, str | None] | None:
        """(group, resource[/subresource], verb, namespace, name) as RBAC sees it; None for discovery."""
        parts = [p for p in self.path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            return None
        if parts[0] == "apis" and len(parts) < 3:
            return None
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        if not rest:
            return None
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
        if len(rest) > 2:
            resource = f"{resource}/{rest[2]}"
        query = urllib.parse.parse_qs(self.query)
        verb = {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(self.method)
        if verb is None:
            verb = "get" if name else ("watch" if query.get("watch", ["false"])[0] in ("true", "1") else "list")
        return group, resource, verb, namespace, name


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, ca_file: Path | None) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parsed.hostname or "127.0.0.1", parsed.port or 443
        self.ssl_context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if ca_file is None:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE
        self.calls: list[Call] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one request to the API server and streams the answer back (watches included)."""

    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        skip = {"host", "connection", "keep-alive", "proxy-connection", "content-length"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        upstream = http.client.HTTPSConnection(
            self.server.upstream_host, self.server.upstream_port, context=self.server.ssl_context, timeout=600
        )
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            path, _, query = self.path.partition("?")
            with self.server.lock:
                self.server.calls.append(Call(self.command, path, query, response.status))
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            while chunk := response.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass
        finally:
            upstream.close()
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@contextlib.contextmanager
def recording_proxy(cluster: Cluster) -> Iterator[_Proxy]:
    ca_file = cluster.ca_file if isinstance(cluster, ControlPlane) else None
    proxy = _Proxy(cluster.server, ca_file)
    thread = threading.Thread(target=proxy.serve_forever, name="api-recorder", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


# -- the operator as a local process, configured like the chart's Deployment --------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str] | str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(0.2)


@dataclass
class Operator:
    """One `kopf run` process with the Deployment's arguments and environment."""

    process: subprocess.Popen[bytes]
    log: Path
    health_url: str
    metrics_url: str | None
    secrets_to_hide: list[str] = field(default_factory=list)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        text = self.text()
        for secret in self.secrets_to_hide:
            text = text.replace(secret, "***")
        return text[-chars:]

    def alive(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"the operator exited with {self.process.returncode}:\n{self.tail()}")
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def operator_kubeconfig(cluster: Cluster, user: str, proxy: _Proxy, tmp_path: Path) -> Path:
    """The ServiceAccount's kubeconfig (control_plane.kubeconfig_for), pointed at the proxy."""
    config = yaml.safe_load(cluster.kubeconfig_for(user).read_text())
    for entry in config["clusters"]:
        entry["cluster"] = {"server": proxy.url}
    path = tmp_path / f"operator-{secrets.token_hex(3)}.kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(config))
    return path


def container_of(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def start_operator(
    deployment: Mapping[str, Any],
    kubeconfig: Path,
    tmp_path: Path,
    *,
    extra_args: Sequence[str] = (),
    reconcile_seconds: int = RECONCILE_SECONDS,
    pod_id: str = "e2e-operator-0",
) -> Operator:
    """`kopf run` with the Deployment's command, args and env; 0.0.0.0 -> 127.0.0.1 on free ports."""
    container = container_of(deployment)
    assert container["command"] == ["kopf", "run", "-m", "iceberg_offload.operator.handlers"]
    health_port = free_port()
    args = []
    for arg in container["args"]:
        if arg.startswith("--liveness="):
            assert arg == f"--liveness=http://0.0.0.0:{container['ports'][0]['containerPort']}/healthz"
            arg = f"--liveness=http://127.0.0.1:{health_port}/healthz"
        args.append(arg)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEBERG_OFFLOAD_", "KUBECONFIG", "KOPF_"))}
    metrics_url = None
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
    env["POD_ID"] = pod_id
    env["KUBECONFIG"] = str(kubeconfig)
    env["ICEBERG_OFFLOAD_RECONCILE_SECONDS"] = str(reconcile_seconds)
    assert env["ICEBERG_OFFLOAD_METRICS_ADDRESS"] == "0.0.0.0"
    env["ICEBERG_OFFLOAD_METRICS_ADDRESS"] = "127.0.0.1"
    if env["ICEBERG_OFFLOAD_METRICS_PORT"] != "0":
        metrics_port = free_port()
        env["ICEBERG_OFFLOAD_METRICS_PORT"] = str(metrics_port)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    kopf = Path(sys.executable).with_name("kopf")
    command = [str(kopf)] if kopf.exists() else [sys.executable, "-m", "kopf"]
    log = tmp_path / f"operator-{pod_id}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, *container["command"][1:], *args, *extra_args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
    return Operator(process, log, f"http://127.0.0.1:{health_port}/healthz", metrics_url)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


# -- RBAC rules as the API server evaluates them -------------------------------------------------


def rule_grants(rules: Sequence[Mapping[str, Any]], group: str, resource: str, verb: str, name: str | None) -> bool:
    for rule in rules:
        if group not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
            continue
        if verb not in rule.get("verbs", []):
            continue
        names = rule.get("resourceNames")
        if names and (name is None or name not in names):
            continue
        return True
    return False


def rule_triples(rules: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def get_json(cluster: Cluster, path: str) -> dict[str, Any]:
    response = cluster.request("GET", path)
    assert response.status == 200, f"GET {path} -> {response.status}: {response.text[:300]}"
    body: dict[str, Any] = response.body
    return body


def merge_patch(cluster: Cluster, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    response = cluster.request("PATCH", path, dict(body), content_type="application/merge-patch+json")
    assert response.status == 200, f"PATCH {path} -> {response.status}: {response.text[:300]}"
    result: dict[str, Any] = response.body
    return result


def ot_path(namespace: str, name: str = "") -> str:
    return f"/apis/offload.k2.io/v1alpha1/namespaces/{namespace}/offloadtables" + (f"/{name}" if name else "")


def backfill_path(namespace: str, name: str = "") -> str:
    return f"/apis/offload.k2.io/v1alpha1/namespaces/{namespace}/offloadbackfills" + (f"/{name}" if name else "")


def apps_path(namespace: str, name: str = "") -> str:
    return f"/apis/sparkoperator.k8s.io/v1beta2/namespaces/{namespace}/sparkapplications" + (f"/{name}" if name else "")


# -- 2. install, then the operator reconciles as the chart's ServiceAccount ----------------------


def install_values(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """The release the e2e tests install: the runbook's tables, a local SQLite Iceberg catalog."""
    values: dict[str, Any] = {
        "operator": {"mirror": False},
        "rbac": {"secretNames": ["clickhouse-offload", "iceberg-catalog"]},
        # A far-away schedule (the chart's is every 15 minutes): every run is one a test asked for,
        # whichever quarter hour it runs in.
        "runbookTables": {
            "enabled": True,
            "schedule": FAR_AWAY,
            "clickhouse": {"host": "127.0.0.1", "port": free_port()},
        },
        "catalogConfigMap": {
            "create": True,
            "uri": f"jdbc:sqlite:{tmp_path / 'catalog.db'}",
            "warehouse": (tmp_path / "warehouse").as_uri(),
            "user": "",
        },
    }
    for key, value in overrides.items():
        values[key] = value
    return values


def helm_install(helm: Path, cluster: Cluster, namespace: str, values: Mapping[str, Any], tmp_path: Path) -> str:
    values_file = tmp_path / "install-values.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    out = run_helm(
        helm, "install", RELEASE, str(CHART), "--namespace", namespace, "-f", str(values_file), cluster=cluster
    )
    return out.stdout


def prepare_catalog(tmp_path: Path) -> None:
    """Create the SQLite catalog's tables up front: the operator's reconciles run in parallel
    threads, and several of them creating the tables at once race on SQLite (logged, retried)."""
    from iceberg_offload.adapters import iceberg_io
    from iceberg_offload.core.settings import CatalogSettings

    uri = f"jdbc:sqlite:{tmp_path / 'catalog.db'}"
    iceberg_io.open_catalog(CatalogSettings(uri=uri, warehouse=(tmp_path / "warehouse").as_uri()))


def create_password_secrets(cluster: Cluster, namespace: str) -> list[str]:
    passwords = []
    for name in ("clickhouse-offload", "iceberg-catalog"):
        password = secrets.token_urlsafe(16)
        passwords.append(password)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "Opaque",
            "stringData": {"password": password},
        }
        response = cluster.request("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
        assert response.status == 201, response.text[:300]
    return passwords


def events_for(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    items = get_json(cluster, f"/api/v1/namespaces/{namespace}/events")["items"]
    return [(e["type"], e["reason"]) for e in items if e["involvedObject"].get("name") == name]


def test_helm_install_then_operator_reconciles_as_its_service_account(
    control_plane: Cluster, namespace: str, helm_binary: Path, chart_crds: None, tmp_path: Path
) -> None:
    began = time.monotonic()
    notes = helm_install(helm_binary, control_plane, namespace, install_values(tmp_path), tmp_path)
    assert "kubectl get offloadtables" in notes and "/metrics" in notes

    # What helm created.
    def names(kind: str) -> set[str]:
        out = control_plane.kubectl("get", kind, "-n", namespace, "-o", "name", check=True).stdout
        return {line.split("/", 1)[1] for line in out.split()}

    assert names("deployment") == {FULLNAME}
    assert {FULLNAME, "iceberg-offload-spark"} <= names("serviceaccount")
    assert names("role") == {FULLNAME, f"{FULLNAME}-spark"}
    assert names("rolebinding") == {FULLNAME, f"{FULLNAME}-spark"}
    assert names("service") == {f"{FULLNAME}-metrics"}
    assert names("configmap") >= {"iceberg-catalog"}
    examples = sorted(p for p in (ROOT / "examples").glob("[1-3]*.yaml"))
    assert names("offloadtables") == {yaml.safe_load(p.read_text())["metadata"]["name"] for p in examples}
    assert control_plane.kubectl("get", "clusterrole", FULLNAME).returncode != 0, "a ClusterRole when not clusterWide"

    deployment = get_json(control_plane, f"/apis/apps/v1/namespaces/{namespace}/deployments/{FULLNAME}")
    assert container_of(deployment)["args"][:2] == [f"--namespace={namespace}", "--standalone"]
    role = get_json(control_plane, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{FULLNAME}")
    passwords = create_password_secrets(control_plane, namespace)
    prepare_catalog(tmp_path)
    user = f"system:serviceaccount:{namespace}:{FULLNAME}"

    with recording_proxy(control_plane) as proxy:
        operator = start_operator(deployment, operator_kubeconfig(control_plane, user, proxy, tmp_path), tmp_path)
        operator.secrets_to_hide = passwords
        try:
            wait_until(lambda: operator.alive() and http_status(operator.health_url) == 200, 60, operator.tail)

            # Every table gets a status (the catalog ConfigMap and both Secrets read, status patched).
            def all_reconciled() -> bool:
                operator.alive()
                items = get_json(control_plane, ot_path(namespace))["items"]
                return all((i.get("status") or {}).get("conditions") for i in items)

            wait_until(all_reconciled, 60, lambda: f"a status on every OffloadTable; log:\n{operator.tail()}")
            silver = get_json(control_plane, ot_path(namespace, "silver-trades"))["status"]
            ready = {c["type"]: c for c in silver["conditions"]}["Ready"]
            assert ready["status"] == "True", ready

            # A manual run of one bronze table; failed runs are not kept, retries wait an hour.
            table = "bronze-trades-binance"
            merge_patch(
                control_plane,
                ot_path(namespace, table),
                {
                    "metadata": {"annotations": {"offload.k2.io/trigger": "e2e-1"}},
                    "spec": {"failedRunHistoryLimit": 0, "retryPolicy": {"maxAttempts": 3, "delaySeconds": 3600}},
                },
            )

            def runs() -> list[dict[str, Any]]:
                operator.alive()
                items = get_json(control_plane, apps_path(namespace))["items"]
                return [i for i in items if i["metadata"]["labels"].get("offload.k2.io/table") == table]

            wait_until(lambda: len(runs()) == 1, 30, lambda: f"the run's SparkApplication; log:\n{operator.tail()}")
            (run,) = runs()
            spec = run["spec"]
            assert spec["image"] == "ghcr.io/k2/iceberg-offload-spark:0.1.0"  # ICEBERG_OFFLOAD_SPARK_IMAGE
            assert spec["driver"]["serviceAccount"] == "iceberg-offload-spark"  # the chart's Spark SA
            assert spec["driver"]["envFrom"] == [{"configMapRef": {"name": "iceberg-catalog"}}]
            env = {e["name"]: e for e in spec["driver"]["env"]}
            assert env["ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": "clickhouse-offload",
                "key": "password",
            }
            name = run["metadata"]["name"]

            def active() -> bool:
                status = get_json(control_plane, ot_path(namespace, table)).get("status") or {}
                return bool((status.get("activeRun") or {}).get("name") == name)

            wait_until(active, 20, "status.activeRun")
            wait_until(lambda: ("Normal", "RunStarted") in events_for(control_plane, namespace, table), 20, "event")

            # Play the Spark Operator: the driver failed.
            status = {
                "applicationState": {"state": "FAILED", "errorMessage": "driver container failed with ExitCode: 1"},
                "driverInfo": {"podName": f"{name}-driver"},
                "terminationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            merge_patch(control_plane, apps_path(namespace, name) + "/status", {"status": status})

            def failure_recorded() -> bool:
                operator.alive()
                got = get_json(control_plane, ot_path(namespace, table)).get("status") or {}
                return got.get("consecutiveFailures") == 1 and not runs()

            wait_until(failure_recorded, 30, lambda: f"the failure recorded, the run deleted; log:\n{operator.tail()}")
            final = get_json(control_plane, ot_path(namespace, table))["status"]
            assert final["lastRun"]["outcome"] == "Failed" and final["lastRun"]["name"] == name
            assert "ExitCode: 1" in final["lastError"]
            wait_until(lambda: ("Warning", "RunFailed") in events_for(control_plane, namespace, table), 20, "event")

            # An OffloadBackfill of the table, refused (nothing is committed yet): its table read,
            # its status written.
            backfill = {
                "apiVersion": "offload.k2.io/v1alpha1",
                "kind": "OffloadBackfill",
                "metadata": {"name": "refused"},
                "spec": {"table": table, "from": "2024-03-01T00:00:00Z", "to": "2024-03-02T00:00:00Z"},
            }
            created = control_plane.request("POST", backfill_path(namespace), backfill)
            assert created.status == 201, created.text[:300]

            def refused() -> bool:
                operator.alive()
                got = get_json(control_plane, backfill_path(namespace, "refused")).get("status") or {}
                return got.get("phase") == "Failed"

            wait_until(refused, 30, lambda: f"the backfill refused; log:\n{operator.tail()}")
            assert http_status(operator.health_url) == 200
        finally:
            operator.stop()
        calls = list(proxy.calls)

    log = operator.text()
    for password in passwords:
        assert password not in log, "a password reached the operator's log"
    assert "Traceback" not in log, operator.tail()

    # Sufficient: nothing the operator asked for was refused, and its log has no 403 at all.
    resource_calls = [(c, c.attributes) for c in calls if c.attributes is not None]
    forbidden = [c for c, _ in resource_calls if c.status == 403]
    assert not forbidden, f"refused: {forbidden}"
    assert not refused_in(log), operator.tail()

    scanning = {(g, r, v) for _c, (g, r, v, _ns, _n) in resource_calls} & KOPF_SCANNING
    assert not scanning, f"kopf scanned the cluster, which a namespaced Role does not allow: {scanning}"

    # ... and every call made in the namespace is granted by the chart's Role, resourceNames included.
    used: set[tuple[str, str, str]] = set()
    for call, (group, resource, verb, ns, name) in resource_calls:
        assert ns == namespace, f"a call outside the watched namespace: {call}"
        assert rule_grants(role["rules"], group, resource, verb, name), f"not granted by the Role: {call}"
        used.add((group, resource, verb))

    # Minimal: every rule of the Role was used.
    assert rule_triples(role["rules"]) == used, (
        f"granted but unused: {sorted(rule_triples(role['rules']) - used)}; used: {sorted(used)}"
    )
    assert time.monotonic() - began < 90


# -- 3. what the ServiceAccount must not be able to do ------------------------------------------


def test_operator_service_account_can_do_nothing_else(
    control_plane: Cluster, namespace: str, helm_binary: Path, chart_crds: None, tmp_path: Path
) -> None:
    values = install_values(tmp_path)
    helm_install(helm_binary, control_plane, namespace, values, tmp_path)
    user = f"system:serviceaccount:{namespace}:{FULLNAME}"

    def can_i(*args: str) -> str:
        proc = control_plane.kubectl("auth", "can-i", *args, user=user)
        return proc.stdout.strip()

    n = ("-n", namespace)
    allowed = [
        ("list", "offloadtables.offload.k2.io", *n),
        ("patch", "offloadtables.offload.k2.io/status", *n),
        ("get", "offloadtables.offload.k2.io", *n),
        ("watch", "offloadbackfills.offload.k2.io", *n),
        ("patch", "offloadbackfills.offload.k2.io/status", *n),
        ("create", "sparkapplications.sparkoperator.k8s.io", *n),
        ("get", "secrets/clickhouse-offload", *n),
        ("get", "configmaps/iceberg-catalog", *n),
        ("get", "pods", "--subresource=log", *n),
        ("create", "events", *n),
    ]
    for args in allowed:
        assert can_i(*args) == "yes", args
    denied = [
        ("list", "secrets", *n),
        ("watch", "secrets", *n),
        ("get", "secrets/some-other-secret", *n),
        ("create", "pods", *n),
        ("get", "pods", *n),
        ("delete", "offloadtables.offload.k2.io", *n),
        ("create", "offloadtables.offload.k2.io", *n),
        ("create", "offloadbackfills.offload.k2.io", *n),
        ("delete", "offloadbackfills.offload.k2.io", *n),
        ("update", "offloadtables.offload.k2.io", *n),
        ("update", "sparkapplications.sparkoperator.k8s.io", *n),
        ("patch", "sparkapplications.sparkoperator.k8s.io/status", *n),
        ("create", "configmaps", *n),
        ("create", "roles.rbac.authorization.k8s.io", *n),
        ("create", "rolebindings.rbac.authorization.k8s.io", *n),
        ("create", "serviceaccounts/token", *n),
        ("list", "offloadtables.offload.k2.io", "-n", "default"),
        ("list", "offloadtables.offload.k2.io", "--all-namespaces"),
        ("get", "secrets", "-n", "kube-system"),
        ("list", "namespaces"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "nodes"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("patch", "kopfpeerings.kopf.dev", *n),  # standalone: no peering rights
    ]
    for args in denied:
        assert can_i(*args) == "no", args

    # The Spark driver may manage its executors' pods, and nothing cluster-wide or secret.
    spark = f"system:serviceaccount:{namespace}:iceberg-offload-spark"
    for args in (("create", "pods", *n), ("deletecollection", "pods", *n), ("create", "services", *n)):
        assert control_plane.kubectl("auth", "can-i", *args, user=spark).stdout.strip() == "yes", args
    for args in (("get", "secrets", *n), ("list", "pods", "-n", "default"), ("create", "sparkapplications", *n)):
        assert control_plane.kubectl("auth", "can-i", *args, user=spark).stdout.strip() == "no", args


# -- 4. two replicas: kopf peering, one works and one stands by ----------------------------------


def test_two_replicas_one_active_one_standby(
    control_plane: Cluster, namespace: str, helm_binary: Path, chart_crds: None, tmp_path: Path
) -> None:
    values = install_values(tmp_path, replicas=2)
    helm_install(helm_binary, control_plane, namespace, values, tmp_path)
    deployment = get_json(control_plane, f"/apis/apps/v1/namespaces/{namespace}/deployments/{FULLNAME}")
    assert deployment["spec"]["replicas"] == 2
    assert f"--peering={FULLNAME}" in container_of(deployment)["args"]
    peering_path = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{FULLNAME}"
    get_json(control_plane, peering_path)  # created by the chart
    role = get_json(control_plane, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{FULLNAME}")
    create_password_secrets(control_plane, namespace)
    prepare_catalog(tmp_path)
    user = f"system:serviceaccount:{namespace}:{FULLNAME}"

    # One recording proxy per replica: who did what.  The replicas start one after the other, as
    # in a rolling update (started at the very same moment, both may work for a moment before
    # they see each other's keep-alive: harmless, runs have deterministic names).
    with recording_proxy(control_plane) as proxy_a, recording_proxy(control_plane) as proxy_b:
        # kopf pauses replicas of EQUAL priority: each replica needs its own (see the chart README).
        first = start_operator(
            deployment,
            operator_kubeconfig(control_plane, user, proxy_a, tmp_path),
            tmp_path,
            extra_args=["--priority=20"],
            pod_id="replica-a",
        )
        second: Operator | None = None
        running = [first]
        try:

            def peers() -> set[str]:
                for replica in running:
                    replica.alive()
                return set((get_json(control_plane, peering_path).get("status") or {}).keys())

            # With --peering kopf starts paused, and resumes when no peer has a higher priority.
            resumed = "Resuming operations after the pause"
            wait_until(
                lambda: bool(peers()) and resumed in first.text(), 60, lambda: f"replica-a active:\n{first.tail()}"
            )
            second = start_operator(
                deployment,
                operator_kubeconfig(control_plane, user, proxy_b, tmp_path),
                tmp_path,
                extra_args=["--priority=10"],
                pod_id="replica-b",
            )
            running.append(second)
            wait_until(lambda: peers() == {"replica-a", "replica-b"}, 60, lambda: f"both keep-alives: {peers()}")

            def trigger_and_wait(table: str, value: str) -> None:
                merge_patch(control_plane, ot_path(namespace, table), {"metadata": {"annotations": {TRIGGER: value}}})

                def run_created() -> bool:
                    peers()
                    items = get_json(control_plane, apps_path(namespace))["items"]
                    return any(i["metadata"]["labels"].get("offload.k2.io/table") == table for i in items)

                wait_until(run_created, 30, lambda: f"a run of {table}; log:\n{first.tail()}")

            trigger_and_wait("bronze-trades-kraken", "e2e-peering-1")
            time.sleep(2 * RECONCILE_SECONDS)  # more ticks: the standby still does nothing
            assert resumed not in second.text(), second.tail()
            standby_calls = list(proxy_b.calls)

            # Failover: the active replica stops (and leaves the peering); the standby takes over.
            running.remove(first)
            first.stop()
            wait_until(lambda: resumed in second.text(), 30, lambda: f"replica-b to resume:\n{second.tail()}")
            trigger_and_wait("bronze-trades-binance", "e2e-peering-2")
        finally:
            first.stop()
            if second is not None:
                second.stop()
        calls_a, calls_b = list(proxy_a.calls), list(proxy_b.calls)

    def writes(calls: list[Call]) -> set[tuple[str, str, str]]:
        return {
            (a[0], a[1], a[2])
            for c in calls
            if (a := c.attributes) is not None and a[2] in ("create", "patch", "delete") and a[1] != "kopfpeerings"
        }

    reconciling = {
        ("sparkoperator.k8s.io", "sparkapplications", "create"),
        ("offload.k2.io", "offloadtables/status", "patch"),
    }
    assert reconciling <= writes(calls_a)
    assert writes(standby_calls) == set(), "the standby replica reconciled"
    assert reconciling <= writes(calls_b), "the standby did not take over"
    for calls in (calls_a, calls_b):
        assert [c for c in calls if c.status == 403] == []
        peering_calls = {(a[0], a[1], a[2]) for c in calls if (a := c.attributes) is not None and a[0] == "kopf.dev"}
        assert peering_calls == {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch")}
    assert {t for t in rule_triples(role["rules"]) if t[0] == "kopf.dev"} == {
        ("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch")
    }
    for operator in (first, second):
        assert operator is not None and "Traceback" not in operator.text(), operator and operator.tail()


# -- 5. with the Spark Operator stand-in: a chart release carries a run to COMPLETED ---------------


def test_chart_release_completes_a_run_with_the_spark_operator_standin(
    control_plane: Cluster, scenario: Callable[..., Any], helm_binary: Path, chart_crds: None, tmp_path: Path
) -> None:
    """The same release, but the stand-in (tests/e2e/standin) executes the SparkApplication with
    the real offload job against its ClickHouse and Iceberg catalog: the run COMPLETES, the
    operator (as the chart's ServiceAccount) reads the watermark back and writes it to the status."""
    from datetime import UTC, datetime, timedelta

    from standin.harness import feed_trades

    s = scenario("chart-standin")
    clickhouse = s.create_sources(iceberg_tables=("bronze_trades_binance",))
    now = datetime.now(UTC)
    fed = feed_trades(clickhouse, now - timedelta(minutes=20), now - timedelta(minutes=1))
    catalog = s.standin.catalog
    values = install_values(
        tmp_path,
        operator={"mirror": True},
        catalogConfigMap={
            "create": True,
            "catalogName": catalog.name,
            "type": catalog.type,
            "uri": catalog.uri,
            "warehouse": catalog.warehouse,
            "user": catalog.user,
        },
        runbookTables={
            "enabled": True,
            "schedule": FAR_AWAY,
            "safetyBuffer": "10s",
            "clickhouse": {
                "host": "127.0.0.1",
                "port": s.standin.clickhouse_port,
                "user": s.standin.clickhouse_user,
                "database": s.database,
            },
            "catalog": {"namespace": s.iceberg_namespace},
        },
    )
    helm_install(helm_binary, control_plane, s.namespace, values, tmp_path)
    passwords = {"clickhouse-offload": s.standin.password, "iceberg-catalog": s.catalog_password}
    for name, password in passwords.items():
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"password": password},
        }
        assert control_plane.request("POST", f"/api/v1/namespaces/{s.namespace}/secrets", secret).status == 201
    deployment = get_json(control_plane, f"/apis/apps/v1/namespaces/{s.namespace}/deployments/{FULLNAME}")
    role = get_json(control_plane, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{s.namespace}/roles/{FULLNAME}")
    user = f"system:serviceaccount:{s.namespace}:{FULLNAME}"
    table = "bronze-trades-binance"

    with recording_proxy(control_plane) as proxy:
        operator = start_operator(deployment, operator_kubeconfig(control_plane, user, proxy, tmp_path), tmp_path)
        operator.secrets_to_hide = list(passwords.values())
        try:
            wait_until(lambda: operator.alive() and http_status(operator.health_url) == 200, 60, operator.tail)
            s.annotate(table, TRIGGER, "e2e-chart")

            def committed() -> dict[str, Any] | None:
                operator.alive()
                status = s.status(table)
                return status if (status.get("lastRun") or {}).get("outcome") in ("Succeeded", "Failed") else None

            status = s.wait(committed, timeout=RUN_TIMEOUT, what="the run recorded", table=table)
        finally:
            operator.stop()
        calls = list(proxy.calls)

    assert status["lastRun"]["outcome"] == "Succeeded", s.scrub(json.dumps(status))
    assert status["lastRun"]["rows"] == fed["bronze_trades_binance"] > 0
    assert status["watermark"]["timestamp"] and status["rowCount"] == fed["bronze_trades_binance"]
    assert status["consecutiveFailures"] == 0
    (app,) = s.apps(table)
    assert app["status"]["applicationState"]["state"] == "COMPLETED"
    assert ("Normal", "RunSucceeded") in [(e["type"], e["reason"]) for e in s.events(table)]
    # operator.mirror (ICEBERG_OFFLOAD_MIRROR=true): the runbook's offload_watermarks row follows.
    from iceberg_offload.adapters import clickhouse_io

    mirror = clickhouse_io.read_mirror(clickhouse, "bronze_trades_binance")
    assert mirror is not None and mirror.status == "success", mirror
    assert mirror.last_offload_timestamp.isoformat().startswith(status["watermark"]["timestamp"][:19])
    log = operator.text()
    assert not refused_in(log), operator.tail()
    for password in passwords.values():
        assert password not in log
    for call in calls:
        attributes = call.attributes
        if attributes is not None:
            group, resource, verb, _, object_name = attributes
            assert call.status != 403 and rule_grants(role["rules"], group, resource, verb, object_name), call
