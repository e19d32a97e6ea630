"""A real Kubernetes control plane for end-to-end tests: etcd + kube-apiserver on loopback.

Like controller-runtime's envtest: a real ``kube-apiserver`` (1.20, built once per machine from
Debian's ``kubernetes`` source package by ``build-kube-apiserver.sh`` beside this file) on top of
a throw-away ``etcd``.  There is no kube-controller-manager, no scheduler and no kubelet, so:

* nothing runs pods, and nothing garbage-collects owned objects;
* namespaces are never finalized by a controller: :meth:`ControlPlane.delete_namespace` emulates
  the namespace controller (deletes what is inside, then finalizes the namespace);
* ServiceAccount token Secrets are never created.  Two ways to act as a ServiceAccount instead:

  - **static tokens** declared at construction, ``ControlPlane(extra_users=...)``.  A static user
    named ``system:serviceaccount:<ns>:<name>`` in the groups ``system:serviceaccounts`` and
    ``system:serviceaccounts:<ns>`` (see :func:`service_account_user`) is, for authentication and
    RBAC, indistinguishable from that ServiceAccount: a RoleBinding whose subject is
    ``{kind: ServiceAccount, name: <name>, namespace: <ns>}`` matches it.  The ServiceAccount
    object need not even exist.
  - **TokenRequest** (:meth:`ControlPlane.service_account_token`): the API server signs a real
    bound ServiceAccount token (the ServiceAccount object is created if missing).  This needs no
    controller-manager and works on any cluster, kind included.

Everything binds to 127.0.0.1 on free ports; every file lives in one temporary directory.  etcd
and kube-apiserver each run in their own process group, are killed with the test process
(``PR_SET_PDEATHSIG``) and are stopped with SIGTERM, then SIGKILL, by :meth:`ControlPlane.stop`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

__all__ = [
    "APISERVER_VERSION",
    "BUILD_SCRIPT",
    "ApiResponse",
    "Cluster",
    "ControlPlane",
    "ControlPlaneError",
    "ExistingCluster",
    "default_apiserver_binary",
    "default_etcd_binary",
    "default_kubectl_binary",
    "service_account_user",
]

#: Version of Debian's ``kubernetes`` source package the cached kube-apiserver is built from.
APISERVER_VERSION = "1.20.5+really1.20.2-1.1+deb12u1"
#: Builds (once per machine) and prints the path of the kube-apiserver binary.
BUILD_SCRIPT = Path(__file__).with_name("build-kube-apiserver.sh")

_SA_USER = re.compile(r"^system:serviceaccount:([a-z0-9.-]+):([a-z0-9.-]+)$")
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or a request to it failed unexpectedly."""


def default_apiserver_binary() -> Path:
    """``$KUBE_APISERVER_BINARY``, else the cache path ``build-kube-apiserver.sh`` writes to."""
    explicit = os.environ.get("KUBE_APISERVER_BINARY")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("KUBE_APISERVER_CACHE") or str(Path.home() / ".cache" / "iceberg-offload")
    return Path(cache) / f"kube-apiserver-{APISERVER_VERSION}"


def default_etcd_binary() -> Path:
    """``$ETCD_BINARY``, else ``etcd`` on ``PATH``, else Debian's ``/usr/bin/etcd``."""
    explicit = os.environ.get("ETCD_BINARY")
    if explicit:
        return Path(explicit)
    return Path(shutil.which("etcd") or "/usr/bin/etcd")


def default_kubectl_binary() -> Path:
    """``$KUBECTL``, else ``/usr/bin/kubectl``, else ``kubectl`` on ``PATH``."""
    explicit = os.environ.get("KUBECTL")
    if explicit:
        return Path(explicit)
    if Path("/usr/bin/kubectl").exists():
        return Path("/usr/bin/kubectl")
    return Path(shutil.which("kubectl") or "kubectl")


