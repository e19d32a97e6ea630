"""Window queries (iceberg_offload.core.query), and exactly-once over a sequence of runs, modelled.

The generated predicate is evaluated by a small interpreter for exactly the SQL shape the module
emits (backquoted columns, typed server-side parameters, comparisons, AND, OR, parentheses), so
its semantics can be checked against the Watermark model without a ClickHouse server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.planning import committed_watermark, plan_window, split_window, upper_bound
from iceberg_offload.core.query import Query, describe, select_window, window_predicate, window_stats
from iceberg_offload.core.tables import SourceSpec
from iceberg_offload.core.typemap import map_column
from iceberg_offload.core.watermark import INITIAL_WATERMARK, SEQUENCE_MAX, Watermark, Window

PROPERTY = settings(max_examples=200, deadline=None)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
WITH_SEQ = SourceSpec("default", "bronze_trades_binance", "exchange_timestamp", "sequence")
NO_SEQ = SourceSpec("default", "gold_ohlcv_1m", "window_start")
TS_TYPE = "DateTime64(6, 'UTC')"


# --- a tiny evaluator for the predicate's SQL shape -------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<ident>`(?:[^`\\]|\\.)*`)"
    r"|(?P<param>\{(?P<pname>\w+):(?P<ptype>[^{}]+)\})"
    r"|(?P<op>>=|<=|=|<|>)"
    r"|(?P<kw>AND|OR)\b"
    r"|(?P<lp>\()"
    r"|(?P<rp>\))"
    r")"
)

Row = Mapping[str, object]
Predicate = Callable[[Row], bool]
Operand = Callable[[Row], object]


def _param_value(name: str, type_name: str, parameters: Mapping[str, str]) -> object:
    assert name in parameters, f"parameter {name} is used but not passed"
    raw = parameters[name]
    assert isinstance(raw, str)
    if type_name == TS_TYPE:
        return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    if type_name == "UInt64":
        value = int(raw)
        assert 0 <= value < 2**64
        return value
    raise AssertionError(f"unexpected parameter type {type_name}")


def compile_predicate(query: Query) -> Predicate:
    """Compile the predicate into a function of a row {column: value}; fail on any other shape."""
    tokens: list[tuple[str, str, str]] = []
    pos, sql = 0, query.sql
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        assert match and match.end() > pos, f"unexpected SQL at {sql[pos:]!r}"
        kind = match.lastgroup if match.lastgroup not in ("pname", "ptype") else "param"
        if match.group("param"):
            kind = "param"
        assert kind is not None
        tokens.append((kind, match.group(kind), match.group("ptype") or ""))
        pos = match.end()
    at = 0

    def peek() -> tuple[str, str, str] | None:
        return tokens[at] if at < len(tokens) else None

    def take(kind: str) -> tuple[str, str, str]:
        nonlocal at
        token = peek()
        assert token is not None and token[0] == kind, f"expected {kind}, got {token}"
        at += 1
        return token

    def operand() -> Operand:
        token = peek()
        assert token is not None
        if token[0] == "ident":
            take("ident")
            column = re.sub(r"\\(.)", r"\1", token[1][1:-1])
            return lambda row: row[column]
        _, text, type_name = take("param")
        name = text[1:].split(":", 1)[0]
        value = _param_value(name, type_name, query.parameters)
        return lambda row: value

    def comparison() -> Predicate:
        token = peek()
        if token is not None and token[0] == "lp":
            take("lp")
            inner = disjunction()
            take("rp")
            return inner
        left = operand()
        op = take("op")[1]
        right = operand()
        compare: dict[str, Callable[[object, object], bool]] = {
            ">": lambda a, b: a > b,  # type: ignore[operator]
            ">=": lambda a, b: a >= b,  # type: ignore[operator]
            "<": lambda a, b: a < b,  # type: ignore[operator]
            "<=": lambda a, b: a <= b,  # type: ignore[operator]
            "=": lambda a, b: a == b,
        }
        fn = compare[op]
        return lambda row: fn(left(row), right(row))

    def conjunction() -> Predicate:
        parts = [comparison()]
        while (token := peek()) is not None and token[:2] == ("kw", "AND"):
            take("kw")
            parts.append(comparison())
        return lambda row: all(p(row) for p in parts)

    def disjunction() -> Predicate:
        parts = [conjunction()]
        while (token := peek()) is not None and token[:2] == ("kw", "OR"):
            take("kw")
            parts.append(conjunction())
        return lambda row: any(p(row) for p in parts)

    predicate = disjunction()
    assert at == len(tokens), f"trailing SQL: {tokens[at:]}"
    return predicate


def selects(source: SourceSpec, window: Window) -> Callable[[datetime, int], bool]:
    predicate = compile_predicate(window_predicate(source, window))
    if source.sequence_column is None:
        return lambda ts, seq: predicate({source.timestamp_column: ts})
    seq_column = source.sequence_column
    return lambda ts, seq: predicate({source.timestamp_column: ts, seq_column: seq})


def test_evaluator_rejects_sql_it_does_not_understand() -> None:
    with pytest.raises(AssertionError):
        compile_predicate(Query("`a` > 1", {}))
    with pytest.raises(AssertionError):
        compile_predicate(Query("`a` > {x:UInt64} OR", {"x": "1"}))


# --- the predicate's text and parameters ------------------------------------------------------


LOWER = Watermark(T0, 41)
UPPER = Watermark(T0 + timedelta(minutes=15), 97)


@pytest.mark.parametrize(
    ("source", "window", "params"),
    [
        pytest.param(WITH_SEQ, Window(LOWER, UPPER), {"lo_ts", "hi_ts", "lo_seq", "hi_seq"}, id="seq-both-concrete"),
        pytest.param(
            WITH_SEQ,
            Window(LOWER, Watermark.end_of(UPPER.timestamp)),
            {"lo_ts", "hi_ts", "lo_seq"},
            id="seq-upper-is-sequence-max",
        ),
        pytest.param(
            WITH_SEQ,
            Window(Watermark.end_of(T0), UPPER),
            {"lo_ts", "hi_ts", "hi_seq"},
            id="seq-lower-is-sequence-max",
        ),
        pytest.param(NO_SEQ, Window(LOWER, UPPER), {"lo_ts", "hi_ts"}, id="no-sequence-column"),
        pytest.param(
            NO_SEQ, Window(LOWER, Watermark.end_of(UPPER.timestamp)), {"lo_ts", "hi_ts"}, id="no-seq-upper-max"
        ),
    ],
)
def test_predicate_parameters_by_shape(source: SourceSpec, window: Window, params: set[str]) -> None:
    query = window_predicate(source, window)
    assert set(query.parameters) == params
    used = set(re.findall(r"\{(\w+):", query.sql))
    assert used == params  # every parameter passed is used, and every one used is passed
    assert all(isinstance(v, str) for v in query.parameters.values())


def test_predicate_parameter_values_and_types() -> None:
    query = window_predicate(WITH_SEQ, Window(LOWER, UPPER))
    assert query.parameters == {
        "lo_ts": "2024-03-01 12:00:00.000000",
        "hi_ts": "2024-03-01 12:15:00.000000",
        "lo_seq": "41",
        "hi_seq": "97",
    }
    assert f"{{lo_ts:{TS_TYPE}}}" in query.sql
    assert f"{{hi_ts:{TS_TYPE}}}" in query.sql
    assert "{lo_seq:UInt64}" in query.sql
    assert "{hi_seq:UInt64}" in query.sql


def test_predicate_timestamps_are_passed_in_utc_with_microseconds() -> None:
    lower = Watermark(datetime(2024, 3, 1, 14, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=2))), 0)
    query = window_predicate(NO_SEQ, Window(lower, Watermark.end_of(T0 + SECOND)))
    assert query.parameters["lo_ts"] == "2024-03-01 12:00:00.123456"
    assert query.parameters["hi_ts"] == "2024-03-01 12:00:01.000000"


def test_predicate_without_a_sequence_column_never_mentions_a_sequence() -> None:
    sql = window_predicate(NO_SEQ, Window(LOWER, UPPER)).sql
    assert "seq" not in sql
    assert "`window_start`" in sql


def test_identifiers_are_backquoted() -> None:
    sql = window_predicate(WITH_SEQ, Window(LOWER, UPPER)).sql
    bare = re.sub(r"`[^`]*`", "", sql)
    assert "exchange_timestamp" not in bare
    assert "sequence" not in bare
    assert "`exchange_timestamp`" in sql and "`sequence`" in sql


watermarks = st.builds(
    Watermark,
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.one_of(st.just(SEQUENCE_MAX), st.integers(min_value=0, max_value=SEQUENCE_MAX - 1)),
)


@PROPERTY
@given(a=watermarks, b=watermarks, c=watermarks, d=watermarks, with_seq=st.booleans())
def test_no_value_is_interpolated_into_the_sql(
    a: Watermark, b: Watermark, c: Watermark, d: Watermark, with_seq: bool
) -> None:
    source = WITH_SEQ if with_seq else NO_SEQ
    w1, w2 = Window(min(a, b), max(a, b)), Window(min(c, d), max(c, d))
    q1, q2 = window_predicate(source, w1), window_predicate(source, w2)
    same_shape = (w1.lower.sequence == SEQUENCE_MAX) == (w2.lower.sequence == SEQUENCE_MAX) and (
        w1.upper.sequence == SEQUENCE_MAX
    ) == (w2.upper.sequence == SEQUENCE_MAX)
    if same_shape or not with_seq:
        assert q1.sql == q2.sql  # the text depends on the shape only; values travel as parameters
    for value in q1.parameters.values():
        if len(value) > 3:
            assert value not in q1.sql


# --- the predicate's semantics: lower < (ts, seq) <= upper ------------------------------------

# Few distinct timestamps and sequences, so rows sit on the window bounds often.
_offsets = st.integers(min_value=0, max_value=4).map(lambda n: T0 + n * SECOND)
_seqs = st.sampled_from([0, 1, 2, 3, SEQUENCE_MAX - 1, SEQUENCE_MAX])
_marks = st.builds(Watermark, _offsets, _seqs)


@PROPERTY
@given(
    a=_marks,
    b=_marks,
    rows=st.lists(st.tuples(_offsets, _seqs), min_size=1, max_size=30),
)
def test_predicate_selects_exactly_the_rows_inside_the_window(
    a: Watermark, b: Watermark, rows: list[tuple[datetime, int]]
) -> None:
    window = Window(min(a, b), max(a, b))
    selected = selects(WITH_SEQ, window)
    for ts, seq in rows:
        assert selected(ts, seq) == (window.lower < Watermark(ts, seq) <= window.upper), (ts, seq)


@PROPERTY
@given(a=_marks, b=_marks, rows=st.lists(_offsets, min_size=1, max_size=30))
def test_predicate_without_sequence_treats_every_row_as_sequence_zero(
    a: Watermark, b: Watermark, rows: list[datetime]
) -> None:
    window = Window(min(a, b), max(a, b))
    selected = selects(NO_SEQ, window)
    for ts in rows:
        assert selected(ts, 0) == (window.lower < Watermark(ts, 0) <= window.upper), ts


# --- select_window / window_stats / describe --------------------------------------------------


def test_select_window_reads_the_cast_columns_of_the_window() -> None:
    window = Window(LOWER, UPPER)
    columns = [map_column("exchange_timestamp", "DateTime64(3, 'UTC')"), map_column("price", "Decimal(18, 8)")]
    query = select_window(WITH_SEQ, columns, window)
    where = window_predicate(WITH_SEQ, window)
    assert query.sql == (
        "SELECT toDateTime64(`exchange_timestamp`, 6, 'UTC') AS `exchange_timestamp`, `price` "
        f"FROM `default`.`bronze_trades_binance` WHERE {where.sql}"
    )
    assert query.parameters == where.parameters


@pytest.mark.parametrize(
    ("source", "max_seq_fragment"),
    [
        pytest.param(
            WITH_SEQ, "maxIf(`sequence`, `exchange_timestamp` = {hi_ts:DateTime64(6, 'UTC')})", id="with-sequence"
        ),
        pytest.param(NO_SEQ, "toInt64(0)", id="without-sequence"),
    ],
)
def test_window_stats_counts_rows_and_the_top_sequence_at_the_upper_timestamp(
    source: SourceSpec, max_seq_fragment: str
) -> None:
    window = Window(LOWER, Watermark.end_of(UPPER.timestamp))
    query = window_stats(source, window)
    where = window_predicate(source, window)
    assert query.sql.startswith("SELECT count(), countIf(")
    assert query.sql.endswith(f"FROM {source.qualified} WHERE {where.sql}")
    assert max_seq_fragment in query.sql
    assert query.parameters == where.parameters
    # the "at the upper timestamp" condition is itself a well-formed predicate of this shape
    at_upper = re.search(r"countIf\((.*?\})\)", query.sql)
    assert at_upper is not None
    predicate = compile_predicate(Query(at_upper.group(1), query.parameters))
    ts = source.timestamp_column
    assert predicate({ts: UPPER.timestamp})
    assert not predicate({ts: UPPER.timestamp - timedelta(microseconds=1)})


def test_describe_passes_database_and_table_as_parameters() -> None:
    query = describe(WITH_SEQ)
    assert query.parameters == {"db": "default", "tbl": "bronze_trades_binance"}
    assert "bronze_trades_binance" not in query.sql
    assert "{db:String}" in query.sql and "{tbl:String}" in query.sql
    assert "ORDER BY position" in query.sql


# --- exactly once, modelled: a sequence of runs over arriving rows ------------------------------


@dataclass(frozen=True)
class TradeRow:
    ts: datetime
    seq: int
    arrival: datetime  # when the row becomes visible in ClickHouse


@dataclass(frozen=True)
class Tick:
    advance: int  # seconds
    parts: int


def _run_sequence(
    source: SourceSpec, rows: list[TradeRow], start: datetime, ticks: list[Tick], buffer: timedelta
) -> tuple[list[int], Watermark, datetime | None]:
    """Simulate the job's runs: returns per-row selection counts, the final committed watermark
    and the last bound a window was planned to."""
    counts = [0] * len(rows)
    committed: Watermark | None = None
    now, last_bound = start, None
    for tick in ticks:
        now += tick.advance * SECOND
        plan = plan_window(committed, upper_bound(now=now, buffer=buffer))
        if plan.window is None:
            continue
        window = plan.window
        visible = [i for i, r in enumerate(rows) if r.arrival <= now]
        # window_stats: the highest sequence at the upper timestamp, None without rows there
        in_window = selects(source, window)
        at_upper = [
            rows[i].seq for i in visible if rows[i].ts == window.upper.timestamp and in_window(rows[i].ts, rows[i].seq)
        ]
        max_seq = max(at_upper) if at_upper and source.sequence_column else None
        new = committed_watermark(window, max_seq)
        for piece in split_window(Window(window.lower, new), tick.parts):
            in_piece = selects(source, piece)
            for i in visible:
                if in_piece(rows[i].ts, rows[i].seq):
                    counts[i] += 1
        committed, last_bound = new, window.upper.timestamp
    return counts, committed or INITIAL_WATERMARK, last_bound


@st.composite
def scenarios(draw: st.DrawFn, late_rows: bool) -> tuple[SourceSpec, list[TradeRow], datetime, list[Tick], timedelta]:
    source = draw(st.sampled_from([WITH_SEQ, NO_SEQ]))
    buffer = draw(st.sampled_from([0, 1, 3])) * SECOND
    rows = []
    for _ in range(draw(st.integers(min_value=0, max_value=25))):
        ts = T0 + draw(st.integers(min_value=0, max_value=40)) * SECOND
        seq = draw(st.sampled_from([0, 1, 2, 3, 10, SEQUENCE_MAX])) if source.sequence_column else 0
        max_delay = 3 * 10**6 * 3 if late_rows else buffer // timedelta(microseconds=1)
        delay = timedelta(microseconds=draw(st.integers(min_value=0, max_value=max_delay)))
        rows.append(TradeRow(ts, seq, ts + delay))
    start = T0 + draw(st.integers(min_value=-2, max_value=5)) * SECOND
    ticks = draw(
        st.lists(
            st.builds(Tick, st.integers(min_value=0, max_value=8), st.integers(min_value=1, max_value=6)),
            min_size=1,
            max_size=15,
        )
    )
    return source, rows, start, ticks, buffer


@PROPERTY
@given(scenario=scenarios(late_rows=False))
def test_every_row_up_to_the_final_watermark_is_offloaded_exactly_once(
    scenario: tuple[SourceSpec, list[TradeRow], datetime, list[Tick], timedelta],
) -> None:
    source, rows, start, ticks, buffer = scenario
    counts, final, last_bound = _run_sequence(source, rows, start, ticks, buffer)
    for row, count in zip(rows, counts, strict=True):
        position = Watermark(row.ts, row.seq)
        expected = 1 if INITIAL_WATERMARK < position <= final else 0
        assert count == expected, (row, final)
        if last_bound is not None and row.ts <= last_bound:
            assert count == 1, "a row inside the buffer's guarantee was left behind"


@PROPERTY
@given(scenario=scenarios(late_rows=True))
def test_rows_arriving_after_the_buffer_are_never_offloaded_twice(
    scenario: tuple[SourceSpec, list[TradeRow], datetime, list[Tick], timedelta],
) -> None:
    source, rows, start, ticks, buffer = scenario
    counts, final, _ = _run_sequence(source, rows, start, ticks, buffer)
    for row, count in zip(rows, counts, strict=True):
        assert count <= 1
        if count:
            assert INITIAL_WATERMARK < Watermark(row.ts, row.seq) <= final
        elif row.arrival - row.ts <= buffer and row.ts <= final.timestamp:
            raise AssertionError(f"punctual row {row} below the final watermark {final} was lost")
