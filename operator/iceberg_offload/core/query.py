"""ClickHouse queries for a window, built with server-side parameters.

Pure logic: no engine, catalog or network imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from iceberg_offload.core import audit
from iceberg_offload.core.tables import SourceSpec
from iceberg_offload.core.typemap import ColumnMapping, quote_identifier
from iceberg_offload.core.watermark import SEQUENCE_MAX, Watermark, Window

_TS_PARAM = "DateTime64(6, 'UTC')"


@dataclass(frozen=True)
class Query:
    sql: str
    parameters: dict[str, str]


def _ts_value(mark: Watermark) -> str:
    return mark.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")


def window_predicate(source: SourceSpec, window: Window) -> Query:
    """The rows with lower <= timestamp < upper, in a form the primary key can use.

    A lower bound committed by the first protocol version, (T, sequence), continues exactly
    where that version stopped: after T, and at T the rows with a higher sequence (all rows at
    T were covered when the source has no sequence column or the sequence was the maximum).
    """
    ts = quote_identifier(source.timestamp_column)
    params = {"lo_ts": _ts_value(window.lower), "hi_ts": _ts_value(window.upper)}
    lo_ts, hi_ts = f"{{lo_ts:{_TS_PARAM}}}", f"{{hi_ts:{_TS_PARAM}}}"
    sequence = window.lower.sequence
    if sequence is None:
        lower = f"{ts} >= {lo_ts}"
    elif source.sequence_column is None or sequence == SEQUENCE_MAX:
        lower = f"{ts} > {lo_ts}"
    else:
        params["lo_seq"] = str(sequence)
        seq = quote_identifier(source.sequence_column)
        lower = f"{ts} >= {lo_ts} AND ({ts} > {lo_ts} OR {seq} > {{lo_seq:UInt64}})"
    return Query(f"{lower} AND {ts} < {hi_ts}", params)


def select_window(source: SourceSpec, columns: Sequence[ColumnMapping], window: Window) -> Query:
    """Read a window's rows, each column cast to its Iceberg type."""
    where = window_predicate(source, window)
    select = ", ".join(c.select_expr for c in columns)
    return Query(f"SELECT {select} FROM {source.qualified} WHERE {where.sql}", where.parameters)


def window_stats(source: SourceSpec, window: Window) -> Query:
    """Count a window's rows and find the earliest timestamp: one row (rows, earliest)."""
    where = window_predicate(source, window)
    ts = quote_identifier(source.timestamp_column)
    sql = f"SELECT count(), toDateTime64(min({ts}), 6, 'UTC') FROM {source.qualified} WHERE {where.sql}"
    return Query(sql, where.parameters)


def describe(source: SourceSpec) -> Query:
    """The source's columns and their ClickHouse types, in table order."""
    return Query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {tbl:String} ORDER BY position",
        {"db": source.database, "tbl": source.table},
    )


def engine_full(source: SourceSpec) -> Query:
    """The source's engine clause with its TTL (empty for a view): its retention."""
    return Query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {tbl:String}",
        {"db": source.database, "tbl": source.table},
    )


def audit_buckets(source: SourceSpec, columns: Sequence[ColumnMapping], window: Window, width: timedelta) -> Query:
    """Per width-aligned bucket of the window: (bucket index, rows, checksum) of the audited
    columns, as core.audit defines them: the ClickHouse side of an audit, computed in SQL."""
    where = window_predicate(source, window)
    ts = quote_identifier(source.timestamp_column)
    digest = audit.digest_sql([audit.canonical_sql(c.select_expr, c.iceberg_type) for c in columns])
    width_us = width // timedelta(microseconds=1)
    sql = (
        f"SELECT intDiv(toUnixTimestamp64Micro(toDateTime64({ts}, 6, 'UTC')), {width_us}) AS bucket, "
        f"count() AS rows, sumWithOverflow({digest}) AS checksum "
        f"FROM {source.qualified} WHERE {where.sql} GROUP BY bucket ORDER BY bucket"
    )
    return Query(sql, where.parameters)
