-- The runbook's watermark table: one row per offloaded table, a mirror of the watermark that
-- each Iceberg commit carries in its snapshot summary (the Iceberg table is the source of truth).
-- Exactly the runbook's columns. ReplacingMergeTree keyed by table name keeps the row inserted
-- last: a retried write of the same row is harmless, and the operator's next write follows any
-- row inserted by hand.
CREATE TABLE IF NOT EXISTS offload_watermarks
(
    table_name                String,
    last_offload_timestamp    DateTime64(6, 'UTC'),
    last_offload_max_sequence UInt64 DEFAULT 0,
    last_successful_run       DateTime64(3, 'UTC') DEFAULT 0,
    last_run_duration_seconds Float64 DEFAULT 0,
    status                    LowCardinality(String) DEFAULT 'initialized',
    failure_count             UInt32 DEFAULT 0,
    last_error_message        String DEFAULT ''
)
ENGINE = ReplacingMergeTree
ORDER BY table_name;
