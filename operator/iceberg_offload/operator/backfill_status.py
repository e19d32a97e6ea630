"""The OffloadBackfill status, typed (crds/offloadbackfills.offload.k2.io.yaml, status), its
phases, its conditions and their reasons.

Pure logic. `from_dict` reads a status as the API returns it; `to_dict` gives the dict the
operator writes, key for key as the CRD's status schema names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from iceberg_offload.core.watermark import parse_timestamp
from iceberg_offload.operator.status import Condition, format_time

COMPLETE = "Complete"  # True once the range audits equal (the summary, like a Job's)
FAILED = "Failed"  # True once the backfill was refused or its run failed
SPEC_CHANGED = "SpecChanged"  # only present when the spec changed after the run started


class Phase(StrEnum):
    PENDING = "Pending"  # not started: nothing checked yet, or something it needs is unavailable
    WAITING = "Waiting"  # not started: another run of the table holds it
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class Reason(StrEnum):
    """Every reason an OffloadBackfill condition gives."""

    PENDING = "Pending"
    TABLE_RUN_ACTIVE = "TableRunActive"
    BACKFILL_ACTIVE = "BackfillActive"
    MAINTENANCE_ACTIVE = "MaintenanceActive"
    TABLE_NOT_READY = "TableNotReady"
    RETENTION_UNKNOWN = "RetentionUnknown"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    NOT_FAILED = "NotFailed"
    # refusals: the backfill never starts
    INVALID_SPEC = "InvalidSpec"
    TABLE_NOT_FOUND = "TableNotFound"
    INVALID_RANGE = "InvalidRange"
    BEYOND_WATERMARK = "BeyondWatermark"
    BEFORE_RETENTION = "BeforeRetention"
    # the run
    RUN_FAILED = "RunFailed"
    RUN_VANISHED = "RunVanished"
    SPEC_CHANGED_AFTER_START = "SpecChangedAfterStart"


REFUSALS = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.TABLE_NOT_FOUND,
        Reason.INVALID_RANGE,
        Reason.BEYOND_WATERMARK,
        Reason.BEFORE_RETENTION,
    }
)


def _time(value: Any) -> datetime | None:
    return parse_timestamp(str(value)) if value else None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class BackfillStatus:
    """What the operator observed of one OffloadBackfill; written by the operator only."""

    phase: Phase = Phase.PENDING
    message: str | None = None
    observed_generation: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    buckets_total: int | None = None
    commits: int | None = None
    rows_written: int | None = None
    spark_application: str | None = None
    conditions: tuple[Condition, ...] = ()

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> BackfillStatus:
        data = data or {}
        phase = str(data.get("phase") or "")
        return cls(
            phase=Phase(phase) if phase in {p.value for p in Phase} else Phase.PENDING,
            message=None if data.get("message") is None else str(data["message"]),
            observed_generation=_int(data.get("observedGeneration")),
            started_at=_time(data.get("startedAt")),
            finished_at=_time(data.get("finishedAt")),
            buckets_total=_int(data.get("bucketsTotal")),
            commits=_int(data.get("commits")),
            rows_written=_int(data.get("rowsWritten")),
            spark_application=data.get("sparkApplication") or None,
            conditions=tuple(Condition.from_dict(c) for c in data.get("conditions") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The status as written; unknown values are left out (a status patch clears them)."""
        values = {
            "phase": self.phase.value,
            "message": self.message,
            "observedGeneration": self.observed_generation,
            "startedAt": None if self.started_at is None else format_time(self.started_at),
            "finishedAt": None if self.finished_at is None else format_time(self.finished_at),
            "bucketsTotal": self.buckets_total,
            "commits": self.commits,
            "rowsWritten": self.rows_written,
            "sparkApplication": self.spark_application,
        }
        return {
            **{key: value for key, value in values.items() if value is not None and value != ""},
            "conditions": [c.to_dict() for c in self.conditions],
        }


def backfill_status_patch(previous: Mapping[str, Any], status: BackfillStatus) -> dict[str, Any]:
    """The patch that turns `previous` (the status as read) into `status`: keys gone are nulled."""
    body = status.to_dict()
    return {**{key: None for key in previous if key not in body}, **body}


# --- conditions --------------------------------------------------------------------------


def conditions_for(phase: Phase, reason: Reason, message: str) -> tuple[Condition, Condition]:
    """Complete and Failed for a phase: Complete says how far it is, Failed why it stopped."""
    if phase is Phase.SUCCEEDED:
        return (
            Condition(COMPLETE, "True", Reason.SUCCEEDED.value, message),
            Condition(FAILED, "False", Reason.NOT_FAILED.value, "the backfill succeeded"),
        )
    if phase is Phase.FAILED:
        return (
            Condition(COMPLETE, "False", reason.value, message),
            Condition(FAILED, "True", reason.value, message),
        )
    return (
        Condition(COMPLETE, "False", reason.value, message),
        Condition(FAILED, "False", Reason.NOT_FAILED.value, "not failed"),
    )


def spec_changed(started_generation: int, generation: int) -> Condition:
    return Condition(
        SPEC_CHANGED,
        "True",
        Reason.SPEC_CHANGED_AFTER_START.value,
        f"the spec changed (generation {generation}) after the backfill started with generation "
        f"{started_generation}: ignored, the backfill goes on with the spec it started with; "
        "create a new OffloadBackfill for another range",
    )
