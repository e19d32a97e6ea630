"""ClickHouse I/O: connections, schema, window reads and the `offload_watermarks` mirror."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from iceberg_offload.adapters.ddl import clickhouse_statements
from iceberg_offload.core import audit, query
from iceberg_offload.core.mirror import COLUMNS, MirrorRow
from iceberg_offload.core.repair import parse_ttl
from iceberg_offload.core.settings import ClickHouseSettings
from iceberg_offload.core.tables import SourceSpec
from iceberg_offload.core.typemap import ColumnMapping
from iceberg_offload.core.watermark import Window, utc


class SourceError(RuntimeError):
    """The ClickHouse source cannot be read as specified."""


def connect(settings: ClickHouseSettings, *, session: bool = True) -> Client:
    """A client for the configured server; without a session, concurrent queries never collide."""
    try:
        return clickhouse_connect.get_client(
            host=settings.host,
            port=settings.port,
            username=settings.user,
            password=settings.password,
            database=settings.database,
            secure=settings.secure,
            connect_timeout=settings.connect_timeout,
            send_receive_timeout=settings.query_timeout,
            autogenerate_session_id=session,
        )
    except Exception as exc:  # clickhouse-connect raises several types for one cause
        raise SourceError(
            f"cannot connect to ClickHouse at {settings.host}:{settings.port} as {settings.user!r}: {_first_line(exc)}"
        ) from exc


def describe(client: Client, source: SourceSpec) -> list[tuple[str, str]]:
    """The source's (column, ClickHouse type) pairs; SourceError if the table does not exist."""
    q = query.describe(source)
    rows = client.query(q.sql, parameters=q.parameters).result_rows
    if not rows:
        raise SourceError(f"ClickHouse table {source.database}.{source.table} does not exist")
    return [(str(name), str(type_)) for name, type_ in rows]


@dataclass(frozen=True)
class WindowStats:
    rows: int
    first_timestamp: datetime | None = None


def window_stats(client: Client, source: SourceSpec, window: Window) -> WindowStats:
    q = query.window_stats(source, window)
    rows, first = client.query(q.sql, parameters=q.parameters).result_rows[0]
    return WindowStats(int(rows), utc(first) if rows else None)


def read_window(
    client: Client, source: SourceSpec, columns: Sequence[ColumnMapping], window: Window
) -> Iterator[pa.RecordBatch]:
    """Stream a window's rows as Arrow record batches, cast to the Iceberg types."""
    q = query.select_window(source, columns, window)
    with client.query_arrow_stream(q.sql, parameters=q.parameters) as stream:
        yield from stream


def audit_buckets(
    client: Client, source: SourceSpec, columns: Sequence[ColumnMapping], window: Window, width: timedelta
) -> dict[int, audit.BucketStats]:
    """The ClickHouse side of an audit of `window`: rows and checksum per bucket, computed in SQL."""
    q = query.audit_buckets(source, columns, window, width)
    rows = client.query(q.sql, parameters=q.parameters).result_rows
    return {int(b): audit.BucketStats(int(n), int(c)) for b, n, c in rows}


def retention(client: Client, source: SourceSpec) -> timedelta | None:
    """How long the source keeps a row (its TTL), or None if it keeps every row."""
    q = query.engine_full(source)
    rows = client.query(q.sql, parameters=q.parameters).result_rows
    if not rows:
        raise SourceError(f"ClickHouse table {source.database}.{source.table} does not exist")
    return parse_ttl(str(rows[0][0] or ""))


def read_mirror(client: Client, table_name: str) -> MirrorRow | None:
    result = client.query(
        f"SELECT {', '.join(COLUMNS)} FROM offload_watermarks FINAL WHERE table_name = {{t:String}}",
        parameters={"t": table_name},
    )
    if not result.result_rows:
        return None
    values: dict[str, Any] = dict(zip(COLUMNS, result.result_rows[0], strict=True))
    for key in ("last_offload_timestamp", "last_successful_run"):
        values[key] = utc(values[key])
    return MirrorRow(**values)


def write_mirror(client: Client, row: MirrorRow) -> None:
    """Insert the row, then merge so the runbook's plain SELECT shows one row per table.

    The table is a ReplacingMergeTree keyed by table name that keeps the last row inserted:
    a retried insert of the same row (the client may have missed that it landed) is harmless.
    """
    client.insert("offload_watermarks", [list(row.values())], column_names=list(COLUMNS))
    client.command("OPTIMIZE TABLE offload_watermarks FINAL")


def apply_ddl(client: Client, ddl_root: Path | None = None) -> None:
    """Create the watermark table and the nine source tables with their views (idempotent), from
    the DDL under `ddl_root` (default: the repository's ddl/)."""
    for statement in clickhouse_statements(ddl_root):
        client.command(statement)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
