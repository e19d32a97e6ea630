"""A table's maintenance record, kept in its properties, read back through pyiceberg."""

from __future__ import annotations

from pyiceberg.table import Table

from iceberg_offload.core.maintenance import MAINTENANCE_RECORD, MaintenanceError, MaintenanceRecord


def maintenance_record(table: Table) -> MaintenanceRecord | None:
    """The newest maintenance run's record, None if the table was never maintained (or the
    record cannot be read: a maintenance run rewrites it)."""
    text = table.properties.get(MAINTENANCE_RECORD)
    if not text:
        return None
    try:
        return MaintenanceRecord.from_json(text)
    except MaintenanceError:
        return None
