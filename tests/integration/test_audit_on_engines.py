"""The audit on the real engines: ClickHouse computes its side in SQL, the Iceberg side is read by
pyiceberg after real offloads, and the two agree row for row; late rows behind the watermark, in
bronze and through the materialized views in silver and gold, show up as exactly the buckets that
hold them, with the right number of rows missing.

The expected buckets are computed here from the late rows' timestamps (plain integer division of
epoch seconds), not by the package."""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from iceberg_offload import cli
from iceberg_offload.adapters.audit import audit_range
from iceberg_offload.core.settings import PREFIX, to_env

BINANCE, KRAKEN, SILVER, GOLD = "bronze_trades_binance", "bronze_trades_kraken", "silver_trades", "gold_ohlcv_1h"
TABLES = [BINANCE, KRAKEN, SILVER, GOLD]
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("AUDIT_SEED") or random.randrange(2**31))
    print(f"AUDIT_SEED={value}")
    return value


def audited(env: Any, table: str, since: datetime) -> Any:
    mark = env.watermark(table)
    assert mark is not None, f"{table} has no watermark"
    return audit_range(env.clickhouse, env.iceberg(table), env.spec(table), since, mark.timestamp, HOUR)


def hour_of(ts: datetime) -> int:
    return int(ts.timestamp()) // 3600


def audit_command(
    env: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], since: datetime
) -> tuple[int, list[str]]:
    """`iceberg-offload audit` of the four tables, with this env's settings: (exit code, stdout lines)."""
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in to_env(env.settings).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = cli.main(["audit", "--since", since.isoformat(), *TABLES])
    return code, capsys.readouterr().out.splitlines()


def test_late_rows_are_found_in_exactly_their_buckets_in_every_layer(
    make_env: Any, base: datetime, seed: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(seed)
    env = make_env("audit_late_rows", tables=TABLES)
    start, end = base, base + 4 * HOUR
    env.feed(start, end, seed=seed)
    results = env.cycle(end + timedelta(minutes=10), TABLES)
    assert all(r.outcome == "committed" for r in results.values()), results
    since = start - HOUR
    for table in TABLES:
        report = audited(env, table, since)
        assert report.in_sync, f"{table} right after its offload: {[d.describe() for d in report.differing]}"
        assert len(report.buckets) >= 4
    code, lines = audit_command(env, monkeypatch, capsys, since)
    assert code == 0 and len(lines) == len(TABLES) and all("all equal" in line for line in lines), lines

    mark = env.watermark(BINANCE)
    assert mark is not None
    first = (
        int(env.clickhouse.query(f"SELECT toInt64(max(sequence)) FROM `{env.name}`.`{BINANCE}`").result_rows[0][0]) + 1
    )
    behind = sorted({rng.randint(1, 2 * 3600 * 1000) for _ in range(rng.randint(3, 12))})
    late = [mark.timestamp - timedelta(milliseconds=ms) for ms in behind]
    rows = [
        [ts, first + i, "BTCUSDT", 8_000_000_000 + i, Decimal("99999.5"), Decimal("3.25"), "buy", False]
        for i, ts in enumerate(late)
    ]
    columns = ["exchange_timestamp", "sequence", "symbol", "trade_id", "price", "quantity", "side", "is_buyer_maker"]
    env.clickhouse.insert(BINANCE, rows, column_names=columns, database=env.name)
    print(f"{len(late)} late rows, {behind[0]} ms to {behind[-1]} ms behind {mark}")

    expected_hours = sorted({hour_of(ts) for ts in late})
    for table in (BINANCE, SILVER):
        report = audited(env, table, since)
        assert [hour_of(d.bucket.start) for d in report.differing] == expected_hours, table
        assert (report.rows_missing, report.rows_extra) == (len(late), 0), table
    assert audited(env, KRAKEN, since).in_sync
    # Gold: each late trade's hour candle changed (price 99999.5 is a new high, volume grew).
    gold = audited(env, GOLD, since)
    gold_mark = env.watermark(GOLD)
    assert gold_mark is not None
    closed = [h for h in expected_hours if (h + 1) * 3600 <= gold_mark.timestamp.timestamp()]
    assert [hour_of(d.bucket.start) for d in gold.differing] == closed
    assert all(d.changed for d in gold.differing), [d.describe() for d in gold.differing]
    code, lines = audit_command(env, monkeypatch, capsys, since)
    assert code == cli.AUDIT_DIFFER, lines
    bucket_lines = [line for line in lines if line.startswith(f"{BINANCE} [")]
    assert len(bucket_lines) == len(expected_hours) and all("missing in Iceberg" in line for line in bucket_lines), (
        lines
    )
    assert any(line.startswith(f"{KRAKEN}: ") and "all equal" in line for line in lines), lines

    # --repair: each differing bucket replaced by ClickHouse's rows; then every table audits equal.
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in to_env(env.settings).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert cli.main(["audit", "--since", since.isoformat(), "--repair", *TABLES]) == 0
    repaired = [line for line in capsys.readouterr().out.splitlines() if "repaired" in line]
    assert {line.split(":")[0] for line in repaired} == {BINANCE, SILVER, GOLD}, repaired
    code, lines = audit_command(env, monkeypatch, capsys, since)
    assert code == 0 and all("all equal" in line for line in lines), lines
    assert env.iceberg_count(BINANCE) == env.ch_count_through(BINANCE, mark)
