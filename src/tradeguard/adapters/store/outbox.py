"""The webhook outbox: deliveries written in the audit append's own transaction, then claimed by workers.

`AuditLog` calls `enqueue` inside the transaction that inserts its records, so a delivery exists exactly
when its audit record does (a rolled-back append leaves neither). The in-process worker gets the new
deliveries once they have committed; other replicas find work by polling.

A delivery's id — the `webhook-id` header, the receiver's idempotency key — is made of the audit record's
seq and the webhook's id, so every attempt and any redelivery carry the same id, and enqueueing twice is
impossible (one row per record and webhook). Ids grow with seq: new rows go to the end of the primary key's
index rather than all over it. The body is the record's envelope as canonical JSON, rebuilt from the audit
log when a delivery is claimed: the same bytes every time, stored once however many webhooks get it.

Workers claim due deliveries by leasing them: `next_attempt_at` moves to the end of the lease, so a worker
that dies mid-attempt only delays the delivery until the lease ends. PostgreSQL replicas claim with
`FOR UPDATE SKIP LOCKED` and never share a delivery; SQLite serialises claims with its write lock.

Subscriptions (which webhooks want which account's types) are cached: dropped on every change made through
this process (`invalidate`), and re-read after `subscription_ttl_s` to see other replicas' changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from json.encoder import encode_basestring
from typing import Any, Final, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tradeguard.adapters.store.audit_log import audit_log
from tradeguard.adapters.store.schema import webhook_deliveries, webhooks
from tradeguard.adapters.store.store import write_transaction
from tradeguard.adapters.store.webhooks import (
    FLEET,
    Webhook,
    disable,
    iso_utc,
    load,
    matching_types,
    webhook_from_row,
)
from tradeguard.core.audit import WEBHOOK_TEST, AuditRecord, format_ts

DEFAULT_LIST_LIMIT: Final = 100
_UNFINISHED: Final = ("pending", "failed")
_d = webhook_deliveries.c


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery as stored (`body` only when asked for)."""

    id: str
    webhook_id: str
    account: str
    audit_seq: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    latency_ms: float | None
    body: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "webhook_id": self.webhook_id,
            "account": self.account,
            "audit_seq": self.audit_seq,
            "event_type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso_utc(self.next_attempt_at),
            "last_attempt_at": iso_utc(self.last_attempt_at),
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": iso_utc(self.created_at),
            "delivered_at": iso_utc(self.delivered_at),
            "latency_ms": self.latency_ms,
        }
        if self.body is not None:
            out["body"] = self.body
        return out


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery leased to a worker for one attempt."""

    id: str
    webhook: Webhook
    body: bytes
    attempts: int  # attempts before this one
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to, as the worker decided it (status, next attempt), to be stored."""

    delivery_id: str
    webhook_id: str
    status: str  # succeeded, failed (to be retried at next_attempt_at) or dead
    attempts: int
    attempted_at: datetime
    next_attempt_at: datetime | None
    status_code: int | None
    error: str | None
    latency_ms: float | None
    gone: bool = False  # the receiver answered 410 Gone: disable its webhook


def delivery_id(audit_seq: int, webhook_id: str) -> str:
    """The `webhook-id` of an audit record's delivery to a webhook, e.g. `msg_000000001234_5c2a…`."""
    return f"msg_{audit_seq:012d}_{webhook_id.removeprefix('wh_')}"


def envelope_json(record: AuditRecord) -> str:
    """The record's envelope (`AuditRecord.to_envelope`) as RFC 8785 canonical JSON: the delivery body.

    `payload_json` is canonical already and is embedded as it was signed; the members are in JCS order.
    """
    account = "null" if record.account is None else encode_basestring(record.account)
    return (
        f'{{"account":{account},"hash":{encode_basestring(record.hash)},"id":{encode_basestring(record.id)},'
        f'"key_id":{encode_basestring(record.key_id)},"payload":{record.payload_json},'
        f'"prev_hash":{encode_basestring(record.prev_hash)},"seq":{record.seq},'
        f'"signature":{encode_basestring(record.signature)},"ts":{encode_basestring(format_ts(record.ts))},'
        f'"type":{encode_basestring(record.type)}}}'
    )


