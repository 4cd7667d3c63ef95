"""Client errors: the service said no (`TradeguardAPIError`) or could not answer (`GuardUnavailable`)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import httpx

from tradeguard.errors import TradeguardError

_PROBLEM_MEMBERS = ("type", "title", "status", "detail", "instance")


class TradeguardClientError(TradeguardError):
    """Base of every error the client raises."""


class TradeguardAPIError(TradeguardClientError):
    """The service answered with an error below 500 (RFC 9457 problem details: 401, 403, 404, 422, 429...).

    `extensions` holds the problem's other members (e.g. `errors`, `tracked_pairs`, `foreign_accounts`);
    `retry_after_s` is the `Retry-After` header when there was one.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type: str = "about:blank",
        instance: str | None = None,
        extensions: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.instance = instance
        self.extensions = extensions or {}
        self.retry_after_s = retry_after_s

    @classmethod
    def from_response(cls, response: httpx.Response) -> TradeguardAPIError:
        """Read problem details from the response; a body that is not one still gives status and title."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"detail": response.text[:500] or None}
        phrase = _phrase(response.status_code)
        return cls(
            response.status_code,
            str(body.get("title") or phrase),
            None if body.get("detail") is None else str(body["detail"]),
            type=str(body.get("type") or "about:blank"),
            instance=body.get("instance"),
            extensions={k: v for k, v in body.items() if k not in _PROBLEM_MEMBERS},
            retry_after_s=_retry_after(response),
        )


class GuardUnavailable(TradeguardClientError):
    """The service could not answer: timeout, connection error, 5xx, an unreadable answer, or an open breaker.

    `status` is the HTTP status when there was an answer (5xx, or a 2xx not in the contract), else None.
    """

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"tradeguard unavailable: {reason}")
        self.reason = reason
        self.status = status


class CircuitOpen(GuardUnavailable):
    """The client's circuit breaker is open: the call failed fast without touching the network."""

    def __init__(self, reason: str, retry_in_s: float) -> None:
        super().__init__(reason)
        self.retry_in_s = retry_in_s


def _retry_after(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds (the delta-seconds form; an HTTP date is ignored)."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
