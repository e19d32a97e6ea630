"""What the operator does next for one OffloadBackfill, decided from what it observes.

Pure logic: no Kubernetes, engine or network imports. An OffloadBackfill asks for one committed
range of one OffloadTable to be made equal to ClickHouse (the job's backfill mode, adapters/audit.py).
Before it starts, the backfill is refused (phase Failed) when its table does not exist, its
range is empty or inverted, ends beyond the table's committed watermark, or starts before
ClickHouse's retention horizon without allowDeletes (the same checks the job makes,
core/repair.py). It never runs at the same time as a run of its table, nor as another backfill
of it: it waits (phase Waiting), and the table's reconciler holds its own runs back while a
backfill runs (operator/decide.py). Then it is one SparkApplication, owned by the backfill and
followed to its end; its commits and rows are read back from the Iceberg table.

Level-based: the same observation always gives the same decision. The spec is fixed once the
run started (the API server of 1.20 cannot enforce immutability): a change after that is
ignored and said so in a condition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from iceberg_offload.core import audit, repair
from iceberg_offload.core.repair import DEFAULT_POLICY
from iceberg_offload.core.tables import SpecError
from iceberg_offload.core.watermark import Watermark, format_timestamp, parse_timestamp, utc
from iceberg_offload.operator.backfill_status import (
    BackfillStatus,
    Phase,
    Reason,
    conditions_for,
    spec_changed,
)
from iceberg_offload.operator.conditions import set_condition
from iceberg_offload.operator.record import Event
from iceberg_offload.operator.runs import FAILED_STATES, SUCCEEDED_STATES
from iceberg_offload.operator.spec import OffloadTableSpec

PLURAL = "offloadbackfills"
KIND = "OffloadBackfill"


@dataclass(frozen=True)
class BackfillSpec:
    table: str
    lower: datetime  # spec.from, inclusive
    upper: datetime  # spec.to, exclusive
    reason: str = ""
    allow_deletes: bool = False


def parse_backfill_spec(spec: Mapping[str, Any]) -> BackfillSpec:
    """The spec parsed; SpecError names the field at fault (the range itself is checked later)."""
    table = spec.get("table")
    if not isinstance(table, str) or not table:
        raise SpecError("spec.table is required: the name of an OffloadTable in this namespace")
    bounds = []
    for key in ("from", "to"):
        value = spec.get(key)
        if not value:
            raise SpecError(f"spec.{key} is required (an RFC 3339 date-time)")
        try:
            bounds.append(parse_timestamp(str(value)))
        except ValueError as exc:
            raise SpecError(f"spec.{key}: {exc}") from None
    allow = spec.get("allowDeletes", False)
    if not isinstance(allow, bool):
        raise SpecError(f"spec.allowDeletes: expected true or false, got {allow!r}")
    return BackfillSpec(table, bounds[0], bounds[1], str(spec.get("reason") or ""), allow)


def backfill_run_name(name: str, uid: str) -> str:
    """The backfill's SparkApplication: deterministic, so it is never submitted twice, and
    another per object (a backfill deleted and created again under its name runs again). At
    most 58 characters, as a table's run names (runs.run_name)."""
    head = name if len(name) <= 44 else f"{name[:37].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
    return f"{head}-bf-{uid.replace('-', '')[:8]}"


@dataclass(frozen=True)
class RetentionRead:
    """ClickHouse's TTL of the table's source as read: None keeps every row; error: unreadable."""

    ttl: timedelta | None = None
    error: str | None = None


@dataclass(frozen=True)
class AppState:
    """A SparkApplication of the table, as far as a backfill cares."""

    name: str
    state: str = ""
    backfill_of: str | None = None  # the table, for a backfill's run
    generation: int = 0
    terminated: datetime | None = None
    error: str = ""
    maintenance_of: str | None = None  # the table, for a maintenance run

    @property
    def finished(self) -> bool:
        return self.state in SUCCEEDED_STATES or self.state in FAILED_STATES


@dataclass(frozen=True)
class Progress:
    """What the backfill's commits in the table's lineage hold (iceberg_io.backfill_progress)."""

    commits: int
    rows: int


@dataclass(frozen=True)
class Observed:
    name: str
    uid: str
    generation: int
    now: datetime
    spec: BackfillSpec | None
    spec_error: str | None = None
    status: BackfillStatus = field(default_factory=BackfillStatus)
    table_found: bool = True
    table_spec: OffloadTableSpec | None = None
    table_error: str | None = None  # why the table's spec or catalog cannot be used now
    watermark: Watermark | None = None  # the table's committed watermark, from its status
    apps: Sequence[AppState] = ()  # the table's SparkApplications, its backfills' included
    retention: RetentionRead | None = None  # None: not read (not needed yet)
    progress: Progress | None = None  # None: not read, or unreadable now

    @property
    def table_name(self) -> str:
        return self.spec.table if self.spec else ""

    @property
    def run_name(self) -> str:
        return backfill_run_name(self.name, self.uid)

    @property
    def run(self) -> AppState | None:
        return next((a for a in self.apps if a.name == self.run_name), None)


