"""Liquidation price and distance: Binance USDⓈ-M formula, brackets, generic formula, report, tier loading."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from itertools import pairwise
from typing import Any

import ccxt
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tradeguard.adapters.leverage_tiers import (
    aload_leverage_tiers,
    load_leverage_tiers,
    load_snapshot,
    tier_from_ccxt,
    tiers_by_symbol_from_ccxt,
    tiers_from_ccxt,
)
from tradeguard.core.events import Position
from tradeguard.core.liquidation import (
    Side,
    Tier,
    assess_positions,
    binance_usdm_liquidation_price,
    binance_usdm_tiered_liquidation,
    check_tiers,
    derive_maintenance_amounts,
    distance_pct,
    generic_liquidation_price,
    generic_tiered_liquidation,
    maintenance_margin,
    select_tier,
    solve_tiered,
    status,
    tiers_for,
)
from tradeguard.errors import DataFormatError, ExchangeError, InputError


def _table(rows: list[tuple[float, float | None, float, float]]) -> list[Tier]:
    return [
        Tier(tier=i + 1, notional_floor=f, notional_cap=c, maintenance_margin_rate=m, maintenance_amount=cum)
        for i, (f, c, m, cum) in enumerate(rows)
    ]


# The BTCUSDT / ETHUSDT brackets of Binance's FAQ worked example (the 2020-era tables: BTC 1M-5M is 2.5 %
# with maintenance amount 16,300; ETH 2M-5M is 10 % with 135,365). Not today's brackets (see the snapshot).
EXAMPLE_BTC = _table(
    [
        (0, 50_000, 0.004, 0),
        (50_000, 250_000, 0.005, 50),
        (250_000, 1_000_000, 0.01, 1_300),
        (1_000_000, 5_000_000, 0.025, 16_300),
        (5_000_000, 20_000_000, 0.05, 141_300),
        (20_000_000, 50_000_000, 0.10, 1_141_300),
        (50_000_000, 100_000_000, 0.125, 2_391_300),
        (100_000_000, 200_000_000, 0.15, 4_891_300),
        (200_000_000, 300_000_000, 0.25, 24_891_300),
        (300_000_000, None, 0.5, 99_891_300),
    ]
)
EXAMPLE_ETH = _table(
    [
        (0, 10_000, 0.005, 0),
        (10_000, 100_000, 0.0065, 15),
        (100_000, 500_000, 0.01, 365),
        (500_000, 1_000_000, 0.02, 5_365),
        (1_000_000, 2_000_000, 0.05, 35_365),
        (2_000_000, 5_000_000, 0.10, 135_365),
        (5_000_000, 10_000_000, 0.125, 260_365),
        (10_000_000, 20_000_000, 0.15, 510_365),
        (20_000_000, 50_000_000, 0.25, 2_510_365),
        (50_000_000, None, 0.5, 15_010_365),
    ]
)
EXAMPLE_TIERS = {"BTC/USDT:USDT": EXAMPLE_BTC, "ETH/USDT:USDT": EXAMPLE_ETH}

WB = 1_535_443.01
BTC_Q, BTC_EP = 109.488, 32_481.98
ETH_Q, ETH_EP, ETH_MARK = 3_683.979, 1_456.84, 1_335.18
ETH_UPNL = ETH_Q * (ETH_MARK - ETH_EP)
BTC_MARK = 30_000.0  # not given by the example; only the distance depends on it


def _pos(**kw: Any) -> Position:
    return Position.model_validate(kw)


def _margin_balance(
    side: str, q: float, ep: float, wallet: float, price: float, upnl_other: float = 0
) -> float:
    s = 1 if side == "long" else -1
    return wallet + upnl_other + s * q * (price - ep)


# --- the worked example ---------------------------------------------------------------------------------


def test_example_with_the_example_rates() -> None:
    eth_mm = ETH_Q * ETH_MARK * 0.10 - 135_365
    btc_cross = binance_usdm_liquidation_price(
        "long",
        BTC_Q,
        BTC_EP,
        WB,
        0.025,
        16_300,
        other_maintenance_margin=eth_mm,
        other_unrealized_pnl=ETH_UPNL,
    )
    assert round(btc_cross, 2) == 26_316.89
    # Isolated: the example allocates the whole 1,535,443.01 as each position's isolated wallet balance.
    assert round(binance_usdm_liquidation_price("long", ETH_Q, ETH_EP, WB, 0.10, 135_365), 2) == 1_114.78
    assert round(binance_usdm_liquidation_price("long", BTC_Q, BTC_EP, WB, 0.025, 16_300), 2) == 18_778.73


def test_example_with_bracket_selection() -> None:
    eth_mm = maintenance_margin(EXAMPLE_ETH, ETH_Q * ETH_MARK)
    assert eth_mm == pytest.approx(ETH_Q * ETH_MARK * 0.10 - 135_365)
    cross = binance_usdm_tiered_liquidation(
        "long", BTC_Q, BTC_EP, WB, EXAMPLE_BTC, other_maintenance_margin=eth_mm, other_unrealized_pnl=ETH_UPNL
    )
    assert round(cross.price, 2) == 26_316.89
    assert (cross.tier.maintenance_margin_rate, cross.tier.maintenance_amount) == (0.025, 16_300)
    btc_iso = binance_usdm_tiered_liquidation("long", BTC_Q, BTC_EP, WB, EXAMPLE_BTC)
    assert round(btc_iso.price, 2) == 18_778.73
    eth_iso = binance_usdm_tiered_liquidation(
        "long", ETH_Q, ETH_EP, WB, EXAMPLE_ETH, start_notional=ETH_Q * ETH_MARK
    )
    assert round(eth_iso.price, 2) == 1_114.78
    assert (eth_iso.tier.maintenance_margin_rate, eth_iso.tier.maintenance_amount) == (0.10, 135_365)
    assert cross.converged and btc_iso.converged and eth_iso.converged


def test_example_through_assess_positions() -> None:
    cross = assess_positions(
        [
            _pos(
                symbol="BTC/USDT:USDT",
                side="long",
                contracts=BTC_Q,
                entryPrice=BTC_EP,
                markPrice=BTC_MARK,
                marginMode="cross",
            ),
            _pos(
                symbol="ETH/USDT:USDT",
                side="long",
                contracts=ETH_Q,
                entryPrice=ETH_EP,
                markPrice=ETH_MARK,
                marginMode="cross",
            ),
        ],
        WB,
        EXAMPLE_TIERS,
        "binanceusdm",
    )
    btc = cross.positions[0]
    assert btc.formula == "binance_usdm_cross"
    assert round(btc.liquidation_price or 0, 2) == 26_316.89
    assert btc.wallet_balance_used == WB
    # Isolated: ccxt's collateral for Binance is isolatedWallet + unrealized PnL, so a wallet of WB is sent
    # as collateral WB + PnL.
    btc_upnl = BTC_Q * (BTC_MARK - BTC_EP)
    iso = assess_positions(
        [
            _pos(
                symbol="BTC/USDT:USDT",
                side="long",
                contracts=BTC_Q,
                entryPrice=BTC_EP,
                markPrice=BTC_MARK,
                marginMode="isolated",
                collateral=WB + btc_upnl,
                unrealizedPnl=btc_upnl,
            ),
            _pos(
                symbol="ETH/USDT:USDT",
                side="long",
                contracts=ETH_Q,
                entryPrice=ETH_EP,
                markPrice=ETH_MARK,
                marginMode="isolated",
                collateral=WB + ETH_UPNL,
            ),
        ],
        None,
        EXAMPLE_TIERS,
        "binance",
    )
    btc_iso, eth_iso = iso.positions
    assert btc_iso.formula == eth_iso.formula == "binance_usdm_isolated"
    assert round(btc_iso.liquidation_price or 0, 2) == 18_778.73
    assert round(eth_iso.liquidation_price or 0, 2) == 1_114.78
    assert btc_iso.wallet_balance_used == pytest.approx(WB)
    assert eth_iso.wallet_balance_used == pytest.approx(WB)


def test_isolated_positions_do_not_enter_the_cross_formula() -> None:
    report = assess_positions(
        [
            _pos(
                symbol="BTC/USDT:USDT",
                side="long",
                contracts=BTC_Q,
                entryPrice=BTC_EP,
                markPrice=BTC_MARK,
                marginMode="cross",
            ),
            _pos(
                symbol="ETH/USDT:USDT",
                side="long",
                contracts=ETH_Q,
                entryPrice=ETH_EP,
                markPrice=ETH_MARK,
                marginMode="isolated",
                collateral=100_000.0,
            ),
        ],
        WB,
        EXAMPLE_TIERS,
        "binanceusdm",
    )
    expected = binance_usdm_tiered_liquidation("long", BTC_Q, BTC_EP, WB, EXAMPLE_BTC).price
    assert report.positions[0].liquidation_price == pytest.approx(expected)


# --- brackets -------------------------------------------------------------------------------------------


def test_select_tier_uses_floor_exclusive_cap_inclusive() -> None:
    assert select_tier(EXAMPLE_BTC, 0).tier == 1
    assert select_tier(EXAMPLE_BTC, 50_000).tier == 1
    assert select_tier(EXAMPLE_BTC, 50_000.01).tier == 2
    assert select_tier(EXAMPLE_BTC, -3_000_000).tier == 4
    assert select_tier(EXAMPLE_BTC, 1e12).tier == 10
    capped = EXAMPLE_BTC[:3]
    assert select_tier(capped, 5_000_000).tier == 3  # beyond every cap: the last bracket
    with pytest.raises(InputError):
        select_tier([], 1.0)


def test_recomputes_when_liquidation_notional_falls_lower() -> None:
    # ETH's entry notional (5.37M) is in the 12.5 % bracket; the price computed there puts the notional
    # in the 10 % bracket, where the price is recomputed.
    assert select_tier(EXAMPLE_ETH, ETH_Q * ETH_EP).maintenance_margin_rate == 0.125
    naive = binance_usdm_liquidation_price("long", ETH_Q, ETH_EP, WB, 0.125, 260_365)
    solved = binance_usdm_tiered_liquidation("long", ETH_Q, ETH_EP, WB, EXAMPLE_ETH)
    assert solved.iterations >= 2
    assert solved.tier.maintenance_margin_rate == 0.10
    assert round(solved.price, 2) == 1_114.78
    assert round(naive, 2) != 1_114.78


def test_recomputes_when_liquidation_notional_falls_higher() -> None:
    # A well-collateralised short liquidates far above entry: 3M of notional at entry becomes > 5M at LP.
    q, ep, wallet = 100.0, 30_000.0, 3_000_000.0
    first = binance_usdm_liquidation_price("short", q, ep, wallet, 0.025, 16_300)
    assert q * first > 5_000_000
    solved = binance_usdm_tiered_liquidation("short", q, ep, wallet, EXAMPLE_BTC)
    assert solved.tier.maintenance_margin_rate == 0.05
    assert solved.price > ep
    lp_notional = q * solved.price
    assert select_tier(EXAMPLE_BTC, lp_notional) == solved.tier
    # The defining equation holds at the answer: margin balance = maintenance margin.
    assert _margin_balance("short", q, ep, wallet, solved.price) == pytest.approx(
        maintenance_margin(EXAMPLE_BTC, lp_notional)
    )


def test_discontinuous_table_falls_back_to_the_most_conservative_price() -> None:
    tiers = _table([(0, 100, 0.01, 0), (100, None, 0.02, 0)])
    prices = {1: 150.0, 2: 50.0}  # each bracket's price lands in the other one

    def price_for(t: Tier) -> float:
        return prices[t.tier or 0]

    long = solve_tiered(tiers, 1.0, 10.0, price_for, side="long")
    assert (long.converged, long.price) == (False, 150.0)
    short = solve_tiered(tiers, 1.0, 10.0, price_for, side="short")
    assert (short.converged, short.price) == (False, 50.0)


@given(
    side=st.sampled_from(["long", "short"]),
    q=st.floats(0.001, 5_000),
    ep=st.floats(0.01, 100_000),
    leverage=st.floats(1, 125),
    extra=st.floats(0, 2),
)
def test_tiered_answer_satisfies_the_liquidation_equation(
    side: Side, q: float, ep: float, leverage: float, extra: float
) -> None:
    wallet = q * ep / leverage * (1 + extra)
    solved = binance_usdm_tiered_liquidation(side, q, ep, wallet, EXAMPLE_BTC)
    assume(solved.price > 0)
    assert solved.converged
    lp_notional = q * solved.price
    assert select_tier(EXAMPLE_BTC, lp_notional) == solved.tier
    balance = _margin_balance(side, q, ep, wallet, solved.price)
    assert balance == pytest.approx(maintenance_margin(EXAMPLE_BTC, lp_notional), rel=1e-7, abs=1e-6)


# --- generic formula ----------------------------------------------------------------------------------


def test_generic_formula_hand_computed() -> None:
    # long 1 @ 100 with 10 of collateral, 0.5 %: 10 + (P - 100) = 0.005 P  ->  P = 90 / 0.995
    assert generic_liquidation_price("long", 100.0, 1.0, 1.0, 10.0, 0.005) == pytest.approx(90.452261306)
    # short: 10 - (P - 100) = 0.005 P  ->  P = 110 / 1.005
    assert generic_liquidation_price("short", 100.0, 1.0, 1.0, 10.0, 0.005) == pytest.approx(109.452736318)
    # 10 contracts of 0.1 are the same position
    assert generic_liquidation_price("long", 100.0, 10.0, 0.1, 10.0, 0.005) == pytest.approx(90.452261306)
    # no maintenance margin: liquidated when the collateral is gone
    assert generic_liquidation_price("long", 200.0, 2.0, 1.0, 40.0, 0.0) == pytest.approx(180.0)
    assert generic_liquidation_price("short", 200.0, 2.0, 1.0, 40.0, 0.0) == pytest.approx(220.0)
    with pytest.raises(InputError):
        generic_liquidation_price("long", 100.0, 1.0, 0.0, 10.0, 0.005)
    with pytest.raises(InputError):
        generic_liquidation_price("long", 100.0, 1.0, 1.0, 10.0, 1.0)
    with pytest.raises(InputError):
        generic_liquidation_price("flat", 100.0, 1.0, 1.0, 10.0, 0.005)  # type: ignore[arg-type]


def test_generic_tiered_uses_the_rate_at_the_liquidation_notional() -> None:
    tiers = _table([(0, 95, 0.005, 0), (95, None, 0.05, 0.425)])
    # 1 @ 100 with 10: at 0.5 % P = 90.45 (notional 90.45, bracket 1): stable although entry is bracket 2
    solved = generic_tiered_liquidation("long", 100.0, 1.0, 1.0, 10.0, tiers)
    assert solved.tier.tier == 1
    assert solved.price == pytest.approx(90.452261306)


def test_binance_formula_with_zero_cum_is_the_generic_formula() -> None:
    assert binance_usdm_liquidation_price("short", 2.0, 150.0, 30.0, 0.01, 0.0) == pytest.approx(
        generic_liquidation_price("short", 150.0, 2.0, 1.0, 30.0, 0.01)
    )


@given(
    q=st.floats(0.001, 10_000),
    ep=st.floats(0.0001, 1_000_000),
    leverage=st.floats(1, 125),
    mmr=st.floats(0, 0.5),
    cum_share=st.floats(0, 1),
)
def test_long_below_and_short_above_entry(
    q: float, ep: float, leverage: float, mmr: float, cum_share: float
) -> None:
    initial = q * ep / leverage
    cum = cum_share * q * ep * mmr
    assume(q * ep * mmr - cum < initial * (1 - 1e-9))  # maintenance margin below initial margin
    assert binance_usdm_liquidation_price("long", q, ep, initial, mmr, cum) < ep
    assert binance_usdm_liquidation_price("short", q, ep, initial, mmr, cum) > ep
    if cum == 0:
        assert generic_liquidation_price("long", ep, q, 1.0, initial, mmr) < ep
        assert generic_liquidation_price("short", ep, q, 1.0, initial, mmr) > ep


# --- distance and status --------------------------------------------------------------------------------


def test_distance_pct() -> None:
    assert distance_pct("long", 100.0, 90.0) == pytest.approx(10.0)
    assert distance_pct("short", 100.0, 110.0) == pytest.approx(10.0)
    assert distance_pct("long", 100.0, 120.0) == 0.0  # already beyond
    assert distance_pct("short", 100.0, 80.0) == 0.0
    assert distance_pct("long", 100.0, 0.0) == 100.0  # cannot be liquidated
    assert distance_pct("long", 100.0, -5.0) == 100.0
    assert distance_pct("short", 100.0, -5.0) == 0.0
    assert distance_pct("short", 100.0, 250.0) == pytest.approx(150.0)
    with pytest.raises(InputError):
        distance_pct("long", 0.0, 10.0)


def test_status_thresholds() -> None:
    assert status(50.0) == "safe"
    assert status(20.0) == "safe"
    assert status(19.999) == "warning"
    assert status(10.0) == "warning"
    assert status(9.999) == "critical"
    assert status(0.0) == "critical"
    assert status(None) == "unknown"
    assert status(float("nan")) == "unknown"
    assert status(25.0, warning=30.0, critical=5.0) == "warning"
    assert status(4.0, warning=30.0, critical=5.0) == "critical"
    with pytest.raises(InputError):
        status(5.0, warning=10.0, critical=20.0)


# --- report ----------------------------------------------------------------------------------------------

FLAT = {"X/USDT:USDT": _table([(0, None, 0.0, 0.0)]), "Y/USDT:USDT": _table([(0, None, 0.0, 0.0)])}


def _generic(symbol: str, side: str, mark: float, **kw: Any) -> Position:
    # 1 contract @ 100 with 10 of collateral (PnL excluded) and 0 % maintenance: long LP 90, short LP 110.
    upnl = (1 if side == "long" else -1) * (mark - 100.0)
    base = {
        "symbol": symbol,
        "side": side,
        "contracts": 1.0,
        "entryPrice": 100.0,
        "markPrice": mark,
        "marginMode": "isolated",
        "collateral": 10.0 + upnl,
        "unrealizedPnl": upnl,
    }
    return _pos(**{**base, **kw})


def test_aggregate_report() -> None:
    now = datetime(2024, 9, 1, tzinfo=UTC)
    positions = [
        _generic("X/USDT:USDT", "long", 150.0),  # LP 90: 40 % away
        _generic("X/USDT:USDT", "short", 105.0),  # LP 110: 4.76 % away
        _generic("Y/USDT:USDT", "long", 105.0),  # LP 90: 14.29 % away
        _generic("Y/USDT:USDT", "long", 105.0, markPrice=None, unrealizedPnl=5.0),  # no mark
    ]
    report = assess_positions(positions, None, FLAT, "bybit", now)
    lps = [p.liquidation_price for p in report.positions]
    assert lps[:3] == [pytest.approx(90.0), pytest.approx(110.0), pytest.approx(90.0)]
    assert [p.status for p in report.positions] == ["safe", "critical", "warning", "unknown"]
    assert report.counts == {"safe": 1, "warning": 1, "critical": 1, "unknown": 1}
    assert report.min_distance_pct == pytest.approx(5 / 105 * 100)
    assert report.closest is not None
    assert (report.closest.symbol, report.closest.side) == ("X/USDT:USDT", "short")
    assert report.as_of == now and report.exchange == "bybit"
    assert all(p.formula == "generic" for p in report.positions)
    json.dumps(report.model_dump(mode="json"))  # serialisable as is


def test_empty_report() -> None:
    report = assess_positions([], 1_000.0, {}, "binance")
    assert report.positions == [] and report.closest is None and report.min_distance_pct is None
    assert report.counts == {"safe": 0, "warning": 0, "critical": 0, "unknown": 0}


def test_short_positions_binance() -> None:
    tiers = {"BTC/USDT:USDT": EXAMPLE_BTC}
    q, ep, mark = 2.0, 30_000.0, 31_000.0
    upnl = -q * (mark - ep)
    report = assess_positions(
        [
            _pos(
                symbol="BTC/USDT:USDT",
                side="short",
                contracts=q,
                entryPrice=ep,
                markPrice=mark,
                marginMode="isolated",
                collateral=6_000.0 + upnl,
                unrealizedPnl=upnl,
            )
        ],
        None,
        tiers,
        "binanceusdm",
    )
    row = report.positions[0]
    expected = (6_000.0 + 50 + q * ep) / (q * 0.005 + q)  # 60k notional: 0.5 % bracket, cum 50
    assert row.liquidation_price == pytest.approx(expected)
    assert row.liquidation_price is not None and row.liquidation_price > ep
    assert row.distance_pct == pytest.approx((expected - mark) / mark * 100)
    assert row.tier is not None and row.tier.tier == 2


def test_exchange_reported_price_beside_computed() -> None:
    position = _generic("X/USDT:USDT", "long", 100.0, liquidationPrice=92.0)
    row = assess_positions([position], None, FLAT, "okx").positions[0]
    assert row.liquidation_price == pytest.approx(90.0)
    assert row.exchange_liquidation_price == 92.0
    assert row.computed_distance_pct == pytest.approx(10.0)
    assert row.exchange_distance_pct == pytest.approx(8.0)
    assert row.distance_pct == pytest.approx(8.0)  # the nearer one decides
    assert row.status == "critical"
    assert row.lp_divergence_pct == pytest.approx(2.0)
    # Only the exchange's price: still measured, with the reason the computed one is missing.
    only = assess_positions([position], None, {}, "okx").positions[0]
    assert only.formula == "exchange_reported" and only.liquidation_price is None
    assert (only.reason_code, only.distance_pct, only.status) == ("no_tiers", pytest.approx(8.0), "critical")
    # ccxt reports 0 when there is none
    zero = assess_positions([position.model_copy(update={"liquidationPrice": 0.0})], None, FLAT, "okx")
    assert zero.positions[0].exchange_liquidation_price is None


def _btc(**kw: Any) -> Position:
    base = {
        "symbol": "BTC/USDT:USDT",
        "side": "long",
        "contracts": 1.0,
        "entryPrice": 30_000.0,
        "markPrice": 30_000.0,
        "marginMode": "cross",
    }
    return _pos(**{**base, **kw})


@pytest.mark.parametrize(
    ("positions", "wallet", "tiers", "code"),
    [
        ([_btc(markPrice=None, notional=30_000.0)], 10_000.0, EXAMPLE_TIERS, "no_mark_price"),
        ([_btc()], 10_000.0, {}, "no_tiers"),
        ([_btc()], None, EXAMPLE_TIERS, "no_wallet_balance"),
        ([_btc(marginMode=None)], 10_000.0, EXAMPLE_TIERS, "no_margin_mode"),
        ([_btc(entryPrice=None)], 10_000.0, EXAMPLE_TIERS, "no_entry_price"),
        ([_btc(contracts=0.0)], 10_000.0, EXAMPLE_TIERS, "empty_position"),
        ([_btc(marginMode="isolated")], None, EXAMPLE_TIERS, "no_margin"),
        ([_btc(symbol="BTC/USD:BTC")], 10_000.0, {"BTC/USD:BTC": EXAMPLE_BTC}, "inverse_contract"),
        ([_btc(), _btc(side="short")], 10_000.0, EXAMPLE_TIERS, "hedge_mode"),
        ([_btc(), _btc(symbol="SOL/USDT:USDT")], 10_000.0, EXAMPLE_TIERS, "cross_dependency"),
        (
            [_btc(), _btc(symbol="ETH/USDT:USDT", marginMode=None)],
            10_000.0,
            EXAMPLE_TIERS,
            "cross_dependency",
        ),
    ],
)
def test_unknown_positions_are_listed_with_a_reason(
    positions: list[Position], wallet: float | None, tiers: dict[str, list[Tier]], code: str
) -> None:
    report = assess_positions(positions, wallet, tiers, "binanceusdm")
    row = report.positions[0]
    assert len(report.positions) == len(positions)
    assert row.status == "unknown"
    assert row.reason_code == code
    assert row.reason
    assert report.counts["unknown"] >= 1


def test_no_mark_price_still_computes_the_price() -> None:
    row = assess_positions([_btc(markPrice=None)], 10_000.0, EXAMPLE_TIERS, "binance").positions[0]
    assert row.liquidation_price == pytest.approx((10_000.0 + 0 - 30_000.0) / (0.004 - 1))
    assert (row.status, row.reason_code, row.distance_pct) == ("unknown", "no_mark_price", None)


def test_long_that_cannot_be_liquidated() -> None:
    row = assess_positions([_btc()], 50_000.0, EXAMPLE_TIERS, "binance").positions[0]
    assert row.liquidation_price is None
    assert row.distance_pct == 100.0 and row.status == "safe"
    assert any("≤ 0" in note for note in row.notes)


def test_isolated_margin_fallbacks() -> None:
    by_leverage = _btc(marginMode="isolated", leverage=10.0)
    row = assess_positions([by_leverage], None, EXAMPLE_TIERS, "binance").positions[0]
    assert row.wallet_balance_used == pytest.approx(3_000.0)
    assert row.notes and "leverage" in row.notes[0]
    by_initial = _btc(marginMode="isolated", initialMargin=1_500.0)
    row = assess_positions([by_initial], None, EXAMPLE_TIERS, "binance").positions[0]
    assert row.wallet_balance_used == pytest.approx(1_500.0)


def test_tier_lookup_accepts_ids_and_short_symbols() -> None:
    by_id = {"BTCUSDT": EXAMPLE_BTC}
    assert tiers_for("BTC/USDT:USDT", by_id) is EXAMPLE_BTC
    assert tiers_for("BTC/USDT", {"BTC/USDT:USDT": EXAMPLE_BTC}) is EXAMPLE_BTC
    assert tiers_for("BTC/USDT:USDT", {}) is None
    assert tiers_for("BTCUSDT", {}) is None


# --- snapshot ---------------------------------------------------------------------------------------------


def test_snapshot_is_dated_sourced_and_consistent() -> None:
    snap = load_snapshot()
    assert isinstance(snap.as_of, date)
    assert "fetch_leverage_tiers" in snap.source
    assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(snap.tiers)
    assert snap.ids["BTCUSDT"] == "BTC/USDT:USDT"
    for symbol, tiers in snap.tiers.items():
        assert check_tiers(tiers) == [], symbol
        floors = [t.notional_floor for t in tiers]
        assert floors == sorted(floors) and len(set(floors)) == len(floors)
        assert tiers[0].notional_floor == 0 and tiers[0].maintenance_amount == 0
        for prev, cur in pairwise(tiers):
            assert cur.maintenance_amount == pytest.approx(
                prev.maintenance_amount
                + cur.notional_floor * (cur.maintenance_margin_rate - prev.maintenance_margin_rate)
            )
        assert [t.tier for t in tiers] == list(range(1, len(tiers) + 1))


def test_check_tiers_finds_problems() -> None:
    assert check_tiers(EXAMPLE_BTC) == [] and check_tiers(EXAMPLE_ETH) == []
    broken = [*EXAMPLE_BTC[:3], EXAMPLE_BTC[3].model_copy(update={"maintenance_amount": 16_000.0})]
    assert any("maintenance amount" in p for p in check_tiers(broken))
    gap = [EXAMPLE_BTC[0], EXAMPLE_BTC[2]]
    assert any("previous cap" in p for p in check_tiers(gap))
    assert check_tiers([]) == ["no brackets"]
    assert check_tiers(derive_maintenance_amounts(broken)) == []


def test_snapshot_file_is_rejected_when_malformed(tmp_path: Any) -> None:
    bad = tmp_path / "tiers.json"
    bad.write_text(json.dumps({"as_of": "yesterday", "source": "x", "symbols": {}}))
    with pytest.raises(DataFormatError):
        load_snapshot(bad)


# --- ccxt conversion ----------------------------------------------------------------------------------


def _ccxt_tier(n: int, lo: float, hi: float, rate: float, lev: int, cum: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "bracket": str(n),
        "initialLeverage": str(lev),
        "notionalCap": str(hi),
        "notionalFloor": str(lo),
        "maintMarginRatio": str(rate),
    }
    if cum is not None:
        info["cum"] = cum
    return {
        "tier": float(n),
        "symbol": "BTC/USDT:USDT",
        "currency": "USDT",
        "minNotional": lo,
        "maxNotional": hi,
        "maintenanceMarginRate": rate,
        "maxLeverage": float(lev),
        "info": info,
    }


CCXT_BTC = [
    _ccxt_tier(1, 0.0, 50_000.0, 0.004, 125, "0.0"),
    _ccxt_tier(2, 50_000.0, 600_000.0, 0.005, 100, "50.0"),
    _ccxt_tier(3, 600_000.0, 9.223372036854776e18, 0.0065, 75, "950.0"),
]


def test_ccxt_tier_conversion() -> None:
    tier = tier_from_ccxt(CCXT_BTC[1])
    assert tier == Tier(
        tier=2,
        notional_floor=50_000,
        notional_cap=600_000,
        maintenance_margin_rate=0.005,
        maintenance_amount=50,
        max_leverage=100,
    )
    tiers = tiers_from_ccxt(list(reversed(CCXT_BTC)))
    assert [t.tier for t in tiers] == [1, 2, 3]
    assert tiers[-1].notional_cap is None  # 2^63 - 1 means no cap
    assert check_tiers(tiers) == []
    without_cum = [
        _ccxt_tier(n, lo, hi, r, lev, None)
        for n, lo, hi, r, lev in [
            (1, 0.0, 5_000.0, 0.01, 50),
            (2, 5_000.0, 50_000.0, 0.02, 25),
            (3, 50_000.0, 1e6, 0.05, 10),
        ]
    ]
    derived = tiers_from_ccxt(without_cum)
    assert [t.maintenance_amount for t in derived] == [0.0, pytest.approx(50.0), pytest.approx(1_550.0)]
    by_symbol = tiers_by_symbol_from_ccxt({"BTC/USDT:USDT": CCXT_BTC, "EMPTY/USDT:USDT": []})
    assert list(by_symbol) == ["BTC/USDT:USDT"]
    with pytest.raises(DataFormatError):
        tier_from_ccxt({"tier": 1, "minNotional": 0, "maxNotional": 10})
    with pytest.raises(DataFormatError, match="BAD"):
        tiers_by_symbol_from_ccxt({"BAD/USDT:USDT": [{**CCXT_BTC[0], "maxNotional": -1.0}]})


# --- loading: exchange, then snapshot ------------------------------------------------------------------


def _binance(keys: bool, fetch: Any) -> ccxt.Exchange:
    exchange = ccxt.binanceusdm({"apiKey": "k", "secret": "s"} if keys else {})
    exchange.fetch_leverage_tiers = fetch  # no network: the instance method is replaced
    return exchange


def _raises(exc: Exception) -> Any:
    def fetch(symbols: Any = None, params: Any = None) -> Any:
        raise exc

    return fetch


def test_no_keys_uses_the_snapshot_without_calling() -> None:
    loaded = load_leverage_tiers(_binance(False, _raises(AssertionError("called"))), ["BTC/USDT:USDT"])
    assert loaded.source == "snapshot"
    assert loaded.snapshot_symbols == ("BTC/USDT:USDT",)
    assert loaded.snapshot_as_of == load_snapshot().as_of
    assert loaded.fallback_reason and "API keys" in loaded.fallback_reason
    assert loaded.tiers["BTC/USDT:USDT"] == load_snapshot().tiers["BTC/USDT:USDT"]


@pytest.mark.parametrize(
    "error", [ccxt.AuthenticationError("bad key"), ccxt.PermissionDenied("no"), ccxt.NotSupported("nope")]
)
def test_refusals_fall_back_to_the_snapshot(error: Exception) -> None:
    loaded = load_leverage_tiers(_binance(True, _raises(error)))
    assert loaded.source == "snapshot"
    assert set(loaded.tiers) == set(load_snapshot().tiers)
    assert loaded.fallback_reason and type(error).__name__ in loaded.fallback_reason


def test_other_exchange_errors_raise() -> None:
    with pytest.raises(ExchangeError, match="fetch_leverage_tiers"):
        load_leverage_tiers(_binance(True, _raises(ccxt.NetworkError("timeout"))))


def test_fetched_tiers_win_and_missing_symbols_come_from_the_snapshot() -> None:
    def fetch(symbols: Any = None, params: Any = None) -> Any:
        return {"BTC/USDT:USDT": CCXT_BTC}

    loaded = load_leverage_tiers(_binance(True, fetch), ["BTC/USDT:USDT"])
    assert loaded.source == "exchange" and loaded.fallback_reason is None
    assert loaded.tiers["BTC/USDT:USDT"][1].maintenance_amount == 50
    mixed = load_leverage_tiers(_binance(True, fetch), ["BTC/USDT:USDT", "ETH/USDT:USDT", "NOPE/USDT:USDT"])
    assert mixed.source == "mixed"
    assert mixed.snapshot_symbols == ("ETH/USDT:USDT",)
    assert "NOPE/USDT:USDT" not in mixed.tiers
    assert mixed.fallback_reason and "ETH/USDT:USDT" in mixed.fallback_reason


def test_inconsistent_fetched_tables_are_reported() -> None:
    bad = [CCXT_BTC[0], {**CCXT_BTC[1], "info": {**CCXT_BTC[1]["info"], "cum": "49.0"}}]

    def fetch(symbols: Any = None, params: Any = None) -> Any:
        return {"BTC/USDT:USDT": bad}

    loaded = load_leverage_tiers(_binance(True, fetch), ["BTC/USDT:USDT"])
    assert "BTC/USDT:USDT" in loaded.problems


def test_non_binance_without_support_has_no_fallback() -> None:
    exchange = ccxt.kraken()
    loaded = load_leverage_tiers(exchange, ["BTC/USD:USD"])
    assert loaded.source == "none" and loaded.tiers == {}
    assert loaded.fallback_reason and "fetchLeverageTiers" in loaded.fallback_reason


class _AsyncExchange:
    id = "binanceusdm"
    has = {"fetchLeverageTiers": True}  # noqa: RUF012

    def __init__(self, result: Any) -> None:
        self.result = result

    def check_required_credentials(self, error: bool = True) -> bool:
        return True

    async def fetch_leverage_tiers(self, symbols: Any = None, params: Any = None) -> Any:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_async_loader() -> None:
    ok = asyncio.run(aload_leverage_tiers(_AsyncExchange({"BTC/USDT:USDT": CCXT_BTC}), ["BTC/USDT:USDT"]))
    assert ok.source == "exchange" and len(ok.tiers["BTC/USDT:USDT"]) == 3
    refused = asyncio.run(
        aload_leverage_tiers(_AsyncExchange(ccxt.AuthenticationError("x")), ["ETH/USDT:USDT"])
    )
    assert refused.source == "snapshot" and "ETH/USDT:USDT" in refused.tiers
    with pytest.raises(ExchangeError):
        asyncio.run(aload_leverage_tiers(_AsyncExchange(ccxt.ExchangeNotAvailable("down")), None))


def test_snapshot_tiers_feed_the_calculator() -> None:
    snap = load_snapshot()
    report = assess_positions(
        [_btc(contracts=0.5, entryPrice=60_000.0, markPrice=58_000.0, marginMode="isolated", leverage=20.0)],
        None,
        snap.tiers,
        "binanceusdm",
    )
    row = report.positions[0]
    # 30k notional: bracket 1 (0.4 %); wallet = 30k / 20 = 1,500
    assert row.tier is not None and row.tier.tier == 1
    assert row.liquidation_price == pytest.approx((1_500.0 - 0.5 * 60_000.0) / (0.5 * 0.004 - 0.5))
    assert row.status == "critical"
