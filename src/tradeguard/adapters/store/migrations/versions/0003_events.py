"""Event intake: the event log (one row per account and sender's event id) and the equity history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)  # schema.UTCDateTime's DDL


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("bot", sa.Text, nullable=False),
        sa.Column("ts", Timestamp, nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.PrimaryKeyConstraint("account", "id", name="pk_events"),
    )
    op.create_index("ix_events_account_ts", "events", ["account", "ts"])
    op.create_index(
        "ix_events_account_type_exchange_bot_ts", "events", ["account", "type", "exchange", "bot", "ts"]
    )
    op.create_table(
        "equity_history",
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("ts", Timestamp, nullable=False),
        sa.Column("total_equity", sa.Float, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("account", "exchange", "ts", name="pk_equity_history"),
    )


def downgrade() -> None:
    op.drop_table("equity_history")
    op.drop_index("ix_events_account_type_exchange_bot_ts", table_name="events")
    op.drop_index("ix_events_account_ts", table_name="events")
    op.drop_table("events")
