"""Plain-language reasons: one sentence per finding, with the numbers that decided, blocks first."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tradeguard.core.config import MarketGuardConfig


def explain(
    a: Mapping[str, Any], ext: Mapping[str, float | None], config: MarketGuardConfig, n: int
) -> list[str]:
    """Sentences explaining an assessment's fields (`a` holds the Assessment fields being built)."""
    pair, tf = a["pair"], a["timeframe"]
    ind = a["indicators"]
    blocked = a["blocked_by"]
    out: list[str] = []
    if "insufficient_data" in blocked:
        out.append(
            f"Not enough data to judge {pair}: {n} closed {tf} candles (about {config.lookback_bars} needed "
            f"for every indicator), confidence {a['risk_confidence']:.2f} below "
            f"{config.decision.min_confidence:.2f}; a blind guard does not say safe."
        )
    if "stale_data" in blocked:
        limit = config.decision.max_data_age_candles
        out.append(
            f"Stale data: the last {tf} candle closed {_duration(a['data_age_s'])} ago (limit {limit:g} "
            "candles); a guard that cannot see the market does not say safe."
        )
    if a["event_flags"].get("flag_panic"):
        z = ind.get("shock_z")
        move = ind.get("log_return")
        detail = (
            f" (last candle {_pct_move(move)}, {z:.1f} sigma)" if z is not None and move is not None else ""
        )
        out.append(
            f"Panic: {pair} fell sharply within the last {config.panic.lookback} {tf} candles{detail}; "
            "no new entries until it settles."
        )
    vol_cls, vol, rank = a["volatility_classification"], a["volatility"], a["volatility_percentile"]
    if vol_cls is not None and vol is not None and rank is not None:
        out.append(
            f"Realized volatility {vol * 100:.0f}% annualised is at percentile {rank * 100:.0f} of "
            f"the pair's last {config.indicators.vol_rank_window} candles ({vol_cls})"
            + ("; extreme volatility blocks entries." if "extreme_volatility" in blocked else ".")
        )
    trend = a["trend_classification"]
    if trend is not None and ind.get("ema_slow") is not None:
        out.append(
            f"Trend {trend.replace('_', ' ')}: close {_price(ind['close'])} "
            f"vs EMA{config.indicators.ema_fast} "
            f"{_price(ind['ema_fast'])} and EMA{config.indicators.ema_slow} {_price(ind['ema_slow'])}, "
            f"ADX {ind['adx']:.0f}; regime {a['regime']}, specialist regime {a['specialist_regime']}."
        )
    if a["momentum_classification"] is not None and ind.get("rsi") is not None:
        out.append(f"Momentum {a['momentum_classification']}: RSI {ind['rsi']:.0f}.")
    fng = ext.get("fear_greed")
    if fng is not None:
        mood = (
            "extreme fear"
            if a["event_flags"].get("flag_extreme_fear")
            else ("extreme greed" if a["event_flags"].get("flag_extreme_greed") else "")
        )
        out.append(f"Fear & Greed index {fng:.0f}{f' ({mood})' if mood else ''}.")
    if "extreme_fear_downtrend" in blocked:
        out.append("Extreme fear during a downtrend blocks entries: buyers are catching a falling market.")
    if a["funding_rate"] is not None and a["event_flags"].get("flag_extreme_funding"):
        out.append(f"Funding rate {a['funding_rate'] * 100:.3f}% per period signals crowded positioning.")
    macro = [
        f"VIX {ext['vix']:.1f}" if ext.get("vix") is not None else None,
        f"DXY {ext['dxy']:.1f}" if ext.get("dxy") is not None else None,
    ]
    if any(macro):
        out.append("Macro: " + ", ".join(m for m in macro if m) + ".")
    missing = [s for s in ("fear_greed", "funding_rate", "btc_dominance", "vix", "dxy") if ext.get(s) is None]
    if missing:
        out.append(f"No current value for {', '.join(missing)}: left out of the score, confidence lowered.")
    if a["event_flags"].get("flag_data_gap"):
        out.append("Candles are missing in the recent window; indicators span the gap.")
    score = a["risk_score"]
    if score is not None:
        level = config.decision.block_risk_score_from
        verdict = (
            f"at or above the block level {level:.2f}" if "risk_score" in blocked else f"below {level:.2f}"
        )
        out.append(
            f"Risk score {score:.2f} ({a['risk_class'].replace('_', ' ')}, confidence "
            f"{a['risk_confidence']:.2f}) is {verdict}."
        )
    out.append(
        f"Safe to trade: no entries ({', '.join(blocked)})."
        if blocked
        else f"Safe to trade ({a['recommendation'].replace('_', ' ')})."
    )
    return out


def _price(value: float) -> str:
    return f"{value:,.2f}" if value >= 1 else f"{value:.6g}"


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def _pct_move(log_return: float) -> str:
    return f"{(math.exp(log_return) - 1) * 100:+.1f}%"
