"""No look-ahead: an assessment at t on the full data equals one on data truncated at t, and the
vectorized history equals the single-point path at every candle."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.synthetic import candles_from_closes, random_walk
from tradeguard.core.assessment import Assessment, assess, assess_history
from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.evaluate import FLAGS
from tradeguard.core.external import ExternalSeries
from tradeguard.core.features import CandleArrays
from tradeguard.guards.market import load_market_data

LABELS = (
    "regime",
    "specialist_regime",
    "volatility_classification",
    "trend_classification",
    "momentum_classification",
    "risk_class",
    "recommendation",
)
NUMBERS = (
    "risk_score",
    "risk_confidence",
    "volatility",
    "volatility_percentile",
    "fear_greed_index",
    "funding_rate",
    "vix",
    "dxy",
    "btc_dominance",
)


def truncate_external(external: dict[str, ExternalSeries], t_ns: int) -> dict[str, ExternalSeries]:
    """Drop every value published after t, as if the file had been read at t."""
    out = {}
    for name, s in external.items():
        keep = s.available_at <= t_ns
        out[name] = ExternalSeries(name, s.observed_at[keep], s.available_at[keep], s.values[keep])
    return out


def same_number(a: float | None, b: float | None) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def assert_equal_assessments(a: Assessment, b: Assessment) -> None:
    assert a.model_dump(exclude=set(NUMBERS) | {"indicators", "risk_breakdown", "reasoning"}) == b.model_dump(
        exclude=set(NUMBERS) | {"indicators", "risk_breakdown", "reasoning"}
    )
    for name in NUMBERS:
        assert same_number(getattr(a, name), getattr(b, name)), name
    for key, value in a.risk_breakdown.items():
        assert same_number(value, b.risk_breakdown[key]), key


def assert_row_matches(row: pd.Series, a: Assessment) -> None:
    assert bool(row["safe_to_trade"]) is a.safe_to_trade
    assert (row["blocked_by"] or "") == ";".join(a.blocked_by)
    for name in LABELS:
        value = row[name]
        assert (None if pd.isna(value) else value) == getattr(a, name), name
    for name in NUMBERS:
        assert same_number(row[name], getattr(a, name)), name
    for flag in FLAGS:
        assert bool(row[flag]) is a.event_flags[flag], flag
    for comp, value in a.risk_breakdown.items():
        assert same_number(row[f"risk_{comp}"], value), comp
    assert pd.Timestamp(row["as_of"]) == pd.Timestamp(a.as_of)


def check_point(
    candles: CandleArrays,
    external: dict,
    i: int,
    timeframe: str,
    history: pd.DataFrame,
    config: MarketGuardConfig | None = None,
) -> None:
    t_ns = int(candles.close_ns[i])
    now = pd.Timestamp(t_ns, tz="UTC").to_pydatetime()
    full = assess(candles, external, now, pair="X/USDT", timeframe=timeframe, config=config)
    cut = assess(
        candles.slice(0, i + 1),
        truncate_external(external, t_ns),
        now,
        pair="X/USDT",
        timeframe=timeframe,
        config=config,
    )
    assert_equal_assessments(full, cut)
    assert_row_matches(history.iloc[i], full)


# --- synthetic data: always runs -------------------------------------------------------------------

SYN = candles_from_closes(random_walk(2500, seed=11, sigma=0.006))
SYN_CANDLES = CandleArrays.from_frame(SYN, 3600)
_days = pd.date_range("2023-12-20", periods=140, freq="D", tz="UTC").as_unit("ns").asi8
SYN_EXTERNAL = {
    "fear_greed": ExternalSeries(
        "fear_greed",
        _days,
        _days + 86_400 * 10**9,
        np.random.default_rng(2).integers(5, 95, len(_days)).astype(float),
    ),
    "funding_rate": ExternalSeries(
        "funding_rate", _days, _days, np.random.default_rng(3).normal(0, 0.0008, len(_days))
    ),
}
SYN_HISTORY = assess_history(SYN_CANDLES, SYN_EXTERNAL, timeframe="1h")
STICKY = MarketGuardConfig(specialist={"min_dwell": 6})
SYN_HISTORY_STICKY = assess_history(SYN_CANDLES, SYN_EXTERNAL, timeframe="1h", config=STICKY)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(SYN) - 1))
def test_synthetic_point_in_time(i):
    check_point(SYN_CANDLES, SYN_EXTERNAL, i, "1h", SYN_HISTORY)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, len(SYN) - 1))
def test_synthetic_point_in_time_with_hysteresis(i):
    check_point(SYN_CANDLES, SYN_EXTERNAL, i, "1h", SYN_HISTORY_STICKY, STICKY)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, len(SYN)))
def test_history_on_truncated_data_is_a_prefix_of_history_on_full_data(k):
    end_ns = int(SYN_CANDLES.close_ns[k - 1])
    cut = assess_history(SYN_CANDLES.slice(0, k), truncate_external(SYN_EXTERNAL, end_ns), timeframe="1h")
    pd.testing.assert_frame_equal(cut, SYN_HISTORY.iloc[:k], check_exact=False, rtol=1e-9)


def test_history_range_selects_rows_without_changing_them():
    start, end = SYN["date"].iloc[1500], SYN["date"].iloc[1600]
    part = assess_history(SYN_CANDLES, SYN_EXTERNAL, timeframe="1h", start=start, end=end)
    assert len(part) == 101 and part["date"].iloc[0] == start
    pd.testing.assert_frame_equal(
        part.reset_index(drop=True), SYN_HISTORY.iloc[1500:1601].reset_index(drop=True)
    )


def test_external_value_appears_only_once_published():
    i = 1800
    t_ns = int(SYN_CANDLES.close_ns[i])
    day_start = pd.Timestamp(t_ns, tz="UTC").floor("D").value
    fng = SYN_EXTERNAL["fear_greed"]
    expected = fng.values[np.searchsorted(fng.available_at, t_ns, side="right") - 1]
    assert SYN_HISTORY.iloc[i]["fear_greed_index"] == expected
    # the value observed today is published tomorrow: not visible yet
    today = fng.values[np.searchsorted(fng.observed_at, day_start)]
    assert fng.available_at[np.searchsorted(fng.observed_at, day_start)] > t_ns
    assert expected != today or fng.values[np.searchsorted(fng.observed_at, day_start) - 1] == today


# --- real data: BTC/USDT 1h 2018-2026 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def btc(shared_data):
    data = load_market_data(shared_data / "binance", "BTC/USDT", "1h", shared_data / "external")
    history = assess_history(data.candles, data.external.series, timeframe="1h")
    return data, history


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.floats(0.0, 1.0))
def test_real_data_point_in_time(btc, u):
    data, history = btc
    i = int(u * (len(data.candles) - 1))
    check_point(data.candles, data.external.series, i, "1h", history)
