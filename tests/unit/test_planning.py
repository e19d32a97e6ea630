"""Window planning (iceberg_offload.core.planning): bounds, windows and sub-windows.

A window is [lower, upper) on the timestamp: its lower bound is the committed watermark (of this
protocol, or a (T, sequence) one of the first version), its upper bound the planned bound, and
the run commits that upper bound. Which rows a window offloads is checked by Window.holds against
rows drawn onto the bounds, and against the plain model of window_model.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.planning import (
    UpperBound,
    WindowPlan,
    first_open_candle_start,
    floor_to_interval,
    plan_window,
    split_window,
    subwindow_count,
    upper_bound,
)
from iceberg_offload.core.tables import CANDLE_INTERVALS
from iceberg_offload.core.watermark import EPOCH, INITIAL_WATERMARK, SEQUENCE_MAX, Watermark, Window, WindowError
from window_model import covered, held

PROPERTY = settings(max_examples=200, deadline=None)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PLUS_2 = timezone(timedelta(hours=2))

instants = st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
intervals = st.one_of(
    st.sampled_from(list(CANDLE_INTERVALS.values())),
    st.integers(min_value=1, max_value=10 * 86_400 * 10**6).map(lambda n: timedelta(microseconds=n)),
)
sequences = st.one_of(st.sampled_from([0, 1, SEQUENCE_MAX]), st.integers(min_value=0, max_value=SEQUENCE_MAX))
row_sequences = st.sampled_from([0, 1, 2, 3, 1000, SEQUENCE_MAX - 1, SEQUENCE_MAX])

Row = tuple[datetime, int]


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds


@st.composite
def rows_around(draw: st.DrawFn, stamps: list[datetime], span: tuple[datetime, datetime]) -> list[Row]:
    """Rows on the given timestamps and one microsecond either side of them, anywhere in span,
    and a cluster of many rows at one of those timestamps."""
    near = sorted({s + k * US for s in stamps for k in (-1, 0, 1)})
    anywhere = st.datetimes(min_value=span[0].replace(tzinfo=None), max_value=span[1].replace(tzinfo=None)).map(
        lambda d: d.replace(tzinfo=UTC)
    )
    stamp = st.sampled_from(near) | anywhere if near else anywhere
    rows = draw(st.lists(st.tuples(stamp, row_sequences), max_size=30))
    at = draw(stamp)
    return rows + [(at, seq) for seq in draw(st.lists(row_sequences, max_size=12))]


def assert_windows_partition(windows: list[Window], first: Watermark, last: Watermark, rows: list[Row]) -> None:
    """Contiguous, and each row before `last` and not covered by `first` held by exactly one window."""
    for before, after in pairwise(windows):
        assert after.lower == before.upper, (before, after)
    if windows:
        assert (windows[0].lower, windows[-1].upper) == (first, last)
    for row in rows:
        holders = [w for w in windows if w.holds(*row)]
        expected = 1 if covered(last, *row) and not covered(first, *row) else 0
        assert len(holders) == expected, (row, holders, first, last)


# --- floor_to_interval ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "interval", "expected"),
    [
        pytest.param(
            datetime(2024, 3, 1, 10, 37, 12, 500, tzinfo=UTC),
            HOUR,
            datetime(2024, 3, 1, 10, tzinfo=UTC),
            id="1h-mid-hour",
        ),
        pytest.param(
            datetime(2024, 3, 1, 10, tzinfo=UTC),
            HOUR,
            datetime(2024, 3, 1, 10, tzinfo=UTC),
            id="1h-on-boundary-unchanged",
        ),
        pytest.param(
            datetime(2024, 3, 1, 10, 59, 59, 999_999, tzinfo=UTC),
            HOUR,
            datetime(2024, 3, 1, 10, tzinfo=UTC),
            id="1h-last-microsecond",
        ),
        pytest.param(
            datetime(2024, 3, 1, 10, 44, tzinfo=UTC), 15 * MIN, datetime(2024, 3, 1, 10, 30, tzinfo=UTC), id="15m"
        ),
        pytest.param(
            datetime(2024, 3, 1, 23, 59, tzinfo=UTC), DAY, datetime(2024, 3, 1, tzinfo=UTC), id="1d-is-utc-midnight"
        ),
        pytest.param(
            datetime(2024, 3, 2, 1, 30, tzinfo=PLUS_2),
            DAY,
            datetime(2024, 3, 1, tzinfo=UTC),
            id="1d-of-an-offset-time-is-the-utc-day",
        ),
        pytest.param(datetime(2024, 3, 1, 10, 37), HOUR, datetime(2024, 3, 1, 10, tzinfo=UTC), id="naive-is-utc"),
        pytest.param(
            datetime(1969, 12, 31, 23, 30, tzinfo=UTC),
            HOUR,
            datetime(1969, 12, 31, 23, tzinfo=UTC),
            id="before-epoch-floors-down",
        ),
        # buckets of 7 s counted from the epoch: [0, 7), [7, 14), [14, 21) ...
        pytest.param(
            datetime(1970, 1, 1, 0, 0, 15, tzinfo=UTC),
            timedelta(seconds=7),
            datetime(1970, 1, 1, 0, 0, 14, tzinfo=UTC),
            id="odd-interval-aligned-to-epoch",
        ),
    ],
)
def test_floor_to_interval(value: datetime, interval: timedelta, expected: datetime) -> None:
    assert floor_to_interval(value, interval) == expected


@pytest.mark.parametrize("interval", [pytest.param(timedelta(0), id="zero"), pytest.param(-HOUR, id="negative")])
def test_floor_to_interval_refuses_non_positive_intervals(interval: timedelta) -> None:
    with pytest.raises(ValueError, match="positive"):
        floor_to_interval(T0, interval)


@PROPERTY
@given(value=instants, interval=intervals)
def test_floor_is_the_aligned_bucket_start_holding_the_value(value: datetime, interval: timedelta) -> None:
    start = floor_to_interval(value, interval)
    assert start <= value < start + interval
    assert _micros(start - EPOCH) % _micros(interval) == 0


# --- first_open_candle_start -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("complete_before", "interval", "expected"),
    [
        # the 10:00 candle closed exactly at 11:00: a window up to (not including) 11:00 holds it
        pytest.param(datetime(2024, 3, 1, 11, tzinfo=UTC), HOUR, datetime(2024, 3, 1, 11, tzinfo=UTC), id="1h-at-end"),
        pytest.param(
            datetime(2024, 3, 1, 10, 59, 59, 999_999, tzinfo=UTC),
            HOUR,
            datetime(2024, 3, 1, 10, tzinfo=UTC),
            id="1h-one-microsecond-short",
        ),
        pytest.param(
            datetime(2024, 3, 1, 10, 7, tzinfo=UTC), 5 * MIN, datetime(2024, 3, 1, 10, 5, tzinfo=UTC), id="5m"
        ),
        pytest.param(datetime(2024, 3, 2, 0, 0, tzinfo=UTC), DAY, datetime(2024, 3, 2, tzinfo=UTC), id="1d"),
        pytest.param(datetime(2024, 3, 2, 2, 0, tzinfo=PLUS_2), DAY, datetime(2024, 3, 2, tzinfo=UTC), id="1d-offset"),
    ],
)
def test_first_open_candle_start(complete_before: datetime, interval: timedelta, expected: datetime) -> None:
    assert first_open_candle_start(complete_before, interval) == expected


@PROPERTY
@given(complete_before=instants, interval=intervals)
def test_first_open_candle_is_the_oldest_aligned_candle_not_closed(
    complete_before: datetime, interval: timedelta
) -> None:
    start = first_open_candle_start(complete_before, interval)
    assert _micros(start - EPOCH) % _micros(interval) == 0
    assert start <= complete_before  # the candle before it is closed
    assert start + interval > complete_before  # it is not
    # a window up to it holds the candles (by their start) that are closed, and no other
    window = Window(Watermark(start - 3 * interval), Watermark(start))
    for candle in (start - 2 * interval, start - interval, start, start + interval):
        assert window.holds(candle) == (candle >= start - 3 * interval and candle + interval <= complete_before)


# --- upper_bound ------------------------------------------------------------------------------


def test_upper_bound_is_now_minus_the_buffer() -> None:
    bound = upper_bound(now=T0, buffer=5 * MIN)
    assert bound == UpperBound(T0 - 5 * MIN, "safety buffer")


def test_upper_bound_with_zero_buffer_is_now() -> None:
    assert upper_bound(now=T0, buffer=timedelta(0)).timestamp == T0


def test_upper_bound_takes_a_naive_clock_as_utc() -> None:
    assert upper_bound(now=datetime(2024, 3, 1, 12, 0), buffer=MIN).timestamp == T0 - MIN


def test_upper_bound_refuses_a_negative_buffer() -> None:
    with pytest.raises(ValueError, match="negative"):
        upper_bound(now=T0, buffer=-US)


@pytest.mark.parametrize("sequence", [pytest.param(None, id="timestamp"), pytest.param(42, id="legacy")])
def test_upstream_behind_the_buffer_caps_the_bound_and_is_named(sequence: int | None) -> None:
    # every upstream row before T0 - 1h is offloaded, whether or not some at T0 - 1h are too
    upstream = {"bronze_trades_binance": Watermark(T0 - HOUR, sequence)}
    bound = upper_bound(now=T0, buffer=5 * MIN, upstream=upstream)
    assert bound.timestamp == T0 - HOUR
    assert "bronze_trades_binance" in bound.reason


def test_upstream_ahead_of_the_buffer_does_not_cap() -> None:
    bound = upper_bound(now=T0, buffer=5 * MIN, upstream={"silver_trades": Watermark(T0)})
    assert bound == UpperBound(T0 - 5 * MIN, "safety buffer")


def test_the_laggard_of_several_upstreams_sets_the_bound() -> None:
    upstream = {
        "bronze_trades_binance": Watermark(T0 - 10 * MIN),
        "bronze_trades_kraken": Watermark(T0 - 30 * MIN, 1),
    }
    bound = upper_bound(now=T0, buffer=5 * MIN, upstream=upstream)
    assert bound.timestamp == T0 - 30 * MIN
    assert "bronze_trades_kraken" in bound.reason
    assert "bronze_trades_binance" not in bound.reason


@pytest.mark.parametrize(
    ("requested_to", "expected", "reason"),
    [
        pytest.param(T0 - HOUR, T0 - HOUR, "requested end", id="earlier-end-caps"),
        pytest.param(T0, T0 - 5 * MIN, "safety buffer", id="later-end-does-not-extend-past-buffer"),
        pytest.param(
            datetime(2024, 3, 1, 13, 0, tzinfo=PLUS_2), T0 - HOUR, "requested end", id="offset-end-read-as-utc"
        ),
    ],
)
def test_requested_to(requested_to: datetime, expected: datetime, reason: str) -> None:
    bound = upper_bound(now=T0, buffer=5 * MIN, requested_to=requested_to)
    assert bound.timestamp == expected
    assert reason in bound.reason


@pytest.mark.parametrize(
    ("now", "expected_bound"),
    [
        # The 10:00 candle covers [10:00, 11:00): final once 11:00 plus the 5 minute buffer has passed.
        pytest.param(
            datetime(2024, 3, 1, 11, 5, tzinfo=UTC), datetime(2024, 3, 1, 11, tzinfo=UTC), id="exactly-hour-plus-buffer"
        ),
        pytest.param(
            datetime(2024, 3, 1, 11, 4, 59, 999_999, tzinfo=UTC),
            datetime(2024, 3, 1, 10, tzinfo=UTC),
            id="one-microsecond-before-final",
        ),
        pytest.param(
            datetime(2024, 3, 1, 11, 59, tzinfo=UTC), datetime(2024, 3, 1, 11, tzinfo=UTC), id="late-in-the-next-hour"
        ),
    ],
)
def test_a_1h_candle_is_offloaded_only_after_its_hour_plus_the_buffer(now: datetime, expected_bound: datetime) -> None:
    bound = upper_bound(now=now, buffer=5 * MIN, candle_interval=HOUR)
    assert bound.timestamp == expected_bound
    assert "candle" in bound.reason
    window = Window(INITIAL_WATERMARK, Watermark(bound.timestamp))
    assert window.holds(expected_bound - HOUR)  # the newest closed candle
    assert not window.holds(expected_bound)  # the open one


@pytest.mark.parametrize("sequence", [pytest.param(None, id="timestamp"), pytest.param(7, id="legacy")])
def test_candle_bound_follows_the_upstream_and_still_names_it(sequence: int | None) -> None:
    upstream = {"silver_trades": Watermark(datetime(2024, 3, 1, 10, 30, tzinfo=UTC), sequence)}
    bound = upper_bound(now=T0, buffer=5 * MIN, upstream=upstream, candle_interval=15 * MIN)
    # silver is complete before 10:30: the candle [10:15, 10:30) is closed, [10:30, 10:45) is not.
    assert bound.timestamp == datetime(2024, 3, 1, 10, 30, tzinfo=UTC)
    assert "silver_trades" in bound.reason


@PROPERTY
@given(
    now=instants,
    buffer=st.integers(min_value=0, max_value=3 * 3600 * 10**6).map(lambda n: timedelta(microseconds=n)),
    upstream=st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.builds(Watermark, instants, st.none() | sequences),
        max_size=3,
    ),
    requested_to=st.none() | instants,
    interval=st.none() | intervals,
)
def test_upper_bound_is_the_newest_bound_every_limit_allows(
    now: datetime,
    buffer: timedelta,
    upstream: dict[str, Watermark],
    requested_to: datetime | None,
    interval: timedelta | None,
) -> None:
    limits = [now - buffer, *(m.timestamp for m in upstream.values())]
    if requested_to is not None:
        limits.append(requested_to)
    complete_before = min(limits)
    bound = upper_bound(now=now, buffer=buffer, upstream=upstream, candle_interval=interval, requested_to=requested_to)
    if interval is None:
        assert bound.timestamp == complete_before
    else:
        assert _micros(bound.timestamp - EPOCH) % _micros(interval) == 0
        assert bound.timestamp <= complete_before < bound.timestamp + interval
    # the reason names an upstream exactly when an upstream is the binding limit
    laggards = [name for name, m in upstream.items() if m.timestamp == complete_before]
    if laggards and complete_before < now - buffer and (requested_to is None or complete_before < requested_to):
        assert any(name in bound.reason for name in laggards)


# --- plan_window ------------------------------------------------------------------------------


BOUND = UpperBound(T0, "safety buffer")
LEGACY = Watermark(T0 - HOUR, 17)


def test_nothing_committed_starts_at_the_initial_watermark() -> None:
    plan = plan_window(None, BOUND)
    assert plan.window == Window(INITIAL_WATERMARK, Watermark(T0))
    assert plan.committed == INITIAL_WATERMARK
    assert plan.bound == BOUND
    assert not plan.skipped


@pytest.mark.parametrize(
    "committed",
    [pytest.param(Watermark(T0 - HOUR), id="timestamp"), pytest.param(LEGACY, id="legacy-continues-at-its-position")],
)
def test_window_runs_from_the_committed_watermark_up_to_the_bound(committed: Watermark) -> None:
    plan = plan_window(committed, BOUND)
    assert plan.window == Window(committed, Watermark(T0))
    assert plan.committed == committed


@pytest.mark.parametrize(
    "committed",
    [
        pytest.param(Watermark(T0), id="committed-at-the-bound"),
        pytest.param(Watermark(T0, 3), id="legacy-committed-at-the-bound"),
        pytest.param(Watermark(T0, SEQUENCE_MAX), id="legacy-committed-through-the-bound"),
        pytest.param(Watermark(T0 + HOUR), id="committed-after-the-bound"),
        pytest.param(Watermark(T0 + HOUR, 0), id="legacy-committed-after-the-bound"),
    ],
)
def test_already_committed_window_is_skipped(committed: Watermark) -> None:
    plan = plan_window(committed, BOUND)
    assert plan.window is None
    assert plan.skipped
    assert plan.committed == committed
    assert plan.bound == BOUND


@pytest.mark.parametrize("at", [pytest.param(EPOCH, id="at-the-epoch"), pytest.param(EPOCH - DAY, id="before")])
def test_skipped_when_the_bound_is_not_after_the_epoch_and_nothing_is_committed(at: datetime) -> None:
    plan = plan_window(None, UpperBound(at, "safety buffer"))
    assert plan.skipped
    assert plan.committed == INITIAL_WATERMARK


@pytest.mark.parametrize(
    ("committed", "requested_from"),
    [
        pytest.param(Watermark(T0 - HOUR), Watermark(T0 - 2 * HOUR), id="before-committed"),
        pytest.param(Watermark(T0 - HOUR), Watermark(T0 - HOUR), id="equal-to-committed"),
        pytest.param(LEGACY, Watermark(T0 - HOUR), id="legacy-before-its-timestamp"),
        pytest.param(LEGACY, Watermark(T0 - HOUR, 16), id="legacy-lower-sequence"),
        pytest.param(LEGACY, LEGACY, id="legacy-equal"),
        pytest.param(None, INITIAL_WATERMARK, id="nothing-committed-from-the-epoch"),
    ],
)
def test_requested_start_at_or_before_the_committed_watermark_is_clipped(
    committed: Watermark | None, requested_from: Watermark
) -> None:
    plan = plan_window(committed, BOUND, requested_from=requested_from)
    assert plan.window == Window(committed or INITIAL_WATERMARK, Watermark(T0))


@pytest.mark.parametrize(
    ("committed", "requested_from"),
    [
        pytest.param(Watermark(T0 - HOUR), Watermark(T0 - HOUR + US), id="one-microsecond-later"),
        pytest.param(Watermark(T0 - HOUR), Watermark(T0 - HOUR, 0), id="through-sequence-zero-of-committed"),
        pytest.param(LEGACY, Watermark(T0 - HOUR + US), id="legacy-next-microsecond"),
        pytest.param(LEGACY, Watermark(T0 - HOUR, 18), id="legacy-higher-sequence"),
        pytest.param(None, Watermark(T0 - DAY), id="nothing-committed-but-start-after-epoch"),
    ],
)
def test_requested_start_after_the_committed_watermark_is_refused_naming_the_gap(
    committed: Watermark | None, requested_from: Watermark
) -> None:
    with pytest.raises(WindowError) as info:
        plan_window(committed, BOUND, requested_from=requested_from)
    message = str(info.value)
    assert str(requested_from) in message
    assert str(committed or INITIAL_WATERMARK) in message


def test_requested_start_after_the_bound_is_refused() -> None:
    requested_from = Watermark(T0 + MIN)
    with pytest.raises(WindowError) as info:
        plan_window(Watermark(T0 + MIN), BOUND, requested_from=requested_from)
    assert str(requested_from) in str(info.value)
    assert BOUND.reason in str(info.value)


@pytest.mark.parametrize("seq", [0, 7, SEQUENCE_MAX])
def test_rows_at_the_bound_wait_for_the_next_window_whatever_their_sequence(seq: int) -> None:
    first = plan_window(None, BOUND).window
    assert first is not None
    assert first.holds(T0 - US, seq)
    assert not first.holds(T0, seq)
    nxt = plan_window(first.upper, UpperBound(T0 + MIN, "safety buffer")).window
    assert nxt is not None
    assert nxt.lower == first.upper
    assert nxt.holds(T0, seq)
    assert not nxt.holds(T0 - US, seq)


def test_a_legacy_watermark_is_continued_within_its_timestamp() -> None:
    window = plan_window(Watermark(T0, 5), UpperBound(T0 + MIN, "safety buffer")).window
    assert window == Window(Watermark(T0, 5), Watermark(T0 + MIN))
    assert [s for s in (0, 4, 5, 6, SEQUENCE_MAX) if window.holds(T0, s)] == [6, SEQUENCE_MAX]
    assert window.holds(T0 + US, 0)
    assert not window.holds(T0 + MIN, 0)


def test_window_plan_skipped_reflects_a_missing_window() -> None:
    assert WindowPlan(None, INITIAL_WATERMARK, BOUND).skipped
    assert not WindowPlan(Window(INITIAL_WATERMARK, Watermark(T0)), INITIAL_WATERMARK, BOUND).skipped


# --- windows one after another: contiguous, disjoint, gap-free ---------------------------------


def plan_all(start: Watermark | None, bounds: list[UpperBound]) -> list[Window]:
    """Plan a run for each bound in turn, each committing its window's upper bound."""
    committed, windows = start, []
    for bound in bounds:
        plan = plan_window(committed, bound)
        previous = committed or INITIAL_WATERMARK
        assert plan.committed == previous
        if plan.window is None:
            assert bound.timestamp <= previous.timestamp
            continue
        assert plan.window.lower == previous
        assert plan.window.upper == Watermark(bound.timestamp)
        assert previous < plan.window.upper  # progress
        windows.append(plan.window)
        committed = plan.window.upper
    return windows