@dataclass(frozen=True)
class BackfillPlan:
    """The SparkApplication to create."""

    name: str
    backfill: str
    lower: datetime
    upper: datetime
    allow_deletes: bool
    bucket: timedelta
    generation: int
    reason: str = ""


@dataclass
class Decision:
    status: BackfillStatus
    create: BackfillPlan | None = None
    events: list[Event] = field(default_factory=list)
    needs_retention: bool = False  # decide again with Observed.retention read


def _set(status: BackfillStatus, observed: Observed, phase: Phase, reason: Reason, message: str) -> BackfillStatus:
    conditions = status.conditions
    for condition in conditions_for(phase, reason, message):
        conditions = set_condition(conditions, condition, observed.now, observed.generation)
    return replace(status, phase=phase, message=message, conditions=conditions)


def _moved(decision: Decision, observed: Observed, event: Event) -> None:
    """An event, only when the phase changes (a repeated tick posts nothing)."""
    if decision.status.phase is not observed.status.phase:
        decision.events.append(event)


def decide(observed: Observed) -> Decision:
    """The next step for one backfill. See the module docstring."""
    status = replace(observed.status, observed_generation=observed.generation)
    decision = Decision(status)
    if observed.status.phase.terminal:
        return decision  # Succeeded and Failed are final: a new range is a new OffloadBackfill
    if observed.status.spark_application or observed.run is not None:
        _follow(decision, observed)
    else:
        _start(decision, observed)
    return decision


# --- before the run ------------------------------------------------------------------------


def _refuse(decision: Decision, observed: Observed, reason: Reason, message: str) -> None:
    decision.status = replace(_set(decision.status, observed, Phase.FAILED, reason, message), finished_at=observed.now)
    _moved(decision, observed, Event("Warning", "Refused", f"{reason.value}: {message}"))


def _hold(decision: Decision, observed: Observed, phase: Phase, reason: Reason, message: str) -> None:
    decision.status = _set(decision.status, observed, phase, reason, message)
    if phase is Phase.WAITING:
        _moved(decision, observed, Event("Normal", "Waiting", message))


def range_refusal(
    lower: datetime, upper: datetime, watermark: Watermark | None, horizon: datetime | None, allow_deletes: bool
) -> tuple[Reason, str] | None:
    """Why the range may not be backfilled, in the job's own words (core.repair.check_backfill)."""
    try:
        repair.check_backfill(lower, upper, watermark, horizon, allow_deletes=allow_deletes)
    except repair.RepairError as exc:
        if upper <= lower:
            return Reason.INVALID_RANGE, str(exc)
        if watermark is None or upper > repair.audited_upper(watermark):
            return Reason.BEYOND_WATERMARK, str(exc)
        return Reason.BEFORE_RETENTION, str(exc)
    return None


def _busy(observed: Observed) -> tuple[Reason, str] | None:
    """Another run of the table in flight: the table's own, its maintenance, or another backfill's."""
    active = [a for a in observed.apps if not a.finished and a.name != observed.run_name]
    runs = sorted(a.name for a in active if a.backfill_of is None and a.maintenance_of is None)
    if runs:
        return Reason.TABLE_RUN_ACTIVE, f"waits for the run of OffloadTable {observed.table_name} to finish: {runs[0]}"
    maintenance = sorted(a.name for a in active if a.maintenance_of is not None)
    if maintenance:
        table = observed.table_name
        return (
            Reason.MAINTENANCE_ACTIVE,
            f"waits for the maintenance of OffloadTable {table} to finish: {maintenance[0]}",
        )
    others = sorted(a.name for a in active)
    if others:
        return Reason.BACKFILL_ACTIVE, f"waits for another backfill of {observed.table_name} to finish: {others[0]}"
    return None


