"""ClickHouse to Iceberg type mapping (iceberg_offload.core.typemap), row by row of its table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.core.typemap import (
    BIGINT,
    BOOLEAN,
    DATE,
    DOUBLE,
    FLOAT,
    INT,
    PLAIN_TYPES,
    PRIMITIVES,
    STRING,
    TIMESTAMP,
    IcebergType,
    TypeMappingError,
    arrow_factory,
    check_target,
    decimal,
    map_column,
    quote_identifier,
    spark_type,
)

PROPERTY = settings(max_examples=200, deadline=None)

C = "`c`"  # the quoted column name the table's rows use


def cast(expr: str) -> str:
    return f"{expr} AS {C}"


# (ClickHouse type, Iceberg type, nullable, SELECT expression). A cast that is the identity
# (toInt32 of an Int32, toDate32 of a Date32) is left out: the bare column reads the same.
MAPPING_TABLE = [
    # DateTime64(p[, tz]), DateTime -> timestamptz (us), toDateTime64(c, 6, 'UTC')
    ("DateTime64(3)", TIMESTAMP, False, cast("toDateTime64(`c`, 6, 'UTC')")),
    ("DateTime64(3, 'UTC')", TIMESTAMP, False, cast("toDateTime64(`c`, 6, 'UTC')")),
    ("DateTime64(9, 'Asia/Tokyo')", TIMESTAMP, False, cast("toDateTime64(`c`, 6, 'UTC')")),
    ("DateTime", TIMESTAMP, False, cast("toDateTime64(`c`, 6, 'UTC')")),
    ("DateTime('Europe/Berlin')", TIMESTAMP, False, cast("toDateTime64(`c`, 6, 'UTC')")),
    # Date, Date32 -> date
    ("Date", DATE, False, cast("toDate32(`c`)")),
    ("Date32", DATE, False, C),
    # Int8, Int16, Int32, UInt8, UInt16 -> int
    ("Int8", INT, False, cast("toInt32(`c`)")),
    ("Int16", INT, False, cast("toInt32(`c`)")),
    ("Int32", INT, False, C),
    ("UInt8", INT, False, cast("toInt32(`c`)")),
    ("UInt16", INT, False, cast("toInt32(`c`)")),
    # Int64, UInt32 -> long
    ("Int64", BIGINT, False, C),
    ("UInt32", BIGINT, False, cast("toInt64(`c`)")),
    # UInt64 -> long, failing on values >= 2^63
    ("UInt64", BIGINT, False, cast("accurateCast(`c`, 'Int64')")),
    # Float32 / Float64 -> float / double, no cast
    ("Float32", FLOAT, False, C),
    ("Float64", DOUBLE, False, C),
    # Decimal(P, S), P <= 38 -> decimal(P, S), no cast
    ("Decimal(18, 8)", decimal(18, 8), False, C),
    ("Decimal(38,0)", decimal(38, 0), False, C),
    ("Decimal(1, 1)", decimal(1, 1), False, C),
    ("Decimal32(4)", decimal(9, 4), False, C),
    ("Decimal64(8)", decimal(18, 8), False, C),
    ("Decimal128(10)", decimal(38, 10), False, C),
    # String, FixedString(N), UUID -> string
    ("String", STRING, False, C),
    ("FixedString(16)", STRING, False, cast("toString(`c`)")),
    ("UUID", STRING, False, cast("toString(`c`)")),
    # Enum8, Enum16 -> string (the label)
    ("Enum8('buy' = 1, 'sell' = 2)", STRING, False, cast("toString(`c`)")),
    ("Enum16('a' = 1000, 'b' = -1000)", STRING, False, cast("toString(`c`)")),
    # Bool -> boolean
    ("Bool", BOOLEAN, False, C),
    # LowCardinality(T) -> as T
    ("LowCardinality(String)", STRING, False, C),
    ("LowCardinality(FixedString(3))", STRING, False, cast("toString(`c`)")),
    ("LowCardinality(UInt16)", INT, False, cast("toInt32(`c`)")),
    # Nullable(T) -> optional T, cast as T
    ("Nullable(String)", STRING, True, C),
    ("Nullable(DateTime64(3, 'UTC'))", TIMESTAMP, True, cast("toDateTime64(`c`, 6, 'UTC')")),
    ("Nullable(UInt64)", BIGINT, True, cast("accurateCast(`c`, 'Int64')")),
    ("Nullable(Decimal(18, 8))", decimal(18, 8), True, C),
    ("LowCardinality(Nullable(String))", STRING, True, C),
    ("  Nullable( Int8 ) ", INT, True, cast("toInt32(`c`)")),
]


@pytest.mark.parametrize(
    ("clickhouse_type", "iceberg_type", "nullable", "select_expr"),
    [pytest.param(*row, id=row[0].strip()) for row in MAPPING_TABLE],
)
def test_map_column_follows_the_mapping_table(
    clickhouse_type: str, iceberg_type: IcebergType, nullable: bool, select_expr: str
) -> None:
    mapping = map_column("c", clickhouse_type)
    assert mapping.iceberg_type == iceberg_type
    assert mapping.nullable is nullable
    assert mapping.select_expr == select_expr
    assert mapping.name == "c"
    assert mapping.clickhouse_type == clickhouse_type


@pytest.mark.parametrize(
    "clickhouse_type",
    [
        pytest.param("Array(String)", id="array"),
        pytest.param("Map(String, UInt64)", id="map"),
        pytest.param("Tuple(a String, b UInt8)", id="tuple"),
        pytest.param("Nullable(Array(String))", id="nullable-array"),
        pytest.param("LowCardinality(Nullable(Array(String)))", id="wrapped-array"),
        pytest.param("Int128", id="int128"),
        pytest.param("UInt256", id="uint256"),
        pytest.param("IPv4", id="ipv4"),
        pytest.param("JSON", id="json"),
        pytest.param("AggregateFunction(sum, UInt64)", id="aggregate-state"),
    ],
)
def test_types_without_a_mapping_raise_naming_the_column(clickhouse_type: str) -> None:
    with pytest.raises(TypeMappingError) as info:
        map_column("order_book", clickhouse_type)
    assert "'order_book'" in str(info.value)
    assert clickhouse_type in str(info.value)


@pytest.mark.parametrize(
    "clickhouse_type",
    [
        pytest.param("Decimal256(10)", id="decimal256"),
        pytest.param("Decimal(39, 2)", id="precision-39"),
        pytest.param("Decimal(76, 10)", id="precision-76"),
        pytest.param("Decimal(10, 11)", id="scale-above-precision"),
        pytest.param("Decimal(0, 0)", id="precision-0"),
        pytest.param("Nullable(Decimal256(2))", id="nullable-decimal256"),
    ],
)
def test_decimals_outside_iceberg_range_raise_naming_the_column(clickhouse_type: str) -> None:
    with pytest.raises(TypeMappingError) as info:
        map_column("notional", clickhouse_type)
    assert "'notional'" in str(info.value)


def test_type_mapping_error_is_a_value_error() -> None:
    assert issubclass(TypeMappingError, ValueError)


@pytest.mark.parametrize(
    ("precision", "scale"),
    [
        pytest.param(0, 0, id="p0"),
        pytest.param(39, 0, id="p39"),
        pytest.param(5, 6, id="s>p"),
        pytest.param(5, -1, id="negative-scale"),
    ],
)
def test_decimal_type_outside_1_38_is_refused(precision: int, scale: int) -> None:
    with pytest.raises(TypeMappingError):
        decimal(precision, scale)


@pytest.mark.parametrize(
    ("iceberg_type", "text"),
    [
        pytest.param(decimal(18, 8), "decimal(18,8)", id="decimal"),
        pytest.param(BIGINT, "bigint", id="bigint"),
        pytest.param(TIMESTAMP, "timestamp", id="timestamp"),
    ],
)
def test_iceberg_type_prints_its_spark_sql_name(iceberg_type: IcebergType, text: str) -> None:
    assert str(iceberg_type) == text


@PROPERTY
@given(
    name=st.text(min_size=1, max_size=20),
    clickhouse_type=st.sampled_from([row[0] for row in MAPPING_TABLE]),
)
def test_select_expression_always_yields_a_column_named_like_the_source(name: str, clickhouse_type: str) -> None:
    quoted = quote_identifier(name)
    expr = map_column(name, clickhouse_type).select_expr
    assert expr == quoted or expr.endswith(f" AS {quoted}")


# --- check_target -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clickhouse_type", "target", "required"),
    [
        pytest.param("Decimal(18, 8)", decimal(18, 8), True, id="same-decimal-required"),
        pytest.param("String", STRING, False, id="not-null-into-optional"),
        pytest.param("Nullable(String)", STRING, False, id="nullable-into-optional"),
        pytest.param("UInt64", BIGINT, True, id="uint64-into-bigint"),
    ],
)
def test_check_target_accepts_a_matching_column(clickhouse_type: str, target: IcebergType, required: bool) -> None:
    check_target(map_column("c", clickhouse_type), target, required)


@pytest.mark.parametrize(
    ("clickhouse_type", "target", "required", "fragment"),
    [
        pytest.param("Decimal(18, 8)", decimal(38, 8), True, "decimal(38,8)", id="other-decimal-precision"),
        pytest.param("Decimal(18, 8)", decimal(18, 6), True, "decimal(18,6)", id="other-decimal-scale"),
        pytest.param("Int64", INT, True, "int", id="long-into-int"),
        pytest.param("Float64", FLOAT, True, "float", id="double-into-float"),
        pytest.param("DateTime64(3)", STRING, True, "string", id="timestamp-into-string"),
        pytest.param("Nullable(String)", STRING, True, "NOT NULL", id="nullable-into-required"),
    ],
)
def test_check_target_refuses_a_mismatch_naming_the_column(
    clickhouse_type: str, target: IcebergType, required: bool, fragment: str
) -> None:
    with pytest.raises(TypeMappingError) as info:
        check_target(map_column("trade_price", clickhouse_type), target, required)
    assert "'trade_price'" in str(info.value)
    assert fragment in str(info.value)


# --- quote_identifier -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        pytest.param("price", "`price`", id="plain"),
        pytest.param("select", "`select`", id="keyword"),
        pytest.param("a b", "`a b`", id="space"),
        pytest.param("a`b", "`a\\`b`", id="backquote-escaped"),
        pytest.param("a\\b", "`a\\\\b`", id="backslash-escaped"),
        pytest.param("x`; DROP TABLE t; --", "`x\\`; DROP TABLE t; --`", id="injection-stays-inside"),
    ],
)
def test_quote_identifier(name: str, quoted: str) -> None:
    assert quote_identifier(name) == quoted


def _unquote(quoted: str) -> str:
    """Read a backquoted ClickHouse identifier back; fail on an unescaped backquote inside."""
    assert quoted.startswith("`") and quoted.endswith("`") and len(quoted) >= 2
    out, i, body = [], 0, quoted[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            assert i + 1 < len(body), "dangling escape would swallow the closing backquote"
            out.append(body[i + 1])
            i += 2
            continue
        assert ch != "`", "unescaped backquote ends the identifier early"
        out.append(ch)
        i += 1
    return "".join(out)


@PROPERTY
@given(name=st.text(max_size=30))
def test_quote_identifier_round_trips_and_cannot_be_escaped_from(name: str) -> None:
    assert _unquote(quote_identifier(name)) == name


# --- the Iceberg side: Spark's names and the Arrow types ------------------------------------


def test_the_named_types_are_the_primitives_of_the_table() -> None:
    named = [TIMESTAMP, DATE, INT, BIGINT, FLOAT, DOUBLE, STRING, BOOLEAN]
    assert sorted(t.name for t in named) == sorted(PRIMITIVES)
    assert all(key == p.spark for key, p in PRIMITIVES.items())


@pytest.mark.parametrize(
    ("text", "iceberg_type"),
    [
        pytest.param("timestamp", TIMESTAMP, id="timestamp"),
        pytest.param("bigint", BIGINT, id="bigint"),
        pytest.param("boolean", BOOLEAN, id="boolean"),
        pytest.param("decimal(18,8)", decimal(18, 8), id="decimal"),
        pytest.param("decimal(38,0)", decimal(38, 0), id="decimal-38"),
        pytest.param("timestamp_ntz", IcebergType("timestamp_ntz"), id="unwritten-kept-by-name"),
        pytest.param("array<int>", IcebergType("array<int>"), id="nested-kept-by-name"),
    ],
)
def test_spark_type_reads_the_name_spark_gives_a_column_type(text: str, iceberg_type: IcebergType) -> None:
    assert spark_type(text) == iceberg_type


@PROPERTY
@given(
    iceberg_type=st.one_of(
        st.sampled_from([spark_type(name) for name in PRIMITIVES]),
        st.integers(1, 38).flatmap(lambda p: st.integers(0, p).map(lambda s: decimal(p, s))),
    )
)
def test_spark_type_reads_back_every_type_the_mapping_writes(iceberg_type: IcebergType) -> None:
    assert spark_type(str(iceberg_type)) == iceberg_type


@pytest.mark.parametrize(
    ("iceberg_type", "factory"),
    [
        pytest.param(TIMESTAMP, ("timestamp", ("us", "UTC")), id="timestamp-us-utc"),
        pytest.param(DATE, ("date32", ()), id="date"),
        pytest.param(INT, ("int32", ()), id="int"),
        pytest.param(BIGINT, ("int64", ()), id="bigint"),
        pytest.param(FLOAT, ("float32", ()), id="float"),
        pytest.param(DOUBLE, ("float64", ()), id="double"),
        pytest.param(STRING, ("string", ()), id="string"),
        pytest.param(BOOLEAN, ("bool_", ()), id="boolean"),
        pytest.param(decimal(18, 8), ("decimal128", (18, 8)), id="decimal"),
    ],
)
def test_arrow_factory_names_the_arrow_type_of_each_iceberg_type(
    iceberg_type: IcebergType, factory: tuple[str, tuple[str | int, ...]]
) -> None:
    assert arrow_factory(iceberg_type) == factory


@pytest.mark.parametrize("name", ["timestamp_ntz", "binary", "array<int>", "map<string,int>"])
def test_arrow_factory_refuses_a_type_the_offload_does_not_write(name: str) -> None:
    with pytest.raises(TypeMappingError, match=f"Iceberg column type {re.escape(name)} is not supported"):
        arrow_factory(spark_type(name))


@pytest.mark.parametrize("clickhouse_type", sorted(PLAIN_TYPES))
def test_every_type_a_clickhouse_column_maps_to_has_an_arrow_type(clickhouse_type: str) -> None:
    arrow_factory(map_column("c", clickhouse_type).iceberg_type)


# --- ddl/TYPE_MAPPING.md agrees with the tables -----------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "ddl" / "TYPE_MAPPING.md"
# A concrete type for each parametric (or bare) name the page writes.
DOC_EXAMPLES = {
    "DateTime64(p[, tz])": "DateTime64(3, 'UTC')",
    "DateTime[(tz)]": "DateTime('UTC')",
    "Decimal(P, S)": "Decimal(18, 8)",
    "Decimal32/64/128(S)": "Decimal64(8)",
    "FixedString(N)": "FixedString(16)",
    "Enum8": "Enum8('a' = 1)",
    "Enum16": "Enum16('a' = 1000)",
    "Array": "Array(String)",
    "Map": "Map(String, UInt64)",
    "Tuple": "Tuple(a String)",
    "AggregateFunction": "AggregateFunction(sum, UInt64)",
}
DOC_WRAPPERS = ("LowCardinality(T)", "Nullable(T)")  # "as T": MAPPING_TABLE above has their rows


def _doc_rows() -> list[tuple[list[str], list[str], list[str]]]:
    """(ClickHouse types, Iceberg types, casts) of each row of the page's mapping table."""
    text = DOC.read_text()
    table = text[text.index("| ClickHouse | Iceberg |") :].split("\n\n")[0].splitlines()[2:]
    rows = []
    for line in table:
        cells = [re.findall(r"`([^`]*)`", cell) for cell in line.strip("|").split("|")]
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def _iceberg_name(iceberg_type: IcebergType) -> str:
    return "decimal" if iceberg_type.name == "decimal" else PRIMITIVES[iceberg_type.name].iceberg


