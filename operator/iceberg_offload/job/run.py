"""The offload run on Spark: read a window from ClickHouse inside the executors, append it to
Iceberg in one commit whose snapshot summary carries the new watermark.

Exactly once by construction: the lower bound is always the watermark read from the target
table's own snapshot history, and the watermark moves only in the same atomic commit as the
rows. A run that dies anywhere either committed (its window is then skipped or clipped by the
next run) or did not (the next run reads the same window again).
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
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from iceberg_offload.adapters import clickhouse_io
from iceberg_offload.core.mirror import after_run, scrub
from iceberg_offload.core.planning import (
    WindowPlan,
    committed_watermark,
    plan_window,
    split_window,
    subwindow_count,
    upper_bound,
)
from iceberg_offload.core.result import OffloadResult, summary_properties
from iceberg_offload.core.settings import Settings
from iceberg_offload.core.tables import TableSpec
from iceberg_offload.core.typemap import ColumnMapping
from iceberg_offload.core.watermark import EPOCH, Watermark, Window, format_timestamp
from iceberg_offload.job.columns import arrow_schema, plan_columns
from iceberg_offload.job.errors import OffloadError
from iceberg_offload.job.metadata import (
    spark_commit_of_run,
    spark_committed_watermark,
    spark_current_snapshot,
    table_exists,
)
from iceberg_offload.job.read import BOUNDS, bounds_row, read_subwindows

log = logging.getLogger("iceberg_offload.job")


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
    # Called as the run passes each point of PHASES: lets a test interleave runs or end one there.
    on_phase: Callable[[str], None] | None = None


# The points a run passes, in order: window planned (nothing written), rows written but not yet
# visible, rows and watermark committed (the mirror not yet updated).
PHASES = ("planned", "staged", "committed")


def _phase(settings: Settings, request: RunRequest, name: str) -> None:
    if request.on_phase is not None:
        request.on_phase(name)
    if settings.failpoint == name:
        log.warning("failpoint %s: the run dies here", name)
        os._exit(137)


def run_offload(spark: SparkSession, settings: Settings, request: RunRequest) -> OffloadResult:
    """One run. Returns the result; on failure raises OffloadError (or the engine's error) after
    committing nothing."""
    started = time.monotonic()
    spec = request.spec
    target = spec.target.identifier
    _check_target(spark, settings, spec)
    client = clickhouse_io.connect(settings.clickhouse)
    try:
        columns = plan_columns(clickhouse_io.describe(client, spec.source), spark.table(target).schema, spec)
        base_snapshot = spark_current_snapshot(spark, target)
        committed = spark_committed_watermark(spark, target)
        if committed is None and not spark.table(target).isEmpty():
            raise OffloadError(
                f"Iceberg table {target} has rows but no snapshot in its history carries a watermark "
                "(expired by maintenance?): stamp the right one with 'iceberg-offload reset' before offloading"
            )
        bound = upper_bound(
            now=request.now or datetime.now(UTC),
            buffer=spec.buffer,
            upstream=_upstream_watermarks(spark, request),
            candle_interval=spec.candle_interval,
            requested_to=request.requested_to,
        )
        plan = plan_window(committed, bound, requested_from=request.requested_from)
        _phase(settings, request, "planned")
        if plan.window is None:
            result = _skipped(request, plan, started)
        else:
            result = _commit_window(spark, settings, request, columns, client, plan.window, base_snapshot, started)
        if request.mirror:
            _write_mirror(client, result)
        return result
    finally:
        client.close()


def _check_target(spark: SparkSession, settings: Settings, spec: TableSpec) -> None:
    target = spec.target.identifier
    if spec.target.catalog != settings.catalog.name:
        raise OffloadError(
            f"target {target} names catalog {spec.target.catalog!r}, but the configured catalog is "
            f"{settings.catalog.name!r} (ICEBERG_OFFLOAD_CATALOG_NAME)"
        )
    if not table_exists(spark, target):
        raise OffloadError(f"Iceberg table {target} does not exist: create it with the DDL (iceberg-offload ddl)")


def _upstream_watermarks(spark: SparkSession, request: RunRequest) -> dict[str, Watermark]:
    """The committed watermark of each table this one waits for (the epoch for one never offloaded)."""
    upstream: dict[str, Watermark] = {}
    for name, identifier in request.upstream.items():
        if not table_exists(spark, identifier):
            raise OffloadError(f"upstream table {name} ({identifier}) does not exist in the catalog")
        upstream[name] = spark_committed_watermark(spark, identifier) or Watermark(EPOCH)
    return upstream


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


def _commit_window(
    spark: SparkSession,
    settings: Settings,
    request: RunRequest,
    columns: list[ColumnMapping],
    client: Any,
    window: Window,
    base_snapshot: int | None,
    started: float,
) -> OffloadResult:
    spec, target = request.spec, request.spec.target.identifier
    effective, parts = _plan_parts(client, settings, request, window)
    frame = _window_frame(spark, settings, spec, columns, parts)
    source = f"{spec.source.database}.{spec.source.table}"
    properties = summary_properties(effective, effective.upper, request.run_id, source)
    _overwrite_window(frame, spec, effective, properties, base_snapshot)
    commit = spark_commit_of_run(spark, target, request.run_id)
    if commit is None:
        raise OffloadError(f"the append to {target} finished but no snapshot carries run id {request.run_id}")
    _phase(settings, request, "committed")
    snapshot_id, added = commit
    log.info("%s: committed %d rows in snapshot %d, watermark %s", spec.name, added, snapshot_id, effective.upper)
    return OffloadResult(
        table=spec.name,
        run_id=request.run_id,
        outcome="committed",
        rows=added,
        window_from=str(effective.lower),
        window_to=str(effective.upper),
        watermark_timestamp=format_timestamp(effective.upper.timestamp),
        watermark_sequence=effective.upper.sequence,
        snapshot_id=snapshot_id,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _plan_parts(client: Any, settings: Settings, request: RunRequest, window: Window) -> tuple[Window, list[Window]]:
    """The window the commit covers, up to its new watermark, and its sub-windows."""
    spec = request.spec
    stats = clickhouse_io.window_stats(client, spec.source, window)
    # The commit covers exactly (lower, new watermark]: rows at the upper timestamp that arrive
    # later with a higher sequence fall into the next window instead of being lost.
    effective = Window(window.lower, committed_watermark(window, stats.max_sequence_at_upper))
    count = subwindow_count(
        effective,
        target_span=timedelta(minutes=settings.subwindow_minutes),
        max_parts=settings.subwindow_max,
        data_from=stats.first_timestamp,
    )
    parts = split_window(effective, count, data_from=stats.first_timestamp)
    log.info(
        "%s: offloading %s (%d rows expected, %d sub-windows, run %s)",
        spec.name,
        effective,
        stats.rows,
        len(parts),
        request.run_id,
    )
    return effective, parts


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


def _overwrite_window(
    frame: DataFrame, spec: TableSpec, effective: Window, properties: Mapping[str, str], base_snapshot: int | None
) -> None:
    target = spec.target.identifier
    writer = frame.writeTo(target).option("isolation-level", "serializable")
    if base_snapshot is not None:
        writer = writer.option("validate-from-snapshot-id", str(base_snapshot))
    for key, value in properties.items():
        writer = writer.option(f"snapshot-property.{key}", value)
    # An overwrite of the window's time range (which holds no rows yet) rather than an append:
    # Iceberg then refuses the commit if any other commit since the snapshot the watermark was
    # read from added rows in that range, so two overlapping runs can never both commit it.
    ts = F.col(spec.source.timestamp_column)
    window_range = (ts > F.lit(effective.lower.timestamp)) & (ts <= F.lit(effective.upper.timestamp))
    try:
        writer.overwrite(window_range)
    except Exception as exc:
        if "conflicting files" in str(exc) or "ValidationException" in str(exc):
            raise OffloadError(
                f"another run committed rows of {effective} to {target} while this one ran: nothing was written "
                "by this run; the next run continues from the new watermark"
            ) from exc
        raise


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
