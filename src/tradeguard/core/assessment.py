"""The market guard's answer for one pair: at one moment (`assess`) or for every candle (`assess_history`).

Both paths run the same vectorized code (`compute_features` then `evaluate`); `assess` evaluates only the
last closed candle. A moment t sees candles that closed at or before t and external values published at
or before t — nothing else.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.evaluate import BLOCKS, COMPONENTS, FLAGS, Evaluation, evaluate
from tradeguard.core.external import SOURCES, ExternalAt, ExternalData, external_at, with_derived
from tradeguard.core.features import CandleArrays, Features, compute_features
from tradeguard.core.reasoning import explain
from tradeguard.core.timeframe import periods_per_year, timeframe_seconds

NS = 1_000_000_000


class Assessment(BaseModel):
    """Market-guard answer for one pair at one moment. Ratios are 0-1; `volatility` is annualised."""

    model_config = ConfigDict(frozen=True)

    pair: str
    timeframe: str
    as_of: datetime | None
    evaluated_at: datetime
    data_age_s: float | None
    safe_to_trade: bool
    recommendation: str
    blocked_by: list[str]
    decided_by: str
    reasoning: list[str]
    risk_score: float | None
    risk_class: str | None
    risk_confidence: float
    risk_breakdown: dict[str, float | None]
    regime: str | None
    specialist_regime: str | None
    volatility: float | None
    volatility_percentile: float | None
    volatility_classification: str | None
    trend_classification: str | None
    momentum_classification: str | None
    event_flags: dict[str, bool]
    fear_greed_index: float | None
    btc_dominance: float | None
    funding_rate: float | None
    vix: float | None
    dxy: float | None
    indicators: dict[str, float | None]
    inputs_age_s: dict[str, float | None]
    candles_used: int


def assess(
    candles: CandleArrays,
    external: ExternalData,
    now: datetime,
    *,
    pair: str,
    timeframe: str,
    config: MarketGuardConfig | None = None,
) -> Assessment:
    """Assess `pair` at `now` from the candles closed by then and external values published by then."""
    config = config or MarketGuardConfig()
    _check_timeframe(candles, timeframe)
    now_ns = _to_ns(now)
    visible = candles.closed_by(now_ns)
    n = len(visible)
    rank_from = 0 if config.specialist.min_dwell > 1 else n - 1
    features = compute_features(visible, config, rank_from=max(rank_from, 0))
    t = np.array([now_ns], dtype=np.int64)
    ext = external_at(with_derived(external, config.external), t, config.external)
    rows = slice(max(n - 1, 0), n)
    age = (now_ns - visible.close_ns[-1]) / (visible.timeframe_s * NS) if n else np.inf
    ev = evaluate(features, rows, np.array([n]), np.array([age]), ext, config) if n else None
    return _build(visible, features, ev, ext, now_ns, pair, timeframe, config)


def assess_history(
    candles: CandleArrays,
    external: ExternalData,
    *,
    timeframe: str,
    start: datetime | None = None,
    end: datetime | None = None,
    config: MarketGuardConfig | None = None,
) -> pd.DataFrame:
    """One row per candle with open time in [start, end], assessed at that candle's close.

    Column `date` is the candle's open time (Freqtrade's convention), so a row can be merged onto a
    Freqtrade dataframe on `date`: it holds what was known when that candle closed.
    """
    config = config or MarketGuardConfig()
    _check_timeframe(candles, timeframe)
    n = len(candles)
    lo = 0 if start is None else int(np.searchsorted(candles.open_ns, _to_ns(start), side="left"))
    hi = n if end is None else int(np.searchsorted(candles.open_ns, _to_ns(end), side="right"))
    if lo >= hi:
        return pd.DataFrame(columns=history_columns())
    rank_from = 0 if config.specialist.min_dwell > 1 else lo
    visible = candles.slice(0, hi)
    features = compute_features(visible, config, rank_from=rank_from)
    rows = slice(lo, hi)
    close_ns = visible.close_ns[rows]
    ext = external_at(with_derived(external, config.external), close_ns, config.external)
    ev = evaluate(features, rows, np.arange(lo + 1, hi + 1), np.zeros(hi - lo), ext, config)
    ppy = periods_per_year(timeframe)
    out: dict[str, object] = {
        "date": pd.to_datetime(visible.open_ns[rows], utc=True),
        "as_of": pd.to_datetime(close_ns, utc=True),
        "safe_to_trade": ev.safe_to_trade,
        "risk_score": ev.risk_score,
        "risk_class": _nullable(ev.labels["risk_class"]),
        "risk_confidence": ev.risk_confidence,
        "recommendation": pd.Series(ev.recommendation, dtype="string"),
        "blocked_by": pd.Series(_joined_blocks(ev), dtype="string"),
    }
    for name in (
        "regime",
        "specialist_regime",
        "volatility_classification",
        "trend_classification",
        "momentum_classification",
    ):
        out[name] = _nullable(ev.labels[name])
    out["volatility"] = features.realized_vol[rows] * np.sqrt(ppy)
    out["volatility_percentile"] = features.vol_rank[rows]
    for comp in COMPONENTS:
        out[f"risk_{comp}"] = ev.components[comp]
    for flag in FLAGS:
        out[flag] = ev.flags[flag]
    for source in SOURCES:
        out[_FIELD[source]] = ext.values.get(source, np.full(hi - lo, np.nan))
    out["data_age_s"] = 0.0
    return pd.DataFrame(out, columns=history_columns())


_FIELD = {
    "fear_greed": "fear_greed_index",
    "funding_rate": "funding_rate",
    "btc_dominance": "btc_dominance",
    "vix": "vix",
    "dxy": "dxy",
}


def history_columns() -> list[str]:
    """Columns of `assess_history`, in order."""
    return [
        "date", "as_of", "safe_to_trade", "risk_score", "risk_class", "risk_confidence", "recommendation",
        "blocked_by", "regime", "specialist_regime", "volatility_classification", "trend_classification",
        "momentum_classification", "volatility", "volatility_percentile",
        *(f"risk_{c}" for c in COMPONENTS), *FLAGS, *(_FIELD[s] for s in SOURCES), "data_age_s",
    ]  # fmt: skip


def _build(
    candles: CandleArrays,
    f: Features,
    ev: Evaluation | None,
    ext: ExternalAt,
    now_ns: int,
    pair: str,
    timeframe: str,
    config: MarketGuardConfig,
) -> Assessment:
    n = len(candles)
    i = n - 1
    as_of_ns = int(candles.close_ns[i]) if n else None
    ext_values = {k: _num(v[0]) for k, v in ext.values.items()}
    ages = {"candles": (now_ns - as_of_ns) / NS if as_of_ns is not None else None}
    ages |= {k: _num(v[0]) for k, v in ext.age_s.items() if k in SOURCES}

    def pick(arr: np.ndarray) -> float | None:
        return _num(arr[i]) if n else None

    indicators = {
        "close": pick(f.close),
        "sma_fast": pick(f.sma_fast),
        "sma_slow": pick(f.sma_slow),
        "ema_fast": pick(f.ema_fast),
        "ema_slow": pick(f.ema_slow),
        "adx": pick(f.adx),
        "atr_pct": pick(f.atr_pct),
        "rsi": pick(f.rsi),
        "bb_width": pick(f.bb_width),
        "log_return": pick(f.log_return),
        "shock_z": pick(f.shock_z),
    }
    if ev is None:
        blocked, labels, comps, flags = ["insufficient_data"], {}, dict.fromkeys(COMPONENTS), {}
        score, confidence, recommendation = None, 0.0, "no_entry"
    else:
        blocked = [b for b in BLOCKS if ev.blocks[b][0]]
        labels = {k: (v[0] or None) for k, v in ev.labels.items()}
        comps = {k: _num(v[0]) for k, v in ev.components.items()}
        flags = {k: bool(v[0]) for k, v in ev.flags.items()}
        score, confidence = _num(ev.risk_score[0]), float(ev.risk_confidence[0])
        recommendation = str(ev.recommendation[0])
    realized = pick(f.realized_vol)
    volatility = realized * float(np.sqrt(periods_per_year(timeframe))) if realized is not None else None
    fields = {
        "pair": pair,
        "timeframe": timeframe,
        "as_of": _dt(as_of_ns) if as_of_ns is not None else None,
        "evaluated_at": _dt(now_ns),
        "data_age_s": ages["candles"],
        "safe_to_trade": not blocked,
        "recommendation": recommendation,
        "blocked_by": blocked,
        "decided_by": blocked[0] if blocked else "all_checks_passed",
        "risk_score": score,
        "risk_class": labels.get("risk_class"),
        "risk_confidence": confidence,
        "risk_breakdown": comps,
        "regime": labels.get("regime"),
        "specialist_regime": labels.get("specialist_regime"),
        "volatility": volatility,
        "volatility_percentile": pick(f.vol_rank),
        "volatility_classification": labels.get("volatility_classification"),
        "trend_classification": labels.get("trend_classification"),
        "momentum_classification": labels.get("momentum_classification"),
        "event_flags": {k: flags.get(k, False) for k in FLAGS},
        "indicators": indicators,
        "inputs_age_s": ages,
        "candles_used": n,
    } | {_FIELD[s]: ext_values.get(s) for s in SOURCES}
    fields["reasoning"] = explain(fields, ext_values, config, n)
    return Assessment(**fields)


def _check_timeframe(candles: CandleArrays, timeframe: str) -> None:
    if timeframe_seconds(timeframe) != candles.timeframe_s:
        raise ValueError(f"candles are {candles.timeframe_s}s but timeframe {timeframe!r} was given")


def _joined_blocks(ev: Evaluation) -> np.ndarray:
    out = np.full(len(ev.risk_score), "", dtype=object)
    for b in BLOCKS:
        hit = ev.blocks[b]
        out[hit] = np.where(out[hit] == "", b, out[hit] + ";" + b)
    return out


def _nullable(labels: np.ndarray) -> pd.Series:
    """Labels as a nullable string column ("" = unknown becomes NA)."""
    return pd.Series(np.where(labels == "", None, labels), dtype="string")


def _num(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _to_ns(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return pd.Timestamp(ts).tz_convert("UTC").value


def _dt(ns: int) -> datetime:
    return pd.Timestamp(ns, tz="UTC").to_pydatetime()
