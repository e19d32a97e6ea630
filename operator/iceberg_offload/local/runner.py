"""Local mode: one process that owns an embedded ClickHouse engine behind its HTTP interface,
a SQLite Iceberg catalog and a local Spark, and runs offload cycles in layer order."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client
from pyspark.sql import SparkSession

from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.core.repair import DEFAULT_POLICY, LateDataPolicy
from iceberg_offload.core.result import OffloadResult
from iceberg_offload.core.settings import Settings, local_settings
from iceberg_offload.core.tables import TableSpec, layer_order
from iceberg_offload.core.watermark import INITIAL_WATERMARK, Window
from iceberg_offload.job.run import RunRequest, run_offload
from iceberg_offload.job.session import apply_iceberg_ddl, spark_session
from iceberg_offload.local.chhttp import ClickHouseHTTPServer

log = logging.getLogger("iceberg_offload.local")


@dataclass
class LocalStack:
    """The engines of local mode, all under one state directory."""

    state_dir: Path
    settings: Settings
    server: ClickHouseHTTPServer
    clickhouse: Client
    spark: SparkSession


@contextmanager
def local_stack(state_dir: Path, *, spark: SparkSession | None = None) -> Iterator[LocalStack]:
    """Start ClickHouse (embedded, on 127.0.0.1), create the DDL on both sides, open Spark."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "warehouse").mkdir(exist_ok=True)
    server = ClickHouseHTTPServer(state_dir / "clickhouse")
    server.start()
    try:
        settings = local_settings(state_dir, server.port)
        client = clickhouse_io.connect(settings.clickhouse)
        clickhouse_io.apply_ddl(client)
        session = spark or spark_session(settings, "iceberg-offload-local")
        apply_iceberg_ddl(session, settings.catalog.name, settings.catalog.namespace)
        try:
            yield LocalStack(state_dir, settings, server, client, session)
        finally:
            client.close()
    finally:
        server.stop()


def upstream_of(spec: TableSpec, tables: list[TableSpec]) -> dict[str, str]:
    by_name = {t.name: t for t in tables}
    return {dep: by_name[dep].target.identifier for dep in spec.depends_on}


def run_cycle(
    stack: LocalStack,
    tables: list[TableSpec],
    now: datetime,
    cycle: str = "cycle",
    late_data: LateDataPolicy | None = DEFAULT_POLICY,
) -> list[OffloadResult]:
    """One cycle of every table, a layer at a time, as the scheduler runs them; each run audits
    its lookback first and repairs late data (the OffloadTable's default policy)."""
    results = []
    for stage in layer_order(tables):
        for spec in stage:
            request = RunRequest(
                spec=spec,
                run_id=f"{cycle}-{spec.name}",
                upstream=upstream_of(spec, tables),
                now=now,
                late_data=late_data,
            )
            results.append(run_offload(stack.spark, stack.settings, request))
    return results


@dataclass(frozen=True)
class TableAudit:
    table: str
    watermark: str
    clickhouse_rows: int
    iceberg_rows: int

    @property
    def matches(self) -> bool:
        return self.clickhouse_rows == self.iceberg_rows


def audit(stack: LocalStack, tables: list[TableSpec]) -> list[TableAudit]:
    """Per table: ClickHouse rows up to the committed watermark beside the Iceberg row count."""
    catalog = iceberg_io.open_catalog(stack.settings.catalog)
    audits = []
    for spec in tables:
        table = iceberg_io.load_table(catalog, spec.target.catalog_identifier)
        mark = iceberg_io.committed_watermark(table)
        source_rows = 0
        if mark is not None:
            source_rows = clickhouse_io.window_stats(
                stack.clickhouse, spec.source, Window(INITIAL_WATERMARK, mark)
            ).rows
        audits.append(TableAudit(spec.name, str(mark) if mark else "-", source_rows, iceberg_io.row_count(table)))
    return audits
