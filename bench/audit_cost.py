"""What the audit costs: one audit_range over the last 24 h, as every offload run now does, and
one bucket, as a backfill does per bucket.

    .venv/bin/python bench/audit_cost.py [--rows-per-day 1000000] [--hours 24] [--no-reference]

Builds, in a temporary directory, the embedded ClickHouse behind its HTTP endpoint on 127.0.0.1
and a SQLite Iceberg catalog (no Spark): --hours of Binance trades at --rows-per-day into
bronze_trades_binance (silver and the gold candles follow by ClickHouse's materialized views),
and the same rows in Iceberg, written by pyiceberg from ClickHouse's Arrow read of the job's
SELECT, one append per 15-minute cycle as the offload commits them. Then, per audited table:

  audit 24 h, 1 h buckets     audit_range of the last --hours (what job/late.py runs each cycle)
  audit 1 bucket              audit_range of the last hour alone (a backfill's step)
  ClickHouse side / Iceberg   each side of the same audit timed alone, with rows read
  Iceberg, per-row reference  the Iceberg side computed value by value with core.audit's
                              canonical_value and row_digest (the implementation before
                              adapters/arrow_audit.py), checked equal to the vectorised one

and for bronze also the Iceberg side over all nine columns (what a wider audit would cost).
Every audit must find the two sides equal; the benchmark stops with an error otherwise.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client
from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.adapters.audit import audit_range, audited_columns
from iceberg_offload.core import audit, query
from iceberg_offload.core.settings import local_settings
from iceberg_offload.core.tables import TableSpec, TargetSpec, runbook_tables
from iceberg_offload.core.typemap import ColumnMapping, IcebergType, arrow_factory, map_column
from iceberg_offload.core.watermark import Watermark, Window
from iceberg_offload.local.chhttp import ClickHouseHTTPServer
from iceberg_offload.local.generator import binance_trades
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, MonthTransform, Transform

BRONZE, GOLD = "bronze_trades_binance", "gold_ohlcv_1m"
NAMESPACE = "bench_audit"
HOUR = timedelta(hours=1)
CYCLE = timedelta(minutes=15)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def reset_peak_rss() -> None:
    """Start a new peak-RSS period for this process (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spec_of(name: str) -> TableSpec:
    spec = next(t for t in runbook_tables() if t.name == name)
    return TableSpec(spec.name, spec.layer, spec.source, TargetSpec("demo", NAMESPACE, name), buffer=timedelta(0))


def source_columns(client: Client, spec: TableSpec) -> list[ColumnMapping]:
    return [map_column(name, ch_type) for name, ch_type in clickhouse_io.describe(client, spec.source)]


def create_iceberg_table(catalog: Catalog, spec: TableSpec, columns: Sequence[ColumnMapping]) -> Table:
    """The target as the DDL makes it (types, time partitioning), created by pyiceberg."""
    fields = []
    for c in columns:
        factory, args = arrow_factory(c.iceberg_type)
        fields.append(pa.field(c.name, getattr(pa, factory)(*args), nullable=c.nullable))
    table = catalog.create_table(spec.target.catalog_identifier, schema=pa.schema(fields))
    transform: Transform[Any, int] = MonthTransform() if spec.candle_interval else DayTransform()
    with table.update_spec() as update:
        update.add_field(spec.source.timestamp_column, transform, f"{spec.source.timestamp_column}_part")
    return table


def offload(
    client: Client, table: Table, spec: TableSpec, columns: Sequence[ColumnMapping], lo: datetime, hi: datetime
) -> int:
    """Copy [lo, hi) from ClickHouse to Iceberg, one pyiceberg append per 15-minute cycle."""
    schema, rows = table.schema().as_arrow(), 0
    while lo < hi:
        upper = min(hi, lo + CYCLE)
        q = query.select_window(spec.source, columns, Window(Watermark(lo), Watermark(upper)))
        arrow = client.query_arrow(q.sql, parameters=q.parameters)
        if arrow.num_rows:
            table.append(pa.Table.from_arrays([arrow.column(f.name).cast(f.type) for f in schema], schema=schema))
            rows += arrow.num_rows
        lo = upper
    return rows


def clickhouse_read_rows(
    client: Client, spec: TableSpec, columns: Sequence[ColumnMapping], span: Window, width: timedelta
) -> str:
    """The rows ClickHouse read for the audit's query as its summary reports them (read_rows;
    the embedded endpoint reports only non-streamed results, hence wait_end_of_query), beside
    the rows in the window (a count): a real server reads at least those, whole granules."""
    q = query.audit_buckets(spec.source, columns, span, width)
    try:
        result = client.query(q.sql, parameters=q.parameters, settings={"wait_end_of_query": 1})
        read = str(result.summary.get("read_rows", "?"))
    except Exception as exc:  # the setting is transport-only; an endpoint may refuse it
        read = f"? ({type(exc).__name__})"
    where = query.window_predicate(spec.source, span)
    rows = client.query(f"SELECT count() FROM {spec.source.qualified} WHERE {where.sql}", parameters=where.parameters)
    return f"{rows.result_rows[0][0]} in window, summary read_rows {read}"


def _scan(table: Table, spec: TableSpec, span: Window, columns: Sequence[str] = ()) -> Any:
    ts_col = spec.source.timestamp_column
    lo, hi = span.lower.timestamp.isoformat(), span.upper.timestamp.isoformat()
    selected = tuple(dict.fromkeys([ts_col, *columns])) if columns else ("*",)
    return table.scan(row_filter=f"{ts_col} >= '{lo}' AND {ts_col} < '{hi}'", selected_fields=selected)


def reference_iceberg_side(
    table: Table, spec: TableSpec, columns: Sequence[tuple[str, IcebergType]], span: Window, width: timedelta
) -> dict[int, audit.BucketStats]:
    """The Iceberg side value by value, as before adapters/arrow_audit.py: the reference."""
    ts_col = spec.source.timestamp_column
    scan = _scan(table, spec, span, [name for name, _ in columns])

    def digests() -> Any:
        for batch in scan.to_arrow_batch_reader():
            values = [batch.column(name).to_pylist() for name, _ in columns]
            for i, timestamp in enumerate(batch.column(ts_col).to_pylist()):
                texts = (audit.canonical_value(v[i], t) for v, (_, t) in zip(values, columns, strict=True))
                yield timestamp, audit.row_digest(texts)

    return audit.bucket_stats(digests(), width)


def iceberg_rows_scanned(table: Table, spec: TableSpec, span: Window) -> tuple[int, int]:
    """(rows in the files the scan reads, rows the filter keeps)."""
    scan = _scan(table, spec, span)
    return sum(task.file.record_count for task in scan.plan_files()), scan.count()


@dataclass
class Line:
    what: str
    seconds: float
    rows: str = ""
    peak: float | None = None


def audit_lines(
    client: Client, table: Table, spec: TableSpec, lower: datetime, upper: datetime, label: str, reference: bool
) -> list[Line]:
    """One audit_range of [lower, upper) in 1 h buckets, then each side alone, with rows read."""
    lines: list[Line] = []
    reset_peak_rss()
    report, seconds = timed(lambda: audit_range(client, table, spec, lower, upper, HOUR))
    if not report.in_sync:
        raise SystemExit(f"{spec.name} {label}: the sides differ: {report.summary()}")
    lines.append(Line(f"{label}: audit_range", seconds, f"{len(report.buckets)} buckets", peak_rss_mib()))
    columns = audited_columns(spec, clickhouse_io.describe(client, spec.source))
    typed = [(c.name, c.iceberg_type) for c in columns]
    span = Window(Watermark(lower), Watermark(upper))
    ours, seconds = timed(lambda: clickhouse_io.audit_buckets(client, spec.source, columns, span, HOUR))
    lines.append(Line(f"{label}: ClickHouse side", seconds, clickhouse_read_rows(client, spec, columns, span, HOUR)))
    reset_peak_rss()
    ts_col = spec.source.timestamp_column
    theirs, seconds = timed(lambda: iceberg_io.audit_buckets(table, ts_col, typed, span, HOUR))
    in_files, kept = iceberg_rows_scanned(table, spec, span)
    lines.append(Line(f"{label}: Iceberg side", seconds, f"{in_files} in files, {kept} kept", peak_rss_mib()))
    if ours != theirs:
        raise SystemExit(f"{spec.name} {label}: ClickHouse and Iceberg sides differ")
    if reference:
        slow, seconds = timed(lambda: reference_iceberg_side(table, spec, typed, span, HOUR))
        if slow != theirs:
            raise SystemExit(f"{spec.name} {label}: the per-row reference and the vectorised side differ")
        lines.append(Line(f"{label}: Iceberg, per-row reference", seconds, f"{kept} rows"))
    return lines


def wide_lines(
    client: Client, table: Table, spec: TableSpec, lower: datetime, upper: datetime, reference: bool
) -> list[Line]:
    """The Iceberg side over every column of the table (what auditing all columns would cost)."""
    typed = [(c.name, c.iceberg_type) for c in source_columns(client, spec)]
    span = Window(Watermark(lower), Watermark(upper))
    ts_col = spec.source.timestamp_column
    fast, seconds = timed(lambda: iceberg_io.audit_buckets(table, ts_col, typed, span, HOUR))
    lines = [Line(f"all {len(typed)} columns: Iceberg side", seconds, f"{sum(s.rows for s in fast.values())} rows")]
    if reference:
        slow, seconds = timed(lambda: reference_iceberg_side(table, spec, typed, span, HOUR))
        if slow != fast:
            raise SystemExit(f"{spec.name} all columns: the per-row reference and the vectorised side differ")
        lines.append(
            Line(
                f"all {len(typed)} columns: Iceberg, per-row ref.",
                seconds,
                f"{sum(s.rows for s in slow.values())} rows",
            )
        )
    return lines


def build(
    client: Client, catalog: Catalog, end: datetime, hours: int, rows_per_day: int
) -> dict[str, tuple[TableSpec, Table]]:
    """Trades into ClickHouse, then bronze and gold copied into Iceberg; prints the setup's times."""
    start = end - hours * HOUR
    trades, seconds = timed(lambda: binance_trades(start, end, rate=rows_per_day / 86400, seed=42))
    print(f"generated {trades.num_rows} trades in ({start:%Y-%m-%d %H:%M}Z, {end:%Y-%m-%d %H:%M}Z] in {seconds:.1f} s")
    _, seconds = timed(lambda: client.insert_arrow(BRONZE, trades))
    print(f"ClickHouse insert (silver and gold by materialized views): {seconds:.1f} s")
    catalog.create_namespace_if_not_exists(NAMESPACE)
    tables = {}
    for name in (BRONZE, GOLD):
        spec = spec_of(name)
        columns = source_columns(client, spec)
        table = create_iceberg_table(catalog, spec, columns)
        rows, seconds = timed(lambda: offload(client, table, spec, columns, start, end))  # noqa: B023
        files = sum(1 for _ in table.refresh().scan().plan_files())
        print(f"Iceberg {name}: {rows} rows in {files} files by {hours * 4} appends in {seconds:.1f} s")
        tables[name] = (spec, table.refresh())
    return tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows-per-day", type=int, default=1_000_000, help="bronze trades per day (default 1M)")
    p.add_argument("--hours", type=int, default=24, help="hours of trades, the audited range (default 24)")
    p.add_argument("--no-reference", action="store_true", help="skip the per-row reference (slow)")
    args = p.parse_args(argv)
    state_dir = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    (state_dir / "warehouse").mkdir()
    # Recent timestamps (the source tables' TTL is 7 days), ending on a whole hour.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - HOUR
    lower = end - args.hours * HOUR
    lines: list[tuple[str, Line]] = []
    server = ClickHouseHTTPServer(state_dir / "clickhouse")
    server.start()
    try:
        settings = local_settings(state_dir, server.port)
        client = clickhouse_io.connect(settings.clickhouse)
        clickhouse_io.apply_ddl(client)
        tables = build(client, iceberg_io.open_catalog(settings.catalog), end, args.hours, args.rows_per_day)
        setup_peak = peak_rss_mib()  # before the audits reset the peak
        for name, (spec, table) in tables.items():
            ref = not args.no_reference
            lines += [(name, x) for x in audit_lines(client, table, spec, lower, end, f"{args.hours} h", ref)]
            lines += [(name, x) for x in audit_lines(client, table, spec, end - HOUR, end, "1 bucket", ref)]
            if name == BRONZE:
                lines += [(name, x) for x in wide_lines(client, table, spec, lower, end, ref)]
        client.close()
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    report(lines, setup_peak)
    return 0


def report(lines: Sequence[tuple[str, Line]], setup_peak: float) -> None:
    print()
    print(f"{'table':<22} {'measurement':<36} {'seconds':>8} {'of 15 min':>9} {'peak RSS':>9}  rows")
    for name, x in lines:
        peak = f"{x.peak:.0f} MiB" if x.peak is not None else ""
        print(f"{name:<22} {x.what:<36} {x.seconds:>8.2f} {x.seconds / 900:>9.2%} {peak:>9}  {x.rows}")
    print()
    print(f"peak RSS of this process while building the tables (ClickHouse engine, Arrow): {setup_peak:.0f} MiB")
    print(f"machine: {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
