"""The OffloadTable status, typed (crds/offloadtables.offload.k2.io.yaml, status), and the patch
that writes it.

Pure logic. `from_dict` reads a status as the API returns it; `to_dict` gives the dict the
operator writes, key for key as the CRD's status schema names them. Date-times are kept to the
second, as the status writes them, so a status read back decides exactly like the one written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from iceberg_offload.core.mirror import scrub
from iceberg_offload.core.repair import LateDataMode
from iceberg_offload.core.result import RunOutcome
from iceberg_offload.core.watermark import Watermark, format_timestamp, parse_timestamp, utc
from iceberg_offload.operator.maintenance_status import StatusMaintenance

T = TypeVar("T")


def format_time(value: datetime) -> str:
    """The status's date-time form: UTC, whole seconds, a 'Z'."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _second(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value).replace(microsecond=0)


def _time(value: Any) -> datetime | None:
    return parse_timestamp(str(value)) if value else None


def _some(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The pairs whose value is set: the status leaves unset fields out."""
    return {key: value for key, value in pairs if value is not None}


def _or_none(value: T | None, convert: Callable[[T], Any]) -> Any:
    return None if value is None else convert(value)


@dataclass(frozen=True)
class StatusWatermark:
    """status.watermark: the committed watermark read back from the Iceberg table: every row
    before `timestamp` is offloaded. `sequence` is set only while the newest commit is one of the
    first protocol version (rows at `timestamp` up to that sequence are offloaded too)."""

    timestamp: datetime
    sequence: int | None = None

    @classmethod
    def of(cls, mark: Watermark) -> StatusWatermark:
        return cls(mark.timestamp, mark.sequence)

    @property
    def mark(self) -> Watermark:
        return Watermark(self.timestamp, self.sequence)

    def __str__(self) -> str:
        return str(self.mark)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StatusWatermark | None:
        if not data or not data.get("timestamp"):
            return None
        sequence = data.get("sequence")
        return cls(parse_timestamp(str(data["timestamp"])), None if sequence is None else int(sequence))

    def to_dict(self) -> dict[str, Any]:
        return {"timestamp": format_timestamp(self.timestamp), "sequence": self.sequence}


@dataclass(frozen=True)
class RunRecord:
    """status.activeRun / status.lastRun: one run as the status records it."""

    name: str
    slot: str
    attempt: int
    generation: int
    window_to: datetime
    outcome: RunOutcome
    start_time: datetime
    rows: int | None = None
    completion_time: datetime | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_time", _second(self.start_time))
        object.__setattr__(self, "completion_time", _second(self.completion_time))

    @property
    def order(self) -> tuple[datetime, int, str]:
        """Where the run stands among the table's runs (ObservedRun.order, to the second)."""
        return (self.start_time, self.attempt, self.name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RunRecord | None:
        if not data or not data.get("startTime"):
            return None
        return cls(
            name=str(data["name"]),
            slot=str(data.get("slot") or ""),
            attempt=int(data.get("attempt") or 0),
            generation=int(data.get("generation") or 0),
            window_to=parse_timestamp(str(data.get("windowTo") or data["startTime"])),
            outcome=RunOutcome(data.get("outcome") or RunOutcome.RUNNING),
            start_time=parse_timestamp(str(data["startTime"])),
            rows=_or_none(data.get("rows"), int),
            completion_time=_time(data.get("completionTime")),
            message=_or_none(data.get("message"), str),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slot": self.slot,
            "attempt": self.attempt,
            "generation": self.generation,
            "windowTo": format_timestamp(self.window_to),
            "outcome": self.outcome.value,
            "startTime": format_time(self.start_time),
            **_some(
                (
                    ("rows", self.rows),
                    ("completionTime", _or_none(self.completion_time, format_time)),
                    ("message", self.message),
                )
            ),
        }


@dataclass(frozen=True)
class StatusAudit:
    """status.audit: the newest late-data audit a run recorded (core.repair.AuditRecord), over
    [lower, upper). `buckets_differing` is what is still not equal: the buckets the audit found
    differing minus those the run repaired; the row counts are the audit's findings."""

    mode: LateDataMode
    last_audit_time: datetime
    lower: datetime
    upper: datetime
    buckets_checked: int
    buckets_differing: int
    rows_missing: int
    rows_extra: int
    buckets_repaired: int
    rows_repaired: int
    late_rows: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "last_audit_time", _second(self.last_audit_time))

    @property
    def in_sync(self) -> bool:
        return self.buckets_differing == 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StatusAudit | None:
        if not data or not data.get("lastAuditTime"):
            return None
        return cls(
            mode=LateDataMode(data.get("mode") or LateDataMode.REPAIR),
            last_audit_time=parse_timestamp(str(data["lastAuditTime"])),
            lower=parse_timestamp(str(data.get("from") or data["lastAuditTime"])),
            upper=parse_timestamp(str(data.get("to") or data["lastAuditTime"])),
            **{name: int(data.get(key) or 0) for name, key in _AUDIT_COUNTS.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "lastAuditTime": format_time(self.last_audit_time),
            "from": format_timestamp(self.lower),
            "to": format_timestamp(self.upper),
            **{key: getattr(self, name) for name, key in _AUDIT_COUNTS.items()},
        }


_AUDIT_COUNTS = {
    "buckets_checked": "bucketsChecked",
    "buckets_differing": "bucketsDiffering",
    "rows_missing": "rowsMissing",
    "rows_extra": "rowsExtra",
    "buckets_repaired": "bucketsRepaired",
    "rows_repaired": "rowsRepaired",
    "late_rows": "lateRows",
}


@dataclass(frozen=True)
class Condition:
    """One of status.conditions (conditions.py builds the operator's own)."""

    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = None
    observed_generation: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "last_transition_time", _second(self.last_transition_time))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        return cls(
            type=str(data.get("type") or ""),
            status=str(data.get("status") or "Unknown"),
            reason=_or_none(data.get("reason"), str),
            message=_or_none(data.get("message"), str),
            last_transition_time=_time(data.get("lastTransitionTime")),
            observed_generation=_or_none(data.get("observedGeneration"), int),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            **_some(
                (
                    ("reason", self.reason),
                    ("message", self.message),
                    ("lastTransitionTime", _or_none(self.last_transition_time, format_time)),
                    ("observedGeneration", self.observed_generation),
                )
            ),
        }


@dataclass(frozen=True)
class OffloadTableStatus:
    """What the operator observed of one OffloadTable; written by the operator only."""

    observed_generation: int | None = None
    watermark: StatusWatermark | None = None
    row_count: int | None = None
    last_successful_run: datetime | None = None
    last_run_duration_seconds: float | None = None
    consecutive_failures: int | None = None
    last_error: str | None = None
    last_failure_time: datetime | None = None
    last_schedule_time: datetime | None = None
    next_run: datetime | None = None
    last_trigger: str | None = None
    active_run: RunRecord | None = None
    last_run: RunRecord | None = None
    conditions: tuple[Condition, ...] = ()
    audit: StatusAudit | None = None
    maintenance: StatusMaintenance | None = None
    # The target's newest schema evolution, as its commit recorded it (summary, time, run).
    last_schema_change: str | None = None

    def __post_init__(self) -> None:
        for name in ("last_successful_run", "last_failure_time", "last_schedule_time", "next_run"):
            object.__setattr__(self, name, _second(getattr(self, name)))

    @property
    def failures(self) -> int:
        return self.consecutive_failures or 0

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> OffloadTableStatus:
        data = data or {}
        return cls(
            observed_generation=_or_none(data.get("observedGeneration"), int),
            watermark=StatusWatermark.from_dict(data.get("watermark")),
            row_count=_or_none(data.get("rowCount"), int),
            last_successful_run=_time(data.get("lastSuccessfulRun")),
            last_run_duration_seconds=_or_none(data.get("lastRunDurationSeconds"), float),
            consecutive_failures=_or_none(data.get("consecutiveFailures"), int),
            last_error=_or_none(data.get("lastError"), str),
            last_failure_time=_time(data.get("lastFailureTime")),
            last_schedule_time=_time(data.get("lastScheduleTime")),
            next_run=_time(data.get("nextRun")),
            last_trigger=_or_none(data.get("lastTrigger"), str),
            active_run=RunRecord.from_dict(data.get("activeRun")),
            last_run=RunRecord.from_dict(data.get("lastRun")),
            conditions=tuple(Condition.from_dict(c) for c in data.get("conditions") or ()),
            audit=StatusAudit.from_dict(data.get("audit")),
            maintenance=StatusMaintenance.from_dict(data.get("maintenance")),
            last_schema_change=_or_none(data.get("lastSchemaChange"), str),
        )

    def to_dict(self) -> dict[str, Any]:
        """The status as written: the run in flight and the next run always (None clears them),
        the rest once known."""
        times = {
            "lastSuccessfulRun": self.last_successful_run,
            "lastFailureTime": self.last_failure_time,
            "lastScheduleTime": self.last_schedule_time,
        }
        return {
            "observedGeneration": self.observed_generation,
            **_some(
                (
                    ("watermark", _or_none(self.watermark, StatusWatermark.to_dict)),
                    ("rowCount", self.row_count),
                    ("lastRunDurationSeconds", self.last_run_duration_seconds),
                    ("consecutiveFailures", self.consecutive_failures),
                    ("lastError", self.last_error),
                    ("lastTrigger", self.last_trigger),
                    ("lastRun", _or_none(self.last_run, RunRecord.to_dict)),
                    ("audit", _or_none(self.audit, StatusAudit.to_dict)),
                    ("maintenance", _or_none(self.maintenance, StatusMaintenance.to_dict)),
                    ("lastSchemaChange", self.last_schema_change),
                    *((key, _or_none(value, format_time)) for key, value in times.items()),
                )
            ),
            "activeRun": _or_none(self.active_run, RunRecord.to_dict),
            "nextRun": _or_none(self.next_run, format_time),
            "conditions": [c.to_dict() for c in self.conditions],
        }


def _map_text(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, Enum | datetime):
        return value
    if isinstance(value, str):
        return change(value)
    if isinstance(value, tuple):
        return tuple(_map_text(v, change) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _map_text(getattr(value, f.name), change) for f in fields(value)})
    return value


def masked(status: OffloadTableStatus, secrets: Iterable[str]) -> OffloadTableStatus:
    """The status with secret values masked in every text it carries (errors, messages, names)."""
    known = list(secrets)
    result: OffloadTableStatus = _map_text(status, lambda text: scrub(text, known))
    return result


def status_patch(previous: Mapping[str, Any], status: OffloadTableStatus) -> dict[str, Any]:
    """The status patch that replaces `previous` (the status as read) with `status`: a key the
    status no longer has is removed (None), and so is a cleared value (lastError "" after a
    success) rather than written as "": kube-apiserver builds whose OpenAPI validator treats ""
    as null (1.20 built with Go >= 1.18, as in the e2e harness) reject the whole patch otherwise."""
    body = status.to_dict()
    patch: dict[str, Any] = {key: None for key in previous if key not in body}
    patch.update({key: None if value == "" else value for key, value in body.items()})
    return patch
