"""Deterministic synthetic candles for fast unit tests (not market data: shapes made to order)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def candles_from_closes(
    closes: np.ndarray, start: str = "2024-01-01", timeframe: str = "1h", wick: float = 0.002
) -> pd.DataFrame:
    """OHLCV whose open is the previous close and whose wicks extend `wick` beyond the body."""
    closes = np.asarray(closes, dtype=float)
    opens = np.concatenate([[closes[0]], closes[:-1]])
    return pd.DataFrame(
        {
            "date": pd.date_range(
                start, periods=len(closes), freq=timeframe.replace("m", "min"), tz="UTC"
            ).as_unit("ns"),
            "open": opens,
            "high": np.maximum(opens, closes) * (1 + wick),
            "low": np.minimum(opens, closes) * (1 - wick),
            "close": closes,
            "volume": np.full(len(closes), 10.0),
        }
    )


def random_walk(
    n: int,
    seed: int = 7,
    drift: float = 0.0,
    sigma: float = 0.01,
    start: float = 100.0,
    vol_regimes: bool = True,
) -> np.ndarray:
    """Closes of a log random walk, with volatility clustering when `vol_regimes`."""
    rng = np.random.default_rng(seed)
    scale = np.full(n, sigma)
    if vol_regimes:
        scale *= np.exp(np.convolve(rng.normal(0, 0.35, n), np.ones(50) / 50**0.5)[:n])
    return start * np.exp(np.cumsum(rng.normal(drift, 1.0, n) * scale))
