"""Rolling correlation of strategy returns: resampling, silence, matrices, early warning, regime change."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tradeguard.core.correlation import (
    CorrelationConfig,
    ReturnObs,
    correlation_report,
    resample_returns,
)
from tradeguard.core.events import StrategyReturnPayload

Q = timedelta(minutes=15)
END = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)  # last closed bucket
NOW = END + timedelta(minutes=7)


def series(name: str, values: Sequence[float], end: datetime = END, step: timedelta = Q) -> list[ReturnObs]:
    """One observation per step, the last ending at `end`; NaN values are not reported at all."""
    n = len(values)
    return [
        ReturnObs(name, end - (n - 1 - i) * step, float(v)) for i, v in enumerate(values) if not math.isnan(v)
    ]


def noise(seed: int, n: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, n)


def test_identical_opposite_and_independent_series() -> None:
    a, b = noise(1), noise(2)
    obs = series("a", a) + series("same", a) + series("opposite", -a) + series("indep", b)
    r = correlation_report(obs, NOW)
    assert r.strategies == ("a", "indep", "opposite", "same")
    assert r.current["a"]["same"] == pytest.approx(1.0)
    assert r.current["a"]["opposite"] == pytest.approx(-1.0)
    assert abs(r.current["a"]["indep"]) < 0.3
    assert r.current["a"]["a"] == pytest.approx(1.0)
    assert r.max_abs_correlation is not None
    assert abs(r.max_abs_correlation.correlation) == pytest.approx(1.0)
    assert {r.max_abs_correlation.a, r.max_abs_correlation.b} in ({"a", "same"}, {"a", "opposite"})
    assert r.buckets == {"a": 100, "indep": 100, "opposite": 100, "same": 100}
    assert r.last_bucket_end == END
    assert r.freq_s == 900


def test_silent_strategy_is_excluded_and_listed_not_forward_filled() -> None:
    a = noise(1)
    silent = series("silent", a[:-3], end=END - 3 * Q)  # last report 45 min before the last bucket
    edge = series("edge", a, end=NOW - timedelta(minutes=30))  # exactly 30 min: still active
    r = correlation_report(series("a", a) + silent + edge, NOW)
    assert "silent" not in r.strategies
    assert "silent" not in r.current
    assert "edge" in r.strategies
    (ex,) = r.excluded
    assert ex.strategy == "silent"
    assert ex.last_period_end == END - 3 * Q
    assert ex.silent_for_s == pytest.approx((NOW - (END - 3 * Q)).total_seconds())


def test_missing_buckets_are_missing_not_zero() -> None:
    a = noise(3)
    gappy = a.copy()
    gappy[::3] = np.nan  # a third of the buckets unreported
    r = correlation_report(series("a", a) + series("gappy", gappy), NOW)
    # pairwise-complete: still perfectly correlated; zero-filling would have pulled this well below 1
    assert r.current["a"]["gappy"] == pytest.approx(1.0)
    assert r.buckets["gappy"] < 70
    filled = np.nan_to_num(gappy[-100:])
    assert np.corrcoef(a[-100:], filled)[0, 1] < 0.9


def test_too_few_common_buckets_give_none() -> None:
    a = noise(4)
    sparse = np.full(200, np.nan)
    sparse[-40:] = a[-40:]  # 40 of 100 < min periods 50
    r = correlation_report(series("a", a) + series("sparse", sparse), NOW)
    assert r.current["a"]["sparse"] is None
    assert r.fast["a"]["sparse"] == pytest.approx(1.0)  # 40 of 50 >= 25
    assert r.max_abs_correlation is None
    assert r.regime_change_score is None


def test_constant_series_has_no_correlation() -> None:
    r = correlation_report(series("a", noise(5)) + series("flat", np.zeros(200)), NOW)
    assert r.current["a"]["flat"] is None


def test_regime_change_when_two_strategies_flip_from_independent_to_lockstep() -> None:
    a, b = noise(6), noise(7)
    b_then_lockstep = np.concatenate([b[:100], a[100:]])
    r = correlation_report(series("a", a) + series("b", b_then_lockstep), NOW)
    assert abs(r.previous["a"]["b"]) < 0.3
    assert r.current["a"]["b"] == pytest.approx(1.0)
    assert r.regime_change_score is not None and r.regime_change_score > 0.3
    assert r.regime_change


def test_no_flags_when_the_relationship_is_stable() -> None:
    a, b = noise(8, 300), noise(9, 300)
    r = correlation_report(series("a", a) + series("b", b), NOW)
    assert r.regime_change_score is not None and r.regime_change_score < 0.3
    assert r.fast_slow_change is not None and r.fast_slow_change < 0.3
    assert not r.regime_change and not r.early_warning
    lockstep = correlation_report(series("a", a) + series("b", a + noise(10, 300) * 0.1), NOW)
    assert not lockstep.regime_change and not lockstep.early_warning


def test_early_warning_when_fast_departs_from_slow() -> None:
    a, b = noise(37), noise(38)
    recent_lockstep = np.concatenate([b[:160], a[160:]])  # lockstep only for the last 40 buckets
    r = correlation_report(series("a", a) + series("b", recent_lockstep), NOW)
    assert r.fast["a"]["b"] > r.slow["a"]["b"] + 0.3
    assert r.early_warning
    assert r.fast_slow_change == pytest.approx(abs(r.fast["a"]["b"] - r.slow["a"]["b"]))


def test_resampling_compounds_within_a_bucket() -> None:
    t = END - Q  # bucket (END - 30m, END - 15m]
    obs = [
        ReturnObs("s", t - timedelta(minutes=10), 0.01),
        ReturnObs("s", t - timedelta(minutes=5), 0.02),
        ReturnObs("s", t, -0.01),  # on the boundary: belongs to the bucket ending at t
        ReturnObs("s", t + timedelta(seconds=1), 0.05),  # next bucket
        ReturnObs("s", t - timedelta(minutes=5), 0.02),  # re-sent: replaces, not compounded twice
    ]
    frame = resample_returns(obs, Q, END - 3 * Q, END)
    assert list(frame.index) == [END - 3 * Q, END - 2 * Q, END - Q, END]
    assert frame.loc[END - Q, "s"] == pytest.approx(1.01 * 1.02 * 0.99 - 1)
    assert frame.loc[END, "s"] == pytest.approx(0.05)
    assert np.isnan(frame.loc[END - 2 * Q, "s"])  # no observation: missing, not 0


def test_resampling_to_a_common_frequency_from_different_report_rates() -> None:
    a = noise(13)
    five_min = [ReturnObs("fine", o.period_end - timedelta(minutes=m), (1 + o.return_) ** (1 / 3) - 1)
                for o in series("x", a) for m in (0, 5, 10)]  # fmt: skip
    r = correlation_report(series("coarse", a) + five_min, NOW)
    assert r.current["coarse"]["fine"] == pytest.approx(1.0)


def test_open_bucket_and_future_observations_are_not_used() -> None:
    a = noise(14)
    late = [ReturnObs("a", END + timedelta(minutes=5), 0.5), ReturnObs("a", NOW + timedelta(hours=1), 0.9)]
    base = correlation_report(series("a", a) + series("b", a), NOW)
    r = correlation_report(series("a", a) + series("b", a) + late, NOW)
    assert r.current == base.current
    # an observation in the open bucket still counts as a sign of life
    quiet = [*series("q", a, end=END - 2 * Q), ReturnObs("q", NOW - timedelta(minutes=1), 0.0)]
    assert "q" in correlation_report(quiet + series("a", a), NOW).strategies


def test_accepts_strategy_return_payloads() -> None:
    a = noise(15)
    obs = [StrategyReturnPayload(strategy=o.strategy, period_end=o.period_end, **{"return": o.return_})
           for o in series("a", a) + series("b", -a)]  # fmt: skip
    r = correlation_report(obs, NOW)
    assert r.current["a"]["b"] == pytest.approx(-1.0)


def test_empty_input_and_json() -> None:
    r = correlation_report([], NOW)
    assert r.strategies == () and r.current == {} and r.max_abs_correlation is None
    assert not r.regime_change and not r.early_warning
    r = correlation_report(series("a", noise(16)) + series("b", noise(17)), NOW)
    doc = json.loads(r.model_dump_json())
    assert set(doc["current"]) == {"a", "b"}
    assert doc["as_of"] == "2024-03-01T12:07:00Z"


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        CorrelationConfig(fast=150, slow=50)
    with pytest.raises(ValueError):
        correlation_report([], datetime(2024, 1, 1))
    assert CorrelationConfig().min_periods(100) == 50


returns = st.floats(-0.5, 0.5, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (30, 4), elements=returns),
    arrays(np.bool_, (30, 4)),
)
def test_correlations_are_bounded_and_symmetric(values: np.ndarray, missing: np.ndarray) -> None:
    values = np.where(missing, np.nan, values)
    cfg = CorrelationConfig(window=12, fast=5, slow=15, min_periods_ratio=0.3)
    obs = [o for k in range(4) for o in series(f"s{k}", values[:, k])]
    r = correlation_report(obs, NOW, cfg)
    for m in (r.current, r.previous, r.fast, r.slow):
        for a, row in m.items():
            for b, v in row.items():
                assert v == m[b][a]
                assert v is None or -1.0 <= v <= 1.0
    for score in (r.fast_slow_change, r.regime_change_score):
        assert score is None or 0.0 <= score <= 2.0
    json.dumps(r.model_dump(mode="json"))
