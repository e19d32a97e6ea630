-- Trades of every exchange in one shape, fed by materialized views at insert time.
-- `sequence` is unique across exchanges: the exchange's code in the top byte, its own
-- sequence below (exchange sequences stay below 2^56).
CREATE TABLE IF NOT EXISTS silver_trades
(
    exchange_timestamp DateTime64(3, 'UTC'),
    sequence           UInt64,
    exchange           LowCardinality(String),
    symbol             LowCardinality(String),
    trade_id           String,
    price              Decimal(18, 8),
    quantity           Decimal(18, 8),
    side               Enum8('buy' = 1, 'sell' = 2),
    exchange_sequence  UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(exchange_timestamp)
ORDER BY (exchange_timestamp, sequence)
TTL toDateTime(exchange_timestamp) + INTERVAL 7 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS bronze_trades_binance_to_silver TO silver_trades AS
SELECT
    exchange_timestamp,
    bitOr(bitShiftLeft(toUInt64(1), 56), sequence) AS sequence,
    'binance' AS exchange,
    -- BTCUSDT -> BTC-USDT
    replaceRegexpOne(symbol, '^(.+)(USDT|USDC|USD|EUR|BTC)$', '\\1-\\2') AS symbol,
    toString(trade_id) AS trade_id,
    price,
    quantity,
    side,
    sequence AS exchange_sequence
FROM bronze_trades_binance;

CREATE MATERIALIZED VIEW IF NOT EXISTS bronze_trades_kraken_to_silver TO silver_trades AS
SELECT
    exchange_timestamp,
    bitOr(bitShiftLeft(toUInt64(2), 56), sequence) AS sequence,
    'kraken' AS exchange,
    -- XBT/USD -> BTC-USD
    replaceOne(replaceOne(pair, 'XBT/', 'BTC/'), '/', '-') AS symbol,
    toString(trade_id) AS trade_id,
    price,
    volume AS quantity,
    side,
    sequence AS exchange_sequence
FROM bronze_trades_kraken;
