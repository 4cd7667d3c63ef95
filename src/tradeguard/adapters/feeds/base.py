"""The candle-feed port: live exchanges, file replay and the simulator all look like this to the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

import pandas as pd

from tradeguard.adapters.status import SourceStatus

# Called with newly closed candles of one pair: a Freqtrade frame (date, open, high, low, close, volume),
# oldest first, one or more rows. A feed never passes a candle twice and never the one still forming.
OnCandles = Callable[[str, str, pd.DataFrame], Awaitable[None]]


class CandleFeed(Protocol):
    """A source of closed candles for a set of pairs."""

    name: str  # exchange id ("binance"), "replay" or "simulator"
    synthetic: bool  # True when the candles are not real market data
    status: SourceStatus

    def now(self) -> datetime:
        """The feed's clock (UTC): the wall clock when live, simulated time for replay and simulator."""
        ...

    async def seed(self, pair: str, timeframe: str, limit: int) -> pd.DataFrame:
        """The last `limit` closed candles of a pair, oldest first."""
        ...

    async def run(self, pairs: list[str], timeframe: str, on_candles: OnCandles) -> None:
        """Deliver newly closed candles until cancelled; survives disconnects (reconnect with backoff)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