def service_account_user(namespace: str, name: str) -> tuple[str, list[str]]:
    """The username and groups a ServiceAccount authenticates as.

    ``ControlPlane(extra_users=dict([service_account_user("ns", "sa")]))`` declares a static token
    that RBAC treats exactly like ServiceAccount ``ns/sa``.
    """
    return (
        f"system:serviceaccount:{namespace}:{name}",
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
    )


@dataclass(frozen=True)
class ApiResponse:
    """One HTTP exchange with the API server; ``body`` is the decoded JSON (or None)."""

    status: int
    body: Any
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def reason(self) -> str:
        """The ``reason`` of a ``Status`` body (``Forbidden``, ``Invalid``, ...), else ''."""
        if isinstance(self.body, dict) and self.body.get("kind") == "Status":
            return str(self.body.get("reason", ""))
        return ""


class Cluster(Protocol):
    """What the e2e tests may rely on, on the local control plane and on kind alike."""

    @property
    def kubeconfig(self) -> Path: ...

    @property
    def server(self) -> str: ...

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        user: str | None = None,
        check: bool = False,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]: ...

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> ApiResponse: ...

    def token_for(self, user: str) -> str: ...

    def kubeconfig_for(self, user: str) -> Path: ...

    def kubeconfig_for_token(self, token: str, *, name: str) -> Path: ...

    def service_account_token(
        self, namespace: str, name: str, *, create: bool = True, expiration_seconds: int = 3600
    ) -> str: ...

    def create_namespace(self, name: str, *, labels: Mapping[str, str] | None = None) -> None: ...

    def delete_namespace(self, name: str) -> None: ...


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """``preexec_fn``: deliver SIGTERM to the child when the process that started it dies.

    Linux only; tied to the *thread* that forked, so start the control plane from a thread that
    lives as long as the test session (pytest's main thread does).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _run(cmd: Sequence[str], *, cwd: Path | None = None) -> None:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} failed: {proc.stderr.strip()}")


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def _safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@dataclass(frozen=True)
class _Endpoint:
    """How to reach the API server over HTTPS (from a kubeconfig or from our own files)."""

    server: str
    ca_file: Path | None = None
    insecure: bool = False
    token: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert), str(self.client_key) if self.client_key else None)
        return context


class _ClusterBase:
    """Shared HTTP, kubectl and ServiceAccount helpers; subclasses provide the endpoint."""

    _kubectl_binary: Path
    _workdir: Path | None
    #: TokenRequest tokens issued for ``system:serviceaccount:<ns>:<name>`` users, by user name.
    _issued_tokens: dict[str, str]

    # -- to be provided by subclasses -------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        raise NotImplementedError

    def _endpoint(self) -> _Endpoint:
        raise NotImplementedError

    def _kubectl_extra_args(self) -> list[str]:
        return []

    def token_for(self, user: str) -> str:
        raise NotImplementedError

    def _require_workdir(self) -> Path:
        if self._workdir is None:
            raise ControlPlaneError("not started")
        return self._workdir

    # -- shared ------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return self._endpoint().server

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig file authenticating as ``user`` (see :meth:`token_for`)."""
        return self.kubeconfig_for_token(self.token_for(user), name=user)

    def kubeconfig_for_token(self, token: str, *, name: str) -> Path:
        """A kubeconfig file that authenticates with ``token`` as user entry ``name``.

        The file (mode 0600, in the temporary directory) is written once per (name, token).
        """
        directory = self._require_workdir() / "kubeconfigs"
        digest = hashlib.sha256(token.encode()).hexdigest()[:12]
        path = directory / f"{_safe_file_name(name)}-{digest}.kubeconfig"
        if path.exists():
            return path
        endpoint = self._endpoint()
        cluster: dict[str, Any] = {"server": endpoint.server}
        if endpoint.insecure:
            cluster["insecure-skip-tls-verify"] = True
        elif endpoint.ca_file is not None:
            cluster["certificate-authority"] = str(endpoint.ca_file)
        context_name = "e2e-" + _safe_file_name(name)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": context_name, "context": {"cluster": "e2e", "user": name}}],
            "current-context": context_name,
            "preferences": {},
        }
        directory.mkdir(exist_ok=True, mode=0o700)
        return _write_private(path, json.dumps(config, indent=2))

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        user: str | None = None,
        check: bool = False,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig <admin or user's kubeconfig> *args``.

        With ``user``, kubectl authenticates as that user through a kubeconfig file (tokens never
        appear on a command line).  With ``check``, a non-zero exit raises ControlPlaneError
        carrying kubectl's stderr.
        """
        kubeconfig = self.kubeconfig if user is None else self.kubeconfig_for(user)
        cmd = [str(self._kubectl_binary), "--kubeconfig", str(kubeconfig), *self._kubectl_extra_args(), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> ApiResponse:
        """One HTTPS request to the API server, as admin or as ``user``; never raises on 4xx/5xx.

        ``body`` is JSON-encoded unless it is ``bytes``/``str``.  Patches need ``content_type``
        ``application/merge-patch+json`` (or json-patch/strategic-merge-patch).
        """
        endpoint = self._endpoint()
        headers = {"Accept": "application/json"}
        token = self.token_for(user) if user is not None else endpoint.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data: bytes | None = None
        if body is not None:
            if isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        req = urllib.request.Request(endpoint.server.rstrip("/") + path, data=data, headers=headers, method=method)
        context = endpoint.ssl_context()
        try:
            with urllib.request.urlopen(req, context=context, timeout=timeout) as resp:
                status, raw = int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            status, raw = int(err.code), err.read()
        text = raw.decode(errors="replace")
        try:
            decoded: Any = json.loads(text) if text else None
        except json.JSONDecodeError:
            decoded = None
        return ApiResponse(status=status, body=decoded, text=text)

    def _ensure(self, method: str, path: str, body: Any = None) -> ApiResponse:
        response = self.request(method, path, body)
        if not response.ok:
            raise ControlPlaneError(f"{method} {path} -> {response.status}: {response.text[:500]}")
        return response

    def create_namespace(self, name: str, *, labels: Mapping[str, str] | None = None) -> None:
        """Create namespace ``name`` (409 Already Exists is fine)."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
        response = self.request("POST", "/api/v1/namespaces", body)
        if not response.ok and response.status != 409:
            raise ControlPlaneError(f"creating namespace {name} -> {response.status}: {response.text[:500]}")

    def delete_namespace(self, name: str) -> None:
        """Delete namespace ``name`` without waiting (the namespace controller finishes the job)."""
        self._forget_tokens(name)
        response = self.request("DELETE", f"/api/v1/namespaces/{name}")
        if not response.ok and response.status != 404:
            raise ControlPlaneError(f"deleting namespace {name} -> {response.status}: {response.text[:500]}")

    def service_account_token(
        self, namespace: str, name: str, *, create: bool = True, expiration_seconds: int = 3600
    ) -> str:
        """A real ServiceAccount token from the TokenRequest API (``kubectl create token``).

        With ``create``, the namespace and the ServiceAccount are created when missing.  The token
        stops authenticating when the ServiceAccount is deleted.  ``expiration_seconds`` >= 600.
        """
        if create:
            self.create_namespace(namespace)
            sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
            response = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", sa)
            if not response.ok and response.status != 409:
                raise ControlPlaneError(f"creating ServiceAccount {namespace}/{name} -> {response.status}")
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        response = self._ensure("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
        return str(response.body["status"]["token"])

    def _service_account_token_for(self, user: str) -> str | None:
        """A (cached) TokenRequest token for ``system:serviceaccount:<ns>:<name>``, else None."""
        match = _SA_USER.match(user)
        if match is None:
            return None
        token = self._issued_tokens.get(user)
        if token is None:
            token = self.service_account_token(match.group(1), match.group(2))
            self._issued_tokens[user] = token
        return token

    def _forget_tokens(self, namespace: str) -> None:
        """Drop cached tokens of ServiceAccounts in ``namespace`` (deleted with it)."""
        prefix = f"system:serviceaccount:{namespace}:"
        for user in [user for user in self._issued_tokens if user.startswith(prefix)]:
            del self._issued_tokens[user]


class ControlPlane(_ClusterBase):
    """etcd + kube-apiserver 1.20 on 127.0.0.1, for the lifetime of a test session.

    Example::

        with ControlPlane(extra_users=dict([service_account_user("ops", "offload")])) as cp:
            cp.kubectl("get", "namespaces", check=True)
            env = {"KUBECONFIG": str(cp.kubeconfig_for("system:serviceaccount:ops:offload"))}

    ``extra_users`` maps user names to their groups; each gets a static bearer token (the token
    file is read once at start-up, so users cannot be added afterwards: use
    :meth:`service_account_token` for identities decided later).  The admin user is
    ``e2e-admin`` in ``system:masters``.
    """

    ADMIN_USER = "e2e-admin"

    def __init__(
        self,
        *,
        extra_users: Mapping[str, Sequence[str]] | None = None,
        apiserver_binary: Path | None = None,
        etcd_binary: Path | None = None,
        kubectl_binary: Path | None = None,
        startup_timeout: float = 60.0,
        keep_workdir: bool = False,
    ) -> None:
        self._apiserver_binary = apiserver_binary or default_apiserver_binary()
        self._etcd_binary = etcd_binary or default_etcd_binary()
        self._kubectl_binary = kubectl_binary or default_kubectl_binary()
        self._startup_timeout = startup_timeout
        self._keep_workdir = keep_workdir
        users = dict(extra_users or {})
        if self.ADMIN_USER in users:
            raise ValueError(f"{self.ADMIN_USER} is reserved for the admin user")
        for user_name in users:
            if not user_name or "," in user_name or '"' in user_name or "\n" in user_name:
                raise ValueError(f"user name {user_name!r} cannot go into a static token file")
        self._groups: dict[str, tuple[str, ...]] = {name: tuple(groups) for name, groups in users.items()}
        self._groups[self.ADMIN_USER] = ("system:masters",)
        self._tokens: dict[str, str] = {}
        self._issued_tokens = {}
        self._workdir: Path | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._server: str | None = None
        self._etcd_url: str | None = None
        self._kubeconfig: Path | None = None
        self.startup_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._apiserver is not None and self._apiserver.poll() is None

    def start(self) -> Self:
        """Start etcd and kube-apiserver, wait for ``/readyz``, write the admin kubeconfig."""
        if self._workdir is not None:
            raise ControlPlaneError("already started")
        for binary, hint in (
            (self._apiserver_binary, f"run `make kube-apiserver` ({BUILD_SCRIPT})"),
            (self._etcd_binary, "install Debian's etcd-server package"),
        ):
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                raise ControlPlaneError(f"{binary} is missing: {hint}")
        began = time.monotonic()
        self._workdir = Path(tempfile.mkdtemp(prefix="iceberg-offload-e2e-"))
        atexit.register(self.stop)
        try:
            self._write_credentials()
            for attempt in range(3):
                try:
                    self._start_processes()
                    break
                except ControlPlaneError as err:
                    self._stop_processes()
                    if "address already in use" not in str(err) or attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, then SIGKILL); remove the temporary directory."""
        atexit.unregister(self.stop)
        self._stop_processes()
        workdir, self._workdir = self._workdir, None
        if workdir is not None and not self._keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        self._server = self._etcd_url = self._kubeconfig = None
        self._issued_tokens.clear()

    # -- public properties ----------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user ``e2e-admin`` in ``system:masters``, CA-verified TLS)."""
        if self._kubeconfig is None:
            raise ControlPlaneError("not started")
        return self._kubeconfig

    @property
    def admin_token(self) -> str:
        return self._tokens[self.ADMIN_USER]

    @property
    def ca_file(self) -> Path:
        """The CA that signed the serving certificate (for clients that verify TLS)."""
        return self._require_workdir() / "pki" / "ca.crt"

    @property
    def workdir(self) -> Path:
        """The temporary directory holding data, certificates, tokens, kubeconfigs and logs."""
        return self._require_workdir()

    @property
    def etcd_url(self) -> str:
        if self._etcd_url is None:
            raise ControlPlaneError("not started")
        return self._etcd_url

    @property
    def users(self) -> Mapping[str, tuple[str, ...]]:
        """Every static user (admin included) and its groups."""
        return dict(self._groups)

    @property
    def apiserver_log(self) -> Path:
        return self._require_workdir() / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self._require_workdir() / "etcd.log"

    def token_for(self, user: str) -> str:
        """The bearer token of static ``user``.

        A name of the form ``system:serviceaccount:<ns>:<name>`` that was not declared as a
        static user gets a TokenRequest token instead (the ServiceAccount is created if missing),
        which is what :class:`ExistingCluster` does too: tests stay portable to kind.
        """
        if user in self._tokens:
            return self._tokens[user]
        token = self._service_account_token_for(user)
        if token is not None:
            return token
        raise ControlPlaneError(f"no static user {user!r}: declare it in ControlPlane(extra_users=...)")

    def delete_namespace(self, name: str) -> None:
        """Delete namespace ``name`` completely, doing the namespace controller's job.

        No kube-controller-manager runs, so a deleted namespace would stay ``Terminating`` with
        its objects still served.  This deletes every namespaced object in it (stripping
        finalizers that nobody is left to remove, e.g. a stopped kopf operator's), then finalizes
        the namespace so that it disappears.  Objects created in it afterwards are refused (the
        namespace is Terminating first), so a still-running operator cannot leave new ones.
        """
        self._forget_tokens(name)
        response = self.request("DELETE", f"/api/v1/namespaces/{name}")
        if response.status == 404:
            return
        if not response.ok:
            raise ControlPlaneError(f"deleting namespace {name} -> {response.status}: {response.text[:500]}")

        def purge(collection: tuple[str, str]) -> None:
            prefix, plural = collection
            listing = self.request("GET", f"{prefix}/namespaces/{name}/{plural}")
            if not listing.ok:
                return
            for item in listing.body.get("items") or []:
                url = f"{prefix}/namespaces/{name}/{plural}/{item['metadata']['name']}"
                if item["metadata"].get("finalizers"):
                    self.request(
                        "PATCH",
                        url,
                        {"metadata": {"finalizers": None}},
                        content_type="application/merge-patch+json",
                    )
                self.request("DELETE", url + "?gracePeriodSeconds=0")  # no kubelet to wait for

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(purge, self._namespaced_collections()))
        namespace = self.request("GET", f"/api/v1/namespaces/{name}")
        if namespace.status == 404:
            return
        body = namespace.body
        body["spec"] = {"finalizers": []}
        finalized = self.request("PUT", f"/api/v1/namespaces/{name}/finalize", body)
        if not finalized.ok and finalized.status not in (404, 409):
            raise ControlPlaneError(f"finalizing namespace {name} -> {finalized.status}: {finalized.text[:500]}")

    # -- internals --------------------------------------------------------------------------------

    def _endpoint(self) -> _Endpoint:
        if self._server is None:
            raise ControlPlaneError("not started")
        return _Endpoint(server=self._server, ca_file=self.ca_file, token=self.admin_token)

    def _kubectl_extra_args(self) -> list[str]:
        # A private discovery cache: ports are reused across sessions by different servers.
        return ["--cache-dir", str(self._require_workdir() / "kubectl-cache")]

    def _namespaced_collections(self) -> list[tuple[str, str]]:
        """(group-version prefix, plural) of every namespaced resource that can be listed and deleted."""
        prefixes = ["/api/v1"]
        groups = self._ensure("GET", "/apis").body
        for group in groups.get("groups") or []:
            prefixes.append(f"/apis/{group['preferredVersion']['groupVersion']}")
        with ThreadPoolExecutor(max_workers=8) as pool:
            discovered = list(pool.map(lambda prefix: self.request("GET", prefix), prefixes))
        collections = []
        for prefix, resources in zip(prefixes, discovered, strict=True):
            if not resources.ok:
                continue
            for resource in resources.body.get("resources") or []:
                verbs = set(resource.get("verbs") or [])
                if resource.get("namespaced") and "/" not in resource["name"] and {"list", "delete"} <= verbs:
                    if prefix == "/api/v1" and resource["name"] == "events":
                        continue  # events.k8s.io/v1 lists the same objects
                    collections.append((prefix, resource["name"]))
        return collections

    def _write_credentials(self) -> None:
        workdir = self._require_workdir()
        pki = workdir / "pki"
        pki.mkdir(mode=0o700)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _run(
            ["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
             "-subj", "/CN=iceberg-offload-e2e-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            cwd=pki,
        )  # fmt: skip
        _run(["openssl", "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
              "-subj", "/CN=127.0.0.1"], cwd=pki)  # fmt: skip
        (pki / "server.ext").write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _run(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
              "-CAcreateserial", "-days", "7", "-extfile", "server.ext", "-out", "server.crt"], cwd=pki)  # fmt: skip
        # The ServiceAccount token signing key (RSA, as kube-apiserver's defaults expect).
        _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
              "-out", "sa.key"], cwd=pki)  # fmt: skip
        _run(["openssl", "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"], cwd=pki)
        for path in pki.iterdir():
            path.chmod(0o600)
        # Static token file: token,user,uid,"group1,group2"
        rows = []
        for user, groups in self._groups.items():
            token = secrets.token_urlsafe(32)
            self._tokens[user] = token
            rows.append(f'{token},{user},{user},"{",".join(groups)}"')
        _write_private(workdir / "tokens.csv", "\n".join(rows) + "\n")

    def _spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._require_workdir(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def _start_processes(self) -> None:
        workdir = self._require_workdir()
        pki = workdir / "pki"
        deadline = time.monotonic() + self._startup_timeout
        client_port, peer_port, secure_port = _free_port(), _free_port(), _free_port()
        self._etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        shutil.rmtree(workdir / "etcd-data", ignore_errors=True)
        self._etcd = self._spawn(
            [
                str(self._etcd_binary),
                "--name=e2e",
                f"--data-dir={workdir / 'etcd-data'}",
                f"--listen-client-urls={self._etcd_url}",
                f"--advertise-client-urls={self._etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--logger=zap",
                "--log-level=warn",
            ],
            self.etcd_log,
        )
        self._wait_for("etcd", self._etcd, self.etcd_log, deadline, self._etcd_healthy)

        self._server = f"https://127.0.0.1:{secure_port}"
        self._apiserver = self._spawn(
            [
                str(self._apiserver_binary),
                f"--etcd-servers={self._etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={secure_port}",
                "--insecure-port=0",  # 1.20 still serves an unauthenticated port 8080 by default
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--token-auth-file={workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",
                "--disable-admission-plugins=ServiceAccount",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--v=0",
            ],
            self.apiserver_log,
        )
        self._wait_for("kube-apiserver", self._apiserver, self.apiserver_log, deadline, self._apiserver_ready)
        self._kubeconfig = self.kubeconfig_for_token(self.admin_token, name=self.ADMIN_USER)

    def _wait_for(
        self,
        what: str,
        proc: subprocess.Popen[bytes],
        log: Path,
        deadline: float,
        probe: Callable[[], bool],
    ) -> None:
        while True:
            if proc.poll() is not None:
                raise ControlPlaneError(f"{what} exited with {proc.returncode}; last log lines:\n{_tail(log)}")
            if probe():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} not ready after {self._startup_timeout:.0f}s; last log lines:\n{_tail(log)}"
                )
            time.sleep(0.1)

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self._etcd_url}/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        try:
            return self.request("GET", "/readyz", timeout=2).status == 200
        except (OSError, ssl.SSLError):
            return False

    def _stop_processes(self) -> None:
        for attr in ("_apiserver", "_etcd"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            setattr(self, attr, None)
            if proc is not None:
                _terminate_group(proc)


def _terminate_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``proc``; SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    # Anything else left in the group (nothing is expected) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class ExistingCluster(_ClusterBase):
    """A cluster someone else runs (kind), reached through a kubeconfig's current context.

    Only ServiceAccount identities are available (``token_for("system:serviceaccount:ns:name")``
    goes through TokenRequest); static users exist only on :class:`ControlPlane`.
    """

    def __init__(
        self,
        *,
        kubeconfig: Path | None = None,
        require_context_prefix: str | None = "kind-",
        kubectl_binary: Path | None = None,
    ) -> None:
        self._kubectl_binary = kubectl_binary or default_kubectl_binary()
        self._workdir = Path(tempfile.mkdtemp(prefix="iceberg-offload-e2e-kind-"))
        self._issued_tokens = {}
        atexit.register(self.close)
        env_config = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        self._kubeconfig_path = kubeconfig or Path(env_config or Path.home() / ".kube" / "config")
        view = subprocess.run(
            [str(self._kubectl_binary), "--kubeconfig", str(self._kubeconfig_path),
             "config", "view", "--minify", "--raw", "-o", "json"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if view.returncode != 0:
            self.close()
            raise ControlPlaneError(f"cannot read kubeconfig {self._kubeconfig_path}: {view.stderr.strip()}")
        config = json.loads(view.stdout)
        self.context: str = config.get("current-context") or ""
        if require_context_prefix is not None and not self.context.startswith(require_context_prefix):
            self.close()
            raise ControlPlaneError(
                f"refusing to run e2e tests against context {self.context!r} of {self._kubeconfig_path}: "
                f"its name does not start with {require_context_prefix!r} (not a test cluster)"
            )
        self._endpoint_value = self._parse(config)

    def close(self) -> None:
        atexit.unregister(self.close)
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def stop(self) -> None:
        """Forget the temporary files; the cluster itself is left running."""
        self.close()

    @property
    def kubeconfig(self) -> Path:
        return self._kubeconfig_path

    def token_for(self, user: str) -> str:
        token = self._service_account_token_for(user)
        if token is None:
            raise ControlPlaneError(
                f"{user!r}: only system:serviceaccount:<ns>:<name> users exist on an existing cluster"
            )
        return token

    def _endpoint(self) -> _Endpoint:
        return self._endpoint_value

    def _parse(self, config: Mapping[str, Any]) -> _Endpoint:
        cluster = (config.get("clusters") or [{}])[0].get("cluster") or {}
        user = (config.get("users") or [{}])[0].get("user") or {}
        workdir = self._require_workdir()

        def materialize(data_key: str, path_key: str, source: Mapping[str, Any], file_name: str) -> Path | None:
            if source.get(data_key):
                return _write_private(workdir / file_name, base64.b64decode(source[data_key]).decode())
            if source.get(path_key):
                return Path(str(source[path_key]))
            return None

        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(str(user["tokenFile"])).read_text().strip()
        return _Endpoint(
            server=str(cluster.get("server", "")),
            ca_file=materialize("certificate-authority-data", "certificate-authority", cluster, "ca.crt"),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            token=str(token) if token else None,
            client_cert=materialize("client-certificate-data", "client-certificate", user, "client.crt"),
            client_key=materialize("client-key-data", "client-key", user, "client.key"),
        )
