"""ClickHouse queries for a window, built with server-side parameters.

Pure logic: no engine, catalog or network imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    """The rows with lower < (timestamp, sequence) <= upper, in a form the primary key can use."""
    ts = quote_identifier(source.timestamp_column)
    seq = quote_identifier(source.sequence_column) if source.sequence_column else None
    params = {
        "lo_ts": _ts_value(window.lower),
        "hi_ts": _ts_value(window.upper),
    }
    lo_ts, hi_ts = f"{{lo_ts:{_TS_PARAM}}}", f"{{hi_ts:{_TS_PARAM}}}"
    if seq is None or window.lower.sequence == SEQUENCE_MAX:
        lower = f"{ts} > {lo_ts}"
    else:
        params["lo_seq"] = str(window.lower.sequence)
        lower = f"{ts} >= {lo_ts} AND ({ts} > {lo_ts} OR {seq} > {{lo_seq:UInt64}})"
    if seq is None or window.upper.sequence == SEQUENCE_MAX:
        upper = f"{ts} <= {hi_ts}"
    else:
        params["hi_seq"] = str(window.upper.sequence)
        upper = f"{ts} <= {hi_ts} AND ({ts} < {hi_ts} OR {seq} <= {{hi_seq:UInt64}})"
    return Query(f"{lower} AND {upper}", params)


def select_window(source: SourceSpec, columns: Sequence[ColumnMapping], window: Window) -> Query:
    """Read a window's rows, each column cast to its Iceberg type."""
    where = window_predicate(source, window)
    select = ", ".join(c.select_expr for c in columns)
    return Query(f"SELECT {select} FROM {source.qualified} WHERE {where.sql}", where.parameters)


def window_stats(source: SourceSpec, window: Window) -> Query:
    """Count a window's rows, and find the highest sequence at its upper timestamp.

    Returns one row: (rows, rows at the upper timestamp, max sequence at the upper timestamp,
    the earliest timestamp).
    """
    where = window_predicate(source, window)
    ts = quote_identifier(source.timestamp_column)
    at_upper = f"{ts} = {{hi_ts:{_TS_PARAM}}}"
    max_seq = (
        f"maxIf({quote_identifier(source.sequence_column)}, {at_upper})" if source.sequence_column else "toInt64(0)"
    )
    sql = (
        f"SELECT count(), countIf({at_upper}), {max_seq}, toDateTime64(min({ts}), 6, 'UTC') "
        f"FROM {source.qualified} WHERE {where.sql}"
    )
    return Query(sql, where.parameters)


def describe(source: SourceSpec) -> Query:
    """The source's columns and their ClickHouse types, in table order."""
    return Query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {tbl:String} ORDER BY position",
        {"db": source.database, "tbl": source.table},
    )
