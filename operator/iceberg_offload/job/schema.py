"""A run's schema evolution, before it plans its columns: the ClickHouse source's columns diffed
against the Iceberg target's (core/schema_change.py), and in `evolve` mode the change applied in
one catalog commit (adapters/iceberg_schema.py), after which Spark reads the new schema. A refused
change ends the run before it writes anything."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pyiceberg.table import Table
from pyspark.sql import SparkSession

from iceberg_offload.adapters import clickhouse_io
from iceberg_offload.adapters.iceberg_schema import SchemaMoved, apply_change, columns_of
from iceberg_offload.core.schema_change import IcebergColumn, Mode, SchemaChange, diff, record
from iceberg_offload.core.tables import TableSpec
from iceberg_offload.job.errors import OffloadError

log = logging.getLogger("iceberg_offload.job")


def evolve_schema(
    spark: SparkSession, table: Table, client: Any, spec: TableSpec, mode: Mode, run_id: str, now: datetime | None
) -> tuple[Table, str | None]:
    """The target after its schema follows the source: the refreshed table and what this run changed.
    Raises OffloadError, having written nothing, when the change is refused."""
    source = f"{spec.source.database}.{spec.source.table}"
    clickhouse = clickhouse_io.describe(client, spec.source)

    def recompute(columns: Sequence[IcebergColumn]) -> SchemaChange:
        return diff(clickhouse, columns, mode, source=source, target=spec.target.identifier)

    change = recompute(columns_of(table))
    if change.refused:
        raise OffloadError(f"schema change refused, nothing written: {change.reason()}")
    if change.empty:
        return table, None
    summary = change.summary() or ""
    try:
        applied = apply_change(table, change, recompute, record(summary, now or datetime.now(UTC), run_id))
    except SchemaMoved as exc:
        raise OffloadError(str(exc)) from exc
    # Spark must plan the window's read and write on the new schema, not a cached one.
    spark.sql(f"REFRESH TABLE {spec.target.identifier}")
    if applied.summary:
        log.info("%s: evolved the schema of %s: %s", spec.name, spec.target.identifier, applied.summary)
    else:
        log.info("%s: another run already evolved the schema of %s", spec.name, spec.target.identifier)
    return applied.table, applied.summary
