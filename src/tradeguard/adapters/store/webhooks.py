"""Webhook endpoints in the store: an account's URLs, the event types each wants, and its signing secrets.

A webhook belongs to one account and receives that account's audit events whose type matches one of its
patterns (fnmatch style: `risk.breaker.*`, `*`). A fleet webhook (account `*`, created with an admin key)
receives every account's matching events and the fleet-wide ones (account `*` or none).

Secrets are kept as given (`whsec_…`): HMAC needs the key itself, so it cannot be stored as a hash. After a
rotation the previous secret keeps signing until `previous_secret_expires_at`.

Disabling a webhook parks its unfinished deliveries (`next_attempt_at` null, out of the worker's due index);
enabling it makes them due again, so nothing queued is lost while an endpoint is off.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Final
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tradeguard.adapters.store.schema import webhook_deliveries, webhooks
from tradeguard.adapters.store.store import write_transaction
from tradeguard.adapters.webhooks.signing import new_secret, secret_key
from tradeguard.adapters.webhooks.targets import TargetPolicy
from tradeguard.core.audit import AUDIT_EVENT_TYPES, WEBHOOK_TEST
from tradeguard.errors import InputError

FLEET: Final = "*"
MAX_PATTERNS: Final = 50
MAX_URL_LENGTH: Final = 2048
ROUTABLE_TYPES: Final = tuple(t for t in AUDIT_EVENT_TYPES if t != WEBHOOK_TEST)  # tests go to one webhook
_PATTERN = re.compile(r"[A-Za-z0-9_.*]{1,100}")
_URL_TEXT = re.compile(r"[!-~]+")  # printable ASCII, no space
_UNFINISHED = ("pending", "failed")


@dataclass(frozen=True, slots=True)
class Webhook:
    """One endpoint. Its secrets stay out of `to_dict` (the API shows them only on create and rotate)."""

    id: str
    account: str
    url: str
    event_types: tuple[str, ...]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False)
    previous_secret_expires_at: datetime | None

    def signing_keys(self, now: datetime) -> list[bytes]:
        """HMAC keys that sign at `now`: the current secret, then the previous one until it expires."""
        keys = [secret_key(self.secret)]
        if self.previous_secret is not None and self._previous_active(now):
            keys.append(secret_key(self.previous_secret))
        return keys

    def _previous_active(self, now: datetime) -> bool:
        expires = self.previous_secret_expires_at
        return self.previous_secret is not None and expires is not None and expires > now

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "url": self.url,
            "event_types": list(self.event_types),
            "description": self.description,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "failing_since": iso_utc(self.failing_since),
            "previous_secret_expires_at": (
                iso_utc(self.previous_secret_expires_at) if self._previous_active(now) else None
            ),
            "created_at": iso_utc(self.created_at),
            "updated_at": iso_utc(self.updated_at),
        }


def matching_types(patterns: Iterable[str]) -> frozenset[str]:
    """The routable audit event types matched by any of `patterns`."""
    patterns = list(patterns)
    return frozenset(t for t in ROUTABLE_TYPES if any(fnmatchcase(t, p) for p in patterns))


def check_url(url: str, targets: TargetPolicy | None = None) -> str:
    """An absolute http(s) URL with a host (not an address `targets` blocks); InputError otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InputError(f"url must be 1 to {MAX_URL_LENGTH} characters")
    if not _URL_TEXT.fullmatch(url):
        raise InputError("url must be ASCII without spaces or control characters (percent-encode the rest)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise InputError(f"url is malformed: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"url must be an absolute http:// or https:// URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise InputError("url must not carry credentials: verify deliveries by their signature")
    if targets is not None:
        targets.check_host(parts.hostname)
    return url


def check_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """Event type patterns, deduplicated in order; each must match at least one event type."""
    if isinstance(patterns, str) or not 1 <= len(patterns) <= MAX_PATTERNS:
        raise InputError(f"event_types must be a list of 1 to {MAX_PATTERNS} patterns")
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
            raise InputError(f"event type pattern {pattern!r}: use letters, digits, '_', '.' and '*'")
        if not matching_types([pattern]):
            raise InputError(
                f"event type pattern {pattern!r} matches no event type; known: {', '.join(ROUTABLE_TYPES)}"
            )
        if pattern not in out:
            out.append(pattern)
    return tuple(out)


class WebhookStore:
    """Create, read, change and delete webhooks; `on_change` runs after every committed change."""

    def __init__(
        self,
        engine: Engine,
        on_change: Callable[[], None] = lambda: None,
        targets: TargetPolicy | None = None,
    ) -> None:
        self._engine = engine
        self._on_change = on_change
        self._targets = targets or TargetPolicy()

    def create(
        self,
        account: str,
        url: str,
        event_types: Sequence[str],
        *,
        now: datetime,
        description: str | None = None,
        secret: str | None = None,
    ) -> Webhook:
        """A new enabled webhook; a secret is generated unless one is given."""
        if secret is not None:
            secret_key(secret)
        row = {
            "id": f"wh_{secrets.token_hex(10)}",
            "account": account,
            "url": check_url(url, self._targets),
            "event_types": list(check_patterns(event_types)),
            "description": description,
            "secret": secret if secret is not None else new_secret(),
            "previous_secret": None,
            "previous_secret_expires_at": None,
            "enabled": True,
            "disabled_reason": None,
            "failing_since": None,
            "created_at": now,
            "updated_at": now,
        }
        with write_transaction(self._engine) as conn:
            conn.execute(webhooks.insert().values(**row))
        self._on_change()
        return webhook_from_row(row)

    def get(self, webhook_id: str) -> Webhook | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id)).mappings().first()
        return None if row is None else webhook_from_row(row)

    def list(self, account: str) -> list[Webhook]:
        """The webhooks of `account` (`*`: the fleet webhooks), oldest first."""
        query = sa.select(webhooks).where(webhooks.c.account == account)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(webhooks.c.created_at, webhooks.c.id)).mappings().all()
        return [webhook_from_row(row) for row in rows]

    def update(
        self,
        webhook_id: str,
        *,
        now: datetime,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        disabled_reason: str = "disabled by an operator",
    ) -> Webhook | None:
        """Change the given fields (None: unchanged); None when there is no such webhook."""
        values: dict[str, Any] = {"updated_at": now}
        if url is not None:
            values["url"] = check_url(url, self._targets)
        if event_types is not None:
            values["event_types"] = list(check_patterns(event_types))
        if description is not None:
            values["description"] = description
        with write_transaction(self._engine) as conn:
            current = _locked(conn, webhook_id)
            if current is None:
                return None
            if enabled is not None and enabled != current.enabled:
                values.update(enabled=enabled, disabled_reason=None if enabled else disabled_reason)
                if enabled:
                    values["failing_since"] = None
                _park_or_resume(conn, [webhook_id], resume=enabled, now=now)
            conn.execute(webhooks.update().where(webhooks.c.id == webhook_id).values(**values))
            updated = _locked(conn, webhook_id)
        self._on_change()
        return updated

    def rotate_secret(
        self, webhook_id: str, *, now: datetime, overlap: timedelta, secret: str | None = None
    ) -> Webhook | None:
        """Replace the secret; the old one keeps signing for `overlap`. None when there is no such webhook."""
        if secret is not None:
            secret_key(secret)
        with write_transaction(self._engine) as conn:
            current = _locked(conn, webhook_id)
            if current is None:
                return None
            conn.execute(
                webhooks.update()
                .where(webhooks.c.id == webhook_id)
                .values(
                    secret=secret if secret is not None else new_secret(),
                    previous_secret=current.secret,
                    previous_secret_expires_at=now + overlap,
                    updated_at=now,
                )
            )
            rotated = _locked(conn, webhook_id)
        self._on_change()
        return rotated

    def delete(self, webhook_id: str) -> bool:
        """Delete a webhook and its delivery log; False when there is no such webhook."""
        with write_transaction(self._engine) as conn:
            conn.execute(webhook_deliveries.delete().where(webhook_deliveries.c.webhook_id == webhook_id))
            deleted = conn.execute(webhooks.delete().where(webhooks.c.id == webhook_id)).rowcount
        self._on_change()
        return bool(deleted)


