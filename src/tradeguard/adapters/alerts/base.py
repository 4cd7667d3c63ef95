"""What the alert channels share: the channel port, the outcome of a delivery, retries and message text.

A channel has a ``name`` and ``async send(message) -> Delivery``; when it finally fails (after the
retries its :class:`RetryPolicy` allows) it raises :class:`AlertDeliveryError`, which the notifier turns
into a failed :class:`Delivery` for its caller to record. An attempt that may succeed later (a timeout, a
lost connection, HTTP 429 or 5xx, SMTP 4xx) raises :class:`AttemptFailed` with ``retryable=True``; the
server's ``Retry-After`` replaces the backoff delay, and one longer than ``max_retry_after_s`` ends the
retries at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import httpx

from tradeguard.adapters.sources.http import USER_AGENT, one_line
from tradeguard.adapters.status import Backoff
from tradeguard.core.alerting import RANK, Outgoing
from tradeguard.errors import InputError, TradeguardError

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class AlertDeliveryError(TradeguardError):
    """A message could not be delivered; ``attempts`` made, the last error in the message."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class AttemptFailed(Exception):
    """One attempt failed: ``retryable`` when trying again may help; ``retry_after`` as the server asks."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one message ended: to which channel, how many alerts, ok, after how many attempts, and why not."""

    channel: str
    alerts: int
    ok: bool
    attempts: int
    detail: str = ""
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "alerts": self.alerts,
            "ok": self.ok,
            "attempts": self.attempts,
            "detail": self.detail,
            "error": self.error,
        }


class AlertChannel(Protocol):
    """Sends one message (one or more alerts); raises AlertDeliveryError when it finally fails."""

    @property
    def name(self) -> str: ...

    async def send(self, message: Outgoing) -> Delivery: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per message, backoff between them, a timeout per attempt, and an injectable sleep."""

    attempts: int = 4
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=1.0, cap_s=30.0))
    timeout_s: float = 10.0
    max_retry_after_s: float = 300.0
    sleep: Sleep = asyncio.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        if self.timeout_s <= 0:
            raise ValueError(f"RetryPolicy.timeout_s must be positive, got {self.timeout_s}")


async def with_retries(what: str, policy: RetryPolicy, attempt: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """(result, attempts made) of the first attempt that succeeds; AlertDeliveryError naming `what` else."""
    number = 0
    while True:
        number += 1
        try:
            return await attempt(), number
        except AttemptFailed as exc:
            failure = exc
        if not failure.retryable:
            raise AlertDeliveryError(f"{what} failed: {failure}", attempts=number)
        if number >= policy.attempts:
            raise AlertDeliveryError(f"{what} failed after {number} attempt(s): {failure}", attempts=number)
        delay = failure.retry_after
        if delay is not None and delay > policy.max_retry_after_s:
            raise AlertDeliveryError(
                f"{what} failed: {failure}; the server asks to retry after {delay:g}s "
                f"(more than {policy.max_retry_after_s:g}s)",
                attempts=number,
            )
        if delay is None:
            delay = policy.backoff.delay(number - 1)
        log.warning("%s: %s; retry %d in %.1fs", what, failure, number, delay)
        await policy.sleep(delay)


async def post_json(what: str, url: str, body: Any, policy: RetryPolicy) -> tuple[httpx.Response, int]:
    """POST `body` as JSON with retries; (2xx response, attempts). `what` names it in errors: the URL may
    hold a secret (a bot token, a webhook), so it never appears in messages."""

    async def attempt() -> httpx.Response:
        try:
            response = await client.post(url, json=body)
        except httpx.TimeoutException as exc:
            raise AttemptFailed(f"timed out after {policy.timeout_s:g}s", retryable=True) from exc
        except httpx.TransportError as exc:
            raise AttemptFailed(f"connection failed ({type(exc).__name__})", retryable=True) from exc
        if response.is_success:
            return response
        code = response.status_code
        raise AttemptFailed(
            f"HTTP {code} {one_line(response.text)}".rstrip(),
            retryable=code in (408, 429) or code >= 500,
            retry_after=retry_after_s(response),
        )

    async with httpx.AsyncClient(timeout=policy.timeout_s, headers={"User-Agent": USER_AGENT}) as client:
        return await with_retries(what, policy, attempt)


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds to wait: the ``Retry-After`` header (seconds or HTTP date), else Telegram's
    ``parameters.retry_after`` in a JSON body; None when neither is there."""
    header = response.headers.get("Retry-After")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                when = parsedate_to_datetime(header)
            except (TypeError, ValueError):
                return None
            date = response.headers.get("Date")
            now = parsedate_to_datetime(date) if date else None
            return None if now is None else max(0.0, (when - now).total_seconds())
    try:
        value = response.json().get("parameters", {}).get("retry_after")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def http_url(value: str, what: str) -> str:
    """`value` without a trailing slash if it is an http(s) URL; InputError naming `what` (not the value,
    which may be a secret) otherwise."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = httpx.URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(f"{what} must be an http(s) URL")
    return value.rstrip("/")


# --- text shared by the channels ---------------------------------------------------------------------


def subject(message: Outgoing) -> str:
    """One line: the alert's headline, or `3 alerts (1 critical, 2 warning)` for a group."""
    held = f", {message.held} held during quiet hours" if message.held else ""
    if len(message.alerts) == 1:
        return message.alerts[0].headline + (f" ({held[2:]})" if held else "")
    counts = Counter(a.severity for a in message.alerts)
    resolved = sum(a.resolved for a in message.alerts)
    parts = [f"{counts[s]} {s}" for s in sorted(counts, key=RANK.__getitem__, reverse=True)]
    parts += [f"{resolved} resolved"] if resolved else []
    return f"tradeguard: {len(message.alerts)} alerts ({', '.join(parts)}{held})"


def blocks(message: Outgoing) -> list[tuple[str, list[str]]]:
    """Per alert, most severe first: (headline, body lines)."""
    ordered = sorted(message.alerts, key=lambda a: -RANK[a.severity])
    return [(a.headline, a.lines()) for a in ordered]


def plain_text(message: Outgoing) -> str:
    """The whole message as plain text (e-mail body)."""
    parts = [subject(message)]
    for headline, lines in blocks(message):
        parts.append("\n".join([headline, *lines]))
    return "\n\n".join(parts) + "\n"
