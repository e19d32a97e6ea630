"""Table maintenance: what a maintenance run does (its policy) and what it reports (its record).

Pure logic: no engine, catalog or network imports. A maintenance run compacts small data
files, rewrites manifests, expires snapshots and removes orphan files, never while the table's
offload run or a backfill is in flight; the committed watermark survives every step
(docs/ARCHITECTURE.md, "Maintenance and the watermark"). Its record is kept in the table's
properties (MAINTENANCE_RECORD), where the operator reads it back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from typing import Any

# The table property holding the newest maintenance run's record (JSON).
MAINTENANCE_RECORD = "offload.maintenance.last-run"
# The snapshot summary key of a maintenance commit (compaction, manifest rewrite): its run id.
MAINTENANCE_RUN = "offload.maintenance.run-id"

DEFAULT_SCHEDULE = "17 3 * * *"
DEFAULT_MAX_SNAPSHOT_AGE = timedelta(hours=24)
DEFAULT_RETAIN_LAST = 1
DEFAULT_TARGET_FILE_SIZE = 128 * 1024 * 1024
DEFAULT_ORPHAN_AGE = timedelta(hours=72)
# Orphan removal never looks at files younger than this, whatever the spec says: a run's
# staged files are in no snapshot until it publishes, and a slow run must not lose them
# (Iceberg's remove_orphan_files procedure refuses a shorter interval for the same reason).
MIN_ORPHAN_AGE = timedelta(hours=24)


class MaintenanceError(ValueError):
    """A maintenance policy or record that cannot be used."""


@dataclass(frozen=True)
class MaintenancePolicy:
    """What one maintenance run does: snapshots older than `max_snapshot_age` are expired, but
    never the newest `retain_last` of the current lineage nor a snapshot a ref (the watermark
    tag) holds; data files are compacted towards `target_file_size` bytes; files in the table's
    location that no snapshot references and older than `orphan_age` are deleted."""

    max_snapshot_age: timedelta = DEFAULT_MAX_SNAPSHOT_AGE
    retain_last: int = DEFAULT_RETAIN_LAST
    target_file_size: int = DEFAULT_TARGET_FILE_SIZE
    orphan_age: timedelta = DEFAULT_ORPHAN_AGE

    def __post_init__(self) -> None:
        if self.max_snapshot_age < timedelta(0):
            raise MaintenanceError(f"snapshot max age must not be negative, got {self.max_snapshot_age}")
        if self.retain_last < 1:
            raise MaintenanceError(f"snapshots to retain must be at least 1, got {self.retain_last}")
        if self.target_file_size < 1024 * 1024:
            raise MaintenanceError(f"target file size must be at least 1 MiB, got {self.target_file_size} bytes")
        if self.orphan_age < MIN_ORPHAN_AGE:
            raise MaintenanceError(
                f"orphan file age must be at least {MIN_ORPHAN_AGE} (a run's staged files are not yet in a "
                f"snapshot), got {self.orphan_age}"
            )


@dataclass(frozen=True)
class MaintenanceRecord:
    """What a maintenance run did, as counted by the engine."""

    run_id: str
    finished: str  # ISO-8601 UTC
    watermark: str | None = None  # the committed watermark, read before and after: unchanged
    snapshots_before: int = 0
    snapshots_after: int = 0
    snapshots_expired: int = 0
    data_files_before: int = 0
    data_files_after: int = 0
    data_files_rewritten: int = 0
    data_files_added: int = 0
    bytes_rewritten: int = 0
    manifests_rewritten: int = 0
    orphans_removed: int = 0
    files_deleted: int = 0  # data, manifest and manifest-list files the expiry deleted

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MaintenanceRecord:
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MaintenanceError(f"maintenance record is not JSON: {exc}") from exc
        if not isinstance(data, dict) or not {"run_id", "finished"} <= set(data):
            raise MaintenanceError("maintenance record lacks run_id or finished")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
