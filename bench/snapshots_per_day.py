"""Snapshots and metadata files per day of an idle table, and what maintenance folds them to.

    .venv/bin/python bench/snapshots_per_day.py [--cycles 96] [--busy-cycles 8]

Builds the local stack in a temporary directory (embedded ClickHouse on 127.0.0.1, a SQLite
Iceberg catalog, Spark local[2]), offloads one hour of Binance trades into
bronze_trades_binance, then runs --cycles 15-minute cycles (96: one day) with no new trade, each
run as the operator's (auditing its lookback with the default late-data policy), and counts
what the idle day left in the table: snapshots, metadata files (metadata.json versions) and
manifest lists. Then --busy-cycles cycles with new trades each (a snapshot each, as they must),
and one maintenance run (job/maintain.py: compaction, manifest rewrite, expiry keeping one
snapshot): the snapshots and data files before and after it, and the watermark, which must be
unchanged. Every cycle's run must succeed; the benchmark stops with an error otherwise.

It uses only APIs the first versions of the job have too, so the same script run on an older
checkout measures "before" (bench/README.md has both figures). Not run by the tests.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from iceberg_offload.adapters import iceberg_io
from iceberg_offload.core.repair import DEFAULT_POLICY
from iceberg_offload.core.tables import runbook_tables
from iceberg_offload.job.run import RunRequest, run_offload
from iceberg_offload.local.demo import feed_trades
from iceberg_offload.local.runner import local_stack

TABLE = "bronze_trades_binance"
CYCLE = timedelta(minutes=15)
BUFFER = timedelta(minutes=5)


def counts(table: Any) -> dict[str, int]:
    """Snapshots, metadata.json files and manifest lists of the table, as its directory holds them."""
    metadata = Path(table.location().removeprefix("file:")) / "metadata"
    files = list(metadata.iterdir()) if metadata.exists() else []
    return {
        "snapshots": len(table.snapshots()),
        "metadata files": sum(1 for f in files if f.name.endswith(".metadata.json")),
        "manifest lists": sum(1 for f in files if f.name.startswith("snap-")),
        "data files": sum(1 for _ in table.scan().plan_files()) if table.current_snapshot() else 0,
    }


def run(stack: Any, spec: Any, now: datetime) -> Any:
    result = run_offload(stack.spark, stack.settings, RunRequest(spec=spec, now=now, late_data=DEFAULT_POLICY))
    if result.outcome == "failed":
        raise SystemExit(f"the run at {now} failed: {result.error}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=96, help="idle cycles (96: one day)")
    parser.add_argument("--busy-cycles", type=int, default=8, help="cycles with new trades before maintenance")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-snapshots-"))
    try:
        with local_stack(state) as stack:
            spec = next(t for t in runbook_tables() if t.name == TABLE)
            start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
            feed_trades(stack, start - timedelta(hours=1), start - BUFFER, seed=1)
            run(stack, spec, start)
            catalog = iceberg_io.open_catalog(stack.settings.catalog)
            identifier = spec.target.catalog_identifier
            before = counts(iceberg_io.load_table(catalog, identifier))
            began = time.monotonic()
            now = start
            for _ in range(args.cycles):
                now += CYCLE
                run(stack, spec, now)
            table = iceberg_io.load_table(catalog, identifier)
            after = counts(table)
            seconds = time.monotonic() - began
            mark = iceberg_io.committed_watermark(table)
            print(f"idle: {args.cycles} cycles ({args.cycles * CYCLE}) in {seconds:.1f} s; watermark {mark}")
            per_day = 96 / args.cycles
            for key in ("snapshots", "metadata files", "manifest lists"):
                daily = (after[key] - before[key]) * per_day
                print(f"  {key:<16} {before[key]:>5} -> {after[key]:>5}: {daily:7.1f} per day")
            maintenance(stack, spec, catalog, now, args.busy_cycles)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def maintenance(stack: Any, spec: Any, catalog: Any, now: datetime, busy: int) -> None:
    try:
        from iceberg_offload.core.maintenance import MaintenancePolicy
        from iceberg_offload.job.maintain import MaintenanceRequest, run_maintenance
    except ImportError:
        print("maintenance: this version has none")
        return
    for i in range(busy):
        feed_trades(stack, now - BUFFER, now + CYCLE - BUFFER, seed=10 + i)
        now += CYCLE
        run(stack, spec, now)
    table = iceberg_io.load_table(catalog, spec.target.catalog_identifier)
    before, mark = counts(table), iceberg_io.committed_watermark(table)
    policy = MaintenancePolicy(max_snapshot_age=timedelta(0), retain_last=1)
    began = time.monotonic()
    run_maintenance(stack.spark, stack.settings, MaintenanceRequest(spec, "bench-maintenance", policy))
    table = iceberg_io.load_table(catalog, spec.target.catalog_identifier)
    after = counts(table)
    if iceberg_io.committed_watermark(table) != mark:
        raise SystemExit(f"maintenance changed the watermark: {mark} -> {iceberg_io.committed_watermark(table)}")
    print(f"maintenance after {busy} busy cycles, {time.monotonic() - began:.1f} s, watermark {mark} kept:")
    for key in ("snapshots", "data files", "manifest lists"):
        print(f"  {key:<16} {before[key]:>5} -> {after[key]:>5}")


if __name__ == "__main__":
    main()
