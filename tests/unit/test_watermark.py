"""Watermarks, windows and timestamp text (iceberg_offload.core.watermark)."""

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
    parse_timestamp,
    parse_watermark,
    utc,
)

PROPERTY = settings(max_examples=200, deadline=None)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
PLUS_2 = timezone(timedelta(hours=2))
MINUS_5_30 = timezone(-timedelta(hours=5, minutes=30))

# Any fixed UTC offset that datetime accepts (strictly inside +-24h), to the minute.
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
# ClickHouse's DateTime64 range is 1900..2299; stay inside it.
instants = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2299, 12, 30), timezones=st.just(UTC))
sequences = st.one_of(
    st.sampled_from([0, 1, SEQUENCE_MAX - 1, SEQUENCE_MAX]), st.integers(min_value=0, max_value=SEQUENCE_MAX)
)


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


def test_watermark_timestamp_is_normalised_to_utc() -> None:
    mark = Watermark(datetime(2024, 3, 1, 14, 0, tzinfo=PLUS_2), 7)
    assert mark.timestamp.utcoffset() == timedelta(0)
    assert (mark.timestamp.hour, mark.timestamp.minute) == (12, 0)


def test_naive_and_aware_watermarks_of_one_instant_are_equal_and_hash_alike() -> None:
    naive = Watermark(datetime(2024, 3, 1, 12, 0), 3)
    aware = Watermark(datetime(2024, 3, 1, 14, 0, tzinfo=PLUS_2), 3)
    assert naive == aware
    assert hash(naive) == hash(aware)
    assert len({naive, aware}) == 1


@pytest.mark.parametrize(
    "sequence",
    [pytest.param(0, id="zero"), pytest.param(1, id="one"), pytest.param(SEQUENCE_MAX, id="sequence-max")],
)
def test_sequence_inside_bounds_is_accepted(sequence: int) -> None:
    assert Watermark(T0, sequence).sequence == sequence


@pytest.mark.parametrize(
    "sequence",
    [pytest.param(-1, id="negative"), pytest.param(SEQUENCE_MAX + 1, id="above-int64"), pytest.param(2**64, id="2^64")],
)
def test_sequence_outside_bounds_is_refused(sequence: int) -> None:
    with pytest.raises(ValueError, match=str(sequence)):
        Watermark(T0, sequence)


def test_sequence_max_is_the_largest_int64() -> None:
    assert SEQUENCE_MAX == 2**63 - 1


def test_default_sequence_is_zero() -> None:
    assert Watermark(T0) == Watermark(T0, 0)


def test_end_of_is_after_every_row_at_that_timestamp_and_before_the_next_microsecond() -> None:
    end = Watermark.end_of(T0)
    assert end == Watermark(T0, SEQUENCE_MAX)
    assert Watermark(T0, SEQUENCE_MAX - 1) < end
    assert end < Watermark(T0 + timedelta(microseconds=1), 0)


def test_initial_watermark_is_the_epoch_with_sequence_zero() -> None:
    assert Watermark(datetime(1970, 1, 1, tzinfo=UTC), 0) == INITIAL_WATERMARK
    assert datetime(1970, 1, 1, tzinfo=UTC) == EPOCH


def test_watermark_is_immutable() -> None:
    mark = Watermark(T0, 1)
    with pytest.raises(AttributeError):
        mark.sequence = 2  # type: ignore[misc]


# --- ordering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        pytest.param(Watermark(T0, 1), Watermark(T0, 2), id="same-time-lower-sequence-first"),
        pytest.param(
            Watermark(T0, SEQUENCE_MAX), Watermark(T0 + timedelta(microseconds=1), 0), id="time-beats-sequence"
        ),
        pytest.param(
            Watermark(datetime(2024, 3, 1, 13, 30, tzinfo=PLUS_2), 9),  # 11:30 UTC
            Watermark(datetime(2024, 3, 1, 12, 0), 0),  # 12:00 UTC, naive
            id="compared-as-utc-instants-not-wall-clock",
        ),
    ],
)
def test_watermark_order(earlier: Watermark, later: Watermark) -> None:
    assert earlier < later
    assert later > earlier
    assert earlier <= later
    assert not later <= earlier
    assert earlier != later
    assert max(earlier, later) is later


