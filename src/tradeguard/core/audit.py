"""Audit trail records: risk events signed with Ed25519 and hash-chained (pure: no clock, disk, network).

Every risk event the service emits becomes one record (envelope)
`{seq, id, type, account, ts, payload, prev_hash, hash, signature, key_id}`. Version 1 of the format:

- `body` = RFC 8785 (JCS) canonical JSON, UTF-8, of the object with exactly these eight members:
  `account` (string or null), `id` (string), `key_id` (string), `payload` (a JSON object),
  `prev_hash` (64 lowercase hex), `seq` (integer, 1 for the first record), `ts` (string
  `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC, always six fraction digits), `type` (string). So the signed bytes
  are `{"account":…,"id":…,"key_id":…,"payload":…,"prev_hash":…,"seq":…,"ts":…,"type":…}`.
- `signature` = Ed25519 (RFC 8032) signature of `body`, base64url without padding (86 characters).
  A record can be checked on its own: rebuild `body` from its fields and verify the signature.
- `hash` = lowercase hex SHA-256 of `body ‖ prev_signature`, where `prev_signature` is the previous
  record's raw 64-byte signature (64 zero bytes for the first record).
- `prev_hash` = the previous record's `hash`; for the first record 64 zeros (`GENESIS_HASH`).
- `key_id` = the first 16 hex digits of SHA-256 of the signer's raw 32-byte public key.

Because each hash also covers the previous record's signature, the hashes and links commit to every
byte of every record except the last signature, and the last hash is signed by no one. So the default
check — every hash and link, plus the signatures of the last two records — authenticates the whole chain,
given that the signer never chains onto a head it has not checked (the store's appender verifies the head
and its predecessor first). `all_signatures=True` checks every signature as well: independent of the
writer, but Ed25519 verification then dominates (several times slower; spread over `jobs` processes).
What no chain can show by itself is a cut tail: the shorter chain is a valid chain.
Compare the head (`seq`, `hash`) with one kept elsewhere (`anchor=`) to detect that.

A payload is normalised before sealing: datetimes become ISO-8601 UTC strings, numpy scalars and enums
their values, tuples lists, NaN and infinities null. Integers beyond ±(2^53 - 1) and non-string keys are
refused (RFC 8785 cannot represent them exactly). `AuditRecord.payload` is the canonical JSON parsed back,
so `1.0` reads as `1`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import multiprocessing
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from itertools import islice
from json.encoder import encode_basestring  # C accelerated; escapes as JCS does
from typing import Any, Final, Protocol

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tradeguard.errors import InputError, TradeguardError

FORMAT_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64
SIGNATURE_BYTES: Final = 64
_ZERO_SIGNATURE: Final = bytes(SIGNATURE_BYTES)
MAX_SAFE_INTEGER: Final = 2**53 - 1  # RFC 8785 / I-JSON integer range
DEFAULT_LOOKAHEAD: Final = 10_000  # records read past a seq gap to tell a deletion from a reordering

# Event types of the audit trail.
THRESHOLDS_UPDATED: Final = "risk.thresholds_updated"
PORTFOLIO_CHECK: Final = "risk.portfolio_check"
DRAWDOWN_ALERT: Final = "risk.drawdown_alert"
CORRELATION_MATRIX: Final = "risk.correlation_matrix"
CORRELATION_REGIME_CHANGE: Final = "risk.correlation_regime_change"
LIQUIDATION_PROXIMITY: Final = "risk.liquidation_proximity"
BREAKER_TRANSITION: Final = "risk.breaker.transition"
BREAKER_ACTION: Final = "risk.breaker.action"
AGGREGATE_SNAPSHOT: Final = "risk.aggregate_snapshot"
EXCHANGE_FAILURE: Final = "risk.exchange_failure"
KILL_SWITCH: Final = "risk.kill_switch"
ORDER_DECISION: Final = "risk.order_decision"
WEBHOOK_DISABLED: Final = "risk.webhook_disabled"  # an endpoint failing for days was switched off
WEBHOOK_TEST: Final = "risk.webhook_test"  # POST /v1/webhooks/{id}/test: delivered to that webhook only
AUDIT_EVENT_TYPES: Final = (
    THRESHOLDS_UPDATED,
    PORTFOLIO_CHECK,
    DRAWDOWN_ALERT,
    CORRELATION_MATRIX,
    CORRELATION_REGIME_CHANGE,
    LIQUIDATION_PROXIMITY,
    BREAKER_TRANSITION,
    BREAKER_ACTION,
    AGGREGATE_SNAPSHOT,
    EXCHANGE_FAILURE,
    KILL_SWITCH,
    ORDER_DECISION,
    WEBHOOK_DISABLED,
    WEBHOOK_TEST,
)

# Why verification failed (Problem.reason).
EDITED: Final = "edited"  # the record's content no longer matches its hash
BAD_SIGNATURE: Final = "bad_signature"  # the signature does not verify (content or signature altered)
DELETED: Final = "deleted"  # a seq gap: records before this one are missing
REORDERED: Final = "reordered"  # seq not increasing, or a smaller seq shows up after a gap
BROKEN_LINK: Final = "broken_link"  # prev_hash is not the previous record's hash
ANCHOR_MISMATCH: Final = "anchor_mismatch"  # the record at the anchor's seq has another hash
TRUNCATED: Final = "truncated"  # the chain ends before the anchor's seq
# Several problems on one record: the first of this order is reported.
_RANK = {
    REORDERED: 0,
    DELETED: 0,
    EDITED: 1,
    BAD_SIGNATURE: 2,
    BROKEN_LINK: 3,
    ANCHOR_MISMATCH: 4,
    TRUNCATED: 5,
}

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_SIGNATURE_TEXT = re.compile(r"[A-Za-z0-9_-]{85}[AQgw]")  # 64 bytes: the last character holds 2 bits
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_MAX_TEXT = 200


class AuditIntegrityError(TradeguardError):
    """The stored chain cannot be trusted (its head fails verification): refusing to chain onto it."""


class Signer(Protocol):
    """An Ed25519 signing key: its id, public key and signing (see `adapters.signing_key.AuditKey`)."""

    @property
    def key_id(self) -> str: ...

    @property
    def public_key(self) -> Ed25519PublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key id: first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain ends: the last record's seq, hash and signature (GENESIS before the first record)."""

    seq: int
    hash: str
    signature: str = ""  # base64url; "" only for GENESIS (64 zero bytes in the next hash)


