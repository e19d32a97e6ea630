"""Shared ground of the decide() tests: a spec, a clock, runs and statuses built by hand, and a
tiny in-memory cluster (`Cluster`) that carries out each Decision and feeds the status back.

The previous status is written as a plain dict the way the CRD's status schema describes it,
and read through OffloadTableStatus.from_dict, as the controller reads it from the API.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from iceberg_offload.core.repair import AuditRecord
from iceberg_offload.core.watermark import Watermark, format_timestamp
from iceberg_offload.operator.decide import (
    Decision,
    Observed,
    ObservedRun,
    Readback,
    Upstream,
    decide,
    run_name,
    run_to_record,
    schedule_slot_id,
)
from iceberg_offload.operator.spec import OffloadTableSpec, parse_spec
from iceberg_offload.operator.status import OffloadTableStatus

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAME = "trades"
BUFFER = timedelta(minutes=5)
BASE_SPEC: dict[str, Any] = {
    "layer": "silver",
    "source": {"table": "trades", "timestampColumn": "ts", "connection": {"host": "clickhouse"}},
    "target": {"catalogRef": {"name": "iceberg-catalog"}, "table": "trades"},
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2024, 3, 1, hour, minute, second, tzinfo=UTC)


CREATED = at(12, 7)  # the OffloadTable's creationTimestamp; default schedule */15 in UTC
SLOT1 = at(12, 15)
SLOT2 = at(12, 30)


def make_spec(**fields: Any) -> OffloadTableSpec:
    return parse_spec(NAME, {**BASE_SPEC, **fields})


SPEC = make_spec()
REPLACE = make_spec(concurrencyPolicy="Replace")
SUSPENDED = make_spec(suspend=True)


def ts(value: datetime) -> str:
    """The status's date-time form (second precision, Z)."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def srun(
    slot: datetime,
    attempt: int = 1,
    *,
    created: datetime | None = None,
    state: str = "RUNNING",
    ended: datetime | None = None,
    error: str = "",
    generation: int = 1,
) -> ObservedRun:
    """A scheduled run's SparkApplication as the controller reads it back."""
    return ObservedRun(
        name=run_name(NAME, schedule_slot_id(slot), attempt),
        slot=schedule_slot_id(slot),
        attempt=attempt,
        generation=generation,
        window_to=slot - BUFFER,
        created=created or slot + timedelta(seconds=1),
        state=state,
        terminated=ended,
        error=error,
    )


def failed(run: ObservedRun, ended: datetime, error: str = "boom") -> ObservedRun:
    return replace(run, state="FAILED", terminated=ended, error=error)


def completed(run: ObservedRun, ended: datetime) -> ObservedRun:
    return replace(run, state="COMPLETED", terminated=ended)


def record(run: ObservedRun, outcome: str, **extra: Any) -> dict[str, Any]:
    """A status.activeRun / status.lastRun entry as the CRD describes it."""
    entry: dict[str, Any] = {
        "name": run.name,
        "slot": run.slot,
        "attempt": run.attempt,
        "generation": run.generation,
        "windowTo": format_timestamp(run.window_to),
        "outcome": outcome,
        "startTime": ts(run.created),
    }
    if run.terminated is not None:
        entry["completionTime"] = ts(run.terminated)
    entry.update(extra)
    return entry


def running_status(run: ObservedRun, slot: datetime = SLOT1, **more: Any) -> dict[str, Any]:
    return {"observedGeneration": 1, "lastScheduleTime": ts(slot), "activeRun": record(run, "Running"), **more}


def failed_status(run: ObservedRun, failures: int, slot: datetime = SLOT1, **more: Any) -> dict[str, Any]:
    assert run.terminated is not None
    return {
        "observedGeneration": 1,
        "lastScheduleTime": ts(slot),
        "activeRun": None,
        "lastRun": record(run, "Failed", rows=0, message=run.error),
        "consecutiveFailures": failures,
        "lastError": run.error,
        "lastFailureTime": ts(run.terminated),
        **more,
    }


def observe(
    now: datetime,
    *,
    spec: OffloadTableSpec | None = SPEC,
    status: Mapping[str, Any] | None = None,
    runs: tuple[ObservedRun, ...] = (),
    generation: int = 1,
    created: datetime = CREATED,
    **extra: Any,
) -> Observed:
    return Observed(
        name=NAME,
        generation=generation,
        created=created,
        now=now,
        spec=spec,
        status=OffloadTableStatus.from_dict(status),
        runs=runs,
        **extra,
    )


