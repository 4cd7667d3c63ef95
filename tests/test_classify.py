"""Classifiers and decisions on hand-made series with known answers."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import candles_from_closes, random_walk
from tradeguard.core.assessment import assess
from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.external import ExternalSeries
from tradeguard.core.features import CandleArrays

N = 1400


def run(closes, external=None, config=None, now=None, wick=0.002):
    df = candles_from_closes(closes, wick=wick)
    candles = CandleArrays.from_frame(df, 3600)
    at = now or (df["date"].iloc[-1] + timedelta(hours=1)).to_pydatetime()
    return assess(candles, external or {}, at, pair="TEST/USDT", timeframe="1h", config=config)


def noisy_trend(drift, sigma=0.004, n=N, seed=3):
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(drift + sigma * rng.standard_normal(n)))


def test_steady_rise_is_a_bull_uptrend():
    a = run(noisy_trend(0.002))
    assert a.trend_classification == "strong_uptrend"
    assert a.regime == "bull" and a.specialist_regime == "BULL"
    assert a.momentum_classification in ("bullish", "overbought")
    assert not a.event_flags["flag_downtrend"]
    ind = a.indicators
    assert ind["close"] > ind["sma_fast"] > ind["sma_slow"] and ind["ema_fast"] > ind["ema_slow"]


def test_steady_fall_is_a_bear_downtrend_and_flags_it():
    a = run(noisy_trend(-0.002))
    assert a.trend_classification == "strong_downtrend"
    assert a.regime == "bear" and a.specialist_regime == "BEAR"
    assert a.event_flags["flag_downtrend"]
    assert a.risk_breakdown["trend_strength"] == 1.0


def test_directionless_noise_is_sideways():
    rng = np.random.default_rng(5)
    closes = 100 * np.exp(0.004 * np.sin(np.arange(N) / 3) + 0.001 * rng.standard_normal(N))
    a = run(closes)
    assert a.trend_classification == "sideways"
    assert a.regime == "sideways"


def test_sudden_crash_is_a_panic_and_blocks():
    closes = noisy_trend(0.0, sigma=0.003)
    closes[-2:] = closes[-3] * np.array([0.93, 0.925])  # -7 % in one candle
    a = run(closes)
    assert a.event_flags["flag_panic"] and a.regime == "panic"
    assert not a.safe_to_trade and a.recommendation == "no_entry"
    assert "panic" in a.blocked_by
    assert any(r.startswith("Panic:") for r in a.reasoning)


def test_volatility_is_judged_against_the_pairs_own_history():
    calm = noisy_trend(0.0, sigma=0.002)
    calm[-25:] = calm[-26] * np.exp(np.cumsum(np.resize([0.0004, -0.0004], 25)))
    wild = noisy_trend(0.0, sigma=0.002, seed=9)
    wild[-25:] = wild[-26] * np.exp(np.cumsum(np.resize([0.02, -0.02], 25)))
    assert run(calm).volatility_classification == "low"
    a = run(wild)
    assert a.volatility_classification == "extreme" and a.volatility_percentile > 0.95
    assert "extreme_volatility" in a.blocked_by
    # a pair that is always that wild is only "normal" for itself
    always = noisy_trend(0.0, sigma=0.02, seed=9)
    assert run(always).volatility_classification != "extreme"


def test_too_little_history_is_not_safe():
    a = run(random_walk(150))
    assert not a.safe_to_trade and a.blocked_by[0] == "insufficient_data"
    assert a.risk_score is None and a.risk_confidence == 0.0
    assert a.reasoning[0].startswith("Not enough data")


def test_stale_candles_are_not_safe():
    closes = noisy_trend(0.001)
    end = candles_from_closes(closes)["date"].iloc[-1]
    a = run(closes, now=(end + timedelta(hours=5)).to_pydatetime())
    assert "stale_data" in a.blocked_by and a.data_age_s == 4 * 3600


def _daily(name, value, start="2024-01-01", days=90):
    days_ns = pd.date_range(start, periods=days, freq="D", tz="UTC").as_unit("ns").asi8
    return ExternalSeries(name, days_ns, days_ns + 86_400 * 10**9, np.full(days, value))


def test_extreme_fear_in_a_downtrend_blocks_and_raises_confidence():
    closes = noisy_trend(-0.0005)
    without = run(closes)
    with_fng = run(closes, external={"fear_greed": _daily("fear_greed", 12.0)})
    assert with_fng.fear_greed_index == 12.0 and with_fng.event_flags["flag_extreme_fear"]
    assert "extreme_fear_downtrend" in with_fng.blocked_by
    assert without.risk_breakdown["external"] is None and with_fng.risk_breakdown[
        "external"
    ] == pytest.approx(0.76)
    assert with_fng.risk_confidence > without.risk_confidence


def test_score_weights_come_from_config():
    closes = noisy_trend(0.001)
    only_vol = MarketGuardConfig(
        weights={"volatility": 1, "regime": 0, "trend_strength": 0, "momentum": 0, "external": 0}
    )
    a = run(closes, config=only_vol)
    assert a.risk_score == pytest.approx(a.risk_breakdown["volatility"])


def test_hysteresis_holds_the_specialist_regime():
    closes = np.concatenate([noisy_trend(0.001, n=1300), noisy_trend(-0.004, n=30, seed=4) * 1.2])
    plain = run(closes)
    sticky = run(closes, config=MarketGuardConfig(specialist={"min_dwell": 100, "stress_rank": 0.999}))
    assert plain.specialist_regime != "BULL"
    assert sticky.specialist_regime == "BULL"


def test_config_rejects_unknown_and_inconsistent_settings():
    with pytest.raises(ValueError):
        MarketGuardConfig(weights={"volatilty": 1.0})
    with pytest.raises(ValueError):
        MarketGuardConfig(volatility={"low_below": 0.8, "high_from": 0.5})
