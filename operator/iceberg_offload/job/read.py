"""The executor side of a run: the sub-window bounds Spark distributes, and the read of each
sub-window from ClickHouse, conformed to the target schema."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import pyarrow as pa
from pyspark.sql import Row

from iceberg_offload.adapters import clickhouse_io
from iceberg_offload.core.settings import ClickHouseSettings
from iceberg_offload.core.tables import SourceSpec
from iceberg_offload.core.typemap import ColumnMapping
from iceberg_offload.core.watermark import Watermark, Window, format_timestamp, parse_timestamp
from iceberg_offload.job.errors import OffloadError

PASSWORD_VARIABLE = "ICEBERG_OFFLOAD_CLICKHOUSE_PASSWORD"
FAILPOINT_VARIABLE = "ICEBERG_OFFLOAD_FAILPOINT"
BOUNDS = "lo_ts string, lo_seq long, hi_ts string, hi_seq long"


def bounds_row(window: Window) -> Row:
    """A sub-window as one row of BOUNDS, the input of read_subwindows."""
    return Row(
        lo_ts=format_timestamp(window.lower.timestamp),
        lo_seq=window.lower.sequence,
        hi_ts=format_timestamp(window.upper.timestamp),
        hi_seq=window.upper.sequence,
    )


def read_subwindows(
    clickhouse: ClickHouseSettings,
    source: SourceSpec,
    columns: Sequence[ColumnMapping],
    schema_ipc: bytes,
    batches: Iterable[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """Runs in the executors: read each sub-window from ClickHouse, conformed to the target schema.

    The password is read from the executor's own environment (a Secret reference in
    Kubernetes), so it never travels inside Spark's serialized tasks.
    """
    settings = replace(clickhouse, password=os.environ.get(PASSWORD_VARIABLE, ""))
    target = pa.ipc.read_schema(pa.py_buffer(schema_ipc))
    client = clickhouse_io.connect(settings, session=False)
    try:
        for batch in batches:
            for bounds in batch.to_pylist():
                window = Window(
                    Watermark(parse_timestamp(bounds["lo_ts"]), bounds["lo_seq"]),
                    Watermark(parse_timestamp(bounds["hi_ts"]), bounds["hi_seq"]),
                )
                for records in clickhouse_io.read_window(client, source, columns, window):
                    yield conform(records, target)
                    _mid_read_failpoint()
    finally:
        client.close()


def _mid_read_failpoint() -> None:
    """Crash tests only: the whole job dies mid-read. PySpark's daemon makes a process group of
    its own and so does each worker, so the group killed is that of the daemon's parent, the JVM
    (in local mode the job's: driver and JVM); start the job in a session of its own."""
    if os.environ.get(FAILPOINT_VARIABLE) == "mid-read":
        daemon = os.getppid()
        with open(f"/proc/{daemon}/stat") as stat:  # "pid (comm) state ppid ...", comm may hold spaces
            jvm = int(stat.read().rsplit(")", 1)[1].split()[1])
        os.killpg(os.getpgid(jvm), signal.SIGKILL)


def conform(batch: pa.RecordBatch, target: pa.Schema) -> pa.RecordBatch:
    """Select and cast by name: Spark does not check what mapInArrow yields against its schema."""
    names = set(batch.schema.names)
    missing = [f.name for f in target if f.name not in names]
    if missing:
        raise OffloadError(f"ClickHouse returned no column {', '.join(missing)}")
    arrays = []
    for f in target:
        column = batch.column(f.name).cast(f.type)
        if not f.nullable and column.null_count:
            raise OffloadError(f"column {f.name!r} holds NULL but the Iceberg column is required")
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=target)
