"""The durable store: accounts, API keys and the assessment history, on SQLite (default) or PostgreSQL.

One small synchronous interface over SQLAlchemy Core. `Store.open` brings the schema to the latest Alembic
revision before returning. Every method runs in its own transaction, so a failed write leaves nothing
behind. On SQLite, write transactions take the write lock up front (`BEGIN IMMEDIATE`) so that concurrent
writers queue on `busy_timeout` instead of failing mid-transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import re
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from tradeguard.adapters.store.schema import SCOPES, accounts, api_keys, assessments
from tradeguard.errors import InputError

DEFAULT_STORE_URL = "sqlite:///var/tradeguard.db"  # relative to the working directory
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is refreshed at most this often

KEY_PREFIX = "tg"
KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
KEY_ID_LENGTH = 12
_TOKEN = re.compile(rf"{KEY_PREFIX}_([a-z0-9]{{{KEY_ID_LENGTH}}})_([A-Za-z0-9_-]{{43}})")  # token_urlsafe(32)
_WRITE = "tradeguard_write"  # execution option: this transaction writes
_MIGRATION_LOCK_KEY = 0x7467_6D69_6772  # pg_advisory_xact_lock key: one migrator at a time


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as stored: never the secret."""

    key_id: str
    account: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    description: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key. `token` (`tg_<key_id>_<secret>`) exists only here: the store keeps a hash."""

    key_id: str
    account: str
    scope: str
    token: str = field(repr=False)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A writing transaction: BEGIN IMMEDIATE on SQLite, so concurrent writers queue rather than fail.

    On SQLite the writers of this process also queue on a lock of the engine first: SQLite's busy handler
    polls with sleeps of up to 100 ms, which under steady write traffic (audit appends, webhook outcomes)
    turned waits of a millisecond into hundreds. Other processes still queue on busy_timeout.
    """
    lock = _sqlite_write_lock(engine) if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    with lock, engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


def _sqlite_write_lock(engine: Engine) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _SQLITE_WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _SQLITE_WRITE_LOCKS[engine] = threading.RLock()
        return lock


