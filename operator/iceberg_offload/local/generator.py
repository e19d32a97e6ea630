"""A realistic stream of trades for the two bronze tables, for the demo, tests and benchmarks.

Prices follow a random walk per symbol, arrivals are Poisson, and each exchange's sequence
keeps increasing across calls. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from iceberg_offload.core.watermark import EPOCH, utc

_DECIMAL = pa.decimal128(18, 8)
_TS = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class Market:
    symbol: str
    price: float
    volatility: float  # per-trade relative standard deviation
    size: float  # mean trade quantity


BINANCE = (
    Market("BTCUSDT", 91_000.0, 0.00012, 0.02),
    Market("ETHUSDT", 3_050.0, 0.00015, 0.4),
    Market("SOLUSDT", 142.0, 0.0002, 6.0),
)
KRAKEN = (
    Market("XBT/USD", 90_950.0, 0.00012, 0.03),
    Market("ETH/USD", 3_048.0, 0.00015, 0.5),
)


def _arrivals(rng: np.random.Generator, start: datetime, end: datetime, rate: float) -> np.ndarray:
    """Millisecond timestamps (since the epoch) in (start, end], Poisson at `rate` per second."""
    lo = int((utc(start) - EPOCH) / timedelta(milliseconds=1))
    hi = int((utc(end) - EPOCH) / timedelta(milliseconds=1))
    count = int(rng.poisson(rate * max(hi - lo, 0) / 1000))
    if hi <= lo:
        return np.empty(0, dtype=np.int64)
    return np.sort(rng.integers(lo + 1, hi + 1, size=count))


def _walk(rng: np.random.Generator, market: Market, n: int, offset: float) -> np.ndarray:
    steps = rng.normal(0.0, market.volatility, size=n)
    return market.price * np.exp(offset + np.cumsum(steps))


def _decimals(values: np.ndarray) -> pa.Array:
    return pa.array(np.round(values, 8)).cast(_DECIMAL)


def _trades(
    rng: np.random.Generator,
    markets: tuple[Market, ...],
    start: datetime,
    end: datetime,
    rate: float,
    first_sequence: int,
) -> dict[str, np.ndarray]:
    ts = _arrivals(rng, start, end, rate)
    n = len(ts)
    which = rng.integers(0, len(markets), size=n)
    price = np.empty(n)
    qty = np.empty(n)
    # The walk restarts from a seed-and-time dependent level so that consecutive calls drift.
    drift = float(np.sin(int((utc(start) - EPOCH).total_seconds()) / 86_400.0) * 0.01)
    for i, market in enumerate(markets):
        mask = which == i
        price[mask] = _walk(rng, market, int(mask.sum()), drift)
        qty[mask] = np.round(rng.exponential(market.size, size=int(mask.sum())) + 1e-8, 8)
    return {
        "ts": ts,
        "sequence": np.arange(first_sequence, first_sequence + n, dtype=np.uint64),
        "symbol": np.array([markets[i].symbol for i in which], dtype=object),
        "price": price,
        "qty": qty,
        "buy": rng.random(n) < 0.5,
    }


def binance_trades(
    start: datetime, end: datetime, *, rate: float = 8.0, first_sequence: int = 1, seed: int = 1
) -> pa.Table:
    """Binance trades in (start, end] for `bronze_trades_binance`."""
    rng = np.random.default_rng([seed, 1, first_sequence])
    t = _trades(rng, BINANCE, start, end, rate, first_sequence)
    n = len(t["ts"])
    return pa.table(
        {
            "exchange_timestamp": pa.array(t["ts"], type=pa.int64()).cast(_TS),
            "sequence": pa.array(t["sequence"], type=pa.uint64()),
            "symbol": pa.array(t["symbol"], type=pa.string()),
            "trade_id": pa.array(
                np.arange(n, dtype=np.uint64) + np.uint64(5_000_000_000 + first_sequence), type=pa.uint64()
            ),
            "price": _decimals(t["price"]),
            "quantity": _decimals(t["qty"]),
            "side": pa.array(np.where(t["buy"], "buy", "sell"), type=pa.string()),
            "is_buyer_maker": pa.array(~t["buy"], type=pa.bool_()),
        }
    )


def kraken_trades(
    start: datetime, end: datetime, *, rate: float = 3.0, first_sequence: int = 1, seed: int = 1
) -> pa.Table:
    """Kraken trades in (start, end] for `bronze_trades_kraken`."""
    rng = np.random.default_rng([seed, 2, first_sequence])
    t = _trades(rng, KRAKEN, start, end, rate, first_sequence)
    n = len(t["ts"])
    limit = rng.random(n) < 0.35
    misc = ["l" if flag else None for flag in rng.random(n) < 0.02]
    return pa.table(
        {
            "exchange_timestamp": pa.array(t["ts"], type=pa.int64()).cast(_TS),
            "sequence": pa.array(t["sequence"], type=pa.uint64()),
            "pair": pa.array(t["symbol"], type=pa.string()),
            "trade_id": pa.array(
                np.arange(n, dtype=np.uint64) + np.uint64(80_000_000 + first_sequence), type=pa.uint64()
            ),
            "price": _decimals(t["price"]),
            "volume": _decimals(t["qty"]),
            "side": pa.array(np.where(t["buy"], "buy", "sell"), type=pa.string()),
            "order_type": pa.array(np.where(limit, "limit", "market"), type=pa.string()),
            "misc": pa.array(misc, type=pa.string()),
        }
    )
