"""window_predicate and window_stats run on the real engine: the embedded ClickHouse (chdb behind
its HTTP endpoint), the window's bounds substituted by the server as typed parameters.

The rows the engine selects are compared with two answers: Window.holds, the package's own model
of a window, and `oracle` below, which restates the protocol with plain comparisons on epoch
microseconds and shares no code with iceberg_offload. The tables are shaped like the sources:
DateTime64(3) timestamps (bounds are microseconds, so the engine must compare across scales), a
UInt64 sequence column, and a candle table without one; a DateTime64(6) table puts rows on every
microsecond of the bounds. Rows sit on the bounds, a microsecond either side, and many at one
timestamp.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from iceberg_offload.core.query import window_predicate, window_stats
from iceberg_offload.core.tables import SourceSpec
from iceberg_offload.core.watermark import SEQUENCE_MAX, Watermark, Window, WindowError
from iceberg_offload.local.chhttp import ClickHouseHTTPServer

PASSWORD = "window-predicate"
DATABASE = "window_predicate"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
T0_US = (T0 - EPOCH) // timedelta(microseconds=1)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Kind:
    """One shape of source table."""

    table: str
    timestamp_type: str
    sequence: bool
    step_us: int  # the column's resolution: rows only fall on multiples of it

    @property
    def source(self) -> SourceSpec:
        return SourceSpec(DATABASE, self.table, "ts", "seq" if self.sequence else None)

    @property
    def ddl(self) -> str:
        seq = ", seq UInt64" if self.sequence else ""
        order = "(ts, seq)" if self.sequence else "ts"
        columns = f"id UInt32, ts {self.timestamp_type}{seq}"
        return f"CREATE TABLE {DATABASE}.{self.table} ({columns}) ENGINE = MergeTree ORDER BY {order}"


KINDS = {
    "ms-with-sequence": Kind("trades_ms", "DateTime64(3, 'UTC')", True, 1000),
    "us-with-sequence": Kind("trades_us", "DateTime64(6, 'UTC')", True, 1),
    "ms-without-sequence": Kind("candles_ms", "DateTime64(3, 'UTC')", False, 1000),
}

Row = tuple[int, int]  # (microseconds after T0, sequence)


def oracle(lower_us: int, lower_seq: int | None, upper_us: int, row: Row, with_sequence: bool) -> bool:
    """The protocol, written out: [lower, upper) on the timestamp; a lower bound of the first
    version, (T, s), continues after T and, at T, after sequence s (a source without a sequence
    column had every row at T offloaded already). Rows are (ts, seq) in microseconds."""
    ts, seq = row
    if lower_seq is None:
        after_lower = ts >= lower_us
    elif with_sequence and lower_seq < INT64_MAX:
        after_lower = ts > lower_us or (ts == lower_us and seq > lower_seq)
    else:
        after_lower = ts > lower_us
    return after_lower and ts < upper_us


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    # One engine per process: chdb binds a process to a single data directory.
    with ClickHouseHTTPServer(Path(tmp_path_factory.mktemp("chdb-window")), password=PASSWORD) as server:
        client = clickhouse_connect.get_client(
            host="127.0.0.1", port=server.port, username="default", password=PASSWORD
        )
        client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        for kind in KINDS.values():
            client.command(kind.ddl)
        yield client
        client.close()


def load(client: Client, kind: Kind, rows: list[Row]) -> list[Row]:
    """Replace the table's rows; returns them as the engine stored them, read back in microseconds."""
    client.command(f"TRUNCATE TABLE {kind.source.qualified}")
    columns = ["id", "ts", "seq"] if kind.sequence else ["id", "ts"]
    data = [[i, T0 + timedelta(microseconds=ts), seq][: len(columns)] for i, (ts, seq) in enumerate(rows)]
    if data:
        client.insert(f"{DATABASE}.{kind.table}", data, column_names=columns)
    seq = "seq" if kind.sequence else "toUInt64(0)"
    stored = client.query(f"SELECT id, toUnixTimestamp64Micro(ts), {seq} FROM {kind.source.qualified} ORDER BY id")
    got = [(int(ts) - T0_US, int(s)) for _, ts, s in stored.result_rows]
    assert [int(r[0]) for r in stored.result_rows] == list(range(len(rows)))
    return got


def selected(client: Client, kind: Kind, window: Window) -> set[int]:
    where = window_predicate(kind.source, window)
    result = client.query(f"SELECT id FROM {kind.source.qualified} WHERE {where.sql}", parameters=where.parameters)
    return {int(r[0]) for r in result.result_rows}


def check(client: Client, kind: Kind, window: Window, rows: list[Row]) -> None:
    stored = load(client, kind, rows)
    assert stored == [(ts, seq if kind.sequence else 0) for ts, seq in rows]  # what the models see
    lower_us = (window.lower.timestamp - T0) // timedelta(microseconds=1)
    upper_us = (window.upper.timestamp - T0) // timedelta(microseconds=1)
    expected = {i for i, r in enumerate(stored) if oracle(lower_us, window.lower.sequence, upper_us, r, kind.sequence)}
    modelled = {i for i, (ts, seq) in enumerate(stored) if window.holds(T0 + timedelta(microseconds=ts), seq)}
    got = selected(client, kind, window)
    assert got == expected, (str(window), sorted(got ^ expected))
    assert modelled == expected, (str(window), sorted(modelled ^ expected))

    stats = window_stats(kind.source, window)
    count, first = client.query(stats.sql, parameters=stats.parameters).result_rows[0]
    assert int(count) == len(expected)
    if expected:
        earliest = min(stored[i][0] for i in expected)
        assert first.replace(tzinfo=UTC) == T0 + timedelta(microseconds=earliest)


