"""Stateless classifiers over feature arrays. Each returns an object array of labels ("" = unknown).

Rules (thresholds in MarketGuardConfig):
- volatility_class: percentile rank r of realized vol within the pair's own trailing window:
  r < low_below -> low; < high_from -> normal; < extreme_from -> high; else extreme.
- trend: "up-aligned" = close > EMA200 and EMA50 > EMA200 (mirror: down-aligned).
  up-aligned and close > EMA50 and ADX >= adx_strong -> strong_uptrend; up-aligned -> uptrend;
  mirror for downtrend / strong_downtrend; anything else -> sideways.
- momentum (RSI): >= overbought -> overbought; <= oversold -> oversold; >= bullish -> bullish;
  <= bearish -> bearish; else neutral.
- regime, first match wins: panic (a shock or fast drop, see PanicConfig) -> panic; volatility class
  extreme -> high_vol; ADX >= adx_trend and up-aligned -> bull; ADX >= adx_trend and down-aligned -> bear;
  volatility class high -> choppy (volatile without direction); else sideways.
- specialist_regime: realized vol above the stress_rank quantile of its trailing window -> STRESS; else
  up-aligned -> BULL; down-aligned -> BEAR; else SIDEWAYS; then optional hysteresis (min dwell in bars).
"""

from __future__ import annotations

import numpy as np

from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.features import Features
from tradeguard.core.rolling import with_min_dwell

REGIMES = ("bull", "bear", "choppy", "high_vol", "panic", "sideways")
SPECIALIST_REGIMES = ("STRESS", "BULL", "BEAR", "SIDEWAYS")
VOLATILITY_CLASSES = ("low", "normal", "high", "extreme")
TRENDS = ("strong_uptrend", "uptrend", "sideways", "downtrend", "strong_downtrend")
MOMENTA = ("overbought", "bullish", "neutral", "bearish", "oversold")
RISK_CLASSES = ("low", "medium", "high", "very_high")


def _select(conditions: list[np.ndarray], labels: list[str], default: str, known: np.ndarray) -> np.ndarray:
    out = np.select(conditions, labels, default=default).astype(object)
    out[~known] = ""
    return out


def volatility_class(vol_rank: np.ndarray, config: MarketGuardConfig) -> np.ndarray:
    v = config.volatility
    with np.errstate(invalid="ignore"):
        return _select(
            [vol_rank < v.low_below, vol_rank < v.high_from, vol_rank < v.extreme_from],
            ["low", "normal", "high"],
            "extreme",
            np.isfinite(vol_rank),
        )


def _alignment(f: Features, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    close, fast, slow = f.close[rows], f.ema_fast[rows], f.ema_slow[rows]
    up = (close > slow) & (fast > slow)
    down = (close < slow) & (fast < slow)
    known = np.isfinite(slow) & np.isfinite(fast)
    return up, down, known


def trend_class(f: Features, rows: slice, config: MarketGuardConfig) -> np.ndarray:
    up, down, known = _alignment(f, rows)
    close, fast, adx = f.close[rows], f.ema_fast[rows], f.adx[rows]
    strong = adx >= config.trend.adx_strong
    return _select(
        [up & (close > fast) & strong, up, down & (close < fast) & strong, down],
        ["strong_uptrend", "uptrend", "strong_downtrend", "downtrend"],
        "sideways",
        known & np.isfinite(adx),
    )


def momentum_class(rsi: np.ndarray, config: MarketGuardConfig) -> np.ndarray:
    t = config.trend
    with np.errstate(invalid="ignore"):
        return _select(
            [rsi >= t.rsi_overbought, rsi <= t.rsi_oversold, rsi >= t.rsi_bullish, rsi <= t.rsi_bearish],
            ["overbought", "oversold", "bullish", "bearish"],
            "neutral",
            np.isfinite(rsi),
        )


def regime(f: Features, rows: slice, vol_class: np.ndarray, config: MarketGuardConfig) -> np.ndarray:
    up, down, known = _alignment(f, rows)
    adx = f.adx[rows]
    trending = adx >= config.trend.adx_trend
    return _select(
        [f.panic[rows], vol_class == "extreme", trending & up, trending & down, vol_class == "high"],
        ["panic", "high_vol", "bull", "bear", "choppy"],
        "sideways",
        known & np.isfinite(adx) & (vol_class != ""),
    )


def specialist_regime(f: Features, rows: slice, config: MarketGuardConfig) -> np.ndarray:
    """Labels for `rows`; with hysteresis, raw labels over every row up to rows.stop (it needs the path)."""
    s = config.specialist
    upto = slice(0, rows.stop) if s.min_dwell > 1 else rows
    up, down, known = _alignment(f, upto)
    rank = f.vol_rank[upto]
    with np.errstate(invalid="ignore"):
        raw = _select(
            [rank > s.stress_rank, up, down],
            ["STRESS", "BULL", "BEAR"],
            "SIDEWAYS",
            known & np.isfinite(rank),
        )
    if s.min_dwell <= 1:
        return raw
    return with_min_dwell(raw, s.min_dwell)[rows]


def risk_class(score: np.ndarray, config: MarketGuardConfig) -> np.ndarray:
    d = config.decision
    with np.errstate(invalid="ignore"):
        return _select(
            [score >= d.class_very_high_from, score >= d.class_high_from, score >= d.class_medium_from],
            ["very_high", "high", "medium"],
            "low",
            np.isfinite(score),
        )
