"""What a run commits and reports: snapshot summary properties and the machine-readable result.

Pure logic: no engine, catalog or network imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal, get_args

from iceberg_offload.core.watermark import Watermark, Window, format_timestamp, parse_timestamp

# The watermark a commit makes: every row with a timestamp before it is in the table.
WATERMARK_BEFORE = "offload.watermark.before"
# The first protocol version's watermark, (timestamp, sequence) inclusive: read, never written.
WATERMARK_TIMESTAMP = "offload.watermark.timestamp"
WATERMARK_SEQUENCE = "offload.watermark.sequence"
TIMESTAMP_COLUMN = "offload.timestamp-column"
RESET = "offload.reset"
WINDOW_FROM = "offload.window.from"
WINDOW_TO = "offload.window.to"
RUN_ID = "offload.run-id"
SOURCE = "offload.source"
RESULT_MARKER = "OFFLOAD_RESULT "

Outcome = Literal["committed", "skipped", "failed"]  # the result line's word for a finished run


class RunOutcome(StrEnum):
    """How a run stands: the one definition of a run's outcome. The value is the word of the
    OffloadTable status (status.lastRun.outcome, the runs metric's label); `result` is the word
    of the job's result line and `mirror` that of the offload_watermarks status column."""

    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    SKIPPED = "Skipped"
    FAILED = "Failed"

    @property
    def result(self) -> Outcome:
        return _SPELLINGS[self][0]

    @property
    def mirror(self) -> str:
        return _SPELLINGS[self][1]

    @classmethod
    def of_result(cls, word: Outcome) -> RunOutcome:
        return next(outcome for outcome, (result, _) in _SPELLINGS.items() if result == word)


# The one mapping between the spellings; a running run has no result line and no mirror row yet.
_SPELLINGS: dict[RunOutcome, tuple[Outcome, str]] = {
    RunOutcome.SUCCEEDED: ("committed", "success"),
    RunOutcome.SKIPPED: ("skipped", "success"),
    RunOutcome.FAILED: ("failed", "failed"),
}


class ResultError(ValueError):
    """A result line or snapshot summary that cannot be read."""


def summary_properties(window: Window, run_id: str, source: str, timestamp_column: str) -> dict[str, str]:
    """The snapshot summary a run's commit carries: the watermark travels with the data, with
    the column it is a position of (a reset reads it from here)."""
    return {
        WATERMARK_BEFORE: format_timestamp(window.upper.timestamp),
        WINDOW_FROM: str(window.lower),
        WINDOW_TO: str(window.upper),
        RUN_ID: run_id,
        SOURCE: source,
        TIMESTAMP_COLUMN: timestamp_column,
    }


def reset_properties(mark: Watermark, run_id: str, timestamp_column: str, reason: str) -> dict[str, str]:
    """The snapshot summary of a reset's commit: the new, lower watermark and why."""
    return {
        WATERMARK_BEFORE: format_timestamp(mark.timestamp),
        RUN_ID: run_id,
        TIMESTAMP_COLUMN: timestamp_column,
        RESET: reason,
    }


def watermark_from_summary(summary: Mapping[str, str]) -> Watermark | None:
    """The watermark a snapshot committed, or None for snapshots not made by a run
    (compaction, deletes by hand). Snapshots of the first protocol version are read too."""
    try:
        if WATERMARK_BEFORE in summary:
            return Watermark(parse_timestamp(summary[WATERMARK_BEFORE]))
        if WATERMARK_TIMESTAMP in summary:
            return Watermark(
                parse_timestamp(summary[WATERMARK_TIMESTAMP]),
                int(summary.get(WATERMARK_SEQUENCE, "0")),
            )
    except ValueError as exc:
        raise ResultError(f"snapshot summary has an unreadable watermark: {exc}") from exc
    return None


@dataclass(frozen=True)
class OffloadResult:
    """The outcome of one run, printed as one line after RESULT_MARKER."""

    table: str
    run_id: str
    outcome: Outcome
    rows: int = 0
    window_from: str | None = None
    window_to: str | None = None
    watermark_timestamp: str | None = None
    watermark_sequence: int | None = None
    snapshot_id: int | None = None
    duration_seconds: float = 0.0
    error: str | None = None
    # The run's audit of late data: buckets still differing after its repair, rows it rewrote,
    # and of them the rows that were missing (late rows).
    buckets_differing: int = 0
    rows_repaired: int = 0
    late_rows: int = 0
    # What this run's schema evolution changed in the target, e.g. `added venue string`; None: nothing.
    schema_change: str | None = None

    @property
    def watermark(self) -> Watermark | None:
        if self.watermark_timestamp is None:
            return None
        return Watermark(parse_timestamp(self.watermark_timestamp), self.watermark_sequence)

    def to_line(self) -> str:
        return RESULT_MARKER + json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OffloadResult:
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultError(f"result is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ResultError("result is not a JSON object")
        known = set(cls.__dataclass_fields__)
        missing = {"table", "run_id", "outcome"} - set(data)
        if missing:
            raise ResultError(f"result lacks {', '.join(sorted(missing))}")
        if data["outcome"] not in get_args(Outcome):
            raise ResultError(f"result has unknown outcome {data['outcome']!r}")
        return cls(**{k: v for k, v in data.items() if k in known})


def parse_result(output: str) -> OffloadResult | None:
    """The last result line in a run's output, or None if it printed none."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT_MARKER)]
    return OffloadResult.from_json(lines[-1].removeprefix(RESULT_MARKER)) if lines else None
