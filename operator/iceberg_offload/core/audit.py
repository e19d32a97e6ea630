"""The audit's arithmetic: time buckets over a committed range, an order-independent checksum of
rows that ClickHouse (in SQL) and Python (over the Iceberg side's rows) compute alike, and the
comparison of the two sides bucket by bucket.

Pure logic: no engine, catalog or network imports.

A row's digest is the first 8 bytes (little-endian) of the MD5 of its canonical text: the
canonical text of each audited column, joined by the unit separator (0x1F). A bucket's checksum
is the sum of its rows' digests modulo 2**64: independent of row order, and a duplicated row
changes it (a XOR would cancel). Canonical text per Iceberg type:

- timestamp: microseconds since the epoch, as a decimal integer;
- date: days since the epoch;
- int, bigint: the decimal integer; string: the string itself;
- boolean: ``true`` / ``false``;
- decimal(p, s): fixed-point with exactly s fraction digits (``toDecimalString``);
- float, double: the IEEE-754 bits of the value as a double, as an unsigned integer;
- NULL: ``\\N``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from iceberg_offload.core.typemap import IcebergType

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SEPARATOR = "\x1f"
NULL = "\\N"
MODULUS = 2**64
_MICROS = timedelta(microseconds=1)


class AuditError(ValueError):
    """An audit that cannot be computed as asked."""


@dataclass(frozen=True, order=True)
class Bucket:
    """The rows with start <= timestamp < end."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def bucket_index(timestamp: datetime, width: timedelta) -> int:
    """The number of the width-aligned bucket (counted from the epoch) holding `timestamp`."""
    return (timestamp - EPOCH) // width


def plan_buckets(lower: datetime, upper: datetime, width: timedelta) -> list[Bucket]:
    """The width-aligned buckets covering [lower, upper), the first and last clipped to it."""
    if width <= timedelta(0) or width % _MICROS:
        raise AuditError(f"bucket width {width} must be a positive whole number of microseconds")
    if upper < lower:
        raise AuditError(f"audit range [{lower.isoformat()}, {upper.isoformat()}) is inverted")
    buckets = []
    index = bucket_index(lower, width)
    while lower < upper:
        end = min(upper, EPOCH + (index + 1) * width)
        buckets.append(Bucket(lower, end))
        lower, index = end, index + 1
    return buckets


def canonical_sql(expr: str, iceberg_type: IcebergType) -> str:
    """ClickHouse SQL giving the canonical text of `expr`, a value of `iceberg_type`."""
    name = iceberg_type.name
    if name == "timestamp":
        text = f"toString(toUnixTimestamp64Micro(toDateTime64({expr}, 6, 'UTC')))"
    elif name == "date":
        text = f"toString(toInt32(toDate32({expr})))"
    elif name in ("int", "bigint", "string"):
        text = f"toString({expr})"
    elif name == "boolean":
        text = f"if({expr}, 'true', 'false')"
    elif name == "decimal":
        text = f"toDecimalString({expr}, {iceberg_type.scale})"
    elif name in ("float", "double"):
        text = f"toString(reinterpretAsUInt64(toFloat64({expr})))"
    else:
        raise AuditError(f"the audit cannot checksum columns of type {iceberg_type}")
    return f"ifNull({text}, '{NULL}')"


def digest_sql(texts: Sequence[str]) -> str:
    """ClickHouse SQL giving a row's digest (UInt64) from its columns' canonical texts."""
    if not texts:
        raise AuditError("the audit needs at least one column")
    joined = f", '{SEPARATOR}', ".join(texts)
    return f"reinterpretAsUInt64(substring(MD5(concat({joined}, '')), 1, 8))"  # concat takes 2 or more


