"""Where a table's committed watermark is read from, so that it survives maintenance.

Pure logic: no engine, catalog or network imports. A table's metadata is given as plain facts
(snapshots by id, the current one, the watermark tag, the idle-progress property) and the
committed watermark is decided from them (docs/ARCHITECTURE.md, "Maintenance and the
watermark"), newest first:

1. **Idle progress**: a run whose window held no row commits no snapshot; it records the window's
   end in a table property, valid only while the snapshot it was recorded on is still current.
   Any later commit (a window, a repair, a reset, a compaction) makes it void: the next run then
   reads the empty window again, which commits nothing twice.
2. **The current lineage**, newest snapshot first: a commit of this protocol carries the watermark
   in its summary; a maintenance rewrite carries it *forward* with the id of the snapshot it
   rewrote, valid only if that is still its parent (a rewrite rebased onto a newer commit
   carries nothing, and the walk goes on to that commit).
3. **The watermark tag**: every commit that carries a watermark moves the tag WATERMARK_TAG onto
   its snapshot in the same catalog commit, and snapshot expiry never removes a snapshot a ref
   holds. It is read when the lineage ends at an expired snapshot before any watermark.

With none of them, a table with rows has lost every trace: runs refuse to start until
`iceberg-offload restamp` (restamp_watermark) stamps one from the data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from iceberg_offload.core.repair import kept_watermark
from iceberg_offload.core.result import (
    TIMESTAMP_COLUMN,
    WATERMARK_BEFORE,
    WATERMARK_SEQUENCE,
    WATERMARK_TIMESTAMP,
    watermark_from_summary,
)
from iceberg_offload.core.watermark import Watermark, format_timestamp, parse_timestamp

WATERMARK_TAG = "offload-watermark"
IDLE_PROGRESS = "offload.watermark.idle"
# A maintenance rewrite's carried watermark and the snapshot it was read at.
CARRIED_WATERMARK = "offload.maintenance.watermark"
CARRIED_FROM = "offload.maintenance.parent"


class TraceError(ValueError):
    """Metadata that names a watermark it cannot be read from."""


class Source(StrEnum):
    """Where the committed watermark was found."""

    IDLE = "idle progress"
    COMMIT = "commit"
    CARRIED = "maintenance"
    TAG = "watermark tag"
    NONE = "none"


@dataclass(frozen=True)
class SnapshotFacts:
    snapshot_id: int
    parent_id: int | None
    sequence_number: int
    summary: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Trace:
    """The committed watermark and where it was read; `keys` are the summary keys a commit that
    keeps the watermark (a repair) copies; `broken` says the lineage ended at an expired snapshot."""

    watermark: Watermark | None
    source: Source
    snapshot_id: int | None = None
    keys: Mapping[str, str] = field(default_factory=dict)
    broken: bool = False
    timestamp_column: str | None = None


def idle_property(snapshot_id: int | None, mark: Watermark, timestamp_column: str) -> dict[str, str]:
    """The table property an idle run writes: the window's end, valid on `snapshot_id` only."""
    payload = {"snapshot": snapshot_id, "before": format_timestamp(mark.timestamp), "column": timestamp_column}
    return {IDLE_PROGRESS: json.dumps(payload, sort_keys=True)}


def _idle(text: str | None, current: int | None) -> tuple[Watermark, str | None] | None:
    if not text:
        return None
    try:
        data = json.loads(text)
        if data.get("snapshot") != current:
            return None
        return Watermark(parse_timestamp(str(data["before"]))), data.get("column")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TraceError(f"table property {IDLE_PROGRESS} cannot be read ({exc}): {text!r}") from exc


def carried_properties(trace: Trace, parent: int) -> dict[str, str]:
    """The summary keys a maintenance rewrite of snapshot `parent` carries the watermark in."""
    if trace.watermark is None:
        return {}
    keys = {CARRIED_WATERMARK: str(trace.watermark), CARRIED_FROM: str(parent)}
    if trace.timestamp_column:
        keys[TIMESTAMP_COLUMN] = trace.timestamp_column
    return keys


