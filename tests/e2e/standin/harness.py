"""The test side of the operator's e2e tests: processes, manifests, data and waiting.

* :class:`StandInProcess` starts the Spark Operator stand-in (``python -m standin``, see
  :mod:`.sparkop`) and talks to it: its ClickHouse over HTTP (clickhouse-connect, with the
  password), its Iceberg catalog through pyiceberg, its control endpoint (Iceberg DDL, holding
  runs, what it executed).
* :class:`OperatorProcess` runs the operator exactly as its container does:
  ``kopf run -m iceberg_offload.operator.handlers --namespace <ns> --standalone`` with ``KUBECONFIG`` and
  ``ICEBERG_OFFLOAD_RECONCILE_SECONDS``; SIGKILL for crash tests.
* :class:`Scenario` is one test's namespace (labelled for the stand-in), its own ClickHouse
  database and Iceberg namespace, its operator(s), and helpers to read and wait on the API.
* The runbook's manifests (``examples/``) rewritten for the local stack; trades from
  :mod:`iceberg_offload.local.generator`, at lower rates (fast runs).

Secrets: the ClickHouse password is generated per session; it goes to the stand-in on its stdin
(not its command line or environment) and to Kubernetes as Secrets. Every diagnostic text a
helper puts into a failure message is scrubbed of it.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Self, TypeVar

import pyarrow as pa
import pytest
import yaml
from clickhouse_connect.driver.client import Client
from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core.settings import CatalogSettings, ClickHouseSettings
from iceberg_offload.local.generator import binance_trades, kraken_trades
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from .sparkop import NAMESPACE_LABEL

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]
E2E_DIR = REPO / "tests" / "e2e"
EXAMPLES = REPO / "examples"
OFFLOAD_CRD = REPO / "crds" / "offloadtables.offload.k2.io.yaml"
OFFLOAD_CRD_NAME = "offloadtables.offload.k2.io"
BACKFILL_CRD = REPO / "crds" / "offloadbackfills.offload.k2.io.yaml"
BACKFILL_CRD_NAME = "offloadbackfills.offload.k2.io"
GROUP_VERSION = "offload.k2.io/v1alpha1"
SPARK_GROUP_VERSION = "sparkoperator.k8s.io/v1beta2"
EVERY_MINUTE = "* * * * *"
#: How long one offload may take, queued on the stand-in's one Spark slot and run, on a busy
#: machine (the session's first one also pays Spark's warm-up): a bound for waits, never a claim.
RUN_TIMEOUT = 300.0
BRONZE = ("bronze_trades_binance", "bronze_trades_kraken")


def far_away_schedule(today: date) -> str:
    """Once a year, on the day half a year from ``today``: no slot falls during a test session,
    whatever the date (a fixed day, such as 1 January, is due in a session that spans it and is
    less than a day away on the day before)."""
    day = today + timedelta(days=182)
    return f"0 0 {min(day.day, 28)} {day.month} *"


FAR_AWAY = far_away_schedule(datetime.now(UTC).date())


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _die_with_parent() -> None:
    """``preexec_fn``: SIGTERM the child when the test process dies (Linux; tied to the forking
    thread, so start children from pytest's main thread, as fixtures do)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):  # anything left in the group (Spark's JVM)
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without settings of the offload (each child gets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICEBERG_OFFLOAD_")}
    env.update(extra)
    return env


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll until ``probe`` returns something truthy (returned); fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = diagnostics() if diagnostics else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f"\n{detail}" if detail else ""))
        time.sleep(interval)


# --- the stand-in ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """What the stand-in did with one SparkApplication (see ``sparkop.Run``)."""

    namespace: str
    name: str
    uid: str
    table: str
    state: str
    seen_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    outcome: str | None
    rows: int | None
    error: str | None
    log_file: str | None


