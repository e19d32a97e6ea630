-- The runbook's watermark table: one row per offloaded table, a mirror of the watermark that
-- each Iceberg commit carries in its snapshot summary (the Iceberg table is the source of truth).
-- ReplacingMergeTree keyed by table name, versioned by updated_at: a retried write is harmless,
-- and the runbook's reset INSERT (which leaves updated_at to its default, now) wins over older rows.
CREATE TABLE IF NOT EXISTS offload_watermarks
(
    table_name                String,
    last_offload_timestamp    DateTime64(6, 'UTC'),
    last_offload_max_sequence UInt64 DEFAULT 0,
    last_successful_run       DateTime64(3, 'UTC') DEFAULT 0,
    last_run_duration_seconds Float64 DEFAULT 0,
    status                    LowCardinality(String) DEFAULT 'initialized',
    failure_count             UInt32 DEFAULT 0,
    last_error_message        String DEFAULT '',
    updated_at                DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY table_name;
