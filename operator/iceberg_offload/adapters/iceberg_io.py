"""Iceberg through pyiceberg: the state a run starts from, the compare-and-swap that publishes
its rows, committed watermarks, a run's commit, row counts and resets."""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException, NoSuchTableError
from pyiceberg.expressions import AlwaysFalse, And, BooleanExpression, GreaterThanOrEqual, LessThan, Or
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import RemoveSnapshotsUpdate, SetSnapshotRefUpdate
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, MonthTransform, YearTransform
from pyiceberg.types import TimestampType, TimestamptzType

from iceberg_offload.adapters import arrow_audit, watermark_io
from iceberg_offload.adapters.watermark_io import ConcurrentCommit as ConcurrentCommit
from iceberg_offload.adapters.watermark_io import TargetError as TargetError
from iceberg_offload.core import audit, repair
from iceberg_offload.core.catalog import pyiceberg_properties
from iceberg_offload.core.result import RUN_ID, reset_properties
from iceberg_offload.core.settings import CatalogSettings
from iceberg_offload.core.typemap import IcebergType
from iceberg_offload.core.watermark import Watermark, Window, format_timestamp

# Iceberg's write-audit-publish: with it a Spark write adds its snapshot without making it current.
WAP_ENABLED = "write.wap.enabled"
WAP_ID = "wap.id"


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
    """The committed watermark, wherever it survives (core/trace.py): idle progress, the newest
    snapshot of the current lineage carrying one (maintenance snapshots carry it forward or are
    passed over), or the watermark tag when expiry cut the lineage short."""
    return watermark_io.read(table).watermark


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


def audit_of_run(table: Table, run_id: str) -> repair.AuditRecord | None:
    """The audit a run recorded in its commits (its window's or its repair's), newest first."""
    for snapshot in lineage(table):
        summary = _summary(snapshot)
        if run_id in (summary.get(RUN_ID), summary.get(repair.REPAIR_OF), summary.get(repair.AUDIT_RUN)):
            record = repair.AuditRecord.from_summary(summary)
            if record is not None:
                return record
    return None


def latest_audit(table: Table) -> repair.AuditRecord | None:
    """The newest audit any commit of the current lineage recorded."""
    for snapshot in lineage(table):
        record = repair.AuditRecord.from_summary(_summary(snapshot))
        if record is not None:
            return record
    return None


@dataclass(frozen=True)
class BackfillProgress:
    commits: int = 0
    rows: int = 0


def backfill_progress(table: Table, name: str) -> BackfillProgress:
    """The commits a backfill made so far (in the current lineage) and the rows they wrote."""
    commits: set[str] = set()
    rows = 0
    for snapshot in lineage(table):
        summary = _summary(snapshot)
        if summary.get(repair.BACKFILL) == name:
            commits.add(summary.get(repair.REPAIR_COMMIT, str(snapshot.snapshot_id)))
            rows += int((snapshot.summary.get("added-records") if snapshot.summary else None) or 0)
    return BackfillProgress(len(commits), rows)


def watermark_keys(table: Table) -> dict[str, str]:
    """The summary keys of the committed watermark, for a commit that keeps it (none if no
    commit has made one)."""
    return dict(watermark_io.read(table).keys)


def replace_spans(
    catalog: Catalog,
    table: Table,
    rows: pa.Table,
    column: str,
    spans: Sequence[audit.Bucket],
    properties: dict[str, str],
) -> int | None:
    """Replace every row of `table` in `spans` of `column` by `rows`, in one catalog commit, if
    and only if `table`'s current snapshot is still the one it was loaded at: a strict
    compare-and-swap like publish(), never rebased onto a newer snapshot (a repair rebased over a
    reset would bring back rows the reset removed). Returns the new snapshot, None if nothing
    changed; ConcurrentCommit if another commit came first (nothing was published)."""
    name = ".".join(table.name())
    base = table.metadata.current_snapshot_id
    where: BooleanExpression = AlwaysFalse()
    for span in spans:
        where = Or(where, And(_at_or_after(column, Watermark(span.start)), _before(column, Watermark(span.end))))
    tx = table.transaction()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "did not match any records" is a fine outcome
        tx.overwrite(rows.cast(table.schema().as_arrow()), overwrite_filter=where, snapshot_properties=properties)
    # The transaction's own commit would retry a conflict by rebuilding on the new snapshot:
    # commit its updates ourselves, under the requirement that the table has not moved.
    updates = tx._updates  # pyiceberg keeps the staged updates here (pinned version)
    if not updates:
        return None
    try:
        watermark_io.commit(catalog, table, base, updates)
    except CommitFailedException as exc:
        raise ConcurrentCommit(
            f"another commit changed {name} while its rows were being replaced (snapshot {base} -> "
            f"{table.refresh().metadata.current_snapshot_id}): nothing was replaced"
        ) from exc
    # The snapshot this commit made current, from its own updates: the table may have moved on
    # since, and a caller that took the current one would build on a commit it never read.
    return watermark_io.main_snapshot(updates)


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
class TableState:
    """What a run starts from, read from one version of the table's metadata: the current
    snapshot (the one its commit must still find current) and the committed watermark."""

    snapshot_id: int | None
    watermark: Watermark | None
    has_rows: bool


