"""Window queries (iceberg_offload.core.query): their text and server-side parameters.

What the predicate selects is checked on the real engine, against Window.holds and a plain model
of the window, in tests/integration/test_window_predicate.py; here: its shape for each kind of
lower bound, that every value travels as a typed parameter, and the queries built around it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.query import describe, select_window, window_predicate, window_stats
from iceberg_offload.core.tables import SourceSpec
from iceberg_offload.core.typemap import map_column
from iceberg_offload.core.watermark import SEQUENCE_MAX, Watermark, Window

PROPERTY = settings(max_examples=200, deadline=None)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
WITH_SEQ = SourceSpec("default", "bronze_trades_binance", "exchange_timestamp", "sequence")
NO_SEQ = SourceSpec("default", "gold_ohlcv_1m", "window_start")
TS_TYPE = "DateTime64(6, 'UTC')"
LO, HI, LO_SEQ = f"{{lo_ts:{TS_TYPE}}}", f"{{hi_ts:{TS_TYPE}}}", "{lo_seq:UInt64}"
TS, SEQ, START = "`exchange_timestamp`", "`sequence`", "`window_start`"
UPPER = Watermark(T0 + timedelta(minutes=15))


# --- the predicate's text and parameters, by the kind of lower bound ----------------------------


@pytest.mark.parametrize(
    ("source", "lower", "sql", "params"),
    [
        pytest.param(
            WITH_SEQ, Watermark(T0), f"{TS} >= {LO} AND {TS} < {HI}", {"lo_ts", "hi_ts"}, id="timestamp-lower"
        ),
        pytest.param(
            WITH_SEQ,
            Watermark(T0, 41),
            f"{TS} >= {LO} AND ({TS} > {LO} OR {SEQ} > {LO_SEQ}) AND {TS} < {HI}",
            {"lo_ts", "hi_ts", "lo_seq"},
            id="legacy-lower-continues-within-its-timestamp",
        ),
        pytest.param(
            WITH_SEQ,
            Watermark(T0, 0),
            f"{TS} >= {LO} AND ({TS} > {LO} OR {SEQ} > {LO_SEQ}) AND {TS} < {HI}",
            {"lo_ts", "hi_ts", "lo_seq"},
            id="legacy-lower-sequence-zero",
        ),
        pytest.param(
            WITH_SEQ,
            Watermark(T0, SEQUENCE_MAX),
            f"{TS} > {LO} AND {TS} < {HI}",
            {"lo_ts", "hi_ts"},
            id="legacy-lower-through-its-whole-timestamp",
        ),
        pytest.param(
            NO_SEQ, Watermark(T0), f"{START} >= {LO} AND {START} < {HI}", {"lo_ts", "hi_ts"}, id="no-seq-timestamp"
        ),
        pytest.param(
            NO_SEQ,
            Watermark(T0, 41),
            f"{START} > {LO} AND {START} < {HI}",
            {"lo_ts", "hi_ts"},
            id="no-seq-legacy-lower-covered-its-whole-timestamp",
        ),
    ],
)
def test_predicate_by_kind_of_lower_bound(source: SourceSpec, lower: Watermark, sql: str, params: set[str]) -> None:
    query = window_predicate(source, Window(lower, UPPER))
    assert query.sql == sql
    assert set(query.parameters) == params
    used = set(re.findall(r"\{(\w+):", query.sql))
    assert used == params  # every parameter passed is used, and every one used is passed
    assert all(isinstance(v, str) for v in query.parameters.values())


def test_predicate_parameter_values() -> None:
    query = window_predicate(WITH_SEQ, Window(Watermark(T0, 41), UPPER))
    assert query.parameters == {
        "lo_ts": "2024-03-01 12:00:00.000000",
        "hi_ts": "2024-03-01 12:15:00.000000",
        "lo_seq": "41",
    }


def test_predicate_timestamps_are_passed_in_utc_with_microseconds() -> None:
    lower = Watermark(datetime(2024, 3, 1, 14, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=2))))
    query = window_predicate(NO_SEQ, Window(lower, Watermark(T0 + SECOND + timedelta(microseconds=7))))
    assert query.parameters["lo_ts"] == "2024-03-01 12:00:00.123456"
    assert query.parameters["hi_ts"] == "2024-03-01 12:00:01.000007"


@pytest.mark.parametrize("lower", [Watermark(T0), Watermark(T0, 41), Watermark(T0, SEQUENCE_MAX)])
def test_predicate_without_a_sequence_column_never_mentions_a_sequence(lower: Watermark) -> None:
    query = window_predicate(NO_SEQ, Window(lower, UPPER))
    assert "seq" not in query.sql
    assert "lo_seq" not in query.parameters


@pytest.mark.parametrize("lower", [Watermark(T0), Watermark(T0, 41), Watermark(T0, SEQUENCE_MAX)])
def test_predicate_upper_bound_is_exclusive_on_the_timestamp_alone(lower: Watermark) -> None:
    sql = window_predicate(WITH_SEQ, Window(lower, UPPER)).sql
    assert sql.endswith(f" AND {TS} < {HI}")
    assert sql.count(HI) == 1


def test_identifiers_are_backquoted() -> None:
    sql = window_predicate(WITH_SEQ, Window(Watermark(T0, 41), UPPER)).sql
    bare = re.sub(r"`[^`]*`", "", sql)
    assert "exchange_timestamp" not in bare
    assert "sequence" not in bare
    assert TS in sql and SEQ in sql


def _shape(lower: Watermark) -> str:
    if lower.sequence is None:
        return "timestamp"
    return "whole-timestamp" if lower.sequence == SEQUENCE_MAX else "within-timestamp"


instants = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
lowers = st.builds(
    Watermark, instants, st.none() | st.just(SEQUENCE_MAX) | st.integers(min_value=0, max_value=SEQUENCE_MAX - 1)
)
spans = st.integers(min_value=0, max_value=10**12).map(lambda n: timedelta(microseconds=n))


@PROPERTY
@given(a=lowers, a_span=spans, b=lowers, b_span=spans, with_seq=st.booleans())
def test_no_value_is_interpolated_into_the_sql(
    a: Watermark, a_span: timedelta, b: Watermark, b_span: timedelta, with_seq: bool
) -> None:
    source = WITH_SEQ if with_seq else NO_SEQ
    w1 = Window(a, Watermark(a.timestamp + a_span + timedelta(microseconds=1)))
    w2 = Window(b, Watermark(b.timestamp + b_span + timedelta(microseconds=1)))
    q1, q2 = window_predicate(source, w1), window_predicate(source, w2)
    if _shape(a) == _shape(b) or (not with_seq and a.sequence is not None and b.sequence is not None):
        assert q1.sql == q2.sql  # the text depends on the shape only; values travel as parameters
    for value in q1.parameters.values():
        if len(value) > 3:
            assert value not in q1.sql


# --- select_window / window_stats / describe --------------------------------------------------


@pytest.mark.parametrize("lower", [Watermark(T0), Watermark(T0, 41)])
def test_select_window_reads_the_cast_columns_of_the_window(lower: Watermark) -> None:
    window = Window(lower, UPPER)
    columns = [map_column("exchange_timestamp", "DateTime64(3, 'UTC')"), map_column("price", "Decimal(18, 8)")]
    query = select_window(WITH_SEQ, columns, window)
    where = window_predicate(WITH_SEQ, window)
    assert query.sql == (
        "SELECT toDateTime64(`exchange_timestamp`, 6, 'UTC') AS `exchange_timestamp`, `price` "
        f"FROM `default`.`bronze_trades_binance` WHERE {where.sql}"
    )
    assert query.parameters == where.parameters


@pytest.mark.parametrize(
    ("source", "lower", "column"),
    [
        pytest.param(WITH_SEQ, Watermark(T0), TS, id="with-sequence"),
        pytest.param(WITH_SEQ, Watermark(T0, 41), TS, id="legacy-lower"),
        pytest.param(NO_SEQ, Watermark(T0), START, id="without-sequence"),
    ],
)
def test_window_stats_counts_the_rows_and_finds_the_earliest_timestamp(
    source: SourceSpec, lower: Watermark, column: str
) -> None:
    window = Window(lower, UPPER)
    query = window_stats(source, window)
    where = window_predicate(source, window)
    assert (
        query.sql == f"SELECT count(), toDateTime64(min({column}), 6, 'UTC') FROM {source.qualified} WHERE {where.sql}"
    )
    assert query.parameters == where.parameters


def test_describe_passes_database_and_table_as_parameters() -> None:
    query = describe(WITH_SEQ)
    assert query.parameters == {"db": "default", "tbl": "bronze_trades_binance"}
    assert "bronze_trades_binance" not in query.sql
    assert "{db:String}" in query.sql and "{tbl:String}" in query.sql
    assert "ORDER BY position" in query.sql
