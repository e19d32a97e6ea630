"""One reconcile of one OffloadTable: read, observe (observe.py), decide (decide.py), act.

The I/O is here and in kube.py / iceberg_io.py / clickhouse_io.py; every decision is in
decide.py. Secrets are read from Kubernetes Secrets only to open connections, and are
masked in every message that leaves this process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from iceberg_offload.adapters import clickhouse_io, iceberg_io, iceberg_schema, maintenance_io
from iceberg_offload.core.mirror import after_run, scrub
from iceberg_offload.core.repair import AuditRecord
from iceberg_offload.core.result import OffloadResult, ResultError, parse_result
from iceberg_offload.core.settings import CatalogSettings, ClickHouseSettings, Settings
from iceberg_offload.operator.decide import Decision, FinishedRun, Observed, Readback, decide, run_to_record
from iceberg_offload.operator.kube import Kube, KubeError
from iceberg_offload.operator.maintenance import to_record
from iceberg_offload.operator.maintenance_manifest import maintenance_application
from iceberg_offload.operator.manifests import Defaults, spark_application
from iceberg_offload.operator.observe import (
    CatalogRead,
    Reading,
    catalog_settings,
    observe,
    table_spec,
    upstream_targets,
)
from iceberg_offload.operator.spec import OffloadTableSpec
from iceberg_offload.operator.status import OffloadTableStatus, masked

log = logging.getLogger("iceberg_offload.operator.reconciler")

EventSink = Callable[[str, str, str], None]  # (type, reason, message)


class RetryLater(RuntimeError):
    """Something needed for a correct status (the Iceberg readback) is unavailable now."""


def clickhouse_settings(spec: OffloadTableSpec, password: str) -> ClickHouseSettings:
    """The table's ClickHouse connection, with the password read from its Secret."""
    conn = spec.connection
    return ClickHouseSettings(
        host=conn.host,
        port=conn.port,
        user=conn.user,
        password=password,
        database=spec.source.database,
        secure=conn.secure,
    )


