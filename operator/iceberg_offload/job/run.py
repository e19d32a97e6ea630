"""The offload run on Spark: read a window from ClickHouse inside the executors, append it to
Iceberg in one commit whose snapshot summary carries the new watermark.

Exactly once by construction: the lower bound is always the watermark read from the target
table's own snapshot history, and the watermark moves only in the same atomic commit as the
rows. A run that dies anywhere either committed (its window is then skipped or clipped by the
next run) or did not (the next run reads the same window again).
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from iceberg_offload.adapters import clickhouse_io
from iceberg_offload.adapters.ddl import iceberg_statements
from iceberg_offload.adapters.iceberg_io import open_catalog
from iceberg_offload.core.catalog import spark_catalog_conf, spark_catalog_secret_conf
from iceberg_offload.core.mirror import after_run, scrub
from iceberg_offload.core.planning import (
    committed_watermark,
    plan_window,
    split_window,
    subwindow_count,
    upper_bound,
)
from iceberg_offload.core.result import (
    RUN_ID,
    WATERMARK_TIMESTAMP,
    OffloadResult,
    newest_watermark,
    summary_properties,
)
from iceberg_offload.core.settings import ClickHouseSettings, Settings
from iceberg_offload.core.tables import LAYERS, SourceSpec, SpecError, TableSpec, TargetSpec
from iceberg_offload.core.typemap import ColumnMapping, IcebergType, TypeMappingError, check_target, map_column
from iceberg_offload.core.watermark import Watermark, Window, WindowError, format_timestamp, parse_timestamp

log = logging.getLogger("iceberg_offload.job")

ICEBERG_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
JDBC_JARS = ("/usr/share/java/sqlite-jdbc.jar", "/usr/share/java/postgresql.jar")
PASSWORD_VARIABLE = "ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD"


class OffloadError(RuntimeError):
    """A run that cannot go on; its message says why, and nothing was committed."""


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


# --- Spark session -------------------------------------------------------------------------


def iceberg_runtime_jar() -> Path:
    """The Iceberg Spark runtime jar that the pinned PyPI package carries."""
    jar = importlib.resources.files("snowpark_connect_deps_iceberg") / "jars" / ICEBERG_JAR
    return Path(str(jar))


def spark_session(settings: Settings, app_name: str = "iceberg-offload") -> SparkSession:
    """The session a run uses. With a master set (local mode) it is built here, on loopback;
    without one, spark-submit (the Spark Operator) has configured it and only the catalog is added."""
    builder = SparkSession.builder.appName(app_name)
    conf: dict[str, str] = {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.session.timeZone": "UTC",
        **spark_catalog_conf(settings.catalog),
        **spark_catalog_secret_conf(settings.catalog),
    }
    if settings.spark_master:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        jars = [str(iceberg_runtime_jar()), *(j for j in JDBC_JARS if Path(j).exists())]
        conf.update(
            {
                "spark.master": settings.spark_master,
                "spark.jars": ",".join(jars),
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.sql.shuffle.partitions": "4",
                "spark.driver.memory": os.environ.get("SPARK_DRIVER_MEMORY", "2g"),
            }
        )
    if settings.catalog.type == "jdbc":
        open_catalog(settings.catalog)  # creates the catalog's tables, which Spark must not
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def apply_iceberg_ddl(spark: SparkSession, catalog: str, namespace: str) -> None:
    """Create the cold namespace and its tables (idempotent)."""
    for statement in iceberg_statements(catalog, namespace):
        spark.sql(statement)


# --- Iceberg metadata through Spark ----------------------------------------------------------


def table_exists(spark: SparkSession, identifier: str) -> bool:
    return bool(spark.catalog.tableExists(identifier))


def spark_current_snapshot(spark: SparkSession, identifier: str) -> int | None:
    """The table's current snapshot id (None for a table without snapshots)."""
    rows = spark.sql(
        f"SELECT snapshot_id FROM {identifier}.history WHERE is_current_ancestor ORDER BY made_current_at DESC LIMIT 1"
    ).collect()
    return int(rows[0]["snapshot_id"]) if rows else None


def spark_committed_watermark(spark: SparkSession, identifier: str) -> Watermark | None:
    """The newest watermark in the table's current lineage (maintenance snapshots carry none)."""
    rows = spark.sql(
        f"SELECT s.summary FROM {identifier}.history h JOIN {identifier}.snapshots s "
        "ON h.snapshot_id = s.snapshot_id "
        f"WHERE h.is_current_ancestor AND s.summary['{WATERMARK_TIMESTAMP}'] IS NOT NULL "
        "ORDER BY h.made_current_at DESC LIMIT 1"
    ).collect()
    return newest_watermark(dict(r["summary"]) for r in rows)