# Bounds on a small grid around T0, so that they repeat, go back and land on rows often.
grid = st.sampled_from([-2 * MIN, -US, timedelta(0), US, 2 * US, MIN, MIN + US, HOUR]).map(lambda d: T0 + d)
starts = st.one_of(
    st.none(),
    st.builds(Watermark, grid),
    st.builds(Watermark, grid, row_sequences),  # a watermark committed by the first protocol version
)


@PROPERTY
@given(start=starts, bounds=st.lists(grid, min_size=1, max_size=12), data=st.data())
def test_windows_of_any_bound_schedule_hold_each_row_before_the_last_watermark_once(
    start: Watermark | None, bounds: list[datetime], data: st.DataObject
) -> None:
    windows = plan_all(start, [UpperBound(b, "bound") for b in bounds])
    first = start or INITIAL_WATERMARK
    last = windows[-1].upper if windows else first
    stamps = [first.timestamp, *bounds]
    rows = data.draw(rows_around(stamps, (T0 - 3 * MIN, T0 + 2 * HOUR)))
    rows.append((EPOCH - US, 0))  # before the initial watermark: never offloaded
    assert_windows_partition(windows, first, last, rows)
    if first.sequence is not None and windows:  # a legacy start: its timestamp is finished exactly
        for seq in (0, first.sequence, min(first.sequence + 1, SEQUENCE_MAX)):
            count = sum(w.holds(first.timestamp, seq) for w in windows)
            assert count == (1 if seq > first.sequence else 0)


