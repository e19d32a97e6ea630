"""The audit and repair of one table, through both adapters: ClickHouse's side in SQL, Iceberg's from a scan of the
audited columns of the range, compared bucket by bucket (the arithmetic is core.audit); buckets that differ replaced by
ClickHouse's rows (core.repair says which and what the commits record).

A replacement publishes only if the table's current snapshot is still the one its audit read (a strict
compare-and-swap, never rebased), so a run, a reset or another replacement that came first makes it publish nothing:
iceberg_io.ConcurrentCommit (a run's repair then fails the run; a backfill audits that bucket again)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
from clickhouse_connect.driver.client import Client
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core import audit, repair
from iceberg_offload.core.tables import TableSpec
from iceberg_offload.core.typemap import ColumnMapping, map_column
from iceberg_offload.core.watermark import Watermark, Window

log = logging.getLogger("iceberg_offload.audit")
BACKFILL_ATTEMPTS = 3  # per bucket, when other commits keep coming first


def target_columns(source_columns: Sequence[tuple[str, str]], table: Table) -> list[ColumnMapping]:
    """The SELECT of each Iceberg column from its ClickHouse column (a run checks the types)."""
    types = dict(source_columns)
    missing = [f.name for f in table.schema().fields if f.name not in types]
    if missing:
        raise repair.RepairError(f"Iceberg columns {', '.join(missing)} do not exist in the ClickHouse table")
    return [map_column(f.name, types[f.name]) for f in table.schema().fields]


def audited_columns(spec: TableSpec, source_columns: Sequence[tuple[str, str]]) -> list[ColumnMapping]:
    """What the checksum covers: a candle table's every column (its key and its values); a trade
    table's key, the timestamp and sequence columns; a table without a sequence, every column."""
    names = [name for name, _ in source_columns]
    if spec.candle_interval is None and spec.source.sequence_column is not None:
        names = [spec.source.timestamp_column, spec.source.sequence_column]
    types = dict(source_columns)
    return [map_column(name, types[name]) for name in names]


def audit_range(
    client: Client, table: Table, spec: TableSpec, lower: datetime, upper: datetime, width: timedelta
) -> audit.AuditReport:
    """Compare [lower, upper) of the source and the Iceberg table in buckets of `width`."""
    buckets = audit.plan_buckets(lower, upper, width)
    columns = audited_columns(spec, clickhouse_io.describe(client, spec.source))
    span = Window(Watermark(lower), Watermark(upper))
    ours = clickhouse_io.audit_buckets(client, spec.source, columns, span, width)
    theirs = iceberg_io.audit_buckets(
        table, spec.source.timestamp_column, [(c.name, c.iceberg_type) for c in columns], span, width
    )
    return audit.compare(buckets, ours, theirs, width)


BACKFILL_ATTEMPTS = 3  # per bucket, when other commits keep coming first


def horizon(client: Client, spec: TableSpec, now: datetime) -> datetime | None:
    return repair.retention_horizon(now, clickhouse_io.retention(client, spec.source))


def _rows(
    client: Client, spec: TableSpec, columns: Sequence[ColumnMapping], table: Table, spans: Sequence[audit.Bucket]
) -> pa.Table:
    """ClickHouse's current rows in `spans`, in the Iceberg table's schema."""
    schema = table.schema().as_arrow()
    batches = [
        batch
        for span in spans
        for batch in clickhouse_io.read_window(
            client, spec.source, columns, Window(Watermark(span.start), Watermark(span.end))
        )
    ]
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches).cast(schema)


def _replace(
    client: Client,
    catalog: Catalog,
    table: Table,
    spec: TableSpec,
    columns: Sequence[ColumnMapping],
    report: audit.AuditReport,
    mode: repair.LateDataMode,
    now: datetime,
    run_id: str,
    backfill: str | None = None,
) -> tuple[repair.AuditRecord, int | None]:
    """Replace the report's differing buckets in one commit on the snapshot `table` was loaded
    at (the one the audit read): the commit's record and snapshot (None if nothing changed)."""
    diffs = report.differing
    spans = [d.bucket for d in diffs]
    rows = _rows(client, spec, columns, table, spans)
    lower, upper = report.buckets[0].start, report.buckets[-1].end
    record = repair.audit_record(mode, lower, upper, now, report, diffs, rows.num_rows)
    reason = repair.repair_reason(diffs)
    properties = {
        **repair.repair_properties(
            iceberg_io.watermark_keys(table),
            run_id,
            reason if backfill is None else f"backfill {backfill}: {reason}",
            spans,
            uuid.uuid4().hex,
            backfill=backfill,
        ),
        **record.properties(),
    }
    snapshot = iceberg_io.replace_spans(catalog, table, rows, spec.source.timestamp_column, spans, properties)
    return record, snapshot


