"""What the operator does next for one OffloadTable, decided from what it observes.

Pure logic: no Kubernetes, engine or network imports. The controller gathers an `Observed`
(the spec, the previous status, the table's SparkApplications, upstream watermarks, the Iceberg
readback, the clock) and carries out the `Decision`: create or delete runs, patch the status,
emit events, mirror each finished run into `offload_watermarks`. Level-based: the same
observation always gives the same decision, so a restart or a repeated tick is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from iceberg_offload.core.result import RunOutcome
from iceberg_offload.core.schedule import last_slot, next_slot
from iceberg_offload.core.watermark import format_timestamp, utc
from iceberg_offload.operator import conditions as cond
from iceberg_offload.operator.audit import audit_events, in_sync_condition, record_audit
from iceberg_offload.operator.conditions import Reason, set_condition
from iceberg_offload.operator.maintenance import MaintenanceStep, MaintenanceView, maintain
from iceberg_offload.operator.record import (
    Event,
    FinishedRun,
    Readback,
    apply_readback,
    finished_event,
    record_finished,
    retries_exhausted,
    retry_time,
    run_record,
    schema_events,
    vanished,
    watermark_text,
)
from iceberg_offload.operator.runs import (
    ANNOTATION_WINDOW_TO,
    LABEL_ATTEMPT,
    LABEL_BACKFILL_OF,
    LABEL_GENERATION,
    LABEL_SLOT,
    LABEL_TABLE,
    TRIGGER_ANNOTATION,
    ObservedRun,
    RunPlan,
    finished_unrecorded,
    history_cleanup,
    in_flight,
    manual_slot_id,
    newer_than_recorded,
    run_name,
    schedule_slot_id,
    table_label,
)
from iceberg_offload.operator.spec import DEFAULT_HISTORY_LIMIT, OffloadTableSpec
from iceberg_offload.operator.status import Condition, OffloadTableStatus, format_time
from iceberg_offload.operator.upstream import (
    Due,
    Upstream,
    any_without_watermark,
    cap_by_upstream,
    gate,
    unknown_upstream,
    waiting_for,
)

__all__ = [
    "ANNOTATION_WINDOW_TO",
    "LABEL_ATTEMPT",
    "LABEL_BACKFILL_OF",
    "LABEL_GENERATION",
    "LABEL_SLOT",
    "LABEL_TABLE",
    "TRIGGER_ANNOTATION",
    "Decision",
    "Event",
    "FinishedRun",
    "Observed",
    "ObservedRun",
    "Readback",
    "RunPlan",
    "Upstream",
    "decide",
    "manual_slot_id",
    "run_name",
    "run_to_record",
    "schedule_slot_id",
    "set_condition",
    "table_label",
]


@dataclass(frozen=True)
class Observed:
    name: str
    generation: int
    created: datetime
    now: datetime
    spec: OffloadTableSpec | None
    spec_error: str | None = None
    status: OffloadTableStatus = field(default_factory=OffloadTableStatus)
    runs: Sequence[ObservedRun] = ()
    upstream: Mapping[str, Upstream] = field(default_factory=dict)
    dependency_cycle: str | None = None
    trigger: str | None = None
    readback: Readback | None = None
    backfills_active: Sequence[str] = ()  # the table's OffloadBackfills' SparkApplications in flight
    maintenance: MaintenanceView = field(default_factory=MaintenanceView)
    maintenance_active: Sequence[str] = ()  # the table's maintenance SparkApplications in flight


@dataclass
class Decision:
    status: OffloadTableStatus
    create: RunPlan | None = None
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    finished: list[FinishedRun] = field(default_factory=list)  # every run recorded now, oldest first
    maintenance: MaintenanceStep | None = None


def run_to_record(observed: Observed) -> ObservedRun | None:
    """The newest finished run not recorded yet (the one a readback is wanted for)."""
    pending = finished_unrecorded(observed.runs, observed.status.last_run)
    return pending[-1] if pending else None


@dataclass
class _Tick:
    """One decide() in progress: the observation and the decision it grows."""

    observed: Observed
    now: datetime
    decision: Decision

    def event(self, event: Event) -> None:
        self.decision.events.append(event)

    @property
    def status(self) -> OffloadTableStatus:
        return self.decision.status

    @status.setter
    def status(self, status: OffloadTableStatus) -> None:
        self.decision.status = status

    def set(self, condition: Condition) -> None:
        """Set a condition; a Ready that newly turns False also warns, once."""
        if cond.newly_not_ready(self.observed.status.condition(cond.READY), condition):
            self.event(Event("Warning", str(condition.reason), str(condition.message)))
        conditions = set_condition(self.status.conditions, condition, self.now, self.observed.generation)
        self.status = replace(self.status, conditions=conditions)

    def finish(self, run: ObservedRun, readback: Readback | None) -> None:
        self.status, done = record_finished(self.status, run, readback)
        self.decision.finished.append(done)
        self.event(finished_event(done, self.observed.spec, self.status))
        self.status = record_audit(self.status, done.audit)
        self.decision.events += audit_events(done)


def decide(observed: Observed) -> Decision:
    """The next step for one table. See the module docstring."""
    status = replace(observed.status, observed_generation=observed.generation)
    if observed.readback is not None:
        status = apply_readback(status, observed.readback)
    tick = _Tick(observed, utc(observed.now), Decision(status))
    tick.decision.events += schema_events(observed.status, status)

    # 1. Follow the runs: record every finished one, stop one past its deadline.
    current = _follow_runs(tick)
    tick.set(in_sync_condition(tick.status.audit))
    running_message = f"{current.name} is {current.state or 'submitted'}" if current else "no run in flight"

    # 2. A spec that can never run: say why, launch nothing.
    spec = observed.spec
    problem = _spec_problem(observed)
    if spec is None or problem is not None:
        _cannot_run(tick, current is not None, running_message, problem)
        _maintain(tick, None)
        return tick.decision

    # 3. What is due, and may it start?
    blocked, running_message = _start_due(tick, spec, current, running_message)

    # 4. Maintenance, when nothing else holds the table; then the summary.
    _maintain(tick, spec)
    _summarize(tick, spec, blocked, running_message)
    decision = tick.decision
    decision.delete += history_cleanup(observed.runs, decision.delete, spec.successful_history, spec.failed_history)
    return decision


def _follow_runs(tick: _Tick) -> ObservedRun | None:
    """Record the runs that finished, stop the one past its deadline; the run still in flight."""
    observed, now, spec = tick.observed, tick.now, tick.observed.spec
    newest_to_record = run_to_record(observed)
    for run in finished_unrecorded(observed.runs, observed.status.last_run):
        tick.finish(run, observed.readback if run is newest_to_record else None)
    current = in_flight(observed.runs, tick.status.last_run)
    gone = tick.status.active_run
    if current is None and gone is not None and not tick.decision.finished and gone.name not in _names(observed):
        tick.finish(vanished(gone, now), None)
    if current is not None and spec is not None and now - current.created > spec.run_deadline:
        tick.decision.delete.append(current.name)
        message = (
            f"run {current.name} did not finish within {int(spec.run_deadline.total_seconds())}s "
            f"(state {current.state or 'unknown'}); stopped"
        )
        tick.event(Event("Warning", "DeadlineExceeded", message))
        tick.finish(replace(current, state="FAILED", terminated=now, error=message), None)
        current = None
    if current is not None:
        message = f"state {current.state or 'NEW'}"
        tick.status = replace(
            tick.status, active_run=run_record(current, current.created, RunOutcome.RUNNING, message=message)
        )
    else:
        tick.status = replace(tick.status, active_run=None)
    return current


def _names(observed: Observed) -> set[str]:
    return {r.name for r in observed.runs}


def _spec_problem(observed: Observed) -> tuple[Reason, str] | None:
    if observed.spec is None:
        return None
    if observed.dependency_cycle:
        return Reason.DEPENDENCY_CYCLE, observed.dependency_cycle
    unknown = unknown_upstream(observed.upstream, observed.spec)
    if unknown:
        return Reason.UNKNOWN_UPSTREAM, f"spec.dependsOn names OffloadTables that do not exist: {', '.join(unknown)}"
    return None


def _cannot_run(tick: _Tick, running: bool, running_message: str, problem: tuple[Reason, str] | None) -> None:
    reason, message = problem or (Reason.INVALID_SPEC, tick.observed.spec_error or "invalid spec")
    tick.set(cond.run_state(running, running_message))
    tick.set(cond.not_ready(reason, message))
    tick.set(cond.not_blocked_invalid_spec(message))
    tick.status = replace(tick.status, next_run=None)
    decision = tick.decision
    limit = DEFAULT_HISTORY_LIMIT  # a spec that cannot be read has no limits of its own
    decision.delete += history_cleanup(tick.observed.runs, decision.delete, limit, limit)


def _start_due(
    tick: _Tick, spec: OffloadTableSpec, current: ObservedRun | None, running_message: str
) -> tuple[str, str]:
    """Start the run that is due, if it may start: what it waits for upstream (or ""), and the
    Running condition's message."""
    observed, now, decision = tick.observed, tick.now, tick.decision
    due = _due(observed, spec, tick.status, now, current)
    if due is None:
        return "", running_message
    same_slot = [r for r in observed.runs if r.slot == due.slot]
    recorded = tick.status.last_run
    launched = [r for r in same_slot if newer_than_recorded(r, recorded) and r.name not in decision.delete]
    gated, blocked = _gated(due, observed, spec, now)
    if gated is None:
        return blocked, running_message
    if launched:
        # Already submitted (a restart between creating it and writing the status): follow it.
        tick.status = _mark_handled(tick.status, gated, observed, spec, now)
        return blocked, running_message
    if observed.backfills_active:
        # The backfill holds the table (OffloadBackfill): the run starts once it is done.
        return blocked, f"{running_message}; the next run waits for backfill {observed.backfills_active[0]}"
    if observed.maintenance_active:
        return blocked, f"{running_message}; the next run waits for maintenance {observed.maintenance_active[0]}"
    if current is not None:
        if spec.concurrency_policy == "Forbid" or gated.kind == "retry":
            return blocked, f"{running_message}; the next run waits for it (concurrencyPolicy Forbid)"
        decision.delete.append(current.name)
        message = f"stopped {current.name} to start a newer run (concurrencyPolicy Replace)"
        tick.event(Event("Normal", "Replaced", message))
    attempt = max([gated.attempt, *(r.attempt + 1 for r in same_slot)])
    name = run_name(observed.name, gated.slot, attempt)
    plan = RunPlan(name, gated.slot, attempt, observed.generation, gated.window_to)
    decision.create = plan
    tick.event(
        Event(
            "Normal",
            "RunStarted",
            f"started {plan.name} for rows up to {format_timestamp(plan.window_to)} ({gated.kind}, attempt {attempt})",
        )
    )
    tick.status = replace(tick.status, active_run=run_record(plan, now, RunOutcome.RUNNING, message="submitted"))
    tick.status = _mark_handled(tick.status, gated, observed, spec, now)
    return blocked, f"{plan.name} submitted"