@dataclass(frozen=True)
class Run:
    advance: timedelta
    buffer: timedelta
    upstream_lag: timedelta | None
    upstream_sequence: int | None
    requested_to_lag: timedelta | None


runs = st.builds(
    Run,
    advance=st.one_of(
        st.sampled_from([timedelta(0), US, MIN, HOUR]),
        st.integers(min_value=0, max_value=6 * 3600 * 10**6).map(lambda n: timedelta(microseconds=n)),
    ),
    buffer=st.sampled_from([timedelta(0), US, MIN, 5 * MIN, HOUR]),
    # upstream marks may be anywhere around now, and need not move forward between runs
    upstream_lag=st.none()
    | st.integers(min_value=-3600 * 10**6, max_value=12 * 3600 * 10**6).map(lambda n: timedelta(microseconds=n)),
    upstream_sequence=st.none() | sequences,
    requested_to_lag=st.none() | st.sampled_from([timedelta(0), MIN, 2 * HOUR]),
)


@PROPERTY
@given(
    start=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    legacy=st.none() | row_sequences,
    schedule=st.lists(runs, min_size=1, max_size=25),
    candle=st.none() | st.sampled_from(list(CANDLE_INTERVALS.values())),
    data=st.data(),
)
def test_scheduled_runs_are_contiguous_never_overlap_and_leave_no_gap(
    start: datetime, legacy: int | None, schedule: list[Run], candle: timedelta | None, data: st.DataObject
) -> None:
    committed = None if legacy is None else Watermark(start, legacy)
    now, bounds = start, []
    for run in schedule:
        now += run.advance
        upstream = (
            {"upstream": Watermark(now - run.upstream_lag, run.upstream_sequence)}
            if run.upstream_lag is not None
            else None
        )
        requested_to = now - run.requested_to_lag if run.requested_to_lag is not None else None
        bounds.append(
            upper_bound(
                now=now, buffer=run.buffer, upstream=upstream, candle_interval=candle, requested_to=requested_to
            )
        )
    windows = plan_all(committed, bounds)
    first = committed or INITIAL_WATERMARK
    last = windows[-1].upper if windows else first
    for i, earlier in enumerate(windows):
        assert not earlier.is_empty
        for later in windows[i + 1 :]:
            assert earlier.upper <= later.lower  # [a, b) and [c, d) with b <= c share no row
    rows = data.draw(rows_around([first.timestamp, *(b.timestamp for b in bounds)], (start - HOUR, now + HOUR)))
    assert_windows_partition(windows, first, last, rows)