@dataclass
class Controller:
    settings: Settings
    kube: Kube
    _catalogs: dict[tuple[str, ...], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def defaults(self) -> Defaults:
        s = self.settings
        return Defaults(
            image=s.spark_image,
            service_account=s.spark_service_account,
            main_application_file=s.main_application_file,
        )

    # --- read ----------------------------------------------------------------------------

    def read(self, body: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]], now: datetime) -> Reading:
        """The table's SparkApplications and catalog; `tables` is its namespace's index."""
        meta = body["metadata"]
        namespace = meta["namespace"]
        runs = self.kube.list_runs(namespace, meta["name"])
        spec, _ = table_spec(body)
        catalog = self.read_catalog(namespace, spec) if spec is not None else None
        return Reading(body=body, now=now, runs=runs, tables=tables, catalog=catalog)

    def read_catalog(self, namespace: str, spec: OffloadTableSpec) -> CatalogRead:
        try:
            data = self.kube.config_map(namespace, spec.catalog_config_map)
        except KubeError as exc:
            return CatalogRead(spec.catalog_config_map, None, error=str(exc))
        if spec.catalog_password is None:
            return CatalogRead(spec.catalog_config_map, data)
        try:
            password = self.kube.secret_value(namespace, spec.catalog_password)
        except KubeError as exc:
            return CatalogRead(spec.catalog_config_map, data, error=str(exc))
        return CatalogRead(spec.catalog_config_map, data, password)

    def read_more(self, reading: Reading, observed: Observed, catalog: CatalogSettings | None) -> Reading:
        """What the run to record asks for: a failed driver's error line, the Iceberg readback
        (also for a table without a watermark yet, e.g. one offloaded before its status was)."""
        to_record = run_to_record(observed)
        namespace = reading.body["metadata"]["namespace"]
        if to_record is not None and not to_record.succeeded:
            item = next(i for i in reading.runs if i["metadata"]["name"] == to_record.name)
            detail = self._failure_detail(namespace, item)
            if detail:
                reading = replace(reading, failure_details={to_record.name: detail})
        spec = observed.spec
        if spec is None or catalog is None:
            return reading
        reading = self._read_maintenance(reading, observed, catalog, spec)
        if to_record is not None and to_record.succeeded:
            return replace(reading, readback=self.readback(catalog, spec, to_record.name))
        if observed.status.watermark is None:
            try:
                return replace(reading, readback=self.readback(catalog, spec, None))
            except RetryLater as exc:
                log.info("%s/%s: no watermark yet: %s", namespace, spec.name, exc)
        return reading

    def iceberg_catalog(self, catalog: CatalogSettings) -> Any:
        """The pyiceberg catalog, opened once per process (the OffloadBackfills' controller too)."""
        return self._catalog(catalog)

    def _catalog(self, catalog: CatalogSettings) -> Any:
        key = (catalog.name, catalog.type, catalog.uri, catalog.warehouse, catalog.user, catalog.password)
        with self._lock:  # reconciles run in parallel threads; open each catalog once
            if key not in self._catalogs:
                self._catalogs[key] = iceberg_io.open_catalog(catalog)
            return self._catalogs[key]

    def readback(self, catalog: CatalogSettings, spec: OffloadTableSpec, run: str | None) -> Readback:
        try:
            table = iceberg_io.load_table(self._catalog(catalog), f"{spec.target_namespace}.{spec.target_table}")
            commit = iceberg_io.commit_of_run(table, run) if run else None
            return Readback(
                iceberg_io.committed_watermark(table),
                commit.added_records if commit else None,
                iceberg_io.row_count(table),
                self._audit(table, spec, run) if run else None,
                iceberg_schema.last_schema_change(table),
            )
        except Exception as exc:
            raise RetryLater(f"cannot read Iceberg table {spec.target_namespace}.{spec.target_table}: {exc}") from exc

    def _read_maintenance(
        self, reading: Reading, observed: Observed, catalog: CatalogSettings, spec: OffloadTableSpec
    ) -> Reading:
        """The maintenance record, when a maintenance run finished that is not recorded yet; left
        unread (the run is recorded on a later tick) while the Iceberg table cannot be read."""
        pending = to_record(observed.maintenance, observed.status.maintenance)
        if pending and not pending[-1].succeeded:  # the job's own error line, as for a run
            item = next(i for i in reading.runs if i["metadata"]["name"] == pending[-1].name)
            detail = self._failure_detail(reading.body["metadata"]["namespace"], item)
            details = {**reading.failure_details, pending[-1].name: detail} if detail else reading.failure_details
            return replace(reading, failure_details=details)
        if not pending:
            return reading
        try:
            table = iceberg_io.load_table(self._catalog(catalog), f"{spec.target_namespace}.{spec.target_table}")
            record = maintenance_io.maintenance_record(table)
        except Exception as exc:
            log.info("%s: maintenance record of %s not read: %s", spec.name, pending[-1].name, exc)
            return reading
        return replace(reading, maintenance_read=True, maintenance_record=record)

    @staticmethod
    def _audit(table: Any, spec: OffloadTableSpec, run: str) -> AuditRecord | None:
        """The audit the run recorded; an unreadable one is left out (and logged) rather than
        holding up the record of the run for ever."""
        try:
            return iceberg_io.audit_of_run(table, run)
        except ResultError as exc:
            log.warning("%s: run %s: %s", spec.name, run, exc)
            return None

    def _failure_detail(self, namespace: str, item: Mapping[str, Any]) -> str | None:
        """The job's own error line from the driver's log, if it can be read."""
        pod = ((item.get("status") or {}).get("driverInfo") or {}).get("podName")
        if not pod:
            return None
        text = self.kube.log_tail(namespace, str(pod))
        result = parse_result(text) if text else None
        return result.error if result and result.outcome == "failed" else None

    # --- reconcile -----------------------------------------------------------------------

    def reconcile(
        self,
        *,
        body: Mapping[str, Any],
        tables: Mapping[str, Mapping[str, Any]],
        now: datetime,
        emit: EventSink,
        patch_status: Callable[[OffloadTableStatus], None],
    ) -> Decision:
        """`tables`: the OffloadTables of the table's namespace, name -> observe.index_entry()."""
        reading = self.read(body, tables, now)
        observed = observe(reading)
        # observe() has checked the catalog: it is usable whenever the spec is.
        catalog = catalog_settings(reading.catalog) if observed.spec and reading.catalog else None
        reading = self.read_more(reading, observed, catalog)
        observed = observe(reading)
        decision = decide(observed)
        spec = observed.spec
        secrets = [reading.catalog.password or ""] if reading.catalog else []
        # The ClickHouse password is needed only when a run finished (the mirror write) or a
        # message leaves this process: read the Secret then, not on every tick.
        needed = bool(decision.finished) or bool(decision.events)
        password = self._clickhouse_password(body["metadata"]["namespace"], spec) if spec and needed else ""
        secrets.append(password)
        targets = upstream_targets(spec, tables, catalog.name) if spec and catalog else {}
        self._act(body, spec, catalog, targets, decision, emit, secrets, password)
        patch_status(masked(decision.status, secrets))
        return decision

    # --- act -----------------------------------------------------------------------------

    def _clickhouse_password(self, namespace: str, spec: OffloadTableSpec) -> str:
        if spec.connection.password is None:
            return ""
        try:
            return self.kube.secret_value(namespace, spec.connection.password)
        except KubeError as exc:
            log.warning("%s: %s", spec.name, exc)
            return ""

    def _act(
        self,
        body: Mapping[str, Any],
        spec: OffloadTableSpec | None,
        catalog: CatalogSettings | None,
        targets: Mapping[str, str],
        decision: Decision,
        emit: EventSink,
        secrets: list[str],
        password: str,
    ) -> None:
        namespace = body["metadata"]["namespace"]
        for name in decision.delete:
            self.kube.delete_run(namespace, name)
        if decision.create is not None and spec is not None and catalog is not None:
            manifest = spark_application(
                namespace=namespace,
                owner={"name": body["metadata"]["name"], "uid": body["metadata"]["uid"]},
                spec=spec,
                plan=decision.create,
                catalog=catalog.name,
                upstream_targets=targets,
                defaults=self.defaults,
            )
            if not self.kube.create_run(manifest):
                log.info("%s: SparkApplication %s exists already: following it", spec.name, decision.create.name)
        plan = decision.maintenance.create if decision.maintenance else None
        if plan is not None and spec is not None and catalog is not None:
            owner = {"name": body["metadata"]["name"], "uid": body["metadata"]["uid"]}
            app = maintenance_application(
                namespace=namespace, owner=owner, table=spec, plan=plan, catalog=catalog.name, defaults=self.defaults
            )
            if not self.kube.create_run(app):
                log.info("%s: maintenance SparkApplication %s exists already: following it", spec.name, plan.name)
        for event in decision.events:
            emit(event.type, event.reason, scrub(event.message, secrets))
        if spec is not None and self.settings.mirror:
            for finished in decision.finished:  # oldest first, as the runs ended
                self._mirror(spec, finished, password, secrets)

    def _mirror(self, spec: OffloadTableSpec, run: FinishedRun, password: str, secrets: list[str]) -> None:
        """Best effort: the status is the operator's record; the mirror serves the runbook."""
        settings = clickhouse_settings(spec, password)
        result = OffloadResult(
            table=spec.source.table,
            run_id=run.name,
            outcome=run.outcome.result,
            rows=run.rows,
            watermark_timestamp=run.watermark.timestamp.isoformat() if run.watermark else None,
            watermark_sequence=run.watermark.sequence if run.watermark else None,
            duration_seconds=round(run.duration_seconds, 3),
            error=scrub(run.error, secrets) or None,
        )
        try:
            client = clickhouse_io.connect(settings)
            try:
                clickhouse_io.write_mirror(
                    client, after_run(clickhouse_io.read_mirror(client, result.table), result, run.finished_at)
                )
            finally:
                client.close()
        except Exception as exc:
            log.warning("%s: offload_watermarks not updated: %s", spec.name, scrub(str(exc), secrets))