@dataclass(frozen=True, slots=True)
class _Routes:
    """Enabled webhooks by (account, event type); fleet webhooks under account `*`."""

    by_key: dict[tuple[str, str], tuple[Webhook, ...]]
    expires: float

    def targets(self, account: str | None, event_type: str) -> tuple[Webhook, ...]:
        fleet = self.by_key.get((FLEET, event_type), ())
        if account is None or account == FLEET:
            return fleet
        return self.by_key.get((account, event_type), ()) + fleet


class Consumer(Protocol):
    """The worker of this process, which new deliveries are handed to directly (see `Outbox`)."""

    @property
    def lease(self) -> timedelta: ...

    def room(self) -> int:
        """How many more deliveries it takes now (called from any thread)."""
        ...

    def take(self, due: list[DueDelivery]) -> None:
        """Deliver these, leased to it already (called from any thread, after their commit)."""
        ...

    def wake(self) -> None:
        """Look for due deliveries now (called from any thread)."""
        ...


class Outbox:
    """Enqueue (for `AuditLog`), claim and record (for the worker), list and redeliver (for the API).

    With a `consumer` (the in-process worker) attached, new deliveries are leased to it in the enqueueing
    transaction and handed over in memory once it commits: no claim round trip on the hot path. Should the
    process die first, the lease ends and any worker claims them.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        subscription_ttl_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._ttl = subscription_ttl_s
        self._monotonic = monotonic
        self._routes: _Routes | None = None
        self._generation = 0
        self._lock = threading.Lock()
        self.consumer: Consumer | None = None

    @property
    def engine(self) -> Engine:
        return self._engine

    # the audit append's side

    def enqueue(self, conn: Connection, records: Sequence[AuditRecord]) -> Callable[[], None] | None:
        """Insert the deliveries of `records` in the caller's transaction; what to call once it commits."""
        routes = self._current_routes(conn)
        due: list[DueDelivery] = []
        rows: list[tuple[str, str, str, int, str]] = []
        now = self._clock()
        for record in records:
            if record.type == WEBHOOK_TEST:
                hooks = _test_target(conn, record)
            else:
                hooks = routes.targets(record.account, record.type)
            if hooks:
                body = envelope_json(record).encode()
                for hook in hooks:
                    msg_id = delivery_id(record.seq, hook.id)
                    due.append(DueDelivery(msg_id, hook, body, 0, now))
                    rows.append((msg_id, hook.id, record.account or FLEET, record.seq, record.type))
        if not rows:
            return None
        consumer = self.consumer
        lease = consumer.lease if consumer is not None and consumer.room() >= len(due) else None
        _insert(conn, rows, now, now if lease is None else now + lease)
        if consumer is None:
            return None
        return consumer.wake if lease is None else lambda: consumer.take(due)

    def wake(self) -> None:
        """Deliveries became due outside an append (redelivery, a webhook enabled): look now."""
        if self.consumer is not None:
            self.consumer.wake()

    def invalidate(self) -> None:
        """Webhooks changed: read the subscriptions again before the next enqueue."""
        with self._lock:
            self._generation += 1
            self._routes = None

    def _current_routes(self, conn: Connection) -> _Routes:
        routes = self._routes
        if routes is not None and self._monotonic() < routes.expires:
            return routes
        with self._lock:
            generation = self._generation
        hooks = conn.execute(sa.select(webhooks).where(webhooks.c.enabled).order_by(webhooks.c.id)).mappings()
        by_key: dict[tuple[str, str], list[Webhook]] = {}
        for row in hooks:
            hook = webhook_from_row(row)
            for event_type in matching_types(hook.event_types):
                by_key.setdefault((hook.account, event_type), []).append(hook)
        routes = _Routes({k: tuple(v) for k, v in by_key.items()}, self._monotonic() + self._ttl)
        with self._lock:
            if generation == self._generation:  # not invalidated while reading
                self._routes = routes
        return routes

    # the worker's side

    def claim_due(self, now: datetime, limit: int, lease_until: datetime) -> list[DueDelivery]:
        """Lease up to `limit` due deliveries of enabled webhooks until `lease_until`, oldest due first."""
        due = (
            sa.select(_d.id)
            .join(webhooks, webhooks.c.id == _d.webhook_id)
            .where(_d.next_attempt_at <= now, webhooks.c.enabled)
            .order_by(_d.next_attempt_at)
            .limit(limit)
            .with_for_update(of=webhook_deliveries, skip_locked=True)
            .cte("due")
        )
        claim = (
            webhook_deliveries.update()
            .where(_d.id == due.c.id)
            .values(next_attempt_at=lease_until)
            .returning(_d.id, _d.webhook_id, _d.audit_seq, _d.attempts, _d.created_at)
        )
        with write_transaction(self._engine) as conn:
            rows = conn.execute(claim).all()
            if not rows:
                return []
            hooks = load(conn, {row.webhook_id for row in rows})
            bodies = _bodies(conn, {row.audit_seq for row in rows})
        return [
            DueDelivery(row.id, hooks[row.webhook_id], bodies[row.audit_seq], row.attempts, row.created_at)
            for row in rows
            if row.webhook_id in hooks
        ]

    def release(self, delivery_ids: Sequence[str], now: datetime) -> None:
        """Hand back leased deliveries that were not attempted: due at `now` (parked ones stay parked)."""
        if delivery_ids:
            with write_transaction(self._engine) as conn:
                conn.execute(
                    webhook_deliveries.update()
                    .where(
                        _d.id.in_(delivery_ids), _d.status.in_(_UNFINISHED), _d.next_attempt_at.is_not(None)
                    )
                    .values(next_attempt_at=now)
                )

    def record(
        self, attempts: Sequence[Attempt], *, now: datetime, disable_failing_since: datetime
    ) -> list[Webhook]:
        """Store attempts (in the order they ended); the webhooks this disabled.

        A webhook whose deliveries have all failed since `disable_failing_since` or earlier is disabled, and
        so is one whose receiver answered 410 Gone.
        """
        if not attempts:
            return []
        cleared: set[str] = set()  # a success in this batch
        failing: dict[str, datetime] = {}  # first failure after the batch's last success
        for a in attempts:
            if a.status == "succeeded":
                cleared.add(a.webhook_id)
                failing.pop(a.webhook_id, None)
            else:
                failing.setdefault(a.webhook_id, a.attempted_at)
        w = webhooks.c
        with write_transaction(self._engine) as conn:
            _store_attempts(conn, attempts)
            recovered = sorted(cleared - failing.keys())
            if recovered:
                conn.execute(
                    webhooks.update()
                    .where(w.id.in_(recovered), w.failing_since.is_not(None))
                    .values(failing_since=None)
                )
            for webhook_id, since in failing.items():
                value = since if webhook_id in cleared else sa.func.coalesce(w.failing_since, since)
                conn.execute(webhooks.update().where(w.id == webhook_id).values(failing_since=value))
            gone = sorted({a.webhook_id for a in attempts if a.gone})
            disabled = disable(conn, gone, "the receiver answered 410 Gone", now)
            stale = []
            if failing:
                stale = conn.execute(
                    sa.select(w.id, w.failing_since).where(
                        w.id.in_(list(failing)), w.enabled, w.failing_since <= disable_failing_since
                    )
                ).all()
            for webhook_id, since in stale:
                reason = f"every delivery failed since {iso_utc(since)}"
                disabled += disable(conn, [webhook_id], reason, now)
            if disabled:  # attempts that ended after their webhook was disabled: park them
                conn.execute(
                    webhook_deliveries.update()
                    .where(_d.webhook_id.in_(disabled), _d.status.in_(_UNFINISHED))
                    .values(next_attempt_at=None)
                )
            hooks = load(conn, disabled) if disabled else {}
        if disabled:
            self.invalidate()
        return [hooks[webhook_id] for webhook_id in disabled if webhook_id in hooks]

    # the API's side

    def deliveries(
        self,
        webhook_id: str,
        *,
        status: str | None = None,
        before_seq: int | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[Delivery]:
        """A webhook's deliveries, newest first (page with `before_seq` = the last `audit_seq` received)."""
        query = sa.select(*_COLUMNS).where(_d.webhook_id == webhook_id)
        if status is not None:
            query = query.where(_d.status == status)
        if before_seq is not None:
            query = query.where(_d.audit_seq < before_seq)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(_d.audit_seq.desc()).limit(limit)).all()
        return [Delivery(*row) for row in rows]

    def get(self, delivery_id: str) -> Delivery | None:
        """One delivery with its body, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(*_COLUMNS).where(_d.id == delivery_id)).first()
            if row is None:
                return None
            body = _bodies(conn, [row.audit_seq]).get(row.audit_seq, b"")
        return Delivery(*row, body=body.decode())

    def redeliver(self, delivery_id: str, now: datetime) -> Delivery | None:
        """Make a delivery due now, under the same `webhook-id`; a finished one starts a fresh schedule."""
        with write_transaction(self._engine) as conn:
            status = conn.execute(
                sa.select(_d.status).where(_d.id == delivery_id).with_for_update()
            ).scalar_one_or_none()
            if status is None:
                return None
            values: dict[str, Any] = {"next_attempt_at": now}
            if status not in _UNFINISHED:
                values.update(status="pending", attempts=0)
            conn.execute(webhook_deliveries.update().where(_d.id == delivery_id).values(**values))
        return self.get(delivery_id)


def _bodies(conn: Connection, seqs: Iterable[int]) -> dict[int, bytes]:
    """The delivery bodies of audit records, by seq: their envelopes as canonical JSON."""
    a = audit_log.c
    columns = (a.seq, a.id, a.type, a.account, a.ts, a.payload, a.prev_hash, a.hash, a.signature, a.key_id)
    rows = conn.execute(sa.select(*columns).where(a.seq.in_(list(seqs))))
    return {row.seq: envelope_json(AuditRecord(*row)).encode() for row in rows}


def _test_target(conn: Connection, record: AuditRecord) -> tuple[Webhook, ...]:
    """A test event goes to the enabled webhook its payload names, whatever its patterns."""
    webhook_id = json.loads(record.payload_json).get("webhook_id")
    return tuple(h for h in load(conn, [webhook_id]).values() if h.enabled)


_INSERT_COLUMNS = (
    "id, webhook_id, account, audit_seq, event_type, status, attempts, next_attempt_at, created_at"
)


def _insert(
    conn: Connection, rows: Sequence[tuple[str, str, str, int, str]], now: datetime, next_at: datetime
) -> None:
    """Insert new deliveries (id, webhook, account, seq, type) with one executemany of plain SQL: the hot
    path, several rows per audit record."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO webhook_deliveries ({_INSERT_COLUMNS}) VALUES ({', '.join([mark] * 9)})"
    to_db = _ts_processor(conn)
    tail = ("pending", 0, to_db(next_at), to_db(now))
    conn.exec_driver_sql(sql, [(*row, *tail) for row in rows])


