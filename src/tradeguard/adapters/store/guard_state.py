"""Durable guard state: circuit-breaker states and kill switches, so they survive restarts.

Breaker states are stored as the JSON of `core.breakers.BreakerState.to_dict()`; the kill switch is per
account, with `*` for the fleet-wide switch.
"""

from __future__ import annotations

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

    def _upsert(self, table: sa.Table, values: dict[str, Any], keys: list[str]) -> sa.Insert:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table).values(**values)
        updates = {k: stmt.excluded[k] for k in values if k not in keys}
        return stmt.on_conflict_do_update(index_elements=keys, set_=updates)

    def save_breakers(self, account: str, states: dict[str, dict[str, Any]], now: datetime) -> None:
        """Upsert the states of several breakers of one account in one transaction."""
        if not states:
            return
        with write_transaction(self._engine) as conn:
            for breaker_id, state in states.items():
                conn.execute(
                    self._upsert(
                        breaker_states,
                        {"account": account, "breaker_id": breaker_id, "state": state, "updated_at": now},
                        ["account", "breaker_id"],
                    )
                )

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
            rows = {r.account: r for r in conn.execute(query)}
        for key in (FLEET, account):
            row = rows.get(key)
            if row is not None and row.engaged:
                return KillSwitch(row.account, True, row.reason, row.changed_by, row.updated_at)
        row = rows.get(account)
        if row is None:
            return KillSwitch(account, False, None, None, None)
        return KillSwitch(row.account, False, row.reason, row.changed_by, row.updated_at)