# --- exactly once, modelled: runs over rows that arrive late or on time ---------------------------


@dataclass(frozen=True)
class TradeRow:
    ts: datetime
    seq: int
    arrival: datetime  # when the row becomes visible in ClickHouse


@dataclass(frozen=True)
class Tick:
    advance: int  # seconds
    parts: int


def run_sequence(
    rows: list[TradeRow], start: Watermark | None, clock: datetime, ticks: list[Tick], buffer: timedelta
) -> tuple[list[int], Watermark]:
    """Each tick one run: it reads the visible rows of its window in pieces, as the job does, and
    commits the window's upper bound. Returns how often each row was read, and the last watermark."""
    counts = [0] * len(rows)
    committed, now = start, clock
    for tick in ticks:
        now += tick.advance * SECOND
        window = plan_window(committed, upper_bound(now=now, buffer=buffer)).window
        if window is None:
            continue
        visible = [i for i, r in enumerate(rows) if r.arrival <= now]
        first = min((rows[i].ts for i in visible if window.holds(rows[i].ts, rows[i].seq)), default=None)
        for piece in split_window(window, tick.parts, data_from=first):  # first: what window_stats finds
            for i in visible:
                counts[i] += piece.holds(rows[i].ts, rows[i].seq)
        committed = window.upper
    return counts, committed or INITIAL_WATERMARK


