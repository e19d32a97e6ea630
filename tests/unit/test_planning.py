"""Window planning (iceberg_offload.core.planning): bounds, windows, commits and sub-windows."""

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
    committed_watermark,
    floor_to_interval,
    last_closed_candle_start,
    plan_window,
    split_window,
    subwindow_count,
    upper_bound,
)
from iceberg_offload.core.tables import CANDLE_INTERVALS
from iceberg_offload.core.watermark import EPOCH, INITIAL_WATERMARK, SEQUENCE_MAX, Watermark, Window, WindowError

PROPERTY = settings(max_examples=200, deadline=None)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
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


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds


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


# --- last_closed_candle_start -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("complete_through", "interval", "expected"),
    [
        pytest.param(
            datetime(2024, 3, 1, 11, tzinfo=UTC),
            HOUR,
            datetime(2024, 3, 1, 10, tzinfo=UTC),
            id="1h-closed-exactly-at-its-end",
        ),
        pytest.param(
            datetime(2024, 3, 1, 10, 59, 59, 999_999, tzinfo=UTC),
            HOUR,
            datetime(2024, 3, 1, 9, tzinfo=UTC),
            id="1h-one-microsecond-short",
        ),
        pytest.param(
            datetime(2024, 3, 1, 10, 7, tzinfo=UTC), 5 * MIN, datetime(2024, 3, 1, 10, 0, tzinfo=UTC), id="5m"
        ),
        pytest.param(datetime(2024, 3, 2, 0, 0, tzinfo=UTC), DAY, datetime(2024, 3, 1, tzinfo=UTC), id="1d"),
    ],
)
def test_last_closed_candle_start(complete_through: datetime, interval: timedelta, expected: datetime) -> None:
    assert last_closed_candle_start(complete_through, interval) == expected


@PROPERTY
@given(complete_through=instants, interval=intervals)
def test_last_closed_candle_is_the_newest_aligned_candle_ending_by_complete_through(
    complete_through: datetime, interval: timedelta
) -> None:
    start = last_closed_candle_start(complete_through, interval)
    assert _micros(start - EPOCH) % _micros(interval) == 0
    assert start + interval <= complete_through  # closed
    assert start + 2 * interval > complete_through  # the next one is not


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


def test_upstream_behind_the_buffer_caps_the_bound_and_is_named() -> None:
    upstream = {"bronze_trades_binance": Watermark(T0 - HOUR, 42)}
    bound = upper_bound(now=T0, buffer=5 * MIN, upstream=upstream)
    assert bound.timestamp == T0 - HOUR
    assert "bronze_trades_binance" in bound.reason


def test_upstream_ahead_of_the_buffer_does_not_cap() -> None:
    bound = upper_bound(now=T0, buffer=5 * MIN, upstream={"silver_trades": Watermark(T0, 1)})
    assert bound == UpperBound(T0 - 5 * MIN, "safety buffer")


def test_the_laggard_of_several_upstreams_sets_the_bound() -> None:
    upstream = {
        "bronze_trades_binance": Watermark(T0 - 10 * MIN, 1),
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
    ("now", "expected_last_candle"),
    [
        # The 10:00 candle covers [10:00, 11:00): final once 11:00 plus the 5 minute buffer has passed.
        pytest.param(
            datetime(2024, 3, 1, 11, 5, tzinfo=UTC), datetime(2024, 3, 1, 10, tzinfo=UTC), id="exactly-hour-plus-buffer"
        ),
        pytest.param(
            datetime(2024, 3, 1, 11, 4, 59, 999_999, tzinfo=UTC),
            datetime(2024, 3, 1, 9, tzinfo=UTC),
            id="one-microsecond-before-final",
        ),
        pytest.param(
            datetime(2024, 3, 1, 11, 59, tzinfo=UTC), datetime(2024, 3, 1, 10, tzinfo=UTC), id="late-in-the-next-hour"
        ),
    ],
)
def test_a_1h_candle_is_offloaded_only_after_its_hour_plus_the_buffer(
    now: datetime, expected_last_candle: datetime
) -> None:
    bound = upper_bound(now=now, buffer=5 * MIN, candle_interval=HOUR)
    assert bound.timestamp == expected_last_candle
    assert "candle" in bound.reason


def test_candle_bound_follows_the_upstream_and_still_names_it() -> None:
    upstream = {"silver_trades": Watermark(datetime(2024, 3, 1, 10, 30, tzinfo=UTC), 7)}
    bound = upper_bound(now=T0, buffer=5 * MIN, upstream=upstream, candle_interval=15 * MIN)
    # silver is complete through 10:30: the last closed 15m candle is [10:15, 10:30).
    assert bound.timestamp == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    assert "silver_trades" in bound.reason


