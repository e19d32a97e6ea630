"""Offload throughput on this machine: the Spark job against pyiceberg and a raw ClickHouse read.

    .venv/bin/python bench/offload_throughput.py [--rows 1000000] [--state-dir DIR] [--keep]

Generates about --rows Binance trades (local/generator.py, its realistic 8 trades/s, so 1M rows
span about 35 hours and two or three daily partitions), inserts them into a fresh local stack
(embedded ClickHouse behind its HTTP endpoint on 127.0.0.1, SQLite Iceberg catalog, local[2]
Spark) and times, on the same rows:

  job, first run (cold JVM)   run_offload of the whole window in a fresh Spark session's first job
  job, first window (warm)    the same into another table: a table's first window starts at the
                              epoch and is cut into sub-windows by time, so all rows land in one
  job, backlog window (warm)  the same after a 0-row commit at the window's start: the window is
                              cut into up to 16 sub-windows that the executors read in parallel
  pyiceberg append            the rows read from ClickHouse as Arrow, appended by pyiceberg
  ClickHouse -> Arrow (HTTP)  clickhouse-connect query_arrow of the job's own SELECT

Every Iceberg table is checked to hold exactly the generated rows afterwards. Not run by the tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.adapters.ddl import iceberg_statements
from iceberg_offload.core import query
from iceberg_offload.core.settings import local_settings
from iceberg_offload.core.tables import TableSpec, TargetSpec, runbook_tables
from iceberg_offload.core.watermark import INITIAL_WATERMARK, Watermark, Window
from iceberg_offload.job.columns import plan_columns
from iceberg_offload.job.run import RunRequest, run_offload
from iceberg_offload.job.session import spark_session
from iceberg_offload.local.generator import binance_trades
from iceberg_offload.local.runner import LocalStack, local_stack

TABLE = "bronze_trades_binance"
RATE = 8.0  # the generator's default Binance trades per second


@dataclass
class Measurement:
    method: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def create_target(stack: LocalStack, namespace: str) -> TableSpec:
    """bronze_trades_binance's Iceberg DDL in its own namespace, and the spec that offloads into it."""
    catalog = stack.settings.catalog.name
    for statement in iceberg_statements(catalog, namespace):
        if "NAMESPACE" in statement or re.search(rf"\.{TABLE}\b", statement):
            stack.spark.sql(statement)
    spec = next(t for t in runbook_tables() if t.name == TABLE)
    return TableSpec(spec.name, spec.layer, spec.source, TargetSpec(catalog, namespace, TABLE), buffer=timedelta(0))


def iceberg_rows(stack: LocalStack, spec: TableSpec) -> int:
    catalog = iceberg_io.open_catalog(stack.settings.catalog)
    return iceberg_io.row_count(iceberg_io.load_table(catalog, spec.target.catalog_identifier))


def run_job(stack: LocalStack, spec: TableSpec, end: datetime, method: str, expected: int) -> Measurement:
    request = RunRequest(spec=spec, now=end, mirror=False, run_id=f"bench-{spec.target.namespace}")
    result, seconds = timed(lambda: run_offload(stack.spark, stack.settings, request))
    if result.outcome != "committed" or result.rows != expected or iceberg_rows(stack, spec) != expected:
        raise SystemExit(f"{method}: expected {expected} rows committed, got {result}")
    return Measurement(method, result.rows, seconds)


