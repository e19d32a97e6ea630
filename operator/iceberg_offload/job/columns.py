"""The columns a run reads: each target column's SELECT from its source column, type-checked,
and the Arrow schema the executors conform their batches to."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from pyspark.sql.types import StructType

from iceberg_offload.core.tables import TableSpec
from iceberg_offload.core.typemap import ColumnMapping, IcebergType, arrow_factory, check_target, map_column, spark_type
from iceberg_offload.job.errors import OffloadError


def plan_columns(source_columns: Sequence[tuple[str, str]], target: StructType, spec: TableSpec) -> list[ColumnMapping]:
    """The SELECT of every target column from its source column, type-checked."""
    by_name = dict(source_columns)
    where = f"ClickHouse table {spec.source.database}.{spec.source.table}"
    _check_order_columns(by_name, spec, where)
    mappings = []
    for f in target.fields:
        if f.name not in by_name:
            raise OffloadError(f"column {f.name!r} of Iceberg table {spec.target.identifier} does not exist in {where}")
        mapping = map_column(f.name, by_name[f.name])
        check_target(mapping, spark_type(f.dataType.simpleString()), target_required=not f.nullable)
        mappings.append(mapping)
    return mappings


def _check_order_columns(by_name: dict[str, str], spec: TableSpec, where: str) -> None:
    """The timestamp and sequence columns exist and have types that order rows."""
    for column in filter(None, (spec.source.timestamp_column, spec.source.sequence_column)):
        if column not in by_name:
            raise OffloadError(f"column {column!r} named in the spec does not exist in {where}")
    ts_type = by_name[spec.source.timestamp_column]
    if "DateTime" not in ts_type:
        raise OffloadError(f"timestamp column {spec.source.timestamp_column!r} of {where} is {ts_type}, not a DateTime")
    if spec.source.sequence_column and "Int" not in by_name[spec.source.sequence_column]:
        raise OffloadError(
            f"sequence column {spec.source.sequence_column!r} of {where} is "
            f"{by_name[spec.source.sequence_column]}, not an integer"
        )


def arrow_type(iceberg_type: IcebergType) -> pa.DataType:
    """The Arrow type of an Iceberg column, built from the type mapping's table."""
    factory, args = arrow_factory(iceberg_type)
    return getattr(pa, factory)(*args)


def arrow_schema(target: StructType) -> pa.Schema:
    """The target schema in Arrow, for the executors to conform their batches to."""
    fields = [pa.field(f.name, arrow_type(spark_type(f.dataType.simpleString())), f.nullable) for f in target.fields]
    return pa.schema(fields)
