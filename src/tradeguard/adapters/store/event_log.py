"""The event log: every event bots send (HTTP batch or NATS), stored once, plus the equity history.

An event is identified by `(account, id)`: `id` is the sender's idempotency key and only has to be unique
within its account. `store_batch` writes a whole batch in one transaction, all or nothing:

- an `(account, id)` already stored with the same content is a *duplicate*: not an error, nothing is
  written, and it may be acknowledged again (redelivery is idempotent);
- the same `(account, id)` with different content is a *conflict*, and an event the database cannot hold
  (a non-finite number, a NUL character) is *unstorable*: either rejects the whole batch with a reason per
  event (`BatchRejected`) and nothing is written.

Content is compared by `digest`, a SHA-256 over the validated envelope (its fields and the payload's JSON,
dict keys sorted), so two sends that mean the same thing (`Z` or `+00:00`, `1` or `1.0`, keys in another
order) are the same event. The digest depends on pydantic's JSON output: should an upgrade ever change how
it writes a number, a redelivery straddling the upgrade would be refused as a conflict, with the stored
original (same meaning) kept; nothing would be lost.

Inserts use plain SQL on the hot path (SQLite: executemany; PostgreSQL: one `INSERT ... SELECT FROM
unnest(...)` per table, binary parameters): about 30 us an event on SQLite and 60 us (client and server)
on PostgreSQL here, several times less than SQLAlchemy Core's per-row statement building.

`equity` events also fill `equity_history` (one row per account, exchange and `ts`; the first event for a
given instant wins) in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal, NamedTuple, cast

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Connection, Engine

from tradeguard.adapters.store.schema import Json, UTCDateTime, metadata
from tradeguard.adapters.store.store import _WRITE
from tradeguard.core.events import PAYLOADS, BalancePayload, EquityPayload, Event
from tradeguard.errors import InputError, TradeguardError

events = sa.Table(
    "events",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("bot", sa.Text, nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    # SHA-256 hex over the whole envelope (see _canonical): tells a redelivery from a conflict.
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("payload", Json, nullable=False),
    sa.PrimaryKeyConstraint("account", "id", name="pk_events"),
    sa.Index("ix_events_account_ts", "account", "ts"),
    sa.Index("ix_events_account_type_exchange_bot_ts", "account", "type", "exchange", "bot", "ts"),
)

equity_history = sa.Table(
    "equity_history",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("ts", UTCDateTime, nullable=False),
    sa.Column("total_equity", sa.Float, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),  # the equity event this point came from
    sa.PrimaryKeyConstraint("account", "exchange", "ts", name="pk_equity_history"),
)

_LOOKUP_CHUNK = 500  # ids per `IN (...)`: far below SQLite's and PostgreSQL's bind-parameter limits
_NUL = "\\u0000"  # how JSON writes a NUL character, which PostgreSQL text and jsonb refuse
_NOT_FINITE = "numbers must be finite (no NaN or infinity)"
_SCALARS = frozenset({str, int, bool, type(None), datetime})  # skipped quickly by _finite
_SEP = "\x1f"  # between the digested fields: a control character, in no name and escaped in JSON


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What `store_batch` did: ids newly stored and ids already stored (both acknowledged), batch order."""

    accepted_ids: list[str]
    duplicates: list[str]
    accepted: list[Event] = field(default_factory=list, repr=False)  # the newly stored events


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the event at `index` of a batch was refused."""

    index: int
    account: str
    id: str
    reason: Literal["conflict", "unstorable"]
    message: str


class BatchRejected(TradeguardError):
    """A batch was refused as a whole (nothing was written); `rejections` names each offending event."""

    def __init__(self, rejections: Sequence[Rejection]) -> None:
        self.rejections = list(rejections)
        first = self.rejections[0]
        super().__init__(
            f"{len(self.rejections)} event(s) refused, first: #{first.index} {first.id!r}: {first.message}"
        )

    @property
    def conflict(self) -> bool:
        """True when some event reuses a stored id with different content."""
        return any(r.reason == "conflict" for r in self.rejections)


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """One row of the equity history."""

    exchange: str
    ts: datetime
    total_equity: float
    currency: str
    event_id: str


def event_digest(event: Event) -> str:
    """SHA-256 hex of the event's canonical form; raises ValueError when the event cannot be stored."""
    return _canonical(event)[1]


