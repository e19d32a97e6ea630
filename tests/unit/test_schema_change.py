"""Schema evolution's diff (iceberg_offload.core.schema_change): table-driven cases and its laws."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.schema_change import (
    AddColumn,
    IcebergColumn,
    SchemaChange,
    WidenColumn,
    apply,
    diff,
    iceberg_name,
    is_widening,
    parse_mode,
)
from iceberg_offload.core.typemap import BIGINT, DOUBLE, FLOAT, INT, STRING, TIMESTAMP, decimal, map_column

PROPERTY = settings(max_examples=200, deadline=None)
BASE_CH = [("ts", "DateTime64(3)"), ("qty", "Int32")]
BASE_ICE = [IcebergColumn("ts", TIMESTAMP, required=True), IcebergColumn("qty", INT)]


def test_equal_schemas_need_nothing() -> None:
    change = diff(BASE_CH, BASE_ICE)
    assert change.empty
    assert change.summary() is None


@pytest.mark.parametrize(
    ("clickhouse", "expected"),
    [
        (
            [*BASE_CH, ("venue", "String")],
            SchemaChange(adds=(AddColumn("venue", STRING, "String"),)),
        ),
        (
            [*BASE_CH, ("venue", "LowCardinality(Nullable(String))")],
            SchemaChange(adds=(AddColumn("venue", STRING, "LowCardinality(Nullable(String))"),)),
        ),
        ([BASE_CH[0], ("qty", "Int64")], SchemaChange(widenings=(WidenColumn("qty", INT, BIGINT, "Int64"),))),
        ([BASE_CH[0], ("qty", "UInt32")], SchemaChange(widenings=(WidenColumn("qty", INT, BIGINT, "UInt32"),))),
        # Int8 maps to int as well: no change
        ([BASE_CH[0], ("qty", "Int8")], SchemaChange()),
        # the Nullable removed in ClickHouse: the Iceberg column stays optional
        ([BASE_CH[0], ("qty", "Int32")], SchemaChange()),
    ],
)
def test_evolve_cases(clickhouse: list[tuple[str, str]], expected: SchemaChange) -> None:
    assert diff(clickhouse, BASE_ICE) == expected


def test_float_and_decimal_widenings() -> None:
    iceberg = [IcebergColumn("p", FLOAT), IcebergColumn("d", decimal(9, 2))]
    change = diff([("p", "Float64"), ("d", "Decimal(18, 2)")], iceberg)
    assert change.widenings == (
        WidenColumn("p", FLOAT, DOUBLE, "Float64"),
        WidenColumn("d", decimal(9, 2), decimal(18, 2), "Decimal(18, 2)"),
    )
    assert change.summary() == "widened p float->double; widened d decimal(9,2)->decimal(18,2)"


def test_summary_names_iceberg_types() -> None:
    change = diff([BASE_CH[0], ("qty", "Int64"), ("venue", "String")], BASE_ICE)
    assert change.summary() == "added venue string; widened qty int->long"


@pytest.mark.parametrize(
    ("clickhouse", "iceberg", "words"),
    [
        ([("p", "Float32")], [IcebergColumn("p", DOUBLE)], ["'p'", "now Float32", "is double", "a narrowing"]),
        ([("q", "Int32")], [IcebergColumn("q", BIGINT)], ["'q'", "a narrowing"]),
        ([("d", "Decimal(9, 2)")], [IcebergColumn("d", decimal(18, 2))], ["a narrowing"]),
        ([("d", "Decimal(18, 4)")], [IcebergColumn("d", decimal(9, 2))], ["a type change"]),
        ([("s", "Int64")], [IcebergColumn("s", STRING)], ["'s'", "a type change", "new Iceberg table"]),
        ([("a", "String")], [IcebergColumn("a", STRING), IcebergColumn("gone", INT)], ["'gone'", "no longer exists"]),
        ([("a", "String"), ("m", "Map(String, UInt8)")], [IcebergColumn("a", STRING)], ["'m'", "no Iceberg mapping"]),
    ],
)
def test_refusals_name_the_column_and_what_to_do(
    clickhouse: list[tuple[str, str]], iceberg: list[IcebergColumn], words: list[str]
) -> None:
    change = diff(clickhouse, iceberg, source="default.x", target="cat.ns.x")
    assert change.refused and not change.adds and not change.widenings
    assert len(change.refusals) == 1
    for word in words:
        assert word in change.refusals[0]


def test_a_refusal_drops_the_changes_it_came_with() -> None:
    change = diff(
        [BASE_CH[0], ("qty", "Int16"), ("venue", "String"), ("p", "Float32")], [*BASE_ICE, IcebergColumn("p", DOUBLE)]
    )
    assert change == SchemaChange(refusals=change.refusals)
    assert len(change.refusals) == 1


@pytest.mark.parametrize(
    "clickhouse",
    [[*BASE_CH, ("venue", "String")], [BASE_CH[0], ("qty", "Int64")]],
)
def test_fail_mode_refuses_any_difference(clickhouse: list[tuple[str, str]]) -> None:
    change = diff(clickhouse, BASE_ICE, mode="fail", source="default.x")
    assert change.refused and not change.adds and not change.widenings
    assert "schemaEvolution is fail" in change.reason()
    assert "default.x" in change.reason()
    assert diff(BASE_CH, BASE_ICE, mode="fail").empty


def test_modes() -> None:
    assert parse_mode("evolve") == "evolve"
    assert parse_mode("fail") == "fail"
    with pytest.raises(ValueError, match="not one of evolve, fail"):
        parse_mode("Evolve")
    with pytest.raises(ValueError):
        diff(BASE_CH, BASE_ICE, mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refused"):
        apply(BASE_ICE, SchemaChange(refusals=("no",)))


def test_widening_table() -> None:
    assert is_widening(INT, BIGINT) and is_widening(FLOAT, DOUBLE)
    assert not is_widening(BIGINT, INT) and not is_widening(INT, DOUBLE) and not is_widening(INT, INT)
    assert is_widening(decimal(10, 2), decimal(12, 2)) and not is_widening(decimal(10, 2), decimal(12, 3))
    assert iceberg_name(BIGINT) == "long" and iceberg_name(TIMESTAMP) == "timestamptz"


# ClickHouse types of each mapped Iceberg type, and how a column of the Iceberg side relates to
# its ClickHouse column in a drawn pair of schemas.
CH_TYPES = ["Int32", "Int64", "Float32", "Float64", "String", "Date", "Bool", "Decimal(9, 2)", "Decimal(18, 2)"]
RELATIONS = ["same", "narrower", "wider", "other", "missing"]


@st.composite
def schemas(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[IcebergColumn], bool]:
    """A ClickHouse schema, an Iceberg schema drawn against it, and whether it must be refused."""
    n = draw(st.integers(1, 6))
    clickhouse = [(f"c{i}", draw(st.sampled_from(CH_TYPES))) for i in range(n)]
    iceberg: list[IcebergColumn] = []
    bad = False
    for name, ch_type in clickhouse:
        mapped = map_column(name, ch_type).iceberg_type
        relation = draw(st.sampled_from(RELATIONS))
        pairs = [(a, b) for a, b in _TYPE_PAIRS if (b if relation == "narrower" else a) == mapped]
        if relation in ("narrower", "wider") and pairs:
            a, b = draw(st.sampled_from(pairs))
            iceberg.append(IcebergColumn(name, a if relation == "narrower" else b, draw(st.booleans())))
            bad = bad or relation == "wider"
        elif relation == "other":
            other = draw(st.sampled_from([t for t in _ALL if t != mapped and not is_widening(t, mapped)]))
            iceberg.append(IcebergColumn(name, other))
            bad = True
        elif relation != "missing":
            iceberg.append(IcebergColumn(name, mapped, draw(st.booleans())))
    if draw(st.booleans()):
        iceberg.append(IcebergColumn("dropped", STRING))
        bad = True
    return clickhouse, draw(st.permutations(iceberg)), bad


_TYPE_PAIRS = [(INT, BIGINT), (FLOAT, DOUBLE), (decimal(9, 2), decimal(18, 2))]
_ALL = [INT, BIGINT, FLOAT, DOUBLE, STRING, decimal(9, 2), decimal(18, 2)]


@PROPERTY
@given(schemas())
def test_applying_the_change_leaves_nothing_to_do(
    drawn: tuple[list[tuple[str, str]], list[IcebergColumn], bool],
) -> None:
    clickhouse, iceberg, bad = drawn
    change = diff(clickhouse, iceberg)
    assert change.refused == bad
    if change.refused:
        assert not change.adds and not change.widenings
        return
    after = apply(iceberg, change)
    assert diff(clickhouse, after).empty
    assert {c.name for c in after} == {name for name, _ in clickhouse}
    assert all(not c.required for c in after if c.name in {a.name for a in change.adds})


@PROPERTY
@given(schemas())
def test_fail_mode_refuses_exactly_what_evolve_would_change(
    drawn: tuple[list[tuple[str, str]], list[IcebergColumn], bool],
) -> None:
    clickhouse, iceberg, _ = drawn
    evolve, fail = diff(clickhouse, iceberg), diff(clickhouse, iceberg, mode="fail")
    assert fail.empty == evolve.empty
    assert not fail.adds and not fail.widenings
    assert len(fail.refusals) >= len(evolve.refusals) + len(evolve.adds) + len(evolve.widenings)
