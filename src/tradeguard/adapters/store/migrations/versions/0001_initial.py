"""Initial schema: accounts, API keys, assessment history.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# schema.UTCDateTime: its DDL is its impl; migrations stay independent of the application's types.
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.Column("last_used_at", Timestamp, nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.CheckConstraint("scope IN ('read', 'bot', 'operator', 'admin')", name="ck_api_keys_scope"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_api_keys_account_id_accounts"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_id", name="uq_api_keys_key_id"),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_table(
        "assessments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("exchange", sa.Text, nullable=False),
        sa.Column("pair", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.Column("as_of", Timestamp, nullable=False),
        sa.Column("evaluated_at", Timestamp, nullable=False),
        sa.Column("safe_to_trade", sa.Boolean, nullable=False),
        sa.Column("risk_score", sa.Float, nullable=True),
        sa.Column("regime", sa.Text, nullable=True),
        sa.Column("payload", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_assessments"),
    )
    op.create_index(
        "ix_assessments_series_as_of", "assessments", ["exchange", "pair", "timeframe", "as_of"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_assessments_series_as_of", table_name="assessments")
    op.drop_table("assessments")
    op.drop_index("ix_api_keys_account_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("accounts")
