"""The Spark Operator stand-in: plays the Kubeflow Spark Operator for the e2e tests.

No pods run on the local kube-apiserver, so this long-lived process does what the Spark
Operator and the kubelet would do for each SparkApplication the offload operator creates:

1. it notices the new object (a poll of the API every ``--poll-seconds``), only in namespaces
   labelled ``iceberg-offload.e2e/spark-standin=true`` and only for objects labelled
   ``app.kubernetes.io/managed-by=iceberg-offload``;
2. it writes the status through the ``/status`` subresource as the Spark Operator does:
   ``applicationState.state`` "" -> SUBMITTED -> RUNNING -> SUCCEEDING|FAILING -> COMPLETED|FAILED
   (``errorMessage`` on failure), ``driverInfo`` (without a ``podName``: there is no driver pod
   whose log could be read), ``submissionAttempts``, ``executionAttempts``,
   ``lastSubmissionAttemptTime``, ``terminationTime``, ``sparkApplicationId``, ``submissionID``;
3. it EXECUTES the application: the real offload job,
   ``iceberg_offload.job.cli.main(spec.arguments, spark=<this process's warm session>,
   settings=Settings.from_env(<the driver's environment>))``, with the environment resolved as a
   kubelet would (``env`` values, ``valueFrom.secretKeyRef`` read from the Secret,
   ``envFrom.configMapRef`` read from the ConfigMap; see :mod:`.kubelet`). The executors are the
   Python workers of the session: they get the *executor's* resolved environment through
   ``SparkContext.environment`` (that is how the ClickHouse password reaches them; this process
   itself never has it in ``os.environ``). The job's ``OFFLOAD_RESULT`` line decides COMPLETED
   or FAILED and fills ``errorMessage``.

Runs execute one at a time (one warm SparkSession, like a one-slot cluster); an application
waiting for the slot stays SUBMITTED. A deleted application is cancelled (before it starts, or
through ``cancelJobGroup`` while it runs). An application is executed at most once: they are
tracked by uid, and one seen with a status already written is left alone.

The process also owns the data side of the tests' local stack, which must live in one process:
the embedded ClickHouse behind its HTTP endpoint on 127.0.0.1 (one chdb data directory per
process) with a user and password, and the Spark session on a SQLite Iceberg catalog.

A small JSON control endpoint on 127.0.0.1 serves the tests (see :mod:`.harness`):

* ``GET /runs``: every application seen, with what happened to it;
* ``POST /iceberg`` ``{"namespace": ..., "tables": [...]}``: the Iceberg DDL through Spark;
* ``POST /hold`` ``{"namespace": ..., "table": ...|null, "hold": true|false}``: hold new runs of
  that namespace (or one OffloadTable of it) in RUNNING until released, so that tests can
  observe a run in flight; releasing lets held runs go on.

    python -m standin --state-dir DIR --kubeconfig FILE --ready-file FILE

The ClickHouse password is read from the first line of stdin: never from the command line or
the environment (``/proc/<pid>/environ`` keeps a process's initial environment for good).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .kubelet import EnvResolutionError, resolve_env

log = logging.getLogger("standin")

SPARK_GROUP, SPARK_VERSION, SPARK_PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
MANAGED_SELECTOR = "app.kubernetes.io/managed-by=iceberg-offload"
NAMESPACE_LABEL = "iceberg-offload.e2e/spark-standin"
TABLE_LABEL = "offload.k2.io/table"
CLICKHOUSE_USER = "offload"
# What the job reads from the environment in its executors (offload_job.PASSWORD_VARIABLE).
EXECUTOR_VARIABLES = frozenset({"ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD"})

# What the stand-in reports about each application (its own states, not the Spark Operator's).
QUEUED, HELD, RUNNING, COMPLETED, FAILED, CANCELLED, IGNORED = (
    "QUEUED",
    "HELD",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "IGNORED",
)


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Run:
    """One SparkApplication, as the stand-in handled it (served by ``GET /runs``)."""

    namespace: str
    name: str
    uid: str
    table: str
    state: str = QUEUED
    seen_at: float = field(default_factory=time.time)
    started_at: float | None = None  # execution start (the Spark slot taken), epoch seconds
    finished_at: float | None = None
    exit_code: int | None = None
    outcome: str | None = None  # the job's result: committed, skipped, failed
    rows: int | None = None
    error: str | None = None
    log_file: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    status_written: bool = field(default=False, repr=False)

    def record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("cancelled", "status_written")}


class _Tee(io.TextIOBase):
    """Writes to several text streams (the run's capture and its log file)."""

    def __init__(self, *streams: TextIO) -> None:
        self._streams = streams

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()


class _KubeReader:
    """ConfigMaps and Secrets for the kubelet-style environment resolution."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            return dict(self.core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            data = self.core.read_namespaced_secret(name, namespace).data or {}
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in data.items()}


class StandIn:
    """The Spark Operator's part: follow SparkApplications, execute them one at a time."""

    def __init__(self, *, spark: Any, catalog: Any, state_dir: Path, poll_seconds: float) -> None:
        self.spark = spark
        self.catalog = catalog  # the session's CatalogSettings (fixed when Spark started)
        self.state_dir = state_dir
        self.poll_seconds = poll_seconds
        api = client.ApiClient()
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.reader = _KubeReader(self.core)
        self.runs: dict[str, Run] = {}
        self.lock = threading.Lock()  # guards runs, holds, namespaces
        self.spark_slot = threading.Lock()  # one run (or DDL) on the session at a time
        self.holds: set[tuple[str, str | None]] = set()
        self._namespaces: dict[str, bool] = {}
        self._executor_keys: set[str] = set()
        self.stopping = threading.Event()

    # --- following the API -------------------------------------------------------------

    def _enabled(self, namespace: str) -> bool:
        with self.lock:
            known = self._namespaces.get(namespace)
        if known is not None:
            return known
        try:
            meta = self.core.read_namespace(namespace).metadata
            labels = (meta.labels if meta is not None else None) or {}
        except ApiException:
            return False
        enabled = labels.get(NAMESPACE_LABEL) == "true"
        with self.lock:
            self._namespaces[namespace] = enabled
        return enabled

    def poll_forever(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the API may be briefly unavailable; keep following
                log.warning("poll failed: %s", exc)
            self.stopping.wait(self.poll_seconds)

    def poll_once(self) -> None:
        listing: Any = self.custom.list_cluster_custom_object(
            SPARK_GROUP, SPARK_VERSION, SPARK_PLURAL, label_selector=MANAGED_SELECTOR
        )
        present: set[str] = set()
        for item in listing.get("items", []):
            meta = item["metadata"]
            uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
            present.add(uid)
            with self.lock:
                run = self.runs.get(uid)
            if run is not None:
                if meta.get("deletionTimestamp"):
                    self._cancel(run, "deleted")
                continue
            if not self._enabled(namespace):
                continue
            run = Run(namespace, name, uid, (meta.get("labels") or {}).get(TABLE_LABEL, ""))
            state = ((item.get("status") or {}).get("applicationState") or {}).get("state")
            with self.lock:
                self.runs[uid] = run
            if state:  # someone else's status already: never run an application twice
                run.state = IGNORED
                log.warning("%s/%s already has state %s: not executed", namespace, name, state)
                continue
            log.info("%s/%s: new SparkApplication (uid %s)", namespace, name, uid)
            threading.Thread(target=self._lifecycle, args=(run,), name=f"run-{name}", daemon=True).start()
        with self.lock:
            active = [r for r in self.runs.values() if r.state in (QUEUED, HELD, RUNNING)]
        for run in active:
            if run.uid not in present:
                self._cancel(run, "deleted")

    def _cancel(self, run: Run, why: str) -> None:
        if run.cancelled.is_set() or run.state not in (QUEUED, HELD, RUNNING):
            return
        log.info("%s/%s: %s while %s: cancelled", run.namespace, run.name, why, run.state)
        run.cancelled.set()
        if run.state == RUNNING:
            self.spark.sparkContext.cancelJobGroup(run.uid)

    def held(self, run: Run) -> bool:
        with self.lock:
            return (run.namespace, None) in self.holds or (run.namespace, run.table) in self.holds

    def set_hold(self, namespace: str, table: str | None, hold: bool) -> None:
        with self.lock:
            if hold:
                self.holds.add((namespace, table))
            else:
                self.holds.discard((namespace, table))

    # --- status ------------------------------------------------------------------------

    def _patch_status(self, run: Run, status: dict[str, Any]) -> bool:
        """Write status fields through /status; False when the application is gone (cancelled).

        A JSON patch that first tests metadata.uid: an object deleted and created again under
        the same name is another application, and never gets this one's status.
        """
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": run.uid}]
        if not run.status_written:
            ops.append({"op": "add", "path": "/status", "value": {"driverInfo": {}, **status}})
        else:
            ops += [{"op": "add", "path": f"/status/{key}", "value": value} for key, value in status.items()]
        try:
            self.custom.patch_namespaced_custom_object_status(
                SPARK_GROUP,
                SPARK_VERSION,
                run.namespace,
                SPARK_PLURAL,
                run.name,
                ops,
                _content_type="application/json-patch+json",
            )
        except ApiException as exc:
            if exc.status == 422 and self._get(run) is not None:
                raise  # the object is still ours: the status itself was refused
            if exc.status in (404, 409, 422):  # gone, or another object of that name now
                self._cancel(run, "gone")
                return False
            raise
        run.status_written = True
        return True

    def _get(self, run: Run) -> dict[str, Any] | None:
        try:
            item: Any = self.custom.get_namespaced_custom_object(
                SPARK_GROUP, SPARK_VERSION, run.namespace, SPARK_PLURAL, run.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if item["metadata"]["uid"] != run.uid or item["metadata"].get("deletionTimestamp"):
            return None
        return dict(item)

    # --- one application -----------------------------------------------------------------

    def _lifecycle(self, run: Run) -> None:
        try:
            self._lifecycle_steps(run)
        except Exception as exc:
            log.error("%s/%s: stand-in error: %s\n%s", run.namespace, run.name, exc, traceback.format_exc())
            run.state, run.error = FAILED, f"stand-in error: {exc}"
            with contextlib.suppress(Exception):
                self._patch_status(run, self._terminal("FAILED", run.error))

    def _lifecycle_steps(self, run: Run) -> None:
        app_id = f"spark-{uuid.uuid4().hex}"
        if not self._patch_status(
            run,
            {
                "applicationState": {"state": "SUBMITTED"},
                "submissionAttempts": 1,
                "executionAttempts": 0,
                "lastSubmissionAttemptTime": _now_rfc3339(),
                "submissionID": str(uuid.uuid4()),
            },
        ):
            run.state = CANCELLED
            return
        running = {"applicationState": {"state": "RUNNING"}, "executionAttempts": 1, "sparkApplicationId": app_id}
        if self.held(run):
            run.state = HELD
            if not self._patch_status(run, running):
                run.state = CANCELLED
                return
            log.info("%s/%s: held in RUNNING", run.namespace, run.name)
            while self.held(run) and not run.cancelled.is_set():
                time.sleep(0.05)
            if run.cancelled.is_set():
                run.state = CANCELLED
                return
            log.info("%s/%s: released", run.namespace, run.name)
        while not self.spark_slot.acquire(timeout=0.1):
            if run.cancelled.is_set():
                run.state = CANCELLED
                return
        try:
            if run.cancelled.is_set():
                run.state = CANCELLED
                return
            item = self._get(run)
            if item is None or (run.state != HELD and not self._patch_status(run, running)):
                run.state = CANCELLED
                return
            run.state, run.started_at = RUNNING, time.time()
            succeeded, message = self._execute(run, item)
        finally:
            self.spark_slot.release()
        run.finished_at = time.time()
        if run.cancelled.is_set():
            run.state = CANCELLED
            log.info("%s/%s: cancelled while running", run.namespace, run.name)
            return
        run.state = COMPLETED if succeeded else FAILED
        run.error = None if succeeded else message
        self._patch_status(run, {"applicationState": {"state": "SUCCEEDING" if succeeded else "FAILING"}})
        self._patch_status(run, self._terminal("COMPLETED" if succeeded else "FAILED", message))
        log.info("%s/%s: %s%s", run.namespace, run.name, run.state, "" if succeeded else f": {message}")

    @staticmethod
    def _terminal(state: str, message: str | None) -> dict[str, Any]:
        app_state: dict[str, Any] = {"state": state}
        if state == "FAILED":
            app_state["errorMessage"] = message or "driver failed"
        return {"applicationState": app_state, "terminationTime": _now_rfc3339()}

    def _execute(self, run: Run, item: Mapping[str, Any]) -> tuple[bool, str | None]:
        """Run the offload job on the warm session: (succeeded, error message)."""
        from iceberg_offload.core.result import ResultError, parse_result
        from iceberg_offload.core.settings import Settings, SettingsError
        from iceberg_offload.job.cli import main as offload_main

        spec = item.get("spec") or {}
        pod = f"{run.name}-driver"
        try:
            driver_env = resolve_env(
                spec.get("driver") or {}, namespace=run.namespace, pod_name=pod, reader=self.reader
            )
            executor_env = resolve_env(
                spec.get("executor") or {}, namespace=run.namespace, pod_name=f"{run.name}-exec-1", reader=self.reader
            )
        except EnvResolutionError as exc:
            return False, f"driver pod {pod} could not start: CreateContainerConfigError: {exc}"
        try:
            settings = Settings.from_env(driver_env)
        except SettingsError as exc:
            return False, f"driver failed: {exc}"
        mismatch = [
            f"{key} {getattr(settings.catalog, key)!r} (the session has {getattr(self.catalog, key)!r})"
            for key in ("name", "type", "uri", "warehouse")
            if getattr(settings.catalog, key) != getattr(self.catalog, key)
        ]
        if mismatch:
            return False, "stand-in: the catalog ConfigMap differs from the stand-in's Spark session: " + ", ".join(
                mismatch
            )
        arguments = [str(a) for a in spec.get("arguments") or []]
        self._set_executor_env(executor_env)
        log_path = self.state_dir / "runs" / run.namespace / f"{run.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        run.log_file = str(log_path)
        captured_out, captured_err = io.StringIO(), io.StringIO()
        context = self.spark.sparkContext
        context.setJobGroup(run.uid, f"{run.namespace}/{run.name}", interruptOnCancel=True)
        with log_path.open("w") as run_log:
            run_log.write(f"# {run.namespace}/{run.name} arguments: {json.dumps(arguments)}\n")
            run_log.flush()
            handler = logging.StreamHandler(run_log)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            job_logger = logging.getLogger("iceberg_offload")
            job_logger.addHandler(handler)
            try:
                with (
                    contextlib.redirect_stdout(_Tee(captured_out, run_log)),
                    contextlib.redirect_stderr(_Tee(captured_err, run_log)),
                ):
                    try:
                        code = offload_main(arguments, spark=self.spark, settings=settings)
                    except SystemExit as exc:  # argparse
                        code = exc.code if isinstance(exc.code, int) else 1
                    except Exception:
                        traceback.print_exc()
                        code = 1
            finally:
                job_logger.removeHandler(handler)
                context.setLocalProperty("spark.jobGroup.id", None)
        run.exit_code = code
        try:
            result = parse_result(captured_out.getvalue())
        except ResultError as exc:
            return False, f"driver exited with code {code}; unreadable result: {exc}"
        if result is not None:
            run.outcome, run.rows = result.outcome, result.rows
        if code == 0 and result is not None and result.outcome != "failed":
            return True, None
        if result is not None and result.error:
            return False, result.error
        lines = [line for line in captured_err.getvalue().splitlines() if line.strip()]
        return False, f"driver exited with code {code}" + (f": {lines[-1]}" if lines else "")

    def _set_executor_env(self, env: Mapping[str, str]) -> None:
        """What the executors' Python workers get from the executor container's environment.

        Only the secret variables: the job reads nothing else from the environment in its
        executors (the rest reaches them inside the tasks). Spark keys its Python worker daemons
        by environment, so passing every variable (the database differs per scenario) would
        start a new daemon, seconds of start-up, for each distinct environment.
        """
        secrets = {k: v for k, v in env.items() if k in EXECUTOR_VARIABLES}
        environment = self.spark.sparkContext.environment
        for key in self._executor_keys - set(secrets):
            environment.pop(key, None)
        environment.update(secrets)
        self._executor_keys = set(secrets)

    def warm_up(self, password: str) -> None:
        """Start the Python worker daemon the runs will use (same environment) and import the
        job's executor side in it, so the first run does not pay for it."""
        from iceberg_offload.job.read import PASSWORD_VARIABLE

        def batches(items: Iterator[Any]) -> Iterator[Any]:  # pickled by value: no import of this module
            import iceberg_offload.job.read  # noqa: F401  (what the executors import for a run)

            yield from items

        self._set_executor_env({PASSWORD_VARIABLE: password})
        frame = self.spark.range(0, 2, numPartitions=2)
        with self.spark_slot:
            frame.mapInArrow(batches, frame.schema).collect()

    # --- the tests' requests -------------------------------------------------------------

    def iceberg_ddl(self, namespace: str, tables: list[str] | None) -> int:
        from iceberg_offload.adapters.ddl import iceberg_statements

        pattern = re.compile(rf"\b{re.escape(self.catalog.name)}\.{re.escape(namespace)}\.(\w+)")
        statements = []
        for statement in iceberg_statements(self.catalog.name, namespace):
            match = pattern.search(statement)
            if tables is None or match is None or match.group(1) in tables:
                statements.append(statement)
        with self.spark_slot:
            for statement in statements:
                self.spark.sql(statement)
        return len(statements)

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r.record() for r in self.runs.values()]


def _control_server(standin: StandIn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("control: " + format, *args)

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            try:
                self._get()
            except Exception as exc:
                log.error("control %s failed: %s", self.path, exc)
                self._reply(500, {"error": str(exc)})

        def _get(self) -> None:
            if self.path == "/runs":
                self._reply(200, standin.records())
            elif self.path == "/health":
                self._reply(200, {"ok": True})
            else:
                self._reply(404, {"error": f"no {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/iceberg":
                    count = standin.iceberg_ddl(str(body["namespace"]), body.get("tables"))
                    self._reply(200, {"statements": count})
                elif self.path == "/hold":
                    standin.set_hold(str(body["namespace"]), body.get("table"), bool(body.get("hold", True)))
                    self._reply(200, {"holds": sorted(f"{n}/{t or '*'}" for n, t in standin.holds)})
                else:
                    self._reply(404, {"error": f"no {self.path}"})
            except Exception as exc:
                log.error("control %s failed: %s", self.path, exc)
                self._reply(500, {"error": str(exc)})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


@contextlib.contextmanager
def _local_stack(state_dir: Path, password: str, namespaces: list[str]) -> Iterator[tuple[Any, Any, int]]:
    """ClickHouse (embedded, password-protected, 127.0.0.1) and the Spark session; DDL of both."""
    from iceberg_offload.adapters import clickhouse_io
    from iceberg_offload.core.settings import local_settings
    from iceberg_offload.job.session import apply_iceberg_ddl, spark_session
    from iceberg_offload.local.chhttp import ClickHouseHTTPServer

    (state_dir / "warehouse").mkdir(parents=True, exist_ok=True)
    server = ClickHouseHTTPServer(state_dir / "clickhouse", user=CLICKHOUSE_USER, password=password)
    server.start()
    try:
        base = local_settings(state_dir, server.port)
        settings = replace(base, clickhouse=replace(base.clickhouse, user=CLICKHOUSE_USER, password=password))
        ch = clickhouse_io.connect(settings.clickhouse)
        try:
            clickhouse_io.apply_ddl(ch)
        finally:
            ch.close()
        spark = spark_session(settings, "e2e-spark-operator-standin")
        try:
            for namespace in namespaces:
                apply_iceberg_ddl(spark, settings.catalog.name, namespace)
            yield spark, settings.catalog, server.port
        finally:
            spark.stop()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="standin", description="The Spark Operator stand-in of the e2e tests.")
    p.add_argument("--state-dir", type=Path, required=True, help="ClickHouse data, Iceberg catalog and warehouse")
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--ready-file", type=Path, required=True, help="written (JSON) once everything is up")
    p.add_argument("--iceberg-namespace", action="append", default=[], help="Iceberg DDL to apply at start")
    p.add_argument("--poll-seconds", type=float, default=0.2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    password = sys.stdin.readline().rstrip("\n")
    if any(k.startswith("ICEBERG_OFFLOAD_") for k in os.environ):
        log.warning("ICEBERG_OFFLOAD_* variables in the stand-in's own environment are ignored")
    config.load_kube_config(config_file=str(args.kubeconfig))  # type: ignore[no-untyped-call]
    state_dir = args.state_dir.resolve()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    with _local_stack(state_dir, password, args.iceberg_namespace) as (spark, catalog, clickhouse_port):
        standin = StandIn(spark=spark, catalog=catalog, state_dir=state_dir, poll_seconds=args.poll_seconds)
        standin.warm_up(password)
        control = _control_server(standin)
        threading.Thread(target=control.serve_forever, name="control", daemon=True).start()
        poller = threading.Thread(target=standin.poll_forever, name="poller", daemon=True)
        poller.start()
        ready = {
            "pid": os.getpid(),
            "clickhouse_port": clickhouse_port,
            "clickhouse_user": CLICKHOUSE_USER,
            "control_port": control.server_address[1],
            "catalog": {k: getattr(catalog, k) for k in ("name", "type", "uri", "warehouse")},
            "startup_seconds": round(time.monotonic() - started, 1),
        }
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ready))
        tmp.replace(args.ready_file)
        log.info("ready in %.1fs: ClickHouse on 127.0.0.1:%d", time.monotonic() - started, clickhouse_port)
        stop.wait()
        log.info("stopping")
        standin.stopping.set()
        with standin.lock:
            runs = list(standin.runs.values())
        for run in runs:
            standin._cancel(run, "stand-in stopping")
        control.shutdown()
        poller.join(timeout=5)
    return 0
