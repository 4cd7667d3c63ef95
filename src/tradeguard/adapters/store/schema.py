"""Tables of the durable store (SQLAlchemy Core), portable between SQLite and PostgreSQL.

The schema is created and changed only by the Alembic migrations in `migrations/versions`; this module is
the current shape those migrations produce (a test checks that they agree).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

SCOPES = ("read", "bot", "operator", "admin")

# Deterministic constraint names on every backend, so later migrations can refer to them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores `timestamp with time zone`; SQLite has no time zones, so the value is stored as naive
    UTC (a fixed-width text that sorts chronologically) and given back its UTC tzinfo when read. Naive
    datetimes are refused rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid); PostgreSQL gets a 64-bit identity.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # The public part of a key (`tg_<key_id>_<secret>`): safe to log and show, identifies the key.
    sa.Column("key_id", sa.Text, nullable=False, unique=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("scope", sa.Text, nullable=False),
    # sha256 hex of the secret part. The secret is 256 bits from `secrets`, so it cannot be guessed or
    # brute-forced from its hash: a fast hash is right here (a slow password KDF only protects low-entropy
    # human passwords, and would cost every API request).
    sa.Column("secret_hash", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.CheckConstraint(f"scope IN ({', '.join(repr(s) for s in SCOPES)})", name="scope"),
)

assessments = sa.Table(
    "assessments",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("pair", sa.Text, nullable=False),
    sa.Column("timeframe", sa.Text, nullable=False),
    sa.Column("as_of", UTCDateTime, nullable=False),
    sa.Column("evaluated_at", UTCDateTime, nullable=False),
    sa.Column("safe_to_trade", sa.Boolean, nullable=False),
    sa.Column("risk_score", sa.Float, nullable=True),
    sa.Column("regime", sa.Text, nullable=True),
    sa.Column("payload", Json, nullable=False),
    # One row per candle of a series (a recomputation replaces it); the same index serves range queries.
    sa.Index("ix_assessments_series_as_of", "exchange", "pair", "timeframe", "as_of", unique=True),
)

# Webhook endpoints (`adapters.store.webhooks`). `account` "*" is a fleet webhook (admin keys only).
# `secret` signs every delivery; after a rotation `previous_secret` signs too until it expires.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("account", sa.Text, nullable=False, index=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_types", Json, nullable=False),  # fnmatch patterns, e.g. ["risk.breaker.*"]
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("previous_secret", sa.Text, nullable=True),
    sa.Column("previous_secret_expires_at", UTCDateTime, nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("disabled_reason", sa.Text, nullable=True),
    sa.Column("failing_since", UTCDateTime, nullable=True),  # first failure since the last success
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

DELIVERY_STATUSES = ("pending", "succeeded", "failed", "dead")

# The outbox: one row per (audit record, webhook), written in the audit append's transaction. `id` is the
# `webhook-id` header, the same on every attempt. The body sent is the audit record's envelope, rebuilt
# byte for byte from `audit_log` (canonical JSON) rather than copied into every delivery.
# `next_attempt_at` is set while the delivery is due or leased to a worker and null once it is finished
# (or parked while its webhook is disabled).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("webhook_id", sa.Text, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("account", sa.Text, nullable=False),
    sa.Column("audit_seq", BigId, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True, index=True),  # the worker's due query
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),  # created_at to the successful attempt's answer
    sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in DELIVERY_STATUSES)})", name="status"),
    # The delivery log of a webhook, newest first; also makes an enqueue idempotent.
    sa.Index("ix_webhook_deliveries_webhook_id_audit_seq", "webhook_id", "audit_seq", unique=True),
)
