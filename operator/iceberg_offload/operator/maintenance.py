"""When the operator runs an OffloadTable's maintenance, and what it records of each run.

Pure logic: no Kubernetes, engine or network imports. A maintenance run (compaction, manifest
rewrite, snapshot expiry, orphan removal: the job's --maintain mode) is due at each slot of
spec.maintenance.schedule, in the table's time zone; missed slots collapse into one, as a table's
runs catch up. The annotation offload.k2.io/maintain-now asks for one run as soon as the table is
free, once per distinct value (also while the schedule is disabled; never while suspended).

The lease: maintenance starts only when no run of the table and no backfill of it is in flight
and no run starts in the same tick; while it is in flight, the table's runs (decide.py) and its
backfills (backfill.py) wait. Each run is one SparkApplication labeled
offload.k2.io/maintenance-of, named after its slot (runs.maintenance_name), followed to its end
and recorded in status.maintenance with the MaintenanceRecord the job wrote, once read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from iceberg_offload.core.maintenance import MaintenancePolicy, MaintenanceRecord
from iceberg_offload.core.schedule import last_slot, next_slot
from iceberg_offload.core.watermark import utc
from iceberg_offload.operator.maintenance_status import MaintenanceOutcome, StatusMaintenance
from iceberg_offload.operator.record import Event
from iceberg_offload.operator.runs import (
    ObservedRun,
    history_cleanup,
    maintenance_name,
    manual_slot_id,
    schedule_slot_id,
)
from iceberg_offload.operator.spec import OffloadTableSpec

MAX_ERROR_CHARS = 500  # status.maintenance.error: one line


@dataclass(frozen=True)
class MaintenanceView:
    """The table's maintenance as observed: its SparkApplications, the maintain-now annotation,
    and the record read back from the Iceberg table for the run to record."""

    apps: Sequence[ObservedRun] = ()
    trigger: str | None = None
    record_read: bool = False  # the table's properties were read for the run to record
    record: MaintenanceRecord | None = None  # what they held (None: no record)

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(sorted(a.name for a in self.apps if not a.finished))


@dataclass(frozen=True)
class MaintenancePlan:
    """A maintenance SparkApplication to create."""

    name: str
    slot: str
    generation: int
    started: datetime
    policy: MaintenancePolicy


@dataclass(frozen=True)
class MaintenanceDone:
    """A maintenance run recorded now (for the metrics)."""

    name: str
    outcome: MaintenanceOutcome
    record: MaintenanceRecord | None


@dataclass
class MaintenanceStep:
    status: StatusMaintenance | None
    create: MaintenancePlan | None = None
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    finished: list[MaintenanceDone] = field(default_factory=list)


def _second(value: datetime) -> datetime:
    return utc(value).replace(microsecond=0)


def _unrecorded(app: ObservedRun, status: StatusMaintenance | None) -> bool:
    if status is None or status.last_run is None:
        return True
    if app.name == status.last_run:
        return status.outcome in (None, MaintenanceOutcome.RUNNING)
    recorded = (status.last_start_time or datetime.min.replace(tzinfo=app.created.tzinfo), status.last_run)
    return (_second(app.created), app.name) > recorded


def to_record(view: MaintenanceView, status: StatusMaintenance | None) -> list[ObservedRun]:
    """The finished maintenance runs not recorded yet, oldest first (the newest gets the record)."""
    return sorted((a for a in view.apps if a.finished and _unrecorded(a, status)), key=lambda a: a.order)


def one_line(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:MAX_ERROR_CHARS]


def figures(record: MaintenanceRecord) -> str:
    return (
        f"{record.snapshots_expired} snapshots expired, {record.data_files_rewritten} data files rewritten into "
        f"{record.data_files_added} ({record.bytes_rewritten} bytes), {record.orphans_removed} orphan files "
        f"removed; now {record.snapshots_after} snapshots, {record.data_files_after} data files"
    )


def _finish(step: MaintenanceStep, app: ObservedRun, record: MaintenanceRecord | None, now: datetime) -> None:
    base = replace(step.status or StatusMaintenance(), last_run=app.name, last_start_time=app.created)
    finished = app.terminated or now
    if app.succeeded:
        outcome = MaintenanceOutcome.SUCCEEDED
        step.status = replace(base, outcome=outcome, last_finish_time=finished, error=None).with_record(record)
        what = figures(record) if record else "no maintenance record of this run in the table's properties"
        step.events.append(Event("Normal", "MaintenanceSucceeded", f"{app.name}: {what}"))
    else:
        outcome = MaintenanceOutcome.FAILED
        error = one_line(app.error) or f"SparkApplication {app.name} ended in state {app.state}"
        step.status = replace(base, outcome=outcome, last_finish_time=finished, error=error).with_record(None)
        step.events.append(Event("Warning", "MaintenanceFailed", f"{app.name} failed: {error}"))
    step.finished.append(MaintenanceDone(app.name, outcome, record))


def _follow(
    step: MaintenanceStep, view: MaintenanceView, spec: OffloadTableSpec | None, now: datetime
) -> ObservedRun | None:
    """Record the runs that finished, stop one past the table's run deadline; the one in flight."""
    pending = to_record(view, step.status)
    for app in pending:
        newest = app is pending[-1]
        if newest and app.succeeded and not view.record_read:
            break  # recorded once its record is read back (the reconciler reads it for this run)
        record = view.record if newest and view.record and view.record.run_id == app.name else None
        _finish(step, app, record, now)
    active = sorted((a for a in view.apps if not a.finished), key=lambda a: a.order)
    current = active[-1] if active else None
    status = step.status
    names = {a.name for a in view.apps}
    if current is None and status and status.outcome is MaintenanceOutcome.RUNNING and status.last_run not in names:
        gone = f"SparkApplication {status.last_run} was deleted before it finished"
        created = status.last_start_time or now
        _finish(step, ObservedRun(str(status.last_run), "", 1, 0, created, created, "FAILED", now, gone), None, now)
    if current is not None and spec is not None and now - current.created > spec.run_deadline:
        step.delete.append(current.name)
        message = f"did not finish within {int(spec.run_deadline.total_seconds())}s; stopped"
        _finish(step, replace(current, state="FAILED", terminated=now, error=message), None, now)
        return None
    if current is not None and (status is None or status.last_run != current.name):
        base = status or StatusMaintenance()
        step.status = replace(
            base, last_run=current.name, outcome=MaintenanceOutcome.RUNNING, last_start_time=current.created
        )
        step.status = replace(step.status, last_finish_time=None, error=None)
    return current


