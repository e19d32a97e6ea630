"""core.audit: buckets partition a range, the checksum is order-independent and sensitive to a
duplicate, canonical texts per type, and the comparison's arithmetic."""

from __future__ import annotations

import hashlib
import itertools
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iceberg_offload.core import audit
from iceberg_offload.core.typemap import BIGINT, BOOLEAN, DATE, DOUBLE, STRING, TIMESTAMP, IcebergType

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
widths = st.integers(min_value=1, max_value=10**11).map(lambda us: timedelta(microseconds=us))


@given(moments, moments, widths)
def test_buckets_partition_the_range_on_width_boundaries(a: datetime, b: datetime, width: timedelta) -> None:
    lower, upper = min(a, b), max(a, b)
    if (upper - lower) / width > 2000:
        upper = lower + 2000 * width
    buckets = audit.plan_buckets(lower, upper, width)
    edges = [lower, *(bk.end for bk in buckets)]
    assert edges[-1] == upper and all(x < y for x, y in itertools.pairwise(edges))
    assert [bk.start for bk in buckets] == edges[:-1]
    # every inner edge is a multiple of the width from the epoch; each bucket is one bucket index
    assert all((e - audit.EPOCH) % width == timedelta(0) for e in edges[1:-1])
    for bk in buckets:
        last = bk.end - timedelta(microseconds=1)
        assert audit.bucket_index(bk.start, width) == audit.bucket_index(last, width)


@pytest.mark.parametrize(
    ("lower", "upper", "width", "error"),
    [
        (T0, T0 - HOUR, HOUR, "inverted"),
        (T0, T0 + HOUR, timedelta(0), "positive"),
        (T0, T0 + HOUR, timedelta(microseconds=-1), "positive"),
    ],
)
def test_bad_ranges_and_widths_are_refused(lower: datetime, upper: datetime, width: timedelta, error: str) -> None:
    with pytest.raises(audit.AuditError, match=error):
        audit.plan_buckets(lower, upper, width)


def test_an_empty_range_has_no_bucket() -> None:
    assert audit.plan_buckets(T0, T0, HOUR) == []


@pytest.mark.parametrize(
    ("value", "type_", "text"),
    [
        (None, STRING, "\\N"),
        (T0, TIMESTAMP, str(int(T0.timestamp()) * 10**6)),
        (datetime(1970, 1, 1, 0, 0, 0, 5, tzinfo=UTC), TIMESTAMP, "5"),
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), TIMESTAMP, "-1"),
        (date(1970, 1, 2), DATE, "1"),
        (7, BIGINT, "7"),
        (-7, BIGINT, "-7"),
        ("BTC-USD", STRING, "BTC-USD"),
        (True, BOOLEAN, "true"),
        (False, BOOLEAN, "false"),
        (Decimal("1.5"), IcebergType("decimal", 18, 8), "1.50000000"),
        (Decimal("-0.00000001"), IcebergType("decimal", 18, 8), "-0.00000001"),
        (Decimal("12"), IcebergType("decimal", 38, 0), "12"),
        (1.0, DOUBLE, str(0x3FF0000000000000)),
    ],
)
def test_canonical_texts(value: object, type_: IcebergType, text: str) -> None:
    assert audit.canonical_value(value, type_) == text


@pytest.mark.parametrize(
    ("value", "type_"), [("7", BIGINT), (7, STRING), (1, BOOLEAN), (1.5, IcebergType("decimal", 9, 2))]
)
def test_a_value_of_another_type_is_refused(value: object, type_: IcebergType) -> None:
    with pytest.raises(audit.AuditError, match="cannot checksum"):
        audit.canonical_value(value, type_)


def test_the_digest_is_the_first_eight_md5_bytes_little_endian() -> None:
    # An independent restatement: hex of the MD5, the first 16 hex digits, byte order reversed.
    hexed = hashlib.md5(b"a\x1fb").hexdigest()[:16]
    expected = int("".join(reversed([hexed[i : i + 2] for i in range(0, 16, 2)])), 16)
    assert audit.row_digest(["a", "b"]) == expected


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2**64 - 1)), max_size=50), st.randoms())
def test_bucket_checksums_do_not_depend_on_row_order(rows: list[tuple[int, int]], rng: random.Random) -> None:
    width = timedelta(seconds=60)
    stamped = [(T0 + timedelta(seconds=s), d) for s, d in rows]
    shuffled = list(stamped)
    rng.shuffle(shuffled)
    assert audit.bucket_stats(stamped, width) == audit.bucket_stats(shuffled, width)


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20), st.data())
def test_a_duplicated_row_changes_the_bucket(digests: list[int], data: st.DataObject) -> None:
    width = timedelta(seconds=60)
    rows = [(T0, d) for d in digests]
    duplicate = data.draw(st.sampled_from(digests))
    assert audit.bucket_stats(rows, width) != audit.bucket_stats([*rows, (T0, duplicate)], width)


def test_compare_counts_missing_extra_and_changed_buckets() -> None:
    buckets = audit.plan_buckets(T0, T0 + 4 * HOUR, HOUR)
    i = audit.bucket_index(T0, HOUR)
    ch = {i: audit.BucketStats(10, 1), i + 1: audit.BucketStats(5, 2), i + 2: audit.BucketStats(3, 3)}
    ice = {
        i: audit.BucketStats(10, 1),
        i + 1: audit.BucketStats(3, 9),
        i + 2: audit.BucketStats(3, 4),
        i + 3: audit.BucketStats(2, 5),
    }
    report = audit.compare(buckets, ch, ice, HOUR)
    assert [d.bucket for d in report.differing] == buckets[1:]
    assert [(d.missing, d.extra, d.changed) for d in report.differing] == [(2, 0, False), (0, 0, True), (0, 2, False)]
    assert (report.rows_missing, report.rows_extra, report.in_sync) == (2, 2, False)
    assert report.summary() == "4 buckets checked, 3 differ: 2 rows missing in Iceberg, 2 extra"
    assert "2 rows missing in Iceberg (3 of 5)" in report.differing[0].describe()


def test_equal_sides_are_in_sync() -> None:
    buckets = audit.plan_buckets(T0, T0 + 2 * HOUR, HOUR)
    same = {audit.bucket_index(T0, HOUR): audit.BucketStats(4, 44)}
    report = audit.compare(buckets, same, dict(same), HOUR)
    assert report.in_sync and report.summary() == "2 buckets checked, all equal"


def test_sql_of_an_unsupported_type_is_refused() -> None:
    with pytest.raises(audit.AuditError, match="cannot checksum columns of type"):
        audit.canonical_sql("x", IcebergType("binary"))
