"""Everything the sync and async clients share: settings, the retry policy, the circuit breaker, requests,
parsing and the `on_unavailable` fallback.

A call is a generator that yields what to do next — `Send` a request or `Sleep` — and receives the outcome of
each `Send` (an `httpx.Response`, or the `httpx.RequestError` it raised); its return value is the call's
result. `TradeguardClient` and `AsyncTradeguardClient` only run that loop with their transport (`drive`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar, cast

import httpx
from pydantic import BaseModel

from tradeguard import __version__
from tradeguard.client.errors import CircuitOpen, GuardUnavailable, TradeguardAPIError
from tradeguard.client.models import ClientOrderDecision, Portfolio, RiskAssessment, TradingStateReport
from tradeguard.core.events import Event
from tradeguard.core.order_check import OrderRequest, Reason, VarReport

log = logging.getLogger("tradeguard.client")

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 2.0
API_KEY_ENV = "TRADEGUARD_API_KEY"
BASE_URL_ENV = "TRADEGUARD_URL"


class OnUnavailable(StrEnum):
    """What `check_order` answers when the service cannot: let the order through, or stop it."""

    ALLOW = "allow"
    BLOCK = "block"


OnUnavailableArg = OnUnavailable | Literal["allow", "block"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: before attempt n+1, sleep uniform(0, min(max, base × 2^(n-1))).

    At most `attempts` tries per call, and no retry whose wait would end more than `deadline_s` after the
    call started. A `Retry-After` header (429, 503) replaces the jittered wait. Which calls retry what:
    see the `tradeguard.client` module docstring.
    """

    attempts: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 1.0
    deadline_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if min(self.base_delay_s, self.max_delay_s, self.deadline_s) < 0:
            raise ValueError("delays and deadline must not be negative")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The jittered wait after failed attempt number `attempt` (1-based)."""
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Client-side circuit breaker over the whole service; thread-safe, shareable between clients.

    closed → open after `failure_threshold` consecutive unavailability failures, or at once after a timeout
    when `trip_on_timeout` (a timeout is the expensive failure: a dead service then costs one timeout, not
    one per call). While open, calls fail fast with `CircuitOpen`. After `cooldown_s` it is half-open: one
    trial call goes out (others still fail fast); its success closes the breaker, its failure opens it for
    another cooldown. Any answer of the service below 500 counts as success.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        *,
        trip_on_timeout: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.trip_on_timeout = trip_on_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self._last_failure = ""

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half_open" if self._clock() >= self._opened_at + self.cooldown_s else "open"

    def acquire(self) -> bool:
        """Permission for one call; True when it is the half-open trial. Raises `CircuitOpen` otherwise."""
        with self._lock:
            if self._opened_at is None:
                return False
            remaining = self._opened_at + self.cooldown_s - self._clock()
            if remaining > 0:
                raise CircuitOpen(
                    f"circuit open after {self._last_failure}; next try in {remaining:.1f} s", remaining
                )
            if self._trial:
                raise CircuitOpen(f"circuit half-open after {self._last_failure}; a trial call is out", 0.0)
            self._trial = True
            return True

    def success(self) -> None:
        """The service answered: close."""
        with self._lock:
            if self._opened_at is not None:
                log.info("tradeguard answered again: circuit closed")
            self._failures, self._opened_at, self._trial = 0, None, False

    def failure(self, reason: str, *, timed_out: bool = False) -> None:
        """The service could not answer: count it, and open when the rules above say so."""
        with self._lock:
            self._failures += 1
            self._last_failure = reason
            if (
                self._trial
                or (timed_out and self.trip_on_timeout)
                or self._failures >= self.failure_threshold
            ):
                if self._opened_at is None or self._trial:
                    log.warning(
                        "tradeguard unavailable (%s): circuit open for %.0f s", reason, self.cooldown_s
                    )
                self._opened_at, self._trial = self._clock(), False

    def release(self, trial: bool) -> None:
        """A call ended without an outcome (cancelled, interrupted): free the trial slot if it held it."""
        if trial:
            with self._lock:
                self._trial = False


@dataclass(frozen=True, slots=True)
class Send:
    """Send this request (the path is relative to the base URL)."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long before the next step."""

    seconds: float


Step = Send | Sleep
Outcome = httpx.Response | httpx.RequestError
Flow = Generator[Step, Outcome | None, T]