def spark_commit_of_run(spark: SparkSession, identifier: str, run_id: str) -> tuple[int, int] | None:
    """(snapshot id, rows added) of the commit a run made, if it made one."""
    snapshots = spark.table(f"{identifier}.snapshots")
    rows = (
        snapshots.where(F.col("summary").getItem(RUN_ID) == F.lit(run_id))
        .orderBy(F.col("committed_at").desc())
        .select("snapshot_id", F.col("summary").getItem("added-records").alias("added"))
        .limit(1)
        .collect()
    )
    if not rows:
        return None
    return int(rows[0]["snapshot_id"]), int(rows[0]["added"] or 0)


# --- columns ------------------------------------------------------------------------------


def plan_columns(source_columns: Sequence[tuple[str, str]], target: StructType, spec: TableSpec) -> list[ColumnMapping]:
    """The SELECT of every target column from its source column, type-checked."""
    by_name = dict(source_columns)
    where = f"ClickHouse table {spec.source.database}.{spec.source.table}"
    for column in filter(None, (spec.source.timestamp_column, spec.source.sequence_column)):
        if column not in by_name:
            raise OffloadError(f"column {column!r} named in the spec does not exist in {where}")
    ts_type = by_name[spec.source.timestamp_column]
    if "DateTime" not in ts_type:
        raise OffloadError(f"timestamp column {spec.source.timestamp_column!r} of {where} is {ts_type}, not a DateTime")
    if spec.source.sequence_column and "Int" not in by_name[spec.source.sequence_column]:
        raise OffloadError(
            f"sequence column {spec.source.sequence_column!r} of {where} is "
            f"{by_name[spec.source.sequence_column]}, not an integer"
        )
    mappings = []
    for f in target.fields:
        if f.name not in by_name:
            raise OffloadError(f"column {f.name!r} of Iceberg table {spec.target.identifier} does not exist in {where}")
        mapping = map_column(f.name, by_name[f.name])
        check_target(mapping, _iceberg_type(f.dataType.simpleString()), target_required=not f.nullable)
        mappings.append(mapping)
    return mappings


def _iceberg_type(spark_type: str) -> IcebergType:
    if spark_type.startswith("decimal("):
        precision, scale = spark_type[len("decimal(") : -1].split(",")
        return IcebergType("decimal", int(precision), int(scale))
    return IcebergType(spark_type)


def arrow_schema(target: StructType) -> pa.Schema:
    def arrow_type(spark_type: str) -> pa.DataType:
        simple: dict[str, pa.DataType] = {
            "timestamp": pa.timestamp("us", tz="UTC"),
            "date": pa.date32(),
            "int": pa.int32(),
            "bigint": pa.int64(),
            "float": pa.float32(),
            "double": pa.float64(),
            "string": pa.string(),
            "boolean": pa.bool_(),
        }
        if spark_type in simple:
            return simple[spark_type]
        t = _iceberg_type(spark_type)
        if t.name == "decimal":
            return pa.decimal128(t.precision, t.scale)
        raise TypeMappingError(f"Iceberg column type {spark_type} is not supported by the offload")

    return pa.schema(
        [pa.field(f.name, arrow_type(f.dataType.simpleString()), nullable=f.nullable) for f in target.fields]
    )


# --- executor side ------------------------------------------------------------------------

_BOUNDS = "lo_ts string, lo_seq long, hi_ts string, hi_seq long"


def _bounds_row(window: Window) -> Row:
    return Row(
        lo_ts=format_timestamp(window.lower.timestamp),
        lo_seq=window.lower.sequence,
        hi_ts=format_timestamp(window.upper.timestamp),
        hi_seq=window.upper.sequence,
    )


