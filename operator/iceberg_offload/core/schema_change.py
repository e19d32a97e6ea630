"""Schema evolution: what a ClickHouse source's columns ask of its Iceberg target.

Pure logic: no engine, catalog or network imports. The change is computed from the ClickHouse
columns (name, ClickHouse type) and the Iceberg table's columns; it holds either the additions
and widenings Iceberg can apply without rewriting a row, or refusals, each naming one column,
never both: a refused change is applied in no part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, get_args

from iceberg_offload.core.typemap import (
    BIGINT,
    DOUBLE,
    FLOAT,
    INT,
    PRIMITIVES,
    IcebergType,
    TypeMappingError,
    map_column,
)
from iceberg_offload.core.watermark import format_timestamp

Mode = Literal["evolve", "fail"]
MODES: tuple[Mode, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "evolve"
# The table property the schema's commit records its summary in (status.lastSchemaChange).
SCHEMA_CHANGE_PROPERTY = "offload.schema-change"

# The type promotions Iceberg applies to existing data files without rewriting them (decimals
# separately: a wider precision at the same scale).
_PROMOTIONS = {(INT, BIGINT), (FLOAT, DOUBLE)}


@dataclass(frozen=True)
class IcebergColumn:
    """A top-level column of the Iceberg table: its name, type (Spark's name) and NOT NULL flag."""

    name: str
    iceberg_type: IcebergType
    required: bool = False


@dataclass(frozen=True)
class AddColumn:
    """A ClickHouse column the Iceberg table lacks: added as an optional column (old rows read NULL)."""

    name: str
    iceberg_type: IcebergType
    clickhouse_type: str


@dataclass(frozen=True)
class WidenColumn:
    """An Iceberg column whose ClickHouse source now maps to a wider type Iceberg can promote it to."""

    name: str
    before: IcebergType
    after: IcebergType
    clickhouse_type: str


@dataclass(frozen=True)
class SchemaChange:
    """What the Iceberg table needs: additions and widenings, or refusals (then nothing else)."""

    adds: tuple[AddColumn, ...] = ()
    widenings: tuple[WidenColumn, ...] = ()
    refusals: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.adds or self.widenings or self.refusals)

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    def summary(self) -> str | None:
        """A short account such as `added venue string; widened qty int->long`; None for no change."""
        parts = [f"added {a.name} {iceberg_name(a.iceberg_type)}" for a in self.adds]
        parts += [f"widened {w.name} {iceberg_name(w.before)}->{iceberg_name(w.after)}" for w in self.widenings]
        return "; ".join(parts) or None

    def reason(self) -> str:
        """All refusals as one line."""
        return "; ".join(self.refusals)


def iceberg_name(iceberg_type: IcebergType) -> str:
    """Iceberg's own name of a type (`long`, not Spark's `bigint`)."""
    primitive = PRIMITIVES.get(iceberg_type.name)
    return primitive.iceberg if primitive is not None and iceberg_type.name != "decimal" else str(iceberg_type)


def is_widening(before: IcebergType, after: IcebergType) -> bool:
    """Whether Iceberg promotes `before` to `after` in place: int->long, float->double, or a
    decimal to a larger precision at the same scale."""
    if before.name == after.name == "decimal":
        return after.scale == before.scale and after.precision > before.precision
    return (before, after) in _PROMOTIONS


def is_narrowing(before: IcebergType, after: IcebergType) -> bool:
    return is_widening(after, before)


def diff(
    clickhouse: Sequence[tuple[str, str]],
    iceberg: Sequence[IcebergColumn],
    mode: Mode = DEFAULT_MODE,
    source: str = "the ClickHouse table",
    target: str = "the Iceberg table",
) -> SchemaChange:
    """The change that makes the Iceberg columns take every ClickHouse column, or its refusals.

    In `fail` mode any addition or widening is a refusal too. A ClickHouse column that lost its
    Nullable needs nothing (the Iceberg column stays optional)."""
    if mode not in MODES:
        raise ValueError(f"schema evolution mode {mode!r} is not one of {', '.join(MODES)}")
    by_name = {c.name: c for c in iceberg}
    ch_names = {name for name, _ in clickhouse}
    adds: list[AddColumn] = []
    widenings: list[WidenColumn] = []
    refusals = [
        f"column {c.name!r} of Iceberg table {target} no longer exists in ClickHouse {source}: the offload never "
        f"drops an Iceberg column; add it back in ClickHouse (or read the table through a view with NULL AS {c.name}) "
        "or drop it from the Iceberg table by hand"
        for c in iceberg
        if c.name not in ch_names
    ]
    for name, ch_type in clickhouse:
        try:
            mapped = map_column(name, ch_type).iceberg_type
        except TypeMappingError as exc:
            refusals.append(f"{exc} (ClickHouse {source}): cast it in a ClickHouse view to a mapped type")
            continue
        existing = by_name.get(name)
        if existing is None:
            adds.append(AddColumn(name, mapped, ch_type))
        elif existing.iceberg_type != mapped:
            if is_widening(existing.iceberg_type, mapped):
                widenings.append(WidenColumn(name, existing.iceberg_type, mapped, ch_type))
            else:
                refusals.append(_type_refusal(name, ch_type, existing.iceberg_type, mapped, source))
    if mode == "fail":
        refusals += [_fail_refusal(f"column {a.name!r} ({a.clickhouse_type}) was added", source) for a in adds]
        refusals += [
            _fail_refusal(f"column {w.name!r} widened {iceberg_name(w.before)} -> {iceberg_name(w.after)}", source)
            for w in widenings
        ]
    if refusals:
        return SchemaChange(refusals=tuple(refusals))
    return SchemaChange(tuple(adds), tuple(widenings))


def _type_refusal(name: str, ch_type: str, before: IcebergType, after: IcebergType, source: str) -> str:
    kind = "a narrowing" if is_narrowing(before, after) else "a type change"
    return (
        f"column {name!r} of ClickHouse {source} is now {ch_type} (Iceberg {iceberg_name(after)}) but the Iceberg "
        f"column is {iceberg_name(before)}: {kind} Iceberg cannot apply; cast it back to the old type in a "
        "ClickHouse view, or offload into a new Iceberg table"
    )


def _fail_refusal(what: str, source: str) -> str:
    return (
        f"{what} in ClickHouse {source}, and spec.schemaEvolution is fail: change the Iceberg table by hand, "
        "or set schemaEvolution: evolve"
    )


def apply(iceberg: Sequence[IcebergColumn], change: SchemaChange) -> list[IcebergColumn]:
    """The Iceberg columns after the change (what the catalog commit makes of them)."""
    if change.refused:
        raise ValueError(f"a refused schema change cannot be applied: {change.reason()}")
    widened = {w.name: w.after for w in change.widenings}
    columns = [replace(c, iceberg_type=widened.get(c.name, c.iceberg_type)) for c in iceberg]
    return columns + [IcebergColumn(a.name, a.iceberg_type, required=False) for a in change.adds]


def parse_mode(value: object) -> Mode:
    """A schema evolution mode from its spelling; ValueError for any other value."""
    for mode in MODES:
        if value == mode:
            return mode
    raise ValueError(f"schemaEvolution {value!r} is not one of {', '.join(MODES)}")


def record(summary: str, at: datetime, run_id: str) -> str:
    """The text the schema's commit records (status.lastSchemaChange): what, when, which run."""
    return f"{summary} (at {format_timestamp(at)}, run {run_id})"
