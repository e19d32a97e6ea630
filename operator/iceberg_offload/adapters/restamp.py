"""The recovery of a table whose every trace of its watermark is gone (a user's own expiry
removed the snapshots and the watermark tag): stamp one from the data, without a row twice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from iceberg_offload.adapters import iceberg_io, watermark_io
from iceberg_offload.core.result import reset_properties
from iceberg_offload.core.trace import restamp_mark
from iceberg_offload.core.watermark import Watermark, utc

REASON = "restamp: the watermark re-stamped from the data after its every trace was expired"


@dataclass(frozen=True)
class RestampPlan:
    table: str
    timestamp_column: str
    newest_row: datetime | None
    watermark: Watermark
    snapshot_id: int | None
    rows: int


def plan_restamp(table: Table) -> RestampPlan:
    """What a restamp stamps: just after the newest row. Refused (TargetError) when the table's
    watermark can still be read (then there is nothing to recover; `reset` moves it back) or it
    holds no row (its first run starts from the beginning anyway)."""
    name = ".".join(table.name())
    found = watermark_io.read(table)
    if found.watermark is not None:
        raise iceberg_io.TargetError(
            f"{name} has a watermark ({found.watermark}, from its {found.source}): nothing to restamp; "
            "to move it back use 'iceberg-offload reset'"
        )
    column = iceberg_io.timestamp_column(table)
    newest = _newest(table, column)
    mark = restamp_mark(newest)
    if mark is None:
        raise iceberg_io.TargetError(f"{name} holds no row: nothing to restamp; its first run offloads from the start")
    current = table.metadata.current_snapshot_id
    return RestampPlan(name, column, newest, mark, current, iceberg_io.row_count(table))


def _newest(table: Table, column: str) -> datetime | None:
    newest: datetime | None = None
    for batch in table.scan(selected_fields=(column,)).to_arrow_batch_reader():
        value = pc.max(batch.column(0)).as_py()
        if value is not None and (newest is None or utc(value) > newest):
            newest = utc(value)
    return newest


def restamp(table: Table, plan: RestampPlan) -> Watermark:
    """Stamp the plan's watermark in a commit of no rows, if the table has not moved since it
    was planned; the watermark tag moves onto that commit."""
    properties = reset_properties(plan.watermark, f"restamp-{uuid.uuid4().hex[:12]}", plan.timestamp_column, REASON)
    tx = table.transaction()
    tx.append(table.schema().as_arrow().empty_table(), snapshot_properties=properties)
    try:
        watermark_io.commit(table.catalog, table, plan.snapshot_id, tx._updates)
    except CommitFailedException as exc:
        raise iceberg_io.ConcurrentCommit(
            f"{plan.table} changed while its restamp was planned: nothing was stamped; run the restamp again"
        ) from exc
    after = iceberg_io.committed_watermark(table.refresh())
    if after != plan.watermark:
        raise iceberg_io.TargetError(f"the restamp of {plan.table} committed, but its watermark reads {after}")
    return plan.watermark