def disable(conn: Connection, webhook_ids: Sequence[str], reason: str, now: datetime) -> list[str]:
    """Disable enabled webhooks and park their unfinished deliveries (in the caller's transaction); the ids
    this disabled."""
    if not webhook_ids:
        return []
    disabled = list(
        conn.execute(
            webhooks.update()
            .where(webhooks.c.id.in_(webhook_ids), webhooks.c.enabled)
            .values(enabled=False, disabled_reason=reason, updated_at=now)
            .returning(webhooks.c.id)
        ).scalars()
    )
    _park_or_resume(conn, disabled, resume=False, now=now)
    return disabled


def load(conn: Connection, webhook_ids: Iterable[str]) -> dict[str, Webhook]:
    """The webhooks of those ids that exist, by id."""
    rows = conn.execute(sa.select(webhooks).where(webhooks.c.id.in_(list(webhook_ids)))).mappings()
    return {row["id"]: webhook_from_row(row) for row in rows}


def _park_or_resume(conn: Connection, webhook_ids: Sequence[str], *, resume: bool, now: datetime) -> None:
    d = webhook_deliveries.c
    where = [d.webhook_id.in_(webhook_ids), d.status.in_(_UNFINISHED)]
    where.append(d.next_attempt_at.is_(None) if resume else d.next_attempt_at.is_not(None))
    conn.execute(webhook_deliveries.update().where(*where).values(next_attempt_at=now if resume else None))


def _locked(conn: Connection, webhook_id: str) -> Webhook | None:
    query = sa.select(webhooks).where(webhooks.c.id == webhook_id)
    row = conn.execute(query.with_for_update()).mappings().first()
    return None if row is None else webhook_from_row(row)


def webhook_from_row(row: Any) -> Webhook:
    """A Webhook from a row of the webhooks table (a mapping)."""
    return Webhook(
        id=row["id"],
        account=row["account"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        description=row["description"],
        enabled=bool(row["enabled"]),
        disabled_reason=row["disabled_reason"],
        failing_since=row["failing_since"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
    )


def iso_utc(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
