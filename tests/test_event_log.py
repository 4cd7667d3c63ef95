"""The event log's contract on both backends: SQLite (a temporary file) and the local PostgreSQL.

Batches are all or nothing, redelivery is idempotent, a reused id with other content is a conflict, and
equity events fill the equity history in the same transaction. PostgreSQL tests use a fresh database per
test; when PostgreSQL is not reachable on 127.0.0.1:5432 they skip locally and fail under CI=true.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError

from tradeguard.adapters.store import Store
from tradeguard.adapters.store import event_log as event_log_module
from tradeguard.adapters.store.event_log import BatchRejected, EventLog, equity_history, events
from tradeguard.adapters.store.schema import metadata
from tradeguard.adapters.store.store import create_store_engine
from tradeguard.core.events import Event

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 3, 1, 12, 0, 5, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TABLES = ("events", "equity_history")


@pytest.fixture
def engine(store_url: str) -> Iterator[sa.Engine]:
    """An engine whose database holds the event tables (created from the metadata, not the migrations)."""
    engine = create_store_engine(store_url)
    metadata.create_all(engine, tables=[events, equity_history])
    yield engine
    engine.dispose()


@pytest.fixture
def log(engine: sa.Engine) -> EventLog:
    return EventLog(engine)


def envelope(
    i: int,
    type_: str = "equity",
    *,
    account: str = "acme",
    exchange: str = "binance",
    bot: str = "bot-1",
    ts: datetime | None = None,
    **payload: Any,
) -> dict[str, Any]:
    """The wire form of event `e<i>`; `payload` overrides the type's default payload fields."""
    ts = ts or T0 + i * MINUTE
    defaults: dict[str, dict[str, Any]] = {
        "equity": {"total_equity": 1000.0 + i, "currency": "USDT"},
        "positions": {"positions": [{"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.1 * (i + 1)}]},
        "balance": {"total": {"USDT": 500.0 + i}},
    }
    return {
        "id": f"e{i}",
        "type": type_,
        "account": account,
        "exchange": exchange,
        "bot": bot,
        "ts": ts.isoformat(),
        "payload": defaults[type_] | payload,
    }


def event(i: int, type_: str = "equity", **kw: Any) -> Event:
    return Event.model_validate(envelope(i, type_, **kw))


def stored_ids(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(events.c.account, events.c.id).order_by("id"))]


def test_store_and_read_back(log: EventLog) -> None:
    batch = [event(0), event(1, "positions"), event(2, "balance", exchange="okx")]
    result = log.store_batch(batch, RECEIVED)
    assert result.accepted_ids == ["e0", "e1", "e2"] and result.duplicates == []
    assert result.accepted == batch
    assert log.get("acme", "e1") == batch[1]
    assert log.get("other", "e1") is None
    assert log.since("acme", T0) == batch
    assert log.since("acme", T0 + MINUTE) == batch[1:]  # inclusive
    assert log.since("acme", T0, types=["positions", "balance"], limit=1) == [batch[1]]
    back = log.get("acme", "e0")
    assert back is not None and back.ts.tzinfo is not None and back.ts == T0
    assert back.wire() == batch[0].wire()


def test_a_batch_is_all_or_nothing(log: EventLog, engine: sa.Engine) -> None:
    log.store_batch([event(0)], RECEIVED)
    changed = event(0, total_equity=1.0)  # same id, other content
    with pytest.raises(BatchRejected) as caught:
        log.store_batch([event(1), event(2), changed, event(3)], RECEIVED)
    [rejection] = caught.value.rejections
    assert (rejection.index, rejection.id, rejection.reason) == (2, "e0", "conflict")
    assert caught.value.conflict
    assert stored_ids(engine) == [("acme", "e0")]
    assert log.get("acme", "e0") == event(0)  # the first content stays


def test_a_database_failure_mid_batch_leaves_nothing(
    log: EventLog, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_insert = event_log_module._insert

    def insert_then_fail(conn: sa.Connection, *args: Any) -> None:
        real_insert(conn, *args)
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(event_log_module, "_insert", insert_then_fail)
    with pytest.raises(sa.exc.OperationalError):
        log.store_batch([event(0), event(1)], RECEIVED)
    monkeypatch.undo()
    assert stored_ids(engine) == []
    assert log.equity_history("acme") == []
    assert log.store_batch([event(0), event(1)], RECEIVED).accepted_ids == ["e0", "e1"]


def test_redelivery_is_idempotent(log: EventLog, engine: sa.Engine) -> None:
    first = log.store_batch([event(0), event(1)], RECEIVED)
    again = log.store_batch([event(0), event(1)], RECEIVED + MINUTE)
    assert first.accepted_ids == ["e0", "e1"]
    assert again.accepted_ids == [] and again.duplicates == ["e0", "e1"] and again.accepted == []
    overlap = log.store_batch([event(1), event(2)], RECEIVED)
    assert overlap.accepted_ids == ["e2"] and overlap.duplicates == ["e1"]
    assert log.count() == 3 and log.count("acme") == 3
    assert len(log.equity_history("acme")) == 3


def test_same_content_in_another_spelling_is_a_duplicate(log: EventLog) -> None:
    log.store_batch([event(0)], RECEIVED)
    wire = envelope(0)
    wire["ts"] = T0.strftime("%Y-%m-%dT%H:%M:%SZ")  # "Z" instead of "+00:00"
    wire["payload"] = {"currency": "USDT", "total_equity": 1000}  # int, other key order
    assert log.store_batch([Event.model_validate(wire)], RECEIVED).duplicates == ["e0"]


def test_ids_are_unique_per_account(log: EventLog) -> None:
    result = log.store_batch([event(0), event(0, account="other", total_equity=5.0)], RECEIVED)
    assert result.accepted_ids == ["e0", "e0"]
    assert log.count("acme") == 1 and log.count("other") == 1


def test_repeats_within_one_batch(log: EventLog, engine: sa.Engine) -> None:
    result = log.store_batch([event(0), event(1), event(0)], RECEIVED)
    assert result.accepted_ids == ["e0", "e1"] and result.duplicates == ["e0"]
    with pytest.raises(BatchRejected) as caught:
        log.store_batch([event(5), event(6), event(5, total_equity=2.0)], RECEIVED)
    [rejection] = caught.value.rejections
    assert (rejection.index, rejection.id, rejection.reason) == (2, "e5", "conflict")
    assert "first at #0" in rejection.message
    assert log.count() == 2


@pytest.mark.parametrize(
    ("type_", "payload", "message"),
    [
        ("balance", {"total": {"USDT": float("inf")}}, "finite"),
        ("equity", {"currency": "US\x00DT"}, "NUL"),
    ],
)
def test_unstorable_events_are_rejected_before_the_database(
    log: EventLog, engine: sa.Engine, type_: str, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(BatchRejected) as caught:
        log.store_batch([event(0), event(1, type_, **payload)], RECEIVED)
    [rejection] = caught.value.rejections
    assert rejection.index == 1 and rejection.reason == "unstorable" and message in rejection.message
    assert not caught.value.conflict
    assert stored_ids(engine) == []


def test_an_infinite_equity_is_refused_by_the_envelope() -> None:
    with pytest.raises(ValidationError, match="finite"):
        event(0, total_equity=float("inf"))


def test_equity_history_is_filled_from_equity_events(log: EventLog) -> None:
    log.store_batch(
        [
            event(0),
            event(1, "positions"),
            event(2, exchange="okx", total_equity=50.0, currency="USDC"),
            event(3),
            event(4, bot="bot-2", ts=T0 + 3 * MINUTE, total_equity=7.0),  # same instant: the first wins
        ],
        RECEIVED,
    )
    points = log.equity_history("acme")
    assert [(p.exchange, p.ts, p.total_equity, p.currency, p.event_id) for p in points] == [
        ("binance", T0, 1000.0, "USDT", "e0"),
        ("okx", T0 + 2 * MINUTE, 50.0, "USDC", "e2"),
        ("binance", T0 + 3 * MINUTE, 1003.0, "USDT", "e3"),
    ]
    assert [p.event_id for p in log.equity_history("acme", T0 + 2 * MINUTE, T0 + 3 * MINUTE)] == ["e2", "e3"]
    assert [p.event_id for p in log.equity_history("acme", end=T0, exchange="binance")] == ["e0"]
    assert log.equity_history("other") == []


def test_latest_by_type_per_exchange_and_bot(log: EventLog) -> None:
    log.store_batch(
        [
            event(0, "positions"),
            event(5, "positions"),
            event(3, "positions", bot="bot-2"),
            event(9, "positions", exchange="okx"),
            event(7, "balance"),
            event(8, "positions", account="other"),
        ],
        RECEIVED,
    )
    latest = log.latest_by_type("acme", "positions")
    assert [(e.exchange, e.bot, e.id) for e in latest] == [
        ("binance", "bot-1", "e5"),
        ("binance", "bot-2", "e3"),
        ("okx", "bot-1", "e9"),
    ]
    assert [e.id for e in log.latest_by_type("acme", "positions", exchange="okx")] == ["e9"]
    assert log.latest_by_type("acme", "trade") == []


def test_concurrent_overlapping_writers_store_each_event_once(store_url: str, engine: sa.Engine) -> None:
    logs = [EventLog(create_store_engine(store_url)) for _ in range(3)]
    errors: list[BaseException] = []
    results: list[tuple[list[str], list[str]]] = []
    lock = threading.Lock()

    def work(n: int, log: EventLog) -> None:
        try:
            for start in range(0, 60, 10):  # every writer sends the same 60 events, shifted, in its own order
                batch = [event(i) for i in range(start + n, min(start + n + 10, 60))]
                if n % 2:
                    batch.reverse()
                result = log.store_batch(batch, RECEIVED)
                with lock:
                    results.append((result.accepted_ids, result.duplicates))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n, log)) for n, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log._engine.dispose()
    assert errors == []
    accepted = [i for a, _ in results for i in a]
    assert sorted(accepted) == sorted(f"e{i}" for i in range(60))  # each stored exactly once
    assert len(stored_ids(engine)) == 60


def _table_of(diff: Any) -> str | None:
    """The table a compare_metadata entry is about."""
    if isinstance(diff, list):
        return _table_of(diff[0])
    for item in diff[1:]:
        if isinstance(item, sa.Table):
            return item.name
        if isinstance(item, sa.Index | sa.Column) and item.table is not None:
            return item.table.name
        if isinstance(item, sa.UniqueConstraint | sa.PrimaryKeyConstraint) and item.table is not None:
            return item.table.name
    return diff[2] if len(diff) > 2 and isinstance(diff[2], str) else None


def test_the_migrations_create_exactly_these_tables(store_url: str) -> None:
    with Store.open(store_url) as store, store.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        log = EventLog(store.engine)
        assert log.store_batch([event(0)], RECEIVED).accepted_ids == ["e0"]
    assert set(TABLES) <= tables
    assert [d for d in diff if _table_of(d) in TABLES] == []
