-- Partitioned by day: a 15-minute append touches one partition (two across midnight), and
-- audits and re-offloads work a day at a time. Files are sorted by time then sequence, the
-- order queries and the watermark use. Hash distribution gives one file per partition per commit.
CREATE TABLE IF NOT EXISTS {catalog}.{namespace}.bronze_trades_binance (
    exchange_timestamp  TIMESTAMP      NOT NULL COMMENT 'trade time at the exchange (UTC)',
    sequence            BIGINT         NOT NULL COMMENT 'ingester sequence, increasing per exchange',
    symbol              STRING         NOT NULL,
    trade_id            BIGINT         NOT NULL,
    price               DECIMAL(18, 8) NOT NULL,
    quantity            DECIMAL(18, 8) NOT NULL,
    side                STRING         NOT NULL COMMENT 'buy or sell',
    is_buyer_maker      BOOLEAN        NOT NULL,
    ingestion_timestamp TIMESTAMP      NOT NULL
) USING iceberg
PARTITIONED BY (days(exchange_timestamp))
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
ALTER TABLE {catalog}.{namespace}.bronze_trades_binance WRITE ORDERED BY exchange_timestamp, sequence;
