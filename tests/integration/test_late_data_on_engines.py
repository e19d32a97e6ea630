"""Late data on the real engines: rows that reach ClickHouse behind the committed watermark (1 ms to
2 h late, into bronze and through the materialized views into silver and the gold candles) are
found by the next cycle's audit, counted, and repaired in that cycle in `repair` mode — Iceberg
then equals ClickHouse by key and by candle values — and only counted in `report` mode.

The expectations are computed here from the inserted rows and from plain SQL on both sides (a
set of keys, a count of duplicates), not by the package's audit."""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core.audit import Bucket
from iceberg_offload.core.repair import REPAIR_REASON, LateDataMode, LateDataPolicy
from iceberg_offload.core.result import WATERMARK_BEFORE
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.job.backfill import BackfillRequest
from iceberg_offload.job.errors import OffloadError

BINANCE, KRAKEN, SILVER, GOLD = "bronze_trades_binance", "bronze_trades_kraken", "silver_trades", "gold_ohlcv_1h"
TABLES = [BINANCE, KRAKEN, SILVER, GOLD]
HOUR = timedelta(hours=1)
TRADE_COLUMNS = ["exchange_timestamp", "sequence", "symbol", "trade_id", "price", "quantity", "side", "is_buyer_maker"]
CANDLE_COLUMNS = ["window_start", "exchange", "symbol", "open", "high", "low", "close", "volume", "trade_count"]


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("LATE_DATA_SEED") or random.randrange(2**31))
    print(f"LATE_DATA_SEED={value}")
    return value


def insert_late(env: Any, rng: random.Random, mark: Watermark, price: str) -> list[datetime]:
    """3-12 trades 1 ms to 2 h behind `mark` into binance; their timestamps."""
    first = env.next_sequence(BINANCE)
    behind = sorted({rng.randint(1, 2 * 3600 * 1000) for _ in range(rng.randint(3, 12))})
    late = [mark.timestamp - timedelta(milliseconds=ms) for ms in behind]
    rows = [
        [ts, first + i, "BTCUSDT", 9_000_000_000 + first + i, Decimal(price), Decimal("3.25"), "buy", False]
        for i, ts in enumerate(late)
    ]
    env.clickhouse.insert(BINANCE, rows, column_names=TRADE_COLUMNS, database=env.name)
    print(f"{len(late)} late rows, {behind[0]} ms to {behind[-1]} ms behind {mark}")
    return late


