"""core.var_backtest: exception tests, Basel zones, and the rolling VaR models (no look-ahead)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeguard.adapters.candle_files import load_candles
from tradeguard.core.var import bootstrap_scenarios, daily_returns, var_of_pnl
from tradeguard.core.var_backtest import (
    basel_windows,
    basel_zone,
    christoffersen_independence,
    conditional_coverage,
    coverage,
    exception_series,
    kupiec_pof,
    rolling_bootstrap_var,
    rolling_fhs_garch_var,
)
from tradeguard.errors import InputError


def chi2_sf_df1(x: float) -> float:
    """χ²(1) survival function in closed form: P(Z² > x) = erfc(√(x/2))."""
    return math.erfc(math.sqrt(x / 2.0))


def dated(values: np.ndarray, start: str = "2020-01-01") -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="D", tz="UTC"))


def test_kupiec_known_value_t250_x10_p1pct():
    t, x, p = 250, 10, 0.01
    rate = x / t
    expected = -2 * ((t - x) * math.log(1 - p) + x * math.log(p)) + 2 * (
        (t - x) * math.log(1 - rate) + x * math.log(rate)
    )
    assert expected == pytest.approx(12.955, abs=1e-3)  # the textbook value for 10 exceptions in 250 days
    test = kupiec_pof([True] * x + [False] * (t - x), p)
    assert test.statistic == pytest.approx(expected, rel=1e-12)
    assert test.p_value == pytest.approx(chi2_sf_df1(expected), rel=1e-9)
    assert test.df == 1


def test_kupiec_edge_cases_are_finite():
    zero = kupiec_pof([False] * 250, 0.01)
    assert zero.statistic == pytest.approx(-2 * 250 * math.log(0.99))
    every = kupiec_pof([True] * 20, 0.05)
    assert every.statistic == pytest.approx(-2 * 20 * math.log(0.05))
    exact = kupiec_pof([True] + [False] * 99, 0.01)
    assert exact.statistic == 0.0 and exact.p_value == 1.0
    with pytest.raises(InputError):
        kupiec_pof([], 0.01)
    with pytest.raises(InputError):
        kupiec_pof([True], 1.0)


def test_christoffersen_known_value():
    hits = [0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0]
    # 11 transitions: 00 01 11 10 00 00 01 10 00 01 10 → n00=4, n01=3, n10=3, n11=1
    n00, n01, n10, n11 = 4, 3, 3, 1
    pi01, pi11, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 11
    null = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    alt = n00 * math.log(1 - pi01) + n01 * math.log(pi01) + n10 * math.log(1 - pi11) + n11 * math.log(pi11)
    expected = -2 * (null - alt)
    test = christoffersen_independence(np.array(hits, dtype=bool))
    assert test.statistic == pytest.approx(expected, rel=1e-12)
    assert test.p_value == pytest.approx(chi2_sf_df1(expected), rel=1e-9)
    cc = conditional_coverage(np.array(hits, dtype=bool), 0.05)
    total = kupiec_pof(np.array(hits, dtype=bool), 0.05).statistic + expected
    assert cc.statistic == pytest.approx(total, rel=1e-12)
    assert cc.p_value == pytest.approx(math.exp(-total / 2), rel=1e-9)  # χ²(2) survival in closed form
    assert cc.df == 2


@pytest.mark.parametrize(
    "hits",
    [[], [True], [False] * 100, [True] * 100, [True, False] * 50, [False] * 99 + [True]],
    ids=["empty", "one", "no-exceptions", "all-exceptions", "alternating", "only-last"],
)
def test_christoffersen_edge_cases_do_not_produce_nan(hits):
    test = christoffersen_independence(hits)
    assert math.isfinite(test.statistic) and test.statistic >= 0 and 0 <= test.p_value <= 1
    if len(hits) < 2 or len(set(hits)) == 1 or (hits[-1] and not any(hits[:-1])):
        assert (test.statistic, test.p_value) == (0.0, 1.0)
    if hits:
        cc = conditional_coverage(hits, 0.01)
        assert math.isfinite(cc.statistic) and 0 <= cc.p_value <= 1


def test_clustered_exceptions_are_flagged_and_spread_ones_are_not():
    spread = np.zeros(1000, dtype=bool)
    spread[::100] = True
    clustered = np.zeros(1000, dtype=bool)
    clustered[500:510] = True
    assert christoffersen_independence(spread).p_value > 0.5
    assert christoffersen_independence(clustered).p_value < 1e-6
    assert kupiec_pof(spread, 0.01).statistic == kupiec_pof(clustered, 0.01).statistic == 0.0


def binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def test_basel_zone_boundaries():
    assert [basel_zone(x) for x in (0, 4, 5, 9, 10, 250)] == [
        "green",
        "green",
        "yellow",
        "yellow",
        "red",
        "red",
    ]
    # the yellow zone starts where an accurate 99% model would reach this many or fewer with ≥ 95% probability
    assert min(k for k in range(20) if binom_cdf(k, 250, 0.01) >= 0.95) == 5
    with pytest.raises(InputError):
        basel_zone(-1)


def test_basel_windows_count_zones_and_find_the_worst():
    hits = np.zeros(300, dtype=bool)
    hits[[10, 20, 30, 40, 50]] = True  # five early exceptions: the windows ending at 249..259 are yellow
    hits[290:300] = True  # ten late ones: the window ending at 299 holds those and the one at 50
    out = basel_windows(dated(hits))
    assert out.green + out.yellow + out.red == 51
    counts = [int(hits[e - 249 : e + 1].sum()) for e in range(249, 300)]
    assert (out.green, out.yellow, out.red) == (
        sum(c <= 4 for c in counts),
        sum(5 <= c <= 9 for c in counts),
        sum(c >= 10 for c in counts),
    )
    assert out.red > 0 and out.yellow > 0 and out.green > 0
    assert out.worst_exceptions == max(counts) == 11
    assert out.worst_end == dated(hits).index[299]
    short = basel_windows(dated(np.ones(100, dtype=bool)))
    assert (short.green, short.yellow, short.red, short.worst_exceptions, short.worst_end) == (
        0,
        0,
        0,
        None,
        None,
    )


def test_exception_series_is_strict_and_aligned():
    realized = dated(np.array([-0.05, -0.0501, 0.02, -0.2]))
    var = dated(np.array([0.05, 0.05, 0.01, np.nan]))
    hits = exception_series(realized, var)
    assert hits.tolist() == [
        False,
        True,
        False,
    ]  # a loss equal to VaR is not an exception; no forecast, no day
    cov = coverage(hits, 0.95)
    assert (cov.observations, cov.exceptions, cov.expected) == (3, 1, pytest.approx(0.15))
    assert cov.rate_pct == pytest.approx(100 / 3)


def returns_frame(days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.standard_t(4, (days, 2)) * 0.02
    return pd.DataFrame(
        values, index=pd.date_range("2021-01-01", periods=days, freq="D", tz="UTC"), columns=["A", "B"]
    )


def test_rolling_bootstrap_is_the_production_model():
    returns = returns_frame(130, 1)
    weights = {"A": 0.7, "B": 0.3}
    out = rolling_bootstrap_var(returns, weights, [0.95, 0.99], lookback_days=90, n_scenarios=2000, seed=3)
    assert out.index[0] == returns.index[90] and len(out) == 40
    seeds = np.random.SeedSequence(3).generate_state(130)
    t = 100
    s = bootstrap_scenarios(returns.iloc[t - 90 : t], 2000, 90, seed=int(seeds[t]))
    pnl = s.returns @ np.array([0.7, 0.3])
    assert out.loc[returns.index[t], 0.99] == pytest.approx(var_of_pnl(pnl, 0.99), rel=1e-12)
    assert (out[0.99] >= out[0.95]).all()
    with pytest.raises(InputError, match="no returns for C"):
        rolling_bootstrap_var(returns, {"A": 1.0, "C": 1.0}, [0.99])
    with pytest.raises(InputError, match="zero"):
        rolling_bootstrap_var(returns, {"A": 0.0}, [0.99])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(60, 100), shock=st.floats(-0.9, 5.0))
def test_rolling_bootstrap_has_no_look_ahead(seed, cut, shock):
    returns = returns_frame(110, seed)
    changed = returns.copy()
    changed.iloc[cut:] = changed.iloc[cut:] * (1 + shock) + shock / 10
    kwargs = {"lookback_days": 40, "n_scenarios": 500, "seed": 1}
    a = rolling_bootstrap_var(returns, {"A": 1.0, "B": -0.5}, [0.99], **kwargs)
    b = rolling_bootstrap_var(changed, {"A": 1.0, "B": -0.5}, [0.99], **kwargs)
    upto = returns.index[cut]  # the VaR for day `cut` uses returns before it only
    pd.testing.assert_frame_equal(a.loc[:upto], b.loc[:upto])


def garch_series(days: int, seed: int) -> pd.Series:
    """Returns with GARCH(1,1) volatility: ω = 2e-5, α = 0.1, β = 0.85."""
    rng = np.random.default_rng(seed)
    out, h = np.empty(days), 2e-5 / 0.05
    for i in range(days):
        out[i] = math.sqrt(h) * rng.standard_normal()
        h = 2e-5 + 0.1 * out[i] ** 2 + 0.85 * h
    return pd.Series(out, index=pd.date_range("2019-01-01", periods=days, freq="D", tz="UTC"))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), cut=st.integers(130, 175), shock=st.floats(-0.5, 0.5))
def test_rolling_fhs_has_no_look_ahead(seed, cut, shock):
    returns = garch_series(180, seed)
    changed = returns.copy()
    changed.iloc[cut:] = shock
    kwargs = {"window": 150, "min_history": 100, "refit_every": 15}
    a = rolling_fhs_garch_var(returns, [0.95, 0.99], **kwargs)
    b = rolling_fhs_garch_var(changed, [0.95, 0.99], **kwargs)
    upto = returns.index[cut]
    assert a.index[0] == returns.index[100]
    pd.testing.assert_frame_equal(a.loc[:upto], b.loc[:upto])


def test_fhs_var_reacts_to_a_shock_and_covers_a_garch_process():
    returns = garch_series(1500, 7)
    out = rolling_fhs_garch_var(returns, [0.95, 0.99], window=1000, min_history=250, refit_every=50)
    assert (out[0.99] > out[0.95]).all() and (out[0.95] > 0).all()
    hits = exception_series(returns, out[0.99])
    assert 0.3 < coverage(hits, 0.99).rate_pct < 2.5
    shocked = returns.copy()
    shocked.iloc[1200] = -0.15
    after = rolling_fhs_garch_var(shocked, [0.99], window=1000, min_history=250, refit_every=50)
    day = returns.index[1201]
    assert after.loc[day, 0.99] > 1.5 * out.loc[day, 0.99]  # volatility jumps the day after the shock
    with pytest.raises(InputError):
        rolling_fhs_garch_var(returns, [0.99], window=100, min_history=250)


def btc_daily_returns(data_dir: Path) -> pd.DataFrame:
    candles = load_candles(data_dir / "binance", "BTC/USDT", "1h")
    last = candles[candles["date"].dt.hour == 23]
    closes = pd.DataFrame(
        {"BTC": last["close"].to_numpy()}, index=pd.DatetimeIndex(last["date"].dt.floor("D"))
    )
    return daily_returns(closes)


@pytest.mark.shared_data
def test_btc_bootstrap_var_exception_rate_is_sane(shared_data):
    returns = btc_daily_returns(shared_data)
    var = rolling_bootstrap_var(returns, {"BTC": 1.0}, [0.95, 0.99], n_scenarios=2000, seed=0)
    var = var.loc["2019-01-01":]
    assert len(var) > 2500
    for c, band in ((0.95, (3.5, 7.5)), (0.99, (0.5, 2.5))):
        cov = coverage(exception_series(returns["BTC"], var[c]), c)
        assert band[0] < cov.rate_pct < band[1], (c, cov)
    crash = pd.Timestamp("2020-03-12", tz="UTC")
    assert returns.loc[crash, "BTC"] < -var.loc[crash, 0.99]  # March 2020 broke the 90-day bootstrap VaR