def _maintain(tick: _Tick, spec: OffloadTableSpec | None) -> None:
    """The maintenance step (operator/maintenance.py): it waits while the table's run or a backfill holds it."""
    o, decision = tick.observed, tick.decision
    busy = decision.create is not None or tick.status.active_run is not None or bool(o.backfills_active)
    step = maintain(
        o.maintenance, spec, o.status.maintenance, table=o.name, generation=o.generation, created=o.created,
        now=tick.now, busy=busy, upgraded=o.status.observed_generation is not None,
    )  # fmt: skip
    decision.maintenance, decision.delete, decision.events = (
        step,
        decision.delete + step.delete,
        decision.events + step.events,
    )
    tick.status = replace(tick.status, maintenance=step.status)


def _gated(due: Due, observed: Observed, spec: OffloadTableSpec, now: datetime) -> tuple[Due | None, str]:
    """The due run as far as the upstream tables let it read (None: it waits), and what it waits for."""
    if due.kind != "manual":
        gated = gate(due, observed.upstream, spec)
        target = last_slot(spec.schedule, spec.time_zone, now) - spec.buffer
        return gated, "" if gated is not None else waiting_for(observed.upstream, spec, target)
    if any_without_watermark(observed.upstream, spec):
        # nothing upstream is offloaded yet: a manual run would read nothing
        return None, waiting_for(observed.upstream, spec, due.window_to)
    return cap_by_upstream(due, observed.upstream, spec), ""


