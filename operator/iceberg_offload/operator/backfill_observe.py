"""What one reconcile of an OffloadBackfill read, turned into decide's `Observed`
(operator/backfill.py).

Pure logic: no Kubernetes or Iceberg I/O. The same reading always gives the same observation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from iceberg_offload.core.tables import SpecError
from iceberg_offload.core.watermark import parse_timestamp
from iceberg_offload.operator.backfill import AppState, Observed, Progress, RetentionRead, parse_backfill_spec
from iceberg_offload.operator.backfill_status import BackfillStatus
from iceberg_offload.operator.runs import LABEL_BACKFILL_OF, LABEL_GENERATION, LABEL_MAINTENANCE_OF
from iceberg_offload.operator.spec import OffloadTableSpec
from iceberg_offload.operator.status import OffloadTableStatus


def app_state(item: Mapping[str, Any]) -> AppState:
    """A SparkApplication of the table as a backfill sees it (labels as manifests write them)."""
    meta = item.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = item.get("status") or {}
    state = status.get("applicationState") or {}
    terminated = status.get("terminationTime")
    return AppState(
        name=str(meta.get("name") or ""),
        state=str(state.get("state") or ""),
        backfill_of=labels.get(LABEL_BACKFILL_OF),
        maintenance_of=labels.get(LABEL_MAINTENANCE_OF),
        generation=int(labels.get(LABEL_GENERATION) or 0),
        terminated=parse_timestamp(str(terminated)) if terminated else None,
        error=str(state.get("errorMessage") or ""),
    )


def observe_backfill(
    body: Mapping[str, Any],
    now: datetime,
    *,
    table: Mapping[str, Any] | None,
    table_spec: OffloadTableSpec | None = None,
    table_error: str | None = None,
    apps: Sequence[Mapping[str, Any]] = (),
    retention: RetentionRead | None = None,
    progress: Progress | None = None,
) -> Observed:
    """The observation decide() decides from: the backfill's body, its table's body (None: not
    found) with its spec parsed (None and why), the table's SparkApplications."""
    meta = body["metadata"]
    try:
        spec, spec_error = parse_backfill_spec(body.get("spec") or {}), None
    except SpecError as exc:
        spec, spec_error = None, str(exc)
    mark = OffloadTableStatus.from_dict((table or {}).get("status")).watermark
    return Observed(
        name=str(meta["name"]),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        now=now,
        spec=spec,
        spec_error=spec_error,
        status=BackfillStatus.from_dict(body.get("status")),
        table_found=table is not None,
        table_spec=table_spec,
        table_error=table_error,
        watermark=mark.mark if mark else None,
        apps=tuple(app_state(item) for item in apps),
        retention=retention,
        progress=progress,
    )
