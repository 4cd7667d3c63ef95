"""Guard state: breaker states and kill switches.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "breaker_states",
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("breaker_id", sa.Text, nullable=False),
        sa.Column("state", Json, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("account", "breaker_id", name="pk_breaker_states"),
    )
    op.create_table(
        "kill_switches",
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("engaged", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("changed_by", sa.Text, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("account", name="pk_kill_switches"),
    )


def downgrade() -> None:
    op.drop_table("kill_switches")
    op.drop_table("breaker_states")
