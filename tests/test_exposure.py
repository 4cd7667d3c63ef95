"""Exposure per account and fleet-wide: leverage, netting per base asset, staleness, currencies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tradeguard.adapters.markets import BaseAssetResolver
from tradeguard.core.events import Event, Position
from tradeguard.core.exposure import (
    ExposureConfig,
    VenueRef,
    VenueState,
    aggregate_exposure,
    settle_from_symbol,
    venue_states,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
RESOLVER = BaseAssetResolver(
    {
        "bitmex": {
            "BTC/USD:BTC": {
                "id": "XBTUSD",
                "symbol": "BTC/USD:BTC",
                "base": "BTC",
                "quote": "USD",
                "settle": "BTC",
            },
            "ETH/USD:BTC": {
                "id": "ETHUSD",
                "symbol": "ETH/USD:BTC",
                "base": "ETH",
                "quote": "USD",
                "settle": "BTC",
            },
        }
    }
)


def pos(symbol: str, side: str, notional: float | None = None, **kw: Any) -> Position:
    return Position(symbol=symbol, side=side, contracts=kw.pop("contracts", 1.0), notional=notional, **kw)


def venue(
    exchange: str,
    equity: float | None,
    *positions: Position,
    account: str = "main",
    age_s: float = 0.0,
    **kw: Any,
) -> VenueState:
    return VenueState(
        account=account,
        exchange=exchange,
        last_seen=NOW - timedelta(seconds=age_s),
        total_equity=equity,
        positions=positions,
        **kw,
    )


def report(*states: VenueState, **kw: Any):
    settle = kw.pop("settle_currency", RESOLVER.settle_currency)
    return aggregate_exposure(states, RESOLVER, NOW, kw.pop("config", None), settle_currency=settle, **kw)


def test_two_bots_each_3x_of_the_fleet_equity_are_6x_together() -> None:
    # each bot sizes 3x against the fleet's 10k (what its own view says: leverage 3), in correlated assets
    r = report(
        venue("binance", 5_000, pos("BTC/USDT:USDT", "long", 30_000, leverage=3)),
        venue("bybit", 5_000, pos("ETH/USDT:USDT", "long", 30_000, leverage=3)),
    )
    assert r.fleet.total_equity == 10_000
    assert r.fleet.gross_notional == 60_000
    assert r.fleet.leverage == pytest.approx(6.0)
    assert r.fleet.exchanges["binance"].leverage == pytest.approx(6.0)
    assert set(r.fleet.assets) == {"BTC", "ETH"}
    assert r.fleet.assets["BTC"].net_pct_of_equity == pytest.approx(300.0)
    assert r.fleet.concentration_pct == pytest.approx(50.0)
    assert r.fleet.complete


def test_leverage_is_gross_over_total_equity_not_a_sum_of_leverages() -> None:
    r = report(
        venue("binance", 10_000, pos("BTC/USDT:USDT", "long", 30_000)),
        venue("bybit", 10_000, pos("ETH/USDT:USDT", "long", 30_000)),
    )
    assert r.fleet.exchanges["binance"].leverage == pytest.approx(3.0)
    assert r.fleet.exchanges["bybit"].leverage == pytest.approx(3.0)
    assert r.fleet.leverage == pytest.approx(3.0)


def test_btc_perp_spot_and_bitmex_inverse_net_into_btc() -> None:
    r = report(
        venue("binanceusdm", 10_000, pos("BTC/USDT:USDT", "long", 20_000, markPrice=50_000)),
        venue("coinbase", 10_000, pos("BTC-USD", "long", 5_000)),
        # bitmex reports the inverse contract's notional in BTC: 0.2 BTC x 50k = 10k USD
        venue("bitmex", 10_000, pos("XBTUSD", "short", 0.2, contracts=10_000, markPrice=50_000)),
    )
    assert list(r.fleet.assets) == ["BTC"]
    btc = r.fleet.assets["BTC"]
    assert btc.long_notional == pytest.approx(25_000)
    assert btc.short_notional == pytest.approx(10_000)
    assert btc.net_notional == pytest.approx(15_000)
    assert btc.symbols == ("BTC-USD", "BTC/USDT:USDT", "XBTUSD")
    assert r.fleet.gross_notional == pytest.approx(35_000)
    assert r.fleet.net_notional == pytest.approx(15_000)


def test_shorts_net_against_longs_and_concentration_uses_the_net() -> None:
    r = report(
        venue("a", 10_000, pos("BTC/USDT:USDT", "long", 30_000)),
        venue("b", 10_000, pos("BTC/USDT:USDT", "short", 20_000), pos("ETH/USDT:USDT", "long", 10_000)),
    )
    assert r.fleet.assets["BTC"].net_notional == pytest.approx(10_000)
    assert r.fleet.assets["BTC"].gross_notional == pytest.approx(50_000)
    assert r.fleet.net_notional == pytest.approx(20_000)
    assert r.fleet.gross_notional == pytest.approx(60_000)
    # largest |net| per asset (BTC 10k, ETH 10k: tie broken by name) over gross 60k
    assert r.fleet.concentration_pct == pytest.approx(100 * 10_000 / 60_000)
    assert r.fleet.concentrated_asset == "BTC"


def test_concentration_of_a_one_asset_book_is_100_and_of_a_hedged_book_0() -> None:
    one = report(venue("a", 1_000, pos("BTC/USDT:USDT", "long", 3_000), pos("BTC/USDC:USDC", "long", 1_000)))
    assert one.fleet.concentration_pct == pytest.approx(100.0)
    hedged = report(venue("a", 1_000, pos("BTC/USDT:USDT", "long", 3_000), pos("BTC-USD", "short", 3_000)))
    assert hedged.fleet.concentration_pct == pytest.approx(0.0)
    assert hedged.fleet.leverage == pytest.approx(6.0)
    empty = report(venue("a", 1_000))
    assert empty.fleet.concentration_pct is None
    assert empty.fleet.leverage == 0.0


def test_assets_sorted_by_absolute_net_and_percent_of_equity() -> None:
    r = report(
        venue("a", 10_000, pos("ETH/USDT:USDT", "short", 25_000), pos("BTC/USDT:USDT", "long", 5_000)),
    )
    assert list(r.fleet.assets) == ["ETH", "BTC"]
    assert r.fleet.assets["ETH"].net_pct_of_equity == pytest.approx(-250.0)
    assert r.fleet.concentration_pct == pytest.approx(100 * 25_000 / 30_000)


def test_stale_exchange_is_excluded_but_listed() -> None:
    states = (
        venue("binance", 10_000, pos("BTC/USDT:USDT", "long", 30_000), age_s=10),
        venue("bybit", 10_000, pos("BTC/USDT:USDT", "long", 50_000), age_s=121),
    )
    r = report(*states)
    assert r.fleet.total_equity == 10_000
    assert r.fleet.gross_notional == 30_000
    assert r.fleet.leverage == pytest.approx(3.0)
    assert r.fleet.stale == (VenueRef(account="main", exchange="bybit"),)
    row = r.fleet.exchanges["bybit"]
    assert (row.stale, row.included, row.age_s, row.gross_notional) == (True, False, 121.0, 50_000)
    assert (r.fleet.exchanges["binance"].stale, r.fleet.exchanges["binance"].included) == (False, True)


def test_conservative_keeps_counting_a_stale_exchange() -> None:
    states = (
        venue("binance", 10_000, pos("BTC/USDT:USDT", "long", 30_000), age_s=10),
        venue("bybit", 10_000, pos("BTC/USDT:USDT", "long", 50_000), age_s=3_600),
    )
    r = report(*states, config=ExposureConfig(conservative=True))
    assert r.conservative
    assert r.fleet.gross_notional == 80_000
    assert r.fleet.leverage == pytest.approx(4.0)
    assert r.fleet.stale == (VenueRef(account="main", exchange="bybit"),)
    assert r.fleet.exchanges["bybit"].included and r.fleet.exchanges["bybit"].stale


def test_staleness_limit_per_exchange() -> None:
    cfg = ExposureConfig(stale_after_s=120, stale_after_s_by_exchange={"slowex": 600})
    r = report(venue("slowex", 1_000, age_s=300), venue("fastex", 1_000, age_s=300), config=cfg)
    assert [ref.exchange for ref in r.fleet.stale] == ["fastex"]
    assert report(venue("x", 1_000, age_s=120)).fleet.stale == ()  # at the limit: fresh


def test_accounts_are_reported_separately_and_summed_in_the_fleet() -> None:
    r = report(
        venue("binance", 10_000, pos("BTC/USDT:USDT", "long", 20_000), account="alice"),
        venue("binance", 5_000, pos("BTC/USDT:USDT", "short", 5_000), account="bob"),
        venue("okx", 5_000, pos("SOL/USDT:USDT", "long", 5_000), account="bob", age_s=999),
    )
    assert list(r.accounts) == ["alice", "bob"]
    assert r.accounts["alice"].leverage == pytest.approx(2.0)
    assert r.accounts["bob"].gross_notional == pytest.approx(5_000)
    assert r.accounts["bob"].stale == (VenueRef(account="bob", exchange="okx"),)
    assert r.accounts["bob"].exchanges["binance"].account == "bob"
    fleet = r.fleet
    assert fleet.total_equity == 15_000
    assert fleet.assets["BTC"].net_notional == pytest.approx(15_000)
    assert fleet.exchanges["binance"].account is None
    assert fleet.exchanges["binance"].equity == 15_000
    assert fleet.exchanges["binance"].gross_notional == 25_000
    assert "SOL" not in fleet.assets


def test_unrealized_pnl_in_settle_currency_converted() -> None:
    r = report(
        venue("binance", 10_000, pos("BTC/USDT:USDT", "long", 10_000, unrealizedPnl=150.0)),
        venue("bitmex", 10_000, pos("XBTUSD", "long", 0.1, markPrice=60_000, unrealizedPnl=-0.01)),
    )
    assert r.fleet.unrealized_pnl == pytest.approx(150.0 - 600.0)
    assert r.fleet.exchanges["bitmex"].unrealized_pnl == pytest.approx(-600.0)


def test_inverse_without_reported_notional_uses_quote_sized_contracts() -> None:
    # 5_000 contracts of 1 USD; contracts x size x mark would be nonsense for an inverse contract
    r = report(venue("bitmex", 10_000, pos("XBTUSD", "short", contracts=5_000, markPrice=60_000)))
    assert r.fleet.assets["BTC"].net_notional == pytest.approx(-5_000)


def test_linear_without_reported_notional_uses_mark_price() -> None:
    r = report(
        venue("x", 10_000, pos("ETH/USDT:USDT", "long", contracts=2, contractSize=0.5, markPrice=3_000))
    )
    assert r.fleet.gross_notional == pytest.approx(3_000)


def test_unpriceable_positions_are_listed_and_make_the_report_incomplete() -> None:
    quanto = pos("ETHUSD", "long", 0.5, markPrice=3_000)  # ETH/USD:BTC: notional in BTC, mark in USD per ETH
    r = report(venue("bitmex", 10_000, quanto, pos("XBTUSD", "long", 0.1, markPrice=60_000)))
    assert r.fleet.exchanges["bitmex"].unpriced_symbols == ("ETHUSD",)
    assert r.fleet.exchanges["bitmex"].positions == 2
    assert "ETH" not in r.fleet.assets
    assert not r.fleet.complete
    priced = report(venue("bitmex", 10_000, quanto), prices_usd={"BTC": 60_000})
    assert priced.fleet.assets["ETH"].net_notional == pytest.approx(30_000)
    assert priced.fleet.complete


def test_equity_in_a_coin_uses_prices_or_a_mark_price_of_that_coin() -> None:
    marked = report(venue("bitmex", 0.5, pos("XBTUSD", "long", 0.5, markPrice=60_000), equity_currency="BTC"))
    assert marked.fleet.total_equity == pytest.approx(30_000)
    assert marked.fleet.leverage == pytest.approx(1.0)
    priced = report(venue("deribit", 2.0, equity_currency="ETH"), prices_usd={"eth": 3_000})
    assert priced.fleet.total_equity == pytest.approx(6_000)
    unknown = report(venue("deribit", 2.0, equity_currency="ETH"))
    assert unknown.fleet.exchanges["deribit"].equity is None
    assert not unknown.fleet.complete


def test_missing_equity_leaves_leverage_unknown() -> None:
    r = report(venue("a", None, pos("BTC/USDT:USDT", "long", 1_000)))
    assert r.fleet.leverage is None
    assert r.fleet.assets["BTC"].net_pct_of_equity is None
    assert not r.fleet.complete


def test_empty_positions_are_ignored() -> None:
    r = report(venue("a", 1_000, pos("BTC/USDT:USDT", "long", 0.0, contracts=0)))
    assert r.fleet.assets == {}
    assert r.fleet.exchanges["a"].positions == 0


def test_default_settle_currency_reads_the_unified_symbol() -> None:
    assert settle_from_symbol("BTC/USD:BTC") == "BTC"
    assert settle_from_symbol("BTC/USD:BTC-240628") == "BTC"
    assert settle_from_symbol("ETH/USDT") == "USDT"
    assert settle_from_symbol("XBTUSD") is None
    # without a metadata settle resolver, the unified inverse symbol is still converted by mark
    r = aggregate_exposure(
        [venue("bitmex", 10_000, pos("BTC/USD:BTC", "long", 0.1, markPrice=50_000))], RESOLVER, NOW
    )
    assert r.fleet.gross_notional == pytest.approx(5_000)


def test_duplicate_venue_and_naive_time_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        report(venue("a", 1.0), venue("a", 2.0))
    with pytest.raises(ValueError, match="timezone"):
        aggregate_exposure([], RESOLVER, datetime(2024, 1, 1))


def test_report_is_frozen_and_json_ready() -> None:
    r = report(venue("a", 1_000, pos("BTC/USDT:USDT", "long", 500)), venue("b", 1_000, age_s=500))
    doc = json.loads(r.model_dump_json())
    assert doc["fleet"]["stale"] == [{"account": "main", "exchange": "b"}]
    assert doc["fleet"]["assets"]["BTC"]["net_notional"] == 500
    with pytest.raises(ValueError):
        r.fleet.total_equity = 0  # type: ignore[misc]


def test_venue_states_from_the_latest_events() -> None:
    def ev(i: int, type_: str, ts: datetime, payload: dict[str, Any], exchange: str = "binance") -> Event:
        return Event.model_validate(
            {"id": f"e{i}", "type": type_, "account": "main", "exchange": exchange, "bot": "b1", "ts": ts,
             "payload": payload}
        )  # fmt: skip

    p = {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 1, "notional": 1_000}
    events = [
        ev(1, "equity", NOW - timedelta(minutes=5), {"total_equity": 900, "currency": "USDT"}),
        ev(2, "equity", NOW - timedelta(minutes=1), {"total_equity": 1_000, "currency": "USDT"}),
        ev(3, "positions", NOW - timedelta(minutes=3), {"positions": [p]}),
        ev(4, "equity", NOW - timedelta(minutes=9), {"total_equity": 1, "currency": "USDT"}),  # late, older
        ev(5, "strategy_return", NOW, {"strategy": "s", "period_end": NOW, "return": 0.0}),
        ev(6, "positions", NOW - timedelta(hours=1), {"positions": []}, exchange="bybit"),
    ]
    states = {s.exchange: s for s in venue_states(events)}
    b = states["binance"]
    assert (b.total_equity, b.equity_currency, b.equity_as_of) == (1_000, "USDT", NOW - timedelta(minutes=1))
    assert b.positions_as_of == NOW - timedelta(minutes=3)
    assert b.last_seen == NOW
    assert states["bybit"].total_equity is None
    r = aggregate_exposure(states.values(), RESOLVER, NOW)
    assert r.fleet.leverage == pytest.approx(1.0)
    assert r.fleet.stale == (VenueRef(account="main", exchange="bybit"),)


def test_native_ids_resolve_against_their_own_exchange() -> None:
    def m(symbol: str, base: str, settle: str | None) -> dict[str, Any]:
        return {"id": "ETHUSD", "symbol": symbol, "base": base, "quote": "USD", "settle": settle}

    resolver = BaseAssetResolver(
        {
            "bitmex": {"ETH/USD:BTC": m("ETH/USD:BTC", "ETH", "BTC")},
            "bitstamp": {"ETH/USD": m("ETH/USD", "ETH", None)},
        }
    )
    r = aggregate_exposure(
        [
            venue("bitmex", 1_000, pos("ETHUSD", "long", 0.1)),
            venue("bitstamp", 1_000, pos("ETHUSD", "long", 500)),
        ],
        resolver,
        NOW,
        settle_currency=resolver.settle_currency,
    )
    assert r.fleet.exchanges["bitmex"].unpriced_symbols == ("ETHUSD",)  # quanto: settles in BTC, no BTC price
    assert r.fleet.exchanges["bitstamp"].gross_notional == 500  # spot: in USD
