"""API-key authentication with scopes, a verified-key cache and a per-key token-bucket rate limit.

Scopes are ordered: read < bot < operator < admin; a key may do what its scope and every lower one may.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Protocol

from fastapi import Depends, Request

from tradeguard.core.rate_limit import TokenBucket
from tradeguard.service.problems import Problem
from tradeguard.service.settings import AuthSettings

SCOPES = ("read", "bot", "operator", "admin")


class KeyRecordLike(Protocol):
    key_id: str
    account: str
    scope: str


class KeyVerifier(Protocol):
    def verify_key(self, token: str, now: datetime) -> KeyRecordLike | None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key's account and scope, or anonymous."""

    key_id: str | None
    account: str | None
    scope: str | None

    def allows(self, scope: str) -> bool:
        return self.scope is not None and SCOPES.index(self.scope) >= SCOPES.index(scope)


ANONYMOUS = Principal(None, None, None)


class Authenticator:
    """Resolves `Authorization: Bearer <key>` (or `?token=` on WebSockets) to a Principal."""

    def __init__(
        self, verifier: KeyVerifier, settings: AuthSettings, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._verifier = verifier
        self._settings = settings
        self._monotonic = monotonic
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def resolve(self, token: str | None) -> Principal | None:
        """The principal of a token; None when the token is unknown, revoked or malformed."""
        if not token:
            return ANONYMOUS
        now = self._monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        record = self._verifier.verify_key(token, datetime.now(UTC))
        if record is None:
            self._cache.pop(token, None)
            return None
        principal = Principal(record.key_id, record.account, record.scope)
        self._cache[token] = (principal, now + self._settings.key_cache_s)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop cached verifications of a key (after a revocation)."""
        self._cache = {t: v for t, v in self._cache.items() if v[0].key_id != key_id}

    def throttle(self, principal: Principal, client: str) -> None:
        """Raise 429 with Retry-After when the caller is over its rate limit."""
        bucket_key = principal.key_id or f"anon:{client}"
        now = self._monotonic()
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            bucket = self._buckets[bucket_key] = TokenBucket(
                self._settings.rate_limit_per_s, self._settings.rate_limit_burst, now
            )
        wait = bucket.take(now)
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            raise Problem(
                429,
                f"rate limit of {self._settings.rate_limit_per_s:g} requests/s exceeded",
                headers={"Retry-After": str(retry)},
                retry_after_s=retry,
            )

    def check(self, token: str | None, scope: str, client: str, anonymous_ok: bool) -> Principal:
        """Authenticate, authorise for `scope` and rate-limit; raises 401/403/429 problems."""
        principal = self.resolve(token)
        if principal is None:
            raise Problem(
                401, "unknown, revoked or malformed API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if principal is ANONYMOUS and not anonymous_ok:
            raise Problem(
                401,
                "an API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal is not ANONYMOUS and not principal.allows(scope):
            raise Problem(403, f"this key has scope {principal.scope!r}; {scope!r} or higher is needed")
        self.throttle(principal, client)
        return principal


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    kind, _, value = header.partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        raise Problem(
            401, "Authorization header must be 'Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    return value.strip()


def require(scope: str, *, market_data: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """Dependency: the caller must hold `scope`; `market_data` routes honour `auth.anonymous_read`."""

    async def dependency(request: Request) -> Principal:
        auth: Authenticator = request.app.state.authenticator
        anonymous_ok = market_data and request.app.state.settings.auth.anonymous_read
        client = request.client.host if request.client else "unknown"
        return auth.check(bearer_token(request), scope, client, anonymous_ok)

    return dependency


def account_scope(principal: Principal, requested: str | None) -> str:
    """The account a request acts on: the key's own, or (admin keys only) any account named.

    A key of account A asking for account B gets 403; a key without an account cannot act on accounts.
    """
    if principal.account is None:
        raise Problem(401, "account data needs an API key", headers={"WWW-Authenticate": "Bearer"})
    if requested is None or requested == principal.account:
        return principal.account
    if principal.scope == "admin":
        return requested
    raise Problem(403, f"this key belongs to account {principal.account!r}, not {requested!r}")


ReadMarket = Annotated[Principal, Depends(require("read", market_data=True))]
Reader = Annotated[Principal, Depends(require("read"))]
Bot = Annotated[Principal, Depends(require("bot"))]
Operator = Annotated[Principal, Depends(require("operator"))]
