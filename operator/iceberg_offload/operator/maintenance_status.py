"""status.maintenance of an OffloadTable, typed: the table's newest maintenance run and what it did.

Pure logic. The figures come from the run's MaintenanceRecord (core/maintenance.py), read back
from the Iceberg table's properties when the record's run id is the finished run's name.
`to_dict` names every key, a cleared one as None: the status patch is a merge patch, in which
a key left out would keep its old value (an old error after a success).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from iceberg_offload.core.maintenance import MaintenanceRecord
from iceberg_offload.core.watermark import parse_timestamp, utc


class MaintenanceOutcome(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# The record's figures in the status: field of StatusMaintenance and MaintenanceRecord -> key.
FIGURES = {
    "snapshots_expired": "snapshotsExpired",
    "data_files_rewritten": "dataFilesRewritten",
    "data_files_added": "dataFilesAdded",
    "bytes_rewritten": "bytesRewritten",
    "orphans_removed": "orphansRemoved",
    "snapshots_after": "snapshotsAfter",
    "data_files_after": "dataFilesAfter",
}
_TIMES = {
    "last_start_time": "lastStartTime",
    "last_finish_time": "lastFinishTime",
    "next_run": "nextRun",
    "last_schedule_time": "lastScheduleTime",
}


def _second(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value).replace(microsecond=0)


def _format(value: datetime | None) -> str | None:
    return None if value is None else utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class StatusMaintenance:
    last_run: str | None = None  # the SparkApplication of the newest maintenance run
    outcome: MaintenanceOutcome | None = None
    last_start_time: datetime | None = None
    last_finish_time: datetime | None = None
    next_run: datetime | None = None
    last_schedule_time: datetime | None = None  # the newest schedule slot a run was started for
    last_trigger: str | None = None  # the last offload.k2.io/maintain-now value handled
    error: str | None = None
    snapshots_expired: int | None = None
    data_files_rewritten: int | None = None
    data_files_added: int | None = None
    bytes_rewritten: int | None = None
    orphans_removed: int | None = None
    snapshots_after: int | None = None
    data_files_after: int | None = None

    def __post_init__(self) -> None:
        for name in _TIMES:
            object.__setattr__(self, name, _second(getattr(self, name)))

    def with_record(self, record: MaintenanceRecord | None) -> StatusMaintenance:
        """The figures of `record`; all cleared without one (they would be another run's)."""
        return replace(self, **{name: getattr(record, name) if record else None for name in FIGURES})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StatusMaintenance | None:
        if not data:
            return None
        outcome = data.get("outcome")
        times: dict[str, Any] = {
            name: parse_timestamp(str(data[key])) if data.get(key) else None for name, key in _TIMES.items()
        }
        return cls(
            last_run=str(data["lastRun"]) if data.get("lastRun") else None,
            outcome=MaintenanceOutcome(outcome) if outcome else None,
            last_trigger=str(data["lastTrigger"]) if data.get("lastTrigger") else None,
            error=str(data["error"]) if data.get("error") else None,
            **times,
            **{name: _int(data.get(key)) for name, key in FIGURES.items()},  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "lastRun": self.last_run,
            "outcome": self.outcome.value if self.outcome else None,
            "lastTrigger": self.last_trigger,
            "error": self.error or None,
            **{key: _format(getattr(self, name)) for name, key in _TIMES.items()},
            **{key: getattr(self, name) for name, key in FIGURES.items()},
        }
