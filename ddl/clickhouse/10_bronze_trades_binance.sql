-- Raw Binance trades as the ingester writes them. `sequence` is assigned by the ingester and
-- increases per exchange; ties on exchange_timestamp are ordered by it. The TTL keeps the hot
-- tier small: rows older than that must have been offloaded (the runbook's "TTL race").
CREATE TABLE IF NOT EXISTS bronze_trades_binance
(
    exchange_timestamp  DateTime64(3, 'UTC'),
    sequence            UInt64,
    symbol              LowCardinality(String),
    trade_id            UInt64,
    price               Decimal(18, 8),
    quantity            Decimal(18, 8),
    side                Enum8('buy' = 1, 'sell' = 2),
    is_buyer_maker      Bool,
    ingestion_timestamp DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(exchange_timestamp)
ORDER BY (exchange_timestamp, sequence)
TTL toDateTime(exchange_timestamp) + INTERVAL 7 DAY;
