"""The committed watermark in an Iceberg table's metadata, through pyiceberg: read where it
survives maintenance (core/trace.py), and committed with the tag that keeps its snapshot.

Every commit here is a strict compare-and-swap: it requires the table's current snapshot to be
the one the caller read, and is never rebased onto a newer one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.update import (
    AssertRefSnapshotId,
    AssertTableUUID,
    SetPropertiesUpdate,
    SetSnapshotRefUpdate,
    TableUpdate,
)

from iceberg_offload.core import trace
from iceberg_offload.core.watermark import Watermark


class TargetError(RuntimeError):
    """The Iceberg target cannot be used as specified."""


class ConcurrentCommit(TargetError):
    """Another commit changed the table after the run read it: the run's rows were not published."""


def facts(table: Table) -> dict[int, trace.SnapshotFacts]:
    """Every snapshot of the table's metadata, as the facts core/trace.py reads."""
    out = {}
    for s in table.metadata.snapshots:
        summary = s.summary
        props = {str(k): str(v) for k, v in summary.additional_properties.items()} if summary is not None else {}
        order = s.sequence_number if s.sequence_number is not None else s.timestamp_ms
        out[s.snapshot_id] = trace.SnapshotFacts(s.snapshot_id, s.parent_snapshot_id, order, props)
    return out


def read(table: Table) -> trace.Trace:
    """Where the table's committed watermark is, and what it is."""
    ref = table.metadata.refs.get(trace.WATERMARK_TAG)
    try:
        return trace.read_trace(
            facts(table),
            table.metadata.current_snapshot_id,
            tag=ref.snapshot_id if ref is not None else None,
            idle=table.properties.get(trace.IDLE_PROGRESS),
        )
    except trace.TraceError as exc:
        raise TargetError(f"{'.'.join(table.name())}: {exc}") from exc


def tag(snapshot_id: int) -> SetSnapshotRefUpdate:
    """Move the watermark tag onto the snapshot that carries the watermark (same commit)."""
    return SetSnapshotRefUpdate(
        ref_name=trace.WATERMARK_TAG,  # type: ignore[call-arg]
        type=SnapshotRefType.TAG,
        snapshot_id=snapshot_id,
    )


def main_snapshot(updates: Sequence[TableUpdate]) -> int | None:
    """The snapshot a commit's updates make current."""
    return next(
        (u.snapshot_id for u in reversed(updates) if isinstance(u, SetSnapshotRefUpdate) and u.ref_name == MAIN_BRANCH),
        None,
    )


def commit(catalog: Catalog, table: Table, base: int | None, updates: Sequence[TableUpdate]) -> None:
    """Commit `updates` if and only if the table's current snapshot is still `base`; when they
    make a new snapshot current, the watermark tag moves onto it in the same commit.
    CommitFailedException if another commit came first (nothing was committed)."""
    # pyiceberg's models take their fields by name at runtime; their pydantic aliases hide it.
    requirement = AssertRefSnapshotId(ref=MAIN_BRANCH, snapshot_id=base)  # type: ignore[call-arg]
    new = main_snapshot(updates)
    tagged = (*updates, tag(new)) if new is not None else tuple(updates)
    response = catalog.commit_table(table, (AssertTableUUID(uuid=table.metadata.table_uuid), requirement), tagged)
    # What pyiceberg's own commits do after one: delete metadata files past the table's
    # write.metadata.previous-versions-max when write.metadata.delete-after-commit.enabled.
    with contextlib.suppress(Exception):  # a file left behind is for orphan removal, not a failure
        catalog._delete_old_metadata(table.io, table.metadata, response.metadata)


def record_idle(catalog: Catalog, table: Table, base: int | None, mark: Watermark, timestamp_column: str) -> bool:
    """Record that every row before `mark` is offloaded while `base` stays current, without a
    snapshot (the window held no row). False if another commit came first: nothing recorded."""
    update = SetPropertiesUpdate(updates=trace.idle_property(base, mark, timestamp_column))
    try:
        commit(catalog, table, base, (update,))
    except CommitFailedException:
        return False
    return True