def body(decision: Decision) -> dict[str, Any]:
    """The decision's status as it is written."""
    return decision.status.to_dict()


def conditions(decision: Decision) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body(decision)["conditions"]}


def outcomes(decision: Decision) -> list[str]:
    return [done.outcome for done in decision.finished]


# The story of slot 12:15: attempt 1 starts 12:15:01 and fails 12:20, attempt 2 starts 12:21:01
# (after the 60 s delay) and fails 12:25, attempt 3 starts 12:26:01 and fails 12:28.
N1, N2, N3, N4 = (f"trades-202403011215-{n}" for n in (1, 2, 3, 4))
R1 = srun(SLOT1)
R1_OK = completed(R1, at(12, 20))
R1_FAILED = failed(R1, at(12, 20))
R2 = srun(SLOT1, 2, created=at(12, 21, 1))
R2_FAILED = failed(R2, at(12, 25))
R3 = srun(SLOT1, 3, created=at(12, 26, 1))
R3_FAILED = failed(R3, at(12, 28), error="boom again")
EXHAUSTED = failed_status(
    R3_FAILED,
    3,
    conditions=[
        {
            "type": "Ready",
            "status": "False",
            "reason": "RetriesExhausted",
            "message": "...",
            "lastTransitionTime": ts(at(12, 28)),
        }
    ],
)
TRIGGER = "run-now-1"
MANUAL_SLOT = "m" + hashlib.sha256(TRIGGER.encode()).hexdigest()[:10]
UPSTREAM = make_spec(dependsOn=["bronze-trades"])


def upstream_at(mark: datetime | None) -> dict[str, Upstream]:
    return {"bronze-trades": Upstream(True, Watermark(mark, 3) if mark else None)}


@dataclass
class Cluster:
    """The API server as far as one OffloadTable is concerned: its status and SparkApplications."""

    spec: OffloadTableSpec | None = SPEC
    generation: int = 1
    status: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, ObservedRun] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    trigger: str | None = None
    upstream: dict[str, Upstream] = field(default_factory=dict)
    rows: int | None = 10  # rows_added the Iceberg readback reports for a COMPLETED run
    audits: dict[str, AuditRecord] = field(default_factory=dict)  # run -> the audit its commits recorded

    def observe(self, now: datetime) -> Observed:
        observed = Observed(
            name=NAME,
            generation=self.generation,
            created=CREATED,
            now=now,
            spec=self.spec,
            status=OffloadTableStatus.from_dict(self.status),
            runs=tuple(self.runs.values()),
            upstream=self.upstream,
            trigger=self.trigger,
        )
        done = run_to_record(observed)
        if done is not None and done.succeeded:  # the controller reads Iceberg back for a success
            readback = Readback(Watermark(done.window_to), self.rows, 100, self.audits.get(done.name))
            observed = replace(observed, readback=readback)
        return observed

    def tick(self, now: datetime, *, act: bool = True) -> Decision:
        decision = decide(self.observe(now))
        if act:
            self.apply(decision, now)
        return decision

    def apply(self, decision: Decision, now: datetime) -> None:
        for name in decision.delete:
            self.runs.pop(name, None)
        if decision.create is not None:
            plan = decision.create
            assert plan.name not in self.created, f"{plan.name} created twice"
            self.created.append(plan.name)
            self.runs[plan.name] = ObservedRun(plan.name, plan.slot, plan.attempt, plan.generation, plan.window_to, now)
        self.status = decision.status.to_dict()

    def finish(self, name: str, state: str, when: datetime, error: str = "boom") -> None:
        self.runs[name] = replace(
            self.runs[name], state=state, terminated=when, error=error if state != "COMPLETED" else ""
        )

    def active(self) -> list[str]:
        return [r.name for r in self.runs.values() if not r.finished]

    def condition(self, type_: str) -> tuple[str, str]:
        cond = next(c for c in self.status["conditions"] if c["type"] == type_)
        return cond["status"], cond["reason"]


def started(decision: Decision) -> str:
    assert decision.create is not None, "no run started"
    return decision.create.name
