"""BTC dominance (% of the total crypto market cap) from CoinGecko's ``GET {base}/api/v3/global``.

Response: ``{"data": {"active_cryptocurrencies": ..., "market_cap_percentage": {"btc": 52.1, "eth": 17.0,
...}, "updated_at": 1713312000, ...}}``. The endpoint only gives the current value, stamped with
``updated_at`` (Unix seconds): that is both its observation and its publication time — CoinGecko served it
from then on. The fetcher keeps every distinct ``updated_at`` it has seen in memory (at most
``max_history``, oldest dropped first), so the series grows with each fetch that brings a newer value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pandas as pd

from tradeguard.adapters.external_files import make_series
from tradeguard.adapters.sources.base import SourceError
from tradeguard.adapters.sources.http import HttpGetter, HttpPolicy
from tradeguard.adapters.status import SourceStatus
from tradeguard.core.external import ExternalSeries

COINGECKO_URL = "https://api.coingecko.com"


class BtcDominanceFetcher:
    """BTC's share of the crypto market cap in % (0-100), one observation per CoinGecko update."""

    name = "btc_dominance"

    def __init__(
        self,
        base_url: str = COINGECKO_URL,
        *,
        max_history: int = 10_000,
        policy: HttpPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be at least 1, got {max_history}")
        self.url = base_url.rstrip("/") + "/api/v3/global"
        self.max_history = max_history
        self.status = SourceStatus(self.name)
        self._http = HttpGetter(self.name, policy or HttpPolicy(), client)
        self._history: dict[int, float] = {}  # updated_at (s) -> BTC dominance %

    async def fetch(self, now: datetime) -> ExternalSeries:
        """Every value seen so far, the one just fetched included, each available from its ``updated_at``."""
        updated_at, value = parse_global(await self._http.get_json(self.url))
        self._history.setdefault(updated_at, value)
        if len(self._history) > self.max_history:
            for key in sorted(self._history)[: len(self._history) - self.max_history]:
                del self._history[key]
        times = sorted(self._history)
        observed = pd.to_datetime(pd.Series(times, dtype="int64"), unit="s", utc=True)
        values = pd.Series([self._history[t] for t in times], dtype="float64")
        return make_series(self.name, observed, observed, values)


def parse_global(body: Any) -> tuple[int, float]:
    """``(updated_at seconds, BTC dominance %)`` from a ``/api/v3/global`` body; SourceError otherwise."""
    try:
        data = body["data"]
        return int(data["updated_at"]), float(data["market_cap_percentage"]["btc"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"btc_dominance: unexpected response shape ({type(exc).__name__}: {exc})") from exc