def _cast(clickhouse_type: str) -> str:
    """The SELECT expression of a column named c, written as the page writes it."""
    return map_column("c", clickhouse_type).select_expr.removesuffix(" AS `c`").replace("`c`", "c")


def test_the_page_lists_every_type_the_tables_know() -> None:
    rows = _doc_rows()
    clickhouse = {name for names, _, _ in rows for name in names}
    iceberg = {name.split("(")[0] for _, names, _ in rows for name in names}
    assert set(PLAIN_TYPES) <= clickhouse, "ClickHouse types of PLAIN_TYPES missing from the page"
    assert set(DOC_EXAMPLES) <= clickhouse, "examples of names the page no longer writes"
    assert {p.iceberg for p in PRIMITIVES.values()} | {"decimal"} <= iceberg


@pytest.mark.parametrize(("clickhouse", "iceberg", "casts"), _doc_rows(), ids=lambda v: ",".join(v) or "-")
def test_each_row_of_the_page_is_what_the_mapping_does(
    clickhouse: list[str], iceberg: list[str], casts: list[str]
) -> None:
    if clickhouse[0] in DOC_WRAPPERS:
        return
    for i, name in enumerate(clickhouse):
        concrete = DOC_EXAMPLES.get(name, name)
        if not iceberg:
            with pytest.raises(TypeMappingError):
                map_column("c", concrete)
            continue
        expected = iceberg[i] if len(iceberg) == len(clickhouse) else iceberg[0]
        assert _iceberg_name(map_column("c", concrete).iceberg_type) == expected.split("(")[0], name
        # The page gives the cast of the row; a type the cast would leave as it is is read bare.
        assert _cast(concrete) in ({"c", casts[0]} if casts else {"c"}), name
