"""`AsyncTradeguardClient`: the asyncio client (httpx.AsyncClient); the blocking client's calls and rules."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from tradeguard.client._core import (
    DEFAULT_TIMEOUT_S,
    CircuitBreaker,
    ClientCore,
    Flow,
    OnUnavailableArg,
    Outcome,
    RetryPolicy,
    Send,
    Sleep,
)
from tradeguard.client.models import ClientOrderDecision, Portfolio, RiskAssessment, TradingStateReport
from tradeguard.core.events import Event
from tradeguard.core.order_check import OrderRequest

T = TypeVar("T")


class AsyncTradeguardClient:
    """Asyncio client of the tradeguard service; arguments and behaviour as `TradeguardClient`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        on_unavailable: OnUnavailableArg,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._core = ClientCore(base_url, api_key, on_unavailable, timeout, retry, breaker)
        self._http = httpx.AsyncClient(**self._core.http_options())

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def breaker(self) -> CircuitBreaker:
        return self._core.breaker

    async def get_risk(self, pair: str | None = None, *, exchange: str | None = None) -> RiskAssessment:
        """The market guard's assessment of `pair` (e.g. "BTC/USDT"), or the market-wide view without it."""
        return await self._drive(self._core.get_risk(pair, exchange))

    async def check_order(
        self, order: OrderRequest | Mapping[str, Any], *, on_unavailable: OnUnavailableArg | None = None
    ) -> ClientOrderDecision:
        """The guard's decision on one order, or the client's fallback (as `TradeguardClient.check_order`)."""
        return await self._drive(self._core.check_order(order, on_unavailable))

    async def publish_events(self, events: Sequence[Event | Mapping[str, Any]]) -> list[str]:
        """Send a batch (≤ 1,000) of event envelopes; the ids stored (new ones, then earlier duplicates)."""
        return await self._drive(self._core.publish_events(events))

    async def get_portfolio(self, account: str | None = None) -> Portfolio:
        """Exposure of `account` (default: the key's own; an admin key without account: the fleet)."""
        return await self._drive(self._core.get_portfolio(account))

    async def get_trading_state(self, account: str | None = None) -> TradingStateReport:
        """ACTIVE / REDUCING / HALTED of `account` (default: the key's own), and why."""
        return await self._drive(self._core.get_trading_state(account))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _drive(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(await self._send(step))
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    async def _send(self, step: Send) -> Outcome:
        try:
            return await self._http.request(step.method, step.path, params=step.params, json=step.json)
        except httpx.RequestError as exc:
            return exc
