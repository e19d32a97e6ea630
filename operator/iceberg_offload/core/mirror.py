"""The `offload_watermarks` row of a table: a mirror of its Iceberg watermark for the runbook.

Pure logic: no engine, catalog or network imports. The Iceberg table is the source of truth;
this row is written after each run so the runbook's queries keep working.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from iceberg_offload.core.result import OffloadResult, RunOutcome
from iceberg_offload.core.watermark import EPOCH, utc

MAX_ERROR_CHARS = 2000
COLUMNS = (
    "table_name",
    "last_offload_timestamp",
    "last_offload_max_sequence",
    "last_successful_run",
    "last_run_duration_seconds",
    "status",
    "failure_count",
    "last_error_message",
)


@dataclass(frozen=True)
class MirrorRow:
    table_name: str
    last_offload_timestamp: datetime = EPOCH
    last_offload_max_sequence: int = 0
    last_successful_run: datetime = EPOCH
    last_run_duration_seconds: float = 0.0
    status: str = "initialized"
    failure_count: int = 0
    last_error_message: str = ""

    def values(self) -> tuple[object, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)


def after_run(previous: MirrorRow | None, result: OffloadResult, finished_at: datetime) -> MirrorRow:
    """The row after a run: success resets the failure count, failure increments it and keeps
    the last good watermark."""
    row = previous or MirrorRow(result.table)
    outcome = RunOutcome.of_result(result.outcome)
    if outcome is RunOutcome.FAILED:
        return replace(
            row,
            last_run_duration_seconds=result.duration_seconds,
            status=outcome.mirror,
            failure_count=row.failure_count + 1,
            last_error_message=(result.error or "")[:MAX_ERROR_CHARS],
        )
    # last_offload_timestamp: every row before it is offloaded. last_offload_max_sequence is 0
    # for watermarks of this protocol (they are timestamps); it keeps the runbook's columns.
    mark = result.watermark
    return replace(
        row,
        last_offload_timestamp=mark.timestamp if mark else row.last_offload_timestamp,
        last_offload_max_sequence=(mark.sequence or 0) if mark else row.last_offload_max_sequence,
        last_successful_run=utc(finished_at),
        last_run_duration_seconds=result.duration_seconds,
        status=outcome.mirror,
        failure_count=0,
        last_error_message="",
    )


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")
_KEY_VALUE = re.compile(
    r"""(?i)([a-z_]*(?:password|passwd|secret|token|key)['"]?)"""  # the key
    r"""(\s*[=:]\s*)('[^']*'(?!\S)|"[^"]*"(?!\S)|\S+)"""  # the separator, the value
)


def scrub(message: str, secrets: Iterable[str] = ()) -> str:
    """A message with known secret values and credential-looking fragments masked."""
    for secret in sorted(secrets, key=len, reverse=True):  # a longer secret may contain a shorter one
        if secret:
            message = message.replace(secret, "***")
    message = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", message)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", message)
