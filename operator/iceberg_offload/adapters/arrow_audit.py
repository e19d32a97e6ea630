"""The Iceberg side's audit arithmetic over Arrow batches: each row's canonical text built a
column at a time with pyarrow compute, an MD5 per row, and the per-bucket sums in Arrow.

core.audit defines the canonical texts (`canonical_value`, one Python value at a time, is the
reference this must equal bit for bit; tests/unit/test_arrow_audit.py holds them together) and
the digest. Only the MD5 runs once per row in Python, in a tight loop over bytes.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Sequence
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

from iceberg_offload.core import audit
from iceberg_offload.core.typemap import IcebergType

_MICROS = timedelta(microseconds=1)
_LOW32 = 0xFFFFFFFF


def _reinterpret(column: pa.Array, arrow_type: pa.DataType) -> pa.Array:
    """The same fixed-width values (validity and data buffers) read as another type of that width."""
    return pa.Array.from_buffers(arrow_type, len(column), column.buffers()[:2], offset=column.offset)


def _decimal_text(column: pa.Array, scale: int) -> pa.Array:
    """Fixed-point text with exactly `scale` fraction digits (Arrow's own decimal-to-string
    switches to exponent notation for small values): the unscaled integer, read from the same
    128-bit buffer as decimal(38, 0), with the point put in by string kernels."""
    if not pa.types.is_decimal128(column.type):
        column = column.cast(pa.decimal128(38, column.type.scale))
    unscaled = _reinterpret(column, pa.decimal128(38, 0)).cast(pa.string())
    if scale == 0:
        return unscaled
    negative = pc.starts_with(unscaled, "-")
    digits = pc.utf8_lpad(pc.utf8_ltrim(unscaled, "-"), scale + 1, "0")
    whole, fraction = pc.utf8_slice_codeunits(digits, 0, -scale), pc.utf8_slice_codeunits(digits, -scale)
    sign = pc.if_else(negative, "-", "")
    return pc.binary_join_element_wise(sign, whole, ".", fraction, "")


def canonical_texts(column: pa.Array, iceberg_type: IcebergType) -> pa.Array:
    """The canonical text of every value of `column` (core.audit.canonical_value's, vectorised)."""
    name = iceberg_type.name
    if name == "timestamp":
        text = column.cast(pa.timestamp("us", column.type.tz)).cast(pa.int64()).cast(pa.string())
    elif name == "date":
        text = column.cast(pa.date32()).cast(pa.int32()).cast(pa.string())
    elif name in ("int", "bigint", "string"):
        text = column.cast(pa.string())
    elif name == "boolean":
        text = pc.if_else(column, "true", "false")
    elif name == "decimal":
        text = _decimal_text(column, iceberg_type.scale)
    elif name in ("float", "double"):
        text = _reinterpret(column.cast(pa.float64()), pa.uint64()).cast(pa.string())
    else:
        raise audit.AuditError(f"the audit cannot checksum columns of type {iceberg_type}")
    return pc.if_else(pc.is_null(column), audit.NULL, text)


def row_digests(batch: pa.RecordBatch, columns: Sequence[tuple[str, IcebergType]]) -> pa.Array:
    """Each row's digest (core.audit.row_digest of its canonical texts) as a uint64 array."""
    if not columns:
        raise audit.AuditError("the audit needs at least one column")
    texts = [canonical_texts(_plain(batch.column(name)), t) for name, t in columns]
    joined = pc.binary_join_element_wise(*texts, audit.SEPARATOR).cast(pa.binary())
    md5 = hashlib.md5
    packed = b"".join([md5(value).digest()[:8] for value in joined.to_pylist()])
    digests = pa.Array.from_buffers(pa.uint64(), len(batch), [None, pa.py_buffer(packed)])
    if sys.byteorder != "little":  # the digest is little-endian; Arrow's buffer is native
        digests = pa.array([int.from_bytes(packed[i : i + 8], "little") for i in range(0, len(packed), 8)], pa.uint64())
    return digests


def _plain(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A dictionary-encoded column decoded (pyiceberg may give strings dictionary-encoded)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def bucket_indices(timestamps: pa.Array, width: timedelta) -> pa.Array:
    """Each timestamp's width-aligned bucket number from the epoch (floor division, also before 1970)."""
    width_us = width // _MICROS
    micros = timestamps.cast(pa.timestamp("us", timestamps.type.tz)).cast(pa.int64())
    # Arrow's integer division truncates toward zero; shifting negatives by width - 1 floors them.
    shifted = pc.if_else(pc.less(micros, 0), pc.subtract(micros, width_us - 1), micros)
    return pc.divide(shifted, width_us)


def bucket_stats(
    batches: Iterable[pa.RecordBatch],
    timestamp_column: str,
    columns: Sequence[tuple[str, IcebergType]],
    width: timedelta,
) -> dict[int, audit.BucketStats]:
    """Rows and checksum per bucket index, like core.audit.bucket_stats over each row's
    (timestamp, row_digest): the digests' 32-bit halves are summed by Arrow per bucket (no sum
    can overflow), then put together modulo 2**64."""
    sums: dict[int, tuple[int, int, int]] = {}
    for batch in batches:
        if not len(batch):
            continue
        digests = row_digests(batch, columns)
        grouped = pa.table(
            {
                "bucket": bucket_indices(_plain(batch.column(timestamp_column)), width),
                "high": pc.shift_right(digests, pa.scalar(32, pa.uint64())),
                "low": pc.bit_wise_and(digests, pa.scalar(_LOW32, pa.uint64())),
            }
        ).group_by("bucket")
        result = grouped.aggregate([("high", "count"), ("high", "sum"), ("low", "sum")]).to_pydict()
        for bucket, rows, high, low in zip(
            result["bucket"], result["high_count"], result["high_sum"], result["low_sum"], strict=True
        ):
            before = sums.get(bucket, (0, 0, 0))
            sums[bucket] = (before[0] + rows, before[1] + high, before[2] + low)
    return {b: audit.BucketStats(n, ((high << 32) + low) % audit.MODULUS) for b, (n, high, low) in sums.items()}