def canonical_value(value: object, iceberg_type: IcebergType) -> str:
    """The canonical text of one Python value (as pyarrow gives it) of `iceberg_type`."""
    if value is None:
        return NULL
    name = iceberg_type.name
    if name == "timestamp" and isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return str((moment - EPOCH) // _MICROS)
    if name == "date" and isinstance(value, date):
        return str((value - EPOCH.date()).days)
    if name == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if name in ("int", "bigint") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if name == "string" and isinstance(value, str):
        return value
    if name == "decimal" and isinstance(value, Decimal):
        return f"{value:.{iceberg_type.scale}f}"
    if name in ("float", "double") and isinstance(value, float):
        return str(struct.unpack("<Q", struct.pack("<d", value))[0])
    raise AuditError(f"cannot checksum {value!r} as {iceberg_type}")


def row_digest(texts: Iterable[str]) -> int:
    """A row's digest from its columns' canonical texts (what digest_sql computes)."""
    return int.from_bytes(hashlib.md5(SEPARATOR.join(texts).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class BucketStats:
    """One side's rows in a bucket: how many, and the sum of their digests modulo 2**64."""

    rows: int = 0
    checksum: int = 0

    def add(self, digest: int) -> BucketStats:
        return BucketStats(self.rows + 1, (self.checksum + digest) % MODULUS)


def bucket_stats(rows: Iterable[tuple[datetime, int]], width: timedelta) -> dict[int, BucketStats]:
    """(timestamp, digest) pairs summed per bucket index: the Python side of the audit."""
    stats: dict[int, BucketStats] = {}
    for timestamp, digest in rows:
        index = bucket_index(timestamp, width)
        stats[index] = stats.get(index, BucketStats()).add(digest)
    return stats


@dataclass(frozen=True)
class BucketDiff:
    """A bucket whose two sides differ. `missing`/`extra`: rows ClickHouse holds more/fewer of;
    both 0 when the counts agree but the rows do not (revised values, a replaced row)."""

    bucket: Bucket
    clickhouse: BucketStats
    iceberg: BucketStats

    @property
    def missing(self) -> int:
        return max(0, self.clickhouse.rows - self.iceberg.rows)

    @property
    def extra(self) -> int:
        return max(0, self.iceberg.rows - self.clickhouse.rows)

    @property
    def changed(self) -> bool:
        return self.clickhouse.rows == self.iceberg.rows

    def describe(self) -> str:
        if self.changed:
            what = f"{self.clickhouse.rows} rows on both sides, contents differ"
        elif self.missing:
            what = f"{self.missing} rows missing in Iceberg ({self.iceberg.rows} of {self.clickhouse.rows})"
        else:
            what = f"{self.extra} rows extra in Iceberg ({self.iceberg.rows}, ClickHouse {self.clickhouse.rows})"
        return f"{self.bucket}: {what}"


@dataclass(frozen=True)
class AuditReport:
    """The comparison of a range, bucket by bucket."""

    buckets: tuple[Bucket, ...]
    differing: tuple[BucketDiff, ...]

    @property
    def in_sync(self) -> bool:
        return not self.differing

    @property
    def rows_missing(self) -> int:
        return sum(d.missing for d in self.differing)

    @property
    def rows_extra(self) -> int:
        return sum(d.extra for d in self.differing)

    def summary(self) -> str:
        if self.in_sync:
            return f"{len(self.buckets)} buckets checked, all equal"
        return (
            f"{len(self.buckets)} buckets checked, {len(self.differing)} differ: "
            f"{self.rows_missing} rows missing in Iceberg, {self.rows_extra} extra"
        )


def compare(
    buckets: Sequence[Bucket],
    clickhouse: Mapping[int, BucketStats],
    iceberg: Mapping[int, BucketStats],
    width: timedelta,
) -> AuditReport:
    """Each bucket's two sides, by bucket index (a missing index is an empty bucket)."""
    differing = []
    for bucket in buckets:
        index = bucket_index(bucket.start, width)
        ours, theirs = clickhouse.get(index, BucketStats()), iceberg.get(index, BucketStats())
        if ours != theirs:
            differing.append(BucketDiff(bucket, ours, theirs))
    return AuditReport(tuple(buckets), tuple(differing))