class ClientCore:
    """Settings and call flows of one client."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        on_unavailable: OnUnavailableArg,
        timeout_s: float,
        retry: RetryPolicy | None,
        breaker: CircuitBreaker | None,
    ) -> None:
        self.on_unavailable = OnUnavailable(on_unavailable)
        if timeout_s <= 0:
            raise ValueError("timeout must be positive")
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key or os.environ.get(API_KEY_ENV) or None
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self._rng = random.Random()

    def http_options(self) -> dict[str, Any]:
        """Keyword arguments of `httpx.Client` / `httpx.AsyncClient`."""
        headers = {"Accept": "application/json", "User-Agent": f"tradeguard-client/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return {"base_url": self.base_url, "headers": headers, "timeout": httpx.Timeout(self.timeout_s)}

    def get_risk(self, pair: str | None, exchange: str | None) -> Flow[RiskAssessment]:
        send = Send("GET", "/v1/risk", _params(pair=pair, exchange=exchange))
        return self._call(send, RiskAssessment.model_validate, idempotent=True)

    def get_portfolio(self, account: str | None) -> Flow[Portfolio]:
        send = Send("GET", "/v1/portfolio", _params(account=account))
        return self._call(send, Portfolio.model_validate, idempotent=True)

    def get_trading_state(self, account: str | None) -> Flow[TradingStateReport]:
        send = Send("GET", "/v1/trading-state", _params(account=account))
        return self._call(send, TradingStateReport.model_validate, idempotent=True)

    def publish_events(self, events: Sequence[Event | Mapping[str, Any]]) -> Flow[list[str]]:
        batch = [e if isinstance(e, Event) else Event.model_validate(e) for e in events]
        if not batch:
            return []
        send = Send("POST", "/v1/events", json={"events": [e.wire() for e in batch]})
        return (yield from self._call(send, _stored_ids, idempotent=True))

    def check_order(
        self, order: OrderRequest | Mapping[str, Any], on_unavailable: OnUnavailableArg | None
    ) -> Flow[ClientOrderDecision]:
        request = order if isinstance(order, OrderRequest) else OrderRequest.model_validate(order)
        policy = self.on_unavailable if on_unavailable is None else OnUnavailable(on_unavailable)
        started = time.monotonic()
        send = Send("POST", "/v1/orders/check", json=request.model_dump(mode="json"))
        try:
            return (yield from self._call(send, _decision, idempotent=False))
        except GuardUnavailable as exc:
            latency_ms = (time.monotonic() - started) * 1000
            log.warning(
                "check_order of %s %s: %s; on_unavailable=%s", request.bot, request.symbol, exc, policy
            )
            return fallback_decision(request, policy, exc.reason, latency_ms)

    def _call(self, send: Send, parse: Callable[[Any], T], *, idempotent: bool) -> Flow[T]:
        """One call with retries: unavailability only when `idempotent`, 429 always (nothing ran)."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            trial = self.breaker.acquire()
            try:
                outcome = cast(Outcome, (yield send))
            except BaseException:  # the driver was interrupted or cancelled mid-request
                self.breaker.release(trial)
                raise
            if isinstance(outcome, httpx.RequestError):
                failure = GuardUnavailable(_describe(outcome, send))
                self.breaker.failure(failure.reason, timed_out=isinstance(outcome, httpx.TimeoutException))
                wait = self.retry.delay(attempt, self._rng)
            elif outcome.status_code >= 500:
                problem = TradeguardAPIError.from_response(outcome)
                failure = GuardUnavailable(
                    f"{send.method} {send.path}: {problem}", status=outcome.status_code
                )
                self.breaker.failure(failure.reason)
                wait = _first(problem.retry_after_s, self.retry.delay(attempt, self._rng))
            elif outcome.is_success:
                try:
                    value = parse(outcome.json())
                except ValueError as exc:  # not JSON, or not the contract (pydantic's ValidationError)
                    reason = f"{send.method} {send.path}: unexpected answer ({_oneline(exc)})"
                    self.breaker.failure(reason)
                    raise GuardUnavailable(reason, status=outcome.status_code) from exc
                self.breaker.success()
                return value
            else:
                self.breaker.success()
                error = TradeguardAPIError.from_response(outcome)
                wait = _first(error.retry_after_s, self.retry.delay(attempt, self._rng))
                if outcome.status_code == 429 and self._may_retry(attempt, started, wait):
                    yield Sleep(wait)
                    continue
                raise error
            if idempotent and self.breaker.state == "closed" and self._may_retry(attempt, started, wait):
                yield Sleep(wait)
                continue
            raise failure

    def _may_retry(self, attempt: int, started: float, wait: float) -> bool:
        return attempt < self.retry.attempts and time.monotonic() - started + wait <= self.retry.deadline_s


def fallback_decision(
    order: OrderRequest, policy: OnUnavailable, reason: str, latency_ms: float
) -> ClientOrderDecision:
    """The decision `check_order` answers when the service cannot: `policy` for the whole amount."""
    allow = policy is OnUnavailable.ALLOW
    outcome = "allowed" if allow else "blocked"
    return ClientOrderDecision(
        decision="allow" if allow else "block",
        allowed_amount=order.amount if allow else 0.0,
        reasons=[
            Reason(
                code="guard_unavailable",
                check="client",
                message=f"The guard is unavailable ({reason}); {outcome} by the client "
                f"(on_unavailable={policy}).",
            )
        ],
        checks={},
        var=VarReport(before_pct=None, after_pct=None, limit_pct=None),
        trading_state=None,
        evaluated_at=datetime.now(UTC),
        latency_ms=max(0.0, latency_ms),
        source="client_fallback",
    )


def _decision(body: Any) -> ClientOrderDecision:
    if not isinstance(body, dict):
        raise ValueError("the decision is not a JSON object")
    return ClientOrderDecision.model_validate({**body, "source": "service"})


class _Stored(BaseModel):
    """`POST /v1/events`' 202 body."""

    accepted: list[str]
    duplicates: list[str] = []


def _stored_ids(body: Any) -> list[str]:
    """Ids stored by this request (`accepted`), then those stored before with the same content."""
    stored = _Stored.model_validate(body)
    return [*stored.accepted, *stored.duplicates]


def _params(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _describe(error: httpx.RequestError, send: Send) -> str:
    what = "timed out" if isinstance(error, httpx.TimeoutException) else type(error).__name__
    detail = _oneline(error)
    return f"{send.method} {send.path} {what}" + (f" ({detail})" if detail else "")


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