# --- examples: the edges, on the source tables' millisecond column -----------------------------

MS = 1000
SEQS = [0, 1, 5, 6, 2**56 + 1, INT64_MAX - 1, INT64_MAX]
AT_BOUNDS = [(t, s) for t in (-MS, 0, MS, 2 * MS, 3 * MS) for s in SEQS]


def _mark(us: int, seq: int | None = None) -> Watermark:
    return Watermark(T0 + timedelta(microseconds=us), seq)


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        pytest.param(_mark(0), _mark(2 * MS), id="whole-milliseconds"),
        pytest.param(_mark(1), _mark(2 * MS + 1), id="a-microsecond-after-the-rows"),
        pytest.param(_mark(-1), _mark(2 * MS - 1), id="a-microsecond-before-the-rows"),
        pytest.param(_mark(0, 5), _mark(2 * MS), id="legacy-lower-within-a-timestamp"),
        pytest.param(_mark(0, 0), _mark(2 * MS), id="legacy-lower-sequence-zero"),
        pytest.param(_mark(0, INT64_MAX), _mark(2 * MS), id="legacy-lower-whole-timestamp"),
        pytest.param(_mark(0), _mark(0), id="empty"),
        pytest.param(_mark(0, 5), _mark(1), id="legacy-rest-of-one-timestamp"),
    ],
)
@pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))
def test_predicate_on_the_edges(engine: Client, kind: Kind, lower: Watermark, upper: Watermark) -> None:
    check(engine, kind, Window(lower, upper), AT_BOUNDS)


PAST_INT64 = [(0, 2**63), (0, 2**64 - 1), (MS, 2**63)]  # UInt64 sequences a Watermark cannot carry


def test_a_sequence_past_int64_at_a_whole_timestamp_legacy_bound(engine: Client) -> None:
    """The sequence column is UInt64: the first version's end-of-timestamp position (T, 2^63 - 1)
    covered every row at T (its window predicate had no sequence term there), and the predicate
    continues after T; a lower position within T continues after its sequence."""
    kind = KINDS["ms-with-sequence"]
    load(engine, kind, PAST_INT64)
    assert selected(engine, kind, Window(_mark(0, INT64_MAX), _mark(2 * MS))) == {2}
    assert selected(engine, kind, Window(_mark(0, 7), _mark(2 * MS))) == {0, 1, 2}


def test_window_holds_agrees_with_the_engine_on_sequences_past_int64(engine: Client) -> None:
    kind = KINDS["ms-with-sequence"]
    load(engine, kind, PAST_INT64)
    window = Window(_mark(0, INT64_MAX), _mark(2 * MS))
    modelled = {i for i, (ts, seq) in enumerate(PAST_INT64) if window.holds(T0 + timedelta(microseconds=ts), seq)}
    assert modelled == selected(engine, kind, window)


# --- any window, any rows ------------------------------------------------------------------------


@st.composite
def cases(draw: st.DrawFn, kind: Kind) -> tuple[Window, list[Row]]:
    """A window with bounds on or beside the rows' timestamps, and rows around them."""
    grid = [k * MS for k in range(-1, 5)]
    bound = st.sampled_from(grid).flatmap(lambda t: st.sampled_from([t - 1, t, t + 1]))
    lower_us, upper_us = draw(bound), draw(bound)
    lower_seq = draw(st.none() | st.sampled_from(SEQS) | st.integers(min_value=0, max_value=INT64_MAX))
    lower, upper = _mark(lower_us, lower_seq), _mark(upper_us)
    if upper < lower:
        with pytest.raises(WindowError):
            Window(lower, upper)
        assume(False)
    window = Window(lower, upper)
    stamps = sorted({t + d for t in (*grid, lower_us, upper_us) for d in (-1, 0, 1)})
    on_column = [t for t in stamps if t % kind.step_us == 0]
    sequence = st.sampled_from(SEQS) | st.integers(min_value=0, max_value=INT64_MAX)
    rows = draw(st.lists(st.tuples(st.sampled_from(on_column), sequence), max_size=40))
    at = draw(st.sampled_from(on_column))
    rows += [(at, seq) for seq in draw(st.lists(sequence, max_size=15))]  # many rows at one timestamp
    return window, rows


PROPERTY = settings(max_examples=150, deadline=None, print_blob=True)


@pytest.mark.parametrize("name", list(KINDS))
@PROPERTY
@given(data=st.data())
def test_the_engine_selects_exactly_the_rows_the_window_holds(engine: Client, name: str, data: st.DataObject) -> None:
    kind = KINDS[name]
    window, rows = data.draw(cases(kind))
    check(engine, kind, window, rows)


def test_sequence_max_is_int64_max() -> None:
    assert SEQUENCE_MAX == INT64_MAX  # the oracle's "whole timestamp" position is the package's