def read_state(table: Table) -> TableState:
    snapshot = table.current_snapshot()
    return TableState(
        snapshot.snapshot_id if snapshot is not None else None, committed_watermark(table), row_count(table) > 0
    )


def enable_staging(table: Table) -> None:
    """Let Spark stage a run's snapshot without publishing it (write-audit-publish)."""
    if table.properties.get(WAP_ENABLED) != "true":
        with table.transaction() as tx:
            tx.set_properties({WAP_ENABLED: "true"})


def staged_snapshot(table: Table, wap_id: str) -> Snapshot:
    """The snapshot a staged write added, found by its write-audit-publish id."""
    staged = [s for s in table.snapshots() if _summary(s).get(WAP_ID) == wap_id]
    if len(staged) != 1:
        raise TargetError(f"the write to {table.name()} staged {len(staged)} snapshots with id {wap_id}, expected 1")
    return staged[0]


def publish(catalog: Catalog, table: Table, staged: Snapshot, base: int | None) -> None:
    """Make the staged snapshot current if, and only if, the current snapshot is still `base`,
    the one the run read its watermark from: a compare-and-swap in the catalog, never rebased."""
    name = ".".join(table.name())
    if staged.parent_snapshot_id != base:
        discard(catalog, table, staged)
        raise ConcurrentCommit(_moved(name, base, staged.parent_snapshot_id))
    # pyiceberg's models take their fields by name at runtime; their pydantic aliases hide it.
    update = SetSnapshotRefUpdate(
        ref_name=MAIN_BRANCH,  # type: ignore[call-arg]
        type=SnapshotRefType.BRANCH,
        snapshot_id=staged.snapshot_id,
    )
    try:
        watermark_io.commit(catalog, table, base, (update,))
    except CommitFailedException as exc:
        now = table.refresh().metadata.current_snapshot_id
        discard(catalog, table, staged)
        raise ConcurrentCommit(_moved(name, base, now)) from exc
    except CommitStateUnknownException:
        if not any(s.snapshot_id == staged.snapshot_id for s in lineage(table.refresh())):
            raise


def discard(catalog: Catalog, table: Table, staged: Snapshot) -> None:
    """Remove a staged snapshot that will never be published, so that it does not linger in the
    table's metadata until expiry (its data files are then orphans, for orphan-file removal).
    Best effort: a staged snapshot holds no visible row, so failing to remove it is harmless."""
    removal = RemoveSnapshotsUpdate(snapshot_ids=[staged.snapshot_id])  # type: ignore[call-arg]
    with contextlib.suppress(CommitFailedException, CommitStateUnknownException, ValueError):
        catalog.commit_table(table, (), (removal,))


def _moved(name: str, base: int | None, now: int | None) -> str:
    return (
        f"another commit changed {name} while this run ran (snapshot {base} -> {now}): this run published "
        "nothing; the next run continues from the committed watermark"
    )


def timestamp_column(table: Table) -> str:
    """The column a table's watermark is a position of: recorded by every commit of this
    protocol; for a table only committed by the first version, its time partitioning's source."""
    column = watermark_io.read(table).timestamp_column
    if column:
        return column
    schema = table.schema()
    time_transforms = (YearTransform, MonthTransform, DayTransform, HourTransform, IdentityTransform)
    columns = {
        schema.find_field(f.source_id).name
        for f in table.spec().fields
        if isinstance(f.transform, time_transforms)
        and isinstance(schema.find_field(f.source_id).field_type, (TimestampType, TimestamptzType))
    }
    if len(columns) != 1:
        raise TargetError(
            f"cannot tell which column {'.'.join(table.name())}'s watermark orders: no commit records it and its "
            "partitioning names no single timestamp column; run one offload first"
        )
    return columns.pop()


