"""Durable guard state: circuit-breaker states and kill switches, so they survive restarts.

Breaker states are stored as the JSON of `core.breakers.BreakerState.to_dict()`; the kill switch is per
account, with `*` for the fleet-wide switch. `KillSwitchCache` keeps every switch in memory for the hot
paths (the portfolio guard's trading state, the order guard), refreshed from the store.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from tradeguard.adapters.store.schema import Json, UTCDateTime, metadata
from tradeguard.adapters.store.store import write_transaction

FLEET = "*"

breaker_states = sa.Table(
    "breaker_states",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("breaker_id", sa.Text, nullable=False),
    sa.Column("state", Json, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.PrimaryKeyConstraint("account", "breaker_id"),
)

kill_switches = sa.Table(
    "kill_switches",
    metadata,
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("engaged", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("changed_by", sa.Text, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.PrimaryKeyConstraint("account"),
)


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """A kill switch's position (for one account, or `*` for the fleet)."""

    account: str
    engaged: bool
    reason: str | None
    changed_by: str | None
    updated_at: datetime | None


class GuardState:
    """Reads and writes breaker states and kill switches on the store's engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        upsert = dialect.insert(breaker_states)
        self._save = upsert.on_conflict_do_update(  # built once: it is run on every change of state
            index_elements=["account", "breaker_id"],
            set_={"state": upsert.excluded.state, "updated_at": upsert.excluded.updated_at},
        )

    def _upsert(self, table: sa.Table, values: dict[str, Any], keys: list[str]) -> sa.Insert:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table).values(**values)
        updates = {k: stmt.excluded[k] for k in values if k not in keys}
        return stmt.on_conflict_do_update(index_elements=keys, set_=updates)

    def save_breakers(self, account: str, states: dict[str, dict[str, Any]], now: datetime) -> None:
        """Upsert the states of several breakers of one account in one transaction."""
        self.save_breaker_states({account: states}, now)

    def save_breaker_states(self, states: Mapping[str, Mapping[str, dict[str, Any]]], now: datetime) -> None:
        """Upsert `{account: {breaker_id: state}}` (any number of accounts) in one transaction."""
        rows = [
            {"account": account, "breaker_id": breaker_id, "state": state, "updated_at": now}
            for account, by_id in states.items()
            for breaker_id, state in by_id.items()
        ]
        if not rows:
            return
        with write_transaction(self._engine) as conn:
            conn.execute(self._save, rows)

    def load_breakers(self, account: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """{account: {breaker_id: state}} for one account or all."""
        query = sa.select(breaker_states.c.account, breaker_states.c.breaker_id, breaker_states.c.state)
        if account is not None:
            query = query.where(breaker_states.c.account == account)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                out.setdefault(row.account, {})[row.breaker_id] = row.state
        return out

    def set_kill_switch(
        self, account: str, engaged: bool, reason: str | None, by: str | None, now: datetime
    ) -> KillSwitch:
        """Engage or release a kill switch (`account` = `*` for the whole fleet)."""
        values = {
            "account": account,
            "engaged": engaged,
            "reason": reason,
            "changed_by": by,
            "updated_at": now,
        }
        with write_transaction(self._engine) as conn:
            conn.execute(self._upsert(kill_switches, values, ["account"]))
        return KillSwitch(account, engaged, reason, by, now)

    def kill_switch(self, account: str) -> KillSwitch:
        """The account's switch, or the fleet switch when that is engaged (released if never set)."""
        query = sa.select(kill_switches).where(kill_switches.c.account.in_([account, FLEET]))
        with self._engine.connect() as conn:
            rows = {r.account: _switch(r) for r in conn.execute(query)}
        return _effective(rows, account)

    def kill_switches(self) -> list[KillSwitch]:
        """Every stored switch (accounts and the fleet), in one query."""
        with self._engine.connect() as conn:
            return [_switch(r) for r in conn.execute(sa.select(kill_switches))]


class KillSwitchCache:
    """In-memory view of every kill switch, refreshed from the store; reads never touch the DB.

    `refresh` runs in a worker thread (it queries) while `apply` and `get` run on the event loop: a switch
    applied while a refresh is under way wins over what that refresh read, so a switch this process just set
    is never undone by an older read.
    """

    def __init__(self, state: GuardState, clock: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._clock = clock
        self._view: dict[str, KillSwitch] = {}
        self._applied: dict[str, tuple[int, KillSwitch]] = {}  # account -> (apply sequence, switch)
        self._sequence = 0
        self._refreshed_at: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Load every switch in one query; on failure the store's error is raised and the old view kept."""
        with self._lock:
            started = self._sequence
        loaded = {switch.account: switch for switch in self._state.kill_switches()}
        with self._lock:
            for account, (sequence, switch) in self._applied.items():
                if sequence > started:  # applied after the query began: the read may predate it
                    loaded[account] = switch
            self._applied = {a: item for a, item in self._applied.items() if item[0] > started}
            self._view = loaded
            self._refreshed_at = self._clock()

    def get(self, account: str) -> KillSwitch:
        """The account's switch, or the fleet switch when that is engaged (as `GuardState.kill_switch`)."""
        return _effective(self._view, account)

    def apply(self, switch: KillSwitch) -> None:
        """Write through a switch that `GuardState.set_kill_switch` has just stored."""
        with self._lock:
            self._sequence += 1
            self._applied[switch.account] = (self._sequence, switch)
            self._view = {**self._view, switch.account: switch}

    def age_s(self) -> float:
        """Seconds since the last successful refresh (inf if there was none)."""
        refreshed = self._refreshed_at
        return math.inf if refreshed is None else self._clock() - refreshed


def _switch(row: Any) -> KillSwitch:
    return KillSwitch(row.account, row.engaged, row.reason, row.changed_by, row.updated_at)


def _effective(switches: Mapping[str, KillSwitch], account: str) -> KillSwitch:
    """The switch in force for `account`: the fleet's or its own when engaged, else its own (released)."""
    for key in (FLEET, account):
        switch = switches.get(key)
        if switch is not None and switch.engaged:
            return switch
    return switches.get(account) or KillSwitch(account, False, None, None, None)
