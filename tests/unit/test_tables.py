"""Table specifications, the runbook's nine tables and their order (iceberg_offload.core.tables)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.tables import (
    CANDLE_INTERVALS,
    LAYERS,
    SourceSpec,
    SpecError,
    TableSpec,
    TargetSpec,
    check_identifier,
    layer_order,
    runbook_tables,
)

PROPERTY = settings(max_examples=200, deadline=None)

BRONZE = ["bronze_trades_binance", "bronze_trades_kraken"]
GOLD_INTERVALS = {
    "gold_ohlcv_1m": timedelta(minutes=1),
    "gold_ohlcv_5m": timedelta(minutes=5),
    "gold_ohlcv_15m": timedelta(minutes=15),
    "gold_ohlcv_30m": timedelta(minutes=30),
    "gold_ohlcv_1h": timedelta(hours=1),
    "gold_ohlcv_1d": timedelta(days=1),
}


def spec(name: str, *depends_on: str, layer: str = "bronze") -> TableSpec:
    return TableSpec(
        name=name,
        layer=layer,
        source=SourceSpec("default", name, "ts"),
        target=TargetSpec("demo", "cold", name),
        depends_on=depends_on,
    )


# --- the runbook's tables ---------------------------------------------------------------------


def test_runbook_has_the_nine_tables_in_layer_order() -> None:
    tables = runbook_tables()
    assert [t.name for t in tables] == [*BRONZE, "silver_trades", *GOLD_INTERVALS]
    assert [t.layer for t in tables] == ["bronze"] * 2 + ["silver"] + ["gold"] * 6


def test_runbook_table_names_are_unique() -> None:
    names = [t.name for t in runbook_tables()]
    assert len(set(names)) == len(names) == 9


def test_bronze_tables_depend_on_nothing_and_are_not_candles() -> None:
    for table in runbook_tables()[:2]:
        assert table.depends_on == ()
        assert table.candle_interval is None


def test_silver_depends_on_both_bronze_tables() -> None:
    silver = {t.name: t for t in runbook_tables()}["silver_trades"]
    assert sorted(silver.depends_on) == BRONZE
    assert silver.candle_interval is None


@pytest.mark.parametrize(("name", "interval"), list(GOLD_INTERVALS.items()), ids=list(GOLD_INTERVALS))
def test_gold_tables_follow_silver_with_their_candle_interval(name: str, interval: timedelta) -> None:
    table = {t.name: t for t in runbook_tables()}[name]
    assert table.layer == "gold"
    assert table.depends_on == ("silver_trades",)
    assert table.candle_interval == interval


def test_candle_interval_labels() -> None:
    assert {f"gold_ohlcv_{label}": i for label, i in CANDLE_INTERVALS.items()} == GOLD_INTERVALS


@pytest.mark.parametrize(
    ("name", "timestamp_column", "sequence_column"),
    [
        *[pytest.param(n, "exchange_timestamp", "sequence", id=n) for n in [*BRONZE, "silver_trades"]],
        *[pytest.param(n, "window_start", None, id=n) for n in GOLD_INTERVALS],
    ],
)
def test_runbook_sources(name: str, timestamp_column: str, sequence_column: str | None) -> None:
    table = {t.name: t for t in runbook_tables()}[name]
    assert table.source == SourceSpec("default", name, timestamp_column, sequence_column)
    assert table.target == TargetSpec("demo", "cold", name)


def test_runbook_catalog_namespace_and_database_are_configurable() -> None:
    for table in runbook_tables(catalog="lake", namespace="archive", database="markets"):
        assert table.target.identifier == f"lake.archive.{table.name}"
        assert table.target.catalog_identifier == f"archive.{table.name}"
        assert table.source.database == "markets"
        assert table.source.qualified == f"`markets`.`{table.source.table}`"


def test_runbook_buffers_are_non_negative() -> None:
    assert all(t.buffer >= timedelta(0) for t in runbook_tables())


# --- layer_order ------------------------------------------------------------------------------


def test_runbook_stages_are_bronze_silver_gold() -> None:
    stages = layer_order(runbook_tables())
    assert [sorted(t.name for t in stage) for stage in stages] == [
        BRONZE,
        ["silver_trades"],
        sorted(GOLD_INTERVALS),
    ]
    assert [{t.layer for t in stage} for stage in stages] == [{layer} for layer in LAYERS]


def test_layer_order_does_not_depend_on_input_order() -> None:
    shuffled = list(reversed(runbook_tables()))
    stages = layer_order(shuffled)
    assert [sorted(t.name for t in stage) for stage in stages] == [BRONZE, ["silver_trades"], sorted(GOLD_INTERVALS)]


def test_unknown_dependency_raises_naming_both_tables() -> None:
    with pytest.raises(SpecError) as info:
        layer_order([spec("orders_daily", "orders_raw_typo")])
    assert "orders_daily" in str(info.value)
    assert "orders_raw_typo" in str(info.value)


def test_dependency_cycle_raises_naming_the_tables() -> None:
    tables = [spec("alpha_tbl"), spec("beta_tbl", "gamma_tbl"), spec("gamma_tbl", "beta_tbl")]
    with pytest.raises(SpecError, match="cycle") as info:
        layer_order(tables)
    assert "beta_tbl" in str(info.value)
    assert "gamma_tbl" in str(info.value)
    assert "alpha_tbl" not in str(info.value)  # it has nothing to do with the cycle


def test_self_dependency_is_refused_when_the_spec_is_made() -> None:
    with pytest.raises(SpecError, match="itself"):
        spec("loop_tbl", "loop_tbl")


@PROPERTY
@given(data=st.data(), count=st.integers(min_value=1, max_value=10))
def test_layer_order_puts_every_table_after_its_dependencies(data: st.DataObject, count: int) -> None:
    # a random DAG: table i may depend only on tables j < i
    names = [f"t{i}" for i in range(count)]
    tables = [
        spec(name, *data.draw(st.sets(st.sampled_from(names[:i])) if i else st.just(set()), label=name))
        for i, name in enumerate(names)
    ]
    order = data.draw(st.permutations(tables), label="input order")
    stages = layer_order(order)
    stage_of = {t.name: n for n, stage in enumerate(stages) for t in stage}
    assert sorted(stage_of) == sorted(names)  # every table exactly once
    assert sum(len(s) for s in stages) == count
    for table in tables:
        for dep in table.depends_on:
            assert stage_of[dep] < stage_of[table.name]
        # as early as possible: one stage after its latest dependency
        assert stage_of[table.name] == max((stage_of[d] + 1 for d in table.depends_on), default=0)


# --- identifiers and spec validation ----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("trades", id="lower"),
        pytest.param("_private", id="leading-underscore"),
        pytest.param("Gold_OHLCV_1m", id="mixed-case-digits"),
        pytest.param("a", id="single-char"),
    ],
)
def test_plain_identifiers_are_accepted(value: str) -> None:
    assert check_identifier("table", value) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("1m_candles", id="leading-digit"),
        pytest.param("cold-tier", id="dash"),
        pytest.param("cold.tier", id="dot"),
        pytest.param("my table", id="space"),
        pytest.param("t`; DROP TABLE x", id="injection"),
        pytest.param("trades;", id="semicolon"),
        pytest.param("tràdes", id="non-ascii"),
    ],
)
def test_non_identifiers_are_refused_naming_the_kind(value: str) -> None:
    with pytest.raises(SpecError) as info:
        check_identifier("Iceberg namespace", value)
    assert "Iceberg namespace" in str(info.value)
    assert repr(value) in str(info.value)


def test_identifier_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(SpecError):
        check_identifier("table", "trades\n")


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: SourceSpec("default db", "t", "ts"), id="source-database"),
        pytest.param(lambda: SourceSpec("default", "t-1", "ts"), id="source-table"),
        pytest.param(lambda: SourceSpec("default", "t", "ts col"), id="timestamp-column"),
        pytest.param(lambda: SourceSpec("default", "t", "ts", "seq;"), id="sequence-column"),
        pytest.param(lambda: TargetSpec("demo.x", "cold", "t"), id="target-catalog"),
        pytest.param(lambda: TargetSpec("demo", "", "t"), id="target-namespace"),
        pytest.param(lambda: TargetSpec("demo", "cold", "9t"), id="target-table"),
        pytest.param(
            lambda: TableSpec("bad name", "bronze", SourceSpec("d", "t", "ts"), TargetSpec("c", "n", "t")),
            id="table-name",
        ),
        pytest.param(
            lambda: TableSpec("t", "platinum", SourceSpec("d", "t", "ts"), TargetSpec("c", "n", "t")), id="layer"
        ),
        pytest.param(
            lambda: TableSpec(
                "t", "bronze", SourceSpec("d", "t", "ts"), TargetSpec("c", "n", "t"), buffer=timedelta(seconds=-1)
            ),
            id="negative-buffer",
        ),
        pytest.param(
            lambda: TableSpec(
                "t", "gold", SourceSpec("d", "t", "ts"), TargetSpec("c", "n", "t"), candle_interval=timedelta(0)
            ),
            id="zero-candle-interval",
        ),
    ],
)
def test_invalid_specs_are_refused(build: object) -> None:
    with pytest.raises(SpecError):
        build()  # type: ignore[operator]


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)
