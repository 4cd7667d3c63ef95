"""What the order guard needs from one exchange besides its order book, through ccxt, cached.

- market metadata (`load_markets`): is the instrument listed, its precision and limits; precision is applied
  by ccxt itself (`amount_to_precision` truncates, `price_to_precision` rounds to the tick);
- hourly closes of a symbol (`fetch_ohlcv(symbol, "1h")`) for the sigma of the price anomaly check;
- daily closes of assets against `quote` (`fetch_ohlcv(f"{asset}/{quote}", "1d")`) for the VaR scenarios.

Everything is cached with a time to live and refetched (once, however many checks wait) when it expires; a
failed refresh raises `ExchangeError` and keeps nothing stale as if it were fresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import ccxt
import numpy as np
import pandas as pd

from tradeguard.adapters.exchange_download import brief_error
from tradeguard.errors import ExchangeError, InputError

T = TypeVar("T")
DAY_MS = 86_400_000
STABLECOINS = frozenset({"USDT", "USDC", "BUSD", "FDUSD", "DAI", "TUSD", "USD", "USDE"})


@dataclass(frozen=True, slots=True)
class TTLs:
    markets_s: float = 3600.0
    hourly_s: float = 300.0
    daily_s: float = 3600.0
    hourly_bars: int = 169  # 7 days of 1h returns
    daily_bars: int = 91  # 90 daily returns


class ExchangeMarketData:
    """Cached metadata and price history of one exchange (`exchange`: a ccxt async instance)."""

    def __init__(
        self,
        exchange: Any,
        *,
        quote: str = "USDT",
        ttls: TTLs = TTLs(),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exchange = exchange
        self.quote = quote
        self.ttls = ttls
        self._monotonic = monotonic
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    @property
    def name(self) -> str:
        return str(self.exchange.id)

    async def _cached(self, key: tuple[str, ...], ttl: float, load: Callable[[], Awaitable[T]]) -> T:
        hit = self._cache.get(key)
        if hit is not None and self._monotonic() - hit[0] < ttl:
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._cache.get(key)
            if hit is not None and self._monotonic() - hit[0] < ttl:
                return hit[1]
            try:
                value = await load()
            except ccxt.BaseError as exc:
                raise ExchangeError(f"{self.name}: {brief_error(exc)}") from exc
            self._cache[key] = (self._monotonic(), value)
            return value

    # --- instruments -----------------------------------------------------------------------------------

    async def markets(self) -> dict[str, Any]:
        """The exchange's ccxt markets, reloaded every `ttls.markets_s`."""

        async def load() -> dict[str, Any]:
            return await self.exchange.load_markets(reload=True)

        return await self._cached(("markets",), self.ttls.markets_s, load)

    async def market(self, symbol: str) -> dict[str, Any] | None:
        """The ccxt market of `symbol` (None when the exchange does not list it)."""
        return (await self.markets()).get(symbol)

    def amount_to_precision(self, symbol: str, amount: float) -> float:
        """`amount` truncated to the market's amount precision (0 when below one step)."""
        try:  # 12 significant digits first: 0.03 / 6 is 0.004999..., which must not truncate to 0.00499
            return float(self.exchange.amount_to_precision(symbol, float(f"{amount:.12g}")))
        except ccxt.InvalidOrder:
            return 0.0

    def price_on_tick(self, symbol: str, price: float) -> bool:
        """Whether `price` is a multiple of the market's price tick."""
        return float(self.exchange.price_to_precision(symbol, price)) == price

    # --- prices ----------------------------------------------------------------------------------------

    async def hourly_closes(self, symbol: str) -> np.ndarray:
        """The last `ttls.hourly_bars` hourly closes of `symbol` (oldest first)."""

        async def load() -> np.ndarray:
            rows = await self.exchange.fetch_ohlcv(symbol, "1h", limit=self.ttls.hourly_bars)
            return np.array([r[4] for r in rows], dtype=float)

        return await self._cached(("1h", symbol), self.ttls.hourly_s, load)

    async def daily_closes(self, assets: Iterable[str]) -> pd.DataFrame:
        """Daily closes of each asset in `quote` (UTC date index, one column per asset; stablecoins = 1)."""
        columns: dict[str, pd.Series] = {}
        for asset in sorted(set(assets)):
            if asset in STABLECOINS:
                continue
            columns[asset] = await self._daily(asset)
        frame = pd.DataFrame(columns).sort_index()
        for asset in assets:
            if asset in STABLECOINS:
                frame[asset] = 1.0
        return frame

    async def _daily(self, asset: str) -> pd.Series:
        symbol = f"{asset}/{self.quote}"

        async def load() -> pd.Series:
            if await self.market(symbol) is None:
                raise InputError(f"{self.name} lists no {symbol} market for {asset}'s daily returns")
            rows = await self.exchange.fetch_ohlcv(symbol, "1d", limit=self.ttls.daily_bars + 2)
            closed = self.exchange.milliseconds() - DAY_MS
            rows = [r for r in rows if r[0] <= closed]  # today's candle is still forming
            index = pd.to_datetime([r[0] for r in rows], unit="ms", utc=True)
            return pd.Series([float(r[4]) for r in rows], index=index, name=asset)

        return await self._cached(("1d", asset), self.ttls.daily_s, load)

    async def close(self) -> None:
        await self.exchange.close()
