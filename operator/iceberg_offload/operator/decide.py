"""What the operator does next for one OffloadTable, decided from what it observes.

Pure logic: no Kubernetes, engine or network imports. The controller gathers an `Observed`
(the spec, the previous status, the table's SparkApplications, upstream watermarks, the Iceberg
readback, the clock) and carries out the `Decision`: create or delete runs, patch the status,
emit events, mirror a finished run into `offload_watermarks`. Level-based: the same
observation always gives the same decision, so a restart or a repeated tick is harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from iceberg_offload.core.schedule import last_slot, next_slot
from iceberg_offload.core.watermark import Watermark, format_timestamp, parse_timestamp, utc
from iceberg_offload.operator.spec import OffloadTableSpec

SUCCEEDED_STATES = frozenset({"COMPLETED"})
FAILED_STATES = frozenset({"FAILED", "SUBMISSION_FAILED"})
TRIGGER_ANNOTATION = "offload.k2.io/trigger"
LABEL_TABLE = "offload.k2.io/table"
LABEL_SLOT = "offload.k2.io/slot"
LABEL_ATTEMPT = "offload.k2.io/attempt"
LABEL_GENERATION = "offload.k2.io/generation"
ANNOTATION_WINDOW_TO = "offload.k2.io/window-to"

Outcome = Literal["Running", "Succeeded", "Skipped", "Failed"]


@dataclass(frozen=True)
class ObservedRun:
    """One of the table's SparkApplications, as read from the API."""

    name: str
    slot: str
    attempt: int
    generation: int
    window_to: datetime
    created: datetime
    state: str = ""
    terminated: datetime | None = None
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in SUCCEEDED_STATES or self.state in FAILED_STATES

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCEEDED_STATES

    @property
    def order(self) -> tuple[datetime, int, str]:
        return (self.created, self.attempt, self.name)


@dataclass(frozen=True)
class Upstream:
    """A table this one depends on: whether it exists and its committed watermark."""

    exists: bool
    watermark: Watermark | None = None
    # The upstream's last schedule slot when it has no run in flight: a table waiting for it
    # runs anyway once it has finished a slot as recent as its own, capped at its watermark.
    settled_slot: datetime | None = None


@dataclass(frozen=True)
class Readback:
    """What the Iceberg table says after a run: its watermark, the run's commit, its rows."""

    watermark: Watermark | None
    rows_added: int | None  # None: the run made no commit (its window was already committed)
    row_count: int


@dataclass(frozen=True)
class Observed:
    name: str
    generation: int
    created: datetime
    now: datetime
    spec: OffloadTableSpec | None
    spec_error: str | None = None
    status: Mapping[str, Any] = field(default_factory=dict)
    runs: Sequence[ObservedRun] = ()
    upstream: Mapping[str, Upstream] = field(default_factory=dict)
    dependency_cycle: str | None = None
    trigger: str | None = None
    readback: Readback | None = None


@dataclass(frozen=True)
class RunPlan:
    """A SparkApplication to create."""

    name: str
    slot: str
    attempt: int
    generation: int
    window_to: datetime


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class FinishedRun:
    """A run seen finished for the first time: recorded in the status and the mirror."""

    name: str
    outcome: Outcome
    rows: int
    duration_seconds: float
    finished_at: datetime
    watermark: Watermark | None
    error: str = ""


@dataclass
class Decision:
    status: dict[str, Any]
    create: RunPlan | None = None
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    finished: FinishedRun | None = None


def _short(name: str, limit: int) -> str:
    """The name itself if it fits, else a prefix and a hash of the whole (still unique)."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 7].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def run_name(table: str, slot: str, attempt: int) -> str:
    """Deterministic: the same slot and attempt always give the same name, so a second
    submission of one window is refused by the API server as already existing. At most 58
    characters, so that the Spark Operator's derived pod and service names stay valid."""
    return f"{_short(table, 40)}-{slot}-{attempt}"


def table_label(table: str) -> str:
    """The value of the offload.k2.io/table label (label values hold at most 63 characters)."""
    return _short(table, 63)


def schedule_slot_id(slot: datetime) -> str:
    return utc(slot).strftime("%Y%m%d%H%M")


def manual_slot_id(trigger: str) -> str:
    return "m" + hashlib.sha256(trigger.encode()).hexdigest()[:10]


def run_to_record(observed: Observed) -> ObservedRun | None:
    """The newest finished run not recorded yet (the one a readback is wanted for)."""
    pending = _finished_unrecorded(observed.runs, observed.status.get("lastRun"))
    return pending[-1] if pending else None