def _canonical(event: Event) -> tuple[str, str]:
    """(payload JSON as stored, digest of the envelope). The digest is part of the stored format: keep it."""
    payload = event.payload
    if isinstance(payload, BalancePayload):  # its dicts keep the sender's key order: sort them
        try:
            text = json.dumps(
                payload.model_dump(mode="json", by_alias=True),
                sort_keys=True,
                separators=(",", ":"),
                allow_nan=False,
            )
        except ValueError:  # a NaN or an infinity: json.dumps refuses them
            raise ValueError(_NOT_FINITE) from None
    else:  # models only: the field order is fixed, and pydantic's serializer is several times faster
        text = payload.model_dump_json(by_alias=True)
        # pydantic writes a non-finite float as null: without a null there is none to look for
        if "null" in text and not _finite(payload):
            raise ValueError(_NOT_FINITE)
    if _NUL in text and _has_nul(json.loads(text)):
        raise ValueError("text must not contain NUL characters (U+0000)")
    head = _SEP.join((event.account, event.id, event.type, event.exchange, event.bot, event.ts.isoformat()))
    return text, hashlib.sha256(f"{head}{_SEP}{text}".encode()).hexdigest()


class _Item(NamedTuple):
    index: int
    event: Event
    digest: str
    payload: str  # JSON text