Scenario = tuple[list[TradeRow], Watermark | None, datetime, list[Tick], timedelta]


@st.composite
def scenarios(draw: st.DrawFn, late_rows: bool) -> Scenario:
    buffer = draw(st.sampled_from([0, 1, 3])) * SECOND
    rows = []
    for _ in range(draw(st.integers(min_value=0, max_value=25))):
        ts = T0 + draw(st.integers(min_value=0, max_value=40)) * SECOND  # whole seconds: rows sit on the bounds
        seq = draw(st.sampled_from([0, 1, 2, 3, 10, SEQUENCE_MAX]))
        max_delay = 9 * 10**6 if late_rows else buffer // US
        rows.append(TradeRow(ts, seq, ts + draw(st.integers(min_value=0, max_value=max_delay)) * US))
    start = draw(st.none() | st.builds(Watermark, st.just(T0 + 3 * SECOND), st.none() | st.sampled_from([0, 2, 10])))
    clock = T0 + draw(st.integers(min_value=-2, max_value=5)) * SECOND
    ticks = draw(
        st.lists(
            st.builds(Tick, st.integers(min_value=0, max_value=8), st.integers(min_value=1, max_value=6)),
            min_size=1,
            max_size=15,
        )
    )
    return rows, start, clock, ticks, buffer