class StandInProcess:
    """The stand-in, started once per test session (Spark start-up is expensive)."""

    def __init__(self, proc: subprocess.Popen[bytes], ready: Mapping[str, Any], log: Path, password: str) -> None:
        self.proc = proc
        self.log = log
        self.clickhouse_port = int(ready["clickhouse_port"])
        self.clickhouse_user = str(ready["clickhouse_user"])
        self.control_port = int(ready["control_port"])
        self.catalog = CatalogSettings(**ready["catalog"])
        self.startup_seconds = float(ready["startup_seconds"])
        self._password = password
        # The Iceberg catalog's password (the SQLite catalog ignores it): one per session.
        self.catalog_password = os.urandom(12).hex()
        self._iceberg: Catalog | None = None

    @classmethod
    def start(cls, *, kubeconfig: Path, state_dir: Path, password: str, timeout: float = 180.0) -> StandInProcess:
        state_dir.mkdir(parents=True, exist_ok=True)
        ready_file = state_dir / "ready.json"
        log = state_dir / "standin.log"
        env = _clean_env(PYTHONPATH=os.pathsep.join(filter(None, [str(E2E_DIR), os.environ.get("PYTHONPATH")])))
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "standin", "--state-dir", str(state_dir), "--kubeconfig", str(kubeconfig),
                 "--ready-file", str(ready_file), "--iceberg-namespace", "cold"],
                cwd=state_dir,  # Spark's default spark-warehouse/ and the like land here
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        # The password on stdin: not in the command line, not in /proc/<pid>/environ.
        assert proc.stdin is not None
        proc.stdin.write(password.encode() + b"\n")
        proc.stdin.close()
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the stand-in exited with {proc.returncode}:\n{scrub(_tail(log), [password])}")
            if time.monotonic() > deadline:
                _kill_group(proc)
                raise RuntimeError(f"the stand-in was not ready after {timeout:.0f}s:\n{scrub(_tail(log), [password])}")
            time.sleep(0.2)
        return cls(proc, json.loads(ready_file.read_text()), log, password)

    def stop(self) -> None:
        """SIGTERM to the stand-in alone (it stops Spark cleanly), then the rest of its group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        _kill_group(self.proc, signal.SIGKILL, grace=10)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"the Spark Operator stand-in exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_text(self) -> str:
        """The raw log (may only be compared against secrets, never printed unscrubbed)."""
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return scrub(_tail(self.log, lines), [self._password])

    # --- data side -------------------------------------------------------------------------

    @property
    def password(self) -> str:
        return self._password

    def clickhouse_settings(self, database: str = "default") -> ClickHouseSettings:
        return ClickHouseSettings(
            host="127.0.0.1",
            port=self.clickhouse_port,
            user=self.clickhouse_user,
            password=self._password,
            database=database,
        )

    def clickhouse(self, database: str = "default") -> Client:
        return clickhouse_io.connect(self.clickhouse_settings(database))

    def iceberg(self) -> Catalog:
        if self._iceberg is None:
            self._iceberg = iceberg_io.open_catalog(self.catalog)
        return self._iceberg

    def iceberg_table(self, namespace: str, table: str) -> Table:
        """The Iceberg table as committed now (loaded afresh)."""
        return iceberg_io.load_table(self.iceberg(), f"{namespace}.{table}")

    # --- control endpoint -------------------------------------------------------------------

    def _control(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise RuntimeError(f"stand-in {method} {path} -> {err.code}: {detail}") from err

    def iceberg_ddl(self, namespace: str, tables: Sequence[str] | None = None) -> None:
        """Create the Iceberg namespace and (some of) the nine tables, through the stand-in's Spark."""
        self._control("POST", "/iceberg", {"namespace": namespace, "tables": list(tables) if tables else None})

    def hold(self, namespace: str, table: str | None = None) -> None:
        """New runs of the namespace (or of one OffloadTable) stay RUNNING until released."""
        self._control("POST", "/hold", {"namespace": namespace, "table": table, "hold": True})

    def release(self, namespace: str, table: str | None = None) -> None:
        self._control("POST", "/hold", {"namespace": namespace, "table": table, "hold": False})

    def runs(self, namespace: str | None = None) -> list[RunRecord]:
        records = [RunRecord(**r) for r in self._control("GET", "/runs", timeout=10)]
        return sorted((r for r in records if namespace is None or r.namespace == namespace), key=lambda r: r.seen_at)


# --- the operator ------------------------------------------------------------------------


