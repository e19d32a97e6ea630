-- Raw Kraken trades. Kraken reports an order type and a free-form `misc` field that is
-- usually empty (NULL).
CREATE TABLE IF NOT EXISTS bronze_trades_kraken
(
    exchange_timestamp  DateTime64(3, 'UTC'),
    sequence            UInt64,
    pair                LowCardinality(String),
    trade_id            UInt64,
    price               Decimal(18, 8),
    volume              Decimal(18, 8),
    side                Enum8('buy' = 1, 'sell' = 2),
    order_type          Enum8('market' = 1, 'limit' = 2),
    misc                Nullable(String),
    ingestion_timestamp DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(exchange_timestamp)
ORDER BY (exchange_timestamp, sequence)
TTL toDateTime(exchange_timestamp) + INTERVAL 7 DAY;