GENESIS: Final = ChainHead(0, GENESIS_HASH, "")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event to seal: `append_many` takes these."""

    type: str
    account: str | None
    payload: Mapping[str, Any]
    ts: datetime


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event checked and canonicalised (`prepare_event`), ready to seal: `payload_json` is canonical."""

    type: str
    account: str | None
    ts: datetime
    payload_json: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One sealed record. `payload_json` is the payload's canonical JSON text: the exact bytes signed."""

    seq: int
    id: str
    type: str
    account: str | None
    ts: datetime
    payload_json: str
    prev_hash: str
    hash: str
    signature: str
    key_id: str

    @property
    def payload(self) -> Any:
        """The payload, parsed from its canonical JSON."""
        return json.loads(self.payload_json)

    @property
    def ts_text(self) -> str:
        """`ts` as signed: ISO-8601 UTC with microseconds and `Z`."""
        return format_ts(self.ts)

    def body(self) -> bytes:
        """The signed bytes (see the module docstring)."""
        return signed_body(
            seq=self.seq,
            record_id=self.id,
            event_type=self.type,
            account=self.account,
            ts_text=format_ts(self.ts),
            payload_json=self.payload_json,
            prev_hash=self.prev_hash,
            key_id=self.key_id,
        )

    def to_envelope(self) -> dict[str, Any]:
        """The record as plain JSON types (what the API returns and `from_envelope` reads)."""
        return {
            "seq": self.seq,
            "id": self.id,
            "type": self.type,
            "account": self.account,
            "ts": format_ts(self.ts),
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "signature": self.signature,
            "key_id": self.key_id,
        }

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any]) -> AuditRecord:
        """A record from its envelope (e.g. an API response); the payload is canonicalised again."""
        try:
            payload = _normalize(envelope["payload"], "payload", big_int_as_float=True)
            if not isinstance(payload, dict):
                raise InputError("payload must be a JSON object")
            return cls(
                seq=_int(envelope["seq"], "seq"),
                id=_text(envelope["id"], "id"),
                type=_text(envelope["type"], "type"),
                account=None if envelope["account"] is None else _text(envelope["account"], "account"),
                ts=parse_ts(_text(envelope["ts"], "ts")),
                payload_json=_canonical(payload),
                prev_hash=_text(envelope["prev_hash"], "prev_hash"),
                hash=_text(envelope["hash"], "hash"),
                signature=_text(envelope["signature"], "signature"),
                key_id=_text(envelope["key_id"], "key_id"),
            )
        except KeyError as exc:
            raise InputError(f"audit envelope lacks {exc.args[0]!r}") from None