_LOCKS_GUARD = threading.Lock()
_SQLITE_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def alembic_config(connection: Connection) -> Config:
    """Alembic configuration of the store's migrations, running on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def create_store_engine(url: str) -> Engine:
    """An engine for a SQLite or PostgreSQL URL; `postgresql://` uses the psycopg 3 driver."""
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise InputError(f"invalid store URL {url!r}: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    raise InputError(
        f"unsupported store URL {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    if not in_memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # An in-memory database lives as long as its one connection: share that connection.
    engine = sa.create_engine(url, poolclass=StaticPool) if in_memory else sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin): pysqlite's own implicit transactions start
        # late, after reads, and never around DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            # synchronous stays FULL (the default): a committed write survives a power loss.
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Store:
    """Accounts, API keys and assessment history in one SQL database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to `url` and migrate its schema to the latest revision."""
        store = cls(create_store_engine(url))
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    @property
    def engine(self) -> Engine:
        """The underlying engine, for adapters sharing this database and for tests."""
        return self._engine

    def migrate(self) -> None:
        """Apply pending migrations (`upgrade head`) in one transaction; a no-op when up to date."""
        with self._transaction(write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            command.upgrade(alembic_config(conn), "head")

    def close(self) -> None:
        """Release all connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            if write:
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    # accounts

    def ensure_account(self, name: str, now: datetime | None = None) -> int:
        """The id of account `name`, created (at `now`, default the wall clock) if it does not exist."""
        name = _account_name(name)
        created = _aware(now, "now") if now is not None else datetime.now(UTC)
        with self._transaction(write=True) as conn:
            return _ensure_account(conn, name, created)

    # API keys

    def create_key(
        self, account: str, scope: str, description: str | None = None, *, now: datetime
    ) -> IssuedKey:
        """Issue a key for `account` (created if new) with `scope`. The token is returned only here."""
        account = _account_name(account)
        scope = _scope(scope)
        now = _aware(now, "now")
        key_id = new_key_id()
        secret = secrets.token_urlsafe(32)
        with self._transaction(write=True) as conn:
            account_id = _ensure_account(conn, account, now)
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    account_id=account_id,
                    scope=scope,
                    secret_hash=_hash_secret(secret),
                    created_at=now,
                    description=description,
                )
            )
        return IssuedKey(key_id=key_id, account=account, scope=scope, token=f"{KEY_PREFIX}_{key_id}_{secret}")

    def verify_key(self, token: str, now: datetime) -> KeyRecord | None:
        """The active key matching `token`, or None if it is malformed, unknown, wrong or revoked.

        Records the use in `last_used_at`, at most once per LAST_USED_RESOLUTION (not a write per request).
        """
        now = _aware(now, "now")
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._transaction() as conn:
            row = conn.execute(_KEY_QUERY.where(api_keys.c.key_id == key_id)).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash_secret(secret)):
            return None
        record = _key_record(row)
        if not record.active:
            return None
        stale = now - LAST_USED_RESOLUTION
        if record.last_used_at is None or record.last_used_at <= stale:
            with self._transaction(write=True) as conn:
                updated = conn.execute(
                    api_keys.update()
                    .where(
                        api_keys.c.key_id == key_id,
                        sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= stale),
                    )
                    .values(last_used_at=now)
                ).rowcount
            if updated:
                return replace(record, last_used_at=now)
        return record

    def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first. Secrets and hashes are never returned."""
        with self._transaction() as conn:
            rows = conn.execute(_KEY_QUERY.order_by(api_keys.c.created_at, api_keys.c.id)).all()
        return [_key_record(row) for row in rows]

    def revoke_key(self, key_id: str, now: datetime) -> bool:
        """Revoke a key for good; False if no such key. Revoking twice keeps the first revocation time."""
        now = _aware(now, "now")
        with self._transaction(write=True) as conn:
            exists = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.key_id == key_id)).first()
            if exists is None:
                return False
            conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return True

    def count_keys(self, scope: str | None = None) -> int:
        """The number of active (not revoked) keys, of one scope or of all."""
        query = sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
        if scope is not None:
            query = query.where(api_keys.c.scope == _scope(scope))
        with self._transaction() as conn:
            return int(conn.execute(query).scalar_one())

    # assessment history

    def save_assessment(self, exchange: str, pair: str, timeframe: str, payload: Mapping[str, Any]) -> None:
        """Store one assessment (the whole dict, as JSON); a recomputation of the same candle replaces it.

        `payload` needs `as_of` and `evaluated_at` (aware datetimes or ISO-8601 strings), `safe_to_trade`,
        `risk_score` and `regime`. Datetimes inside it are stored as ISO-8601 strings, NaN and infinities
        as null (JSON has neither).
        """
        document = _jsonable(payload)
        if not isinstance(document, dict):
            raise InputError(f"an assessment must be a mapping, got {type(payload).__name__}")
        safe = document.get("safe_to_trade")
        if not isinstance(safe, bool):
            raise InputError(f"assessment safe_to_trade must be true or false, got {safe!r}")
        risk_score = document.get("risk_score")
        if risk_score is not None and (
            isinstance(risk_score, bool) or not isinstance(risk_score, int | float)
        ):
            raise InputError(f"assessment risk_score must be a number or null, got {risk_score!r}")
        regime = document.get("regime")
        if regime is not None and not isinstance(regime, str):
            raise InputError(f"assessment regime must be a string or null, got {regime!r}")
        row = {
            "exchange": _nonempty(exchange, "exchange"),
            "pair": _nonempty(pair, "pair"),
            "timeframe": _nonempty(timeframe, "timeframe"),
            "as_of": _timestamp(document.get("as_of"), "as_of"),
            "evaluated_at": _timestamp(document.get("evaluated_at"), "evaluated_at"),
            "safe_to_trade": safe,
            "risk_score": risk_score,
            "regime": regime,
            "payload": document,
        }
        with self._transaction(write=True) as conn:
            insert = _INSERT[conn.dialect.name](assessments).values(**row)
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=_SERIES_KEY,
                    set_={name: insert.excluded[name] for name in _REPLACED_ON_CONFLICT},
                )
            )

    def assessment_history(
        self,
        exchange: str,
        pair: str,
        timeframe: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Stored assessments with `as_of` in [start, end] (both inclusive, open if None), oldest first.

        With `limit`, the first `limit` of them (page forward by starting after the last `as_of`). Each is
        the saved payload with `as_of` and `evaluated_at` as timezone-aware UTC datetimes.
        """
        query = _series(exchange, pair, timeframe).order_by(assessments.c.as_of)
        if start is not None:
            query = query.where(assessments.c.as_of >= _aware(start, "start"))
        if end is not None:
            query = query.where(assessments.c.as_of <= _aware(end, "end"))
        if limit is not None:
            if limit <= 0:
                raise InputError(f"limit must be positive, got {limit}")
            query = query.limit(limit)
        with self._transaction() as conn:
            return [_assessment(row) for row in conn.execute(query)]

    def latest_assessment(self, exchange: str, pair: str, timeframe: str) -> dict[str, Any] | None:
        """The stored assessment with the latest `as_of` for the series, or None."""
        query = _series(exchange, pair, timeframe).order_by(assessments.c.as_of.desc()).limit(1)
        with self._transaction() as conn:
            row = conn.execute(query).first()
        return None if row is None else _assessment(row)


