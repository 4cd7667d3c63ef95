"""Read cursors: a named position (an audit `seq`) that readers sharing the store advance by compare-and-set.

Replicas of the service that tail the audit log under one name split it between them: a reader claims the
records after the cursor by moving it from the value it read to the last seq it will handle; only one
reader's move from a given value succeeds, so each record is claimed once.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tradeguard.adapters.store.schema import UTCDateTime, metadata
from tradeguard.adapters.store.store import write_transaction

read_cursors = sa.Table(
    "read_cursors",
    metadata,
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.PrimaryKeyConstraint("name"),
)


class ReadCursor:
    """One named cursor in the store."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self.name = name

    def get(self) -> int | None:
        """The cursor's seq, None if it was never set."""
        with self._engine.connect() as conn:
            seq = conn.execute(
                sa.select(read_cursors.c.seq).where(read_cursors.c.name == self.name)
            ).scalar_one_or_none()
        return None if seq is None else int(seq)

    def start_at(self, seq: int, now: datetime) -> int:
        """Set the cursor to `seq` unless it is already set; the cursor's seq either way."""
        current = self.get()
        if current is not None:
            return current
        try:
            with write_transaction(self._engine) as conn:
                conn.execute(read_cursors.insert().values(name=self.name, seq=seq, updated_at=now))
            return seq
        except sa.exc.IntegrityError:  # another reader placed it first: theirs stands
            placed = self.get()
        return seq if placed is None else placed

    def advance(self, expected: int, to: int, now: datetime) -> bool:
        """Move the cursor from `expected` to `to`; False when another reader moved it first."""
        with write_transaction(self._engine) as conn:
            moved = conn.execute(
                read_cursors.update()
                .where(read_cursors.c.name == self.name, read_cursors.c.seq == expected)
                .values(seq=to, updated_at=now)
            ).rowcount
        return moved == 1