@PROPERTY
@given(
    a_ts=instants, a_tz=offsets, a_seq=sequences, b_ts=instants, b_tz=offsets, b_seq=sequences, same_ts=st.booleans()
)
def test_watermark_ordering_equals_utc_tuple_ordering(
    a_ts: datetime,
    a_tz: timezone,
    a_seq: int,
    b_ts: datetime,
    b_tz: timezone,
    b_seq: int,
    same_ts: bool,
) -> None:
    if same_ts:
        b_ts = a_ts  # ties on time are where the sequence decides
    a = Watermark(a_ts.astimezone(a_tz), a_seq)
    b = Watermark(b_ts.astimezone(b_tz), b_seq)
    ta, tb = (a_ts, a_seq), (b_ts, b_seq)
    assert (a < b) == (ta < tb)
    assert (a <= b) == (ta <= tb)
    assert (a == b) == (ta == tb)
    assert (a > b) == (ta > tb)
    assert (a >= b) == (ta >= tb)


# --- Window -----------------------------------------------------------------------------------


def test_reversed_window_raises_window_error() -> None:
    with pytest.raises(WindowError, match="after its upper bound"):
        Window(Watermark(T0, 5), Watermark(T0, 4))


def test_window_error_is_a_value_error() -> None:
    assert issubclass(WindowError, ValueError)


@pytest.mark.parametrize(
    ("lower", "upper", "empty"),
    [
        pytest.param(Watermark(T0, 4), Watermark(T0, 4), True, id="lower-equals-upper-is-empty"),
        pytest.param(Watermark(T0, 4), Watermark(T0, 5), False, id="one-sequence-step"),
        pytest.param(Watermark(T0), Watermark.end_of(T0 + timedelta(hours=1)), False, id="one-hour"),
    ],
)
def test_window_is_empty_only_when_bounds_are_equal(lower: Watermark, upper: Watermark, empty: bool) -> None:
    assert Window(lower, upper).is_empty is empty


def test_window_str_shows_a_half_open_interval() -> None:
    window = Window(Watermark(T0, 1), Watermark(T0 + timedelta(hours=1), 2))
    assert str(window) == "(2024-03-01T12:00:00.000000Z#1, 2024-03-01T13:00:00.000000Z#2]"


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


@PROPERTY
@given(instant=instants, sequence=sequences)
def test_watermark_str_carries_timestamp_and_sequence(instant: datetime, sequence: int) -> None:
    stamp, sep, seq = str(Watermark(instant, sequence)).partition("#")
    assert sep == "#"
    assert Watermark(parse_timestamp(stamp), int(seq)) == Watermark(instant, sequence)


def test_format_timestamp_round_trips_years_before_1000() -> None:
    value = datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert format_timestamp(value) == "0999-12-31T23:59:59.000000Z"
    assert parse_timestamp(format_timestamp(value)) == value


# --- parse_watermark: the command line's TIMESTAMP[#SEQUENCE] -----------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2024-03-01T12:00:00Z", Watermark(T0), id="timestamp-only"),
        pytest.param("2024-03-01T12:00:00Z#42", Watermark(T0, 42), id="with-sequence"),
        pytest.param("2024-03-01T14:00:00+02:00#7", Watermark(T0, 7), id="offset"),
        pytest.param("2024-03-01T12:00:00#0", Watermark(T0), id="naive-is-utc"),
        pytest.param("2024-03-01T12:00:00Z#", Watermark(T0), id="empty-sequence"),
        pytest.param(f"1970-01-01T00:00:00Z#{SEQUENCE_MAX}", Watermark.end_of(EPOCH), id="end-of-epoch"),
    ],
)
def test_parse_watermark(text: str, expected: Watermark) -> None:
    assert parse_watermark(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("yesterday", id="not-a-timestamp"),
        pytest.param("2024-03-01T12:00:00Z#x", id="sequence-not-a-number"),
        pytest.param("2024-03-01T12:00:00Z#-1", id="negative-sequence"),
        pytest.param(f"2024-03-01T12:00:00Z#{SEQUENCE_MAX + 1}", id="sequence-past-int64"),
    ],
)
def test_parse_watermark_refuses_bad_text_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_watermark(text)


@PROPERTY
@given(instant=instants, sequence=sequences)
def test_parse_watermark_reads_back_what_a_watermark_prints(instant: datetime, sequence: int) -> None:
    assert parse_watermark(str(Watermark(instant, sequence))) == Watermark(instant, sequence)
