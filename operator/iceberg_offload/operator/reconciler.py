"""One reconcile of one OffloadTable: observe, decide (reconcile.decide), act.

The I/O is here and in kube.py / iceberg_io.py / clickhouse_io.py; every decision is in
reconcile.py. Secrets are read from Kubernetes Secrets only to open connections, and are
masked in every message that leaves this process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core.mirror import after_run, scrub
from iceberg_offload.core.result import OffloadResult, parse_result
from iceberg_offload.core.settings import CatalogSettings, ClickHouseSettings, Settings
from iceberg_offload.core.tables import SpecError
from iceberg_offload.core.watermark import parse_timestamp
from iceberg_offload.operator.decide import (
    ANNOTATION_WINDOW_TO,
    LABEL_ATTEMPT,
    LABEL_GENERATION,
    LABEL_SLOT,
    TRIGGER_ANNOTATION,
    Decision,
    FinishedRun,
    Observed,
    ObservedRun,
    Readback,
    Upstream,
    decide,
    run_to_record,
)
from iceberg_offload.operator.kube import Kube, KubeError
from iceberg_offload.operator.manifests import Defaults, spark_application
from iceberg_offload.operator.spec import OffloadTableSpec, dependency_cycle, parse_spec
from iceberg_offload.operator.status import OffloadTableStatus, masked
from iceberg_offload.operator.upstream import upstream_of

log = logging.getLogger("iceberg_offload.operator.reconciler")

EventSink = Callable[[str, str, str], None]  # (type, reason, message)


class RetryLater(RuntimeError):
    """Something needed for a correct status (the Iceberg readback) is unavailable now."""


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return parse_timestamp(str(value))


def observed_run(item: Mapping[str, Any]) -> ObservedRun:
    meta = item.get("metadata", {})
    labels = meta.get("labels") or {}
    state = (item.get("status") or {}).get("applicationState") or {}
    created = _time(meta.get("creationTimestamp")) or datetime.now(UTC)
    return ObservedRun(
        name=meta["name"],
        slot=labels.get(LABEL_SLOT, ""),
        attempt=int(labels.get(LABEL_ATTEMPT) or 1),
        generation=int(labels.get(LABEL_GENERATION) or 0),
        window_to=_time((meta.get("annotations") or {}).get(ANNOTATION_WINDOW_TO)) or created,
        created=created,
        state=str(state.get("state") or ""),
        terminated=_time((item.get("status") or {}).get("terminationTime")),
        error=str(state.get("errorMessage") or ""),
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
        return Defaults(s.spark_image, s.spark_service_account, s.main_application_file)

    # --- observe -------------------------------------------------------------------------

    def catalog_settings(self, namespace: str, spec: OffloadTableSpec) -> CatalogSettings:
        data = self.kube.config_map(namespace, spec.catalog_config_map)
        prefix = "ICEBERG_OFFLOAD_CATALOG_"
        values = {k.removeprefix(prefix).lower(): v for k, v in data.items() if k.startswith(prefix)}
        if "password" in values:
            raise SpecError(
                f"ConfigMap {spec.catalog_config_map} holds a password: use target.catalogPasswordSecretRef"
            )
        if spec.catalog_password is not None:
            values["password"] = self.kube.secret_value(namespace, spec.catalog_password)
        known = set(CatalogSettings.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(
                f"ConfigMap {spec.catalog_config_map}: unknown keys {', '.join(prefix + u.upper() for u in unknown)}"
            )
        return CatalogSettings(**values)

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
            )
        except Exception as exc:
            raise RetryLater(f"cannot read Iceberg table {spec.target_namespace}.{spec.target_table}: {exc}") from exc

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
        now: datetime,
        emit: EventSink,
        patch_status: Callable[[OffloadTableStatus], None],
    ) -> Decision:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        status = OffloadTableStatus.from_dict(body.get("status"))
        spec: OffloadTableSpec | None = None
        spec_error: str | None = None
        try:
            spec = parse_spec(name, body.get("spec") or {})
        except SpecError as exc:
            spec_error = str(exc)

        items = self.kube.list_runs(namespace, name)
        runs = [observed_run(i) for i in items]
        tables = self.kube.list_tables(namespace)
        graph = {t["metadata"]["name"]: list((t.get("spec") or {}).get("dependsOn") or []) for t in tables}
        upstream_status = {t["metadata"]["name"]: t for t in tables}
        upstream: dict[str, Upstream] = {}
        targets: dict[str, str] = {}
        for dep in spec.depends_on if spec else ():
            other = upstream_status.get(dep)
            upstream[dep] = upstream_of(other)
            if other is not None:
                ospec = other.get("spec") or {}
                target = ospec.get("target") or {}
                targets[dep] = f"{target.get('namespace', 'cold')}.{target.get('table', '')}"

        catalog: CatalogSettings | None = None
        secrets: list[str] = []
        if spec is not None:
            try:
                catalog = self.catalog_settings(namespace, spec)
                secrets.append(catalog.password)
            except (SpecError, KubeError) as exc:
                spec, spec_error = None, str(exc)

        observed = Observed(
            name=name,
            generation=int(meta.get("generation") or 0),
            created=_time(meta.get("creationTimestamp")) or now,
            now=now,
            spec=spec,
            spec_error=spec_error,
            status=status,
            runs=runs,
            upstream=upstream,
            dependency_cycle=dependency_cycle(name, graph),
            trigger=(meta.get("annotations") or {}).get(TRIGGER_ANNOTATION),
        )
        to_record = run_to_record(observed)
        if to_record is not None and not to_record.succeeded:
            detail = self._failure_detail(namespace, next(i for i in items if i["metadata"]["name"] == to_record.name))
            if detail:
                runs = [r if r.name != to_record.name else replace(r, error=detail) for r in runs]
                observed = replace(observed, runs=runs)
        if spec is not None and catalog is not None:
            if to_record is not None and to_record.succeeded:
                observed = replace(observed, readback=self.readback(catalog, spec, to_record.name))
            elif status.watermark is None:
                try:
                    observed = replace(observed, readback=self.readback(catalog, spec, None))
                except RetryLater as exc:
                    log.info("%s/%s: no watermark yet: %s", namespace, name, exc)

        decision = decide(observed)
        # The ClickHouse password is needed only when a run finished (the mirror write) or a
        # message leaves this process: read the Secret then, not on every tick.
        needed = bool(decision.finished) or bool(decision.events)
        password = self._clickhouse_password(namespace, spec) if spec and needed else ""
        secrets.append(password)
        self._act(namespace, body, spec, catalog, targets, decision, emit, secrets, password)
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
        namespace: str,
        body: Mapping[str, Any],
        spec: OffloadTableSpec | None,
        catalog: CatalogSettings | None,
        targets: Mapping[str, str],
        decision: Decision,
        emit: EventSink,
        secrets: list[str],
        password: str,
    ) -> None:
        for name in decision.delete:
            self.kube.delete_run(namespace, name)
        if decision.create is not None and spec is not None and catalog is not None:
            upstream_targets = {dep: f"{catalog.name}.{t}" for dep, t in targets.items()}
            manifest = spark_application(
                namespace=namespace,
                owner={"name": body["metadata"]["name"], "uid": body["metadata"]["uid"]},
                spec=spec,
                plan=decision.create,
                catalog=catalog.name,
                upstream_targets=upstream_targets,
                defaults=self.defaults,
            )
            if not self.kube.create_run(manifest):
                log.info("%s: SparkApplication %s exists already: following it", spec.name, decision.create.name)
        for event in decision.events:
            emit(event.type, event.reason, scrub(event.message, secrets))
        if spec is not None and self.settings.mirror:
            for finished in decision.finished:  # oldest first, as the runs ended
                self._mirror(spec, finished, password, secrets)

    def _mirror(self, spec: OffloadTableSpec, run: FinishedRun, password: str, secrets: list[str]) -> None:
        """Best effort: the status is the operator's record; the mirror serves the runbook."""
        conn = spec.connection
        settings = ClickHouseSettings(
            host=conn.host,
            port=conn.port,
            user=conn.user,
            password=password,
            database=spec.source.database,
            secure=conn.secure,
        )
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
