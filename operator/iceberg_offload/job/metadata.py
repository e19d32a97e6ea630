"""Iceberg metadata read through Spark: existence, the current snapshot, the committed watermark
and a run's own commit."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from iceberg_offload.core.result import RUN_ID, WATERMARK_TIMESTAMP, newest_watermark
from iceberg_offload.core.watermark import Watermark


def table_exists(spark: SparkSession, identifier: str) -> bool:
    return bool(spark.catalog.tableExists(identifier))


def spark_current_snapshot(spark: SparkSession, identifier: str) -> int | None:
    """The table's current snapshot id (None for a table without snapshots)."""
    rows = spark.sql(
        f"SELECT snapshot_id FROM {identifier}.history WHERE is_current_ancestor ORDER BY made_current_at DESC LIMIT 1"
    ).collect()
    return int(rows[0]["snapshot_id"]) if rows else None


def spark_committed_watermark(spark: SparkSession, identifier: str) -> Watermark | None:
    """The newest watermark in the table's current lineage (maintenance snapshots carry none)."""
    rows = spark.sql(
        f"SELECT s.summary FROM {identifier}.history h JOIN {identifier}.snapshots s "
        "ON h.snapshot_id = s.snapshot_id "
        f"WHERE h.is_current_ancestor AND s.summary['{WATERMARK_TIMESTAMP}'] IS NOT NULL "
        "ORDER BY h.made_current_at DESC LIMIT 1"
    ).collect()
    return newest_watermark(dict(r["summary"]) for r in rows)


def spark_commit_of_run(spark: SparkSession, identifier: str, run_id: str) -> tuple[int, int] | None:
    """(snapshot id, rows added) of the commit a run made, if it made one."""
    snapshots = spark.table(f"{identifier}.snapshots")
    rows = (
        snapshots.where(F.col("summary").getItem(RUN_ID) == F.lit(run_id))
        .orderBy(F.col("committed_at").desc())
        .select("snapshot_id", F.col("summary").getItem("added-records").alias("added"))
        .limit(1)
        .collect()
    )
    if not rows:
        return None
    return int(rows[0]["snapshot_id"]), int(rows[0]["added"] or 0)
