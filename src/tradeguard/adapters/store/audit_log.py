"""The audit log: sealed risk events (see `core.audit`) in the store's database, one chain per database.

Appends are serialised so that the chain never forks: each append reads the head and inserts the next
records in one transaction that holds the chain's write lock — `BEGIN IMMEDIATE` on SQLite (the store's
`write_transaction`), a transaction-scoped advisory lock (`pg_advisory_xact_lock`) on PostgreSQL, so that
several service replicas can share one chain. `seq` is also the primary key: two writers that ignored the
lock would collide rather than fork.

Before chaining onto a head it did not write itself, the appender checks that head: its hash, its link and
the signatures of it and its predecessor. That is what lets `verify` (default) trust a chain from its
hashes plus the last two signatures, and it is fail-closed: a tampered head raises `AuditIntegrityError`
and nothing is appended (run `tradeguard audit verify` to find the first bad record). So does a head
older than the last one this instance appended (the tail was cut).

`payload` is stored as its canonical JSON text — the exact bytes that were signed — rather than as JSON or
JSONB, which re-encode numbers (1e20 comes back as an integer) and refuse NUL characters.

An optional `outbox` (the webhook outbox, `adapters.store.outbox`) is handed the new records inside the
append's transaction, so what it writes commits or rolls back with them; what it returns runs after the
commit.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Connection, Engine

from tradeguard.adapters.store.schema import BigId, UTCDateTime, metadata
from tradeguard.adapters.store.store import write_transaction
from tradeguard.core.audit import (
    GENESIS,
    AuditEvent,
    AuditIntegrityError,
    AuditRecord,
    ChainHead,
    PreparedEvent,
    Signer,
    VerifyResult,
    decode_signature,
    keyring,
    prepare_event,
    record_hash,
    seal_prepared,
    verify_chain,
    verify_record,
)
from tradeguard.errors import InputError

DEFAULT_QUERY_LIMIT: Final = 1_000
MAX_QUERY_LIMIT: Final = 10_000
_APPEND_LOCK_KEY: Final = 0x7467_6175_6474  # pg_advisory_xact_lock key of the audit chain ("tgaudt")

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=False),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("account", sa.Text, nullable=True, index=True),  # null: fleet-wide events
    sa.Column("ts", UTCDateTime, nullable=False, index=True),
    sa.Column("payload", sa.Text, nullable=False),  # RFC 8785 canonical JSON text, as signed
    sa.Column("prev_hash", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Index("ix_audit_log_type_seq", "type", "seq"),
)

_COLUMNS = (
    audit_log.c.seq,
    audit_log.c.id,
    audit_log.c.type,
    audit_log.c.account,
    audit_log.c.ts,
    audit_log.c.payload,
    audit_log.c.prev_hash,
    audit_log.c.hash,
    audit_log.c.signature,
    audit_log.c.key_id,
)


class AuditOutbox(Protocol):
    """Writes what the new records cause (webhook deliveries) in the append's transaction."""

    def enqueue(self, conn: Connection, records: Sequence[AuditRecord]) -> Callable[[], None] | None:
        """Write in `conn`'s transaction; return what to call once it has committed, if anything."""
        ...