class OperatorProcess:
    """``kopf run -m iceberg_offload.operator.handlers --namespace <ns> --standalone``, as the container runs it."""

    def __init__(self, namespace: str, kubeconfig: Path, log: Path, *, reconcile_seconds: int = 1) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.log = log
        self.reconcile_seconds = reconcile_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.liveness_port = 0
        self.metrics_port = 0

    def start(self, timeout: float = 60.0) -> Self:
        kopf = Path(sys.executable).parent / "kopf"
        self.liveness_port = _free_port()
        self.metrics_port = _free_port()
        env = _clean_env(
            KUBECONFIG=str(self.kubeconfig),
            ICEBERG_OFFLOAD_RECONCILE_SECONDS=str(self.reconcile_seconds),
            ICEBERG_OFFLOAD_METRICS_PORT=str(self.metrics_port),  # on 127.0.0.1, the default address
        )
        with self.log.open("ab") as out:
            out.write(f"--- kopf run --namespace {self.namespace} ({datetime.now(UTC).isoformat()})\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [str(kopf), "run", "-m", "iceberg_offload.operator.handlers", "--namespace", self.namespace,
                 "--standalone", "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        wait_for(self._live, timeout=timeout, what=f"the operator's liveness endpoint\n{self.log_tail()}")
        return self

    def _live(self) -> bool:
        self.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"the operator exited with {self.proc.returncode}:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the operator dies mid-work, as on a node failure or OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc, signal.SIGTERM, grace=15)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log, lines)


# --- manifests ---------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def to_yaml(documents: Iterable[Mapping[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(dict(d), sort_keys=False) for d in documents)


def connection_manifests(standin: StandInProcess, catalog_password: str) -> list[dict[str, Any]]:
    """``examples/00-connections.yaml`` for the local stack: the ConfigMap describes the stand-in's
    catalog (SQLite + warehouse); the Secrets hold the session's passwords."""
    documents = load_yaml_documents(EXAMPLES / "00-connections.yaml")
    for doc in documents:
        if doc["kind"] == "ConfigMap":
            data = doc["data"]
            assert data["ICEBERG_OFFLOAD_CATALOG_NAME"] == standin.catalog.name, "the example's catalog name changed"
            data["ICEBERG_OFFLOAD_CATALOG_TYPE"] = standin.catalog.type
            data["ICEBERG_OFFLOAD_CATALOG_URI"] = standin.catalog.uri
            data["ICEBERG_OFFLOAD_CATALOG_WAREHOUSE"] = standin.catalog.warehouse
        elif doc["kind"] == "Secret":
            name = doc["metadata"]["name"]
            doc["stringData"]["password"] = standin.password if name == "clickhouse-offload" else catalog_password
    return documents


def runbook_manifests() -> list[dict[str, Any]]:
    """The nine OffloadTables of the runbook, as in ``examples/`` (layer order)."""
    return [d for p in sorted(EXAMPLES.glob("[1-9]*.yaml")) for d in load_yaml_documents(p)]


def localize(
    table: Mapping[str, Any],
    standin: StandInProcess,
    *,
    schedule: str = EVERY_MINUTE,
    safety_buffer: str = "10s",
    database: str | None = None,
    target_namespace: str | None = None,
    name: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An OffloadTable manifest pointed at the local stack (host, port) with a fast schedule."""
    doc = copy.deepcopy(dict(table))
    if name is not None:
        doc["metadata"]["name"] = name
    s = doc["spec"]
    s["source"]["connection"]["host"] = "127.0.0.1"
    s["source"]["connection"]["port"] = standin.clickhouse_port
    s["schedule"] = schedule
    s["safetyBuffer"] = safety_buffer
    if database is not None:
        s["source"]["database"] = database
    if target_namespace is not None:
        s["target"]["namespace"] = target_namespace
    s.update(spec)
    return doc


def bronze_table(standin: StandInProcess, name: str, **kwargs: Any) -> dict[str, Any]:
    """An OffloadTable like the runbook's bronze-trades-binance, named ``name``."""
    (example,) = load_yaml_documents(EXAMPLES / "10-bronze-trades-binance.yaml")
    return localize(example, standin, name=name, **kwargs)


# --- trades ------------------------------------------------------------------------------

BINANCE_RATE = 1.0  # trades per second (the generator's default is 8: runs stay small here)
KRAKEN_RATE = 0.5


def feed_trades(clickhouse: Client, start: datetime, end: datetime, *, seed: int = 7) -> dict[str, int]:
    """Trades in (start, end] into both bronze tables of the client's database; silver and the
    gold candles follow through the materialized views."""
    inserted = {}
    for table, make, rate in (
        ("bronze_trades_binance", binance_trades, BINANCE_RATE),
        ("bronze_trades_kraken", kraken_trades, KRAKEN_RATE),
    ):
        first = int(clickhouse.query(f"SELECT max(sequence) FROM {table}").result_rows[0][0] or 0) + 1
        trades: pa.Table = make(start, end, rate=rate, first_sequence=first, seed=seed)
        if trades.num_rows:
            clickhouse.insert_arrow(table, trades)
        inserted[table] = trades.num_rows
    return inserted


class Feeder:
    """Live trades: every ``interval`` seconds, the trades of (last end, now] (a background thread).

    Rows arrive at most about ``interval`` seconds after their timestamp, well inside the
    safety buffer, so no row ever lands at or below a watermark that was already committed.
    """

    def __init__(self, clickhouse: Client, start: datetime, *, interval: float = 1.0, seed: int = 11) -> None:
        self.clickhouse = clickhouse
        self.last = start
        self.interval = interval
        self.seed = seed
        self.inserted = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trade-feeder", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            now = datetime.now(UTC)
            try:
                self.inserted += sum(feed_trades(self.clickhouse, self.last, now, seed=self.seed).values())
                self.last = now
                self.seed += 1
            except BaseException as exc:
                self.error = exc
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def check(self) -> None:
        if self.error is not None:
            pytest.fail(f"the trade feeder failed: {self.error}")


# --- reading the API ---------------------------------------------------------------------


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def minute_of(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def next_minute(value: datetime) -> datetime:
    return minute_of(value) + timedelta(minutes=1)


def slot_of(app: Mapping[str, Any]) -> datetime:
    """The schedule slot a SparkApplication was created for (its ``offload.k2.io/slot`` label)."""
    label = app["metadata"]["labels"]["offload.k2.io/slot"]
    return datetime.strptime(label, "%Y%m%d%H%M").replace(tzinfo=UTC)


def created_at(obj: Mapping[str, Any]) -> datetime:
    return parse_time(obj["metadata"]["creationTimestamp"])


#: The events the operator posts when it records a finished run, by the outcome it records.
FINISHED_EVENTS = {"RunSucceeded": "Succeeded", "RunSkipped": "Skipped", "RunFailed": "Failed"}


@dataclass
class Scenario:
    """One test's world: a namespace the stand-in serves, a ClickHouse database, an Iceberg
    namespace (all named after the test), and the operator(s) started for it."""

    cluster: Any  # cluster.Cluster
    standin: StandInProcess
    namespace: str
    database: str
    iceberg_namespace: str
    workdir: Path
    catalog_password: str
    operators: list[OperatorProcess] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        cluster: Any,
        standin: StandInProcess,
        label: str,
        workdir: Path,
        *,
        database: str | None = None,
        iceberg_namespace: str | None = None,
    ) -> Scenario:
        """A new namespace (and names for a ClickHouse database and an Iceberg namespace, created
        by :meth:`create_sources`; pass existing ones to use those instead)."""
        suffix = os.urandom(3).hex()
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:30]
        namespace = f"e2e-op-{slug}-{suffix}"
        ident = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:30] + f"_{suffix}"
        cluster.create_namespace(namespace, labels={"iceberg-offload.e2e/test": "true", NAMESPACE_LABEL: "true"})
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(
            cluster,
            standin,
            namespace,
            database or ident,
            iceberg_namespace or ident,
            workdir,
            catalog_password=standin.catalog_password,
        )

    # --- data ------------------------------------------------------------------------------

    def clickhouse(self) -> Client:
        client = self.standin.clickhouse(self.database)
        self.clients.append(client)
        return client

    def create_sources(self, *, iceberg_tables: Sequence[str] | None = ("bronze_trades_binance",)) -> Client:
        """This scenario's ClickHouse database (all nine sources with their views and its own
        offload_watermarks) and its Iceberg namespace with ``iceberg_tables`` (None: all nine)."""
        admin = self.standin.clickhouse()
        try:
            admin.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        finally:
            admin.close()
        client = self.clickhouse()
        clickhouse_io.apply_ddl(client)
        self.standin.iceberg_ddl(self.iceberg_namespace, iceberg_tables)
        return client

    # --- Kubernetes ------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input)  # type: ignore[no-any-return]

    def apply(self, documents: Iterable[Mapping[str, Any]]) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -``; fails the test if kubectl does."""
        done = self.kubectl("apply", "-f", "-", input=to_yaml(documents))
        if done.returncode != 0:
            pytest.fail(f"kubectl apply failed: {self.scrub(done.stderr)}")
        return done

    def apply_connections(self) -> None:
        self.apply(connection_manifests(self.standin, self.catalog_password))

    def start_operator(self, *, reconcile_seconds: int = 1) -> OperatorProcess:
        log = self.workdir / f"operator-{self.namespace}.log"
        operator = OperatorProcess(self.namespace, self.cluster.kubeconfig, log, reconcile_seconds=reconcile_seconds)
        self.operators.append(operator)
        return operator.start()

    def _get(self, path: str) -> Any:
        response = self.cluster.request("GET", path)
        if not response.ok:
            raise AssertionError(f"GET {path} -> {response.status}: {response.text[:300]}")
        return response.body

    def table(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self._get(f"/apis/{GROUP_VERSION}/namespaces/{self.namespace}/offloadtables/{name}")
        return body

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.table(name).get("status") or {})

    def tables(self) -> list[dict[str, Any]]:
        return list(self._get(f"/apis/{GROUP_VERSION}/namespaces/{self.namespace}/offloadtables")["items"])

    def apps(self, table: str | None = None) -> list[dict[str, Any]]:
        """The SparkApplications of the namespace (of one OffloadTable), oldest first."""
        selector = f"?labelSelector=offload.k2.io%2Ftable%3D{table}" if table else ""
        items = self._get(f"/apis/{SPARK_GROUP_VERSION}/namespaces/{self.namespace}/sparkapplications{selector}")
        return sorted(items["items"], key=lambda a: (a["metadata"]["creationTimestamp"], a["metadata"]["name"]))

    def app_names(self, table: str | None = None) -> list[str]:
        return [a["metadata"]["name"] for a in self.apps(table)]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        items = self._get(f"/api/v1/namespaces/{self.namespace}/events")["items"]
        return [e for e in items if name is None or e["involvedObject"].get("name") == name]

    def recorded_outcome(self, table: str, run: str) -> str | None:
        """The outcome the operator recorded for the finished run ``run`` (None: not recorded yet).

        From ``status.lastRun`` while it is that run, else from the event posted when it was
        recorded: on a fast schedule a newer run may already have finished and taken lastRun."""
        last = self.status(table).get("lastRun") or {}
        if last.get("name") == run:
            return str(last.get("outcome"))
        for event in self.events(table):
            outcome = FINISHED_EVENTS.get(event.get("reason", ""))
            if outcome and re.match(rf"{re.escape(run)}[ :]", event.get("message") or ""):
                return outcome
        return None

    def patch_table(self, name: str, patch: Mapping[str, Any]) -> None:
        """``kubectl patch offloadtable <name> --type merge``."""
        done = self.kubectl("patch", "offloadtable", name, "--type", "merge", "-p", json.dumps(patch))
        if done.returncode != 0:
            pytest.fail(f"kubectl patch failed: {self.scrub(done.stderr)}")

    def annotate(self, name: str, key: str, value: str) -> None:
        done = self.kubectl("annotate", "--overwrite", "offloadtable", name, f"{key}={value}")
        if done.returncode != 0:
            pytest.fail(f"kubectl annotate failed: {self.scrub(done.stderr)}")

    # --- waiting and failing clearly ---------------------------------------------------------

    def scrub(self, text: str) -> str:
        return scrub(text, [self.standin.password, self.catalog_password])

    def diagnostics(self, table: str | None = None) -> str:
        parts = []
        with contextlib.suppress(Exception):
            for item in self.tables():
                if table is None or item["metadata"]["name"] == table:
                    parts.append(f"OffloadTable {item['metadata']['name']} status: {json.dumps(item.get('status'))}")
        with contextlib.suppress(Exception):
            parts.append(
                "SparkApplications: "
                + ", ".join(
                    f"{a['metadata']['name']}={((a.get('status') or {}).get('applicationState') or {}).get('state')}"
                    for a in self.apps(table)
                )
            )
        with contextlib.suppress(Exception):
            parts.append(
                "stand-in runs: "
                + ", ".join(f"{r.name}:{r.state}:{r.error or ''}" for r in self.standin.runs(self.namespace))
            )
        for operator in self.operators[-1:]:
            parts.append(f"operator log (tail):\n{operator.log_tail(30)}")
        return self.scrub("\n".join(parts))

    def wait(self, probe: Callable[[], T | None], *, timeout: float, what: str, table: str | None = None) -> T:
        def checked() -> T | None:
            for operator in self.operators:
                if operator.proc is not None and operator is self.operators[-1]:
                    operator.check_alive()
            self.standin.check_alive()
            return probe()

        return wait_for(checked, timeout=timeout, what=what, diagnostics=lambda: self.diagnostics(table))

    def holds(self, probe: Callable[[], bool], *, seconds: float, what: str, table: str | None = None) -> None:
        """Assert that ``probe`` stays true for ``seconds`` (several reconcile ticks)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not probe():
                pytest.fail(f"expected {what}, but it stopped being so\n{self.diagnostics(table)}")
            time.sleep(0.25)

    def close(self) -> None:
        for operator in self.operators:
            operator.stop()
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.close()
        self.cluster.delete_namespace(self.namespace)
