"""A maintenance run on Spark: compact data files, rewrite manifests, expire snapshots and
remove orphan files with Iceberg's own Spark actions and procedures, keeping the committed
watermark readable throughout (core/trace.py):

- the rewrites carry the watermark forward in their snapshot summaries, stamped with the
  snapshot they rewrote (void if Iceberg rebased them onto a newer commit), and the watermark
  tag is then moved onto them by a compare-and-swap;
- expiry never removes the snapshot the watermark tag holds (Iceberg keeps every ref's snapshot);
- orphan removal only looks at files older than the policy's age (at least an hour: a run's
  staged files are in no snapshot until it publishes).

The operator never starts one while the table's offload run or a backfill is in flight; were
one to run anyway, every commit of the offload protocol is a compare-and-swap, so a rewrite in
between makes that run publish nothing (it runs again), never twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyspark.sql import SparkSession

from iceberg_offload.adapters import iceberg_io, watermark_io
from iceberg_offload.core import trace
from iceberg_offload.core.maintenance import MAINTENANCE_RECORD, MAINTENANCE_RUN, MaintenancePolicy, MaintenanceRecord
from iceberg_offload.core.result import OffloadResult
from iceberg_offload.core.settings import Settings
from iceberg_offload.core.tables import TableSpec
from iceberg_offload.core.watermark import Watermark, format_timestamp
from iceberg_offload.job.errors import OffloadError

log = logging.getLogger("iceberg_offload.job.maintain")
T = TypeVar("T")
# Old metadata files are deleted as new ones are written (pyiceberg's and Spark's commits alike).
METADATA_CLEANUP = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}


@dataclass(frozen=True)
class MaintenanceRequest:
    spec: TableSpec
    run_id: str
    policy: MaintenancePolicy
    now: datetime | None = None


@dataclass(frozen=True)
class _Rewrites:
    files_rewritten: int = 0
    files_added: int = 0
    bytes_rewritten: int = 0
    manifests_rewritten: int = 0


def run_maintenance(spark: SparkSession, settings: Settings, request: MaintenanceRequest) -> OffloadResult:
    """One maintenance run; its record is written to the table's properties and returned as
    the result line (outcome committed). OffloadError if the table's watermark is lost."""
    started = time.monotonic()
    spec = request.spec
    catalog = iceberg_io.open_catalog(settings.catalog)
    table = iceberg_io.load_table(catalog, spec.target.catalog_identifier)
    before = _watermark(table, spec)
    snapshots_before, files_before = len(table.metadata.snapshots), _data_files(table)
    rewrites = _timed(
        spec, "compaction and manifest rewrite", _rewrite, spark, table, spec, request.run_id, request.policy
    )
    now = request.now or datetime.now(UTC)
    expired = _timed(spec, "snapshot expiry", _expire, spark, spec, request.policy, now)
    orphans = _timed(spec, "orphan removal", _remove_orphans, spark, spec, request.policy, now)
    table = table.refresh()
    after = _watermark(table, spec)
    if after != before:
        raise OffloadError(f"maintenance of {spec.target.identifier} changed its watermark {before} -> {after}")
    record = MaintenanceRecord(
        run_id=request.run_id,
        finished=format_timestamp(datetime.now(UTC)),
        watermark=str(after) if after is not None else None,
        snapshots_before=snapshots_before,
        snapshots_after=len(table.metadata.snapshots),
        snapshots_expired=max(0, snapshots_before - len(table.metadata.snapshots) + _added(rewrites)),
        data_files_before=files_before,
        data_files_after=_data_files(table),
        data_files_rewritten=rewrites.files_rewritten,
        data_files_added=rewrites.files_added,
        bytes_rewritten=rewrites.bytes_rewritten,
        manifests_rewritten=rewrites.manifests_rewritten,
        orphans_removed=orphans,
        files_deleted=expired,
    )
    _record(table, record)
    log.info("%s: maintenance %s: %s", spec.name, request.run_id, record.to_json())
    return OffloadResult(
        table=spec.name,
        run_id=request.run_id,
        outcome="committed",
        watermark_timestamp=format_timestamp(after.timestamp) if after is not None else None,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _timed(spec: TableSpec, what: str, step: Callable[..., T], *args: Any) -> T:
    began = time.monotonic()
    result = step(*args)
    log.info("%s: maintenance: %s took %.1f s", spec.name, what, time.monotonic() - began)
    return result


def _added(rewrites: _Rewrites) -> int:
    """The snapshots the rewrites themselves added (counted out of the expiry's figure)."""
    return int(rewrites.files_rewritten > 0) + int(rewrites.manifests_rewritten > 0)


def _watermark(table: Table, spec: TableSpec) -> Watermark | None:
    found = watermark_io.read(table)
    if found.watermark is None and iceberg_io.row_count(table) > 0:
        raise OffloadError(
            f"Iceberg table {spec.target.identifier} has rows but its watermark is lost: no maintenance until "
            f"'iceberg-offload restamp --table {spec.target.catalog_identifier}' stamps one"
        )
    return found.watermark


def _data_files(table: Table) -> int:
    return sum(1 for _ in table.scan().plan_files()) if table.current_snapshot() is not None else 0


def _rewrite(spark: SparkSession, table: Table, spec: TableSpec, run_id: str, policy: MaintenancePolicy) -> _Rewrites:
    """Compact the data files, then the manifests, each commit carrying the watermark forward."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    # The actions read through Iceberg's data source, which registers its table-cache catalog in
    # the JVM's *active* session; py4j calls arrive on threads whose active session may be another
    # one (or none), and the read then fails with "Catalog 'default_cache_iceberg' ... not defined".
    jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)
    actions = jvm.org.apache.iceberg.spark.actions.SparkActions.get(spark._jsparkSession)
    if table.current_snapshot() is None:
        return _Rewrites()
    action = actions.rewriteDataFiles(_java_table(spark, spec))
    action = action.option("target-file-size-bytes", str(policy.target_file_size)).option("min-input-files", "2")
    for key, value in _carried(table, run_id).items():
        action = action.snapshotProperty(key, value)
    data = action.execute()
    table = _move_tag(table.refresh())
    manifests = actions.rewriteManifests(_java_table(spark, spec))
    for key, value in _carried(table, run_id).items():
        manifests = manifests.snapshotProperty(key, value)
    rewritten = manifests.execute().rewrittenManifests()
    _move_tag(table.refresh())
    return _Rewrites(
        files_rewritten=int(data.rewrittenDataFilesCount()),
        files_added=int(data.addedDataFilesCount()),
        bytes_rewritten=int(data.rewrittenBytesCount()),
        manifests_rewritten=int(jvm.org.apache.iceberg.relocated.com.google.common.collect.Iterables.size(rewritten)),
    )


def _java_table(spark: SparkSession, spec: TableSpec) -> Any:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    return jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, spec.target.identifier)


def _carried(table: Table, run_id: str) -> dict[str, str]:
    """The summary keys a rewrite of the current snapshot carries: the watermark read from it."""
    current = table.metadata.current_snapshot_id
    if current is None:
        return {MAINTENANCE_RUN: run_id}
    return {**trace.carried_properties(watermark_io.read(table), current), MAINTENANCE_RUN: run_id}


def _move_tag(table: Table) -> Table:
    """Move the watermark tag onto the current snapshot if it carries the watermark itself (a
    rewrite that was not rebased), so that expiry may remove the older snapshots."""
    found = watermark_io.read(table)
    current = table.metadata.current_snapshot_id
    if current is None or found.snapshot_id != current or found.source is not trace.Source.CARRIED:
        return table
    try:
        watermark_io.commit(table.catalog, table, current, (watermark_io.tag(current),))
    except CommitFailedException:  # another commit came first: the tag stays where it is, still valid
        log.info("%s: the watermark tag stays on its snapshot: the table moved on", ".".join(table.name()))
    return table.refresh()


def _expire(spark: SparkSession, spec: TableSpec, policy: MaintenancePolicy, now: datetime) -> int:
    """Expire snapshots older than the policy's age (never the newest `retain_last`, never a
    ref's): the files it deleted."""
    older_than = format_timestamp(now - policy.max_snapshot_age)
    row = spark.sql(
        f"CALL {spec.target.catalog}.system.expire_snapshots(table => '{spec.target.catalog_identifier}', "
        f"older_than => TIMESTAMP '{older_than}', retain_last => {policy.retain_last})"
    ).collect()[0]
    return sum(int(value or 0) for value in row.asDict().values())


def _remove_orphans(spark: SparkSession, spec: TableSpec, policy: MaintenancePolicy, now: datetime) -> int:
    older_than = format_timestamp(now - policy.orphan_age)
    rows = spark.sql(
        f"CALL {spec.target.catalog}.system.remove_orphan_files(table => '{spec.target.catalog_identifier}', "
        f"older_than => TIMESTAMP '{older_than}')"
    ).collect()
    return len(rows)


def _record(table: Table, record: MaintenanceRecord) -> None:
    """Keep the record in the table's properties (a commit of no snapshot), with old metadata
    files cleaned up from now on unless the table says otherwise."""
    cleanup = {k: v for k, v in METADATA_CLEANUP.items() if k not in table.properties}
    with table.transaction() as tx:
        tx.set_properties({**cleanup, MAINTENANCE_RECORD: record.to_json()})
