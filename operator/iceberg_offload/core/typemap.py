"""ClickHouse to Iceberg type mapping, applied by casting in the SELECT.

Pure logic: no engine, catalog or network imports. The tables below are the mapping's one
source; ddl/TYPE_MAPPING.md documents them and a unit test holds the two together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class TypeMappingError(ValueError):
    """A ClickHouse column that has no Iceberg counterpart, or does not fit its target."""


@dataclass(frozen=True)
class IcebergType:
    """An Iceberg primitive type by its Spark SQL name, e.g. 'bigint' or 'decimal(18,8)'."""

    name: str
    precision: int = 0
    scale: int = 0

    def __str__(self) -> str:
        if self.name == "decimal":
            return f"decimal({self.precision},{self.scale})"
        return self.name


@dataclass(frozen=True)
class Primitive:
    """An Iceberg primitive type the offload writes: its names, and the Arrow type its batches carry
    as a pyarrow factory and its arguments (core stays pure: the job builds the Arrow type)."""

    spark: str
    iceberg: str
    arrow: str
    arrow_args: tuple[str, ...] = ()


PRIMITIVES = {
    p.spark: p
    for p in (
        Primitive("timestamp", "timestamptz", "timestamp", ("us", "UTC")),
        Primitive("date", "date", "date32"),
        Primitive("int", "int", "int32"),
        Primitive("bigint", "long", "int64"),
        Primitive("float", "float", "float32"),
        Primitive("double", "double", "float64"),
        Primitive("string", "string", "string"),
        Primitive("boolean", "boolean", "bool_"),
    )
}
TIMESTAMP = IcebergType("timestamp")
DATE = IcebergType("date")
INT = IcebergType("int")
BIGINT = IcebergType("bigint")
FLOAT = IcebergType("float")
DOUBLE = IcebergType("double")
STRING = IcebergType("string")
BOOLEAN = IcebergType("boolean")


def spark_type(simple_string: str) -> IcebergType:
    """An Iceberg column's type from Spark's name of it (`DataType.simpleString()`). A type the
    offload does not write is kept by name, so that check_target can name it."""
    if simple_string.startswith("decimal("):
        precision, scale = simple_string[len("decimal(") : -1].split(",")
        return IcebergType("decimal", int(precision), int(scale))
    return IcebergType(simple_string)


def arrow_factory(iceberg_type: IcebergType) -> tuple[str, tuple[str | int, ...]]:
    """The pyarrow factory and arguments that build the Arrow type of an Iceberg column."""
    if iceberg_type.name == "decimal":
        return "decimal128", (iceberg_type.precision, iceberg_type.scale)
    if iceberg_type.name not in PRIMITIVES:
        raise TypeMappingError(f"Iceberg column type {iceberg_type} is not supported by the offload")
    primitive = PRIMITIVES[iceberg_type.name]
    return primitive.arrow, primitive.arrow_args


def decimal(precision: int, scale: int) -> IcebergType:
    if not 1 <= precision <= 38 or not 0 <= scale <= precision:
        raise TypeMappingError(f"decimal({precision},{scale}) is outside Iceberg's decimal(1..38, 0..P)")
    return IcebergType("decimal", precision, scale)


@dataclass(frozen=True)
class ColumnMapping:
    """How one ClickHouse column is read: its Iceberg type and the SELECT expression."""

    name: str
    clickhouse_type: str
    iceberg_type: IcebergType
    nullable: bool
    select_expr: str


_WRAPPER = re.compile(r"^(Nullable|LowCardinality)\((.*)\)$")
_DECIMAL = re.compile(r"^Decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_DECIMAL_N = re.compile(r"^Decimal(32|64|128|256)\(\s*(\d+)\s*\)$")
_DECIMAL_N_PRECISION = {"32": 9, "64": 18, "128": 38, "256": 76}
# ClickHouse types without parameters: their Iceberg type and the cast ({c} is the column).
PLAIN_TYPES = {
    "Int8": (INT, "toInt32({c})"),
    "Int16": (INT, "toInt32({c})"),
    "Int32": (INT, "{c}"),
    "UInt8": (INT, "toInt32({c})"),
    "UInt16": (INT, "toInt32({c})"),
    "Int64": (BIGINT, "{c}"),
    "UInt32": (BIGINT, "toInt64({c})"),
    "UInt64": (BIGINT, "accurateCast({c}, 'Int64')"),
    "Float32": (FLOAT, "{c}"),
    "Float64": (DOUBLE, "{c}"),
    "String": (STRING, "{c}"),
    "UUID": (STRING, "toString({c})"),
    "Bool": (BOOLEAN, "{c}"),
    "Date": (DATE, "toDate32({c})"),
    "Date32": (DATE, "{c}"),
}


def quote_identifier(name: str) -> str:
    """A ClickHouse identifier in backquotes."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def map_column(name: str, clickhouse_type: str) -> ColumnMapping:
    """Map one ClickHouse column to its Iceberg type and the expression that casts it."""
    nullable = False
    inner = clickhouse_type.strip()
    while match := _WRAPPER.match(inner):
        nullable = nullable or match.group(1) == "Nullable"
        inner = match.group(2).strip()
    column = quote_identifier(name)
    iceberg_type, template = _map_inner(name, clickhouse_type, inner)
    expr = template.format(c=column)
    if expr != column:
        expr = f"{expr} AS {column}"
    return ColumnMapping(name, clickhouse_type, iceberg_type, nullable, expr)


def _map_inner(name: str, full_type: str, inner: str) -> tuple[IcebergType, str]:
    if inner in PLAIN_TYPES:
        return PLAIN_TYPES[inner]
    if inner == "DateTime" or inner.startswith(("DateTime(", "DateTime64(")):
        return TIMESTAMP, "toDateTime64({c}, 6, 'UTC')"
    if inner.startswith(("Enum8(", "Enum16(")) or inner.startswith("FixedString("):
        return STRING, "toString({c})"
    try:
        if match := _DECIMAL.match(inner):
            return decimal(int(match.group(1)), int(match.group(2))), "{c}"
        if match := _DECIMAL_N.match(inner):
            return decimal(_DECIMAL_N_PRECISION[match.group(1)], int(match.group(2))), "{c}"
    except TypeMappingError as exc:
        raise TypeMappingError(f"column {name!r} of type {full_type}: {exc}") from exc
    raise TypeMappingError(f"column {name!r} has ClickHouse type {full_type}, which has no Iceberg mapping")


def check_target(mapping: ColumnMapping, target: IcebergType, target_required: bool) -> None:
    """Refuse to write a column into an Iceberg column of another type, or NULLs into a required one."""
    if mapping.iceberg_type != target:
        raise TypeMappingError(
            f"column {mapping.name!r}: ClickHouse {mapping.clickhouse_type} maps to Iceberg "
            f"{mapping.iceberg_type}, but the target column is {target}"
        )
    if mapping.nullable and target_required:
        raise TypeMappingError(
            f"column {mapping.name!r}: ClickHouse {mapping.clickhouse_type} may hold NULL, "
            "but the target column is required (NOT NULL)"
        )
