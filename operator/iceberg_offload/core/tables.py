"""What a table's offload reads and writes, and the nine tables of the runbook.

Pure logic: no engine, catalog or network imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

LAYERS = ("bronze", "silver", "gold")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SpecError(ValueError):
    """A table specification that can never run."""


def check_identifier(kind: str, value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise SpecError(f"{kind} {value!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return value


@dataclass(frozen=True)
class SourceSpec:
    """The ClickHouse table (or view) a table is offloaded from."""

    database: str
    table: str
    timestamp_column: str
    sequence_column: str | None = None

    def __post_init__(self) -> None:
        check_identifier("ClickHouse database", self.database)
        check_identifier("ClickHouse table", self.table)
        check_identifier("timestamp column", self.timestamp_column)
        if self.sequence_column is not None:
            check_identifier("sequence column", self.sequence_column)

    @property
    def qualified(self) -> str:
        return f"`{self.database}`.`{self.table}`"


@dataclass(frozen=True)
class TargetSpec:
    """The Iceberg table a table is offloaded into: <catalog>.<namespace>.<table>."""

    catalog: str
    namespace: str
    table: str

    def __post_init__(self) -> None:
        check_identifier("Iceberg catalog", self.catalog)
        check_identifier("Iceberg namespace", self.namespace)
        check_identifier("Iceberg table", self.table)

    @property
    def identifier(self) -> str:
        return f"{self.catalog}.{self.namespace}.{self.table}"

    @property
    def catalog_identifier(self) -> str:
        """The name inside the catalog: <namespace>.<table>."""
        return f"{self.namespace}.{self.table}"


@dataclass(frozen=True)
class TableSpec:
    """One offloaded table: where it comes from, where it goes, and what it waits for."""

    name: str
    layer: str
    source: SourceSpec
    target: TargetSpec
    depends_on: tuple[str, ...] = ()
    buffer: timedelta = timedelta(minutes=5)
    candle_interval: timedelta | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        check_identifier("table name", self.name)
        if self.layer not in LAYERS:
            raise SpecError(f"layer {self.layer!r} is not one of {', '.join(LAYERS)}")
        if self.name in self.depends_on:
            raise SpecError(f"table {self.name!r} depends on itself")
        if self.buffer < timedelta(0):
            raise SpecError(f"table {self.name!r}: safety buffer must not be negative")
        if self.candle_interval is not None and self.candle_interval <= timedelta(0):
            raise SpecError(f"table {self.name!r}: candle interval must be positive")


CANDLE_INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


def runbook_tables(*, catalog: str = "demo", namespace: str = "cold", database: str = "default") -> list[TableSpec]:
    """The nine tables of the operations runbook, in layer order."""

    def target(name: str) -> TargetSpec:
        return TargetSpec(catalog, namespace, name)

    bronze = [
        TableSpec(
            name=name,
            layer="bronze",
            source=SourceSpec(database, name, "exchange_timestamp", "sequence"),
            target=target(name),
            description=f"raw {exchange} trades",
        )
        for name, exchange in (("bronze_trades_binance", "Binance"), ("bronze_trades_kraken", "Kraken"))
    ]
    silver = TableSpec(
        name="silver_trades",
        layer="silver",
        source=SourceSpec(database, "silver_trades", "exchange_timestamp", "sequence"),
        target=target("silver_trades"),
        depends_on=tuple(t.name for t in bronze),
        description="trades of every exchange, unified",
    )
    gold = [
        TableSpec(
            name=f"gold_ohlcv_{label}",
            layer="gold",
            source=SourceSpec(database, f"gold_ohlcv_{label}", "window_start"),
            target=target(f"gold_ohlcv_{label}"),
            depends_on=(silver.name,),
            candle_interval=interval,
            description=f"{label} OHLCV candles per exchange and symbol",
        )
        for label, interval in CANDLE_INTERVALS.items()
    ]
    return [*bronze, silver, *gold]


def layer_order(tables: list[TableSpec]) -> list[list[TableSpec]]:
    """Group tables into stages so that every table comes after all it depends on.

    Raises SpecError on an unknown dependency or a cycle, naming the tables.
    """
    by_name = {t.name: t for t in tables}
    for t in tables:
        for dep in t.depends_on:
            if dep not in by_name:
                raise SpecError(f"table {t.name!r} depends on unknown table {dep!r}")
    done: set[str] = set()
    stages: list[list[TableSpec]] = []
    pending = list(tables)
    while pending:
        ready = [t for t in pending if all(dep in done for dep in t.depends_on)]
        if not ready:
            names = ", ".join(sorted(t.name for t in pending))
            raise SpecError(f"dependency cycle among: {names}")
        stages.append(ready)
        done.update(t.name for t in ready)
        pending = [t for t in pending if t.name not in done]
    return stages
