"""A run's late-data audit in the OffloadTable: status.audit, the InSync condition, the events.

Pure logic. A run records its audit (core.repair.AuditRecord) in its commits; the reconciler
reads it back for the run it records, and this module turns it into the status. A run that
recorded none (it committed nothing, or there was nothing to audit yet) leaves the previous
audit in place: InSync speaks of the newest audit there is.
"""

from __future__ import annotations

from dataclasses import replace

from iceberg_offload.core.repair import AuditRecord, LateDataMode
from iceberg_offload.core.watermark import format_timestamp
from iceberg_offload.operator import conditions as cond
from iceberg_offload.operator.record import Event, FinishedRun
from iceberg_offload.operator.status import Condition, OffloadTableStatus, StatusAudit


def status_audit(record: AuditRecord) -> StatusAudit:
    return StatusAudit(
        mode=record.mode,
        last_audit_time=record.at,
        lower=record.lower,
        upper=record.upper,
        buckets_checked=record.buckets,
        buckets_differing=max(0, record.differing - record.repaired_buckets),
        rows_missing=record.rows_missing,
        rows_extra=record.rows_extra,
        buckets_repaired=record.repaired_buckets,
        rows_repaired=record.rows_repaired,
        late_rows=record.late_rows,
    )


def record_audit(status: OffloadTableStatus, record: AuditRecord | None) -> OffloadTableStatus:
    """The status with a run's audit as status.audit; unchanged when the run recorded none."""
    return status if record is None else replace(status, audit=status_audit(record))


def _range(audit: StatusAudit) -> str:
    return f"[{format_timestamp(audit.lower)}, {format_timestamp(audit.upper)})"


def differing_message(audit: StatusAudit) -> str:
    """What is still not equal to ClickHouse, and why it stays so."""
    why = (
        "late-data mode report: not repaired"
        if audit.mode is LateDataMode.REPORT
        else "late-data mode repair: not all repaired, the next run audits again"
    )
    return (
        f"{audit.buckets_differing} buckets differ from ClickHouse ({audit.rows_missing} rows missing, "
        f"{audit.rows_extra} extra) in {_range(audit)}; {why}"
    )


def in_sync_condition(audit: StatusAudit | None) -> Condition:
    """InSync from the newest audit: True when it left nothing differing, Unknown before any."""
    if audit is None:
        return cond.not_audited()
    if not audit.in_sync:
        return cond.out_of_sync(differing_message(audit))
    repaired = (
        f"; {audit.buckets_repaired} buckets repaired ({audit.late_rows} late rows brought in)"
        if audit.buckets_repaired
        else ""
    )
    return cond.in_sync(f"{audit.buckets_checked} buckets in {_range(audit)} equal to ClickHouse{repaired}")


def audit_events(done: FinishedRun) -> list[Event]:
    """Once per recorded run: Normal LateDataRepaired when it repaired, Warning OutOfSync when
    its audit left buckets differing."""
    if done.audit is None:
        return []
    audit = status_audit(done.audit)
    events = []
    if audit.buckets_repaired:
        events.append(
            Event(
                "Normal",
                "LateDataRepaired",
                f"{done.name} replaced {audit.buckets_repaired} buckets in {_range(audit)} that differed from "
                f"ClickHouse: {audit.late_rows} late rows brought in, {audit.rows_repaired} rows written",
            )
        )
    if not audit.in_sync:
        events.append(Event("Warning", "OutOfSync", f"{done.name}: {differing_message(audit)}"))
    return events
