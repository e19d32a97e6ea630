"""One reconcile of one OffloadBackfill: read, observe (backfill_observe.py), decide
(backfill.py), act; and the per-table lock that keeps a backfill and its table's scheduled run
from both starting.

The I/O is here and in kube.py / iceberg_io.py / clickhouse_io.py; every decision is in
backfill.py. The ClickHouse password is read from the Secret the OffloadTable names only to
read the source's TTL, and is masked in every message that leaves this process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core.mirror import scrub
from iceberg_offload.core.result import parse_result
from iceberg_offload.core.settings import CatalogSettings
from iceberg_offload.core.tables import SpecError
from iceberg_offload.operator.backfill import Decision, Observed, Progress, RetentionRead, decide
from iceberg_offload.operator.backfill_manifest import backfill_application
from iceberg_offload.operator.backfill_observe import observe_backfill
from iceberg_offload.operator.backfill_status import BackfillStatus
from iceberg_offload.operator.kube import KubeError
from iceberg_offload.operator.observe import catalog_settings, table_spec
from iceberg_offload.operator.reconciler import Controller, EventSink, clickhouse_settings
from iceberg_offload.operator.runs import FAILED_STATES
from iceberg_offload.operator.spec import OffloadTableSpec

log = logging.getLogger("iceberg_offload.operator.backfill")


class TableLocks:
    """One lock per OffloadTable: its reconcile and its backfills' each read the table's
    SparkApplications and may create one; under the lock, whichever comes second sees the
    first's. (Two operator replicas never both work: kopf's peering keeps one active. And were
    both runs to start anyway, the compare-and-swap commits keep the table exactly once.)"""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextmanager
    def hold(self, namespace: str, table: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((namespace, table), threading.Lock())
        with lock:
            yield


@dataclass
class _Table:
    """The backfill's OffloadTable as read: its body (None: not found), spec, catalog."""

    body: Mapping[str, Any] | None = None
    spec: OffloadTableSpec | None = None
    error: str | None = None
    catalog: CatalogSettings | None = None
    secrets: list[str] = field(default_factory=list)


@dataclass
class BackfillController:
    tables: Controller  # the OffloadTables' controller: settings, Kubernetes, Iceberg catalogs

    def _read_table(self, namespace: str, name: str) -> _Table:
        body = self.tables.kube.get_table(namespace, name) if name else None
        if body is None:
            return _Table()
        spec, error = table_spec(body)
        if spec is None:
            return _Table(body, None, error)
        read = self.tables.read_catalog(namespace, spec)
        secrets = [read.password or ""]
        try:
            catalog = catalog_settings(read)
        except SpecError as exc:
            return _Table(body, None, str(exc), None, secrets)
        return _Table(body, spec, None, catalog, secrets)

    def progress(self, table: _Table, run: str) -> Progress | None:
        """The backfill's commits so far; None if the Iceberg table cannot be read now."""
        if table.spec is None or table.catalog is None:
            return None
        identifier = f"{table.spec.target_namespace}.{table.spec.target_table}"
        try:
            loaded = iceberg_io.load_table(self.tables.iceberg_catalog(table.catalog), identifier)
            got = iceberg_io.backfill_progress(loaded, run)
        except Exception as exc:
            log.info("%s: backfill %s: cannot read Iceberg table %s: %s", table.spec.name, run, identifier, exc)
            return None
        return Progress(got.commits, got.rows)

    def retention(self, namespace: str, spec: OffloadTableSpec, secrets: list[str]) -> RetentionRead:
        """The source's TTL, with the table's connection; the error if it cannot be read."""
        conn = spec.connection
        try:
            password = self.tables.kube.secret_value(namespace, conn.password) if conn.password else ""
        except KubeError as exc:
            return RetentionRead(error=str(exc))
        secrets.append(password)
        settings = clickhouse_settings(spec, password)
        try:
            client = clickhouse_io.connect(settings)
            try:
                return RetentionRead(ttl=clickhouse_io.retention(client, spec.source))
            finally:
                client.close()
        except Exception as exc:
            return RetentionRead(error=scrub(str(exc), secrets))

    def _failure_detail(self, namespace: str, item: Mapping[str, Any]) -> str | None:
        """The job's own error line from the driver's log (why it refused, or failed)."""
        pod = ((item.get("status") or {}).get("driverInfo") or {}).get("podName")
        text = self.tables.kube.log_tail(namespace, str(pod)) if pod else None
        result = parse_result(text) if text else None
        return result.error if result and result.outcome == "failed" else None

    def observe(self, body: Mapping[str, Any], now: datetime, table: _Table) -> Observed:
        namespace = body["metadata"]["namespace"]
        name = str((body.get("spec") or {}).get("table") or "")
        # Listed even when the table is gone: a backfill already running is still followed.
        apps = self.tables.kube.list_runs(namespace, name) if name else []
        observed = observe_backfill(
            body, now, table=table.body, table_spec=table.spec, table_error=table.error, apps=apps
        )
        run = observed.run
        if run is None:
            return observed
        if run.state in FAILED_STATES:
            item = next(i for i in apps if i["metadata"]["name"] == run.name)
            detail = self._failure_detail(namespace, item)
            if detail:
                runs = tuple(replace(a, error=detail) if a.name == run.name else a for a in observed.apps)
                observed = replace(observed, apps=runs)
        return replace(observed, progress=self.progress(table, run.name))

    def reconcile(
        self,
        *,
        body: Mapping[str, Any],
        now: datetime,
        emit: EventSink,
        patch_status: Callable[[BackfillStatus], None],
    ) -> Decision:
        namespace = body["metadata"]["namespace"]
        if BackfillStatus.from_dict(body.get("status")).phase.terminal:
            return decide(observe_backfill(body, now, table=None))  # final: nothing to read or write
        table = self._read_table(namespace, str((body.get("spec") or {}).get("table") or ""))
        observed = self.observe(body, now, table)
        decision = decide(observed)
        secrets = list(table.secrets)
        if decision.needs_retention and table.spec is not None:
            observed = replace(observed, retention=self.retention(namespace, table.spec, secrets))
            decision = decide(observed)
        if decision.create is not None and table.spec is not None and table.catalog is not None:
            manifest = backfill_application(
                namespace=namespace,
                owner={"name": body["metadata"]["name"], "uid": body["metadata"]["uid"]},
                table=table.spec,
                plan=decision.create,
                catalog=table.catalog.name,
                defaults=self.tables.defaults,
            )
            if not self.tables.kube.create_run(manifest):
                log.info("backfill %s: SparkApplication %s exists already", observed.name, decision.create.name)
        for event in decision.events:
            emit(event.type, event.reason, scrub(event.message, secrets))
        patch_status(_masked(decision.status, secrets))
        return decision


def _masked(status: BackfillStatus, secrets: list[str]) -> BackfillStatus:
    conditions = tuple(
        replace(c, message=scrub(c.message, secrets) if c.message else c.message) for c in status.conditions
    )
    return replace(status, message=scrub(status.message, secrets) if status.message else None, conditions=conditions)