def read_subwindows(
    clickhouse: ClickHouseSettings,
    source: SourceSpec,
    columns: Sequence[ColumnMapping],
    schema_ipc: bytes,
    batches: Iterable[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """Runs in the executors: read each sub-window from ClickHouse, conformed to the target schema.

    The password is read from the executor's own environment (a Secret reference in
    Kubernetes), so it never travels inside Spark's serialized tasks.
    """
    settings = replace(clickhouse, password=os.environ.get(PASSWORD_VARIABLE, ""))
    target = pa.ipc.read_schema(pa.py_buffer(schema_ipc))
    client = clickhouse_io.connect(settings, session=False)
    try:
        for batch in batches:
            for bounds in batch.to_pylist():
                window = Window(
                    Watermark(parse_timestamp(bounds["lo_ts"]), bounds["lo_seq"]),
                    Watermark(parse_timestamp(bounds["hi_ts"]), bounds["hi_seq"]),
                )
                for records in clickhouse_io.read_window(client, source, columns, window):
                    yield conform(records, target)
    finally:
        client.close()


def conform(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """Select and cast by name: Spark does not check what mapInArrow yields against its schema."""
    names = set(batch.schema.names)
    missing = [f.name for f in target if f.name not in names]
    if missing:
        raise OffloadError(f"ClickHouse returned no column {', '.join(missing)}")
    arrays = []
    for f in target:
        column = batch.column(f.name).cast(f.type)
        if not f.nullable and column.null_count:
            raise OffloadError(f"column {f.name!r} holds NULL but the Iceberg column is required")
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=target)


# --- the run ------------------------------------------------------------------------------


def run_offload(spark: SparkSession, settings: Settings, request: RunRequest) -> OffloadResult:
    """One run. Returns the result; on failure raises OffloadError (or the engine's error) after
    committing nothing."""
    started = time.monotonic()
    spec = request.spec
    target = spec.target.identifier
    if spec.target.catalog != settings.catalog.name:
        raise OffloadError(
            f"target {target} names catalog {spec.target.catalog!r}, but the configured catalog is "
            f"{settings.catalog.name!r} (ICEBERG_OFFLOAD_CATALOG_NAME)"
        )
    if not table_exists(spark, target):
        raise OffloadError(f"Iceberg table {target} does not exist: create it with the DDL (iceberg-offload ddl)")
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
        upstream: dict[str, Watermark] = {}
        for name, identifier in request.upstream.items():
            if not table_exists(spark, identifier):
                raise OffloadError(f"upstream table {name} ({identifier}) does not exist in the catalog")
            upstream[name] = spark_committed_watermark(spark, identifier) or Watermark(datetime(1970, 1, 1, tzinfo=UTC))
        now = request.now or datetime.now(UTC)
        bound = upper_bound(
            now=now,
            buffer=spec.buffer,
            upstream=upstream,
            candle_interval=spec.candle_interval,
            requested_to=request.requested_to,
        )
        plan = plan_window(committed, bound, requested_from=request.requested_from)
        if plan.window is None:
            log.info(
                "%s: nothing to offload after %s (bound %s: %s)",
                spec.name,
                plan.committed,
                bound.timestamp,
                bound.reason,
            )
            result = OffloadResult(
                table=spec.name,
                run_id=request.run_id,
                outcome="skipped",
                watermark_timestamp=format_timestamp(plan.committed.timestamp),
                watermark_sequence=plan.committed.sequence,
                duration_seconds=round(time.monotonic() - started, 3),
            )
        else:
            result = _commit_window(spark, settings, request, columns, client, plan.window, base_snapshot, started)
        if request.mirror:
            _write_mirror(client, result)
        return result
    finally:
        client.close()


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
    stats = clickhouse_io.window_stats(client, spec.source, window)
    # The commit covers exactly (lower, new watermark]: rows at the upper timestamp that arrive
    # later with a higher sequence fall into the next window instead of being lost.
    new_mark = committed_watermark(window, stats.max_sequence_at_upper)
    effective = Window(window.lower, new_mark)
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
    schema = spark.table(target).schema
    arrow = arrow_schema(schema)
    public = replace(settings.clickhouse, password="")
    reader: Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]] = partial(
        read_subwindows, public, spec.source, columns, arrow.serialize().to_pybytes()
    )
    bounds = spark.sparkContext.parallelize([_bounds_row(w) for w in parts], len(parts))
    frame = spark.createDataFrame(bounds, _BOUNDS).mapInArrow(reader, schema)
    properties = summary_properties(effective, new_mark, request.run_id, f"{spec.source.database}.{spec.source.table}")
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
    commit = spark_commit_of_run(spark, target, request.run_id)
    if commit is None:
        raise OffloadError(f"the append to {target} finished but no snapshot carries run id {request.run_id}")
    if settings.failpoint == "after-commit":
        log.warning("failpoint after-commit: ending the run before the mirror update")
        os._exit(137)
    snapshot_id, added = commit
    log.info("%s: committed %d rows in snapshot %d, watermark %s", spec.name, added, snapshot_id, new_mark)
    return OffloadResult(
        table=spec.name,
        run_id=request.run_id,
        outcome="committed",
        rows=added,
        window_from=str(effective.lower),
        window_to=str(effective.upper),
        watermark_timestamp=format_timestamp(new_mark.timestamp),
        watermark_sequence=new_mark.sequence,
        snapshot_id=snapshot_id,
        duration_seconds=round(time.monotonic() - started, 3),
    )


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
            log.warning("could not record the failure in offload_watermarks: %s", scrub(str(exc), _secrets(settings)))
    return result


def _secrets(settings: Settings) -> list[str]:
    return [settings.clickhouse.password, settings.catalog.password]


# --- command line -------------------------------------------------------------------------


