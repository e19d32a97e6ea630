"""Fixtures for the offload job's integration tests on the real engines (no mocks).

Cost model: a Spark session takes 5-10 s to start and only one can exist per process, and its
Iceberg catalog (a SQLite file) is fixed when it starts. So:

* ``spark`` (session scope): THE Spark session of this pytest process, on one state directory.
* ``stack`` (module scope): :func:`local_stack` on that state directory, reusing ``spark``: the
  embedded ClickHouse behind its HTTP endpoint on 127.0.0.1. Module scope, because chdb binds a
  process to one data directory at a time: other modules (``test_chhttp.py``) open their own.
* ``make_env`` / ``env``: isolation. Each test gets its own ClickHouse database (all nine source
  tables, their materialized views and its own ``offload_watermarks``) and its own Iceberg
  namespace ``demo.<name>`` holding the nine targets, i.e. ``runbook_tables(database=name,
  namespace=name)``. Tests share the engines but never each other's tables or watermarks, so
  they can run in any order and alone.

Clocks are explicit: every test works around ``base`` (yesterday's midnight, UTC), never the
wall clock, except that ``base`` is recent enough for the sources' 7-day TTL to keep the rows.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from iceberg_offload.adapters import clickhouse_io, iceberg_io
from iceberg_offload.adapters.ddl import iceberg_statements
from iceberg_offload.core.mirror import MirrorRow
from iceberg_offload.core.result import OffloadResult
from iceberg_offload.core.settings import Settings, local_settings
from iceberg_offload.core.tables import TableSpec, runbook_tables
from iceberg_offload.core.watermark import Watermark
from iceberg_offload.job.run import RunRequest, run_offload
from iceberg_offload.job.session import spark_session
from iceberg_offload.local.demo import feed_trades
from iceberg_offload.local.runner import LocalStack, TableAudit, audit, local_stack, run_cycle, upstream_of
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyspark.sql import SparkSession

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BRONZE = ("bronze_trades_binance", "bronze_trades_kraken")
ALL_TABLES = tuple(t.name for t in runbook_tables())
SUBWINDOW_MINUTES = 5


def micros(value: datetime) -> int:
    """Microseconds since the epoch: how timestamps are compared between the two engines."""
    return (value - EPOCH) // timedelta(microseconds=1)


def ch_ts(value: datetime) -> str:
    """A server-side parameter value for {p:DateTime64(6, 'UTC')}."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def with_timestamps_as_micros(table: pa.Table) -> pa.Table:
    """Timestamp columns cast to int64 microseconds, so rows compare as plain tuples."""
    columns = []
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def rows_of(table: pa.Table, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    data = with_timestamps_as_micros(table.select(list(columns))).to_pydict()
    return list(zip(*(data[c] for c in columns), strict=True))


@dataclass
class OffloadEnv:
    """One test's isolated tables on the shared engines: ClickHouse database and Iceberg namespace ``name``."""

    name: str
    view: LocalStack  # the shared engines, with this env's settings and ClickHouse client
    tables: list[TableSpec]
    catalog: Catalog
    _clients: list[Client] = field(default_factory=list)

    # --- the engines ---------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.view.settings

    @property
    def spark(self) -> SparkSession:
        return self.view.spark

    @property
    def clickhouse(self) -> Client:
        return self.view.clickhouse

    def spec(self, table: str) -> TableSpec:
        return next(t for t in self.tables if t.name == table)

    def specs(self, names: Iterable[str]) -> list[TableSpec]:
        return [self.spec(n) for n in names]

    def target(self, table: str) -> str:
        """The Spark identifier, demo.<name>.<table>."""
        return f"{self.settings.catalog.name}.{self.name}.{table}"

    # --- running -------------------------------------------------------------------------

    def feed(self, start: datetime, end: datetime, seed: int = 7) -> dict[str, int]:
        """Trades in (start, end] into both bronze tables (silver and gold follow by materialized views)."""
        inserted = feed_trades(self.view, start, end, seed=seed)
        assert all(inserted.values()), f"the generator produced no trades in ({start}, {end}]: {inserted}"
        return inserted

    def cycle(
        self, now: datetime, names: Sequence[str] = ALL_TABLES, label: str = "cycle", **late_data: Any
    ) -> dict[str, OffloadResult]:
        """One scheduler cycle of the named tables (each table's dependencies must be among them),
        with the default late-data policy unless `late_data=` says otherwise."""
        return {r.table: r for r in run_cycle(self.view, self.specs(names), now, label, **late_data)}

    def run(self, table: str, now: datetime, **request: Any) -> OffloadResult:
        """One run of one table through run_offload; its upstream tables are those of the runbook."""
        spec = self.spec(table)
        request.setdefault("upstream", upstream_of(spec, self.tables))
        return run_offload(self.spark, self.settings, RunRequest(spec=spec, now=now, **request))

    def argv(self, table: str, *extra: str) -> list[str]:
        """The job's command line for a bronze table of this env."""
        return [
            "--table",
            table,
            "--source-database",
            self.name,
            "--timestamp-column",
            "exchange_timestamp",
            "--sequence-column",
            "sequence",
            "--target",
            self.target(table),
            *extra,
        ]

    # --- reading the Iceberg side ----------------------------------------------------------

    def iceberg(self, table: str) -> Table:
        """The table as committed now (loaded afresh)."""
        return iceberg_io.load_table(self.catalog, f"{self.name}.{table}")

    def watermark(self, table: str) -> Watermark | None:
        return iceberg_io.committed_watermark(self.iceberg(table))

    def snapshot_ids(self, table: str) -> list[int]:
        return [s.snapshot_id for s in self.iceberg(table).snapshots()]

    def iceberg_rows(self, table: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every row of the Iceberg table, timestamps as epoch microseconds."""
        return rows_of(self.iceberg(table).scan(selected_fields=tuple(columns)).to_arrow(), columns)

    def iceberg_count(self, table: str) -> int:
        return iceberg_io.row_count(self.iceberg(table))

    # --- reading the ClickHouse side -------------------------------------------------------

    def ch_rows(self, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.clickhouse.query(sql, parameters=parameters).result_rows]

    def ch_count_through(self, table: str, mark: Watermark) -> int:
        """Source rows the watermark covers, written out from the spec: those before its
        timestamp, or for a first-version watermark those with (timestamp, sequence) <= mark."""
        seq = "toInt64(sequence)" if table in (*BRONZE, "silver_trades") else "0"
        ts = "exchange_timestamp" if table in (*BRONZE, "silver_trades") else "window_start"
        if mark.sequence is None:
            before = self.ch_rows(
                f"SELECT count() FROM `{self.name}`.`{table}` WHERE {ts} < {{t:DateTime64(6, 'UTC')}}",
                t=ch_ts(mark.timestamp),
            )
            return int(before[0][0])
        rows = self.ch_rows(
            f"SELECT count() FROM `{self.name}`.`{table}` "
            f"WHERE {ts} < {{t:DateTime64(6, 'UTC')}} OR ({ts} = {{t:DateTime64(6, 'UTC')}} AND {seq} <= {{s:Int64}})",
            t=ch_ts(mark.timestamp),
            s=mark.sequence,
        )
        return int(rows[0][0])

    def max_sequence_at(self, table: str, timestamp: datetime) -> int | None:
        rows = self.ch_rows(
            f"SELECT count(), toInt64(max(sequence)) FROM `{self.name}`.`{table}` "
            "WHERE exchange_timestamp = {t:DateTime64(6, 'UTC')}",
            t=ch_ts(timestamp),
        )
        return int(rows[0][1]) if rows[0][0] else None

    def next_sequence(self, table: str) -> int:
        rows = self.ch_rows(f"SELECT toInt64(max(sequence)) FROM `{self.name}`.`{table}`")
        return int(rows[0][0] or 0) + 1

    def mirror(self, table: str) -> MirrorRow | None:
        return clickhouse_io.read_mirror(self.clickhouse, table)

    def audit(self, names: Sequence[str] = ALL_TABLES) -> dict[str, TableAudit]:
        return {a.table: a for a in audit(self.view, self.specs(names))}

    # --- state snapshots, for "changes nothing" -----------------------------------------------

    def state(self, names: Sequence[str]) -> dict[str, tuple[list[int], int, MirrorRow | None]]:
        """Per table: Iceberg snapshot ids, Iceberg row count and the mirror row."""
        return {n: (self.snapshot_ids(n), self.iceberg_count(n), self.mirror(n)) for n in names}

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _statements_for(catalog: str, namespace: str, tables: Iterable[str]) -> list[str]:
    """The Iceberg DDL of the namespace and of the given tables only (Spark DDL costs ~0.3 s a statement)."""
    wanted = set(tables)
    pattern = re.compile(rf"\b{re.escape(catalog)}\.{re.escape(namespace)}\.(\w+)")
    out = []
    for statement in iceberg_statements(catalog, namespace):
        match = pattern.search(statement)
        if match is None or match.group(1) in wanted:
            out.append(statement)
    return out


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one state directory of this pytest process: the Spark session's SQLite catalog lives here."""
    return tmp_path_factory.mktemp("offload-state")


@pytest.fixture(scope="session")
def spark(state_dir: Path) -> Iterator[SparkSession]:
    # The catalog settings do not depend on the ClickHouse port, which is not known yet.
    session = spark_session(local_settings(state_dir, clickhouse_port=8123), "iceberg-offload-it")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def stack(state_dir: Path, spark: SparkSession) -> Iterator[LocalStack]:
    with local_stack(state_dir, spark=spark) as s:
        yield s


@pytest.fixture(scope="session")
def base() -> datetime:
    """Yesterday's midnight (UTC): the tests' clocks are offsets from it."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


_env_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def make_env(stack: LocalStack) -> Iterator[Callable[..., OffloadEnv]]:
    """make_env(label, tables=ALL_TABLES): a fresh ClickHouse database and Iceberg namespace."""
    envs: list[OffloadEnv] = []

    def make(label: str, tables: Sequence[str] = ALL_TABLES) -> OffloadEnv:
        name = f"it{next(_env_numbers)}_{re.sub(r'[^A-Za-z0-9_]', '_', label)}"[:60]
        stack.clickhouse.command(f"CREATE DATABASE IF NOT EXISTS `{name}`")
        settings = replace(
            stack.settings,
            clickhouse=replace(stack.settings.clickhouse, database=name),
            catalog=replace(stack.settings.catalog, namespace=name),
            # Sub-windows of 5 minutes: a 15-minute window is read in three parts, so the seams between
            # sub-windows are exercised with rows on both sides. At most 4 parts: a table's first window
            # starts at the epoch and is cut by time, so all but the last part are empty (and cost a task each).
            subwindow_minutes=SUBWINDOW_MINUTES,
            subwindow_max=4,
        )
        client = clickhouse_io.connect(settings.clickhouse)
        clickhouse_io.apply_ddl(client)  # all nine source tables: the views chain bronze -> silver -> gold
        for statement in _statements_for(settings.catalog.name, name, tables):
            stack.spark.sql(statement)
        view = LocalStack(stack.state_dir, settings, stack.server, client, stack.spark)
        env = OffloadEnv(
            name=name,
            view=view,
            tables=runbook_tables(catalog=settings.catalog.name, namespace=name, database=name),
            catalog=iceberg_io.open_catalog(settings.catalog),
            _clients=[client],
        )
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
