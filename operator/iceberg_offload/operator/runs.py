"""A table's runs: their SparkApplications as observed, their names, and which of them the
status has recorded.

Pure logic. Each run is one SparkApplication, named after its table, schedule slot and attempt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from iceberg_offload.core.watermark import utc
from iceberg_offload.operator.status import RunRecord

SUCCEEDED_STATES = frozenset({"COMPLETED"})
FAILED_STATES = frozenset({"FAILED", "SUBMISSION_FAILED"})
TRIGGER_ANNOTATION = "offload.k2.io/trigger"
LABEL_TABLE = "offload.k2.io/table"
LABEL_SLOT = "offload.k2.io/slot"
LABEL_ATTEMPT = "offload.k2.io/attempt"
LABEL_GENERATION = "offload.k2.io/generation"
ANNOTATION_WINDOW_TO = "offload.k2.io/window-to"
# A backfill's SparkApplication carries its table's label too (`kubectl get sparkapplications -l
# offload.k2.io/table=...` lists them all), and these: the table's reconciler leaves it alone.
LABEL_BACKFILL_OF = "offload.k2.io/backfill-of"
LABEL_BACKFILL = "offload.k2.io/backfill"
# A maintenance run's SparkApplication (operator/maintenance.py) carries the table's label too, and
# this one: it is not one of the table's runs, but it holds the table's runs and backfills back.
LABEL_MAINTENANCE_OF = "offload.k2.io/maintenance-of"
MAINTAIN_ANNOTATION = "offload.k2.io/maintain-now"


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
class RunPlan:
    """A SparkApplication to create."""

    name: str
    slot: str
    attempt: int
    generation: int
    window_to: datetime


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


def maintenance_name(table: str, slot: str) -> str:
    """A maintenance run's SparkApplication: one per schedule slot (or manual trigger), so two
    reconciles never create two. At most 57 characters, as run_name."""
    return f"{_short(table, 40)}-mt-{slot}"


def table_label(table: str) -> str:
    """The value of the offload.k2.io/table label (label values hold at most 63 characters)."""
    return _short(table, 63)


def schedule_slot_id(slot: datetime) -> str:
    return utc(slot).strftime("%Y%m%d%H%M")


def manual_slot_id(trigger: str) -> str:
    return "m" + hashlib.sha256(trigger.encode()).hexdigest()[:10]


def newer_than_recorded(run: ObservedRun, last: RunRecord | None) -> bool:
    if last is None:
        return True
    if last.name == run.name:
        return False
    return run.order > last.order


def finished_unrecorded(runs: Sequence[ObservedRun], last: RunRecord | None) -> list[ObservedRun]:
    """Finished runs newer than the last recorded one, oldest first: all of them are recorded,
    so a failure is counted even if the status write of the tick that saw it was lost."""
    return sorted((r for r in runs if r.finished and newer_than_recorded(r, last)), key=lambda r: r.order)


def in_flight(runs: Sequence[ObservedRun], last: RunRecord | None) -> ObservedRun | None:
    """The newest run not finished and newer than the last recorded one."""
    active = sorted((r for r in runs if not r.finished and newer_than_recorded(r, last)), key=lambda r: r.order)
    return active[-1] if active else None


def history_cleanup(runs: Sequence[ObservedRun], deleting: Sequence[str], keep_ok: int, keep_failed: int) -> list[str]:
    """The finished runs beyond the history limits, newest kept."""
    finished = sorted((r for r in runs if r.finished and r.name not in deleting), key=lambda r: r.order, reverse=True)
    ok = [r.name for r in finished if r.succeeded][keep_ok:]
    failed = [r.name for r in finished if not r.succeeded][keep_failed:]
    return ok + failed
