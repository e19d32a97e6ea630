"""The audit of one table, through both adapters: ClickHouse's side in SQL, Iceberg's from a scan of the audited columns
of the range, compared bucket by bucket (the arithmetic is core.audit)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from clickhouse_connect.driver.client import Client
from pyiceberg.table import Table

from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core import audit
from iceberg_offload.core.tables import TableSpec
from iceberg_offload.core.typemap import ColumnMapping, map_column
from iceberg_offload.core.watermark import Watermark, Window


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