@PROPERTY
@given(
    now=instants,
    buffer=st.integers(min_value=0, max_value=3 * 3600 * 10**6).map(lambda n: timedelta(microseconds=n)),
    upstream=st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.builds(Watermark, instants, sequences),
        max_size=3,
    ),
    requested_to=st.none() | instants,
    interval=st.none() | intervals,
)
def test_upper_bound_is_the_newest_position_every_limit_allows(
    now: datetime,
    buffer: timedelta,
    upstream: dict[str, Watermark],
    requested_to: datetime | None,
    interval: timedelta | None,
) -> None:
    limits = [now - buffer, *(m.timestamp for m in upstream.values())]
    if requested_to is not None:
        limits.append(requested_to)
    complete_through = min(limits)
    bound = upper_bound(now=now, buffer=buffer, upstream=upstream, candle_interval=interval, requested_to=requested_to)
    if interval is None:
        assert bound.timestamp == complete_through
    else:
        assert _micros(bound.timestamp - EPOCH) % _micros(interval) == 0
        assert bound.timestamp + interval <= complete_through < bound.timestamp + 2 * interval
    # the reason names an upstream exactly when an upstream is the binding limit
    laggards = [name for name, m in upstream.items() if m.timestamp == complete_through]
    if laggards and complete_through < now - buffer and (requested_to is None or complete_through < requested_to):
        assert any(name in bound.reason for name in laggards)


# --- plan_window ------------------------------------------------------------------------------


BOUND = UpperBound(T0, "safety buffer")


def test_nothing_committed_starts_at_the_initial_watermark() -> None:
    plan = plan_window(None, BOUND)
    assert plan.window == Window(INITIAL_WATERMARK, Watermark.end_of(T0))
    assert plan.committed == INITIAL_WATERMARK
    assert plan.bound == BOUND
    assert not plan.skipped


def test_window_starts_at_the_committed_watermark_and_ends_after_every_row_at_the_bound() -> None:
    committed = Watermark(T0 - HOUR, 17)
    plan = plan_window(committed, BOUND)
    assert plan.window == Window(committed, Watermark.end_of(T0))


@pytest.mark.parametrize(
    "committed",
    [
        pytest.param(Watermark(T0, 3), id="committed-at-the-bound"),
        pytest.param(Watermark.end_of(T0), id="committed-at-end-of-the-bound"),
        pytest.param(Watermark(T0 + HOUR, 0), id="committed-after-the-bound"),
    ],
)
def test_already_committed_window_is_skipped(committed: Watermark) -> None:
    plan = plan_window(committed, BOUND)
    assert plan.window is None
    assert plan.skipped
    assert plan.committed == committed
    assert plan.bound == BOUND


def test_skipped_when_the_bound_is_before_the_epoch_and_nothing_is_committed() -> None:
    plan = plan_window(None, UpperBound(EPOCH, "safety buffer"))
    assert plan.skipped
    assert plan.committed == INITIAL_WATERMARK


@pytest.mark.parametrize(
    "requested_from",
    [
        pytest.param(Watermark(T0 - 2 * HOUR, 0), id="before-committed"),
        pytest.param(Watermark(T0 - HOUR, 16), id="same-time-lower-sequence"),
        pytest.param(Watermark(T0 - HOUR, 17), id="equal-to-committed"),
    ],
)
def test_requested_start_at_or_before_the_committed_watermark_is_clipped(requested_from: Watermark) -> None:
    committed = Watermark(T0 - HOUR, 17)
    plan = plan_window(committed, BOUND, requested_from=requested_from)
    assert plan.window == Window(committed, Watermark.end_of(T0))