def event_errors(item: Any) -> list[dict[str, Any]]:
    """Every validation error of an envelope (`[{"loc": [...], "msg": ...}]`, empty when it is valid).

    `Event.model_validate` stops at the first invalid payload and reports it without the `payload` prefix;
    this validates the payload and the envelope separately, so a sender sees all of it, with full paths.
    """
    errors: list[dict[str, Any]] = []
    typed = isinstance(item, dict) and item.get("type") in PAYLOADS and "payload" in item
    if typed:
        kind = item["type"]
        if not isinstance(item["payload"], dict):
            errors = [{"loc": ["payload"], "msg": f"Input should be an object: the {kind} payload"}]
        else:
            try:
                item = {**item, "payload": PAYLOADS[kind].model_validate(item["payload"])}
            except ValidationError as exc:
                errors = [{"loc": ["payload", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        if errors:
            item = {key: value for key, value in item.items() if key != "payload"}
    try:
        Event.model_validate(item)
    except ValidationError as exc:
        found = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        if errors or any(e["loc"] == ["type"] for e in found):
            # The payload is reported already, or cannot be checked without a valid type.
            found = [
                e for e in found if e["loc"][:1] != ["payload"] or (e["loc"] == ["payload"] and not errors)
            ]
        errors.extend(found)
    return errors


class EventLog:
    """Stores and reads events and the equity history, in the store's database (share its engine)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            if write:  # SQLite: BEGIN IMMEDIATE, so concurrent writers queue instead of failing
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def store_batch(self, batch: Sequence[Event], received_at: datetime) -> StoreResult:
        """Store `batch` in one transaction: all of it, or nothing (`BatchRejected`, or a database error).

        Idempotent: an event already stored with the same content is reported in `duplicates` and not
        written again, so a redelivered batch succeeds with everything in `duplicates`.
        """
        received_at = _aware(received_at, "received_at")
        rejections: list[Rejection] = []
        fresh: dict[tuple[str, str], _Item] = {}  # first occurrence of each key in the batch
        order: list[tuple[tuple[str, str], bool]] = []  # (key, repeated within the batch), batch order
        for index, event in enumerate(batch):
            key = (event.account, event.id)
            try:
                payload, digest = _canonical(event)
            except ValueError as exc:
                rejections.append(Rejection(index, event.account, event.id, "unstorable", str(exc)))
                continue
            seen = fresh.get(key)
            if seen is None:
                fresh[key] = _Item(index, event, digest, payload)
                order.append((key, False))
            elif seen.digest == digest:
                order.append((key, True))
            else:
                message = f"id repeated with different content in this batch (first at #{seen.index})"
                rejections.append(Rejection(index, event.account, event.id, "conflict", message))
        if rejections:
            raise BatchRejected(rejections)
        if not fresh:
            return StoreResult([], [])
        with self._transaction(write=True) as conn:
            stored = _digests(conn, fresh)
            rejections = _conflicts(fresh, stored)
            if rejections:
                raise BatchRejected(rejections)
            new = {key: item for key, item in fresh.items() if key not in stored}
            if new:
                inserted = _insert(conn, new.values(), received_at)
                raced = {key: item for key, item in new.items() if key not in inserted}
                if raced:
                    # PostgreSQL: a concurrent transaction committed some of these keys after the look-up, and
                    # ON CONFLICT skipped ours. The same content is a duplicate; other content, a conflict.
                    won = _digests(conn, raced)
                    rejections = _conflicts(raced, won)
                    if rejections:
                        raise BatchRejected(rejections)
                    stored.update(won)
        accepted_ids: list[str] = []
        duplicates: list[str] = []
        accepted: list[Event] = []
        for key, repeated in order:
            if repeated or key in stored:
                duplicates.append(key[1])
            else:
                accepted_ids.append(key[1])
                accepted.append(fresh[key].event)
        return StoreResult(accepted_ids, duplicates, accepted)

    def get(self, account: str, event_id: str) -> Event | None:
        """The stored event `event_id` of `account`, or None."""
        query = _SELECT.where(events.c.account == account, events.c.id == event_id)
        with self._transaction() as conn:
            row = conn.execute(query).first()
        return None if row is None else _event(row)

    def latest_by_type(self, account: str, type: str, exchange: str | None = None) -> list[Event]:
        """The latest event (by `ts`) of `type` from each (exchange, bot) of `account`, sorted by them.

        With `exchange`, only that exchange's bots. Ties on `ts` go to the later received, then the higher id.
        """
        c = events.c
        where = [c.account == account, c.type == type]
        if exchange is not None:
            where.append(c.exchange == exchange)
        rank = (
            sa.func.row_number()
            .over(partition_by=(c.exchange, c.bot), order_by=(c.ts.desc(), c.received_at.desc(), c.id.desc()))
            .label("rank")
        )
        ranked = sa.select(*_COLUMNS, rank).where(*where).subquery()
        query = (
            sa.select(*(ranked.c[col.name] for col in _COLUMNS))
            .where(ranked.c.rank == 1)
            .order_by(ranked.c.exchange, ranked.c.bot)
        )
        with self._transaction() as conn:
            return [_event(row) for row in conn.execute(query)]

    def since(
        self, account: str, ts: datetime, types: Iterable[str] | None = None, *, limit: int | None = None
    ) -> list[Event]:
        """Events of `account` with `ts` at or after `ts` (of `types` only, if given), oldest first."""
        c = events.c
        query = _SELECT.where(c.account == account, c.ts >= _aware(ts, "ts")).order_by(c.ts, c.id)
        if types is not None:
            query = query.where(c.type.in_(list(types)))
        if limit is not None:
            if limit <= 0:
                raise InputError(f"limit must be positive, got {limit}")
            query = query.limit(limit)
        with self._transaction() as conn:
            return [_event(row) for row in conn.execute(query)]

    def equity_history(
        self,
        account: str,
        start: datetime | None = None,
        end: datetime | None = None,
        exchange: str | None = None,
    ) -> list[EquityPoint]:
        """Equity points of `account` with `ts` in [start, end] (inclusive, open if None), oldest first."""
        c = equity_history.c
        query = (
            sa.select(c.exchange, c.ts, c.total_equity, c.currency, c.event_id)
            .where(c.account == account)
            .order_by(c.ts, c.exchange)
        )
        if start is not None:
            query = query.where(c.ts >= _aware(start, "start"))
        if end is not None:
            query = query.where(c.ts <= _aware(end, "end"))
        if exchange is not None:
            query = query.where(c.exchange == exchange)
        with self._transaction() as conn:
            return [EquityPoint(*row) for row in conn.execute(query)]

    def accounts(self) -> list[str]:
        """Every account that has sent events."""
        with self._transaction() as conn:
            return list(
                conn.execute(sa.select(events.c.account).distinct().order_by(events.c.account)).scalars()
            )

    def count(self, account: str | None = None) -> int:
        """The number of stored events (of one account, or of all)."""
        query = sa.select(sa.func.count()).select_from(events)
        if account is not None:
            query = query.where(events.c.account == account)
        with self._transaction() as conn:
            return int(conn.execute(query).scalar_one())


_COLUMNS = (
    events.c.id,
    events.c.type,
    events.c.account,
    events.c.exchange,
    events.c.bot,
    events.c.ts,
    events.c.payload,
)
_SELECT = sa.select(*_COLUMNS)


def _digests(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Stored digests of those `(account, id)` keys that exist."""
    if conn.dialect.name == "postgresql":
        pairs = list(keys)
        rows = conn.exec_driver_sql(
            _PG_DIGESTS, {"account": [a for a, _ in pairs], "id": [i for _, i in pairs]}
        )
        return {(account, event_id): digest for account, event_id, digest in rows}
    by_account: dict[str, list[str]] = {}
    for account, event_id in keys:
        by_account.setdefault(account, []).append(event_id)
    found: dict[tuple[str, str], str] = {}
    c = events.c
    # SQLite, the embedded store's hot path: plain SQL on the DB-API connection (in this transaction), as
    # a batch spans many accounts and a Core statement costs several times the look-up itself.
    raw = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
    for account, ids in by_account.items():
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            if raw is not None:
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT id, digest FROM events WHERE account = ? AND id IN ({marks})"
                rows = raw.execute(sql, (account, *chunk)).fetchall()
            else:
                rows = conn.execute(sa.select(c.id, c.digest).where(c.account == account, c.id.in_(chunk)))
            found.update({(account, event_id): digest for event_id, digest in rows})
    return found


_PG_DIGESTS = """
SELECT e.account, e.id, e.digest
FROM events e JOIN unnest(%(account)b::text[], %(id)b::text[]) AS k(account, id) USING (account, id)
"""


def _conflicts(items: dict[tuple[str, str], _Item], stored: dict[tuple[str, str], str]) -> list[Rejection]:
    return [
        Rejection(
            it.index, it.event.account, it.event.id, "conflict", "id already stored with different content"
        )
        for key, it in items.items()
        if key in stored and stored[key] != it.digest
    ]


def _insert(conn: Connection, new: Iterable[_Item], received_at: datetime) -> set[tuple[str, str]]:
    """Insert the events (and their equity points); the keys actually inserted."""
    # Rows go in key order, so concurrent PostgreSQL writers lock overlapping keys in the same order (no
    # deadlock between two batches sharing ids in different orders).
    items = sorted(new, key=lambda item: (item.event.account, item.event.id))
    if conn.dialect.name == "sqlite":
        return _insert_sqlite(conn, items, received_at)
    equity = [item.event for item in items if isinstance(item.event.payload, EquityPayload)]
    return _insert_postgresql(conn, items, equity, received_at)


def _insert_postgresql(
    conn: Connection, items: list[_Item], equity: list[Event], received_at: datetime
) -> set[tuple[str, str]]:
    """PostgreSQL: one INSERT ... SELECT FROM unnest(arrays) per table, RETURNING the keys inserted.

    A statement per batch rather than a 4,500-placeholder VALUES list for psycopg to parse; parameters in
    binary (`%(name)b`), as psycopg's text format escapes every array element with a regular expression.
    """
    rows = conn.exec_driver_sql(
        _PG_INSERT_EVENTS,
        {
            "account": [item.event.account for item in items],
            "id": [item.event.id for item in items],
            "type": [item.event.type for item in items],
            "exchange": [item.event.exchange for item in items],
            "bot": [item.event.bot for item in items],
            "ts": [item.event.ts for item in items],
            "digest": [item.digest for item in items],
            "payload": [item.payload for item in items],  # the JSON text made for the digest
            "received_at": received_at,
        },
    )
    inserted = {(account, event_id) for account, event_id in rows}
    points = [e for e in equity if (e.account, e.id) in inserted]  # a raced one brought its own point
    if points:
        conn.exec_driver_sql(
            _PG_INSERT_EQUITY,
            {
                "account": [e.account for e in points],
                "exchange": [e.exchange for e in points],
                "ts": [e.ts for e in points],
                "total_equity": [cast(EquityPayload, e.payload).total_equity for e in points],
                "currency": [cast(EquityPayload, e.payload).currency for e in points],
                "event_id": [e.id for e in points],
            },
        )
    return inserted


_PG_INSERT_EVENTS = """
INSERT INTO events (account, id, type, exchange, bot, ts, received_at, digest, payload)
SELECT account, id, type, exchange, bot, ts, %(received_at)b, digest, payload::jsonb
FROM unnest(%(account)b::text[], %(id)b::text[], %(type)b::text[], %(exchange)b::text[], %(bot)b::text[],
            %(ts)b::timestamptz[], %(digest)b::text[], %(payload)b::text[])
     WITH ORDINALITY AS u(account, id, type, exchange, bot, ts, digest, payload, n)
ORDER BY n
ON CONFLICT (account, id) DO NOTHING
RETURNING account, id
"""
_PG_INSERT_EQUITY = """
INSERT INTO equity_history (account, exchange, ts, total_equity, currency, event_id)
SELECT * FROM unnest(%(account)b::text[], %(exchange)b::text[], %(ts)b::timestamptz[],
                     %(total_equity)b::float8[], %(currency)b::text[], %(event_id)b::text[])
ON CONFLICT (account, exchange, ts) DO NOTHING
"""


def _insert_sqlite(conn: Connection, items: list[_Item], received_at: datetime) -> set[tuple[str, str]]:
    """SQLite: plain executemany, with the columns' own SQLAlchemy bind processors (the stored format is
    the one every Core query compares with). The write lock is held since BEGIN IMMEDIATE and every key
    was looked up in this transaction, so every row is inserted."""
    to_db = _ts_processor(conn.dialect)
    received = to_db(received_at)
    rows: list[tuple[Any, ...]] = []
    points: list[tuple[Any, ...]] = []
    for _, event, digest, payload in items:
        ts = to_db(event.ts)
        rows.append(
            (event.account, event.id, event.type, event.exchange, event.bot, ts, received, digest, payload)
        )
        equity = event.payload
        if isinstance(equity, EquityPayload):
            points.append((event.account, event.exchange, ts, equity.total_equity, equity.currency, event.id))
    conn.exec_driver_sql(_SQLITE_INSERT_EVENT, rows)
    if points:
        conn.exec_driver_sql(_SQLITE_INSERT_EQUITY, points)
    return {(item.event.account, item.event.id) for item in items}


_SQLITE_INSERT_EVENT = (
    "INSERT INTO events (account, id, type, exchange, bot, ts, received_at, digest, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, id) DO NOTHING"
)
_SQLITE_INSERT_EQUITY = (
    "INSERT INTO equity_history (account, exchange, ts, total_equity, currency, event_id) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, exchange, ts) DO NOTHING"
)


@lru_cache(maxsize=8)  # one per dialect: it runs for every batch
def _ts_processor(dialect: Any) -> Callable[[datetime], Any]:
    """UTCDateTime's bind processor on `dialect` (on SQLite: naive UTC text), or `_sqlite_text` where that
    writes the very same text for the probes (a third of the cost: it runs for every event)."""
    processor = events.c.ts.type.dialect_impl(dialect).bind_processor(dialect)
    if processor is None:
        return lambda value: value
    if dialect.name == "sqlite" and all(_sqlite_text(p) == processor(p) for p in _PROBES):
        return _sqlite_text
    return processor


def _sqlite_text(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME text of a timezone-aware datetime, in UTC."""
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: store timezone-aware UTC datetimes")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


_PROBES = (
    datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1999, 12, 31, 22, 0, tzinfo=timezone(timedelta(hours=3, minutes=30))),  # no microseconds
)


def _event(row: sa.Row[Any]) -> Event:
    return Event.model_validate(
        {
            "id": row.id,
            "type": row.type,
            "account": row.account,
            "exchange": row.exchange,
            "bot": row.bot,
            "ts": row.ts,
            "payload": row.payload,
        }
    )


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a payload (JSON has neither; pydantic would write them as null)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind in _SCALARS:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, BaseModel):
            stack.extend(item.__dict__.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return True


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)