def snapshot_watermark(snapshot: SnapshotFacts) -> tuple[Watermark, Source] | None:
    """The watermark one snapshot carries: its own commit's, or a valid carried one."""
    mark = watermark_from_summary(snapshot.summary)
    if mark is not None:
        return mark, Source.COMMIT
    carried = snapshot.summary.get(CARRIED_WATERMARK)
    if carried and snapshot.summary.get(CARRIED_FROM) == str(snapshot.parent_id):
        timestamp, _, sequence = carried.partition("#")
        try:
            return Watermark(parse_timestamp(timestamp), int(sequence) if sequence else None), Source.CARRIED
        except ValueError as exc:
            raise TraceError(f"snapshot {snapshot.snapshot_id} carries an unreadable watermark {carried!r}") from exc
    return None


def _keys(snapshot: SnapshotFacts, mark: Watermark, source: Source) -> dict[str, str]:
    if source is Source.COMMIT:
        return kept_watermark(snapshot.summary)
    return _timestamp_keys(mark, snapshot.summary.get(TIMESTAMP_COLUMN))


def _timestamp_keys(mark: Watermark, column: str | None) -> dict[str, str]:
    if mark.legacy:  # a first-version position carried forward keeps its form
        keys = {WATERMARK_TIMESTAMP: format_timestamp(mark.timestamp), WATERMARK_SEQUENCE: str(mark.sequence)}
    else:
        keys = {WATERMARK_BEFORE: format_timestamp(mark.timestamp)}
    return {**keys, **({TIMESTAMP_COLUMN: column} if column else {})}


def _found(snapshot: SnapshotFacts, mark: Watermark, source: Source, broken: bool = False) -> Trace:
    keys = _keys(snapshot, mark, source)
    return Trace(mark, source, snapshot.snapshot_id, keys, broken, keys.get(TIMESTAMP_COLUMN))


def read_trace(
    snapshots: Mapping[int, SnapshotFacts],
    current: int | None,
    *,
    tag: int | None = None,
    idle: str | None = None,
) -> Trace:
    """The committed watermark of a table (see the module's rules)."""
    lineage = _walk(snapshots, current, tag)
    progress = _idle(idle, current)
    if progress is None:
        return lineage
    mark, idle_column = progress
    column = lineage.timestamp_column or idle_column
    return Trace(mark, Source.IDLE, current, _timestamp_keys(mark, column), lineage.broken, column)


def _walk(snapshots: Mapping[int, SnapshotFacts], current: int | None, tag: int | None) -> Trace:
    """The newest watermark of the current lineage, or, if the lineage ends at an expired
    snapshot before one, the tag's."""
    column: str | None = None
    snapshot = snapshots.get(current) if current is not None else None
    oldest = snapshot
    broken = current is not None and snapshot is None
    while snapshot is not None:
        found = snapshot_watermark(snapshot)
        if found is not None:
            return _found(snapshot, *found)
        column = column or snapshot.summary.get(TIMESTAMP_COLUMN)
        oldest, parent = snapshot, snapshot.parent_id
        snapshot = snapshots.get(parent) if parent is not None else None
        broken = parent is not None and snapshot is None
    found_tag = _from_tag(snapshots, tag, oldest) if broken else Trace(None, Source.NONE)
    return replace(found_tag, broken=broken, timestamp_column=found_tag.timestamp_column or column)


def _from_tag(snapshots: Mapping[int, SnapshotFacts], tag: int | None, oldest: SnapshotFacts | None) -> Trace:
    """The tag's watermark, if its snapshot can be an ancestor of the broken lineage: committed
    before the oldest snapshot the walk reached."""
    tagged = snapshots.get(tag) if tag is not None else None
    if tagged is None or (oldest is not None and tagged.sequence_number >= oldest.sequence_number):
        return Trace(None, Source.NONE)
    found = snapshot_watermark(tagged)
    if found is None:
        return Trace(None, Source.NONE)
    mark, _ = found
    keys = _keys(tagged, *found)
    return Trace(mark, Source.TAG, tagged.snapshot_id, keys, True, keys.get(TIMESTAMP_COLUMN))


def restamp_mark(newest_row: datetime | None) -> Watermark | None:
    """The watermark re-stamped from the data when every trace is gone: just after the newest
    row the table holds, so that the next window starts after every row in it (no row twice;
    a row of ClickHouse between it and the lost watermark is offloaded then, or was late)."""
    if newest_row is None:
        return None
    return Watermark(newest_row + timedelta(microseconds=1))
