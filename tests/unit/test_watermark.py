"""Watermarks, windows and timestamp text (iceberg_offload.core.watermark).

A watermark of this protocol, Watermark(T), covers every row with a timestamp before T; one of the
first protocol version, Watermark(T, s), covers every row at or before (T, s). The model of
window_model.py (`rank`, `covered`, `held`) restates that with plain comparisons and shares
nothing with the module's own `key`, `covers` and `holds`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.watermark import (
    EPOCH,
    INITIAL_WATERMARK,
    SEQUENCE_MAX,
    Watermark,
    Window,
    WindowError,
    format_timestamp,
    parse_position,
    parse_timestamp,
    utc,
)
from window_model import covered, held, rank

PROPERTY = settings(max_examples=200, deadline=None)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
PLUS_2 = timezone(timedelta(hours=2))
MINUS_5_30 = timezone(-timedelta(hours=5, minutes=30))

# Any fixed UTC offset that datetime accepts (strictly inside +-24h), to the minute.
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
# ClickHouse's DateTime64 range is 1900..2299; stay inside it.
instants = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2299, 12, 30), timezones=st.just(UTC))
sequences = st.one_of(
    st.sampled_from([0, 1, SEQUENCE_MAX - 1, SEQUENCE_MAX]), st.integers(min_value=0, max_value=SEQUENCE_MAX)
)
# Few distinct timestamps and sequences, so that watermarks and rows tie often.
near = st.integers(min_value=-2, max_value=2).map(lambda n: T0 + n * US)
near_sequences = st.sampled_from([0, 1, 2, SEQUENCE_MAX - 1, SEQUENCE_MAX])
marks = st.builds(Watermark, near, st.none() | near_sequences)
rows = st.tuples(near, near_sequences)


# --- utc / Watermark normalisation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(datetime(2024, 3, 1, 12, 0), T0, id="naive-is-taken-as-utc"),
        pytest.param(T0, T0, id="utc-unchanged"),
        pytest.param(datetime(2024, 3, 1, 14, 0, tzinfo=PLUS_2), T0, id="plus-2h-converted"),
        pytest.param(datetime(2024, 3, 1, 6, 30, tzinfo=MINUS_5_30), T0, id="minus-5h30-converted"),
    ],
)
def test_utc_normalises_to_the_same_instant_in_utc(value: datetime, expected: datetime) -> None:
    result = utc(value)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize("sequence", [pytest.param(None, id="timestamp"), pytest.param(7, id="legacy")])
def test_watermark_timestamp_is_normalised_to_utc(sequence: int | None) -> None:
    mark = Watermark(datetime(2024, 3, 1, 14, 0, tzinfo=PLUS_2), sequence)
    assert mark.timestamp.utcoffset() == timedelta(0)
    assert (mark.timestamp.hour, mark.timestamp.minute) == (12, 0)
    assert mark.sequence == sequence


@pytest.mark.parametrize("sequence", [pytest.param(None, id="timestamp"), pytest.param(3, id="legacy")])
def test_naive_and_aware_watermarks_of_one_instant_are_equal_and_hash_alike(sequence: int | None) -> None:
    naive = Watermark(datetime(2024, 3, 1, 12, 0), sequence)
    aware = Watermark(datetime(2024, 3, 1, 14, 0, tzinfo=PLUS_2), sequence)
    assert naive == aware
    assert hash(naive) == hash(aware)
    assert len({naive, aware}) == 1


def test_a_watermark_of_this_protocol_has_no_sequence() -> None:
    mark = Watermark(T0)
    assert mark.sequence is None
    assert not mark.legacy


@pytest.mark.parametrize(
    "sequence",
    [pytest.param(0, id="zero"), pytest.param(1, id="one"), pytest.param(SEQUENCE_MAX, id="sequence-max")],
)
def test_a_legacy_watermark_keeps_its_sequence(sequence: int) -> None:
    mark = Watermark(T0, sequence)
    assert mark.sequence == sequence
    assert mark.legacy


def test_before_a_timestamp_is_not_through_its_sequence_zero() -> None:
    assert Watermark(T0) != Watermark(T0, 0)
    assert len({Watermark(T0), Watermark(T0, 0)}) == 2


@pytest.mark.parametrize(
    "sequence",
    [pytest.param(-1, id="negative"), pytest.param(SEQUENCE_MAX + 1, id="above-int64"), pytest.param(2**64, id="2^64")],
)
def test_sequence_outside_bounds_is_refused(sequence: int) -> None:
    with pytest.raises(ValueError, match=str(sequence)):
        Watermark(T0, sequence)


def test_sequence_max_is_the_largest_int64() -> None:
    assert SEQUENCE_MAX == 2**63 - 1


def test_initial_watermark_is_before_the_epoch_without_a_sequence() -> None:
    assert datetime(1970, 1, 1, tzinfo=UTC) == EPOCH
    assert Watermark(EPOCH) == INITIAL_WATERMARK
    assert INITIAL_WATERMARK.sequence is None
    assert INITIAL_WATERMARK.covers(EPOCH - US)
    assert not INITIAL_WATERMARK.covers(EPOCH)


def test_watermark_is_immutable() -> None:
    mark = Watermark(T0, 1)
    with pytest.raises(AttributeError):
        mark.sequence = 2  # type: ignore[misc]


# --- ordering: before T < through (T, 0) < through (T, 1) < ... < before T + 1us ----------------


def test_key_order_at_one_timestamp_and_the_next_microsecond() -> None:
    chain = [
        Watermark(T0 - US, SEQUENCE_MAX),
        Watermark(T0),
        Watermark(T0, 0),
        Watermark(T0, 1),
        Watermark(T0, 2),
        Watermark(T0, SEQUENCE_MAX - 1),
        Watermark(T0, SEQUENCE_MAX),
        Watermark(T0 + US),
        Watermark(T0 + US, 0),
    ]
    for i, earlier in enumerate(chain):
        for later in chain[i + 1 :]:
            assert earlier < later, (earlier, later)
            assert earlier.key < later.key
    assert sorted(reversed(chain)) == chain


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        pytest.param(Watermark(T0), Watermark(T0, 0), id="before-T-then-through-T-0"),
        pytest.param(Watermark(T0, 1), Watermark(T0, 2), id="same-time-lower-sequence-first"),
        pytest.param(Watermark(T0, SEQUENCE_MAX), Watermark(T0 + US), id="through-T-max-then-before-next-us"),
        pytest.param(Watermark(T0), Watermark(T0 + US), id="timestamps"),
        pytest.param(
            Watermark(datetime(2024, 3, 1, 13, 30, tzinfo=PLUS_2)),  # 11:30 UTC
            Watermark(datetime(2024, 3, 1, 12, 0)),  # 12:00 UTC, naive
            id="compared-as-utc-instants-not-wall-clock",
        ),
    ],
)
def test_watermark_order(earlier: Watermark, later: Watermark) -> None:
    assert earlier < later
    assert later > earlier
    assert earlier <= later
    assert later >= earlier
    assert not later <= earlier
    assert not earlier >= later
    assert earlier != later
    assert max(earlier, later) is later
    assert min(later, earlier) is earlier


@PROPERTY
@given(
    a_ts=instants,
    a_tz=offsets,
    a_seq=st.none() | sequences,
    b_ts=instants,
    b_tz=offsets,
    b_seq=st.none() | sequences,
    same_ts=st.booleans(),
)
def test_watermark_ordering_equals_the_model_order(
    a_ts: datetime,
    a_tz: timezone,
    a_seq: int | None,
    b_ts: datetime,
    b_tz: timezone,
    b_seq: int | None,
    same_ts: bool,
) -> None:
    if same_ts:
        b_ts = a_ts  # ties on time are where the sequence (or its absence) decides
    a = Watermark(a_ts.astimezone(a_tz), a_seq)
    b = Watermark(b_ts.astimezone(b_tz), b_seq)
    ra, rb = rank(a), rank(b)
    assert (a < b) == (ra < rb)
    assert (a <= b) == (ra <= rb)
    assert (a == b) == (ra == rb)
    assert (a > b) == (ra > rb)
    assert (a >= b) == (ra >= rb)
    assert (a.key < b.key) == (ra < rb)
    assert (a.key == b.key) == (a == b)


# --- covers: what a watermark says is offloaded ----------------------------------------------------


@pytest.mark.parametrize(
    ("mark", "ts", "seq", "expected"),
    [
        pytest.param(Watermark(T0), T0 - US, SEQUENCE_MAX, True, id="before-T-covers-the-microsecond-before"),
        pytest.param(Watermark(T0), T0, 0, False, id="before-T-not-a-row-at-T"),
        pytest.param(Watermark(T0), T0, SEQUENCE_MAX, False, id="before-T-not-any-sequence-at-T"),
        pytest.param(Watermark(T0, 5), T0, 5, True, id="legacy-covers-its-own-position"),
        pytest.param(Watermark(T0, 5), T0, 4, True, id="legacy-covers-lower-sequences-at-T"),
        pytest.param(Watermark(T0, 5), T0, 6, False, id="legacy-not-a-higher-sequence-at-T"),
        pytest.param(Watermark(T0, 5), T0 - US, SEQUENCE_MAX, True, id="legacy-covers-earlier-timestamps"),
        pytest.param(Watermark(T0, SEQUENCE_MAX), T0 + US, 0, False, id="legacy-not-a-later-timestamp"),
        pytest.param(Watermark(T0), datetime(2024, 3, 1, 13, 59, 59, 999_999, tzinfo=PLUS_2), 0, True, id="offset-row"),
        pytest.param(Watermark(T0), datetime(2024, 3, 1, 12, 0), 0, False, id="naive-row-is-utc"),
    ],
)
def test_covers(mark: Watermark, ts: datetime, seq: int, expected: bool) -> None:
    assert mark.covers(ts, seq) is expected
    assert covered(mark, ts, seq) is expected  # the model says the same


def test_covers_takes_a_missing_sequence_as_zero() -> None:
    assert Watermark(T0, 0).covers(T0)
    assert not Watermark(T0).covers(T0)


@PROPERTY
@given(mark=marks, row=rows)
def test_covers_equals_the_model(mark: Watermark, row: tuple[datetime, int]) -> None:
    assert mark.covers(*row) == covered(mark, *row)


@PROPERTY
@given(a=marks, b=marks, batch=st.lists(rows, max_size=20))
def test_covers_is_monotone_in_the_watermark(a: Watermark, b: Watermark, batch: list[tuple[datetime, int]]) -> None:
    low, high = min(a, b), max(a, b)
    for row in batch:
        if low.covers(*row):
            assert high.covers(*row), (low, high, row)


# --- str / parse_position: the command line's TIMESTAMP ----------------------------------------


@PROPERTY
@given(instant=instants)
def test_a_timestamp_watermark_prints_as_its_timestamp_and_parses_back(instant: datetime) -> None:
    text = str(Watermark(instant))
    assert text == format_timestamp(instant)
    assert "#" not in text
    assert parse_position(text, "--from") == Watermark(instant)


@PROPERTY
@given(instant=instants, sequence=sequences)
def test_a_legacy_watermark_prints_timestamp_hash_sequence(instant: datetime, sequence: int) -> None:
    stamp, sep, seq = str(Watermark(instant, sequence)).partition("#")
    assert sep == "#"
    assert Watermark(parse_timestamp(stamp), int(seq)) == Watermark(instant, sequence)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2024-03-01T12:00:00Z", Watermark(T0), id="zulu"),
        pytest.param("2024-03-01T12:00:00.000001Z", Watermark(T0 + US), id="microseconds"),
        pytest.param("2024-03-01T14:00:00+02:00", Watermark(T0), id="offset"),
        pytest.param("2024-03-01T12:00:00", Watermark(T0), id="naive-is-utc"),
    ],
)
def test_parse_position(text: str, expected: Watermark) -> None:
    mark = parse_position(text, "--to")
    assert mark == expected
    assert mark.sequence is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2024-03-01T12:00:00Z#42", id="with-sequence"),
        pytest.param("2024-03-01T12:00:00Z#", id="empty-sequence"),
        pytest.param(f"1970-01-01T00:00:00Z#{SEQUENCE_MAX}", id="end-of-epoch"),
    ],
)
def test_parse_position_refuses_a_position_within_a_timestamp_naming_the_flag(text: str) -> None:
    with pytest.raises(ValueError, match="position within a timestamp") as info:
        parse_position(text, "--from")
    assert "--from" in str(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize("text", [pytest.param("yesterday", id="words"), pytest.param("1709294400", id="unix-seconds")])
def test_parse_position_refuses_text_that_is_not_a_timestamp(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp"):
        parse_position(text, "--to")


# --- Window: [lower, upper) -------------------------------------------------------------------


def test_window_error_is_a_value_error() -> None:
    assert issubclass(WindowError, ValueError)


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        pytest.param(Watermark(T0 + US), Watermark(T0), id="reversed"),
        pytest.param(Watermark(T0, 5), Watermark(T0), id="legacy-lower-at-the-upper-timestamp"),
    ],
)
def test_reversed_window_raises_window_error(lower: Watermark, upper: Watermark) -> None:
    with pytest.raises(WindowError, match="after its upper bound"):
        Window(lower, upper)


@pytest.mark.parametrize(
    "upper",
    [pytest.param(Watermark(T0 + US, 0), id="sequence-zero"), pytest.param(Watermark(T0 + US, SEQUENCE_MAX), id="max")],
)
def test_a_window_upper_bound_must_be_a_timestamp(upper: Watermark) -> None:
    with pytest.raises(WindowError, match="must be a timestamp"):
        Window(Watermark(T0), upper)


@pytest.mark.parametrize(
    ("lower", "upper", "empty"),
    [
        pytest.param(Watermark(T0), Watermark(T0), True, id="equal-bounds-are-empty"),
        pytest.param(Watermark(T0), Watermark(T0 + US), False, id="one-microsecond"),
        pytest.param(Watermark(T0, 5), Watermark(T0 + US), False, id="legacy-lower-rest-of-its-timestamp"),
        pytest.param(Watermark(T0, SEQUENCE_MAX), Watermark(T0 + timedelta(hours=1)), False, id="legacy-max"),
    ],
)
def test_window_is_empty_only_when_its_span_is(lower: Watermark, upper: Watermark, empty: bool) -> None:
    assert Window(lower, upper).is_empty is empty


def test_window_str_shows_a_half_open_interval() -> None:
    window = Window(Watermark(T0), Watermark(T0 + timedelta(hours=1)))
    assert str(window) == "[2024-03-01T12:00:00.000000Z, 2024-03-01T13:00:00.000000Z)"
    legacy = Window(Watermark(T0, 1), Watermark(T0 + timedelta(hours=1)))
    assert str(legacy) == "[2024-03-01T12:00:00.000000Z#1, 2024-03-01T13:00:00.000000Z)"


HOUR_WINDOW = Window(Watermark(T0), Watermark(T0 + timedelta(hours=1)))
LEGACY_WINDOW = Window(Watermark(T0, 5), Watermark(T0 + timedelta(hours=1)))


@pytest.mark.parametrize(
    ("window", "ts", "seq", "expected"),
    [
        pytest.param(HOUR_WINDOW, T0, 0, True, id="lower-timestamp-is-held"),
        pytest.param(HOUR_WINDOW, T0, SEQUENCE_MAX, True, id="every-sequence-at-the-lower-timestamp"),
        pytest.param(HOUR_WINDOW, T0 - US, SEQUENCE_MAX, False, id="before-the-lower-bound"),
        pytest.param(HOUR_WINDOW, T0 + timedelta(hours=1) - US, SEQUENCE_MAX, True, id="last-microsecond"),
        pytest.param(HOUR_WINDOW, T0 + timedelta(hours=1), 0, False, id="upper-timestamp-is-not-held"),
        pytest.param(LEGACY_WINDOW, T0, 5, False, id="legacy-lower-position-was-offloaded"),
        pytest.param(LEGACY_WINDOW, T0, 0, False, id="legacy-lower-sequences-were-offloaded"),
        pytest.param(LEGACY_WINDOW, T0, 6, True, id="legacy-higher-sequence-at-T-is-held"),
        pytest.param(LEGACY_WINDOW, T0 + US, 0, True, id="legacy-next-microsecond-is-held"),
        pytest.param(Window(Watermark(T0), Watermark(T0)), T0, 0, False, id="empty-window-holds-nothing"),
    ],
)
def test_window_holds(window: Window, ts: datetime, seq: int, expected: bool) -> None:
    assert window.holds(ts, seq) is expected
    assert held(window, ts, seq) is expected


@PROPERTY
@given(a=marks, b=st.builds(Watermark, near), row=rows)
def test_window_holds_equals_the_model(a: Watermark, b: Watermark, row: tuple[datetime, int]) -> None:
    if b < a:
        with pytest.raises(WindowError):
            Window(a, b)
        return
    window = Window(a, b)
    assert window.holds(*row) == held(window, *row)
    if window.is_empty:
        assert not window.holds(*row)


# --- timestamp text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2024-03-01T12:00:00Z", T0, id="zulu"),
        pytest.param("2024-03-01T12:00:00.000000Z", T0, id="zulu-microseconds"),
        pytest.param("2024-03-01T14:00:00+02:00", T0, id="positive-offset"),
        pytest.param("2024-03-01T06:30:00-05:30", T0, id="negative-offset"),
        pytest.param("2024-03-01T12:00:00", T0, id="naive-means-utc"),
        pytest.param("2024-03-01 12:00:00", T0, id="space-separator"),
        pytest.param("  2024-03-01T12:00:00Z\n", T0, id="surrounding-whitespace"),
        pytest.param("2024-03-01T12:00:00.123456Z", T0 + timedelta(microseconds=123456), id="microseconds-kept"),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("yesterday", id="words"),
        pytest.param("2024-13-01T00:00:00Z", id="month-13"),
        pytest.param("2024-03-01T25:00:00Z", id="hour-25"),
        pytest.param("1709294400", id="unix-seconds"),
    ],
)
def test_parse_timestamp_refuses_non_iso_text(text: str) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp"):
        parse_timestamp(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(T0, "2024-03-01T12:00:00.000000Z", id="utc"),
        pytest.param(datetime(2024, 3, 1, 14, 0, tzinfo=PLUS_2), "2024-03-01T12:00:00.000000Z", id="converted-to-utc"),
        pytest.param(datetime(2024, 3, 1, 12, 0, 0, 7), "2024-03-01T12:00:00.000007Z", id="naive-microseconds"),
        pytest.param(datetime(1900, 1, 1, tzinfo=UTC), "1900-01-01T00:00:00.000000Z", id="clickhouse-minimum"),
    ],
)
def test_format_timestamp_is_utc_with_microseconds_and_z(value: datetime, expected: str) -> None:
    assert format_timestamp(value) == expected


@PROPERTY
@given(instant=instants, tz=offsets)
def test_format_then_parse_round_trips_the_instant(instant: datetime, tz: timezone) -> None:
    text = format_timestamp(instant.astimezone(tz))
    assert text.endswith("Z")
    assert parse_timestamp(text) == instant


def test_format_timestamp_round_trips_years_before_1000() -> None:
    value = datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert format_timestamp(value) == "0999-12-31T23:59:59.000000Z"
    assert parse_timestamp(format_timestamp(value)) == value
