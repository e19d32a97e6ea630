"""Snapshot summaries and the result line (iceberg_offload.core.result)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.result import (
    RESULT_MARKER,
    RUN_ID,
    SOURCE,
    WATERMARK_SEQUENCE,
    WATERMARK_TIMESTAMP,
    WINDOW_FROM,
    WINDOW_TO,
    OffloadResult,
    ResultError,
    newest_watermark,
    parse_result,
    summary_properties,
    watermark_from_summary,
)
from iceberg_offload.core.watermark import SEQUENCE_MAX, Watermark, Window, format_timestamp

PROPERTY = settings(max_examples=200, deadline=None)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

instants = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2299, 12, 31), timezones=st.just(UTC))
sequences = st.one_of(st.sampled_from([0, SEQUENCE_MAX]), st.integers(min_value=0, max_value=SEQUENCE_MAX))
watermarks = st.builds(Watermark, instants, sequences)


def _summary(mark: Watermark, run_id: str = "run-1") -> dict[str, str]:
    window = Window(Watermark(mark.timestamp - timedelta(hours=1)), mark)
    return summary_properties(window, mark, run_id, "default.bronze_trades_binance")


# --- snapshot summaries -----------------------------------------------------------------------


def test_summary_carries_watermark_window_run_and_source() -> None:
    window = Window(Watermark(T0, 3), Watermark.end_of(T0 + timedelta(minutes=15)))
    committed = Watermark(T0 + timedelta(minutes=15), 77)
    summary = summary_properties(window, committed, "run-42", "default.silver_trades")
    assert summary == {
        WATERMARK_TIMESTAMP: "2024-03-01T12:15:00.000000Z",
        WATERMARK_SEQUENCE: "77",
        WINDOW_FROM: str(window.lower),
        WINDOW_TO: str(window.upper),
        RUN_ID: "run-42",
        SOURCE: "default.silver_trades",
    }
    assert all(isinstance(v, str) for v in summary.values())  # Iceberg summaries are string maps


@PROPERTY
@given(lower=watermarks, committed=watermarks, run_id=st.text(), source=st.text())
def test_summary_watermark_round_trips(lower: Watermark, committed: Watermark, run_id: str, source: str) -> None:
    window = Window(min(lower, committed), max(lower, committed))
    summary = summary_properties(window, committed, run_id, source)
    assert watermark_from_summary(summary) == committed
    assert summary[RUN_ID] == run_id
    assert summary[SOURCE] == source


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param({}, id="empty"),
        pytest.param({"operation": "replace", "added-data-files": "3", "deleted-data-files": "12"}, id="compaction"),
        pytest.param({"operation": "delete", "deleted-records": "10"}, id="delete-by-hand"),
        pytest.param({WATERMARK_SEQUENCE: "5"}, id="sequence-without-timestamp"),
    ],
)
def test_summary_without_a_watermark_timestamp_has_no_watermark(summary: dict[str, str]) -> None:
    assert watermark_from_summary(summary) is None


def test_summary_without_a_sequence_means_sequence_zero() -> None:
    assert watermark_from_summary({WATERMARK_TIMESTAMP: "2024-03-01T12:00:00.000000Z"}) == Watermark(T0, 0)


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param({WATERMARK_TIMESTAMP: "not a time"}, id="bad-timestamp"),
        pytest.param({WATERMARK_TIMESTAMP: "2024-03-01T12:00:00Z", WATERMARK_SEQUENCE: "seven"}, id="bad-sequence"),
        pytest.param({WATERMARK_TIMESTAMP: "2024-03-01T12:00:00Z", WATERMARK_SEQUENCE: "-1"}, id="negative-seq"),
        pytest.param(
            {WATERMARK_TIMESTAMP: "2024-03-01T12:00:00Z", WATERMARK_SEQUENCE: str(2**63)}, id="sequence-overflow"
        ),
    ],
)
def test_unreadable_summary_watermark_raises_result_error(summary: dict[str, str]) -> None:
    with pytest.raises(ResultError, match="unreadable watermark"):
        watermark_from_summary(summary)


def test_newest_watermark_skips_snapshots_without_one() -> None:
    newest_first = [
        {"operation": "replace"},  # compaction after the last run
        _summary(Watermark(T0, 9), "run-2"),
        _summary(Watermark(T0 - timedelta(hours=1), 4), "run-1"),
    ]
    assert newest_watermark(newest_first) == Watermark(T0, 9)


@pytest.mark.parametrize(
    "summaries",
    [pytest.param([], id="no-snapshots"), pytest.param([{"operation": "replace"}] * 3, id="only-compactions")],
)
def test_newest_watermark_is_none_without_any_run_snapshot(summaries: list[dict[str, str]]) -> None:
    assert newest_watermark(summaries) is None


def test_newest_watermark_does_not_read_past_the_newest_run_snapshot() -> None:
    def summaries() -> Iterator[dict[str, str]]:
        yield {"operation": "replace"}
        yield _summary(Watermark(T0, 1))
        raise AssertionError("read an older snapshot than needed")

    assert newest_watermark(summaries()) == Watermark(T0, 1)


@PROPERTY
@given(
    marks=st.lists(st.none() | watermarks, max_size=8),
)
def test_newest_watermark_is_that_of_the_first_run_snapshot(marks: list[Watermark | None]) -> None:
    summaries = [{"operation": "replace"} if m is None else _summary(m) for m in marks]
    expected = next((m for m in marks if m is not None), None)
    assert newest_watermark(summaries) == expected


# --- the result line --------------------------------------------------------------------------


results = st.builds(
    OffloadResult,
    table=st.text(),
    run_id=st.text(),
    outcome=st.sampled_from(["committed", "skipped", "failed"]),
    rows=st.integers(min_value=0, max_value=2**53),
    window_from=st.none() | st.text(),
    window_to=st.none() | st.text(),
    watermark_timestamp=st.none() | instants.map(format_timestamp),
    watermark_sequence=st.none() | sequences,
    snapshot_id=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    duration_seconds=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    error=st.none() | st.text(),
)


@PROPERTY
@given(result=results)
def test_result_line_round_trips(result: OffloadResult) -> None:
    line = result.to_line()
    assert line.startswith(RESULT_MARKER)
    assert len(line.splitlines()) == 1  # one line whatever the error text holds
    assert parse_result(line) == result


@PROPERTY
@given(result=results, noise=st.lists(st.text().filter(lambda s: not s.startswith(RESULT_MARKER)), max_size=5))
def test_result_line_is_found_among_log_noise(result: OffloadResult, noise: list[str]) -> None:
    lines = [line for text in noise for line in text.splitlines() if not line.startswith(RESULT_MARKER)]
    output = "\n".join([*lines, result.to_line(), *lines])
    assert parse_result(output) == result


def test_result_watermark() -> None:
    result = OffloadResult(
        "t", "r", "committed", watermark_timestamp="2024-03-01T12:00:00.000000Z", watermark_sequence=5
    )
    assert result.watermark == Watermark(T0, 5)
    assert OffloadResult("t", "r", "skipped", watermark_timestamp="2024-03-01T12:00:00Z").watermark == Watermark(T0)
    assert OffloadResult("t", "r", "failed").watermark is None


def test_parse_result_takes_the_last_marker_line() -> None:
    first = OffloadResult("bronze_trades_binance", "run-1", "failed", error="boom")
    last = OffloadResult("bronze_trades_binance", "run-1", "committed", rows=10)
    output = "\n".join(
        [
            "24/03/01 12:00:00 INFO SparkContext: Running Spark version 3.5.9",
            first.to_line(),
            "24/03/01 12:00:01 WARN something retried",
            last.to_line(),
            "24/03/01 12:00:02 INFO ShutdownHookManager: Shutdown hook called",
        ]
    )
    assert parse_result(output) == last


@pytest.mark.parametrize(
    "output",
    [
        pytest.param("", id="empty"),
        pytest.param("INFO starting\nINFO done\n", id="only-logs"),
        pytest.param('INFO OFFLOAD_RESULT {"table": "t"}', id="marker-not-at-line-start"),
    ],
)
def test_parse_result_is_none_without_a_result_line(output: str) -> None:
    assert parse_result(output) is None


def test_parse_result_reads_crlf_output() -> None:
    result = OffloadResult("t", "r", "skipped")
    assert parse_result(f"log\r\n{result.to_line()}\r\nmore\r\n") == result


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        pytest.param("{not json", "not JSON", id="malformed-json"),
        pytest.param("", "not JSON", id="empty-payload"),
        pytest.param('["t", "r", "committed"]', "not a JSON object", id="array"),
        pytest.param('"committed"', "not a JSON object", id="string"),
        pytest.param('{"run_id": "r", "outcome": "committed"}', "table", id="missing-table"),
        pytest.param('{"table": "t", "outcome": "committed"}', "run_id", id="missing-run-id"),
        pytest.param('{"table": "t", "run_id": "r"}', "outcome", id="missing-outcome"),
        pytest.param('{"table": "t", "run_id": "r", "outcome": "done"}', "done", id="unknown-outcome"),
        pytest.param('{"table": "t", "run_id": "r", "outcome": null}', "outcome", id="null-outcome"),
    ],
)
def test_unreadable_result_line_raises_result_error(payload: str, fragment: str) -> None:
    with pytest.raises(ResultError, match=fragment):
        parse_result(f"INFO noise\n{RESULT_MARKER}{payload}\nINFO more noise")


def test_unknown_fields_in_a_result_line_are_ignored() -> None:
    data = {"table": "t", "run_id": "r", "outcome": "committed", "rows": 3, "added_in_a_later_version": True}
    assert parse_result(RESULT_MARKER + json.dumps(data)) == OffloadResult("t", "r", "committed", rows=3)


def test_result_error_is_a_value_error() -> None:
    assert issubclass(ResultError, ValueError)


def test_parse_result_ignores_a_garbled_earlier_marker_line() -> None:
    last = OffloadResult("silver_trades", "run-7", "committed", rows=1)
    output = f'{RESULT_MARKER}{{"table": "silver_tr\nINFO retrying\n{last.to_line()}\n'
    assert parse_result(output) == last