def _summarize(tick: _Tick, spec: OffloadTableSpec, blocked: str, running_message: str) -> None:
    now, generation = tick.now, tick.observed.generation
    current_active = tick.status.active_run is not None
    tick.set(cond.run_state(current_active, running_message))
    tick.set(cond.blocked(blocked) if blocked else cond.clear())
    tick.set(cond.suspended() if spec.suspend else cond.active())
    status = tick.status
    failing = retries_exhausted(status, spec, generation)
    upcoming = [] if spec.suspend else [next_slot(spec.schedule, spec.time_zone, now)]
    retry_at = retry_time(status, spec, generation)
    if retry_at is not None and not spec.suspend and not current_active:
        upcoming.append(max(retry_at, now))
    tick.status = replace(tick.status, next_run=min(upcoming) if upcoming else None)
    tick.set(cond.failing(status.last_error or "") if failing else cond.not_failing())
    tick.set(_summary(tick.status, spec, failing, blocked, current_active))


def _summary(
    status: OffloadTableStatus, spec: OffloadTableSpec, failing: bool, blocked: str, current_active: bool
) -> Condition:
    """The Ready condition: the most pressing of what the other conditions say."""
    last = status.last_run
    if failing:
        return cond.not_ready(
            Reason.RETRIES_EXHAUSTED,
            f"{status.consecutive_failures} failed attempts; last error: {status.last_error}; "
            "the next scheduled run tries again",
        )
    if spec.suspend:
        return cond.not_ready(Reason.SUSPENDED, cond.SUSPENDED_MESSAGE)
    if blocked:
        return cond.ready(Reason.WAITING_FOR_UPSTREAM, blocked)
    if last is not None and last.outcome is RunOutcome.FAILED:
        return cond.ready(Reason.RETRYING, f"attempt {last.attempt} failed: {status.last_error}")
    if status.last_successful_run:
        return cond.ready(Reason.SUCCEEDED, f"watermark {watermark_text(status)}")
    next_run = format_time(status.next_run) if status.next_run else None
    return cond.ready(Reason.SCHEDULED, "first run active" if current_active else f"first run at {next_run}")