def _finished_unrecorded(runs: Sequence[ObservedRun], last: Mapping[str, Any] | None) -> list[ObservedRun]:
    """Finished runs newer than the last recorded one, oldest first: all of them are recorded,
    so a failure is counted even if the status write of the tick that saw it was lost."""
    return sorted((r for r in runs if r.finished and _newer_than_recorded(r, last)), key=lambda r: r.order)


def _newer_than_recorded(run: ObservedRun, last: Mapping[str, Any] | None) -> bool:
    if not last or not last.get("startTime"):
        return True
    if last.get("name") == run.name:
        return False
    recorded = (parse_timestamp(str(last["startTime"])), int(last.get("attempt") or 0), str(last.get("name")))
    return run.order > recorded


def _ts(value: datetime | None) -> str | None:
    return None if value is None else utc(value).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_record(run: ObservedRun | RunPlan, created: datetime, outcome: Outcome, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": run.name,
        "slot": run.slot,
        "attempt": run.attempt,
        "generation": run.generation,
        "windowTo": format_timestamp(run.window_to),
        "outcome": outcome,
        "startTime": _ts(created),
    }
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> None:
    """Set a condition in place; its lastTransitionTime moves only when its status changes."""
    value = "True" if status else "False"
    for cond in conditions:
        if cond.get("type") == type_:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = _ts(now)
            cond.update(status=value, reason=reason, message=message, observedGeneration=generation)
            return
    conditions.append(
        {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": _ts(now),
            "observedGeneration": generation,
        }
    )


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


@dataclass(frozen=True)
class _Due:
    slot: str
    attempt: int
    window_to: datetime
    kind: Literal["manual", "schedule", "retry"]
    slot_time: datetime | None = None


