"""The job's column planning and Arrow schema (iceberg_offload.job.columns), on Spark schemas
built in the test: no Spark session."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from iceberg_offload.core.tables import SourceSpec, TableSpec, TargetSpec
from iceberg_offload.core.typemap import TypeMappingError
from iceberg_offload.job.columns import arrow_schema, plan_columns
from iceberg_offload.job.errors import OffloadError
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

SPEC = TableSpec("t", "bronze", SourceSpec("db", "src", "ts", "seq"), TargetSpec("demo", "cold", "t"))


@pytest.mark.parametrize(
    ("spark", "arrow"),
    [
        pytest.param(TimestampType(), pa.timestamp("us", tz="UTC"), id="timestamp"),
        pytest.param(DateType(), pa.date32(), id="date"),
        pytest.param(IntegerType(), pa.int32(), id="int"),
        pytest.param(LongType(), pa.int64(), id="bigint"),
        pytest.param(FloatType(), pa.float32(), id="float"),
        pytest.param(DoubleType(), pa.float64(), id="double"),
        pytest.param(StringType(), pa.string(), id="string"),
        pytest.param(BooleanType(), pa.bool_(), id="boolean"),
        pytest.param(DecimalType(18, 8), pa.decimal128(18, 8), id="decimal"),
        pytest.param(DecimalType(38, 0), pa.decimal128(38, 0), id="decimal-38"),
    ],
)
@pytest.mark.parametrize("nullable", [True, False], ids=["optional", "required"])
def test_arrow_schema_has_the_arrow_type_and_nullability_of_each_column(
    spark: DataType, arrow: pa.DataType, nullable: bool
) -> None:
    schema = arrow_schema(StructType([StructField("a", LongType(), False), StructField("c", spark, nullable)]))
    assert schema == pa.schema([pa.field("a", pa.int64(), nullable=False), pa.field("c", arrow, nullable=nullable)])


@pytest.mark.parametrize("spark", [TimestampNTZType(), ArrayType(IntegerType())], ids=["timestamp_ntz", "array"])
def test_arrow_schema_refuses_a_column_type_the_offload_does_not_write(spark: DataType) -> None:
    with pytest.raises(TypeMappingError, match=f"Iceberg column type {spark.simpleString()} is not supported"):
        arrow_schema(StructType([StructField("c", spark)]))


TARGET = StructType(
    [
        StructField("ts", TimestampType(), False),
        StructField("seq", LongType(), False),
        StructField("price", DecimalType(18, 8), True),
    ]
)
SOURCE = [("ts", "DateTime64(3, 'UTC')"), ("seq", "UInt64"), ("price", "Nullable(Decimal(18, 8))"), ("extra", "UUID")]


def test_plan_columns_selects_every_target_column_in_target_order() -> None:
    mappings = plan_columns(list(reversed(SOURCE)), TARGET, SPEC)
    assert [m.name for m in mappings] == ["ts", "seq", "price"]
    assert [m.select_expr for m in mappings] == [
        "toDateTime64(`ts`, 6, 'UTC') AS `ts`",
        "accurateCast(`seq`, 'Int64') AS `seq`",
        "`price`",
    ]


@pytest.mark.parametrize(
    ("source", "error", "fragment"),
    [
        pytest.param(SOURCE[1:], OffloadError, "column 'ts' named in the spec does not exist", id="no-timestamp"),
        pytest.param([SOURCE[0], *SOURCE[2:]], OffloadError, "column 'seq' named in the spec", id="no-sequence"),
        pytest.param([("ts", "String"), *SOURCE[1:]], OffloadError, "is String, not a DateTime", id="ts-not-datetime"),
        pytest.param([SOURCE[0], ("seq", "String"), *SOURCE[2:]], OffloadError, "not an integer", id="seq-not-int"),
        pytest.param(SOURCE[:2], OffloadError, "column 'price' of Iceberg table demo.cold.t does not", id="missing"),
        pytest.param([*SOURCE[:2], ("price", "Float64")], TypeMappingError, "column is decimal(18,8)", id="type"),
    ],
)
def test_plan_columns_refuses_a_source_that_cannot_fill_the_target(
    source: list[tuple[str, str]], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        plan_columns(source, TARGET, SPEC)
