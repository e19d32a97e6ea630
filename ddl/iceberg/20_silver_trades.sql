-- Daily partitions split by exchange: per-exchange audits and re-offloads prune to one
-- exchange; within a file rows are ordered by symbol then time for symbol-range reads.
CREATE TABLE IF NOT EXISTS {catalog}.{namespace}.silver_trades (
    exchange_timestamp TIMESTAMP      NOT NULL COMMENT 'trade time at the exchange (UTC)',
    sequence           BIGINT         NOT NULL COMMENT 'exchange code in the top byte, exchange sequence below',
    exchange           STRING         NOT NULL,
    symbol             STRING         NOT NULL COMMENT 'canonical BASE-QUOTE',
    trade_id           STRING         NOT NULL,
    price              DECIMAL(18, 8) NOT NULL,
    quantity           DECIMAL(18, 8) NOT NULL,
    side               STRING         NOT NULL COMMENT 'buy or sell',
    exchange_sequence  BIGINT         NOT NULL
) USING iceberg
PARTITIONED BY (days(exchange_timestamp), exchange)
TBLPROPERTIES (
    'format-version' = '2',
    'write.distribution-mode' = 'hash',
    'write.parquet.compression-codec' = 'zstd',
    -- A run stages its snapshot and publishes it by compare-and-swap (write-audit-publish).
    'write.wap.enabled' = 'true',
    -- Old metadata.json versions are deleted as commits add new ones.
    'write.metadata.delete-after-commit.enabled' = 'true',
    'write.metadata.previous-versions-max' = '20'
);
ALTER TABLE {catalog}.{namespace}.silver_trades WRITE ORDERED BY symbol, exchange_timestamp, sequence;