def decide(observed: Observed) -> Decision:
    """The next step for one table. See the module docstring."""
    now = utc(observed.now)
    status: dict[str, Any] = {k: v for k, v in observed.status.items() if k != "conditions"}
    conditions = [dict(c) for c in observed.status.get("conditions") or []]
    previous_ready = _condition(observed.status, "Ready")
    decision = Decision(status=status)
    gen = observed.generation
    status["observedGeneration"] = gen
    spec = observed.spec

    def event(type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        decision.events.append(Event(type_, reason, message))

    def condition(type_: str, value: bool, reason: str, message: str) -> None:
        set_condition(conditions, type_, value, reason, message, now, gen)

    def ready(value: bool, reason: str, message: str) -> None:
        if not value and (previous_ready.get("reason") != reason or previous_ready.get("status") != "False"):
            event("Warning", reason, message)
        condition("Ready", value, reason, message)

    if observed.readback is not None:
        _apply_readback(status, observed.readback)

    # 1. Follow the runs: record every finished one, stop one past its deadline.
    newest_to_record = run_to_record(observed)
    for run in _finished_unrecorded(observed.runs, observed.status.get("lastRun")):
        readback = observed.readback if run is newest_to_record else None
        decision.finished = _record(status, run, readback)
        _finished_events(decision, spec, status)
    active = sorted(
        (r for r in observed.runs if not r.finished and _newer_than_recorded(r, status.get("lastRun"))),
        key=lambda r: r.order,
    )
    current = active[-1] if active else None
    if current is None and status.get("activeRun") and not decision.finished:
        gone = status["activeRun"]
        if gone.get("name") not in {r.name for r in observed.runs}:
            decision.finished = _record_vanished(status, gone, now)
            _finished_events(decision, spec, status)
    if current is not None and spec is not None and now - current.created > spec.run_deadline:
        decision.delete.append(current.name)
        message = (
            f"run {current.name} did not finish within {int(spec.run_deadline.total_seconds())}s "
            f"(state {current.state or 'unknown'}); stopped"
        )
        event("Warning", "DeadlineExceeded", message)
        decision.finished = _record(status, replace(current, state="FAILED", terminated=now, error=message), None)
        _finished_events(decision, spec, status)
        current = None
    status["activeRun"] = (
        _run_record(current, current.created, "Running", message=f"state {current.state or 'NEW'}") if current else None
    )
    running_message = f"{current.name} is {current.state or 'submitted'}" if current else "no run in flight"

    # 2. A spec that can never run: say why, launch nothing.
    problem = _spec_problem(observed)
    if spec is None or problem is not None:
        reason, message = problem or ("InvalidSpec", observed.spec_error or "invalid spec")
        condition("Running", current is not None, "RunActive" if current else "Idle", running_message)
        ready(False, reason, message)
        condition("Blocked", False, "InvalidSpec", message)
        status["nextRun"] = None
        status["conditions"] = conditions
        decision.delete += _history_cleanup(observed.runs, decision.delete, 3, 3)
        return decision

    # 3. What is due, and may it start?
    due = _due(observed, spec, status, now, current)
    blocked = ""
    if due is not None:
        recorded = status.get("lastRun")
        same_slot = [r for r in observed.runs if r.slot == due.slot]
        launched = [r for r in same_slot if _newer_than_recorded(r, recorded) and r.name not in decision.delete]
        if due.kind != "manual":
            due = _gate(due, observed.upstream, spec)
            blocked = "" if due is not None else _waiting_for(observed.upstream, spec, _target(observed, spec, now))
        elif any(observed.upstream.get(d, Upstream(False)).watermark is None for d in spec.depends_on):
            blocked = _waiting_for(observed.upstream, spec, due.window_to)
            due = None  # nothing upstream is offloaded yet: a manual run would read nothing
        else:
            due = _cap_by_upstream(due, observed.upstream, spec)
        if due is not None and launched:
            # Already submitted (a restart between creating it and writing the status): follow it.
            _mark_handled(status, due, observed, spec, now)
            due = None
        if due is not None and current is not None:
            if spec.concurrency_policy == "Forbid" or due.kind == "retry":
                running_message = f"{running_message}; the next run waits for it (concurrencyPolicy Forbid)"
                due = None
            else:
                decision.delete.append(current.name)
                event("Normal", "Replaced", f"stopped {current.name} to start a newer run (concurrencyPolicy Replace)")
                current = None
        if due is not None:
            attempt = max([due.attempt, *(r.attempt + 1 for r in same_slot)])
            plan = RunPlan(run_name(observed.name, due.slot, attempt), due.slot, attempt, gen, due.window_to)
            decision.create = plan
            event(
                "Normal",
                "RunStarted",
                f"started {plan.name} for rows up to {format_timestamp(plan.window_to)} "
                f"({due.kind}, attempt {attempt})",
            )
            status["activeRun"] = _run_record(plan, now, "Running", message="submitted")
            running_message = f"{plan.name} submitted"
            _mark_handled(status, due, observed, spec, now)
    current_active = status.get("activeRun") is not None
    condition("Running", current_active, "RunActive" if current_active else "Idle", running_message)
    condition("Blocked", bool(blocked), "WaitingForUpstream" if blocked else "Clear", blocked or "nothing to wait for")
    condition(
        "Suspended",
        spec.suspend,
        "Suspended" if spec.suspend else "Active",
        "spec.suspend is true: no scheduled runs or retries" if spec.suspend else "runs on schedule",
    )

    # 4. Summary.
    failing = _retries_exhausted(status, spec, gen)
    upcoming = [] if spec.suspend else [next_slot(spec.schedule, spec.time_zone, now)]
    retry_at = _retry_time(status, spec, gen)
    if retry_at is not None and not spec.suspend and not current_active:
        upcoming.append(max(retry_at, now))
    status["nextRun"] = _ts(min(upcoming)) if upcoming else None
    condition(
        "Failing",
        failing,
        "RetriesExhausted" if failing else "NotFailing",
        str(status.get("lastError") or "") if failing else "the last run did not exhaust its retries",
    )
    last = status.get("lastRun") or {}
    if failing:
        ready(
            False,
            "RetriesExhausted",
            f"{status.get('consecutiveFailures')} failed attempts; last error: {status.get('lastError')}; "
            "the next scheduled run tries again",
        )
    elif spec.suspend:
        ready(False, "Suspended", "spec.suspend is true: no scheduled runs or retries")
    elif blocked:
        ready(True, "WaitingForUpstream", blocked)
    elif last.get("outcome") == "Failed":
        ready(True, "Retrying", f"attempt {last.get('attempt')} failed: {status.get('lastError')}")
    elif status.get("lastSuccessfulRun"):
        ready(True, "Succeeded", f"watermark {_watermark_text(status)}")
    else:
        ready(True, "Scheduled", "first run active" if current_active else f"first run at {status['nextRun']}")
    status["conditions"] = conditions
    decision.delete += _history_cleanup(observed.runs, decision.delete, spec.successful_history, spec.failed_history)
    return decision


def _mark_handled(status: dict[str, Any], due: _Due, observed: Observed, spec: OffloadTableSpec, now: datetime) -> None:
    """Record what a started (or found) run takes care of: its trigger, its schedule slot. A
    manual run also covers a schedule slot that is due, since it reads at least as far."""
    if due.kind == "manual":
        status["lastTrigger"] = observed.trigger
    slot = last_slot(spec.schedule, spec.time_zone, now)
    if due.kind == "schedule" and due.slot_time is not None:
        status["lastScheduleTime"] = _ts(due.slot_time)
    elif due.kind == "manual" and not spec.suspend and slot > _since(status, observed):
        status["lastScheduleTime"] = _ts(slot)


def _since(status: Mapping[str, Any], observed: Observed) -> datetime:
    scheduled = status.get("lastScheduleTime")
    return parse_timestamp(str(scheduled)) if scheduled else utc(observed.created)


def _watermark_text(status: Mapping[str, Any]) -> str:
    mark = status.get("watermark") or {}
    return f"{mark.get('timestamp', '-')}#{mark.get('sequence', 0)}"


def _apply_readback(status: dict[str, Any], readback: Readback) -> None:
    if readback.watermark is not None:
        status["watermark"] = {
            "timestamp": format_timestamp(readback.watermark.timestamp),
            "sequence": readback.watermark.sequence,
        }
    status["rowCount"] = readback.row_count


def _record(status: dict[str, Any], run: ObservedRun, readback: Readback | None) -> FinishedRun:
    finished_at = run.terminated or run.created
    duration = max(0.0, (finished_at - run.created).total_seconds())
    status["lastRunDurationSeconds"] = duration
    if run.succeeded:
        rows = readback.rows_added if readback and readback.rows_added is not None else 0
        outcome: Outcome = "Succeeded" if readback is None or readback.rows_added is not None else "Skipped"
        status.update(lastSuccessfulRun=_ts(finished_at), consecutiveFailures=0, lastError="")
        status["lastRun"] = _run_record(
            run,
            run.created,
            outcome,
            rows=rows,
            completionTime=_ts(finished_at),
            message=f"watermark {_watermark_text(status)}",
        )
        return FinishedRun(run.name, outcome, rows, duration, finished_at, readback.watermark if readback else None)
    error = run.error or f"SparkApplication {run.name} ended in state {run.state}"
    status.update(
        consecutiveFailures=int(status.get("consecutiveFailures") or 0) + 1,
        lastError=error[:2000],
        lastFailureTime=_ts(finished_at),
    )
    status["lastRun"] = _run_record(
        run, run.created, "Failed", rows=0, completionTime=_ts(finished_at), message=error[:500]
    )
    return FinishedRun(run.name, "Failed", 0, duration, finished_at, None, error)


def _record_vanished(status: dict[str, Any], active: Mapping[str, Any], now: datetime) -> FinishedRun:
    created = parse_timestamp(str(active.get("startTime") or _ts(now)))
    run = ObservedRun(
        name=str(active.get("name")),
        slot=str(active.get("slot") or ""),
        attempt=int(active.get("attempt") or 1),
        generation=int(active.get("generation") or 0),
        window_to=parse_timestamp(str(active.get("windowTo") or _ts(now))),
        created=created,
        state="FAILED",
        terminated=now,
        error=f"SparkApplication {active.get('name')} was deleted before it finished",
    )
    return _record(status, run, None)


def _finished_events(decision: Decision, spec: OffloadTableSpec | None, status: Mapping[str, Any]) -> None:
    done = decision.finished
    assert done is not None
    if done.outcome == "Succeeded":
        message = f"{done.name} committed {done.rows} rows; watermark {_watermark_text(status)}"
        decision.events.append(Event("Normal", "RunSucceeded", message))
    elif done.outcome == "Skipped":
        decision.events.append(Event("Normal", "RunSkipped", f"{done.name}: window already committed, nothing added"))
    else:
        attempts = spec.max_attempts if spec else 0
        attempt = status["lastRun"].get("attempt")
        message = f"{done.name} failed (attempt {attempt} of {attempts}): {done.error}"
        decision.events.append(Event("Warning", "RunFailed", message))


def _spec_problem(observed: Observed) -> tuple[str, str] | None:
    if observed.spec is None:
        return None
    if observed.dependency_cycle:
        return "DependencyCycle", observed.dependency_cycle
    missing = Upstream(False)
    unknown = sorted(name for name in observed.spec.depends_on if not observed.upstream.get(name, missing).exists)
    if unknown:
        return "UnknownUpstream", f"spec.dependsOn names OffloadTables that do not exist: {', '.join(unknown)}"
    return None


def _retries_exhausted(status: Mapping[str, Any], spec: OffloadTableSpec, generation: int) -> bool:
    last = status.get("lastRun") or {}
    if last.get("outcome") != "Failed":
        return False
    if int(last.get("generation") or 0) < generation:
        return False  # the spec changed since: it is retried at once
    return int(last.get("attempt") or 0) >= spec.max_attempts


def _retry_time(status: Mapping[str, Any], spec: OffloadTableSpec, generation: int) -> datetime | None:
    last = status.get("lastRun") or {}
    if last.get("outcome") != "Failed" or _retries_exhausted(status, spec, generation):
        return None
    ended = parse_timestamp(str(last.get("completionTime") or last.get("startTime")))
    if int(last.get("generation") or 0) < generation:
        return ended
    return ended + spec.retry_delay


def _target(observed: Observed, spec: OffloadTableSpec, now: datetime) -> datetime:
    return last_slot(spec.schedule, spec.time_zone, now) - spec.buffer


def _due(
    observed: Observed, spec: OffloadTableSpec, status: Mapping[str, Any], now: datetime, current: ObservedRun | None
) -> _Due | None:
    """What should run now, most urgent first: a new manual trigger (even when suspended), a new
    schedule slot, a retry of the last failed run (never while another run is in flight)."""
    if observed.trigger and observed.trigger != status.get("lastTrigger"):
        return _Due(manual_slot_id(observed.trigger), 1, now - spec.buffer, "manual")
    if spec.suspend:
        return None
    slot = last_slot(spec.schedule, spec.time_zone, now)
    if slot > _since(status, observed):
        return _Due(schedule_slot_id(slot), 1, slot - spec.buffer, "schedule", slot)
    last = status.get("lastRun") or {}
    retry_at = _retry_time(status, spec, observed.generation)
    if current is None and retry_at is not None and now >= retry_at:
        return _Due(str(last["slot"]), int(last["attempt"]) + 1, parse_timestamp(str(last["windowTo"])), "retry")
    return None


def _gate(due: _Due, upstream: Mapping[str, Upstream], spec: OffloadTableSpec) -> _Due | None:
    """A scheduled run starts once every upstream watermark reaches its window end, or once
    every upstream that is behind has settled a slot at least as recent (then it reads only as
    far as they got). None: wait."""
    end = due.window_to
    for name in spec.depends_on:
        up = upstream.get(name, Upstream(False))
        if up.watermark is not None and up.watermark.timestamp >= due.window_to:
            continue
        settled = up.settled_slot is not None and due.slot_time is not None and up.settled_slot >= due.slot_time
        if due.kind == "retry":
            settled = up.watermark is not None
        if not settled or up.watermark is None:
            return None
        end = min(end, up.watermark.timestamp)
    return replace(due, window_to=end)


def _cap_by_upstream(due: _Due, upstream: Mapping[str, Upstream], spec: OffloadTableSpec) -> _Due:
    """A manual run goes as far as its upstream tables allow instead of waiting for them."""
    marks = [upstream[d].watermark for d in spec.depends_on if d in upstream]
    if not marks or any(m is None for m in marks):
        return due
    lowest = min(m.timestamp for m in marks if m is not None)
    return replace(due, window_to=min(due.window_to, lowest))


def _waiting_for(upstream: Mapping[str, Upstream], spec: OffloadTableSpec, target: datetime) -> str:
    behind = []
    for name in spec.depends_on:
        mark = upstream.get(name, Upstream(False)).watermark
        if mark is None or mark.timestamp < target:
            have = format_timestamp(mark.timestamp) if mark else "none yet"
            behind.append(f"{name} (watermark {have})")
    what = ", ".join(behind) if behind else "upstream tables"
    return f"waiting for {what} to reach {format_timestamp(target)}"


def _history_cleanup(runs: Sequence[ObservedRun], deleting: Sequence[str], keep_ok: int, keep_failed: int) -> list[str]:
    finished = sorted((r for r in runs if r.finished and r.name not in deleting), key=lambda r: r.order, reverse=True)
    ok = [r.name for r in finished if r.succeeded][keep_ok:]
    failed = [r.name for r in finished if not r.succeeded][keep_failed:]
    return ok + failed
