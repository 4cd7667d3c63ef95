"""BaseAssetResolver: ccxt market metadata, exchange-native ids, aliases, and parsing without metadata."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from tradeguard.adapters.markets import DEFAULT_ALIASES, BaseAssetResolver


def market(
    symbol: str, id_: str, base: str, quote: str, settle: str | None, *, base_id: str | None = None
) -> dict[str, Any]:
    """A market dict in ccxt's shape (the keys the resolver reads, and a few more)."""
    contract = settle is not None
    return {
        "id": id_,
        "symbol": symbol,
        "base": base,
        "quote": quote,
        "settle": settle,
        "baseId": base_id or base,
        "quoteId": quote,
        "settleId": settle,
        "type": "swap" if contract else "spot",
        "spot": not contract,
        "swap": contract,
        "future": False,
        "option": False,
        "contract": contract,
        "linear": None if not contract else settle == quote,
        "inverse": None if not contract else settle == base,
        "contractSize": 1.0 if contract else None,
        "precision": {"amount": None, "price": None},
        "limits": {},
    }


BINANCEUSDM = {"BTC/USDT:USDT": market("BTC/USDT:USDT", "BTCUSDT", "BTC", "USDT", "USDT")}
BITMEX = {
    "BTC/USD:BTC": market("BTC/USD:BTC", "XBTUSD", "BTC", "USD", "BTC", base_id="XBT"),
    "ETH/USD:BTC": market("ETH/USD:BTC", "ETHUSD", "ETH", "USD", "BTC"),
}
BITFINEX = {"BTC/USD": market("BTC/USD", "tBTCUSD", "BTC", "USD", None)}


@pytest.fixture
def krakenfutures() -> ccxt.Exchange:
    """A real ccxt exchange object, markets set by hand (no network)."""
    ex = ccxt.krakenfutures()
    ex.set_markets([market("BTC/USD:USD", "PF_XBTUSD", "BTC", "USD", "USD", base_id="XBT")])
    return ex


@pytest.fixture
def resolver(krakenfutures: ccxt.Exchange) -> BaseAssetResolver:
    return BaseAssetResolver(
        {
            "binanceusdm": BINANCEUSDM,
            "krakenfutures": krakenfutures.markets,
            "bitmex": BITMEX,
            "bitfinex": BITFINEX,
        }
    )


@pytest.mark.parametrize(
    ("symbol", "exchange"),
    [
        ("BTC/USDT:USDT", "binanceusdm"),
        ("BTCUSDT", "binanceusdm"),
        ("BTC/USD:USD", "krakenfutures"),
        ("PF_XBTUSD", "krakenfutures"),
        ("pf_xbtusd", "krakenfutures"),
        ("XBTUSD", "bitmex"),
        ("BTC/USD:BTC", "bitmex"),
        ("tBTCUSD", "bitfinex"),
        ("XBTUSD", None),
    ],
)
def test_every_venue_spelling_of_bitcoin_resolves_to_btc(
    resolver: BaseAssetResolver, symbol: str, exchange: str | None
) -> None:
    assert resolver.base(symbol, exchange) == "BTC"
    assert resolver.market(symbol, exchange).from_metadata


def test_callable_as_the_cores_base_asset_function(resolver: BaseAssetResolver) -> None:
    assert [resolver(s) for s in ("BTC/USDT:USDT", "PF_XBTUSD", "XBTUSD", "ETHUSD")] == [
        "BTC",
        "BTC",
        "BTC",
        "ETH",
    ]
    assert resolver.for_exchange("bitmex")("ETHUSD") == "ETH"


def test_settle_currency_comes_from_metadata(resolver: BaseAssetResolver) -> None:
    assert resolver.settle_currency("XBTUSD", "bitmex") == "BTC"  # inverse: settles in the base
    assert resolver.settle_currency("ETHUSD", "bitmex") == "BTC"  # quanto
    assert resolver.settle_currency("PF_XBTUSD") == "USD"
    assert resolver.settle_currency("BTCUSDT") == "USDT"
    assert resolver.settle_currency("tBTCUSD") == "USD"  # spot: amounts are in the quote