@dataclass(frozen=True, slots=True)
class Problem:
    """The first problem found: where (`position` in the stream, 0-based; `seq`, `id`) and why."""

    position: int
    seq: int | None
    id: str | None
    reason: str
    detail: str

    def precedes(self, other: Problem) -> bool:
        """True if this problem is to be reported before `other` (earlier, or graver on one record)."""
        return (self.position, _RANK[self.reason]) < (other.position, _RANK[other.reason])


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of `verify_chain`: records that passed (all, or those before the problem), the head if ok."""

    ok: bool
    checked: int
    head: ChainHead | None
    signatures_verified: int
    problem: Problem | None = None


# sealing


def format_ts(ts: datetime) -> str:
    """An aware datetime as signed: `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InputError(f"audit ts must be a timezone-aware datetime, got {ts!r}")
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"  # drops "+00:00"; faster than strftime


def parse_ts(text: str) -> datetime:
    """The inverse of `format_ts` (only that exact form is accepted)."""
    if not _TS.fullmatch(text):
        raise InputError(f"audit ts must look like 2024-03-01T12:00:00.000000Z, got {text!r}")
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


def canonical_json(payload: Mapping[str, Any]) -> str:
    """The payload's RFC 8785 canonical JSON after normalisation (see the module docstring)."""
    document = _normalize(payload, "payload", big_int_as_float=False)
    if not isinstance(document, dict):
        raise InputError(f"an audit payload must be a mapping, got {type(payload).__name__}")
    return _canonical(document)


def signed_body(
    *,
    seq: int,
    record_id: str,
    event_type: str,
    account: str | None,
    ts_text: str,
    payload_json: str,
    prev_hash: str,
    key_id: str,
) -> bytes:
    """The RFC 8785 canonical body; `payload_json` must already be canonical (members in JCS order)."""
    # encode_basestring escapes exactly as JCS does (", \\, control characters; lowercase \\u00xx).
    text = (
        f'{{"account":{"null" if account is None else encode_basestring(account)},'
        f'"id":{encode_basestring(record_id)},"key_id":{encode_basestring(key_id)},'
        f'"payload":{payload_json},"prev_hash":{encode_basestring(prev_hash)},"seq":{seq},'
        f'"ts":{encode_basestring(ts_text)},"type":{encode_basestring(event_type)}}}'
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"audit record text is not valid Unicode: {exc.reason}") from None


def record_hash(body: bytes, prev_signature: bytes) -> str:
    """`hash` of a record: SHA-256 hex of its body followed by the previous raw signature."""
    return hashlib.sha256(body + prev_signature).hexdigest()


def prepare_event(
    event_type: str, account: str | None, payload: Mapping[str, Any], ts: datetime
) -> PreparedEvent:
    """Check an event's fields and canonicalise its payload (the costly part, done before any lock)."""
    if event_type not in AUDIT_EVENT_TYPES:
        raise InputError(
            f"unknown audit event type {event_type!r}: use one of {', '.join(AUDIT_EVENT_TYPES)}"
        )
    format_ts(ts)  # refuses naive datetimes
    return PreparedEvent(
        type=event_type,
        account=None if account is None else _text(account, "account"),
        ts=ts.astimezone(UTC),
        payload_json=canonical_json(payload),
    )


def seal(
    prev: ChainHead | AuditRecord | None,
    *,
    record_id: str,
    event_type: str,
    account: str | None,
    ts: datetime,
    payload: Mapping[str, Any],
    signer: Signer,
) -> AuditRecord:
    """The record following `prev` (None: the first record), signed by `signer`."""
    return seal_prepared(prev, prepare_event(event_type, account, payload, ts), record_id, signer)


def seal_prepared(
    prev: ChainHead | AuditRecord | None, event: PreparedEvent, record_id: str, signer: Signer
) -> AuditRecord:
    """`seal` for a prepared event."""
    prev = GENESIS if prev is None else prev
    prev_signature = decode_signature(prev.signature) if prev.seq else _ZERO_SIGNATURE
    if prev_signature is None:
        raise AuditIntegrityError(f"previous record seq {prev.seq} has a malformed signature")
    record_id = _text(record_id, "record id")
    seq = prev.seq + 1
    body = signed_body(
        seq=seq,
        record_id=record_id,
        event_type=event.type,
        account=event.account,
        ts_text=format_ts(event.ts),
        payload_json=event.payload_json,
        prev_hash=prev.hash,
        key_id=signer.key_id,
    )
    signature = signer.sign(body)
    if len(signature) != SIGNATURE_BYTES:
        raise InputError(f"an Ed25519 signature has {SIGNATURE_BYTES} bytes, got {len(signature)}")
    return AuditRecord(
        seq=seq,
        id=record_id,
        type=event.type,
        account=event.account,
        ts=event.ts,
        payload_json=event.payload_json,
        prev_hash=prev.hash,
        hash=record_hash(body, prev_signature),
        signature=encode_signature(signature),
        key_id=signer.key_id,
    )


def encode_signature(signature: bytes) -> str:
    """Raw signature bytes as stored: base64url without padding."""
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")


def decode_signature(text: str) -> bytes | None:
    """The raw 64-byte signature, or None if `text` is not one in canonical base64url (no padding)."""
    # The pattern also refuses non-canonical texts (unused low bits set): one signature, one text.
    if not isinstance(text, str) or not _SIGNATURE_TEXT.fullmatch(text):
        return None
    try:
        return binascii.a2b_base64(text.encode("ascii").translate(_URLSAFE) + b"==")
    except binascii.Error:  # pragma: no cover - excluded by the pattern
        return None


# verification


def keyring(public_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Public keys by key id."""
    keys = [public_keys] if isinstance(public_keys, Ed25519PublicKey) else list(public_keys)
    if not keys:
        raise InputError("verification needs at least one public key")
    return {key_id_of(key): key for key in keys}


def verify_record(
    record: AuditRecord, public_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey]
) -> str | None:
    """Check one record's signature on its own: None if valid, else why not."""
    try:
        body = record.body()
    except InputError as exc:
        return f"malformed record: {exc}"
    return _signature_problem(keyring(public_keys), record.key_id, body, decode_signature(record.signature))


def verify_chain(
    records: Iterable[AuditRecord],
    public_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey],
    *,
    all_signatures: bool = False,
    jobs: int = 1,
    anchor: ChainHead | tuple[int, str] | None = None,
    lookahead: int = DEFAULT_LOOKAHEAD,
) -> VerifyResult:
    """Verify a chain streamed in order from seq 1, in constant memory; report the first problem.

    Each record's seq (consecutive from 1), hash and link are checked. Then the signatures: by default
    those of the last two records, which authenticate everything before them through the hashes; with
    `all_signatures`, every one (in `jobs` processes when > 1). The default is exact about *whether* the
    chain is intact, but a record altered and re-hashed shows up only where the re-hashing stops: re-run
    with `all_signatures` on the records up to the reported seq to find the earliest altered one (the
    store's `AuditLog.verify` does). After a seq gap, up to `lookahead` more records are read to tell a
    deletion from a reordering. `anchor` (seq, hash): a head recorded earlier; the chain must contain it.
    """
    keys = keyring(public_keys)
    anchor_head = _anchor(anchor)
    checker = _SignatureChecker(keys, jobs) if all_signatures else None
    stream = iter(records)
    prev_seq, prev_hash, prev_signature = 0, GENESIS_HASH, _ZERO_SIGNATURE
    tail: deque[tuple[int, AuditRecord, bytes, bytes | None]] = deque(maxlen=2)  # the last two records
    problem: Problem | None = None
    anchor_seen = False
    recent: OrderedDict[str, int] = OrderedDict()  # hash -> seq of the last `lookahead` records
    position = -1
    try:
        for position, record in enumerate(stream):
            if checker is not None and checker.bad is not None and position > checker.bad.position:
                break  # a bad signature earlier than anything left to read
            problem = _check_order(position, record, prev_seq, stream, lookahead)
            if problem is not None:
                break
            signature = decode_signature(record.signature)
            try:
                body = record.body()
            except InputError as exc:
                problem = Problem(position, record.seq, record.id, EDITED, f"malformed record: {exc}")
                break
            if record.hash != record_hash(body, prev_signature):
                problem = _misplaced(position, record, prev_hash, recent, stream, lookahead) or Problem(
                    position, record.seq, record.id, EDITED, "the record's content does not match its hash"
                )
                break
            if checker is not None:
                checker.add(position, record, body, signature)
            if record.prev_hash != prev_hash:
                problem = Problem(
                    position,
                    record.seq,
                    record.id,
                    BROKEN_LINK,
                    f"prev_hash {record.prev_hash[:16]}… is not the hash of seq {prev_seq} "
                    f"({prev_hash[:16]}…)",
                )
                break
            if anchor_head is not None and record.seq == anchor_head.seq:
                anchor_seen = True
                if record.hash != anchor_head.hash:
                    problem = Problem(
                        position,
                        record.seq,
                        record.id,
                        ANCHOR_MISMATCH,
                        f"hash {record.hash[:16]}… differs from the anchored {anchor_head.hash[:16]}…: "
                        "the chain was rewritten up to here",
                    )
                    break
            tail.append((position, record, body, signature))
            if lookahead:
                recent[record.hash] = record.seq
                if len(recent) > lookahead:
                    recent.popitem(last=False)
            prev_seq, prev_hash = record.seq, record.hash
            prev_signature = signature if signature is not None else record.signature.encode()
        else:
            position += 1  # every record passed the chain checks
        verified = 0
        if checker is not None:
            bad = checker.finish()
            verified = checker.verified
            if bad is not None and (problem is None or bad.precedes(problem)):
                problem = bad
        elif problem is None:
            for tail_position, record, body, signature in tail:
                verified += 1
                why = _signature_problem(keys, record.key_id, body, signature)
                if why is not None:
                    problem = Problem(tail_position, record.seq, record.id, BAD_SIGNATURE, why)
                    break
        if problem is None and anchor_head is not None and not anchor_seen:
            problem = Problem(
                position,
                None,
                None,
                TRUNCATED,
                f"the chain ends at seq {prev_seq}, before the anchored seq {anchor_head.seq}",
            )
    finally:
        if checker is not None:
            checker.close()
    if problem is None:
        head = ChainHead(tail[-1][1].seq, tail[-1][1].hash, tail[-1][1].signature) if tail else GENESIS
        return VerifyResult(True, position, head, verified)
    return VerifyResult(False, problem.position, None, verified, problem)


def _check_order(
    position: int, record: AuditRecord, prev_seq: int, stream: Iterator[AuditRecord], lookahead: int
) -> Problem | None:
    seq = record.seq
    if not isinstance(seq, int) or isinstance(seq, bool):
        return Problem(position, None, record.id, EDITED, f"malformed seq {seq!r}")
    expected = prev_seq + 1
    if seq == expected:
        return None
    if seq < expected:
        what = "repeats" if seq == prev_seq else "comes after"
        return Problem(position, seq, record.id, REORDERED, f"seq {seq} {what} seq {prev_seq}")
    for later in islice(stream, lookahead):
        if isinstance(later.seq, int) and expected <= later.seq < seq:
            return Problem(position, seq, record.id, REORDERED, f"seq {seq} comes before seq {later.seq}")
    missing = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}..{seq - 1} ({seq - expected})"
    return Problem(position, seq, record.id, DELETED, f"{missing} missing before seq {seq}")


def _misplaced(
    position: int,
    record: AuditRecord,
    prev_hash: str,
    recent: Mapping[str, int],
    stream: Iterator[AuditRecord],
    lookahead: int,
) -> Problem | None:
    """A record whose hash fails *and* that is chained after another record (nearby): it was moved here."""
    if record.prev_hash == prev_hash:
        return None  # in its place: its content was edited
    after = recent.get(record.prev_hash)
    if after is None:
        after = next(
            (later.seq for later in islice(stream, lookahead) if later.hash == record.prev_hash), None
        )
    if after is None:
        return None
    return Problem(
        position,
        record.seq,
        record.id,
        REORDERED,
        f"the record stored as seq {record.seq} is chained after seq {after}: it was moved",
    )


def _anchor(anchor: ChainHead | tuple[int, str] | None) -> ChainHead | None:
    if anchor is None or isinstance(anchor, ChainHead):
        return anchor
    seq, hash_ = anchor
    return ChainHead(int(seq), str(hash_))


def _signature_problem(
    keys: Mapping[str, Ed25519PublicKey], key_id: str, body: bytes, signature: bytes | None
) -> str | None:
    if signature is None:
        return "the signature is not 64 bytes of base64url"
    key = keys.get(key_id)
    if key is None:
        return f"signed by key {key_id!r}, not one of the verifying keys ({', '.join(sorted(keys))})"
    try:
        key.verify(signature, body)
    except InvalidSignature:
        return f"the signature does not verify with key {key_id}"
    return None


_SigItem = tuple[int, int, str, str, bytes, bytes | None]  # position, seq, id, key_id, body, signature
_BATCH = 2048
_worker_keys: dict[str, Ed25519PublicKey] = {}


class _SignatureChecker:
    """Checks every signature, inline or in worker processes; remembers the earliest bad one."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], jobs: int) -> None:
        self._keys = keys
        self.bad: Problem | None = None
        self.verified = 0
        self._batch: list[_SigItem] = []
        self._pending: deque[tuple[int, Future[tuple[int, Problem | None]]]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        self._jobs = max(1, jobs)
        if self._jobs > 1:
            raw = {
                key_id: key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                for key_id, key in keys.items()
            }
            # spawn: safe whatever threads the caller runs; workers need only this module.
            self._pool = ProcessPoolExecutor(
                self._jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(raw,),
            )

    def add(self, position: int, record: AuditRecord, body: bytes, signature: bytes | None) -> None:
        if self.bad is not None and position > self.bad.position:
            return
        item = (position, record.seq, record.id, record.key_id, body, signature)
        if self._pool is None:
            self._take(_check_items(self._keys, [item]))
            return
        self._batch.append(item)
        if len(self._batch) >= _BATCH:
            self._submit()

    def _submit(self) -> None:
        assert self._pool is not None
        batch, self._batch = self._batch, []
        self._pending.append((batch[0][0], self._pool.submit(_check_items_in_worker, batch)))
        while len(self._pending) > 2 * self._jobs:  # bounded memory: a few batches in flight
            self._take(self._pending.popleft()[1].result())

    def _take(self, result: tuple[int, Problem | None]) -> None:
        count, bad = result
        self.verified += count
        if bad is not None and (self.bad is None or bad.position < self.bad.position):
            self.bad = bad

    def finish(self) -> Problem | None:
        if self._batch:
            self._submit()
        while self._pending:
            self._take(self._pending.popleft()[1].result())
        return self.bad

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _init_worker(raw_keys: dict[str, bytes]) -> None:
    _worker_keys.clear()
    _worker_keys.update({key_id: Ed25519PublicKey.from_public_bytes(raw) for key_id, raw in raw_keys.items()})


def _check_items_in_worker(items: list[_SigItem]) -> tuple[int, Problem | None]:
    return _check_items(_worker_keys, items)


def _check_items(keys: Mapping[str, Ed25519PublicKey], items: list[_SigItem]) -> tuple[int, Problem | None]:
    """(signatures checked, the first bad one): items are in stream order, so stop at the first."""
    for count, (position, seq, record_id, key_id, body, signature) in enumerate(items, 1):
        why = _signature_problem(keys, key_id, body, signature)
        if why is not None:
            return count, Problem(position, seq, record_id, BAD_SIGNATURE, why)
    return len(items), None


# normalisation


def _canonical(document: Any) -> str:
    try:
        return rfc8785.dumps(document).decode("utf-8")
    except rfc8785.CanonicalizationError as exc:
        raise InputError(f"audit payload is not canonical JSON material: {exc}") from exc


def _normalize(value: Any, path: str, *, big_int_as_float: bool) -> Any:
    """Plain JSON types; see the module docstring. `big_int_as_float` reads back a canonical big float."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = str.__str__(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{path}: string with a lone surrogate") from None
        return text
    if isinstance(value, int):
        value = int(value)
        if abs(value) > MAX_SAFE_INTEGER:
            if big_int_as_float:
                return float(value)
            raise InputError(f"{path}: integer {value} is beyond ±(2^53 - 1); send it as a string")
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"{path}: keys must be strings, got {key!r}")
            out[str.__str__(key)] = _normalize(item, f"{path}.{key}", big_int_as_float=big_int_as_float)
        return out
    if isinstance(value, list | tuple):
        return [
            _normalize(item, f"{path}[{i}]", big_int_as_float=big_int_as_float)
            for i, item in enumerate(value)
        ]
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InputError(f"{path}: naive datetime {value!r}; use timezone-aware UTC")
        return format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _normalize(value.value, path, big_int_as_float=big_int_as_float)
    if isinstance(value, Decimal):
        return _normalize(float(value), path, big_int_as_float=big_int_as_float)
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        return _normalize(dump(mode="json"), path, big_int_as_float=big_int_as_float)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _normalize(item(), path, big_int_as_float=big_int_as_float)
    raise InputError(f"{path}: {type(value).__name__} is not JSON-serialisable")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT or not value.isprintable():
        raise InputError(f"audit {what} must be 1 to {_MAX_TEXT} printable characters, got {value!r}")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"audit {what} must be an integer, got {value!r}")
    return value