@PROPERTY
@given(scenario=scenarios(late_rows=False))
def test_every_punctual_row_before_the_last_watermark_is_offloaded_exactly_once(scenario: Scenario) -> None:
    rows, start, clock, ticks, buffer = scenario
    counts, last = run_sequence(rows, start, clock, ticks, buffer)
    first = start or INITIAL_WATERMARK
    for row, count in zip(rows, counts, strict=True):
        expected = 1 if covered(last, row.ts, row.seq) and not covered(first, row.ts, row.seq) else 0
        assert count == expected, (row, first, last)


@PROPERTY
@given(scenario=scenarios(late_rows=True))
def test_rows_arriving_after_the_buffer_are_never_offloaded_twice(scenario: Scenario) -> None:
    rows, start, clock, ticks, buffer = scenario
    counts, last = run_sequence(rows, start, clock, ticks, buffer)
    first = start or INITIAL_WATERMARK
    for row, count in zip(rows, counts, strict=True):
        assert count <= 1
        in_range = covered(last, row.ts, row.seq) and not covered(first, row.ts, row.seq)
        if count:
            assert in_range, (row, first, last)
        elif row.arrival - row.ts <= buffer:
            assert not in_range, f"punctual row {row} before the last watermark {last} was lost"


# --- split_window / subwindow_count -----------------------------------------------------------