def test_the_named_exchange_is_searched_first() -> None:
    r = BaseAssetResolver(
        {
            "a": {"X/USD": market("X/USD", "XUSD", "X", "USD", None)},
            "b": {"Y/USD": market("Y/USD", "XUSD", "Y", "USD", None)},
        }
    )
    assert r.base("XUSD") == "X"  # first registered wins without a hint
    assert r.base("XUSD", "b") == "Y"
    assert r.base("XUSD", "unknown") == "X"


def test_a_raw_xbt_base_in_hand_built_metadata_is_aliased() -> None:
    r = BaseAssetResolver({"x": {"XBT/USD": market("XBT/USD", "XBTUSD", "XBT", "USD", None)}})
    assert r.base("XBT/USD") == "BTC"


@pytest.mark.parametrize(
    ("symbol", "base", "quote", "settle"),
    [
        ("BTC/USDT:USDT", "BTC", "USDT", "USDT"),
        ("ETH/USDT", "ETH", "USDT", None),
        ("BTC/USD:BTC-240628", "BTC", "USD", "BTC"),
        ("BTC/USD:BTC-240628-50000-C", "BTC", "USD", "BTC"),
        ("XBT/USD:XBT", "BTC", "USD", "BTC"),
        ("BTC-USD", "BTC", "USD", None),
        ("BTC-USD-SWAP", "BTC", "USD", None),
        ("BTC-PERP", "BTC", None, None),
        ("BTC-29MAR24", "BTC", None, None),
        ("BTC_USDT", "BTC", "USDT", None),
        ("BTCUSD_PERP", "BTC", "USD", None),
        ("BTCUSDT_240628", "BTC", "USDT", None),
        ("XBTUSD", "BTC", "USD", None),  # XBT/USD, not XB/TUSD
        ("BTCTUSD", "BTC", "TUSD", None),
        ("PF_XBTUSD", "BTC", "USD", None),
        ("FI_XBTUSD_240628", "BTC", "USD", None),
        ("ETHBTC", "ETH", "BTC", None),
        ("btcusdt", "BTC", "USDT", None),
        ("OPUSDT", "OP", "USDT", None),
        ("SOMETHING", "SOMETHING", None, None),
    ],
)
def test_parsing_without_metadata(symbol: str, base: str, quote: str | None, settle: str | None) -> None:
    info = BaseAssetResolver().market(symbol)
    assert (info.base, info.quote, info.settle, info.from_metadata) == (base, quote, settle, False)


def test_common_currencies_of_an_unloaded_exchange_apply_to_its_native_ids() -> None:
    kraken = ccxt.kraken()  # markets not loaded: only commonCurrencies is read
    assert kraken.markets is None
    r = BaseAssetResolver.from_exchanges(kraken, ccxt.krakenfutures())
    assert r.base("XDGUSD", "kraken") == "DOGE"
    assert r.base("XBTUSD", "krakenfutures") == "BTC"
    assert r.base("XDGUSD") == "XDG"  # no exchange named: only the global aliases
    # a unified symbol is already unified: kraken's REP -> REPV1 must not be applied to it
    assert r.base("REP/USD", "kraken") == "REP"
    assert r.base("REPUSD", "kraken") == "REPV1"


def test_from_exchanges_reads_loaded_markets(krakenfutures: ccxt.Exchange) -> None:
    r = BaseAssetResolver.from_exchanges(krakenfutures)
    assert r.market("PF_XBTUSD").symbol == "BTC/USD:USD"
    assert r.market("PF_XBTUSD").from_metadata


def test_extra_aliases_add_to_the_defaults() -> None:
    r = BaseAssetResolver(aliases={"WBTC": "BTC"})
    assert r.base("WBTC/USDT") == "BTC"
    assert r.base("XBT/USDT") == "BTC"


def test_default_aliases_include_ccxts_own_defaults() -> None:
    assert ccxt.Exchange().commonCurrencies.items() <= DEFAULT_ALIASES.items()


def test_a_unified_symbol_anywhere_beats_a_native_id_elsewhere() -> None:
    r = BaseAssetResolver(
        {
            "a": {"Z/USD": market("Z/USD", "ETH/USD", "Z", "USD", None)},  # an id that looks unified
            "b": {"ETH/USD": market("ETH/USD", "ETHUSD", "ETH", "USD", None)},
        }
    )
    assert r.base("ETH/USD") == "ETH"
    assert r.base("ETH/USD", "a") == "Z"