def _due(
    view: MaintenanceView, spec: OffloadTableSpec, status: StatusMaintenance, now: datetime, created: datetime
) -> tuple[str, datetime | None] | None:
    """The slot of the maintenance run due now (a manual trigger's: no time), or None."""
    if spec.suspend:
        return None
    if view.trigger and view.trigger != status.last_trigger:
        return manual_slot_id(view.trigger), None
    if not spec.maintenance.enabled:
        return None
    slot = last_slot(spec.maintenance.schedule, spec.time_zone, now)
    if slot > (status.last_schedule_time or utc(created)):
        return schedule_slot_id(slot), slot
    return None


def _handled(
    status: StatusMaintenance, view: MaintenanceView, spec: OffloadTableSpec, now: datetime
) -> StatusMaintenance:
    """What a started run takes care of: the trigger, if new, and the newest schedule slot."""
    if view.trigger and view.trigger != status.last_trigger:
        status = replace(status, last_trigger=view.trigger)
    if spec.maintenance.enabled:
        slot = last_slot(spec.maintenance.schedule, spec.time_zone, now)
        if status.last_schedule_time is None or slot > status.last_schedule_time:
            status = replace(status, last_schedule_time=slot)
    return status


def maintain(
    view: MaintenanceView,
    spec: OffloadTableSpec | None,
    status: StatusMaintenance | None,
    *,
    table: str,
    generation: int,
    created: datetime,
    now: datetime,
    busy: bool,
    upgraded: bool = False,
) -> MaintenanceStep:
    """The maintenance step of one table's reconcile. `spec` None: the spec cannot run (the runs
    in flight are still followed, nothing starts); `busy`: a run of the table or a backfill of it
    is in flight or starts now, so a due maintenance run waits; `upgraded`: the table was
    reconciled before by an operator without maintenance, whose missed slots are not caught up
    (every table at once after an upgrade): its first maintenance is at the next slot."""
    now = utc(now)
    step = MaintenanceStep(status)
    current = _follow(step, view, spec, now)
    if spec is None:
        return step
    if step.status is None and upgraded and spec.maintenance.enabled:
        step.status = StatusMaintenance(last_schedule_time=last_slot(spec.maintenance.schedule, spec.time_zone, now))
    base = step.status or StatusMaintenance()
    due = _due(view, spec, base, now, created)
    if due is not None and current is None and not busy:
        slot, _ = due
        name = maintenance_name(table, slot)
        if name not in {a.name for a in view.apps}:  # else created already (a restart before the status write)
            step.create = MaintenancePlan(name, slot, generation, now, spec.maintenance.policy)
            base = replace(base, last_run=name, outcome=MaintenanceOutcome.RUNNING, last_start_time=now)
            base = replace(base, last_finish_time=None, error=None)
            step.events.append(Event("Normal", "MaintenanceStarted", f"started {name} (table maintenance)"))
        base = _handled(base, view, spec, now)
    upcoming = spec.maintenance.enabled and not spec.suspend
    step.status = replace(
        base, next_run=next_slot(spec.maintenance.schedule, spec.time_zone, now) if upcoming else None
    )
    keep = [a for a in view.apps if a.finished and not _unrecorded(a, step.status)]
    step.delete += history_cleanup(keep, step.delete, spec.successful_history, spec.failed_history)
    return step
