-- As bronze_trades_binance: daily partitions, time-then-sequence order.
CREATE TABLE IF NOT EXISTS {catalog}.{namespace}.bronze_trades_kraken (
    exchange_timestamp  TIMESTAMP      NOT NULL COMMENT 'trade time at the exchange (UTC)',
    sequence            BIGINT         NOT NULL COMMENT 'ingester sequence, increasing per exchange',
    pair                STRING         NOT NULL,
    trade_id            BIGINT         NOT NULL,
    price               DECIMAL(18, 8) NOT NULL,
    volume              DECIMAL(18, 8) NOT NULL,
    side                STRING         NOT NULL COMMENT 'buy or sell',
    order_type          STRING         NOT NULL COMMENT 'market or limit',
    misc                STRING                  COMMENT 'free-form flags, usually NULL',
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
ALTER TABLE {catalog}.{namespace}.bronze_trades_kraken WRITE ORDERED BY exchange_timestamp, sequence;