_COLUMNS = (
    _d.id,
    _d.webhook_id,
    _d.account,
    _d.audit_seq,
    _d.event_type,
    _d.status,
    _d.attempts,
    _d.next_attempt_at,
    _d.last_attempt_at,
    _d.last_status_code,
    _d.last_error,
    _d.created_at,
    _d.delivered_at,
    _d.latency_ms,
)

_RECORD_SQL = (
    "UPDATE webhook_deliveries SET status = {m}, attempts = {m}, next_attempt_at = {m}, "
    "last_attempt_at = {m}, last_status_code = {m}, last_error = {m}, "
    "delivered_at = coalesce({m}, delivered_at), latency_ms = coalesce({m}, latency_ms) WHERE id = {m}"
)


def _store_attempts(conn: Connection, attempts: Sequence[Attempt]) -> None:
    """One executemany of plain SQL: a few microseconds an attempt rather than tens through Core."""
    sql = _RECORD_SQL.format(m="?" if conn.dialect.paramstyle == "qmark" else "%s")
    ts = _ts_processor(conn)
    rows = []
    for a in attempts:
        at = ts(a.attempted_at)
        if a.status == "succeeded":
            rows.append(
                (a.status, a.attempts, None, at, a.status_code, None, at, a.latency_ms, a.delivery_id)
            )
        else:
            row = (a.status, a.attempts, ts(a.next_attempt_at), at, a.status_code, a.error, None, None)
            rows.append((*row, a.delivery_id))
    conn.exec_driver_sql(sql, rows)


def _ts_processor(conn: Connection) -> Callable[[datetime | None], Any]:
    """UTCDateTime's bind processor on this connection's dialect (SQLite: naive UTC text)."""
    processor = _d.created_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    if processor is None:
        return lambda value: value
    return lambda value: None if value is None else processor(value)
