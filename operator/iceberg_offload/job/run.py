"""The offload run on Spark: read a window from ClickHouse inside the executors, stage it in
Iceberg as one snapshot whose summary carries the new watermark, and publish that snapshot by a
compare-and-swap on the table's current snapshot.

Exactly once by construction (docs/ARCHITECTURE.md, "Why a run is exactly once"): the window
starts at the watermark read from the table's current snapshot, and the rows and the watermark
become visible together, only if that snapshot is still current. Of runs that read the same
snapshot at most one publishes; a run that dies anywhere either published or left nothing
visible (the next run reads the same window again).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from iceberg_offload.adapters import audit, clickhouse_io, iceberg_io, watermark_io
from iceberg_offload.core.mirror import after_run, scrub
from iceberg_offload.core.planning import WindowPlan, plan_window, split_window, subwindow_count, upper_bound
from iceberg_offload.core.repair import AuditRecord, LateDataPolicy
from iceberg_offload.core.result import OffloadResult, summary_properties
from iceberg_offload.core.schema_change import Mode
from iceberg_offload.core.settings import Settings
from iceberg_offload.core.tables import TableSpec
from iceberg_offload.core.typemap import ColumnMapping
from iceberg_offload.core.watermark import EPOCH, Watermark, Window, format_timestamp
from iceberg_offload.job.backfill import BackfillRequest, run_backfill
from iceberg_offload.job.columns import arrow_schema, plan_columns
from iceberg_offload.job.errors import OffloadError
from iceberg_offload.job.read import BOUNDS, bounds_row, read_subwindows
from iceberg_offload.job.schema import evolve_schema

log = logging.getLogger("iceberg_offload.job")
WAP_ID_CONF = "spark.wap.id"


@dataclass(frozen=True)
class RunRequest:
    """One run of one table."""

    spec: TableSpec
    run_id: str = field(default_factory=lambda: f"manual-{uuid.uuid4().hex[:12]}")
    upstream: Mapping[str, str] = field(default_factory=dict)  # name -> Iceberg identifier
    now: datetime | None = None
    requested_from: Watermark | None = None
    requested_to: datetime | None = None
    mirror: bool = True
    # Audit the lookback before the watermark first (and repair what differs); None: no audit.
    late_data: LateDataPolicy | None = None
    # Instead of a window: make this committed range equal to ClickHouse.
    backfill: BackfillRequest | None = None
    # Called as the run passes each point of PHASES: lets a test interleave runs or end one there.
    on_phase: Callable[[str], None] | None = None
    # A ClickHouse column Iceberg lacks or has narrower: evolve the target, or fail the run.
    schema_evolution: Mode = "evolve"


# The points a run passes, in order: window planned (nothing written), late data repaired (the
# repair committed, the window not yet read), rows written but not yet visible, rows and
# watermark committed (the mirror not yet updated).
PHASES = ("planned", "repaired", "staged", "committed")


def _phase(settings: Settings, request: RunRequest, name: str) -> None:
    if request.on_phase is not None:
        request.on_phase(name)
    if settings.failpoint == name:
        log.warning("failpoint %s: the run dies here", name)
        os._exit(137)


def run_offload(spark: SparkSession, settings: Settings, request: RunRequest) -> OffloadResult:
    """One run. Returns the result; on failure raises OffloadError (or the engine's error) after
    publishing nothing."""
    started = time.monotonic()
    spec = request.spec
    catalog, table = _open_target(settings, spec)
    client = clickhouse_io.connect(settings.clickhouse)
    try:
        table, schema_change = evolve_schema(
            spark, table, client, spec, request.schema_evolution, request.run_id, request.now
        )
        columns = plan_columns(
            clickhouse_io.describe(client, spec.source), spark.table(spec.target.identifier).schema, spec
        )
        state = _read_state(table, spec)
        bound = upper_bound(
            now=request.now or datetime.now(UTC),
            buffer=spec.buffer,
            upstream=_upstream_watermarks(catalog, request),
            candle_interval=spec.candle_interval,
            requested_to=request.requested_to,
        )
        plan = plan_window(state.watermark, bound, requested_from=request.requested_from)
        _phase(settings, request, "planned")
        if request.backfill is not None:
            backfill, policy = request.backfill, request.late_data
            return run_backfill(catalog, client, columns, spec, backfill, policy, request.run_id, started, request.now)
        target, record = _late_data(settings, request, client, columns, _Target(catalog, table, state.snapshot_id))
        if plan.window is None:
            if record is not None and target.base_snapshot == state.snapshot_id:  # nothing repaired
                audit.record_audit(catalog, target.table, spec, record, request.run_id)
            result = _skipped(request, plan, started)
        else:
            repaired = target.base_snapshot != state.snapshot_id
            window = _WindowRun(plan.window, target, record, repaired)
            result = _commit_window(spark, settings, request, columns, client, window, started)
        if record is not None:
            result = replace(
                result,
                buckets_differing=record.differing - record.repaired_buckets,
                rows_repaired=record.rows_repaired,
                late_rows=record.late_rows,
            )
        result = replace(result, schema_change=schema_change)
        if request.mirror:
            _write_mirror(client, result)
        return result
    finally:
        client.close()


def _read_state(table: Table, spec: TableSpec) -> iceberg_io.TableState:
    state = iceberg_io.read_state(table)
    if state.watermark is None and state.has_rows:
        raise OffloadError(
            f"Iceberg table {spec.target.identifier} has rows but no snapshot in its history carries a "
            "watermark, and its watermark tag is gone (expired or removed outside the operator): stamp one from "
            f"the data with 'iceberg-offload restamp --table {spec.target.catalog_identifier}', then runs continue"
        )
    return state


def _late_data(
    settings: Settings, request: RunRequest, client: Any, columns: list[ColumnMapping], target: _Target
) -> tuple[_Target, AuditRecord | None]:
    """The audit of the lookback and its repair, before the window: the target the window then
    publishes on (the repair's snapshot, if it made one) and the audit's record."""
    if request.late_data is None:
        return target, None
    now = request.now or datetime.now(UTC)
    try:
        record, repaired = audit.audit_and_repair(
            client, target.catalog, target.table, request.spec, columns, request.late_data, request.run_id, now
        )
    except iceberg_io.ConcurrentCommit as exc:
        raise OffloadError(f"repair of late data: {exc}; the next run audits again") from exc
    if repaired is None:
        return target, record
    _phase(settings, request, "repaired")
    return _Target(target.catalog, target.table.refresh(), repaired), record


def _open_target(settings: Settings, spec: TableSpec) -> tuple[Catalog, Table]:
    if spec.target.catalog != settings.catalog.name:
        raise OffloadError(
            f"target {spec.target.identifier} names catalog {spec.target.catalog!r}, but the configured catalog is "
            f"{settings.catalog.name!r} (ICEBERG_OFFLOAD_CATALOG_NAME)"
        )
    catalog = iceberg_io.open_catalog(settings.catalog)
    try:
        return catalog, iceberg_io.load_table(catalog, spec.target.catalog_identifier)
    except iceberg_io.TargetError as exc:
        raise OffloadError(f"{exc} (iceberg-offload ddl iceberg)") from exc


def _upstream_watermarks(catalog: Catalog, request: RunRequest) -> dict[str, Watermark]:
    """The committed watermark of each table this one waits for (the epoch for one never offloaded)."""
    upstream: dict[str, Watermark] = {}
    for name, identifier in request.upstream.items():
        try:
            table = iceberg_io.load_table(catalog, identifier.partition(".")[2])
        except iceberg_io.TargetError as exc:
            raise OffloadError(f"upstream table {name} ({identifier}) does not exist in the catalog") from exc
        upstream[name] = iceberg_io.committed_watermark(table) or Watermark(EPOCH)
    return upstream


@dataclass(frozen=True)
class _Target:
    """The table a run publishes into, and the snapshot it must still find current."""

    catalog: Catalog
    table: Table
    base_snapshot: int | None


def _skipped(request: RunRequest, plan: WindowPlan, started: float) -> OffloadResult:
    log.info(
        "%s: nothing to offload after %s (bound %s: %s)",
        request.spec.name,
        plan.committed,
        plan.bound.timestamp,
        plan.bound.reason,
    )
    return OffloadResult(
        table=request.spec.name,
        run_id=request.run_id,
        outcome="skipped",
        watermark_timestamp=format_timestamp(plan.committed.timestamp),
        watermark_sequence=plan.committed.sequence,
        duration_seconds=round(time.monotonic() - started, 3),
    )


@dataclass(frozen=True)
class _WindowRun:
    """A run's window, the target it publishes on, and its audit (repaired: committed already)."""

    window: Window
    target: _Target
    record: AuditRecord | None
    repaired: bool


def _commit_window(
    spark: SparkSession,
    settings: Settings,
    request: RunRequest,
    columns: list[ColumnMapping],
    client: Any,
    run: _WindowRun,
    started: float,
) -> OffloadResult:
    spec = request.spec
    window, target, record = run.window, run.target, run.record
    parts, rows = _plan_parts(client, settings, request, window)
    if rows == 0:
        return _idle_window(request, run, started)
    frame = _window_frame(spark, settings, spec, columns, parts)
    source = f"{spec.source.database}.{spec.source.table}"
    properties = summary_properties(window, request.run_id, source, spec.source.timestamp_column)
    if record is not None:
        properties.update(record.properties())
    staged = _stage(spark, target.table, spec, frame, properties, request.run_id)
    _phase(settings, request, "staged")
    try:
        iceberg_io.publish(target.catalog, target.table, staged, target.base_snapshot)
    except iceberg_io.ConcurrentCommit as exc:  # the staged snapshot is discarded
        raise OffloadError(str(exc)) from exc
    _phase(settings, request, "committed")
    added = int((staged.summary.get("added-records") if staged.summary else None) or 0)
    log.info("%s: committed %d rows in snapshot %d, watermark %s", spec.name, added, staged.snapshot_id, window.upper)
    return OffloadResult(
        table=spec.name,
        run_id=request.run_id,
        outcome="committed",
        rows=added,
        window_from=str(window.lower),
        window_to=str(window.upper),
        watermark_timestamp=format_timestamp(window.upper.timestamp),
        watermark_sequence=window.upper.sequence,
        snapshot_id=staged.snapshot_id,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _idle_window(request: RunRequest, run: _WindowRun, started: float) -> OffloadResult:
    """A window that holds no row commits no snapshot: its end is recorded as idle progress on
    the snapshot the run read (a table property, void once another commit follows it), so that
    an idle table's watermark keeps up (its dependents wait for it) without a snapshot a cycle."""
    spec, window, target = request.spec, run.window, run.target
    base = target.base_snapshot
    if run.record is not None and not run.repaired:  # the audit is recorded in a commit of its own
        recorded = audit.record_audit(target.catalog, target.table, spec, run.record, request.run_id)
        if recorded is not None:
            target, base = _Target(target.catalog, target.table.refresh(), recorded), recorded
    if not watermark_io.record_idle(target.catalog, target.table, base, window.upper, spec.source.timestamp_column):
        raise OffloadError(
            f"another commit changed {spec.target.identifier} while this run ran: it recorded nothing; "
            "the next run continues from the committed watermark"
        )
    log.info("%s: no rows in %s: watermark %s recorded without a snapshot", spec.name, window, window.upper)
    return OffloadResult(
        table=spec.name,
        run_id=request.run_id,
        outcome="skipped",
        window_from=str(window.lower),
        window_to=str(window.upper),
        watermark_timestamp=format_timestamp(window.upper.timestamp),
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _plan_parts(client: Any, settings: Settings, request: RunRequest, window: Window) -> tuple[list[Window], int]:
    """The window's sub-windows, one read task each, and the rows ClickHouse counts in it."""
    spec = request.spec
    stats = clickhouse_io.window_stats(client, spec.source, window)
    count = subwindow_count(
        window,
        target_span=timedelta(minutes=settings.subwindow_minutes),
        max_parts=settings.subwindow_max,
        data_from=stats.first_timestamp,
    )
    parts = split_window(window, count, data_from=stats.first_timestamp)
    log.info(
        "%s: offloading %s (%d rows expected, %d sub-windows, run %s)",
        spec.name,
        window,
        stats.rows,
        len(parts),
        request.run_id,
    )
    return parts, stats.rows


def _window_frame(
    spark: SparkSession, settings: Settings, spec: TableSpec, columns: Sequence[ColumnMapping], parts: list[Window]
) -> DataFrame:
    """The window's rows as a frame of the target's schema, one task per sub-window reading ClickHouse."""
    schema: StructType = spark.table(spec.target.identifier).schema
    arrow = arrow_schema(schema)
    public = replace(settings.clickhouse, password="")
    reader: Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]] = partial(
        read_subwindows, public, spec.source, columns, arrow.serialize().to_pybytes()
    )
    bounds = spark.sparkContext.parallelize([bounds_row(w) for w in parts], len(parts))
    return spark.createDataFrame(bounds, BOUNDS).mapInArrow(reader, schema)


def _stage(
    spark: SparkSession, table: Table, spec: TableSpec, frame: DataFrame, properties: Mapping[str, str], run_id: str
) -> Snapshot:
    """Append the window as a staged snapshot (Iceberg write-audit-publish): written, not visible.

    The write-audit-publish id is set on this run's Spark session only, and unique to this
    attempt, so that a staged snapshot left by an earlier attempt of the same run is never taken
    for this one's.
    """
    iceberg_io.enable_staging(table)
    wap_id = f"{run_id}.{uuid.uuid4().hex[:12]}"
    writer = frame.writeTo(spec.target.identifier)
    for key, value in properties.items():
        writer = writer.option(f"snapshot-property.{key}", value)
    spark.conf.set(WAP_ID_CONF, wap_id)
    try:
        writer.append()
    finally:
        spark.conf.unset(WAP_ID_CONF)
    return iceberg_io.staged_snapshot(table.refresh(), wap_id)


def _write_mirror(client: Any, result: OffloadResult) -> None:
    previous = clickhouse_io.read_mirror(client, result.table)
    clickhouse_io.write_mirror(client, after_run(previous, result, datetime.now(UTC)))


def record_failure(settings: Settings, request: RunRequest, error: str, duration: float) -> OffloadResult:
    """The failed result, mirrored into offload_watermarks when ClickHouse can be reached."""
    result = OffloadResult(
        table=request.spec.name,
        run_id=request.run_id,
        outcome="failed",
        duration_seconds=round(duration, 3),
        error=error,
    )
    if request.mirror:
        try:
            client = clickhouse_io.connect(settings.clickhouse)
            try:
                _write_mirror(client, result)
            finally:
                client.close()
        except Exception as exc:  # the run's own error is what matters; note this one
            log.warning("could not record the failure in offload_watermarks: %s", scrub(str(exc), secrets(settings)))
    return result


def secrets(settings: Settings) -> list[str]:
    """What must never appear in an error message or a log line."""
    return [settings.clickhouse.password, settings.catalog.password]
