"""Indicators (TA-Lib) and derived series for every candle, computed causally in one vectorized pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import talib

from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.rolling import rolling_pct_rank, rolling_std, trailing_any


@dataclass(frozen=True, slots=True, eq=False)
class CandleArrays:
    """Closed candles as arrays: `open_ns` is each candle's open time (int64 ns, UTC), sorted."""

    open_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    timeframe_s: int

    @classmethod
    def from_frame(cls, df: pd.DataFrame, timeframe_s: int) -> CandleArrays:
        """From a cleaned Freqtrade frame (`date, open, high, low, close, volume`)."""
        return cls(
            open_ns=df["date"].to_numpy(dtype="datetime64[ns]").astype(np.int64),
            open=df["open"].to_numpy(dtype=np.float64),
            high=df["high"].to_numpy(dtype=np.float64),
            low=df["low"].to_numpy(dtype=np.float64),
            close=df["close"].to_numpy(dtype=np.float64),
            volume=df["volume"].to_numpy(dtype=np.float64),
            timeframe_s=timeframe_s,
        )

    def __len__(self) -> int:
        return len(self.close)

    @property
    def close_ns(self) -> np.ndarray:
        return self.open_ns + self.timeframe_s * 1_000_000_000

    def closed_by(self, t_ns: int) -> CandleArrays:
        """Candles whose close time is at or before t (the point-in-time cut)."""
        end = int(np.searchsorted(self.close_ns, t_ns, side="right"))
        return self.slice(0, end)

    def slice(self, start: int, end: int) -> CandleArrays:
        return CandleArrays(
            self.open_ns[start:end],
            self.open[start:end],
            self.high[start:end],
            self.low[start:end],
            self.close[start:end],
            self.volume[start:end],
            self.timeframe_s,
        )


@dataclass(frozen=True, slots=True, eq=False)
class Features:
    """Per-candle indicator arrays aligned with the candles (NaN during warm-up)."""

    close: np.ndarray
    sma_fast: np.ndarray
    sma_slow: np.ndarray
    ema_fast: np.ndarray
    ema_slow: np.ndarray
    adx: np.ndarray
    atr_pct: np.ndarray
    rsi: np.ndarray
    bb_width: np.ndarray
    log_return: np.ndarray
    realized_vol: np.ndarray
    vol_rank: np.ndarray
    shock_z: np.ndarray
    panic: np.ndarray
    missing_in_window: np.ndarray


def compute_features(candles: CandleArrays, config: MarketGuardConfig, rank_from: int = 0) -> Features:
    """All indicators for every candle; the volatility rank only for rows >= `rank_from` (NaN before).

    - SMA and EMA fast/slow, ADX, ATR (as % of close), RSI and Bollinger bands come from TA-Lib;
    - `realized_vol`: sample stdev of the last `vol_window` log returns (per candle, not annualised);
    - `vol_rank`: percentile rank of `realized_vol` within its trailing `vol_rank_window` values;
    - `shock_z`: each log return divided by the previous candle's reference sigma, sqrt(EMA of squared
      returns over `shock_ewma_period`);
    - `panic`: a shock or a fast cumulative drop (see PanicConfig) within the last `panic.lookback` candles;
    - `missing_in_window`: candles missing (gaps) within the last `vol_window` candles' time span.
    """
    ind = config.indicators
    high, low, close = candles.high, candles.low, candles.close
    n = len(close)
    sma_fast = talib.SMA(close, ind.ema_fast)
    sma_slow = talib.SMA(close, ind.ema_slow)
    ema_fast = talib.EMA(close, ind.ema_fast)
    ema_slow = talib.EMA(close, ind.ema_slow)
    adx = talib.ADX(high, low, close, ind.adx_period)
    atr_pct = talib.ATR(high, low, close, ind.atr_period) / close * 100.0
    rsi = talib.RSI(close, ind.rsi_period)
    upper, middle, lower = talib.BBANDS(close, ind.bb_period, ind.bb_stdev, ind.bb_stdev)
    bb_width = (upper - lower) / middle

    log_return = np.full(n, np.nan)
    log_return[1:] = np.diff(np.log(close))
    realized_vol = rolling_std(log_return[1:], ind.vol_window)
    realized_vol = np.concatenate([[np.nan], realized_vol]) if n else realized_vol
    vol_rank = rolling_pct_rank(realized_vol, ind.vol_rank_window, ind.vol_rank_min_periods, rank_from)

    shock_z, panic = _panic(log_return, config)

    step = candles.timeframe_s * 1_000_000_000
    w = ind.vol_window
    missing = np.zeros(n, dtype=np.int64)
    if n > 1:
        first = np.maximum(np.arange(n) - w + 1, 0)
        span = (candles.open_ns - candles.open_ns[first]) // step
        missing = span - (np.arange(n) - first)
    return Features(
        close=close,
        sma_fast=sma_fast,
        sma_slow=sma_slow,
        ema_fast=ema_fast,
        ema_slow=ema_slow,
        adx=adx,
        atr_pct=atr_pct,
        rsi=rsi,
        bb_width=bb_width,
        log_return=log_return,
        realized_vol=realized_vol,
        vol_rank=vol_rank,
        shock_z=shock_z,
        panic=panic,
        missing_in_window=missing,
    )


def _panic(log_return: np.ndarray, config: MarketGuardConfig) -> tuple[np.ndarray, np.ndarray]:
    """Shock z-scores and the panic flag (see PanicConfig for the rule)."""
    p = config.panic
    n = len(log_return)
    shock_z = np.full(n, np.nan)
    panic = np.zeros(n, dtype=bool)
    period = config.indicators.shock_ewma_period
    if n <= period + 1:
        return shock_z, panic
    sigma = np.full(n, np.nan)
    sigma[1:] = np.sqrt(talib.EMA(log_return[1:] ** 2, period))
    prev_sigma = np.concatenate([[np.nan], sigma[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        shock_z = log_return / prev_sigma
    min_move = np.log1p(-p.shock_min_move_pct / 100.0)
    shock = (shock_z <= -p.shock_sigma) & (log_return <= min_move)
    k = p.drop_window
    drop = np.zeros(n, dtype=bool)
    if n > k:
        cum = np.full(n, np.nan)
        cum[k:] = np.nansum(np.lib.stride_tricks.sliding_window_view(log_return, k), axis=1)[1:]
        ref = np.concatenate([np.full(k, np.nan), prev_sigma[1 : n - k + 1]])
        with np.errstate(invalid="ignore"):
            drop = (cum <= -p.drop_sigma * ref * np.sqrt(k)) & (cum <= 2 * min_move)
    panic = trailing_any(shock | drop, p.lookback)
    return shock_z, panic
