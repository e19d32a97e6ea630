"""Recording a finished run in the status: its outcome, rows, duration, failure count, error.

Pure logic. A run counts as finished once its SparkApplication is COMPLETED or FAILED, when it
is stopped past its deadline, or when it vanished before it finished.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from iceberg_offload.core.repair import AuditRecord
from iceberg_offload.core.result import RunOutcome
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.operator.runs import ObservedRun, RunPlan
from iceberg_offload.operator.spec import OffloadTableSpec
from iceberg_offload.operator.status import OffloadTableStatus, RunRecord, StatusWatermark

MAX_ERROR_CHARS = 2000  # status.lastError
MAX_MESSAGE_CHARS = 500  # status.lastRun.message


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class FinishedRun:
    """A run seen finished for the first time: recorded in the status and the mirror."""

    name: str
    outcome: RunOutcome
    rows: int
    duration_seconds: float
    finished_at: datetime
    watermark: Watermark | None
    error: str = ""
    audit: AuditRecord | None = None  # the late-data audit the run recorded, if any


@dataclass(frozen=True)
class Readback:
    """What the Iceberg table says after a run: its watermark, the run's commit, its rows, and
    the late-data audit the run recorded in its commits."""

    watermark: Watermark | None
    rows_added: int | None  # None: the run made no commit (its window was already committed)
    row_count: int
    audit: AuditRecord | None = None  # None: the run recorded no audit (nothing audited or committed)
    schema_change: str | None = None  # the table's newest schema evolution (offload.schema-change)


def run_record(
    run: ObservedRun | RunPlan,
    created: datetime,
    outcome: RunOutcome,
    *,
    message: str,
    rows: int | None = None,
    completion: datetime | None = None,
) -> RunRecord:
    return RunRecord(
        name=run.name,
        slot=run.slot,
        attempt=run.attempt,
        generation=run.generation,
        window_to=run.window_to,
        outcome=outcome,
        start_time=created,
        rows=rows,
        completion_time=completion,
        message=message,
    )


def watermark_text(status: OffloadTableStatus) -> str:
    return str(status.watermark) if status.watermark else "-#0"


def apply_readback(status: OffloadTableStatus, readback: Readback) -> OffloadTableStatus:
    mark = StatusWatermark.of(readback.watermark) if readback.watermark is not None else status.watermark
    schema_change = readback.schema_change or status.last_schema_change
    return replace(status, watermark=mark, row_count=readback.row_count, last_schema_change=schema_change)


def schema_events(before: OffloadTableStatus, after: OffloadTableStatus) -> list[Event]:
    """SchemaEvolved once per schema change the readback brought (level-based: the status keeps it)."""
    if not after.last_schema_change or after.last_schema_change == before.last_schema_change:
        return []
    return [Event("Normal", "SchemaEvolved", f"schema of the Iceberg table evolved: {after.last_schema_change}")]


def record_finished(
    status: OffloadTableStatus, run: ObservedRun, readback: Readback | None
) -> tuple[OffloadTableStatus, FinishedRun]:
    """The status with `run` recorded as the last run, and what the mirror and metrics get."""
    finished_at = run.terminated or run.created
    duration = max(0.0, (finished_at - run.created).total_seconds())
    status = replace(status, last_run_duration_seconds=duration)
    if run.succeeded:
        rows = readback.rows_added if readback and readback.rows_added is not None else 0
        skipped = readback is not None and readback.rows_added is None
        outcome = RunOutcome.SKIPPED if skipped else RunOutcome.SUCCEEDED
        status = replace(status, last_successful_run=finished_at, consecutive_failures=0, last_error="")
        last = run_record(
            run, run.created, outcome, rows=rows, completion=finished_at, message=f"watermark {watermark_text(status)}"
        )
        mark = readback.watermark if readback else None
        audit = readback.audit if readback else None
        done = FinishedRun(run.name, outcome, rows, duration, finished_at, mark, audit=audit)
        return replace(status, last_run=last), done
    error = run.error or f"SparkApplication {run.name} ended in state {run.state}"
    last = run_record(
        run, run.created, RunOutcome.FAILED, rows=0, completion=finished_at, message=error[:MAX_MESSAGE_CHARS]
    )
    status = replace(
        status,
        consecutive_failures=status.failures + 1,
        last_error=error[:MAX_ERROR_CHARS],
        last_failure_time=finished_at,
        last_run=last,
    )
    return status, FinishedRun(run.name, RunOutcome.FAILED, 0, duration, finished_at, None, error)


def vanished(active: RunRecord, now: datetime) -> ObservedRun:
    """The run in flight whose SparkApplication was deleted before it finished: failed now."""
    return ObservedRun(
        name=active.name,
        slot=active.slot,
        attempt=active.attempt or 1,
        generation=active.generation,
        window_to=active.window_to,
        created=active.start_time,
        state="FAILED",
        terminated=now,
        error=f"SparkApplication {active.name} was deleted before it finished",
    )


def finished_event(done: FinishedRun, spec: OffloadTableSpec | None, status: OffloadTableStatus) -> Event:
    if done.outcome is RunOutcome.SUCCEEDED:
        message = f"{done.name} committed {done.rows} rows; watermark {watermark_text(status)}"
        return Event("Normal", "RunSucceeded", message)
    if done.outcome is RunOutcome.SKIPPED:
        return Event("Normal", "RunSkipped", f"{done.name}: window already committed, nothing added")
    attempts = spec.max_attempts if spec else 0
    attempt = status.last_run.attempt if status.last_run else None
    return Event("Warning", "RunFailed", f"{done.name} failed (attempt {attempt} of {attempts}): {done.error}")


def retries_exhausted(status: OffloadTableStatus, spec: OffloadTableSpec, generation: int) -> bool:
    """The last run failed its last attempt for this generation of the spec."""
    last = status.last_run
    if last is None or last.outcome is not RunOutcome.FAILED:
        return False
    if last.generation < generation:
        return False  # the spec changed since: it is retried at once
    return last.attempt >= spec.max_attempts


def retry_time(status: OffloadTableStatus, spec: OffloadTableSpec, generation: int) -> datetime | None:
    """When the last failed run is retried: at once after a spec change, else after the delay."""
    last = status.last_run
    if last is None or last.outcome is not RunOutcome.FAILED or retries_exhausted(status, spec, generation):
        return None
    ended = last.completion_time or last.start_time
    if last.generation < generation:
        return ended
    return ended + spec.retry_delay