@pytest.mark.parametrize(
    ("committed", "requested_from"),
    [
        pytest.param(Watermark(T0 - HOUR, 17), Watermark(T0 - 30 * MIN, 0), id="later-time"),
        pytest.param(Watermark(T0 - HOUR, 17), Watermark(T0 - HOUR, 18), id="same-time-higher-sequence"),
        pytest.param(None, Watermark(T0 - DAY, 0), id="nothing-committed-but-start-after-epoch"),
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
    requested_from = Watermark(T0 + MIN, 0)
    with pytest.raises(WindowError) as info:
        plan_window(Watermark(T0 + MIN, 0), BOUND, requested_from=requested_from)
    assert str(requested_from) in str(info.value)
    assert BOUND.reason in str(info.value)


# --- committed_watermark ----------------------------------------------------------------------


def test_commit_is_the_upper_timestamp_with_the_highest_sequence_read_there() -> None:
    window = Window(Watermark(T0 - HOUR, 5), Watermark.end_of(T0))
    assert committed_watermark(window, 99) == Watermark(T0, 99)


def test_commit_without_a_sequence_is_the_upper_timestamp_at_sequence_zero() -> None:
    window = Window(Watermark(T0 - HOUR, 5), Watermark.end_of(T0))
    assert committed_watermark(window, None) == Watermark(T0, 0)


def test_commit_without_a_sequence_inside_one_timestamp_keeps_the_lower_bound() -> None:
    window = Window(Watermark(T0, 5), Watermark.end_of(T0))
    assert committed_watermark(window, None) == Watermark(T0, 5)


def test_a_later_row_at_the_committed_timestamp_with_a_higher_sequence_falls_in_the_next_window() -> None:
    first = plan_window(None, BOUND).window
    assert first is not None
    mark = committed_watermark(first, 10)
    late_row = Watermark(T0, 11)
    assert not first.lower < late_row <= mark  # not in what the first run committed
    nxt = plan_window(mark, UpperBound(T0 + MIN, "safety buffer")).window
    assert nxt is not None
    assert nxt.lower < late_row <= nxt.upper


# --- runs in sequence: contiguous, non-overlapping, gap-free ------------------------------------


@dataclass(frozen=True)
class Run:
    advance: timedelta
    buffer: timedelta
    upstream_lag: timedelta | None
    upstream_sequence: int
    max_sequence: int | None
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
    upstream_sequence=sequences,
    max_sequence=st.none() | sequences,
    requested_to_lag=st.none() | st.sampled_from([timedelta(0), MIN, 2 * HOUR]),
)


@PROPERTY
@given(
    start=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    schedule=st.lists(runs, min_size=1, max_size=25),
    candle=st.none() | st.sampled_from(list(CANDLE_INTERVALS.values())),
)
def test_consecutive_windows_are_contiguous_never_overlap_and_leave_no_gap(
    start: datetime, schedule: list[Run], candle: timedelta | None
) -> None:
    now = start
    committed: Watermark | None = None
    windows: list[Window] = []
    for run in schedule:
        now += run.advance
        upstream = (
            {"upstream": Watermark(now - run.upstream_lag, run.upstream_sequence)}
            if run.upstream_lag is not None
            else None
        )
        requested_to = now - run.requested_to_lag if run.requested_to_lag is not None else None
        bound = upper_bound(
            now=now, buffer=run.buffer, upstream=upstream, candle_interval=candle, requested_to=requested_to
        )
        plan = plan_window(committed, bound)
        previous = committed if committed is not None else INITIAL_WATERMARK
        assert plan.committed == previous
        if plan.window is None:
            assert bound.timestamp <= previous.timestamp
            continue
        assert plan.window.lower == previous
        assert plan.window.upper == Watermark.end_of(bound.timestamp)
        new = committed_watermark(plan.window, run.max_sequence)
        assert previous < new <= plan.window.upper  # progress, and never past the planned window
        windows.append(Window(previous, new))
        committed = new

    for before, after in pairwise(windows):
        assert after.lower == before.upper  # contiguous
    for i, earlier in enumerate(windows):
        assert earlier.lower < earlier.upper
        for later in windows[i + 1 :]:
            assert earlier.upper <= later.lower  # (a, b] and (c, d] with b <= c never share a position
    if windows:
        assert windows[0].lower == INITIAL_WATERMARK
        assert windows[-1].upper == committed  # the union is exactly (initial, last committed]
    else:
        assert committed is None


# --- split_window / subwindow_count -----------------------------------------------------------


window_bounds = st.tuples(
    instants,
    sequences,
    st.one_of(
        st.sampled_from([0, 1, 2, 7, 10**6]),
        st.integers(min_value=0, max_value=40 * 86_400 * 10**6),
    ),
    sequences,
)


def _window(lower_ts: datetime, lower_seq: int, span_us: int, upper_seq: int) -> Window:
    lower = Watermark(lower_ts, lower_seq)
    upper = Watermark(lower_ts + timedelta(microseconds=span_us), upper_seq)
    if upper < lower:
        lower, upper = upper, lower
    return Window(lower, upper)


@PROPERTY
@given(bounds=window_bounds, parts=st.integers(min_value=1, max_value=64))
def test_split_window_pieces_are_contiguous_and_cover_the_window_exactly(
    bounds: tuple[datetime, int, int, int], parts: int
) -> None:
    window = _window(*bounds)
    pieces = split_window(window, parts)
    assert 1 <= len(pieces) <= parts
    assert pieces[0].lower == window.lower
    assert pieces[-1].upper == window.upper
    for piece in pieces:
        assert piece.lower <= piece.upper
    for before, after in pairwise(pieces):
        assert after.lower == before.upper
        # inner boundaries are whole timestamps: all rows at one timestamp land in one piece
        assert before.upper.sequence == SEQUENCE_MAX
    if window.lower.timestamp < window.upper.timestamp:
        assert all(p.lower < p.upper for p in pieces)
        # equal time spans, to the microsecond
        spans = [_micros(p.upper.timestamp - p.lower.timestamp) for p in pieces]
        assert max(spans) - min(spans) <= 1
        total_us = _micros(window.upper.timestamp - window.lower.timestamp)
        assert len(pieces) == min(parts, total_us)


@pytest.mark.parametrize(
    ("window", "parts", "expected"),
    [
        pytest.param(
            Window(Watermark(T0, 3), Watermark.end_of(T0 + HOUR)),
            4,
            [
                Window(Watermark(T0, 3), Watermark.end_of(T0 + 15 * MIN)),
                Window(Watermark.end_of(T0 + 15 * MIN), Watermark.end_of(T0 + 30 * MIN)),
                Window(Watermark.end_of(T0 + 30 * MIN), Watermark.end_of(T0 + 45 * MIN)),
                Window(Watermark.end_of(T0 + 45 * MIN), Watermark.end_of(T0 + HOUR)),
            ],
            id="hour-in-quarters",
        ),
        pytest.param(
            Window(Watermark(T0, 3), Watermark(T0, 9)),
            8,
            [Window(Watermark(T0, 3), Watermark(T0, 9))],
            id="single-timestamp-is-never-cut",
        ),
        pytest.param(
            Window(Watermark(T0, 0), Watermark.end_of(T0 + 2 * US)),
            16,
            [
                Window(Watermark(T0, 0), Watermark.end_of(T0 + US)),
                Window(Watermark.end_of(T0 + US), Watermark.end_of(T0 + 2 * US)),
            ],
            id="no-more-pieces-than-microseconds",
        ),
        pytest.param(
            Window(Watermark(T0, 0), Watermark(T0, 0)),
            3,
            [Window(Watermark(T0, 0), Watermark(T0, 0))],
            id="empty-window-one-empty-piece",
        ),
    ],
)
def test_split_window_examples(window: Window, parts: int, expected: list[Window]) -> None:
    assert split_window(window, parts) == expected


@pytest.mark.parametrize("parts", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
def test_split_window_refuses_fewer_than_one_part(parts: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_window(Window(Watermark(T0), Watermark.end_of(T0 + HOUR)), parts)


def _span_window(span: timedelta) -> Window:
    return Window(Watermark(T0, 0), Watermark.end_of(T0 + span))


@pytest.mark.parametrize(
    ("span", "target", "max_parts", "expected"),
    [
        pytest.param(timedelta(0), 15 * MIN, 16, 1, id="single-timestamp"),
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


def test_window_plan_skipped_reflects_a_missing_window() -> None:
    assert WindowPlan(None, INITIAL_WATERMARK, BOUND).skipped
    assert not WindowPlan(Window(INITIAL_WATERMARK, Watermark.end_of(T0)), INITIAL_WATERMARK, BOUND).skipped


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
    window = Window(INITIAL_WATERMARK, Watermark.end_of(upper))
    data_from = upper - timedelta(minutes=upper_minutes * data_fraction)
    pieces = split_window(window, parts, data_from=data_from)
    assert pieces[0].lower == window.lower and pieces[-1].upper == window.upper
    assert all(a.upper == b.lower for a, b in pairwise(pieces))
    assert len(pieces) <= parts
    # Every cut lies among the rows: the time before the first row is one piece, not parts - 1.
    assert all(p.lower.timestamp >= data_from - timedelta(microseconds=1) for p in pieces[1:])
    if parts > 1 and upper - data_from > timedelta(microseconds=parts):
        assert len(pieces) == parts


def test_subwindow_count_counts_the_span_that_holds_rows() -> None:
    upper = datetime(2026, 11, 25, 12, tzinfo=UTC)
    window = Window(INITIAL_WATERMARK, Watermark.end_of(upper))
    data_from = upper - timedelta(hours=2)
    assert subwindow_count(window, target_span=timedelta(minutes=15), max_parts=16, data_from=data_from) == 8
    assert subwindow_count(window, target_span=timedelta(minutes=15), max_parts=16) == 16