def new_key_id() -> str:
    """A random public key id: 12 characters of [a-z0-9] (62 bits, so collisions are negligible)."""
    return "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))


_KEY_QUERY = sa.select(
    api_keys.c.key_id,
    accounts.c.name.label("account"),
    api_keys.c.scope,
    api_keys.c.secret_hash,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
    api_keys.c.description,
).join_from(api_keys, accounts)

_INSERT: dict[str, Callable[[sa.Table], Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
_SERIES_KEY = [assessments.c.exchange, assessments.c.pair, assessments.c.timeframe, assessments.c.as_of]
_REPLACED_ON_CONFLICT = ("evaluated_at", "safe_to_trade", "risk_score", "regime", "payload")


def _ensure_account(conn: Connection, name: str, now: datetime) -> int:
    conn.execute(
        _INSERT[conn.dialect.name](accounts)
        .values(name=name, created_at=now)
        .on_conflict_do_nothing(index_elements=[accounts.c.name])
    )
    return int(conn.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).scalar_one())


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key_record(row: sa.Row[Any]) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        account=row.account,
        scope=row.scope,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        description=row.description,
    )


def _series(exchange: str, pair: str, timeframe: str) -> sa.Select[Any]:
    c = assessments.c
    return sa.select(c.as_of, c.evaluated_at, c.payload).where(
        c.exchange == exchange, c.pair == pair, c.timeframe == timeframe
    )


def _assessment(row: sa.Row[Any]) -> dict[str, Any]:
    return {**row.payload, "as_of": row.as_of, "evaluated_at": row.evaluated_at}


def _account_name(name: str) -> str:
    name = _nonempty(name, "account name")
    if len(name) > 200 or not name.isprintable() or name != name.strip():
        raise InputError(
            f"invalid account name {name!r}: use up to 200 printable characters, no surrounding spaces"
        )
    return name


def _scope(scope: str) -> str:
    if scope not in SCOPES:
        raise InputError(f"invalid scope {scope!r}: use one of {', '.join(SCOPES)}")
    return scope


def _nonempty(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _timestamp(value: Any, what: str) -> datetime:
    """An ISO-8601 string (as produced by _jsonable) as an aware UTC datetime."""
    if not isinstance(value, str):
        raise InputError(f"assessment {what} must be a datetime or an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"assessment {what}: invalid ISO-8601 time {value!r}") from exc
    return _aware(parsed, f"assessment {what}")


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON types: datetimes as ISO-8601, numpy scalars as Python, NaN/inf as None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars (numpy.bool_, numpy.int64...)
    if callable(item):
        return _jsonable(item())
    raise InputError(f"assessment value {value!r} of type {type(value).__name__} is not JSON-serialisable")
