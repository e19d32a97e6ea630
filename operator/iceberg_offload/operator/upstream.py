"""The tables a table depends on (spec.dependsOn): what they have offloaded, and how far that
lets a run of this table read.

Pure logic. A run never offloads past an upstream's committed watermark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from iceberg_offload.core.result import RunOutcome
from iceberg_offload.core.watermark import Watermark, format_timestamp
from iceberg_offload.operator.conditions import FAILING
from iceberg_offload.operator.spec import OffloadTableSpec
from iceberg_offload.operator.status import OffloadTableStatus


@dataclass(frozen=True)
class Upstream:
    """A table this one depends on: whether it exists and its committed watermark."""

    exists: bool
    watermark: Watermark | None = None
    # The upstream's last schedule slot when it has no run in flight: a table waiting for it
    # runs anyway once it has finished a slot as recent as its own, capped at its watermark.
    settled_slot: datetime | None = None


MISSING = Upstream(False)


def settled_slot(status: OffloadTableStatus) -> datetime | None:
    """The newest schedule slot the upstream is done with: it started a run for it
    (lastScheduleTime), none is in flight, and no retry is to come (the last run did not fail,
    or it failed for good). Its watermark is then as far as that slot will take it."""
    if status.last_schedule_time is None or status.active_run is not None:
        return None
    last = status.last_run
    failing = status.condition(FAILING)
    failed_for_good = failing is not None and failing.status == "True"
    if last is not None and last.outcome is RunOutcome.FAILED and not failed_for_good:
        return None  # a retry of the slot is still to come
    return status.last_schedule_time


def upstream_of(table: Mapping[str, Any] | None) -> Upstream:
    """An upstream OffloadTable as read from the API (None: it does not exist)."""
    if table is None:
        return MISSING
    status = OffloadTableStatus.from_dict(table.get("status"))
    return Upstream(True, status.watermark.mark if status.watermark else None, settled_slot(status))


@dataclass(frozen=True)
class Due:
    """A run that should start now, before the upstream tables have their say."""

    slot: str
    attempt: int
    window_to: datetime
    kind: Literal["manual", "schedule", "retry"]
    slot_time: datetime | None = None


def gate(due: Due, upstream: Mapping[str, Upstream], spec: OffloadTableSpec) -> Due | None:
    """A scheduled run starts once every upstream watermark reaches its window end, or once
    every upstream that is behind has settled a slot at least as recent (then it reads only as
    far as they got). None: wait."""
    end = due.window_to
    for name in spec.depends_on:
        up = upstream.get(name, MISSING)
        if up.watermark is not None and up.watermark.timestamp >= due.window_to:
            continue
        settled = up.settled_slot is not None and due.slot_time is not None and up.settled_slot >= due.slot_time
        if due.kind == "retry":
            settled = up.watermark is not None
        if not settled or up.watermark is None:
            return None
        end = min(end, up.watermark.timestamp)
    return replace(due, window_to=end)


def cap_by_upstream(due: Due, upstream: Mapping[str, Upstream], spec: OffloadTableSpec) -> Due:
    """A manual run goes as far as its upstream tables allow instead of waiting for them."""
    marks = [upstream[d].watermark for d in spec.depends_on if d in upstream]
    if not marks or any(m is None for m in marks):
        return due
    lowest = min(m.timestamp for m in marks if m is not None)
    return replace(due, window_to=min(due.window_to, lowest))


def any_without_watermark(upstream: Mapping[str, Upstream], spec: OffloadTableSpec) -> bool:
    return any(upstream.get(d, MISSING).watermark is None for d in spec.depends_on)


def waiting_for(upstream: Mapping[str, Upstream], spec: OffloadTableSpec, target: datetime) -> str:
    behind = []
    for name in spec.depends_on:
        mark = upstream.get(name, MISSING).watermark
        if mark is None or mark.timestamp < target:
            have = format_timestamp(mark.timestamp) if mark else "none yet"
            behind.append(f"{name} (watermark {have})")
    what = ", ".join(behind) if behind else "upstream tables"
    return f"waiting for {what} to reach {format_timestamp(target)}"


def unknown_upstream(upstream: Mapping[str, Upstream], spec: OffloadTableSpec) -> list[str]:
    return sorted(name for name in spec.depends_on if not upstream.get(name, MISSING).exists)
