"""adapters.arrow_audit, the vectorised Iceberg side of the audit, equals core.audit's reference
(canonical_value, row_digest and bucket_stats, one Python value at a time) bit for bit: for every
audited type, with NULLs, extreme decimals, timestamps before 1970, any unicode, NaN payloads,
sliced and dictionary-encoded arrays, and across batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iceberg_offload.adapters import arrow_audit
from iceberg_offload.core import audit
from iceberg_offload.core.typemap import (
    BIGINT,
    BOOLEAN,
    DATE,
    DOUBLE,
    FLOAT,
    INT,
    STRING,
    TIMESTAMP,
    IcebergType,
)

HOUR = timedelta(hours=1)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # lone surrogates are not UTF-8
timestamps = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC))


@st.composite
def decimal_columns(draw: st.DrawFn) -> tuple[IcebergType, pa.DataType, st.SearchStrategy[Any]]:
    precision = draw(st.integers(1, 38))
    scale = draw(st.integers(0, precision))
    bound = 10**precision - 1
    values = st.integers(-bound, bound).map(lambda unscaled: Decimal(f"{unscaled}E-{scale}"))  # exact: no context
    return IcebergType("decimal", precision, scale), pa.decimal128(precision, scale), values


PLAIN: dict[str, tuple[IcebergType, pa.DataType, st.SearchStrategy[Any]]] = {
    "timestamp": (TIMESTAMP, pa.timestamp("us", "UTC"), timestamps),
    "date": (DATE, pa.date32(), st.dates()),
    "int": (INT, pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "bigint": (BIGINT, pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "string": (STRING, pa.string(), text),
    "boolean": (BOOLEAN, pa.bool_(), st.booleans()),
    "float": (FLOAT, pa.float32(), st.floats(width=32)),
    "double": (DOUBLE, pa.float64(), st.floats()),
}
column_types = st.one_of(st.sampled_from(sorted(PLAIN)).map(PLAIN.__getitem__), decimal_columns())


@st.composite
def columns(draw: st.DrawFn, size: int | None = None) -> tuple[IcebergType, pa.Array]:
    """A column of one audited type, a third of its values NULL at most, sometimes sliced."""
    iceberg_type, arrow_type, values = draw(column_types)
    count = size if size is not None else draw(st.integers(0, 20))
    lead = draw(st.integers(0, 2))
    drawn = draw(st.lists(st.one_of(values, values, st.none()), min_size=count + lead, max_size=count + lead))
    return iceberg_type, pa.array(drawn, arrow_type).slice(lead)


def reference(column: pa.Array, iceberg_type: IcebergType) -> list[str]:
    return [audit.canonical_value(v, iceberg_type) for v in column.to_pylist()]


@settings(max_examples=300, deadline=None)
@given(columns())
def test_canonical_texts_equal_the_reference(column: tuple[IcebergType, pa.Array]) -> None:
    iceberg_type, values = column
    assert arrow_audit.canonical_texts(values, iceberg_type).to_pylist() == reference(values, iceberg_type)


@pytest.mark.parametrize(
    ("iceberg_type", "values"),
    [
        (IcebergType("decimal", 38, 38), pa.array([Decimal("-0." + "9" * 38), Decimal("1E-38"), None])),
        (IcebergType("decimal", 38, 0), pa.array([Decimal("9" * 38), Decimal("-" + "9" * 38), Decimal(0)])),
        (IcebergType("decimal", 18, 8), pa.array([Decimal("-0.00000001"), Decimal("0E-8"), Decimal("1.5")])),
        (TIMESTAMP, pa.array([datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)])),
        (DOUBLE, pa.array([float("nan"), -float("nan"), -0.0, float("-inf")])),
        (STRING, pa.array(["", "\x1f", "\\N", "日本語 🚀", None])),
    ],
)
def test_extremes_equal_the_reference(iceberg_type: IcebergType, values: pa.Array) -> None:
    if iceberg_type.name == "decimal":
        values = values.cast(pa.decimal128(iceberg_type.precision, iceberg_type.scale))
    assert arrow_audit.canonical_texts(values, iceberg_type).to_pylist() == reference(values, iceberg_type)


def test_dictionary_encoded_strings_are_their_values() -> None:
    batch = pa.record_batch({"s": pa.array(["a", "b", None, "a"]).dictionary_encode()})
    plain = pa.record_batch({"s": pa.array(["a", "b", None, "a"])})
    assert arrow_audit.row_digests(batch, [("s", STRING)]) == arrow_audit.row_digests(plain, [("s", STRING)])


def reference_digests(batch: pa.RecordBatch, cols: list[tuple[str, IcebergType]]) -> list[int]:
    values = [batch.column(name).to_pylist() for name, _ in cols]
    return [
        audit.row_digest(audit.canonical_value(v[i], t) for v, (_, t) in zip(values, cols, strict=True))
        for i in range(len(batch))
    ]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 15).flatmap(lambda n: st.lists(columns(n), min_size=1, max_size=5)))
def test_row_digests_equal_the_reference(drawn: list[tuple[IcebergType, pa.Array]]) -> None:
    batch = pa.record_batch([values for _, values in drawn], names=[f"c{i}" for i in range(len(drawn))])
    cols = [(f"c{i}", t) for i, (t, _) in enumerate(drawn)]
    assert arrow_audit.row_digests(batch, cols).to_pylist() == reference_digests(batch, cols)


widths = st.sampled_from([1, 999, 60 * 10**6, 3600 * 10**6, 86400 * 10**6]).map(lambda us: timedelta(microseconds=us))
audited = st.lists(st.tuples(timestamps, st.integers(-(2**63), 2**63 - 1), st.one_of(text, st.none())), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(audited, max_size=4), widths)
def test_bucket_stats_equal_the_reference_across_batches(
    batches: list[list[tuple[datetime, int, str | None]]], width: timedelta
) -> None:
    schema = pa.schema([("ts", pa.timestamp("us", "UTC")), ("seq", pa.int64()), ("note", pa.string())])
    arrow = [pa.RecordBatch.from_pylist([dict(zip(schema.names, r, strict=True)) for r in b], schema) for b in batches]
    cols = [("ts", TIMESTAMP), ("seq", BIGINT), ("note", STRING)]
    rows = [
        (ts, audit.row_digest(audit.canonical_value(v, t) for v, (_, t) in zip((ts, seq, note), cols, strict=True)))
        for b in batches
        for ts, seq, note in b
    ]
    assert arrow_audit.bucket_stats(arrow, "ts", cols, width) == audit.bucket_stats(rows, width)


def test_a_bucket_sum_wraps_modulo_two_to_the_64() -> None:
    # 2000 rows in one bucket: their digests' sum passes 2**64, so the 32-bit halves must carry.
    batch = pa.RecordBatch.from_pylist([{"ts": datetime(2026, 1, 1, tzinfo=UTC), "seq": i} for i in range(2000)])
    cols = [("ts", TIMESTAMP), ("seq", BIGINT)]
    digests = reference_digests(batch, cols)
    assert sum(digests) > 2**64
    expected = {
        audit.bucket_index(datetime(2026, 1, 1, tzinfo=UTC), HOUR): audit.BucketStats(2000, sum(digests) % 2**64)
    }
    assert arrow_audit.bucket_stats([batch], "ts", cols, HOUR) == expected


def test_an_unsupported_type_is_refused() -> None:
    with pytest.raises(audit.AuditError, match="cannot checksum"):
        arrow_audit.canonical_texts(pa.array([b"x"]), IcebergType("binary"))
