"""The store's contract, run against both backends: SQLite (a temporary file) and the local PostgreSQL.

PostgreSQL tests create a fresh database per test and drop it afterwards. When PostgreSQL is not
reachable on 127.0.0.1:5432 they skip locally and fail under CI=true.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tradeguard.adapters.store import SCOPES, Store
from tradeguard.adapters.store import store as store_module
from tradeguard.adapters.store.guard_state import (
    FLEET,
    GuardState,
    KillSwitch,
    KillSwitchCache,
    kill_switches,
)
from tradeguard.adapters.store.schema import accounts, api_keys, assessments, metadata
from tradeguard.errors import InputError

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def head_revision() -> str:
    """The newest migration, so this test does not change with every new migration."""
    from alembic.script import ScriptDirectory

    from tradeguard.adapters.store.store import alembic_config

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as opened:
        yield opened


def payload(as_of: datetime, **fields: object) -> dict[str, object]:
    return {
        "pair": "BTC/USDT",
        "timeframe": "1h",
        "as_of": as_of,
        "evaluated_at": as_of + timedelta(seconds=2),
        "safe_to_trade": True,
        "risk_score": 0.25,
        "regime": "trending_up",
        "reasoning": ["trend up"],
        **fields,
    }


# schema and migrations


def test_migrations_create_the_schema_and_are_idempotent(store_url: str) -> None:
    with Store.open(store_url) as store:
        issued = store.create_key("alice", "read", now=T0)
    with Store.open(store_url) as store:  # second upgrade: a no-op that keeps the data
        store.migrate()
        assert store.verify_key(issued.token, T0) is not None
        with store.engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
            # The migrations produce exactly the schema the code declares.
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert {"accounts", "api_keys", "assessments", "alembic_version"} <= tables
    assert version == head_revision()
    assert diff == []


def test_sqlite_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "tradeguard.db"
    with Store.open(f"sqlite:///{path}") as store:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    key_id="x" * 12, account_id=999, scope="read", secret_hash="h", created_at=T0
                )
            )
    with sqlite3.connect(path) as raw:  # WAL is a property of the file, seen by any client
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_store_urls() -> None:
    engine = store_module.create_store_engine("postgresql://u:pw@db.example/tradeguard")
    assert engine.url.drivername == "postgresql+psycopg"
    with pytest.raises(InputError, match="unsupported store URL"):
        store_module.create_store_engine("mysql://u:pw@localhost/tradeguard")
    with pytest.raises(InputError, match="invalid store URL"):
        store_module.create_store_engine("not a url")


def test_in_memory_sqlite_store_works() -> None:
    with Store.open("sqlite://") as store:
        issued = store.create_key("alice", "admin", now=T0)
        assert store.verify_key(issued.token, T0) is not None


# API keys


def test_create_and_verify_key(store: Store) -> None:
    issued = store.create_key("bot-fleet", "bot", "freqtrade #1", now=T0)
    prefix, key_id, secret = issued.token.split("_", 2)
    assert (prefix, key_id) == ("tg", issued.key_id)
    assert len(key_id) == 12 and len(secret) >= 43
    assert secret not in repr(issued)

    record = store.verify_key(issued.token, T0 + HOUR)
    assert record is not None
    assert (record.key_id, record.account, record.scope) == (issued.key_id, "bot-fleet", "bot")
    assert record.description == "freqtrade #1"
    assert record.created_at == T0 and record.last_used_at == T0 + HOUR and record.active

    other = store.create_key("bot-fleet", "read", now=T0)
    assert other.key_id != issued.key_id and other.token != issued.token
    wrong_secret = f"tg_{issued.key_id}_{other.token.split('_', 2)[2]}"
    assert store.verify_key(wrong_secret, T0) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: "tg_",
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: "Bearer " + t,
        lambda t: t.replace("tg_", "xx_", 1),
        lambda t: t.upper(),
        lambda t: f"tg_{'a' * 12}_{t.split('_', 2)[2]}",  # unknown key id
        lambda t: t + "\n",
    ],
)
def test_malformed_or_unknown_tokens_do_not_verify(store: Store, mangle) -> None:
    issued = store.create_key("alice", "read", now=T0)
    assert store.verify_key(mangle(issued.token), T0) is None
    assert store.verify_key(issued.token, T0) is not None


def test_revoked_key_does_not_verify(store: Store) -> None:
    issued = store.create_key("alice", "operator", now=T0)
    assert store.revoke_key(issued.key_id, T0 + HOUR)
    assert store.verify_key(issued.token, T0 + 2 * HOUR) is None
    assert store.revoke_key(issued.key_id, T0 + 3 * HOUR)  # again: still known, first time kept
    (record,) = store.list_keys()
    assert record.revoked_at == T0 + HOUR and not record.active
    assert not store.revoke_key("nosuchkey123", T0)


def test_secrets_are_stored_only_as_hashes(store: Store) -> None:
    issued = [store.create_key(f"acct{i}", scope, now=T0 + i * HOUR) for i, scope in enumerate(SCOPES)]
    listed = store.list_keys()
    assert [r.key_id for r in listed] == [k.key_id for k in issued]
    assert [(r.account, r.scope) for r in listed] == [(k.account, k.scope) for k in issued]
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(api_keys)).all()
    for key in issued:
        secret = key.token.split("_", 2)[2]
        assert all(secret not in repr(r) for r in listed)
        assert all(secret not in repr(tuple(row)) for row in rows)
        (row,) = [row for row in rows if row.key_id == key.key_id]
        assert row.secret_hash != secret
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_invalid_scope_is_an_input_error(store: Store) -> None:
    with pytest.raises(InputError, match="invalid scope 'root'"):
        store.create_key("alice", "root", now=T0)
    with pytest.raises(InputError):
        store.count_keys("root")
    with pytest.raises(InputError):
        store.create_key("  ", "read", now=T0)
    with pytest.raises(InputError, match="timezone-aware"):
        store.create_key("alice", "read", now=datetime(2024, 1, 1))  # naive on purpose
    assert store.list_keys() == []
    account_id = store.ensure_account("alice")
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:  # the database checks it too
        conn.execute(
            api_keys.insert().values(
                key_id="k" * 12, account_id=account_id, scope="root", secret_hash="h", created_at=T0
            )
        )


def test_accounts_and_key_counts(store: Store) -> None:
    assert store.ensure_account("alice", T0) == store.ensure_account("alice", T0 + HOUR)
    assert store.ensure_account("bob") != store.ensure_account("alice")
    keys = [store.create_key("alice", s, now=T0) for s in ("read", "read", "bot", "admin")]
    store.revoke_key(keys[0].key_id, T0)
    assert store.count_keys() == 3
    assert [store.count_keys(s) for s in SCOPES] == [1, 1, 0, 1]


def test_last_used_is_written_at_most_once_a_minute(store: Store) -> None:
    issued = store.create_key("alice", "bot", now=T0)
    assert store.verify_key(issued.token, T0).last_used_at == T0
    assert store.verify_key(issued.token, T0 + timedelta(seconds=59)).last_used_at == T0
    later = T0 + timedelta(seconds=60)
    assert store.verify_key(issued.token, later).last_used_at == later
    (record,) = store.list_keys()
    assert record.last_used_at == later


# assessment history


def test_save_assessment_is_an_idempotent_upsert(store: Store) -> None:
    store.save_assessment("binance", "BTC/USDT", "1h", payload(T0, risk_score=0.9, safe_to_trade=False))
    store.save_assessment("binance", "BTC/USDT", "1h", payload(T0, risk_score=0.1, regime="ranging"))
    store.save_assessment("binance", "BTC/USDT", "1h", payload(T0, risk_score=0.1, regime="ranging"))
    (saved,) = store.assessment_history("binance", "BTC/USDT", "1h")
    assert (saved["risk_score"], saved["safe_to_trade"], saved["regime"]) == (0.1, True, "ranging")
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(assessments)).one()
    assert (row.risk_score, row.safe_to_trade, row.regime) == (0.1, True, "ranging")


def test_history_range_ordering_and_series(store: Store) -> None:
    for i in (3, 0, 4, 1, 2):  # written out of order
        store.save_assessment("binance", "BTC/USDT", "1h", payload(T0 + i * HOUR, risk_score=i / 10))
    store.save_assessment("binance", "ETH/USDT", "1h", payload(T0 + 9 * HOUR))
    store.save_assessment("kraken", "BTC/USDT", "1h", payload(T0 + 9 * HOUR))
    store.save_assessment("binance", "BTC/USDT", "4h", payload(T0 + 9 * HOUR))

    every = store.assessment_history("binance", "BTC/USDT", "1h")
    assert [a["as_of"] for a in every] == [T0 + i * HOUR for i in range(5)]
    assert [a["risk_score"] for a in every] == [0.0, 0.1, 0.2, 0.3, 0.4]
    window = store.assessment_history("binance", "BTC/USDT", "1h", T0 + HOUR, T0 + 3 * HOUR)
    assert [a["as_of"] for a in window] == [T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR]  # inclusive
    assert [
        a["as_of"] for a in store.assessment_history("binance", "BTC/USDT", "1h", start=T0 + 4 * HOUR)
    ] == [T0 + 4 * HOUR]
    assert [a["as_of"] for a in store.assessment_history("binance", "BTC/USDT", "1h", end=T0)] == [T0]
    page = store.assessment_history("binance", "BTC/USDT", "1h", start=T0 + HOUR, limit=2)
    assert [a["as_of"] for a in page] == [T0 + HOUR, T0 + 2 * HOUR]
    assert store.latest_assessment("binance", "BTC/USDT", "1h")["as_of"] == T0 + 4 * HOUR
    assert store.latest_assessment("binance", "SOL/USDT", "1h") is None
    assert store.assessment_history("binance", "SOL/USDT", "1h") == []
    with pytest.raises(InputError):
        store.assessment_history("binance", "BTC/USDT", "1h", limit=0)


def test_datetimes_come_back_timezone_aware_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    store.save_assessment("binance", "BTC/USDT", "1h", payload(T0.astimezone(plus_two)))
    iso = {"as_of": "2024-03-01T13:00:00Z", "evaluated_at": "2024-03-01T15:00:05+02:00"}
    store.save_assessment("binance", "BTC/USDT", "1h", payload(T0) | iso)
    first, second = store.assessment_history("binance", "BTC/USDT", "1h", start=T0.astimezone(plus_two))
    assert first["as_of"] == T0 and first["as_of"].tzinfo is UTC
    assert second["as_of"] == T0 + HOUR and second["as_of"].utcoffset() == timedelta(0)
    assert second["evaluated_at"] == T0 + HOUR + timedelta(seconds=5) and second["evaluated_at"].tzinfo is UTC
    assert first["reasoning"] == ["trend up"]
    store.create_key("alice", "read", now=T0.astimezone(plus_two))
    (record,) = store.list_keys()
    assert record.created_at == T0 and record.created_at.tzinfo is UTC
    with store.engine.connect() as conn:
        assert all(v.tzinfo is UTC for v in conn.execute(sa.select(assessments.c.as_of)).scalars())


def test_payload_is_stored_as_plain_json(store: Store) -> None:
    doc = payload(
        T0,
        safe_to_trade=np.bool_(False),
        risk_score=np.float64(0.5),
        candles_used=np.int64(200),
        volatility=float("nan"),
        indicators={"rsi": np.float64("nan"), "adx": 21.5},
    )
    store.save_assessment("binance", "BTC/USDT", "1h", doc)
    saved = store.latest_assessment("binance", "BTC/USDT", "1h")
    assert saved["safe_to_trade"] is False and saved["risk_score"] == 0.5 and saved["candles_used"] == 200
    assert saved["volatility"] is None and saved["indicators"] == {"rsi": None, "adx": 21.5}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"as_of": None}, "as_of"),
        ({"as_of": datetime(2024, 1, 1)}, "timezone-aware"),  # naive on purpose
        ({"as_of": "yesterday"}, "ISO-8601"),
        ({"evaluated_at": None}, "evaluated_at"),
        ({"safe_to_trade": "yes"}, "safe_to_trade"),
        ({"risk_score": "high"}, "risk_score"),
        ({"regime": 3}, "regime"),
        ({"extra": object()}, "JSON"),
    ],
)
def test_bad_assessments_are_refused(store: Store, change: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        store.save_assessment("binance", "BTC/USDT", "1h", payload(T0) | change)
    assert store.assessment_history("binance", "BTC/USDT", "1h") == []


# failures and concurrency


def test_a_failed_write_rolls_back_and_keeps_earlier_data(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = store.create_key("alice", "admin", now=T0)
    store.save_assessment("binance", "BTC/USDT", "1h", payload(T0))

    # create_key adds the account and the key in one transaction: a duplicate key id undoes both.
    monkeypatch.setattr(store_module, "new_key_id", lambda: kept.key_id)
    with pytest.raises(sa.exc.IntegrityError):
        store.create_key("mallory", "admin", now=T0)
    monkeypatch.undo()

    # A transaction that writes, then violates a constraint, leaves nothing of its own behind.
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(assessments.delete())
        conn.execute(accounts.insert().values(name="alice", created_at=T0))

    with store.engine.connect() as conn:
        names = conn.execute(sa.select(accounts.c.name)).scalars().all()
    assert names == ["alice"]
    assert [k.key_id for k in store.list_keys()] == [kept.key_id]
    assert store.verify_key(kept.token, T0) is not None
    assert [a["as_of"] for a in store.assessment_history("binance", "BTC/USDT", "1h")] == [T0]


def test_concurrent_writers_from_separate_stores(store_url: str) -> None:
    stores = [Store.open(store_url) for _ in range(3)]
    errors: list[BaseException] = []

    def work(n: int, store: Store) -> None:
        try:
            for i in range(15):
                store.create_key(f"acct{i % 4}", "bot", now=T0)
                store.save_assessment("binance", "BTC/USDT", "1h", payload(T0 + i * HOUR, risk_score=n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n, s)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert stores[0].count_keys() == 45
        assert len(stores[0].assessment_history("binance", "BTC/USDT", "1h")) == 15
    finally:
        for s in stores:
            s.close()


# the kill-switch cache


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_kill_switch_cache_sees_another_writer_after_a_refresh_and_keeps_its_view_on_failure(
    store: Store, store_url: str
) -> None:
    ticks = Ticks()
    cache = KillSwitchCache(GuardState(store.engine), clock=ticks)
    assert cache.age_s() == float("inf")  # never refreshed
    cache.refresh()
    assert cache.age_s() == 0.0
    assert cache.get("acme") == KillSwitch("acme", False, None, None, None)

    with Store.open(store_url) as other:  # another instance sharing the database
        GuardState(other.engine).set_kill_switch("acme", True, "maintenance", "ops", T0)
        assert not cache.get("acme").engaged  # reads never touch the database
        ticks.now += 2.5
        assert cache.age_s() == 2.5
        cache.refresh()
        assert cache.age_s() == 0.0
        assert cache.get("acme") == KillSwitch("acme", True, "maintenance", "ops", T0)
        assert not cache.get("globex").engaged

        GuardState(other.engine).set_kill_switch(FLEET, True, "exchange incident", "admin", T0 + HOUR)
        cache.refresh()
        assert cache.get("globex") == KillSwitch(FLEET, True, "exchange incident", "admin", T0 + HOUR)
        assert cache.get("acme").account == FLEET  # the engaged fleet switch wins

        kill_switches.drop(other.engine)  # the store fails under the cache
        ticks.now += 4.0
        with pytest.raises(sa.exc.DBAPIError):
            cache.refresh()
    assert cache.age_s() == 4.0  # the failed refresh did not count
    assert cache.get("globex").engaged and cache.get("acme").account == FLEET  # the old view is kept


def test_a_switch_applied_during_a_refresh_is_not_undone_by_it(store: Store) -> None:
    class SlowState(GuardState):
        """Another switch is set and applied after the refresh's query read the table."""

        def kill_switches(self) -> list[KillSwitch]:
            rows = super().kill_switches()
            cache.apply(GuardState(store.engine).set_kill_switch("acme", True, "incident", "ops", T0))
            return rows

    cache = KillSwitchCache(SlowState(store.engine))
    cache.refresh()  # read no switch, then saw acme's applied: acme stays engaged
    assert cache.get("acme") == KillSwitch("acme", True, "incident", "ops", T0)
    cache.apply(KillSwitch("globex", True, None, "ops", T0))
    assert cache.get("globex").engaged and not cache.get("initech").engaged
