"""A small async HTTP GET helper on httpx shared by the live external sources.

One call is a GET with a per-request timeout, retried with :class:`~tradeguard.adapters.status.Backoff` on
timeouts, connection errors, HTTP 429 and 5xx (a ``Retry-After`` header, in seconds or as an HTTP date,
replaces the backoff delay; one longer than ``max_retry_after_s`` ends the retries at once). Other 4xx
answers, bodies that cannot be decoded and invalid URLs fail at once. Every failure is a
:class:`~tradeguard.adapters.sources.base.SourceError` with a one-line message naming the source and URL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tradeguard.adapters.sources.base import SourceError
from tradeguard.adapters.status import Backoff

log = logging.getLogger(__name__)

USER_AGENT = "tradeguard/0.1 (+self-hosted risk service)"


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """Timeout and retry settings of one source's requests (``sleep`` is injectable for tests)."""

    timeout_s: float = 10.0
    attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=1.0, cap_s=30.0))
    max_retry_after_s: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"HttpPolicy.attempts must be at least 1, got {self.attempts}")
        if self.timeout_s <= 0:
            raise ValueError(f"HttpPolicy.timeout_s must be positive, got {self.timeout_s}")


class HttpGetter:
    """GETs for one source with its policy.

    With ``client`` the requests share that httpx client (the caller closes it); without, every call
    opens and closes its own, which suits sources polled every few minutes and any event loop.
    """

    def __init__(self, source: str, policy: HttpPolicy, client: httpx.AsyncClient | None = None) -> None:
        self.source = source
        self.policy = policy
        self._client = client

    async def get_json(self, url: str, params: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON body of a successful GET."""
        response = await self.get(url, params)
        try:
            return response.json()
        except ValueError as exc:
            raise SourceError(f"{self.source}: GET {response.url} returned invalid JSON ({exc})") from exc

    async def get_text(self, url: str, params: Mapping[str, str] | None = None) -> str:
        """The text body of a successful GET."""
        response = await self.get(url, params)
        return response.text

    async def get(self, url: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        """A 2xx response, after the retries the policy allows; raises SourceError otherwise."""
        if self._client is not None:
            return await self._get(self._client, url, params)
        async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}, follow_redirects=True) as client:
            return await self._get(client, url, params)

    async def _get(
        self, client: httpx.AsyncClient, url: str, params: Mapping[str, str] | None
    ) -> httpx.Response:
        policy = self.policy
        where = _describe(url, params)
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await client.get(url, params=params, timeout=policy.timeout_s)
            except httpx.TimeoutException:
                reason = f"timed out after {policy.timeout_s:g}s"
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                reason = f"connection failed ({type(exc).__name__}: {one_line(str(exc))})"
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                detail = f"{type(exc).__name__}: {one_line(str(exc))}"
                raise SourceError(f"{self.source}: GET {where} failed: {detail}") from exc
            else:
                if response.is_success:
                    return response
                reason = f"HTTP {response.status_code} {one_line(response.text)}".rstrip()
                if response.status_code != 429 and response.status_code < 500:
                    raise SourceError(f"{self.source}: GET {where} failed: {reason}")
                retry_after = _retry_after_s(response.headers.get("Retry-After"))
            if attempt == policy.attempts:
                raise SourceError(f"{self.source}: GET {where} failed after {attempt} attempt(s): {reason}")
            if retry_after is not None and retry_after > policy.max_retry_after_s:
                raise SourceError(
                    f"{self.source}: GET {where} failed: {reason}; server asks to retry after "
                    f"{retry_after:g}s (more than {policy.max_retry_after_s:g}s)"
                )
            delay = retry_after if retry_after is not None else policy.backoff.delay(attempt - 1)
            log.warning("%s: GET %s: %s; retry %d in %.1fs", self.source, where, reason, attempt, delay)
            await policy.sleep(delay)


def _describe(url: str, params: Mapping[str, str] | None) -> str:
    """The URL with its query, for messages."""
    return str(httpx.URL(url, params=params)) if params else url


def one_line(text: str, width: int = 200) -> str:
    """Text collapsed to one line of at most ``width`` characters (bodies and errors go into messages)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
