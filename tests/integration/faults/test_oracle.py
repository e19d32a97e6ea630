"""The oracle can fail: the watermark's two forms read from snapshot summaries, and each kind of
finding counted on tables made wrong by hand (pyiceberg and ClickHouse directly, no job)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from oracle import BEFORE, OLD_SEQUENCE, OLD_TIMESTAMP, Position, micros_of, position_of
from runner import COLUMNS, oracle_of

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = "2026-12-01T10:15:00.000000Z"
T_US = micros_of(T)


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        ({BEFORE: T}, Position(T_US)),
        ({OLD_TIMESTAMP: T, OLD_SEQUENCE: "7"}, Position(T_US, 7)),
        ({OLD_TIMESTAMP: T}, Position(T_US, 0)),
        ({BEFORE: T, OLD_TIMESTAMP: "2026-12-01T09:00:00Z", OLD_SEQUENCE: "3"}, Position(T_US)),
        ({"offload.run-id": "x"}, None),
    ],
)
def test_watermark_of_a_summary(summary: dict[str, str], expected: Position | None) -> None:
    assert position_of(summary) == expected


def test_what_a_watermark_covers() -> None:
    new, old = Position(T_US), Position(T_US, 7)
    assert new.covers(T_US - 1, 99) and not new.covers(T_US, 0)
    assert old.covers(T_US, 7) and not old.covers(T_US, 8) and old.covers(T_US - 1, 10**9)
    assert Position(T_US - 1, 10**9) < new < Position(T_US, 0) < old  # "before T" sorts before any row at T


def _mark(ts: datetime) -> dict[str, str]:
    return {BEFORE: ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def _binance(ts: datetime, seq: int) -> dict[str, Any]:
    values = [ts, seq, "BTCUSDT", 7_000_000_000 + seq, Decimal("1.5"), Decimal("0.01"), "buy", False]
    return dict(zip(COLUMNS["binance"], values, strict=True)) | {"ingestion_timestamp": ts}


def test_each_kind_of_finding_is_counted(make_env: Any, base: datetime) -> None:
    env = make_env("oracle_check", tables=["bronze_trades_binance", "bronze_trades_kraken", "silver_trades"])
    early, late = base + timedelta(minutes=1), base + timedelta(minutes=10)
    rows = {seq: _binance(early, seq) for seq in (1, 2, 3)} | {4: _binance(late, 4)}
    env.clickhouse.insert(
        "bronze_trades_binance",
        [[r[c] for c in COLUMNS["binance"]] for r in rows.values()],
        column_names=COLUMNS["binance"],
    )
    table = env.iceberg("bronze_trades_binance")
    schema = table.schema().as_arrow()
    # 1 twice (a duplicate), 2 never (a gap), 3 once, 4 beyond the watermark and 99 unknown (extra).
    written = [rows[1], rows[1], rows[3], rows[4], _binance(early, 99)]
    table.append(pa.Table.from_pylist(written, schema=schema), snapshot_properties=_mark(base + timedelta(minutes=5)))
    oracle = oracle_of(env)
    assert oracle.check(1).counts() == (1, 1, 2, 0), oracle.findings.notes
    table = env.iceberg("bronze_trades_binance")
    table.append(schema.empty_table(), snapshot_properties=_mark(base + timedelta(minutes=4)))
    assert oracle.check(2).counts() == (1, 1, 2, 1), oracle.findings.regressions
    table = env.iceberg("bronze_trades_binance")
    back = base + timedelta(minutes=3)
    table.append(schema.empty_table(), snapshot_properties=_mark(back))
    oracle.check(3, {"bronze_trades_binance": Position((back - EPOCH) // timedelta(microseconds=1))})
    assert oracle.findings.counts() == (1, 1, 2, 1), "a reset to exactly there is no regression"


def test_a_late_row_is_tolerated_until_the_final_check(make_env: Any, base: datetime) -> None:
    """A row that appears when the watermark already covers it is not a gap yet (a repairing run
    brings it); at the final check it is, like any missing row. A row that was there before the
    watermark passed it is a gap at once."""
    env = make_env("oracle_late", tables=["bronze_trades_binance", "bronze_trades_kraken", "silver_trades"])
    schema = env.iceberg("bronze_trades_binance").schema().as_arrow()
    early, mark = base + timedelta(minutes=1), base + timedelta(minutes=5)

    def insert(*rows: dict[str, Any]) -> None:
        env.clickhouse.insert(
            "bronze_trades_binance",
            [[r[c] for c in COLUMNS["binance"]] for r in rows],
            column_names=COLUMNS["binance"],
        )

    insert(_binance(early, 1))
    oracle = oracle_of(env)
    oracle.check(0)
    env.iceberg("bronze_trades_binance").append(
        pa.Table.from_pylist([_binance(early, 1)], schema=schema), snapshot_properties=_mark(mark)
    )
    assert oracle.check(1).counts() == (0, 0, 0, 0)
    insert(_binance(early, 2))  # late: behind the committed watermark when it arrives
    assert oracle.check(2).counts() == (0, 0, 0, 0), oracle.findings.notes
    assert oracle.check(3).counts() == (0, 0, 0, 0), "still tolerated until the final check"
    assert oracle.check(4, final=True).counts() == (0, 1, 0, 0), oracle.findings.notes
