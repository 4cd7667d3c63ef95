"""Funding rates of a pair's perpetual swap through ccxt's async client.

``fetch_funding_rate_history(perp, since, limit, {"until": now})`` over the last ``lookback_days`` (on
binance: markets from ``GET /fapi/v1/exchangeInfo``, rates from ``GET /fapi/v1/fundingRate``). Only the
swap markets are loaded (``options["fetchMarkets"]["types"]`` narrowed to ``linear``/``swap``), so no spot
or inverse host is contacted. A rate is fixed at settlement, so it is available at its funding time, as in
the Freqtrade funding files. Temporary ccxt errors (network, timeout, rate limit, 5xx) are retried with
the policy's backoff; any other ccxt error fails at once. Failures raise SourceError.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pandas as pd

from tradeguard.adapters.exchange_download import brief_error, configure_exchange, exchange_class
from tradeguard.adapters.external_files import make_series
from tradeguard.adapters.sources.base import SourceError
from tradeguard.adapters.sources.http import HttpPolicy
from tradeguard.adapters.status import SourceStatus
from tradeguard.core.external import ExternalSeries
from tradeguard.errors import InputError

log = logging.getLogger(__name__)

# Names of perpetual-swap market types in ccxt's options["fetchMarkets"]["types"] (binance/bybit: linear,
# okx: swap).
_SWAP_TYPES = ("linear", "swap")


def make_async_exchange(
    exchange_id: str, *, api_url: str | None = None, config: Mapping[str, Any] | None = None
) -> ccxt_async.Exchange:
    """An async ccxt client that loads only swap markets; ``api_url`` rebases every API URL (for fakes).

    ``config`` is passed to the ccxt constructor (``timeout`` in ms, ``enableRateLimit``, ``options``...).
    """
    exchange = exchange_class(exchange_id, ccxt_async)({"enableRateLimit": True, **(config or {})})
    configure_exchange(exchange, ("swap",), api_url)
    fetch_markets = exchange.options.get("fetchMarkets")
    if isinstance(fetch_markets, dict) and isinstance(fetch_markets.get("types"), list):
        exchange.options["fetchMarkets"] = {
            **fetch_markets,
            "types": [t for t in fetch_markets["types"] if t in _SWAP_TYPES],
        }
    return exchange


def perpetual_symbol(pair: str) -> str:
    """The pair's linear perpetual in ccxt notation: ``BTC/USDT`` -> ``BTC/USDT:USDT`` (kept if given)."""
    if ":" in pair:
        return pair
    base, sep, quote = pair.partition("/")
    if not sep or not base or not quote:
        raise InputError(f"invalid pair {pair!r}: expected BASE/QUOTE, e.g. BTC/USDT")
    return f"{pair}:{quote}"


class FundingRateFetcher:
    """Funding rates of ``pair``'s perpetual on ``exchange_id`` over the last ``lookback_days``.

    ``api_url`` (default: ccxt's real endpoints, on binance ``https://fapi.binance.com``) rebases the
    exchange's URLs; ``exchange`` injects a ready async client instead (its owner closes it). The policy's
    ``timeout_s`` becomes ccxt's request timeout for a client built here.
    """

    name = "funding_rate"

    def __init__(
        self,
        pair: str,
        exchange_id: str = "binance",
        *,
        api_url: str | None = None,
        lookback_days: float = 7.0,
        limit: int = 200,
        policy: HttpPolicy | None = None,
        config: Mapping[str, Any] | None = None,
        exchange: ccxt_async.Exchange | None = None,
    ) -> None:
        if lookback_days <= 0:
            raise ValueError(f"lookback_days must be positive, got {lookback_days}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.symbol = perpetual_symbol(pair)
        self.lookback = timedelta(days=lookback_days)
        self.limit = limit
        self.policy = policy or HttpPolicy()
        self.status = SourceStatus(self.name)
        self._owns_exchange = exchange is None
        settings = {"timeout": int(self.policy.timeout_s * 1000), **(config or {})}
        self.exchange = exchange or make_async_exchange(exchange_id, api_url=api_url, config=settings)

    async def fetch(self, now: datetime) -> ExternalSeries:
        """Rates with funding time in ``[now - lookback_days, now]``, each available at its funding time."""
        now_ms = int(now.timestamp() * 1000)
        since_ms = int((now - self.lookback).timestamp() * 1000)
        rows = await self._history(since_ms, now_ms)
        points = sorted(
            {
                int(row["timestamp"]): float(row["fundingRate"])
                for row in rows
                if row.get("timestamp") is not None and row.get("fundingRate") is not None
            }.items()
        )
        if not points:
            raise SourceError(f"funding_rate: {self.exchange.id} returned no funding rates for {self.symbol}")
        frame = pd.DataFrame(points, columns=["t", "v"])
        funded = pd.to_datetime(frame["t"], unit="ms", utc=True)
        return make_series(self.name, funded, funded, frame["v"])

    async def close(self) -> None:
        """Close the exchange client's connections if this fetcher created it."""
        if self._owns_exchange:
            await self.exchange.close()

    async def _history(self, since_ms: int, now_ms: int) -> list[dict[str, Any]]:
        what = f"funding_rate: {self.exchange.id} {self.symbol}"
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.exchange.fetch_funding_rate_history(
                    self.symbol, since=since_ms, limit=self.limit, params={"until": now_ms}
                )
            except ccxt.NetworkError as exc:
                if attempt >= self.policy.attempts:
                    raise SourceError(
                        f"{what} failed after {attempt} attempt(s): {brief_error(exc, 300)}"
                    ) from exc
                delay = self.policy.backoff.delay(attempt - 1)
                log.warning("%s: %s; retry %d in %.1fs", what, brief_error(exc, 300), attempt, delay)
                await self.policy.sleep(delay)
            except ccxt.BaseError as exc:
                raise SourceError(f"{what} failed: {brief_error(exc, 300)}") from exc
