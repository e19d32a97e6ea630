"""Iceberg metadata through pyiceberg: committed watermarks, snapshots and row counts."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThan, Or
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from iceberg_offload.core.catalog import pyiceberg_properties
from iceberg_offload.core.result import RUN_ID, WATERMARK_SEQUENCE, WATERMARK_TIMESTAMP, newest_watermark
from iceberg_offload.core.settings import CatalogSettings
from iceberg_offload.core.watermark import Watermark, format_timestamp


class TargetError(RuntimeError):
    """The Iceberg target cannot be used as specified."""


def open_catalog(settings: CatalogSettings) -> Catalog:
    """The catalog Spark uses, opened by pyiceberg (for a SQL catalog this also creates the
    catalog's own tables, which Spark is told not to create)."""
    return load_catalog(settings.name, **pyiceberg_properties(settings))


def load_table(catalog: Catalog, identifier: str) -> Table:
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError as exc:
        raise TargetError(f"Iceberg table {catalog.name}.{identifier} does not exist: create it with the DDL") from exc


def lineage(table: Table) -> Iterator[Snapshot]:
    """The current snapshot and its ancestors, newest first."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        yield snapshot
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None


def _summary(snapshot: Snapshot) -> dict[str, str]:
    summary = snapshot.summary
    if summary is None:
        return {}
    return {str(k): str(v) for k, v in summary.additional_properties.items()}


def committed_watermark(table: Table) -> Watermark | None:
    """The watermark of the newest snapshot in the current lineage that carries one: compaction
    and other maintenance snapshots do not, and are passed over."""
    return newest_watermark(_summary(s) for s in lineage(table))


@dataclass(frozen=True)
class RunCommit:
    snapshot_id: int
    added_records: int


def commit_of_run(table: Table, run_id: str) -> RunCommit | None:
    """The commit a run made, found by the run id in its snapshot summary."""
    for snapshot in lineage(table):
        summary = _summary(snapshot)
        if summary.get(RUN_ID) == run_id:
            added = snapshot.summary.get("added-records") if snapshot.summary else None
            return RunCommit(snapshot.snapshot_id, int(added or 0))
    return None


def row_count(table: Table) -> int:
    """Live rows of the current snapshot: data rows less position and equality deletes."""
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    summary = snapshot.summary
    total = int(summary.get("total-records") or 0)
    deletes = int(summary.get("total-position-deletes") or 0) + int(summary.get("total-equality-deletes") or 0)
    if deletes:
        return int(table.scan().to_arrow().num_rows)
    return total


@dataclass(frozen=True)
class Reset:
    previous: Watermark | None
    watermark: Watermark
    rows_before: int
    rows_after: int


def reset_watermark(
    table: Table, timestamp_column: str, sequence_column: str | None, mark: Watermark, reason: str
) -> Reset:
    """Move a table's watermark back to `mark`: delete every row after it and stamp the new
    watermark in the same commit, so that the next run offloads those rows again, once."""
    previous = committed_watermark(table)
    if previous is not None and mark > previous:
        raise TargetError(f"cannot reset {table.name()} forward: its watermark is {previous}, before {mark}")
    stamp = format_timestamp(mark.timestamp).replace("Z", "+00:00")
    # pyiceberg's predicates take (term, literal) positionally; their pydantic signature hides it.
    after: BooleanExpression = GreaterThan(timestamp_column, stamp)  # type: ignore[call-arg,arg-type]
    if sequence_column is not None:
        at_stamp = EqualTo(timestamp_column, stamp)  # type: ignore[call-arg,arg-type]
        after = Or(after, And(at_stamp, GreaterThan(sequence_column, mark.sequence)))  # type: ignore[call-arg,arg-type]
    rows_before = row_count(table)
    properties = {
        WATERMARK_TIMESTAMP: format_timestamp(mark.timestamp),
        WATERMARK_SEQUENCE: str(mark.sequence),
        RUN_ID: f"reset-{uuid.uuid4().hex[:12]}",
        "offload.reset": reason,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "did not match any records" is a fine outcome
        table.delete(after, snapshot_properties=properties)
    table = table.refresh()
    if committed_watermark(table) != mark:  # no rows matched and no snapshot was made: stamp one
        table.append(table.schema().as_arrow().empty_table(), snapshot_properties=properties)
        table = table.refresh()
    return Reset(previous, mark, rows_before, row_count(table))
