"""Audit log: index on (type, seq) for reads by event type (the latest thresholds, `GET /v1/audit?type=`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_log_type_seq", "audit_log", ["type", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_type_seq", table_name="audit_log")
