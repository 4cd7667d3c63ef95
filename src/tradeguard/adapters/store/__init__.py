"""Durable store: accounts, API keys and assessment history on SQLite (WAL, default) or PostgreSQL.

`Store.open(url)` migrates the schema (Alembic, shipped in `migrations/`) and returns the store.
"""

from tradeguard.adapters.store.audit_log import AuditLog
from tradeguard.adapters.store.cursors import ReadCursor
from tradeguard.adapters.store.event_log import BatchRejected, EventLog, StoreResult
from tradeguard.adapters.store.guard_state import GuardState
from tradeguard.adapters.store.schema import SCOPES
from tradeguard.adapters.store.store import DEFAULT_STORE_URL, IssuedKey, KeyRecord, Store

__all__ = [
    "DEFAULT_STORE_URL",
    "SCOPES",
    "AuditLog",
    "BatchRejected",
    "EventLog",
    "GuardState",
    "IssuedKey",
    "KeyRecord",
    "ReadCursor",
    "Store",
    "StoreResult",
]
