"""The offload job on the real engines: embedded ClickHouse behind its HTTP endpoint, local Spark
with the Iceberg runtime, a SQLite Iceberg catalog read back with pyiceberg. No mocks.

Every expectation comes from the job's contract (offload_job.py, planning.py, the runbook):
- a run offloads the rows in (committed watermark, bound], bound = now - buffer, never past an
  upstream table's committed watermark, and for candles the start of the last closed candle;
- the new watermark is (bound, highest sequence at the bound's exact timestamp, else 0);
- the rows and the watermark (snapshot summary) move in one commit; the offload_watermarks row
  mirrors the Iceberg watermark after the run.

Each test has its own ClickHouse database and Iceberg namespace (see conftest.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from iceberg_offload import cli
from iceberg_offload.adapters import iceberg_io
from iceberg_offload.core.result import (
    RUN_ID,
    SOURCE,
    TIMESTAMP_COLUMN,
    WATERMARK_BEFORE,
    WINDOW_FROM,
    WINDOW_TO,
    OffloadResult,
    parse_result,
)
from iceberg_offload.core.settings import to_env
from iceberg_offload.core.watermark import INITIAL_WATERMARK, Watermark, WindowError, format_timestamp
from iceberg_offload.job.cli import main
from iceberg_offload.job.run import RunRequest, run_offload

REPO = Path(__file__).resolve().parents[2]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BUFFER = timedelta(minutes=5)  # the runbook tables' safety buffer
BRONZE = ("bronze_trades_binance", "bronze_trades_kraken")
GOLD_INTERVALS = {
    "gold_ohlcv_1m": timedelta(minutes=1),
    "gold_ohlcv_5m": timedelta(minutes=5),
    "gold_ohlcv_15m": timedelta(minutes=15),
    "gold_ohlcv_30m": timedelta(minutes=30),
    "gold_ohlcv_1h": timedelta(hours=1),
    "gold_ohlcv_1d": timedelta(days=1),
}
GOLD = tuple(GOLD_INTERVALS)
ALL_TABLES = (*BRONZE, "silver_trades", *GOLD)
BINANCE_COLUMNS = (
    "exchange_timestamp",
    "sequence",
    "symbol",
    "trade_id",
    "price",
    "quantity",
    "side",
    "is_buyer_maker",
    "ingestion_timestamp",
)
GOLD_COLUMNS = ("window_start", "exchange", "symbol", "open", "high", "low", "close", "volume", "trade_count")


def micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def first_open_candle(complete_before: datetime, interval: timedelta) -> datetime:
    """The start s of the oldest epoch-aligned candle [s, s + interval) with s + interval > complete_before:
    the candles before it are the closed ones. Written out from the spec (independently of
    iceberg_offload.core.planning)."""
    return complete_before - (complete_before - EPOCH) % interval


def iso(value: datetime) -> str:
    return format_timestamp(value)


def expected_bronze_mark(env: Any, table: str, now: datetime) -> Watermark:
    """The watermark a run of a trade table at `now` commits, from the spec: every row before now - buffer."""
    return Watermark(now - BUFFER)


def keys(env: Any, table: str) -> tuple[Counter[tuple[int, int]], set[tuple[int, int]]]:
    """(Iceberg's (timestamp, sequence) keys with multiplicity, ClickHouse's keys before the committed watermark)."""
    mark = env.watermark(table)
    assert mark is not None, f"{table}: no committed watermark"
    iceberg = Counter(env.iceberg_rows(table, ("exchange_timestamp", "sequence")))
    source = env.ch_rows(
        f"SELECT toUnixTimestamp64Micro(exchange_timestamp), toInt64(sequence) FROM `{env.name}`.`{table}` "
        "WHERE exchange_timestamp < {t:DateTime64(6, 'UTC')}",
        t=mark.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    return iceberg, set(source)


def assert_exactly_once(env: Any, table: str) -> None:
    """Iceberg holds each source row before the committed watermark exactly once, and nothing else."""
    iceberg, source = keys(env, table)
    duplicates = {k: n for k, n in iceberg.items() if n > 1}
    assert not duplicates, f"{table}: {len(duplicates)} keys duplicated in Iceberg, e.g. {list(duplicates)[:3]}"
    missing, extra = source - set(iceberg), set(iceberg) - source
    assert not missing, f"{table}: {len(missing)} source rows missing from Iceberg, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{table}: {len(extra)} Iceberg rows not in the source window, e.g. {sorted(extra)[:3]}"


def gold_rows_ch(env: Any, table: str, before: datetime) -> list[tuple[Any, ...]]:
    return sorted(
        env.ch_rows(
            "SELECT toUnixTimestamp64Micro(window_start), exchange, symbol, open, high, low, close, volume, "
            f"toInt64(trade_count) FROM `{env.name}`.`{table}` WHERE window_start < {{t:DateTime64(6, 'UTC')}}",
            t=before.strftime("%Y-%m-%d %H:%M:%S.%f"),
        )
    )


def summary_of(env: Any, table: str, snapshot_id: int) -> dict[str, str]:
    snapshot = env.iceberg(table).snapshot_by_id(snapshot_id)
    assert snapshot is not None and snapshot.summary is not None, f"{table}: no snapshot {snapshot_id}"
    return {**snapshot.summary.additional_properties, "added-records": snapshot.summary.get("added-records")}


def insert_binance(env: Any, ts: datetime, sequences: list[int], trade_id: int | None = None) -> None:
    """Binance trades at `ts` with the given sequences (trade_id derived from the sequence unless given)."""
    rows = [
        [ts, s, "BTCUSDT", trade_id or 7_000_000_000 + s, Decimal("91000.12345678"), Decimal("0.01"), "buy", False]
        for s in sequences
    ]
    columns = ["exchange_timestamp", "sequence", "symbol", "trade_id", "price", "quantity", "side", "is_buyer_maker"]
    env.clickhouse.insert("bronze_trades_binance", rows, column_names=columns)


def insert_kraken(env: Any, ts: datetime, sequences: list[int]) -> None:
    rows = [
        [ts, s, "XBT/USD", 900_000_000 + s, Decimal("90950.5"), Decimal("0.02"), "sell", "limit", None]
        for s in sequences
    ]
    columns = ["exchange_timestamp", "sequence", "pair", "trade_id", "price", "volume", "side", "order_type", "misc"]
    env.clickhouse.insert("bronze_trades_kraken", rows, column_names=columns)


def run_main(
    capsys: pytest.CaptureFixture[str], argv: list[str], **kwargs: Any
) -> tuple[int, OffloadResult | None, str]:
    """main() in-process: (exit code, the printed result, stderr)."""
    capsys.readouterr()
    code = main(argv, **kwargs)
    out, err = capsys.readouterr()
    return code, parse_result(out), err


def unchanged(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """Same snapshots, row counts and mirror watermark/status per table. (A skipped run still refreshes the
    mirror's last_successful_run and duration: it is a successful run.)"""

    def key(row: Any) -> Any:
        return row and (row.last_offload_timestamp, row.last_offload_max_sequence, row.status, row.failure_count)

    return {t: (s, n, key(m)) for t, (s, n, m) in after.items()} == {
        t: (s, n, key(m)) for t, (s, n, m) in before.items()
    }


def mirror_mark(env: Any, table: str) -> Watermark | None:
    row = env.mirror(table)
    # The mirror keeps the runbook's columns: a watermark of this protocol has sequence 0 there.
    return None if row is None else Watermark(row.last_offload_timestamp, row.last_offload_max_sequence or None)


# --- 1. two cycles of the nine runbook tables ---------------------------------------------------


@pytest.fixture(scope="module")
def two_cycles(make_env: Any, base: datetime) -> dict[str, Any]:
    """Trades from base-30m; cycle 1 at base+40m; 15 more minutes of trades; cycle 2 at base+55m."""
    env = make_env("two_cycles")
    now1, now2 = base + timedelta(minutes=40), base + timedelta(minutes=55)
    env.feed(base - timedelta(minutes=30), now1, seed=7)
    first = env.cycle(now1, label="it-cycle-1")
    marks1 = {t: env.watermark(t) for t in ALL_TABLES}
    counts1 = {t: env.iceberg_count(t) for t in ALL_TABLES}
    env.feed(now1, now2, seed=8)
    # Rows exactly on the cycle-2 window's inner sub-window seams (5-minute sub-windows, see conftest).
    seams = [now1 - BUFFER + timedelta(minutes=m) for m in (5, 10)]
    for ts in seams:
        insert_binance(env, ts, [env.next_sequence("bronze_trades_binance")])
    second = env.cycle(now2, label="it-cycle-2")
    return {
        "env": env,
        "now": (now1, now2),
        "results": (first, second),
        "marks1": marks1,
        "counts1": counts1,
        "base": base,
        "seams": seams,
    }


def test_cycles_commit_up_to_the_bound(two_cycles: dict[str, Any]) -> None:
    env, (now1, now2), (first, second) = two_cycles["env"], two_cycles["now"], two_cycles["results"]
    assert set(first) == set(second) == set(ALL_TABLES)
    for now, results, marks in ((now1, first, two_cycles["marks1"]), (now2, second, None)):
        bound = now - BUFFER
        for table in (*BRONZE, "silver_trades"):
            r = results[table]
            assert r.outcome == "committed" and r.rows > 0, f"{table} at {now}: {r}"
            expected = expected_bronze_mark(env, table, now)
            assert r.watermark == expected, f"{table} at {now}: watermark {r.watermark}, expected {expected}"
            if marks is not None:
                assert marks[table] == expected, f"{table}: Iceberg watermark {marks[table]} != {expected}"
        for table in GOLD:
            r = results[table]
            expected = Watermark(first_open_candle(bound, GOLD_INTERVALS[table]))
            assert r.watermark == expected, f"{table} at {now}: watermark {r.watermark}, expected {expected}"
    for table in GOLD:
        before = first[table].watermark
        # In cycle 2 a candle table commits exactly when another candle has closed since cycle 1.
        expected_outcome = "committed" if second[table].watermark != before else "skipped"
        assert second[table].outcome == expected_outcome, f"{table}: {first[table]} then {second[table]}"
        assert first[table].outcome == "committed" and first[table].rows > 0, f"{table}: {first[table]}"
    # With these clocks (bound 00:35 then 00:50 past base) the 1m/5m/15m candles move, 30m/1h/1d do not.
    assert [t for t in GOLD if second[t].outcome == "committed"] == ["gold_ohlcv_1m", "gold_ohlcv_5m", "gold_ohlcv_15m"]
    assert env.watermark("gold_ohlcv_1d") == Watermark(two_cycles["base"])


def test_counts_match_clickhouse_through_the_watermark(two_cycles: dict[str, Any]) -> None:
    env = two_cycles["env"]
    audits = env.audit()
    for table in ALL_TABLES:
        a = audits[table]
        assert a.clickhouse_rows > 0, f"{table}: nothing offloaded ({a})"
        assert a.iceberg_rows == a.clickhouse_rows, (
            f"{table}: Iceberg {a.iceberg_rows} != ClickHouse {a.clickhouse_rows}"
        )
        # The audit's own count, cross-checked with a query written from the spec.
        mark = env.watermark(table)
        assert env.ch_count_through(table, mark) == a.iceberg_rows, f"{table}: count through {mark}"


def test_each_commit_adds_exactly_its_window(two_cycles: dict[str, Any]) -> None:
    env, (first, second) = two_cycles["env"], two_cycles["results"]
    marks1, counts1 = two_cycles["marks1"], two_cycles["counts1"]
    for table in ALL_TABLES:
        assert first[table].rows == counts1[table], f"{table}: cycle 1 reported {first[table].rows} rows"
        assert counts1[table] == env.ch_count_through(table, marks1[table]), f"{table}: cycle 1 rows"
        added = env.iceberg_count(table) - counts1[table]
        assert second[table].rows == added, f"{table}: cycle 2 reported {second[table].rows}, table grew by {added}"
        if second[table].outcome == "committed":
            expected = env.ch_count_through(table, second[table].watermark) - env.ch_count_through(table, marks1[table])
            assert added == expected, f"{table}: cycle 2 added {added} rows, its window holds {expected}"


def test_bronze_and_silver_rows_equal_the_source(two_cycles: dict[str, Any]) -> None:
    env, now2 = two_cycles["env"], two_cycles["now"][1]
    for table in (*BRONZE, "silver_trades"):
        assert_exactly_once(env, table)
    on_seams = [ts for ts, _ in env.iceberg_rows("bronze_trades_binance", ("exchange_timestamp", "sequence"))]
    for ts in two_cycles["seams"]:
        assert micros(ts) in on_seams, f"the row at the sub-window seam {ts} is missing"
        newest = max(ts for ts, _ in env.iceberg_rows(table, ("exchange_timestamp", "sequence")))
        assert newest < micros(now2 - BUFFER), f"{table}: a row at or after now - buffer was offloaded"
    # Whole rows, every column, around the seam between the two commits.
    seam = two_cycles["marks1"]["bronze_trades_binance"].timestamp
    lo, hi = micros(seam - timedelta(minutes=2)), micros(seam + timedelta(minutes=2))
    iceberg = sorted(r for r in env.iceberg_rows("bronze_trades_binance", BINANCE_COLUMNS) if lo <= r[0] < hi)
    source = sorted(
        env.ch_rows(
            "SELECT toUnixTimestamp64Micro(exchange_timestamp), toInt64(sequence), toString(symbol), "
            "toInt64(trade_id), price, quantity, toString(side), is_buyer_maker, "
            "toUnixTimestamp64Micro(ingestion_timestamp) "
            f"FROM `{env.name}`.bronze_trades_binance WHERE exchange_timestamp >= {{lo:DateTime64(6, 'UTC')}} "
            "AND exchange_timestamp < {hi:DateTime64(6, 'UTC')}",
            lo=(seam - timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M:%S.%f"),
            hi=(seam + timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M:%S.%f"),
        )
    )
    assert len(source) > 100, "the sample range should hold trades"
    assert iceberg == source, "bronze_trades_binance rows around the cycle seam differ between Iceberg and ClickHouse"
    kraken_misc = env.iceberg_rows("bronze_trades_kraken", ("misc",))
    assert any(m is None for (m,) in kraken_misc), "kraken's NULL misc values did not survive as NULL"


def test_gold_candles_equal_the_source(two_cycles: dict[str, Any]) -> None:
    env = two_cycles["env"]
    for table in GOLD:
        mark = env.watermark(table)
        iceberg = sorted(env.iceberg_rows(table, GOLD_COLUMNS))
        source = gold_rows_ch(env, table, mark.timestamp)
        assert iceberg, f"{table}: no candles offloaded"
        newest = micros(mark.timestamp - GOLD_INTERVALS[table])
        assert max(r[0] for r in iceberg) == newest, f"{table}: the newest candle is not the one before the watermark"
        assert iceberg == source, f"{table}: candles differ (OHLCV or keys) between Iceberg and ClickHouse"
        assert len({r[:3] for r in iceberg}) == len(iceberg), f"{table}: a (window_start, exchange, symbol) repeats"


def test_snapshot_summaries_carry_watermark_window_and_run_id(two_cycles: dict[str, Any]) -> None:
    env, (first, second) = two_cycles["env"], two_cycles["results"]
    for table in ALL_TABLES:
        previous = INITIAL_WATERMARK
        for label, r in (("it-cycle-1", first[table]), ("it-cycle-2", second[table])):
            if r.outcome == "skipped":
                assert r.snapshot_id is None and r.rows == 0, f"{table}: {r}"
                continue
            summary = summary_of(env, table, r.snapshot_id)
            expected = {
                WATERMARK_BEFORE: r.watermark_timestamp,
                TIMESTAMP_COLUMN: env.spec(table).source.timestamp_column,
                WINDOW_FROM: str(previous),
                WINDOW_TO: str(r.watermark),
                RUN_ID: f"{label}-{table}",
                SOURCE: f"{env.name}.{table}",
                "added-records": str(r.rows),
            }
            assert {k: summary.get(k) for k in expected} == expected, f"{table}: snapshot {r.snapshot_id} summary"
            assert r.window_from == str(previous) and r.window_to == str(r.watermark), f"{table}: result window {r}"
            previous = r.watermark
        assert env.watermark(table) == previous, f"{table}: committed watermark is not the last commit's"
        # A skipped run makes no snapshot: one snapshot per commit, nothing else.
        commits = sum(r.outcome == "committed" for r in (first[table], second[table]))
        assert len(env.snapshot_ids(table)) == commits, f"{table}: {env.snapshot_ids(table)} for {commits} commits"


def test_mirror_rows_equal_iceberg_watermarks(two_cycles: dict[str, Any]) -> None:
    env = two_cycles["env"]
    for table in ALL_TABLES:
        row = env.mirror(table)
        assert row is not None, f"offload_watermarks has no row for {table}"
        assert mirror_mark(env, table) == env.watermark(table), f"{table}: mirror {row} vs Iceberg"
        assert (row.status, row.failure_count, row.last_error_message) == ("success", 0, ""), f"{table}: {row}"
    rows = env.ch_rows(f"SELECT table_name, count() FROM `{env.name}`.offload_watermarks GROUP BY table_name")
    assert sorted(rows) == sorted((t, 1) for t in ALL_TABLES), "the runbook's plain SELECT must show one row per table"


# --- 2. exactly once ---------------------------------------------------------------------------


def test_rerunning_a_committed_window_changes_nothing(make_env: Any, base: datetime, capsys: Any) -> None:
    env = make_env("rerun", tables=["bronze_trades_binance"])
    table, now = "bronze_trades_binance", base + timedelta(minutes=20)
    env.feed(base, now + timedelta(minutes=10))
    first = env.run(table, now)
    assert first.outcome == "committed" and first.rows > 0, first
    state = env.state([table])

    # The same clock again: the window is committed already.
    again = env.run(table, now, run_id="same-clock")
    assert (again.outcome, again.rows, again.snapshot_id) == ("skipped", 0, None), again
    assert again.watermark == first.watermark
    # A later clock, but --to at the committed watermark: through main, as the operator calls it.
    code, result, err = run_main(
        capsys,
        env.argv(table, "--now", iso(now + timedelta(minutes=7)), "--to", first.watermark_timestamp),
        spark=env.spark,
        settings=env.settings,
    )
    assert code == 0, err
    assert result is not None and (result.outcome, result.rows) == ("skipped", 0), result
    assert result.watermark == first.watermark
    assert unchanged(env.state([table]), state), "a skipped run changed the snapshots, the row count or the mirror"


def test_requested_start_before_the_watermark_is_clipped(make_env: Any, base: datetime) -> None:
    env = make_env("clip", tables=["bronze_trades_binance"])
    table, now = "bronze_trades_binance", base + timedelta(minutes=20)
    env.feed(base, now + timedelta(minutes=10))
    first = env.run(table, now)
    later = env.run(table, now + timedelta(minutes=5), requested_from=Watermark(base + timedelta(minutes=1)))
    assert later.outcome == "committed", later
    assert later.window_from == str(first.watermark), f"the window was not clipped to the watermark: {later}"
    assert later.rows == env.ch_count_through(table, later.watermark) - env.ch_count_through(table, first.watermark)
    assert_exactly_once(env, table)


def test_requested_start_after_the_watermark_is_refused(make_env: Any, base: datetime, capsys: Any) -> None:
    env = make_env("gap", tables=["bronze_trades_binance"])
    table, now = "bronze_trades_binance", base + timedelta(minutes=20)
    env.feed(base, now + timedelta(minutes=10))
    first = env.run(table, now)
    state = env.state([table])
    gap_start = Watermark(first.watermark.timestamp + timedelta(minutes=1))
    with pytest.raises(WindowError, match="after the committed watermark") as raised:
        env.run(table, now + timedelta(minutes=5), requested_from=gap_start)
    assert str(first.watermark) in str(raised.value), f"the refusal should name the committed watermark: {raised.value}"
    assert unchanged(env.state([table]), state), "a refused run changed the snapshots, the row count or the mirror"

    # Through main: a failed run (exit 1) that records the failure but keeps the mirror's watermark.
    code, result, _ = run_main(
        capsys,
        env.argv(table, "--now", iso(now + timedelta(minutes=5)), "--from", str(gap_start)),
        spark=env.spark,
        settings=env.settings,
    )
    assert code == 1 and result is not None and result.outcome == "failed", result
    assert "after the committed watermark" in (result.error or ""), result.error
    snapshots, count, _ = env.state([table])[table]
    assert (snapshots, count) == state[table][:2], "a refused run changed the Iceberg table"
    row = env.mirror(table)
    assert mirror_mark(env, table) == first.watermark and row.status == "failed" and row.failure_count == 1, row
    # The next good run clears the failure.
    good = env.run(table, now + timedelta(minutes=5))
    assert (
        good.outcome == "committed" and env.mirror(table).status == "success" and env.mirror(table).failure_count == 0
    )


# --- 3. crash after the commit, before the mirror update -----------------------------------------


def job_with_failpoint(env: Any, failpoint: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The job as a process of its own (its own session: mid-read kills its whole process group)."""
    job_env = {
        **os.environ,
        **to_env(env.settings),
        "ICEBERG_OFFLOAD_FAILPOINT": failpoint,
        "ICEBERG_OFFLOAD_SPARK_MASTER": "local[1]",
    }
    return subprocess.run(
        [sys.executable, "spark_jobs/offload.py", *argv],
        cwd=REPO,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


def test_crash_after_commit_then_rerun(make_env: Any, base: datetime, capsys: Any) -> None:
    env = make_env("crash", tables=["bronze_trades_binance"])
    table = "bronze_trades_binance"
    now1, now2, now3 = (base + timedelta(minutes=m) for m in (20, 35, 50))
    env.feed(base, now1)
    first = env.run(table, now1)
    assert first.outcome == "committed"
    env.feed(now1, now2, seed=9)

    done = job_with_failpoint(env, "committed", env.argv(table, "--now", iso(now2), "--run-id", "it-crash"))
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode != 0, f"the failpoint did not end the job:\n{tail}"
    assert parse_result(done.stdout) is None, "a job that died after its commit must not have printed a result"
    committed = expected_bronze_mark(env, table, now2)
    assert env.watermark(table) == committed, f"the crashed run's commit is not in Iceberg:\n{tail}"
    snapshots = env.iceberg(table).snapshots()
    assert summary_of(env, table, snapshots[-1].snapshot_id)[RUN_ID] == "it-crash"
    assert mirror_mark(env, table) == first.watermark, "the mirror moved although the job died before updating it"
    rows_after_crash = env.iceberg_count(table)

    # The re-run of the same window (same clock): nothing to add, and the mirror catches up.
    code, result, err = run_main(
        capsys, env.argv(table, "--now", iso(now2), "--run-id", "it-rerun"), spark=env.spark, settings=env.settings
    )
    assert code == 0, err
    assert result is not None and (result.outcome, result.rows) == ("skipped", 0), result
    assert env.iceberg_count(table) == rows_after_crash and len(env.iceberg(table).snapshots()) == len(snapshots)
    assert mirror_mark(env, table) == committed, "the mirror did not catch up with the Iceberg watermark"
    assert env.mirror(table).status == "success"
    assert_exactly_once(env, table)

    # And the table goes on from there.
    env.feed(now2, now3, seed=10)
    code, result, err = run_main(capsys, env.argv(table, "--now", iso(now3)), spark=env.spark, settings=env.settings)
    assert code == 0 and result is not None and result.outcome == "committed", err
    assert result.window_from == str(committed)
    assert_exactly_once(env, table)
    assert mirror_mark(env, table) == env.watermark(table) == expected_bronze_mark(env, table, now3)


@pytest.mark.parametrize("failpoint", ["mid-read", "staged"])
def test_a_job_killed_before_its_publish_leaves_nothing_visible(
    make_env: Any, base: datetime, capsys: Any, failpoint: str
) -> None:
    """The job process dies while reading its window, or with its rows staged but unpublished: the
    table is as before (same lineage, rows, watermark), and the next run offloads the window once."""
    env = make_env(f"killed_{failpoint.replace('-', '_')}", tables=["bronze_trades_binance"])
    table = "bronze_trades_binance"
    now1, now2 = base + timedelta(minutes=20), base + timedelta(minutes=35)
    env.feed(base, now2)
    first = env.run(table, now1)
    lineage = [s.snapshot_id for s in iceberg_io.lineage(env.iceberg(table))]
    rows = env.iceberg_count(table)
    done = job_with_failpoint(env, failpoint, env.argv(table, "--now", iso(now2), "--run-id", "it-killed"))
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode in (137, -9), f"the failpoint did not kill the job ({done.returncode}):\n{tail}"
    assert parse_result(done.stdout) is None, f"a killed job printed a result:\n{tail}"
    assert [s.snapshot_id for s in iceberg_io.lineage(env.iceberg(table))] == lineage, "a killed run published"
    assert env.iceberg_count(table) == rows and env.watermark(table) == first.watermark
    assert iceberg_io.commit_of_run(env.iceberg(table), "it-killed") is None
    again = env.run(table, now2, run_id="it-after-kill")
    assert again.outcome == "committed" and again.window_from == str(first.watermark), again
    assert_exactly_once(env, table)


# --- 4. bad input ------------------------------------------------------------------------------

EXTRA_COLUMN_DDL = """CREATE TABLE {t} (
    exchange_timestamp TIMESTAMP NOT NULL, sequence BIGINT NOT NULL, symbol STRING NOT NULL,
    trade_id {trade_id} NOT NULL, price DECIMAL(18, 8) NOT NULL, quantity DECIMAL(18, 8) NOT NULL,
    side STRING NOT NULL, is_buyer_maker BOOLEAN NOT NULL, ingestion_timestamp TIMESTAMP NOT NULL{extra}
) USING iceberg"""


@pytest.fixture(scope="module")
def bad_input_env(make_env: Any, base: datetime) -> Any:
    """bronze_trades_binance committed once, plus two targets that do not fit the source."""
    env = make_env("bad_input", tables=["bronze_trades_binance"])
    env.feed(base, base + timedelta(minutes=20))
    assert env.run("bronze_trades_binance", base + timedelta(minutes=15)).outcome == "committed"
    env.spark.sql(EXTRA_COLUMN_DDL.format(t=env.target("binance_extra"), trade_id="BIGINT", extra=", venue STRING"))
    env.spark.sql(EXTRA_COLUMN_DDL.format(t=env.target("binance_badtype"), trade_id="STRING", extra=""))
    return env


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BAD_INPUTS = {
    # case: (--table, extra argv (after the defaults, which they override), exit code, fragments of the message)
    "unknown_clickhouse_table": (
        "bad_source",
        ["--source-table", "no_such_source"],
        1,
        ["ClickHouse table {db}.no_such_source does not exist"],
    ),
    "unknown_iceberg_table": (
        "bad_target",
        ["--target", "demo.{db}.no_such_target"],
        1,
        ["Iceberg table demo.{db}.no_such_target does not exist"],
    ),
    "target_column_missing_in_source": (
        "bad_column",
        ["--target", "demo.{db}.binance_extra"],
        1,
        ["'venue'", "demo.{db}.binance_extra", "{db}.bronze_trades_binance"],
    ),
    "target_column_of_another_type": (
        "bad_type",
        ["--target", "demo.{db}.binance_badtype"],
        1,
        ["'trade_id'", "string"],
    ),
    "unknown_catalog_in_target": (
        "bad_catalog",
        ["--target", "elsewhere.{db}.bronze_trades_binance"],
        1,
        ["'elsewhere'", "'demo'"],
    ),
    "target_not_three_parts": (
        "bad_target_form",
        ["--target", "{db}.bronze_trades_binance"],
        2,
        ["<catalog>.<namespace>.<table>"],
    ),
    "from_after_to": (
        "bad_window",
        ["--from", "{base}T00:10:00Z", "--to", "{base}T00:05:00Z"],
        2,
        ["--from", "is after --to"],
    ),
    "unreachable_clickhouse": ("bad_host", [], 1, ["127.0.0.1:{port}"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_clearly_and_changes_nothing(
    bad_input_env: Any, base: datetime, case: str, capsys: Any
) -> None:
    env = bad_input_env
    name, extra, expected_code, fragments = BAD_INPUTS[case]
    port = closed_port()
    values = {"db": env.name, "base": base.date().isoformat(), "port": port}
    argv = env.argv("bronze_trades_binance", "--now", iso(base + timedelta(minutes=25)))
    argv[1] = name  # --table: the failure, if recorded, goes to this name's mirror row
    argv += ["--source-table", "bronze_trades_binance", *(a.format(**values) for a in extra)]
    settings = env.settings
    if case == "unreachable_clickhouse":
        settings = replace(settings, clickhouse=replace(settings.clickhouse, port=port, connect_timeout=3))
    watched = ["bronze_trades_binance", "binance_extra", "binance_badtype"]
    before = {t: (env.snapshot_ids(t), env.iceberg_count(t)) for t in watched}
    mirror_before = env.mirror("bronze_trades_binance")

    code, result, err = run_main(capsys, argv, spark=env.spark, settings=settings)

    assert code == expected_code, f"{case}: exit {code}, expected {expected_code}; result {result}; stderr {err[-500:]}"
    message = err if expected_code == 2 else (result.error if result else "")
    for fragment in fragments:
        assert fragment.format(**values) in (message or ""), f"{case}: message {message!r} lacks {fragment!r}"
    if expected_code == 2:
        assert result is None, f"{case}: bad arguments must not print a run result: {result}"
    else:
        assert result is not None and result.outcome == "failed" and result.table == name, result
        assert result.snapshot_id is None and result.rows == 0
    assert {t: (env.snapshot_ids(t), env.iceberg_count(t)) for t in watched} == before, f"{case}: Iceberg changed"
    assert env.mirror("bronze_trades_binance") == mirror_before, f"{case}: the real table's mirror row changed"
    failure = env.mirror(name)
    if expected_code == 1 and case != "unreachable_clickhouse":
        # The runbook sees the failure: recorded under the run's table name, watermark untouched.
        assert failure is not None and failure.status == "failed" and failure.failure_count == 1, failure
        assert result is not None and failure.last_error_message == result.error
        assert failure.last_offload_timestamp == INITIAL_WATERMARK.timestamp
    else:
        assert failure is None, f"{case}: {failure}"


@pytest.fixture(scope="module")
def unfit_value_run(make_env: Any, base: datetime, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bronze row whose UInt64 trade_id (2^63 + 5) does not fit Iceberg's long: the executors' read fails."""
    env = make_env("unfit_value", tables=["bronze_trades_binance"])
    table = "bronze_trades_binance"
    env.feed(base, base + timedelta(minutes=20))
    insert_binance(env, base + timedelta(minutes=3), [env.next_sequence(table)], trade_id=2**63 + 5)
    result_file = tmp_path_factory.mktemp("unfit") / "result.json"
    argv = env.argv(table, "--now", iso(base + timedelta(minutes=15)), "--result-file", str(result_file))
    code = main(argv, spark=env.spark, settings=env.settings)
    return {"env": env, "code": code, "result": OffloadResult.from_json(result_file.read_text())}


def test_a_value_that_does_not_fit_fails_the_run_and_commits_nothing(unfit_value_run: dict[str, Any]) -> None:
    env, code, result = unfit_value_run["env"], unfit_value_run["code"], unfit_value_run["result"]
    assert code == 1 and result is not None and result.outcome == "failed", result
    assert env.snapshot_ids("bronze_trades_binance") == [], "a failed read must commit nothing"
    row = env.mirror("bronze_trades_binance")
    assert row is not None and row.status == "failed" and row.failure_count == 1, row
    assert row.last_offload_timestamp == INITIAL_WATERMARK.timestamp


def test_a_value_that_does_not_fit_is_named_in_the_error(unfit_value_run: dict[str, Any]) -> None:
    result = unfit_value_run["result"]
    assert result is not None and "trade_id" in (result.error or ""), result.error


def test_overlapping_runs_of_one_table_commit_its_window_once(make_env: Any, base: datetime) -> None:
    env = make_env("overlapping_runs", tables=["bronze_trades_binance"])
    table = "bronze_trades_binance"
    env.feed(base, base + timedelta(minutes=12))
    # The same rows through a view that sleeps 2 s per block read: a run spends at least 4 s between reading the
    # watermark and committing (window stats, then the rows), so two runs started together both read the watermark
    # before either commits (without the sleep the race is merely likely).
    env.clickhouse.command("CREATE VIEW slow_binance AS SELECT * FROM bronze_trades_binance WHERE sleep(2) = 0")
    spec = env.spec(table)
    spec = replace(spec, source=replace(spec.source, table="slow_binance"))
    results: dict[int, Any] = {}

    start = threading.Barrier(2)

    def run(i: int) -> None:
        request = RunRequest(spec=spec, now=base + timedelta(minutes=15), run_id=f"overlap-{i}")
        # A session of its own, as each job process has: the write-audit-publish id is session conf.
        session = env.spark.newSession()
        start.wait()
        try:
            results[i] = run_offload(session, env.settings, request)
        except Exception as exc:  # a run refused because of the other one is a correct outcome
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    committed = [r for r in results.values() if isinstance(r, OffloadResult) and r.outcome == "committed"]
    assert committed, f"neither run committed: {results}"
    assert_exactly_once(env, table)


# --- 5. late rows at the watermark's exact timestamp ---------------------------------------------


def test_late_rows_at_the_watermark_timestamp_arrive_exactly_once(make_env: Any, base: datetime) -> None:
    env = make_env("late_rows", tables=["bronze_trades_binance"])
    table = "bronze_trades_binance"
    mark_ts = base + timedelta(minutes=20)  # a whole millisecond: the bound of a run at mark_ts + buffer
    env.feed(base, mark_ts + timedelta(minutes=10))
    first_seq = env.next_sequence(table)
    on_time = [first_seq, first_seq + 1, first_seq + 2]
    insert_binance(env, mark_ts, on_time)

    first = env.run(table, mark_ts + BUFFER)
    assert first.watermark == Watermark(mark_ts), f"the watermark should be the bound: {first}"
    assert micros(mark_ts) not in {ts for ts, _ in env.iceberg_rows(table, ("exchange_timestamp", "sequence"))}, (
        "rows at the bound's own millisecond belong to the next window"
    )

    # More rows at that millisecond, with higher and lower sequences than the first ones.
    late_seq = env.next_sequence(table)
    late = [late_seq, late_seq + 1, first_seq - 1]
    insert_binance(env, mark_ts, late)
    # The same clock: the bound has not moved, so every row at it waits.
    assert env.run(table, mark_ts + BUFFER).outcome == "skipped"

    second = env.run(table, mark_ts + BUFFER + timedelta(minutes=1))
    assert second.outcome == "committed", second
    at_mark = Counter(
        seq for ts, seq in env.iceberg_rows(table, ("exchange_timestamp", "sequence")) if ts == micros(mark_ts)
    )
    for seq in on_time + late:
        assert at_mark[seq] == 1, f"row ({mark_ts}, {seq}) is in Iceberg {at_mark[seq]} times"
    assert second.rows == env.ch_count_through(table, second.watermark) - env.ch_count_through(table, first.watermark)
    assert env.run(table, mark_ts + BUFFER + timedelta(minutes=1)).outcome == "skipped"
    assert_exactly_once(env, table)


def test_run_id_with_a_quote_reports_its_commit(make_env: Any, base: datetime) -> None:
    env = make_env("quoted_run_id", tables=["bronze_trades_binance"])
    env.feed(base, base + timedelta(minutes=20))
    result = env.run("bronze_trades_binance", base + timedelta(minutes=15), run_id="it's-run-1")
    assert result.outcome == "committed" and result.rows > 0


# --- 6. gold candle finality -------------------------------------------------------------------


def test_gold_candle_is_offloaded_only_after_interval_plus_buffer(make_env: Any, base: datetime) -> None:
    names = (*BRONZE, "silver_trades", "gold_ohlcv_1h")
    env = make_env("gold_finality", tables=names)
    table, hour = "gold_ohlcv_1h", timedelta(hours=1)
    candle = base  # the candle [base, base + 1h)
    close = candle + hour
    env.feed(base - timedelta(minutes=30), close + timedelta(minutes=10))
    source_candle = [r for r in gold_rows_ch(env, table, close) if r[0] == micros(candle)]
    assert source_candle, "ClickHouse should already hold the (open) candle"

    before = env.cycle(close + BUFFER - timedelta(seconds=1), names, "gold-1")
    assert before[table].watermark == Watermark(candle), f"candle offloaded before its close + buffer: {before}"
    assert max(r[0] for r in env.iceberg_rows(table, GOLD_COLUMNS)) < micros(candle)

    after = env.cycle(close + BUFFER + timedelta(seconds=1), names, "gold-2")
    assert after[table].outcome == "committed" and after[table].watermark == Watermark(close), after[table]
    offloaded = sorted(r for r in env.iceberg_rows(table, GOLD_COLUMNS) if r[0] == micros(candle))
    assert offloaded == sorted(source_candle), "the closed candle's OHLCV differs from ClickHouse's"
    assert after[table].rows == len(source_candle)
    assert env.audit([table])[table].matches


# --- upstream bounds, through the command line as the operator calls the job --------------------


def test_downstream_tables_never_pass_their_upstream_watermarks(make_env: Any, base: datetime, capsys: Any) -> None:
    names = (*BRONZE, "silver_trades", "gold_ohlcv_1m")
    env = make_env("upstream_bounds", tables=names)
    now = base + timedelta(minutes=30)
    env.feed(base - timedelta(minutes=10), now)
    upstream = [f"--upstream={b}={env.target(b)}" for b in BRONZE]
    silver_argv = [
        "--table",
        "silver_trades",
        "--layer",
        "silver",
        "--source-database",
        env.name,
        "--timestamp-column",
        "exchange_timestamp",
        "--sequence-column",
        "sequence",
        "--target",
        env.target("silver_trades"),
        *upstream,
        "--now",
        iso(now),
    ]

    def silver() -> OffloadResult:
        code, result, err = run_main(capsys, silver_argv, spark=env.spark, settings=env.settings)
        assert code == 0 and result is not None, f"silver run failed: {result} {err[-500:]}"
        return result

    # Kraken never offloaded yet: silver has nothing it may offload.
    env.run("bronze_trades_binance", now)
    waiting = silver()
    assert (waiting.outcome, waiting.rows) == ("skipped", 0) and env.snapshot_ids("silver_trades") == [], waiting

    # Kraken behind Binance: silver stops at Kraken's watermark.
    kraken = env.run("bronze_trades_kraken", now - timedelta(minutes=10))
    result = silver()
    assert result.watermark is not None and kraken.watermark is not None
    assert result.outcome == "committed" and result.watermark.timestamp == kraken.watermark.timestamp, result
    assert result.watermark == expected_bronze_mark(env, "silver_trades", now - timedelta(minutes=10))
    assert env.audit(["silver_trades"])["silver_trades"].matches
    assert_exactly_once(env, "silver_trades")

    # Gold, without a sequence column, through the command line: candles closed by silver's watermark only.
    code, gold, err = run_main(
        capsys,
        [
            "--table",
            "gold_ohlcv_1m",
            "--layer",
            "gold",
            "--source-database",
            env.name,
            "--timestamp-column",
            "window_start",
            "--candle-seconds",
            "60",
            "--target",
            env.target("gold_ohlcv_1m"),
            f"--upstream=silver_trades={env.target('silver_trades')}",
            "--now",
            iso(now),
        ],
        spark=env.spark,
        settings=env.settings,
    )
    assert code == 0 and gold is not None and gold.outcome == "committed", f"{gold} {err[-500:]}"
    expected = Watermark(first_open_candle(result.watermark.timestamp, timedelta(minutes=1)))
    assert gold.watermark == expected, f"gold passed silver's watermark {result.watermark}: {gold}"
    assert sorted(env.iceberg_rows("gold_ohlcv_1m", GOLD_COLUMNS)) == gold_rows_ch(
        env, "gold_ohlcv_1m", expected.timestamp
    )


# --- reset: the table knows its own column -------------------------------------------------------


def test_reset_takes_the_timestamp_column_from_the_table(
    make_env: Any, base: datetime, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env("reset_column", tables=["bronze_trades_binance"])
    table = "bronze_trades_binance"
    # Never committed: the column is its time partitioning's source.
    assert iceberg_io.timestamp_column(env.iceberg(table)) == "exchange_timestamp"
    env.feed(base, base + timedelta(minutes=20))
    first = env.run(table, base + timedelta(minutes=20))
    assert iceberg_io.timestamp_column(env.iceberg(table)) == "exchange_timestamp"  # recorded by the commit
    for name, value in to_env(env.settings).items():
        monkeypatch.setenv(name, value)
    snapshots = env.snapshot_ids(table)
    for to, wanted in ((f"{first.watermark_timestamp}#5", "timestamps only"), ("notatime", "ISO-8601")):
        capsys.readouterr()
        code = cli.main(["reset", "--table", f"{env.name}.{table}", "--to", to, "--yes"])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("iceberg-offload: error: ") and wanted in err, (code, err)
        assert len(err.strip().splitlines()) == 1, f"not one line: {err}"
    assert env.snapshot_ids(table) == snapshots, "a refused reset changed the table"
