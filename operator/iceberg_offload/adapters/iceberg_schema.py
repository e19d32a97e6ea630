"""Schema evolution through pyiceberg: an Iceberg table's columns, and a SchemaChange applied in
one catalog commit that requires the schema the change was computed from.

pyiceberg's `update_schema` commit carries `AssertCurrentSchemaId` of the schema its table object
holds (pyiceberg/table/update/schema.py, `UpdateSchema._commit`), so the change is computed from,
and committed on, the same table object: if another commit changed the schema in between, the
catalog refuses ours and nothing is written. This module never writes rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    PrimitiveType,
    StringType,
    TimestampType,
    TimestamptzType,
)

from iceberg_offload.core.schema_change import SCHEMA_CHANGE_PROPERTY, IcebergColumn, SchemaChange
from iceberg_offload.core.typemap import IcebergType, decimal

# Spark's names of the Iceberg types the offload writes (typemap.IcebergType), and pyiceberg's.
_TYPES: dict[str, PrimitiveType] = {
    "timestamp": TimestamptzType(),
    "date": DateType(),
    "int": IntegerType(),
    "bigint": LongType(),
    "float": FloatType(),
    "double": DoubleType(),
    "string": StringType(),
    "boolean": BooleanType(),
}


class SchemaMoved(RuntimeError):
    """Another commit changed the table's schema into something other than this run's change."""


@dataclass(frozen=True)
class Applied:
    """The table after the change, and what this run's commit changed (None: nothing, also when
    another run had already made the same change)."""

    table: Table
    summary: str | None


def iceberg_type(field_type: object) -> IcebergType:
    """The typemap type of a pyiceberg type; a type the offload does not write keeps its name."""
    if isinstance(field_type, DecimalType):
        return decimal(field_type.precision, field_type.scale)
    if isinstance(field_type, TimestampType):
        return IcebergType("timestamp_ntz")
    for name, candidate in _TYPES.items():
        if field_type == candidate:
            return IcebergType(name)
    return IcebergType(str(field_type))


def pyiceberg_type(mapped: IcebergType) -> PrimitiveType:
    if mapped.name == "decimal":
        return DecimalType(mapped.precision, mapped.scale)
    return _TYPES[mapped.name]


def columns_of(table: Table) -> list[IcebergColumn]:
    """The table's top-level columns, from the schema its table object holds."""
    return [IcebergColumn(f.name, iceberg_type(f.field_type), f.required) for f in table.schema().fields]


def last_schema_change(table: Table) -> str | None:
    """The newest schema evolution the table's commits recorded (`offload.schema-change`), if any."""
    return table.properties.get(SCHEMA_CHANGE_PROPERTY) or None


def apply_change(
    table: Table, change: SchemaChange, recompute: Callable[[Sequence[IcebergColumn]], SchemaChange], note: str
) -> Applied:
    """Apply `change`, computed from `table`'s schema, in one catalog commit that also records
    `note` in the table property `offload.schema-change`. If the schema moved meanwhile, the
    commit is refused: re-read, and if `recompute` of the new columns leaves nothing to do
    (another run made the same change) that is success; otherwise SchemaMoved."""
    if change.refused:
        raise ValueError(f"a refused schema change cannot be applied: {change.reason()}")
    if change.empty:
        return Applied(table, None)
    try:
        with table.transaction() as tx:
            with tx.update_schema() as update:
                for add in change.adds:
                    update.add_column(add.name, pyiceberg_type(add.iceberg_type), required=False)
                for widen in change.widenings:
                    update.update_column(widen.name, field_type=pyiceberg_type(widen.after))
            tx.set_properties({SCHEMA_CHANGE_PROPERTY: note})
    except CommitFailedException as exc:
        fresh = table.refresh()
        again = recompute(columns_of(fresh))
        if again.empty:
            return Applied(fresh, None)
        name = ".".join(table.name())
        raise SchemaMoved(
            f"the schema of Iceberg table {name} changed while this run evolved it "
            f"({again.summary() or again.reason()} is still needed): this run wrote nothing; "
            "the next run compares again"
        ) from exc
    return Applied(table.refresh(), change.summary())