def trade_keys_equal(env: Any, table: str) -> None:
    """Iceberg holds exactly ClickHouse's (timestamp, sequence) keys below its watermark, once each."""
    mark = env.watermark(table)
    iceberg = env.iceberg_rows(table, ["exchange_timestamp", "sequence"])
    assert len(iceberg) == len(set(iceberg)), f"{table}: {len(iceberg) - len(set(iceberg))} duplicated rows"
    clickhouse = env.ch_rows(
        f"SELECT toUnixTimestamp64Micro(exchange_timestamp), sequence FROM `{env.name}`.`{table}` "
        "WHERE exchange_timestamp < {t:DateTime64(6, 'UTC')}",
        t=mark.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    assert set(iceberg) == {(int(t), int(s)) for t, s in clickhouse}, table


def candles_equal(env: Any) -> None:
    """Every closed gold candle in Iceberg is ClickHouse's final candle, value for value."""
    mark = env.watermark(GOLD)
    iceberg = sorted(env.iceberg_rows(GOLD, CANDLE_COLUMNS))
    clickhouse = sorted(
        (int(r[0]), *r[1:])
        for r in env.ch_rows(
            f"SELECT toUnixTimestamp64Micro(window_start), {', '.join(CANDLE_COLUMNS[1:])} "
            f"FROM `{env.name}`.`{GOLD}` WHERE window_start < {{t:DateTime64(6, 'UTC')}}",
            t=mark.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
        )
    )
    assert iceberg == clickhouse


def test_late_rows_are_repaired_within_one_cycle_and_only_counted_in_report_mode(
    make_env: Any, base: datetime, seed: int
) -> None:
    rng = random.Random(seed)
    env = make_env("late_data_repair", tables=TABLES)
    start, end = base, base + 4 * HOUR
    env.feed(start, end, seed=seed)
    first = env.cycle(end + timedelta(minutes=10), TABLES, "first")
    assert all(r.outcome == "committed" and r.late_rows == 0 and r.buckets_differing == 0 for r in first.values())

    # Report mode: the late rows are counted, and nothing is written.
    mark = env.watermark(BINANCE)
    late = insert_late(env, rng, mark, "99999.5")
    before = {t: (env.snapshot_ids(t), env.iceberg_count(t)) for t in TABLES}
    report = LateDataPolicy(mode=LateDataMode.REPORT)
    counted = env.cycle(end + timedelta(minutes=10), TABLES, "report", late_data=report)
    assert all(r.outcome == "skipped" for r in counted.values()), counted  # same clock: no new window
    hours = {int(ts.timestamp()) // 3600 for ts in late}
    assert counted[BINANCE].buckets_differing == len(hours) and counted[BINANCE].late_rows == 0
    assert counted[KRAKEN].buckets_differing == 0
    # No row written; a run that commits no window records a new finding in a commit of no rows,
    # so that the table's status can tell (kraken's first finding is "equal": nothing to tell).
    after = {t: (env.snapshot_ids(t), env.iceberg_count(t)) for t in TABLES}
    assert {t: after[t][1] for t in TABLES} == {t: before[t][1] for t in TABLES}
    grown = {t for t in TABLES if after[t][0] != before[t][0]}
    assert grown == {BINANCE, SILVER, GOLD}, grown
    assert all(len(after[t][0]) == len(before[t][0]) + 1 for t in grown)
    recorded = iceberg_io.audit_of_run(env.iceberg(BINANCE), "report-" + BINANCE)
    assert recorded is not None and (recorded.mode, recorded.rows_missing) == (LateDataMode.REPORT, len(late))
    assert env.watermark(BINANCE) == mark
    env.cycle(end + timedelta(minutes=10), TABLES, "report-again", late_data=report)
    assert {t: env.snapshot_ids(t) for t in TABLES} == {t: after[t][0] for t in TABLES}  # the same finding

    # Repair mode: one cycle later every layer equals ClickHouse, the late rows counted once.
    env.feed(mark.timestamp, mark.timestamp + timedelta(minutes=15), seed=seed + 1)  # new rows, none late
    repaired = env.cycle(mark.timestamp + timedelta(minutes=20), TABLES, "repair")
    assert all(repaired[t].outcome == "committed" for t in (BINANCE, KRAKEN, SILVER)), repaired
    assert repaired[BINANCE].late_rows == len(late), repaired[BINANCE]
    silver_mark = env.watermark(SILVER)  # silver's lookback ends at its own watermark (as of the repair)
    assert repaired[SILVER].late_rows == sum(ts < mark.timestamp for ts in late) == len(late), repaired[SILVER]
    assert silver_mark is not None
    assert repaired[KRAKEN].late_rows == 0 and repaired[KRAKEN].rows_repaired == 0
    closed = {h for h in hours if (h + 1) * 3600 <= env.watermark(GOLD).timestamp.timestamp()}
    assert repaired[GOLD].rows_repaired >= len(closed) > 0  # each closed hour's candles rewritten
    assert all(r.buckets_differing == 0 for r in repaired.values()), repaired
    for table in (BINANCE, KRAKEN, SILVER):
        trade_keys_equal(env, table)
    candles_equal(env)
    # The repair kept the watermark: its commit carries the watermark it found, and says why.
    table = env.iceberg(BINANCE)
    summaries = [s.summary.additional_properties for s in iceberg_io.lineage(table) if s.summary]
    repairs = [s for s in summaries if REPAIR_REASON in s]
    assert repairs and repairs[0][WATERMARK_BEFORE] == str(mark), repairs[:1]

    # The next cycle finds nothing to repair.
    again = env.cycle(mark.timestamp + timedelta(minutes=20), TABLES, "again")
    assert all(r.outcome == "skipped" and r.rows_repaired == 0 and r.buckets_differing == 0 for r in again.values())


def test_a_replacement_never_publishes_over_a_commit_it_did_not_read(make_env: Any, base: datetime) -> None:
    """The compare-and-swap of a repair: a table handle loaded before a reset cannot replace a
    bucket after it (a rebased replacement would bring back rows the reset removed)."""
    env = make_env("late_data_cas", tables=[BINANCE])
    env.feed(base, base + 2 * HOUR)
    env.cycle(base + 2 * HOUR + timedelta(minutes=10), [BINANCE], "first")
    stale = env.iceberg(BINANCE)
    mark = env.watermark(BINANCE)
    reset_to = Watermark(base + HOUR)
    iceberg_io.reset_watermark(env.iceberg(BINANCE), iceberg_io.plan_reset(env.iceberg(BINANCE), reset_to), "test")
    after_reset = (env.snapshot_ids(BINANCE), env.iceberg_count(BINANCE))
    bucket = Bucket(base + HOUR, mark.timestamp)
    rows = stale.scan().to_arrow()
    with pytest.raises(iceberg_io.ConcurrentCommit, match="nothing was replaced"):
        iceberg_io.replace_spans(env.catalog, stale, rows, "exchange_timestamp", [bucket], {"offload.test": "1"})
    assert (env.snapshot_ids(BINANCE), env.iceberg_count(BINANCE)) == after_reset
    # And the next run offloads the reset range once, then audits equal.
    env.cycle(base + 2 * HOUR + timedelta(minutes=10), [BINANCE], "after-reset")
    trade_keys_equal(env, BINANCE)


def test_the_retention_horizon_is_read_from_clickhouse(make_env: Any) -> None:
    env = make_env("late_data_ttl", tables=[BINANCE, GOLD])
    assert clickhouse_io.retention(env.clickhouse, env.spec(BINANCE).source) == timedelta(days=7)
    assert clickhouse_io.retention(env.clickhouse, env.spec(GOLD).source) is None  # a view keeps what its table does


def test_a_backfill_replaces_only_what_differs_and_refuses_what_it_must_not(make_env: Any, base: datetime) -> None:
    env = make_env("late_data_backfill", tables=[BINANCE])
    env.feed(base, base + 3 * HOUR)
    now = base + 3 * HOUR + timedelta(minutes=10)
    env.cycle(now, [BINANCE], "first")
    mark = env.watermark(BINANCE)

    def backfill(name: str, lower: datetime, upper: datetime, at: datetime = now, **kw: Any) -> Any:
        return env.run(BINANCE, at, backfill=BackfillRequest(name, lower, upper, **kw), late_data=LateDataPolicy())

    equal = backfill("equal", base, mark.timestamp)
    assert (equal.outcome, equal.rows) == ("skipped", 0), equal  # an equal range commits nothing
    # Rows lost on the Iceberg side (a delete by hand) in two hours: two commits bring them back.
    lost_from, lost_to = base + timedelta(minutes=30), base + timedelta(minutes=90)
    before = env.iceberg_count(BINANCE)
    env.iceberg(BINANCE).delete(
        f"exchange_timestamp >= '{lost_from.isoformat()}' AND exchange_timestamp < '{lost_to.isoformat()}'"
    )
    lost = before - env.iceberg_count(BINANCE)
    assert lost > 0
    snapshots = len(env.snapshot_ids(BINANCE))
    fixed = backfill("fix", base, mark.timestamp)
    assert fixed.outcome == "committed" and fixed.rows >= lost, fixed
    assert iceberg_io.backfill_progress(env.iceberg(BINANCE), "fix").commits == 2  # [00:30, 01:00), [01:00, 01:30)
    assert len(env.snapshot_ids(BINANCE)) > snapshots and env.watermark(BINANCE) == mark
    trade_keys_equal(env, BINANCE)
    assert backfill("again", base, mark.timestamp).outcome == "skipped"

    snapshots = len(env.snapshot_ids(BINANCE))
    with pytest.raises(OffloadError, match="beyond the committed watermark"):
        backfill("ahead", base, mark.timestamp + HOUR)
    # Eight days on, the first hours are past the 7-day TTL: ClickHouse may have dropped them.
    with pytest.raises(OffloadError, match="TTL may have dropped rows"):
        backfill("old", base, mark.timestamp, at=base + timedelta(days=8))
    assert len(env.snapshot_ids(BINANCE)) == snapshots
    allowed = backfill("old-allowed", base, mark.timestamp, at=base + timedelta(days=8), allow_deletes=True)
    assert allowed.outcome == "skipped", allowed  # allowed, and equal: nothing to replace