def _start(decision: Decision, observed: Observed) -> None:
    spec = observed.spec
    if spec is None:
        _refuse(decision, observed, Reason.INVALID_SPEC, observed.spec_error or "invalid spec")
        return
    if spec.upper <= spec.lower:  # refused before anything is looked up
        inverted = range_refusal(spec.lower, spec.upper, None, None, False)
        _refuse(decision, observed, *(inverted or (Reason.INVALID_RANGE, "'to' must be after 'from'")))
        return
    if not observed.table_found:
        message = f"OffloadTable {spec.table} does not exist in this namespace"
        _refuse(decision, observed, Reason.TABLE_NOT_FOUND, message)
        return
    refusal = range_refusal(spec.lower, spec.upper, observed.watermark, None, spec.allow_deletes)
    if refusal is not None:
        _refuse(decision, observed, *refusal)
        return
    if observed.table_spec is None:
        message = f"OffloadTable {spec.table} cannot run now: {observed.table_error or 'invalid spec'}"
        _hold(decision, observed, Phase.PENDING, Reason.TABLE_NOT_READY, message)
        return
    busy = _busy(observed)
    if busy is not None:
        _hold(decision, observed, Phase.WAITING, *busy)
        return
    if observed.retention is None:
        decision.needs_retention = True
        return
    if observed.retention.error is not None:
        message = f"cannot read ClickHouse's TTL of the source: {observed.retention.error}; retrying"
        _hold(decision, observed, Phase.PENDING, Reason.RETENTION_UNKNOWN, message)
        return
    horizon = repair.retention_horizon(utc(observed.now), observed.retention.ttl)
    refusal = range_refusal(spec.lower, spec.upper, observed.watermark, horizon, spec.allow_deletes)
    if refusal is not None:
        _refuse(decision, observed, *refusal)
        return
    _launch(decision, observed, spec)


def _launch(decision: Decision, observed: Observed, spec: BackfillSpec) -> None:
    # The table's audit bucket: a backfill replaces the buckets its table's runs audit.
    bucket = (observed.table_spec.late_data if observed.table_spec else DEFAULT_POLICY).bucket
    plan = BackfillPlan(
        name=observed.run_name,
        backfill=observed.name,
        lower=spec.lower,
        upper=spec.upper,
        allow_deletes=spec.allow_deletes,
        bucket=bucket,
        generation=observed.generation,
        reason=spec.reason,
    )
    buckets = len(audit.plan_buckets(spec.lower, spec.upper, bucket))
    status = _set(decision.status, observed, Phase.RUNNING, Reason.RUNNING, _running(plan.name, "", _counts(0, 0)))
    decision.status = replace(
        status, started_at=observed.now, spark_application=plan.name, buckets_total=buckets, commits=0, rows_written=0
    )
    decision.create = plan
    why = f" ({spec.reason})" if spec.reason else ""
    span = f"[{format_timestamp(spec.lower)}, {format_timestamp(spec.upper)})"
    message = f"started {plan.name}: {spec.table} {span}, {buckets} buckets{why}"
    decision.events.append(Event("Normal", "Started", message))


def _counts(commits: int | None, rows: int | None) -> str:
    return f"{commits or 0} commits, {rows or 0} rows written"


def _running(run: str, state: str, counts: str) -> str:
    return f"{run} is {state or 'submitted'} ({counts})"


# --- the run -------------------------------------------------------------------------------


def _follow(decision: Decision, observed: Observed) -> None:
    run = observed.run
    status = decision.status
    if observed.progress is not None:
        status = replace(status, commits=observed.progress.commits, rows_written=observed.progress.rows)
    if status.spark_application is None and run is not None:
        status = replace(status, spark_application=run.name, started_at=status.started_at or observed.now)
    if run is not None and observed.generation > run.generation:
        conditions = set_condition(
            status.conditions, spec_changed(run.generation, observed.generation), observed.now, observed.generation
        )
        status = replace(status, conditions=conditions)
    decision.status = status
    counts = _counts(status.commits, status.rows_written)
    if run is None:
        message = f"SparkApplication {status.spark_application} disappeared before it finished ({counts})"
        decision.status = replace(
            _set(status, observed, Phase.FAILED, Reason.RUN_VANISHED, message), finished_at=observed.now
        )
        _moved(decision, observed, Event("Warning", "Failed", message))
    elif run.state in FAILED_STATES:
        message = f"{run.name} failed: {run.error or run.state} ({counts}; what it committed stays, run it again)"
        finished = run.terminated or observed.now
        decision.status = replace(
            _set(status, observed, Phase.FAILED, Reason.RUN_FAILED, message), finished_at=finished
        )
        _moved(decision, observed, Event("Warning", "Failed", message))
    elif run.state in SUCCEEDED_STATES and (observed.progress is not None or not observed.table_found):
        # (a table deleted meanwhile leaves no Iceberg table to read: the counts seen last stay)
        message = f"the range audits equal: {counts} in {status.buckets_total or 0} buckets"
        finished = run.terminated or observed.now
        decision.status = replace(
            _set(status, observed, Phase.SUCCEEDED, Reason.SUCCEEDED, message), finished_at=finished
        )
        _moved(decision, observed, Event("Normal", "Succeeded", f"{run.name}: {message}"))
    else:
        state = "finished, its commits not read yet from Iceberg" if run.finished else run.state
        decision.status = _set(status, observed, Phase.RUNNING, Reason.RUNNING, _running(run.name, state, counts))