@dataclass(frozen=True)
class ResetPlan:
    """What a reset of `table` to `watermark` changes: the rows at or after it, in data files
    of the current snapshot, are deleted in one commit that also stamps the watermark."""

    table: str
    timestamp_column: str
    previous: Watermark | None
    watermark: Watermark
    snapshot_id: int | None
    rows: int
    rows_to_delete: int
    files_to_change: int


def plan_reset(table: Table, mark: Watermark) -> ResetPlan:
    """The reset's plan; refused (TargetError) if it would move the watermark forward."""
    name = ".".join(table.name())
    previous = committed_watermark(table)
    if mark.sequence is not None:
        raise TargetError(f"cannot reset {name} to {mark}: a watermark is a timestamp")
    if previous is not None and mark.timestamp > previous.timestamp:
        raise TargetError(
            f"cannot reset {name} forward to {mark}: its watermark is {previous}; a reset only moves it back"
        )
    column = timestamp_column(table)
    scan = table.scan(row_filter=_at_or_after(column, mark))
    snapshot = table.current_snapshot()
    return ResetPlan(
        name,
        column,
        previous,
        mark,
        snapshot.snapshot_id if snapshot is not None else None,
        row_count(table),
        scan.count() if snapshot is not None else 0,
        sum(1 for _ in scan.plan_files()) if snapshot is not None else 0,
    )


@dataclass(frozen=True)
class Reset:
    previous: Watermark | None
    watermark: Watermark
    rows_before: int
    rows_after: int
    snapshot_id: int | None


def reset_watermark(table: Table, plan: ResetPlan, reason: str) -> Reset:
    """Move a table's watermark back: delete every row at or after it and stamp it, in one
    commit of the catalog, so that the next run offloads those rows again, once. A run that
    read the table before the reset cannot publish after it (its base is no longer current)."""
    properties = reset_properties(plan.watermark, f"reset-{uuid.uuid4().hex[:12]}", plan.timestamp_column, reason)
    tx = table.transaction()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "did not match any records" is a fine outcome
        tx.delete(_at_or_after(plan.timestamp_column, plan.watermark), snapshot_properties=properties)
        if tx.table_metadata.current_snapshot_id == plan.snapshot_id:  # nothing matched: stamp it alone
            tx.append(table.schema().as_arrow().empty_table(), snapshot_properties=properties)
    try:
        watermark_io.commit(table.catalog, table, plan.snapshot_id, tx._updates)
    except CommitFailedException as exc:
        raise ConcurrentCommit(
            f"{plan.table} changed while its reset was planned (snapshot {plan.snapshot_id} -> "
            f"{table.refresh().metadata.current_snapshot_id}): nothing was reset; run the reset again"
        ) from exc
    table = table.refresh()
    if committed_watermark(table) != plan.watermark:
        raise TargetError(f"the reset of {plan.table} committed, but its watermark reads {committed_watermark(table)}")
    current = table.current_snapshot()
    return Reset(plan.previous, plan.watermark, plan.rows, row_count(table), current.snapshot_id if current else None)


def _stamp(mark: Watermark) -> str:
    return format_timestamp(mark.timestamp).replace("Z", "+00:00")


def _before(column: str, mark: Watermark) -> BooleanExpression:
    return LessThan(column, _stamp(mark))  # type: ignore[call-arg,arg-type]


def _at_or_after(column: str, mark: Watermark) -> BooleanExpression:
    # pyiceberg's predicates take (term, literal) positionally; their pydantic signature hides it.
    return GreaterThanOrEqual(column, _stamp(mark))  # type: ignore[call-arg,arg-type]


def audit_buckets(
    table: Table, timestamp_column: str, columns: Sequence[tuple[str, IcebergType]], window: Window, width: timedelta
) -> dict[int, audit.BucketStats]:
    """The Iceberg side of an audit of `window`: rows and checksum per bucket, from a scan of
    only the audited columns and only the files the window's rows can be in."""
    if table.current_snapshot() is None:
        return {}
    scan = table.scan(
        row_filter=And(_at_or_after(timestamp_column, window.lower), _before(timestamp_column, window.upper)),
        selected_fields=tuple(dict.fromkeys([timestamp_column, *(name for name, _ in columns)])),
    )
    return arrow_audit.bucket_stats(scan.to_arrow_batch_reader(), timestamp_column, columns, width)