class AuditLog:
    """Append, query and verify the audit chain on the store's engine (`Store.engine`).

    `signer` is needed to append (read-only without). `trusted_keys`: public keys of earlier signing keys
    whose records the chain may end with (after a key change), besides the signer's own. `outbox` gets the
    records of every append in its transaction.
    """

    def __init__(
        self,
        engine: Engine,
        signer: Signer | None = None,
        *,
        trusted_keys: Iterable[Ed25519PublicKey] = (),
        outbox: AuditOutbox | None = None,
    ) -> None:
        self._engine = engine
        self._signer = signer
        self._outbox = outbox
        self._trusted = [*([signer.public_key] if signer is not None else []), *trusted_keys]
        self._lock = threading.Lock()  # one appender per process at a time: no busy-waiting on SQLite
        self._head: ChainHead | None = None  # the head this instance last wrote (then no need to check it)

    @property
    def engine(self) -> Engine:
        return self._engine

    # writing

    def append(
        self, event_type: str, account: str | None, payload: Mapping[str, Any], now: datetime
    ) -> AuditRecord:
        """Seal one event (type from `core.audit.AUDIT_EVENT_TYPES`, `now` aware) and store it durably."""
        return self.append_many([AuditEvent(event_type, account, payload, now)])[0]

    def append_many(self, events: Iterable[AuditEvent | PreparedEvent]) -> list[AuditRecord]:
        """Seal and store several events in order, in one transaction: all or none. Events may come prepared
        (`core.audit.prepare_event`) by a caller that canonicalises them on another thread."""
        if self._signer is None:
            raise InputError("this audit log has no signing key: it can read and verify, not append")
        signer = self._signer
        prepared = [  # outside the lock
            e if isinstance(e, PreparedEvent) else prepare_event(e.type, e.account, e.payload, e.ts)
            for e in events
        ]
        if not prepared:
            return []
        with self._lock:
            with write_transaction(self._engine) as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_APPEND_LOCK_KEY)))
                prev: ChainHead | AuditRecord = self._checked_head(conn)
                records = []
                for event in prepared:
                    prev = seal_prepared(prev, event, str(uuid.uuid4()), signer)
                    records.append(prev)
                conn.execute(audit_log.insert(), [_row(record) for record in records])
                after_commit = self._outbox.enqueue(conn, records) if self._outbox is not None else None
            last = records[-1]
            self._head = ChainHead(last.seq, last.hash, last.signature)  # committed
        if after_commit is not None:
            after_commit()
        return records

    def _checked_head(self, conn: Connection) -> ChainHead:
        """The chain head to append to, checked unless this instance wrote it."""
        rows = conn.execute(sa.select(*_COLUMNS).order_by(audit_log.c.seq.desc()).limit(2)).all()
        cached = self._head
        if cached is not None and (rows[0].seq if rows else 0) < cached.seq:
            raise AuditIntegrityError(
                f"the audit chain was cut: this process appended seq {cached.seq}, the head is now seq "
                f"{rows[0].seq if rows else 0}. Refusing to append; run `tradeguard audit verify`"
            )
        if not rows:
            return GENESIS
        head = _record(rows[0])
        if cached is not None and (cached.seq, cached.hash, cached.signature) == (
            head.seq,
            head.hash,
            head.signature,
        ):
            return cached
        before = _record(rows[1]) if len(rows) > 1 else None
        why = _head_problem(head, before, self._trusted)
        if why is not None:
            raise AuditIntegrityError(
                f"the audit chain's head (seq {head.seq}, id {head.id}) fails verification: {why}. "
                "Refusing to append; run `tradeguard audit verify` to find the first bad record"
            )
        return ChainHead(head.seq, head.hash, head.signature)

    # reading

    def head(self) -> AuditRecord | None:
        """The last record, or None for an empty log. Keep (seq, hash) elsewhere to detect truncation."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(*_COLUMNS).order_by(audit_log.c.seq.desc()).limit(1)).first()
        return None if row is None else _record(row)

    def latest(self, type: str) -> AuditRecord | None:
        """The last record of `type`, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(*_COLUMNS).where(audit_log.c.type == type).order_by(audit_log.c.seq.desc()).limit(1)
            ).first()
        return None if row is None else _record(row)

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())

    def query(
        self,
        account: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        *,
        after_seq: int | None = None,
        limit: int = DEFAULT_QUERY_LIMIT,
    ) -> list[dict[str, Any]]:
        """Envelopes (`AuditRecord.to_envelope`) oldest first, filtered by account, type and `ts >= since`.

        Page with `after_seq` = the last seq received. At most `limit` (1..10,000) records.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InputError(f"limit must be 1 to {MAX_QUERY_LIMIT}, got {limit!r}")
        query = sa.select(*_COLUMNS).order_by(audit_log.c.seq).limit(limit)
        if account is not None:
            query = query.where(audit_log.c.account == account)
        if type is not None:
            query = query.where(audit_log.c.type == type)
        if since is not None:
            if since.tzinfo is None or since.utcoffset() is None:
                raise InputError(f"since must be a timezone-aware datetime, got {since!r}")
            query = query.where(audit_log.c.ts >= since)
        if after_seq is not None:
            query = query.where(audit_log.c.seq > after_seq)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_record(row).to_envelope() for row in rows]

    def tail(self, after_seq: int, types: Iterable[str], limit: int = 500) -> tuple[list[AuditRecord], int]:
        """Records of `types` after `after_seq` (oldest first, at most `limit`) and the seq read up to.

        Appends are serialised and a record becomes visible only with every record before it, so the
        returned seq is safe to resume after: nothing at or below it can still appear.
        """
        with self._engine.connect() as conn, conn.begin():
            head = conn.execute(sa.select(sa.func.max(audit_log.c.seq))).scalar_one_or_none()
            if head is None or head <= after_seq:
                return [], after_seq
            rows = conn.execute(
                sa.select(*_COLUMNS)
                .where(audit_log.c.seq > after_seq, audit_log.c.seq <= head)
                .where(audit_log.c.type.in_(list(types)))
                .order_by(audit_log.c.seq)
                .limit(limit)
            ).all()
        records = [_record(row) for row in rows]
        return records, (records[-1].seq if len(records) == limit else int(head))

    def iter_all(self, batch: int = 10_000, *, until_seq: int | None = None) -> Iterator[AuditRecord]:
        """Every record in seq order (up to `until_seq`), read in batches: constant memory."""
        after: int | None = None
        while True:
            query = sa.select(*_COLUMNS).order_by(audit_log.c.seq).limit(batch)
            if after is not None:
                query = query.where(audit_log.c.seq > after)
            if until_seq is not None:
                query = query.where(audit_log.c.seq <= until_seq)
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
            yield from map(_record, rows)
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def verify(
        self,
        public_keys: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None = None,
        *,
        all_signatures: bool = False,
        jobs: int = 1,
        anchor: ChainHead | tuple[int, str] | None = None,
    ) -> VerifyResult:
        """Verify the stored chain (`core.audit.verify_chain`) and name the earliest bad record.

        The default pass checks every hash and link and the last two signatures. If it fails, the records
        up to the failure are checked again with every signature, so the report names the earliest
        altered record even when an attacker re-hashed the records after it.
        """
        keys = self._trusted if public_keys is None else public_keys
        if not keys:
            raise InputError("no public key to verify with")
        result = verify_chain(self.iter_all(), keys, all_signatures=all_signatures, jobs=jobs, anchor=anchor)
        if result.ok or all_signatures or result.problem is None or result.problem.seq is None:
            return result
        precise = verify_chain(
            self.iter_all(until_seq=result.problem.seq), keys, all_signatures=True, jobs=jobs
        )
        if precise.problem is not None and precise.problem.precedes(result.problem):
            return precise
        return result


def _head_problem(
    head: AuditRecord, before: AuditRecord | None, trusted: Sequence[Ed25519PublicKey]
) -> str | None:
    """Why the last two records cannot be chained onto, or None."""
    if before is None:
        if head.seq != 1 or head.prev_hash != GENESIS.hash:
            return f"seq {head.seq} is the only record but is not the first"
        prev_signature: bytes | None = bytes(64)
    else:
        if before.seq != head.seq - 1 or head.prev_hash != before.hash:
            return f"it does not follow seq {before.seq}"
        prev_signature = decode_signature(before.signature)
    if prev_signature is None or head.hash != record_hash(head.body(), prev_signature):
        return "its content does not match its hash"
    if not trusted:
        return "no public key to check its signature with"
    keys = keyring(trusted)
    for record in (before, head):
        if record is not None:
            why = verify_record(record, keys.values())
            if why is not None:
                return f"seq {record.seq}: {why}"
    return None


def _row(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "id": record.id,
        "type": record.type,
        "account": record.account,
        "ts": record.ts,
        "payload": record.payload_json,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
        "signature": record.signature,
        "key_id": record.key_id,
    }


def _record(row: sa.Row[Any]) -> AuditRecord:
    seq, record_id, event_type, account, ts, payload, prev_hash, hash_, signature, key_id = row
    return AuditRecord(seq, record_id, event_type, account, ts, payload, prev_hash, hash_, signature, key_id)