@st.composite
def windows_to_split(draw: st.DrawFn) -> Window:
    lower_ts = draw(instants)
    span = draw(st.sampled_from([0, 1, 2, 7, 10**6]) | st.integers(min_value=0, max_value=40 * 86_400 * 10**6))
    upper = Watermark(lower_ts + timedelta(microseconds=span))
    lower = Watermark(lower_ts, draw(st.none() | row_sequences))
    return Window(lower, upper) if lower <= upper else Window(Watermark(lower_ts), upper)


@PROPERTY
@given(window=windows_to_split(), parts=st.integers(min_value=1, max_value=64), data=st.data())
def test_split_window_pieces_are_contiguous_and_hold_exactly_the_rows_of_the_window(
    window: Window, parts: int, data: st.DataObject
) -> None:
    lo, hi = window.lower.timestamp, window.upper.timestamp
    data_from = data.draw(st.none() | st.sampled_from([lo, lo + US, hi - US, hi, lo + (hi - lo) / 3]), "data_from")
    pieces = split_window(window, parts, data_from=data_from)
    assert 1 <= len(pieces) <= parts
    assert pieces[0].lower == window.lower
    assert pieces[-1].upper == window.upper
    for before, after in pairwise(pieces):
        assert after.lower == before.upper
        # inner boundaries are timestamps strictly inside the window: a timestamp's rows stay in one piece
        assert before.upper.sequence is None
        assert lo < before.upper.timestamp < hi
    if not window.is_empty:
        assert all(not p.is_empty for p in pieces)
    if data_from is None and not window.is_empty:
        spans = [_micros(p.upper.timestamp - p.lower.timestamp) for p in pieces]
        assert max(spans) - min(spans) <= 1  # equal time spans, to the microsecond
        assert len(pieces) == min(parts, _micros(hi - lo))
    stamps = [lo, hi, *(p.upper.timestamp for p in pieces)]
    for row in data.draw(rows_around(stamps, (lo - US, hi + US)), "rows"):
        holders = [p for p in pieces if p.holds(*row)]
        assert len(holders) == (1 if window.holds(*row) else 0), (row, holders)
        assert window.holds(*row) == held(window, *row)


LEGACY_T0 = Watermark(T0, 3)


@pytest.mark.parametrize(
    ("window", "parts", "expected"),
    [
        pytest.param(
            Window(Watermark(T0), Watermark(T0 + HOUR)),
            4,
            [
                Window(Watermark(T0), Watermark(T0 + 15 * MIN)),
                Window(Watermark(T0 + 15 * MIN), Watermark(T0 + 30 * MIN)),
                Window(Watermark(T0 + 30 * MIN), Watermark(T0 + 45 * MIN)),
                Window(Watermark(T0 + 45 * MIN), Watermark(T0 + HOUR)),
            ],
            id="hour-in-quarters",
        ),
        pytest.param(
            Window(LEGACY_T0, Watermark(T0 + HOUR)),
            2,
            [Window(LEGACY_T0, Watermark(T0 + 30 * MIN)), Window(Watermark(T0 + 30 * MIN), Watermark(T0 + HOUR))],
            id="legacy-lower-stays-on-the-first-piece",
        ),
        pytest.param(
            Window(Watermark(T0), Watermark(T0 + US)),
            8,
            [Window(Watermark(T0), Watermark(T0 + US))],
            id="single-timestamp-is-never-cut",
        ),
        pytest.param(
            Window(LEGACY_T0, Watermark(T0 + US)),
            8,
            [Window(LEGACY_T0, Watermark(T0 + US))],
            id="rest-of-a-legacy-timestamp-is-never-cut",
        ),
        pytest.param(
            Window(Watermark(T0), Watermark(T0 + 2 * US)),
            16,
            [Window(Watermark(T0), Watermark(T0 + US)), Window(Watermark(T0 + US), Watermark(T0 + 2 * US))],
            id="no-more-pieces-than-microseconds",
        ),
        pytest.param(
            Window(Watermark(T0), Watermark(T0)), 3, [Window(Watermark(T0), Watermark(T0))], id="empty-window"
        ),
    ],
)
def test_split_window_examples(window: Window, parts: int, expected: list[Window]) -> None:
    assert split_window(window, parts) == expected


