"""Map an exchange's symbols (ccxt unified or exchange-native ids) to their unified base asset.

Built from ccxt market metadata (`exchange.load_markets()` — loading is the caller's job, this module does no
I/O), so `BTC/USDT:USDT` (binance), `PF_XBTUSD` (kraken futures, unified `BTC/USD:USD`) and `XBTUSD`
(bitmex, unified `BTC/USD:BTC`) all resolve to `BTC`. Resolution order for a symbol:

1. the markets of the named exchange (if given), by unified symbol, then by native id (case-insensitive);
2. the unified symbols of every registered exchange, then their native ids (registration order; first wins);
3. parsing, when no metadata knows the symbol: `BASE/QUOTE[:SETTLE][-EXPIRY...]` (unified), or a native id
   split on `-`/`_` (`BTC-USD`, `BTC_USDT`, `BTC-USD-SWAP`, `PF_XBTUSD`, `BTCUSD_PERP`; kraken futures
   prefixes, `PERP`/`SWAP` and date tokens dropped), or `BASEQUOTE` with a known quote suffix (`XBTUSD`).

Aliases: metadata bases are already unified by ccxt, so only the global aliases (`XBT`/`XXBT` → `BTC`,
`BCHSV` → `BSV`, ccxt's own defaults) are applied to them — re-applying an exchange's `commonCurrencies` could
map twice (kraken: `REPV2` → `REP` → `REPV1`). A base parsed from a *native* id gets the exchange's
`commonCurrencies` first, then the global aliases; a base parsed from a *unified* symbol only the global ones.
An unresolvable symbol resolves to itself, upper-cased, so its exposure is still counted (on its own).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_ALIASES: Mapping[str, str] = {"XBT": "BTC", "XXBT": "BTC", "BCHSV": "BSV"}
KNOWN_QUOTES: tuple[str, ...] = (
    "FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDE", "USD", "DAI", "EUR", "GBP", "JPY", "TRY", "BRL",
    "BTC", "XBT", "ETH", "BNB",
)  # fmt: skip
_FUTURES_PREFIXES = frozenset({"PF", "PI", "FI", "FF", "FV", "IN", "RR"})  # kraken futures id prefixes
_NOISE = frozenset({"PERP", "SWAP", "FUTURES", "SPOT"})
_DATE = re.compile(r"^\d+$|^\d{1,2}[A-Z]{3}\d{2}$")  # 240628, 29MAR24


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """What the resolver knows of one symbol. `settle` is None for spot markets (amounts are in `quote`)."""

    symbol: str
    base: str
    quote: str | None
    settle: str | None
    from_metadata: bool


class BaseAssetResolver:
    """Symbol or native id → unified base asset, from ccxt markets of one or more exchanges.

    `markets` maps an exchange id to its ccxt `markets` dict (`{unified symbol: market}`, as set by
    `load_markets()`); `common_currencies` maps an exchange id to its ccxt `commonCurrencies`; `aliases`
    add to (or override) `DEFAULT_ALIASES`; `quotes` are the suffixes tried on `BASEQUOTE` ids, longest first.
    Calling the resolver (`resolver(symbol)`) is `base(symbol)`, so it can be passed where the core expects a
    `base_asset(symbol) -> str` function.
    """

    def __init__(
        self,
        markets: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        common_currencies: Mapping[str, Mapping[str, str]] | None = None,
        *,
        aliases: Mapping[str, str] | None = None,
        quotes: Iterable[str] = KNOWN_QUOTES,
    ) -> None:
        self._aliases = {k.upper(): v.upper() for k, v in {**DEFAULT_ALIASES, **(aliases or {})}.items()}
        self._quotes = tuple(sorted({q.upper() for q in quotes}, key=len, reverse=True))
        common = common_currencies or {}
        self._common = {ex: {k.upper(): v for k, v in cc.items()} for ex, cc in common.items()}
        self._by_symbol: dict[str, dict[str, MarketInfo]] = {}
        self._by_id: dict[str, dict[str, MarketInfo]] = {}
        for exchange, mk in (markets or {}).items():
            self._index(exchange, mk)

    @classmethod
    def from_exchanges(cls, *exchanges: Any, aliases: Mapping[str, str] | None = None) -> BaseAssetResolver:
        """From ccxt exchange objects: their `id`, `markets` (None when not loaded) and `commonCurrencies`."""
        markets = {ex.id: ex.markets or {} for ex in exchanges}
        common = {ex.id: dict(getattr(ex, "commonCurrencies", None) or {}) for ex in exchanges}
        return cls(markets, common, aliases=aliases)

    def _index(self, exchange: str, markets: Mapping[str, Mapping[str, Any]]) -> None:
        by_symbol = self._by_symbol.setdefault(exchange, {})
        by_id = self._by_id.setdefault(exchange, {})
        for key, m in markets.items():
            symbol = m.get("symbol") or key
            base = m.get("base")
            if not base:
                continue
            info = MarketInfo(
                symbol=symbol,
                base=self._alias(base),
                quote=self._alias_opt(m.get("quote")),
                settle=self._alias_opt(m.get("settle")),
                from_metadata=True,
            )
            by_symbol.setdefault(symbol, info)
            if key != symbol:
                by_symbol.setdefault(key, info)
            if m.get("id"):
                by_id.setdefault(str(m["id"]).upper(), info)

    def _alias(self, code: str) -> str:
        code = code.upper()
        return self._aliases.get(code, code)

    def _alias_opt(self, code: Any) -> str | None:
        return self._alias(str(code)) if code else None

    def market(self, symbol: str, exchange: str | None = None) -> MarketInfo:
        """Metadata for `symbol` (unified or native id), else what parsing the symbol gives."""
        symbol = symbol.strip()
        if exchange in self._by_symbol:
            hit = self._by_symbol[exchange].get(symbol) or self._by_id[exchange].get(symbol.upper())
            if hit is not None:
                return hit
        for index, key in ((self._by_symbol, symbol), (self._by_id, symbol.upper())):
            for ex, markets in index.items():
                if ex != exchange and key in markets:
                    return markets[key]
        return self._parse(symbol, exchange)

    def base(self, symbol: str, exchange: str | None = None) -> str:
        """Unified base asset of `symbol` (`BTC` for `BTC/USDT:USDT`, `BTC-USD`, `XBTUSD`, `PF_XBTUSD`)."""
        return self.market(symbol, exchange).base

    __call__ = base

    def settle_currency(self, symbol: str, exchange: str | None = None) -> str | None:
        """Currency a position's notional and PnL are in: the settle currency, or the quote for spot."""
        info = self.market(symbol, exchange)
        return info.settle or info.quote

    def for_exchange(self, exchange: str) -> Callable[[str], str]:
        """A one-argument `base_asset` that looks in `exchange`'s markets first."""
        return lambda symbol: self.base(symbol, exchange)

    def _split_quote(self, code: str) -> tuple[str, str | None]:
        """`BASEQUOTE` → (BASE, QUOTE): the longest known quote suffix leaving a base of 3+ characters
        (`XBTUSD` is XBT/USD, not XB/TUSD), else the longest leaving any base, else (code, None)."""
        splits = [(code[: -len(q)], q) for q in self._quotes if code.endswith(q) and len(code) > len(q)]
        return next((s for s in splits if len(s[0]) >= 3), splits[0] if splits else (code, None))

    def _parse(self, symbol: str, exchange: str | None) -> MarketInfo:
        if "/" in symbol:
            base, _, rest = symbol.partition("/")
            quote, _, settle = rest.partition(":")
            return MarketInfo(
                symbol=symbol,
                base=self._alias(base),
                quote=self._alias_opt(quote.split("-")[0]),
                settle=self._alias_opt(settle.split("-")[0]),
                from_metadata=False,
            )
        tokens = [t for t in re.split(r"[-_]", symbol.upper()) if t]
        if len(tokens) > 1 and tokens[0] in _FUTURES_PREFIXES:
            tokens = tokens[1:]
        tokens = [t for t in tokens if t not in _NOISE and not _DATE.match(t)] or [symbol.upper()]
        quote: str | None = None
        if len(tokens) > 1:
            base, quote = tokens[0], tokens[1]
        else:
            base, quote = self._split_quote(tokens[0])
        native = self._common.get(exchange or "", {})
        base = native.get(base, base)
        if quote is not None:
            quote = self._alias(native.get(quote, quote))
        base = self._alias(base)
        return MarketInfo(symbol=symbol, base=base, quote=quote, settle=None, from_metadata=False)
