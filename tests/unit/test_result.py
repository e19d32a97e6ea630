"""Snapshot summaries and the result line (iceberg_offload.core.result)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.result import (
    RESET,
    RESULT_MARKER,
    RUN_ID,
    SOURCE,
    TIMESTAMP_COLUMN,
    WATERMARK_BEFORE,
    WATERMARK_SEQUENCE,
    WATERMARK_TIMESTAMP,
    WINDOW_FROM,
    WINDOW_TO,
    OffloadResult,
    ResultError,
    parse_result,
    reset_properties,
    summary_properties,
    watermark_from_summary,
)
from iceberg_offload.core.trace import SnapshotFacts, read_trace
from iceberg_offload.core.watermark import SEQUENCE_MAX, Watermark, Window, format_timestamp


def newest_watermark(summaries_newest_first: list[dict[str, str]]) -> Watermark | None:
    """The committed watermark of a lineage whose snapshots carry these summaries, newest first,
    as the product reads it (core/trace.read_trace)."""
    count = len(summaries_newest_first)
    snapshots = {
        count - i: SnapshotFacts(count - i, count - i - 1 if i < count - 1 else None, count - i, summary)
        for i, summary in enumerate(summaries_newest_first)
    }
    return read_trace(snapshots, count if count else None).watermark


PROPERTY = settings(max_examples=200, deadline=None)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

instants = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2299, 12, 31), timezones=st.just(UTC))
sequences = st.one_of(st.sampled_from([0, SEQUENCE_MAX]), st.integers(min_value=0, max_value=SEQUENCE_MAX))
# What a commit may carry: a watermark of this protocol, or a (T, sequence) one of the first version.
watermarks = st.builds(Watermark, instants, st.none() | sequences)


def run_summary(upper: datetime, run_id: str = "run-1") -> dict[str, str]:
    """The summary of a run of this protocol whose window ends at `upper`."""
    window = Window(Watermark(upper - HOUR), Watermark(upper))
    return summary_properties(window, run_id, "default.bronze_trades_binance", "exchange_timestamp")


def legacy_summary(mark: Watermark, run_id: str = "run-0") -> dict[str, str]:
    """The summary a run of the first protocol version committed (written out by hand)."""
    return {
        WATERMARK_TIMESTAMP: format_timestamp(mark.timestamp),
        WATERMARK_SEQUENCE: str(mark.sequence),
        WINDOW_FROM: "1970-01-01T00:00:00.000000Z#0",
        WINDOW_TO: f"{format_timestamp(mark.timestamp)}#{SEQUENCE_MAX}",
        RUN_ID: run_id,
        SOURCE: "default.bronze_trades_binance",
    }


def summary_of(mark: Watermark) -> dict[str, str]:
    return legacy_summary(mark) if mark.sequence is not None else run_summary(mark.timestamp)


# --- snapshot summaries -----------------------------------------------------------------------


def test_summary_carries_the_watermark_before_window_run_source_and_column() -> None:
    window = Window(Watermark(T0, 3), Watermark(T0 + timedelta(minutes=15)))
    summary = summary_properties(window, "run-42", "default.silver_trades", "exchange_timestamp")
    assert summary == {
        WATERMARK_BEFORE: "2024-03-01T12:15:00.000000Z",
        WINDOW_FROM: "2024-03-01T12:00:00.000000Z#3",
        WINDOW_TO: "2024-03-01T12:15:00.000000Z",
        RUN_ID: "run-42",
        SOURCE: "default.silver_trades",
        TIMESTAMP_COLUMN: "exchange_timestamp",
    }
    assert all(isinstance(v, str) for v in summary.values())  # Iceberg summaries are string maps


@PROPERTY
@given(
    lower=watermarks,
    span=st.integers(min_value=1, max_value=10**12).map(lambda n: timedelta(microseconds=n)),
    run_id=st.text(),
    source=st.text(),
    column=st.text(),
)
def test_summary_watermark_round_trips_to_the_window_upper_bound(
    lower: Watermark, span: timedelta, run_id: str, source: str, column: str
) -> None:
    window = Window(lower, Watermark(lower.timestamp + span))
    summary = summary_properties(window, run_id, source, column)
    assert watermark_from_summary(summary) == window.upper
    assert watermark_from_summary(summary) is not None
    assert WATERMARK_TIMESTAMP not in summary and WATERMARK_SEQUENCE not in summary  # never the legacy keys
    assert (summary[RUN_ID], summary[SOURCE], summary[TIMESTAMP_COLUMN]) == (run_id, source, column)


@pytest.mark.parametrize(
    ("summary", "expected"),
    [
        pytest.param({WATERMARK_BEFORE: "2024-03-01T12:00:00.000000Z"}, Watermark(T0), id="before"),
        pytest.param({WATERMARK_BEFORE: "2024-03-01T14:00:00+02:00"}, Watermark(T0), id="before-with-offset"),
        pytest.param(
            {WATERMARK_TIMESTAMP: "2024-03-01T12:00:00.000000Z", WATERMARK_SEQUENCE: "77"},
            Watermark(T0, 77),
            id="legacy-timestamp-and-sequence",
        ),
        pytest.param(
            {WATERMARK_TIMESTAMP: "2024-03-01T12:00:00.000000Z", WATERMARK_SEQUENCE: str(SEQUENCE_MAX)},
            Watermark(T0, SEQUENCE_MAX),
            id="legacy-whole-timestamp",
        ),
        pytest.param(
            {WATERMARK_TIMESTAMP: "2024-03-01T12:00:00.000000Z"}, Watermark(T0, 0), id="legacy-without-sequence-is-0"
        ),
        pytest.param(
            {
                WATERMARK_BEFORE: "2024-03-01T12:00:00.000000Z",
                WATERMARK_TIMESTAMP: "2024-03-01T11:00:00.000000Z",
                WATERMARK_SEQUENCE: "5",
            },
            Watermark(T0),
            id="before-wins-over-the-legacy-keys",
        ),
    ],
)
def test_watermark_from_summary(summary: dict[str, str], expected: Watermark) -> None:
    assert watermark_from_summary(summary) == expected


@PROPERTY
@given(mark=st.builds(Watermark, instants, sequences))
def test_legacy_summaries_read_as_their_timestamp_and_sequence(mark: Watermark) -> None:
    read = watermark_from_summary(legacy_summary(mark))
    assert read == mark
    assert read is not None and read.legacy


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param({}, id="empty"),
        pytest.param({"operation": "replace", "added-data-files": "3", "deleted-data-files": "12"}, id="compaction"),
        pytest.param({"operation": "delete", "deleted-records": "10"}, id="delete-by-hand"),
        pytest.param({WATERMARK_SEQUENCE: "5"}, id="sequence-without-timestamp"),
        pytest.param({WINDOW_TO: "2024-03-01T12:00:00.000000Z", RUN_ID: "r"}, id="window-without-watermark"),
    ],
)
def test_summary_without_a_watermark_has_none(summary: dict[str, str]) -> None:
    assert watermark_from_summary(summary) is None


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param({WATERMARK_BEFORE: "not a time"}, id="bad-before"),
        pytest.param({WATERMARK_BEFORE: ""}, id="empty-before"),
        pytest.param({WATERMARK_BEFORE: "2024-03-01T12:00:00Z#5"}, id="before-with-a-sequence"),
        pytest.param({WATERMARK_TIMESTAMP: "not a time"}, id="bad-legacy-timestamp"),
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


# --- reset summaries --------------------------------------------------------------------------


def test_reset_summary_carries_the_new_watermark_the_column_and_the_reason() -> None:
    summary = reset_properties(Watermark(T0), "reset-1", "exchange_timestamp", "replay after a bad deploy")
    assert summary == {
        WATERMARK_BEFORE: "2024-03-01T12:00:00.000000Z",
        RUN_ID: "reset-1",
        TIMESTAMP_COLUMN: "exchange_timestamp",
        RESET: "replay after a bad deploy",
    }


@PROPERTY
@given(mark=watermarks, reason=st.text())
def test_reset_summary_round_trips_to_the_timestamp(mark: Watermark, reason: str) -> None:
    summary = reset_properties(mark, "reset", "ts", reason)
    assert watermark_from_summary(summary) == Watermark(mark.timestamp)
    assert summary[RESET] == reason


def test_a_reset_below_the_last_run_is_the_committed_watermark() -> None:
    newest_first = [
        reset_properties(Watermark(T0 - HOUR), "reset", "exchange_timestamp", "replay"),
        run_summary(T0, "run-2"),
    ]
    assert newest_watermark(newest_first) == Watermark(T0 - HOUR)


# --- newest_watermark: the newest snapshot in the lineage that carries one wins -----------------


def test_newest_watermark_skips_snapshots_without_one() -> None:
    newest_first = [
        {"operation": "replace"},  # compaction after the last run
        run_summary(T0, "run-2"),
        run_summary(T0 - HOUR, "run-1"),
    ]
    assert newest_watermark(newest_first) == Watermark(T0)


def test_the_first_run_after_an_upgrade_supersedes_the_legacy_watermark() -> None:
    newest_first = [run_summary(T0 + HOUR, "run-2"), {"operation": "replace"}, legacy_summary(Watermark(T0, 9))]
    assert newest_watermark(newest_first) == Watermark(T0 + HOUR)
    assert newest_watermark(newest_first[1:]) == Watermark(T0, 9)  # before it: the legacy one


@pytest.mark.parametrize(
    "summaries",
    [pytest.param([], id="no-snapshots"), pytest.param([{"operation": "replace"}] * 3, id="only-compactions")],
)
def test_newest_watermark_is_none_without_any_run_snapshot(summaries: list[dict[str, str]]) -> None:
    assert newest_watermark(summaries) is None


@PROPERTY
@given(marks=st.lists(st.none() | watermarks, max_size=8))
def test_newest_watermark_is_that_of_the_first_snapshot_carrying_one(marks: list[Watermark | None]) -> None:
    summaries = [{"operation": "replace"} if m is None else summary_of(m) for m in marks]
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
    committed = OffloadResult("t", "r", "committed", watermark_timestamp="2024-03-01T12:00:00.000000Z")
    assert committed.watermark == Watermark(T0)
    assert committed.watermark is not None and not committed.watermark.legacy
    # a run that skipped on a table whose newest commit is of the first protocol version
    legacy = OffloadResult("t", "r", "skipped", watermark_timestamp="2024-03-01T12:00:00Z", watermark_sequence=5)
    assert legacy.watermark == Watermark(T0, 5)
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