def test_split_window_is_one_piece_when_the_first_row_is_at_or_after_the_end() -> None:
    window = Window(Watermark(T0), Watermark(T0 + HOUR))
    assert split_window(window, 4, data_from=T0 + HOUR) == [window]
    assert split_window(window, 4, data_from=T0 + 2 * HOUR) == [window]


@pytest.mark.parametrize("parts", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
def test_split_window_refuses_fewer_than_one_part(parts: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_window(Window(Watermark(T0), Watermark(T0 + HOUR)), parts)


@settings(max_examples=200, deadline=None)
@given(
    upper_minutes=st.integers(min_value=1, max_value=60 * 24 * 400),
    data_fraction=st.floats(min_value=0.0, max_value=1.0),
    parts=st.integers(min_value=1, max_value=32),
)
def test_split_window_spreads_pieces_over_the_rows_of_a_first_window(
    upper_minutes: int, data_fraction: float, parts: int
) -> None:
    upper = EPOCH + timedelta(days=20_000, minutes=upper_minutes)
    window = Window(INITIAL_WATERMARK, Watermark(upper))
    data_from = upper - timedelta(minutes=upper_minutes * data_fraction)
    pieces = split_window(window, parts, data_from=data_from)
    assert pieces[0].lower == window.lower and pieces[-1].upper == window.upper
    assert all(a.upper == b.lower for a, b in pairwise(pieces))
    assert len(pieces) <= parts
    # Every cut lies among the rows: the time before the first row is in one piece, not parts - 1.
    assert all(p.lower.timestamp >= data_from for p in pieces[1:])
    if parts > 1 and upper - data_from > timedelta(microseconds=parts):
        assert len(pieces) == parts


def _span_window(span: timedelta) -> Window:
    return Window(Watermark(T0), Watermark(T0 + span))


@pytest.mark.parametrize(
    ("span", "target", "max_parts", "expected"),
    [
        pytest.param(timedelta(0), 15 * MIN, 16, 1, id="empty"),
        pytest.param(MIN, 15 * MIN, 16, 1, id="shorter-than-target"),
        pytest.param(HOUR, 15 * MIN, 16, 4, id="exact-multiple"),
        pytest.param(HOUR + US, 15 * MIN, 16, 5, id="rounds-up"),
        pytest.param(10 * DAY, 15 * MIN, 16, 16, id="capped-at-max-parts"),
        pytest.param(10 * DAY, 15 * MIN, 1, 1, id="max-one"),
    ],
)
def test_subwindow_count(span: timedelta, target: timedelta, max_parts: int, expected: int) -> None:
    assert subwindow_count(_span_window(span), target_span=target, max_parts=max_parts) == expected


@PROPERTY
@given(
    span_us=st.integers(min_value=0, max_value=30 * 86_400 * 10**6),
    target_us=st.integers(min_value=1, max_value=86_400 * 10**6),
    max_parts=st.integers(min_value=1, max_value=64),
)
def test_subwindow_count_is_one_per_target_span_capped(span_us: int, target_us: int, max_parts: int) -> None:
    count = subwindow_count(
        _span_window(timedelta(microseconds=span_us)),
        target_span=timedelta(microseconds=target_us),
        max_parts=max_parts,
    )
    assert 1 <= count <= max_parts
    if count < max_parts:
        assert count * target_us >= span_us  # enough pieces that none exceeds the target span
    if count > 1:
        assert (count - 1) * target_us < span_us  # and not one more than needed


def test_subwindow_count_counts_the_span_that_holds_rows() -> None:
    upper = datetime(2026, 11, 25, 12, tzinfo=UTC)
    window = Window(INITIAL_WATERMARK, Watermark(upper))
    data_from = upper - timedelta(hours=2)
    assert subwindow_count(window, target_span=timedelta(minutes=15), max_parts=16, data_from=data_from) == 8
    assert subwindow_count(window, target_span=timedelta(minutes=15), max_parts=16) == 16