def descendants_peak_rss_kib() -> int:
    """Sum of the peak RSS (VmHWM) of this process's live descendants: the JVM and Spark's Python workers."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    family: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - family
        family |= frontier
    total = 0
    for pid in family:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if match := re.search(r"^VmHWM:\s+(\d+) kB", status, re.M):
            total += int(match.group(1))
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="about how many trades to generate (default 1M)")
    p.add_argument("--state-dir", type=Path, help="where the stack lives (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the state directory")
    p.add_argument("--verbose", action="store_true", help="log the job's phases")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="offload-bench-"))
    if state_dir.exists() and any(state_dir.iterdir()):
        raise SystemExit(f"{state_dir} is not empty: the benchmark needs a fresh stack")
    # Recent timestamps (the source tables' TTL is 7 days), ending on a whole hour.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(seconds=args.rows / RATE)
    results: list[Measurement] = []
    try:
        trades, seconds = timed(lambda: binance_trades(start, end, rate=RATE, seed=42))
        rows = trades.num_rows
        print(f"generated {rows} trades in ({start:%Y-%m-%d %H:%M}Z, {end:%Y-%m-%d %H:%M}Z] in {seconds:.1f} s")

        session, seconds = timed(lambda: spark_session(local_settings(state_dir, 8123), "offload-bench"))
        print(f"Spark session started in {seconds:.1f} s (excluded below)")
        with local_stack(state_dir, spark=session) as stack:
            _, seconds = timed(partial(stack.clickhouse.insert_arrow, TABLE, trades))
            results.append(Measurement("ClickHouse insert (HTTP)", rows, seconds))
            del trades

            # (a) the offload job through Spark.
            cold, warm, backlog = (create_target(stack, ns) for ns in ("bench_cold", "bench_warm", "bench_backlog"))
            results.append(run_job(stack, cold, end, "job, first run (cold JVM)", rows))
            results.append(run_job(stack, warm, end, "job, first window (warm)", rows))
            prime = RunRequest(spec=backlog, now=end, requested_to=start, mirror=False, run_id="bench-prime")
            primed = run_offload(stack.spark, stack.settings, prime)
            if primed.outcome != "committed" or primed.rows != 0:
                raise SystemExit(f"the 0-row commit at the window's start failed: {primed}")
            results.append(run_job(stack, backlog, end, "job, backlog window (warm)", rows))

            # (c) ClickHouse -> Arrow through the HTTP endpoint: the job's own SELECT (casts included).
            source = backlog.source
            columns = plan_columns(
                clickhouse_io.describe(stack.clickhouse, source),
                stack.spark.table(backlog.target.identifier).schema,
                backlog,
            )
            q = query.select_window(source, columns, Window(INITIAL_WATERMARK, Watermark(end)))
            arrow, seconds = timed(lambda: stack.clickhouse.query_arrow(q.sql, parameters=q.parameters))
            if arrow.num_rows != rows:
                raise SystemExit(f"ClickHouse returned {arrow.num_rows} rows, expected {rows}")
            results.append(Measurement("ClickHouse -> Arrow (HTTP)", rows, seconds))

            # (b) pyiceberg: append those Arrow rows to a table of the same schema.
            target = create_target(stack, "bench_pyiceberg")
            table = iceberg_io.load_table(iceberg_io.open_catalog(stack.settings.catalog), f"bench_pyiceberg.{TABLE}")
            conformed = pa.Table.from_arrays(
                [arrow.column(f.name).cast(f.type) for f in table.schema().as_arrow()], schema=table.schema().as_arrow()
            )
            fetch_seconds = seconds
            _, seconds = timed(lambda: table.append(conformed))
            if iceberg_rows(stack, target) != rows:
                raise SystemExit(
                    f"pyiceberg append: expected {rows} rows in Iceberg, got {iceberg_rows(stack, target)}"
                )
            results.append(Measurement("pyiceberg append", rows, seconds))
            results.append(Measurement("pyiceberg fetch + append", rows, fetch_seconds + seconds))
            jvm_and_workers = descendants_peak_rss_kib()
        session.stop()
    finally:
        if not args.keep and args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)

    print()
    print(f"{'method':<30} {'rows':>9} {'seconds':>8} {'rows/s':>11}")
    for m in results:
        print(f"{m.method:<30} {m.rows:>9} {m.seconds:>8.2f} {m.rate:>11,.0f}")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print()
    print(f"peak RSS of this Python process (driver, ClickHouse engine, Arrow): {own / 1024:.0f} MiB")
    print(f"peak RSS of its live child processes (the JVM, Spark's Python workers): {jvm_and_workers / 1024:.0f} MiB")
    print(f"machine: {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}")
    if args.keep or args.state_dir is not None:
        print(f"state kept in {state_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
