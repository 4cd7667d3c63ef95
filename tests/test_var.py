"""core.var: daily returns, joint bootstrap, cached portfolio VaR and the order check."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeguard.core.var import (
    PortfolioVar,
    ScenarioSet,
    bootstrap_scenarios,
    daily_returns,
    var_of_pnl,
)
from tradeguard.errors import InputError

ASSETS = ("BTC", "ETH", "SOL")


def frame(values: np.ndarray, columns: tuple[str, ...] = ASSETS, start: str = "2025-01-01") -> pd.DataFrame:
    index = pd.date_range(start, periods=len(values), freq="D", tz="UTC")
    return pd.DataFrame(values, index=index, columns=list(columns))


def random_returns(days: int, seed: int, columns: tuple[str, ...] = ASSETS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return frame(rng.standard_t(4, (days, len(columns))) * 0.03, columns)


def scenarios(seed: int = 0, days: int = 60, n: int = 2000) -> ScenarioSet:
    return bootstrap_scenarios(random_returns(days, seed), n=n, lookback_days=90, seed=seed)


returns_matrix = st.integers(30, 120).flatmap(
    lambda days: st.lists(
        st.lists(st.floats(-0.5, 0.5, allow_nan=False), min_size=3, max_size=3), min_size=days, max_size=days
    )
)
exposure = st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-3)


def test_daily_returns_are_simple_returns_and_drop_incomplete_rows():
    closes = frame(np.array([[100.0, 10.0], [110.0, np.nan], [121.0, 12.0], [121.0, 15.0]]), ("A", "B"))
    out = daily_returns(closes)
    # row 1 lacks B, row 2's B return needs row 1's B: both dropped; row 0 has no previous close
    assert list(out.index) == [closes.index[3]]
    assert out.iloc[0].tolist() == pytest.approx([0.0, 0.25])


def test_daily_returns_form_no_return_across_a_missing_day():
    closes = frame(np.array([[100.0], [110.0], [99.0], [99.0]]), ("A",))
    gapped = closes.drop(closes.index[2])
    out = daily_returns(gapped)
    assert list(out.index) == [closes.index[1]]
    with pytest.raises(InputError, match="positive"):
        daily_returns(closes.assign(A=[1.0, 0.0, 1.0, 1.0]))


@settings(max_examples=60, deadline=None)
@given(rows=returns_matrix, n=st.integers(1, 500), lookback=st.integers(30, 150), seed=st.integers(0, 2**32))
def test_bootstrap_keeps_joint_rows_from_the_lookback_window(rows, n, lookback, seed):
    returns = frame(np.array(rows))
    s = bootstrap_scenarios(returns, n=n, lookback_days=lookback, seed=seed)
    window = returns.to_numpy()[-lookback:]
    assert s.returns.shape == (n, 3) and s.assets == ASSETS
    # every scenario is one whole historical row of the window: the assets' joint move is kept
    match = (s.returns[:, None, :] == window[None, :, :]).all(axis=2)
    assert match.any(axis=1).all()
    assert s.as_of == returns.index[-1].to_pydatetime()


def test_bootstrap_is_seeded_and_needs_30_rows():
    returns = random_returns(40, 1)
    a, b = (bootstrap_scenarios(returns, n=300, seed=5) for _ in range(2))
    assert np.array_equal(a.returns, b.returns)
    assert not np.array_equal(a.returns, bootstrap_scenarios(returns, n=300, seed=6).returns)
    with pytest.raises(InputError, match="at least 30"):
        bootstrap_scenarios(returns.iloc[:29])
    with pytest.raises(InputError, match="at least 30"):
        bootstrap_scenarios(returns, lookback_days=20)
    as_of = datetime(2026, 1, 1, tzinfo=UTC)
    assert bootstrap_scenarios(returns, n=10, as_of=as_of).as_of == as_of


def test_scenario_set_is_column_major_read_only_and_validated():
    s = scenarios()
    assert s.returns.flags.f_contiguous and not s.returns.flags.writeable
    column = s.column("ETH")
    assert column is not None and column.flags.c_contiguous
    assert np.array_equal(column, s.returns[:, 1])
    assert s.column("DOGE") is None
    with pytest.raises(InputError, match="does not fit"):
        ScenarioSet(("A", "B"), np.zeros((5, 3)), datetime.now(UTC))
    with pytest.raises(InputError, match="duplicate"):
        ScenarioSet(("A", "A"), np.zeros((5, 2)), datetime.now(UTC))
    with pytest.raises(InputError, match="finite"):
        ScenarioSet(("A",), np.array([[np.nan]]), datetime.now(UTC))


@pytest.mark.parametrize(("confidence", "rank"), [(0.9, 1000), (0.95, 500), (0.975, 250), (0.99, 100)])
def test_var_of_pnl_is_the_ceil_n_alpha_th_worst_scenario(confidence, rank):
    pnl = np.random.default_rng(3).permutation(np.arange(10_000.0) - 5000.0)
    # the rank-th smallest of -5000, -4999, ... is -5000 + rank - 1
    assert var_of_pnl(pnl, confidence) == 5000.0 - (rank - 1)


@settings(max_examples=100, deadline=None)
@given(
    pnl=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
    c1=st.floats(0.5, 0.999),
    c2=st.floats(0.5, 0.999),
)
def test_var_is_monotone_in_confidence(pnl, c1, c2):
    lo, hi = sorted((c1, c2))
    assert var_of_pnl(np.array(pnl), lo) <= var_of_pnl(np.array(pnl), hi)


def test_var_of_pnl_rejects_bad_input():
    with pytest.raises(InputError):
        var_of_pnl(np.array([]), 0.95)
    for c in (0.0, 1.0, 1.5):
        with pytest.raises(InputError, match="confidence"):
            var_of_pnl(np.array([1.0]), c)


def test_portfolio_var_is_the_pnl_quantile_in_percent_of_equity():
    s = scenarios(seed=2)
    exposures = {"BTC": 30_000.0, "ETH": -10_000.0, "DOGE": 5_000.0}
    pv = PortfolioVar(s, exposures, equity=50_000.0, confidence=0.99)
    assert pv.missing == ("DOGE",)
    expected_pnl = s.returns[:, 0] * 30_000.0 - s.returns[:, 1] * 10_000.0
    np.testing.assert_allclose(pv.pnl, expected_pnl, rtol=1e-12, atol=1e-9)
    assert pv.var_pct() == pytest.approx(var_of_pnl(expected_pnl, 0.99) / 50_000.0 * 100.0, rel=1e-12)
    assert not pv.pnl.flags.writeable
    assert PortfolioVar(s, {}, equity=1.0).var_pct() == 0.0


def test_portfolio_var_validates_inputs():
    s = scenarios()
    for equity in (0.0, -1.0, math.nan):
        with pytest.raises(InputError, match="equity"):
            PortfolioVar(s, {"BTC": 1.0}, equity)
    with pytest.raises(InputError, match="finite"):
        PortfolioVar(s, {"BTC": math.inf}, 1.0)
    pv = PortfolioVar(s, {"BTC": 1.0}, 1.0)
    with pytest.raises(InputError, match="no return scenarios for DOGE"):
        pv.with_order("DOGE", 100.0)
    with pytest.raises(InputError, match="finite"):
        pv.with_order("BTC", math.nan)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 1000),
    xs=st.lists(exposure, min_size=3, max_size=3),
    scale=st.floats(0.01, 100.0),
    confidence=st.sampled_from([0.9, 0.95, 0.99]),
)
def test_scaling_exposures_scales_var(seed, xs, scale, confidence):
    s = scenarios(seed, n=1000)
    base = PortfolioVar(s, dict(zip(ASSETS, xs, strict=True)), 1e5, confidence)
    scaled = PortfolioVar(s, {a: x * scale for a, x in zip(ASSETS, xs, strict=True)}, 1e5, confidence)
    assert scaled.var_pct() == pytest.approx(base.var_pct() * scale, rel=1e-9, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 1000),
    xs=st.lists(exposure, min_size=3, max_size=3),
    asset=st.sampled_from(ASSETS),
    order=exposure,
)
def test_with_order_adds_one_column(seed, xs, asset, order):
    s = scenarios(seed, n=1000)
    exposures = dict(zip(ASSETS, xs, strict=True))
    pv = PortfolioVar(s, exposures, 1e5)
    assert pv.with_order(asset, 0.0) == pv.var_pct()
    rebuilt = PortfolioVar(s, {**exposures, asset: exposures[asset] + order}, 1e5)
    assert pv.with_order(asset, order) == pytest.approx(rebuilt.var_pct(), rel=1e-9, abs=1e-9)
    assert pv.var_pct() == PortfolioVar(s, exposures, 1e5).var_pct()  # the cache is left untouched


def test_with_order_sees_correlation_and_hedges():
    rng = np.random.default_rng(4)
    common = rng.normal(0, 0.03, 90)
    returns = frame(np.column_stack([common, common + rng.normal(0, 0.003, 90), rng.normal(0, 0.03, 90)]))
    pv = PortfolioVar(bootstrap_scenarios(returns, n=10_000, seed=1), {"BTC": 10_000.0}, 10_000.0)
    # buying a near-copy of BTC roughly doubles VaR; selling it hedges; an independent asset sits between
    same, hedge, other = (
        pv.with_order("ETH", 10_000.0),
        pv.with_order("ETH", -10_000.0),
        pv.with_order("SOL", 1e4),
    )
    assert hedge < pv.var_pct() < other < same
    assert same == pytest.approx(2 * pv.var_pct(), rel=0.1)