def audit_and_repair(
    client: Client,
    catalog: Catalog,
    table: Table,
    spec: TableSpec,
    columns: Sequence[ColumnMapping],
    policy: repair.LateDataPolicy,
    run_id: str,
    now: datetime,
) -> tuple[repair.AuditRecord | None, int | None]:
    """A run's audit of its lookback and, in repair mode, the repair of what differs: the audit's
    record and the repair's snapshot (None when nothing was replaced)."""
    mode = policy.mode
    try:
        retained = horizon(client, spec, now)
    except repair.RepairError as exc:  # never guess a retention: audit, but repair nothing
        log.warning("%s: %s; this run only reports late data", spec.name, exc)
        mode, retained = repair.LateDataMode.REPORT, None
    span = repair.lookback_range(iceberg_io.committed_watermark(table), policy.lookback, retained)
    if span is None:
        return None, None
    lower, upper = span
    report = audit_range(client, table, spec, lower, upper, policy.bucket)
    diffs = report.differing if mode is repair.LateDataMode.REPAIR else ()
    if not diffs:
        if report.differing:
            log.warning("%s: %s (late-data mode report: not repaired)", spec.name, report.summary())
        return repair.audit_record(mode, lower, upper, now, report, (), 0), None
    record, snapshot = _replace(client, catalog, table, spec, columns, report, mode, now, run_id)
    log.warning("%s: repaired late data: %s; %d rows written", spec.name, report.summary(), record.rows_repaired)
    return record, snapshot


@dataclass(frozen=True)
class BackfillOutcome:
    buckets: int
    differing: int
    commits: int
    rows: int


def backfill(
    client: Client,
    catalog: Catalog,
    spec: TableSpec,
    columns: Sequence[ColumnMapping],
    lower: datetime,
    upper: datetime,
    *,
    policy: repair.LateDataPolicy,
    name: str,
    now: datetime,
    allow_deletes: bool = False,
) -> BackfillOutcome:
    """Make [lower, upper) equal to ClickHouse, a bucket per commit, replacing only buckets that
    differ: an equal range commits nothing, and a backfill run again after a crash redoes only
    what is still different."""
    table = iceberg_io.load_table(catalog, spec.target.catalog_identifier)
    try:
        retained = horizon(client, spec, now)
    except repair.RepairError:
        if not allow_deletes:
            raise
        retained = None  # the user allowed replacing rows ClickHouse dropped: its TTL does not matter
    repair.check_backfill(lower, upper, iceberg_io.committed_watermark(table), retained, allow_deletes=allow_deletes)
    buckets = audit.plan_buckets(lower, upper, policy.bucket)
    differing = commits = rows = 0
    for bucket in buckets:
        replaced = _backfill_bucket(client, catalog, spec, columns, bucket, policy, name, now)
        if replaced is not None:
            record, snapshot = replaced
            differing += 1
            commits += snapshot is not None
            rows += record.rows_repaired
    log.info("%s: backfill %s: %d buckets checked, %d replaced, %d rows", spec.name, name, len(buckets), commits, rows)
    return BackfillOutcome(len(buckets), differing, commits, rows)


def _backfill_bucket(
    client: Client,
    catalog: Catalog,
    spec: TableSpec,
    columns: Sequence[ColumnMapping],
    bucket: audit.Bucket,
    policy: repair.LateDataPolicy,
    name: str,
    now: datetime,
) -> tuple[repair.AuditRecord, int | None] | None:
    for _ in range(BACKFILL_ATTEMPTS):
        table = iceberg_io.load_table(catalog, spec.target.catalog_identifier)
        mark = iceberg_io.committed_watermark(table)
        if mark is None or bucket.end > repair.audited_upper(mark):  # a reset moved it back meanwhile
            raise repair.RepairError(
                f"backfill {name} of {spec.name}: the committed watermark moved back to {mark} (a reset?) below "
                f"{bucket}: stopped; what it replaced before stays, run it again over a range before the watermark"
            )
        report = audit_range(client, table, spec, bucket.start, bucket.end, policy.bucket)
        if report.in_sync:
            return None
        try:
            return _replace(
                client, catalog, table, spec, columns, report, repair.LateDataMode.REPAIR, now, name, backfill=name
            )
        except iceberg_io.ConcurrentCommit as exc:
            log.info("%s: backfill %s: %s; auditing %s again", spec.name, name, exc, bucket)
    raise repair.RepairError(
        f"backfill {name} of {spec.name}: other commits kept changing the table while {bucket} was replaced; "
        "run the backfill again (what it already replaced stays)"
    )


def record_audit(
    catalog: Catalog, table: Table, spec: TableSpec, record: repair.AuditRecord, run_id: str
) -> int | None:
    """For a run that commits nothing else: record its audit in a commit of no rows (the watermark
    kept), so that the table's status tells what it found; only when the finding differs from the
    newest recorded one, and never for a first finding of nothing (an idle, equal table gets no
    snapshot). The snapshot it made, None if it recorded nothing."""
    latest = iceberg_io.latest_audit(table)
    if (latest.finding == record.finding) if latest is not None else record.in_sync:
        return None
    properties = {**iceberg_io.watermark_keys(table), **record.properties(), repair.AUDIT_RUN: run_id}
    empty = table.schema().as_arrow().empty_table()
    try:
        return iceberg_io.replace_spans(catalog, table, empty, spec.source.timestamp_column, [], properties)
    except iceberg_io.ConcurrentCommit as exc:  # another commit came first: the next run records
        log.info("%s: the audit of run %s is not recorded: %s", spec.name, run_id, exc)
        return None