def _watermark_arg(text: str) -> Watermark:
    """TIMESTAMP or TIMESTAMP#SEQUENCE."""
    stamp, _, seq = text.partition("#")
    return Watermark(parse_timestamp(stamp), int(seq) if seq else 0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="offload",
        description="Offload one window of a ClickHouse table into its Iceberg table, exactly once.",
    )
    p.add_argument("--table", required=True, help="the offloaded table's name (offload_watermarks.table_name)")
    p.add_argument("--layer", default="bronze", choices=LAYERS)
    p.add_argument("--source-database", default="default")
    p.add_argument("--source-table", help="ClickHouse table or view (default: --table)")
    p.add_argument("--timestamp-column", required=True)
    p.add_argument("--sequence-column", help="orders rows that share a timestamp")
    p.add_argument("--target", required=True, help="Iceberg table as <catalog>.<namespace>.<table>")
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="NAME=CATALOG.NAMESPACE.TABLE",
        help="a table this one waits for: never offload past its committed watermark",
    )
    p.add_argument("--buffer-seconds", type=int, default=300, help="offload only rows older than this (default 300)")
    p.add_argument("--candle-seconds", type=int, help="candle interval: offload only closed candles")
    p.add_argument(
        "--from",
        dest="window_from",
        type=_watermark_arg,
        help="expected window start (checked against the committed watermark)",
    )
    p.add_argument(
        "--to", dest="window_to", type=parse_timestamp, help="window end (inclusive); default now minus the buffer"
    )
    p.add_argument("--now", type=parse_timestamp, help="the clock, for replays and tests (default: now)")
    p.add_argument("--run-id", help="run identifier recorded in the snapshot summary")
    p.add_argument("--no-mirror", action="store_true", help="do not write offload_watermarks")
    p.add_argument("--result-file", type=Path, help="also write the result JSON here")
    return p


def request_from_args(args: argparse.Namespace) -> RunRequest:
    catalog, _, rest = args.target.partition(".")
    namespace, _, table = rest.partition(".")
    if not (catalog and namespace and table) or "." in table:
        raise SpecError(f"--target {args.target!r} is not <catalog>.<namespace>.<table>")
    upstream: dict[str, str] = {}
    for item in args.upstream:
        name, sep, identifier = item.partition("=")
        if not sep or identifier.count(".") != 2:
            raise SpecError(f"--upstream {item!r} is not NAME=<catalog>.<namespace>.<table>")
        upstream[name] = identifier
    if args.buffer_seconds < 0:
        raise SpecError("--buffer-seconds must not be negative")
    spec = TableSpec(
        name=args.table,
        layer=args.layer,
        source=SourceSpec(
            args.source_database, args.source_table or args.table, args.timestamp_column, args.sequence_column
        ),
        target=TargetSpec(catalog, namespace, table),
        buffer=timedelta(seconds=args.buffer_seconds),
        candle_interval=timedelta(seconds=args.candle_seconds) if args.candle_seconds else None,
    )
    if args.window_from and args.window_to and args.window_from.timestamp > args.window_to:
        raise WindowError(f"--from {args.window_from} is after --to {format_timestamp(args.window_to)}")
    request = RunRequest(
        spec=spec,
        upstream=upstream,
        now=args.now,
        requested_from=args.window_from,
        requested_to=args.window_to,
        mirror=not args.no_mirror,
    )
    return replace(request, run_id=args.run_id) if args.run_id else request


def main(argv: Sequence[str] | None = None, spark: SparkSession | None = None, settings: Settings | None = None) -> int:
    """Run one table's offload and print its result line; exit 0 on success, 1 on failure, 2 on bad input."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        settings = settings or Settings.from_env()
        request = request_from_args(args)
    except (ValueError, SpecError) as exc:
        print(f"offload: error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        session = spark or spark_session(settings, f"offload-{request.spec.name}")
        result = run_offload(session, settings, request)
    except Exception as exc:
        message = scrub(_describe(exc), _secrets(settings))
        log.error("%s: run %s failed: %s", request.spec.name, request.run_id, message)
        result = record_failure(settings, request, message, time.monotonic() - started)
    _emit(result, args.result_file)
    return 0 if result.outcome != "failed" else 1


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")


def _describe(exc: BaseException) -> str:
    """One line that says what went wrong. An error raised in the executors reaches the driver
    wrapped in a Python worker's traceback: its last error line is the cause."""
    if isinstance(exc, (OffloadError, WindowError, TypeMappingError, clickhouse_io.SourceError)):
        return str(exc)
    lines = str(exc).strip().splitlines()
    causes = [m.group(2).strip() for m in map(_ERROR_LINE.match, lines) if m]
    if "thrown from the Python worker" in str(exc) and causes:
        return f"in a Spark executor: {causes[-1]}"[:1000]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _emit(result: OffloadResult, result_file: Path | None) -> None:
    line = result.to_line()
    print(line, flush=True)
    if result_file is not None:
        result_file.write_text(line.removeprefix("OFFLOAD_RESULT ") + "\n")