def _mark_handled(
    status: OffloadTableStatus, due: Due, observed: Observed, spec: OffloadTableSpec, now: datetime
) -> OffloadTableStatus:
    """Record what a started (or found) run takes care of: its trigger, its schedule slot. A
    manual run also covers a schedule slot that is due, since it reads at least as far."""
    if due.kind == "manual":
        status = replace(status, last_trigger=observed.trigger)
    slot = last_slot(spec.schedule, spec.time_zone, now)
    if due.kind == "schedule" and due.slot_time is not None:
        return replace(status, last_schedule_time=due.slot_time)
    if due.kind == "manual" and not spec.suspend and slot > _since(status, observed):
        return replace(status, last_schedule_time=slot)
    return status


def _since(status: OffloadTableStatus, observed: Observed) -> datetime:
    return status.last_schedule_time or utc(observed.created)


def _due(
    observed: Observed, spec: OffloadTableSpec, status: OffloadTableStatus, now: datetime, current: ObservedRun | None
) -> Due | None:
    """What should run now, most urgent first: a new manual trigger (even when suspended), a new
    schedule slot, a retry of the last failed run (never while another run is in flight)."""
    if observed.trigger and observed.trigger != status.last_trigger:
        return Due(manual_slot_id(observed.trigger), 1, now - spec.buffer, "manual")
    if spec.suspend:
        return None
    slot = last_slot(spec.schedule, spec.time_zone, now)
    if slot > _since(status, observed):
        return Due(schedule_slot_id(slot), 1, slot - spec.buffer, "schedule", slot)
    last = status.last_run
    retry_at = retry_time(status, spec, observed.generation)
    if current is None and last is not None and retry_at is not None and now >= retry_at:
        return Due(last.slot, last.attempt + 1, last.window_to, "retry")
    return None
