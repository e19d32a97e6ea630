"""`make demo`: two 15-minute offload cycles of the runbook's nine tables, on embedded engines.

It starts an embedded ClickHouse, a SQLite Iceberg catalog and a local Spark under one state
directory, creates the DDL, streams trades into both bronze tables, runs a cycle, lets another
15 minutes of trades arrive, runs the next cycle, and prints what the runbook's operators look
at: the offload_watermarks table, and per table ClickHouse's rows beside Iceberg's.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from iceberg_offload.core.planning import floor_to_interval
from iceberg_offload.core.result import OffloadResult
from iceberg_offload.core.tables import runbook_tables
from iceberg_offload.local.generator import binance_trades, kraken_trades
from iceberg_offload.local.runner import LocalStack, audit, local_stack, run_cycle

CYCLE = timedelta(minutes=15)
WATERMARK_QUERY = (
    "SELECT table_name, last_offload_timestamp, last_offload_max_sequence, last_successful_run, "
    "last_run_duration_seconds, status, failure_count, last_error_message "
    "FROM offload_watermarks ORDER BY last_successful_run DESC, table_name"
)


def feed_trades(stack: LocalStack, start: datetime, end: datetime, seed: int = 7) -> dict[str, int]:
    """Insert the trades of (start, end] into both bronze tables; silver and gold follow by
    materialized views. Returns rows inserted per table."""
    inserted = {}
    for table, make in (("bronze_trades_binance", binance_trades), ("bronze_trades_kraken", kraken_trades)):
        first = int(stack.clickhouse.query(f"SELECT max(sequence) FROM {table}").result_rows[0][0] or 0) + 1
        trades: pa.Table = make(start, end, first_sequence=first, seed=seed)
        if trades.num_rows:
            stack.clickhouse.insert_arrow(table, trades)
        inserted[table] = trades.num_rows
    return inserted


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _print_results(title: str, results: list[OffloadResult]) -> None:
    print(f"\n== {title}")
    _print_table(
        ["table", "outcome", "rows", "watermark", "seconds"],
        [
            [
                r.table,
                r.outcome,
                str(r.rows),
                str(r.watermark or "-"),
                f"{r.duration_seconds:.1f}",
            ]
            for r in results
        ],
    )


def run_demo(state_dir: Path, now: datetime | None = None) -> bool:
    """Run the demo; True when every table's counts agree."""
    if state_dir.exists():
        shutil.rmtree(state_dir)
    tables = runbook_tables()
    end = now or datetime.now(UTC)
    first_cycle = end - CYCLE
    # History from an hour before the last midnight that is past the buffer, so that even the
    # daily candle of the day before has closed by the first cycle.
    history_start = floor_to_interval(first_cycle - timedelta(minutes=5), timedelta(days=1)) - timedelta(hours=1)
    print(f"state directory: {state_dir.resolve()}")
    with local_stack(state_dir) as stack:
        fed = feed_trades(stack, history_start, first_cycle)
        print(f"\ntrades until {first_cycle:%Y-%m-%d %H:%M:%S}Z: {fed}")
        _print_results("cycle 1", run_cycle(stack, tables, first_cycle, "demo-cycle-1"))
        fed = feed_trades(stack, first_cycle, end, seed=8)
        print(f"\n15 more minutes of trades until {end:%Y-%m-%d %H:%M:%S}Z: {fed}")
        _print_results("cycle 2", run_cycle(stack, tables, end, "demo-cycle-2"))

        print("\n== offload_watermarks (the runbook's query)")
        result = stack.clickhouse.query(WATERMARK_QUERY)
        _print_table(list(result.column_names), [[str(v) for v in row] for row in result.result_rows])

        print("\n== row counts: ClickHouse up to the watermark beside Iceberg")
        audits = audit(stack, tables)
        _print_table(
            ["table", "watermark", "clickhouse", "iceberg", "equal"],
            [
                [a.table, a.watermark, str(a.clickhouse_rows), str(a.iceberg_rows), "yes" if a.matches else "NO"]
                for a in audits
            ],
        )
    ok = all(a.matches for a in audits)
    print(
        f"\n{'all 9 tables match' if ok else 'MISMATCH'}; inspect with pyiceberg: "
        f"SqlCatalog('demo', uri='sqlite:///{(state_dir / 'catalog.db').resolve()}', "
        f"warehouse='{(state_dir / 'warehouse').resolve().as_uri()}')"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="iceberg-offload demo", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=Path(".offload-demo"), help="where all state lives (recreated)")
    args = p.parse_args(argv)
    return 0 if run_demo(args.state_dir) else 1


if __name__ == "__main__":
    sys.exit(main())
