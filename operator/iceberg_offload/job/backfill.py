"""A run in backfill mode: instead of a window, make a committed range equal to ClickHouse."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyiceberg.catalog import Catalog

from iceberg_offload.adapters import audit
from iceberg_offload.core.repair import LateDataPolicy, RepairError
from iceberg_offload.core.result import OffloadResult
from iceberg_offload.core.tables import TableSpec
from iceberg_offload.core.typemap import ColumnMapping
from iceberg_offload.core.watermark import format_timestamp
from iceberg_offload.job.errors import OffloadError


@dataclass(frozen=True)
class BackfillRequest:
    name: str
    lower: datetime
    upper: datetime
    allow_deletes: bool = False


def run_backfill(
    catalog: Catalog,
    client: Any,
    columns: list[ColumnMapping],
    spec: TableSpec,
    backfill: BackfillRequest,
    policy: LateDataPolicy | None,
    run_id: str,
    started: float,
    now: datetime | None = None,
) -> OffloadResult:
    """Make the backfill's range equal to ClickHouse, a bucket per commit (audit.backfill)."""
    try:
        outcome = audit.backfill(
            client,
            catalog,
            spec,
            columns,
            backfill.lower,
            backfill.upper,
            policy=policy or LateDataPolicy(),
            name=backfill.name,
            now=now or datetime.now(UTC),
            allow_deletes=backfill.allow_deletes,
        )
    except RepairError as exc:
        raise OffloadError(f"backfill {backfill.name} of {spec.name}: {exc}") from exc
    return OffloadResult(
        table=spec.name,
        run_id=run_id,
        outcome="committed" if outcome.commits else "skipped",
        rows=outcome.rows,
        window_from=format_timestamp(backfill.lower),
        window_to=format_timestamp(backfill.upper),
        rows_repaired=outcome.rows,
        duration_seconds=round(time.monotonic() - started, 3),
    )
