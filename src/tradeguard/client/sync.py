"""`TradeguardClient`: the blocking client (httpx.Client); thread-safe, one instance per bot process."""

from __future__ import annotations

import time
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


class TradeguardClient:
    """Blocking client of the tradeguard service; safe to share between threads.

    `on_unavailable` ("allow" or "block", required) is what `check_order` answers when the service cannot;
    the other calls raise `GuardUnavailable` then. `base_url` defaults to `$TRADEGUARD_URL`, else
    http://127.0.0.1:8000; `api_key` to `$TRADEGUARD_API_KEY`. `timeout` (seconds) bounds each network
    operation (connect, write, read). `retry` and `breaker` tune retries and the circuit breaker (a breaker
    may be shared by several clients of one service). Errors: `TradeguardAPIError` (4xx problem details),
    `GuardUnavailable` (timeout, connection error, 5xx, open breaker).
    """

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
        self._http = httpx.Client(**self._core.http_options())

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def breaker(self) -> CircuitBreaker:
        return self._core.breaker

    def get_risk(self, pair: str | None = None, *, exchange: str | None = None) -> RiskAssessment:
        """The market guard's assessment of `pair` (e.g. "BTC/USDT"), or the market-wide view without it."""
        return self._drive(self._core.get_risk(pair, exchange))

    def check_order(
        self, order: OrderRequest | Mapping[str, Any], *, on_unavailable: OnUnavailableArg | None = None
    ) -> ClientOrderDecision:
        """The guard's decision on one order. When the service cannot answer: the client's own decision per
        `on_unavailable` (this call's, else the client's), with `source="client_fallback"`. Never retried."""
        return self._drive(self._core.check_order(order, on_unavailable))

    def publish_events(self, events: Sequence[Event | Mapping[str, Any]]) -> list[str]:
        """Send a batch (≤ 1,000) of event envelopes; the ids stored (new ones, then earlier duplicates)."""
        return self._drive(self._core.publish_events(events))

    def get_portfolio(self, account: str | None = None) -> Portfolio:
        """Exposure of `account` (default: the key's own; an admin key without account: the fleet)."""
        return self._drive(self._core.get_portfolio(account))

    def get_trading_state(self, account: str | None = None) -> TradingStateReport:
        """ACTIVE / REDUCING / HALTED of `account` (default: the key's own), and why."""
        return self._drive(self._core.get_trading_state(account))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _drive(self, flow: Flow[T]) -> T:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(self._send(step))
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    def _send(self, step: Send) -> Outcome:
        try:
            return self._http.request(step.method, step.path, params=step.params, json=step.json)
        except httpx.RequestError as exc:
            return exc
