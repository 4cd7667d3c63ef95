"""The audit trail: sealing, canonical JSON, tamper detection, the signing key, the store and the CLI.

Store tests run on SQLite (a temporary file) and on the local PostgreSQL (a fresh database per test; they
skip locally and fail under CI=true when it is not reachable on 127.0.0.1:5432).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import rfc8785
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives import serialization

from tradeguard.adapters import signing_key
from tradeguard.adapters.signing_key import AUDIT_KEY_ENV, AuditKey, load_public_key, load_signing_key
from tradeguard.adapters.store import Store
from tradeguard.adapters.store.audit_log import AuditLog, audit_log
from tradeguard.adapters.store.schema import metadata
from tradeguard.cli import audit as audit_cli
from tradeguard.cli import keys as keys_cli
from tradeguard.cli import main
from tradeguard.core import audit
from tradeguard.core.audit import AuditEvent, AuditIntegrityError, AuditRecord, ChainHead, verify_chain
from tradeguard.errors import DataNotFoundError, InputError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TYPES = (audit.PORTFOLIO_CHECK, audit.DRAWDOWN_ALERT, audit.BREAKER_TRANSITION, audit.KILL_SWITCH)


@pytest.fixture(scope="module")
def key() -> AuditKey:
    return AuditKey.generate()


def make_chain(key: AuditKey, n: int, start: datetime = T0) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = None
    for i in range(n):
        prev = audit.seal(
            prev,
            record_id=f"rec-{i + 1}",
            event_type=TYPES[i % len(TYPES)],
            account=None if i % 5 == 4 else f"acct-{i % 3}",
            ts=start + timedelta(seconds=i),
            payload={"i": i, "ratio": i / 7, "reasons": ["a", "b"], "nested": {"z": 1, "a": [1.5, None]}},
            signer=key,
        )
        records.append(prev)
    return records


def check(records: list[AuditRecord], key: AuditKey, **options: object) -> audit.VerifyResult:
    return verify_chain(records, key.public_key, **options)  # type: ignore[arg-type]


def failure(result: audit.VerifyResult) -> tuple[int | None, str]:
    assert not result.ok and result.problem is not None
    return result.problem.seq, result.problem.reason


# sealing and the exact bytes


def test_seal_and_verify_round_trip(key: AuditKey) -> None:
    records = make_chain(key, 6)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev_hash == audit.GENESIS_HASH == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in pairwise(records))
    for all_signatures in (False, True):
        result = check(records, key, all_signatures=all_signatures)
        assert result.ok and result.problem is None and result.checked == 6
        assert result.head == ChainHead(6, records[-1].hash, records[-1].signature)
        assert result.signatures_verified == (6 if all_signatures else 2)
    empty = check([], key)
    assert empty.ok and empty.checked == 0 and empty.head == audit.GENESIS


def test_exact_signed_and_hashed_bytes(key: AuditKey) -> None:
    first, second = make_chain(key, 2)
    envelope = second.to_envelope()
    signed = {
        k: envelope[k] for k in ("seq", "id", "type", "account", "ts", "payload", "prev_hash", "key_id")
    }
    body = rfc8785.dumps(signed)
    assert second.body() == body
    assert body.startswith(b'{"account":"acct-1","id":"rec-2","key_id":"')
    assert b'"seq":2,"ts":"2026-03-01T12:00:01.000000Z","type":"risk.drawdown_alert"}' in body
    key.public_key.verify(base64.urlsafe_b64decode(second.signature + "=="), body)  # raises if invalid
    assert len(second.signature) == 86 and "=" not in second.signature
    prev_signature = base64.urlsafe_b64decode(first.signature + "==")
    assert second.hash == hashlib.sha256(body + prev_signature).hexdigest()
    assert first.hash == hashlib.sha256(first.body() + bytes(64)).hexdigest()
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert second.key_id == key.key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert audit.verify_record(second, key.public_key) is None


@pytest.mark.parametrize(
    "account", [None, "plain", 'quo"te\\back', "ctl\x01\x1f\n\t\x7f", "ünïcødé €", "\u2028\u2029", "emoji 🚀"]
)
def test_body_is_rfc8785_for_any_text(key: AuditKey, account: str | None) -> None:
    text = account or "x"
    record = audit.seal(
        None,
        record_id=text if text.isprintable() else "id",
        event_type=audit.KILL_SWITCH,
        account=account if account is None or account.isprintable() else None,
        ts=T0,
        payload={text: text, "list": [text, -0.0, 1e21, 1e-7, 2**53 - 1]},
        signer=key,
    )
    envelope = record.to_envelope()
    expected = rfc8785.dumps({k: envelope[k] for k in envelope if k not in ("hash", "signature")})
    assert record.body() == expected


def test_canonical_json_is_stable() -> None:
    class Side(Enum):
        LONG = "long"

    a = audit.canonical_json({"b": 1, "a": {"y": 2.0, "x": [3, 1.5]}})
    b = audit.canonical_json({"a": {"x": (3, 1.5), "y": 2}, "b": 1.0})
    assert a == b == '{"a":{"x":[3,1.5],"y":2},"b":1}'
    assert audit.canonical_json({"n": 1e21, "m": 1e20, "z": -0.0, "t": 0.1, "e": 5e-324}) == (
        '{"e":5e-324,"m":100000000000000000000,"n":1e+21,"t":0.1,"z":0}'
    )
    assert audit.canonical_json({"nan": float("nan"), "inf": float("inf"), "ninf": -np.inf}) == (
        '{"inf":null,"nan":null,"ninf":null}'
    )
    mixed = {
        "np": np.float64(0.25),
        "i": np.int64(7),
        "flag": np.bool_(True),
        "when": datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        "day": date(2026, 1, 2),
        "side": Side.LONG,
        "dec": Decimal("1.5"),
    }
    assert json.loads(audit.canonical_json(mixed)) == {
        "np": 0.25,
        "i": 7,
        "flag": True,
        "when": "2026-01-01T00:00:00.000000Z",
        "day": "2026-01-02",
        "side": "long",
        "dec": 1.5,
    }
    for bad in ({"big": 2**53}, {1: "int key"}, {"naive": datetime(2026, 1, 1)}, {"obj": object()}):
        with pytest.raises(InputError):
            audit.canonical_json(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="mapping"):
        audit.canonical_json([1, 2])  # type: ignore[arg-type]


def test_envelope_round_trip_reverifies(key: AuditKey) -> None:
    prev = make_chain(key, 1)[0]
    record = audit.seal(
        prev,
        record_id="big",
        event_type=audit.AGGREGATE_SNAPSHOT,
        account=None,
        ts=T0,
        payload={"notional": 1e20, "tiny": 1e-9, "x": 1.0},
        signer=key,
    )
    # What an API client gets: JSON text, parsed by any JSON library (1e20 comes back as an int).
    envelope = json.loads(json.dumps(record.to_envelope()))
    again = AuditRecord.from_envelope(envelope)
    assert again == record
    assert check([prev, again], key, all_signatures=True).ok
    with pytest.raises(InputError, match="lacks 'hash'"):
        AuditRecord.from_envelope({k: v for k, v in envelope.items() if k != "hash"})


def test_seal_refuses_bad_input(key: AuditKey) -> None:
    good = {"record_id": "x", "account": "a", "ts": T0, "payload": {}, "signer": key}
    with pytest.raises(InputError, match="unknown audit event type"):
        audit.seal(None, event_type="risk.typo", **good)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="timezone-aware"):
        audit.seal(None, event_type=audit.KILL_SWITCH, **{**good, "ts": datetime(2026, 1, 1)})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="account"):
        audit.seal(None, event_type=audit.KILL_SWITCH, **{**good, "account": ""})  # type: ignore[arg-type]
    assert set(audit.AUDIT_EVENT_TYPES) >= {
        "risk.thresholds_updated",
        "risk.portfolio_check",
        "risk.drawdown_alert",
        "risk.correlation_matrix",
        "risk.correlation_regime_change",
        "risk.liquidation_proximity",
        "risk.breaker.transition",
        "risk.aggregate_snapshot",
        "risk.exchange_failure",
        "risk.kill_switch",
        "risk.order_decision",
    }


# tamper detection (a chain as a list: an export, or what the store streams)


def test_edited_payload(key: AuditKey) -> None:
    records = make_chain(key, 8)
    records[3] = replace(records[3], payload_json=records[3].payload_json.replace('"i":3', '"i":30'))
    for all_signatures in (False, True):
        assert failure(check(records, key, all_signatures=all_signatures)) == (4, audit.EDITED)


def test_edited_fields_each_detected(key: AuditKey) -> None:
    records = make_chain(key, 5)
    edits = {
        "type": audit.KILL_SWITCH if records[2].type != audit.KILL_SWITCH else audit.PORTFOLIO_CHECK,
        "account": "someone-else",
        "ts": records[2].ts + timedelta(microseconds=1),
        "id": "other-id",
        "key_id": "0" * 16,
        "hash": "f" * 64,
    }
    for field, value in edits.items():
        tampered = [*records[:2], replace(records[2], **{field: value}), *records[3:]]
        assert failure(check(tampered, key, all_signatures=True)) == (3, audit.EDITED), field


def test_edited_signature(key: AuditKey) -> None:
    records = make_chain(key, 8)
    other = make_chain(AuditKey.generate(), 8)
    records[3] = replace(records[3], signature=other[3].signature)
    # Every signature checked: named at once.
    assert failure(check(records, key, all_signatures=True)) == (4, audit.BAD_SIGNATURE)
    # Default: the next record's hash covers this signature, so the chain fails right after it
    # (AuditLog.verify then re-checks the prefix with every signature to name seq 4, see the store tests).
    assert failure(check(records, key)) == (5, audit.EDITED)
    # The head's own signature is checked directly.
    fresh = make_chain(key, 4)
    fresh[-1] = replace(fresh[-1], signature=other[0].signature)
    assert failure(check(fresh, key)) == (4, audit.BAD_SIGNATURE)


def test_malformed_signature_and_unknown_key(key: AuditKey) -> None:
    records = make_chain(key, 3)
    broken = [*records[:2], replace(records[2], signature="not base64!")]
    assert failure(check(broken, key)) == (3, audit.BAD_SIGNATURE)
    result = verify_chain(records, AuditKey.generate().public_key)
    assert failure(result) == (2, audit.BAD_SIGNATURE)  # the last two are checked, in order
    assert result.problem is not None and "not one of the verifying keys" in result.problem.detail
    # Several keys (a key change): each record is checked with the key its key_id names.
    old, new = AuditKey.generate(), AuditKey.generate()
    first = make_chain(old, 2)
    nxt = audit.seal(
        first[-1], record_id="n", event_type=audit.KILL_SWITCH, account=None, ts=T0, payload={}, signer=new
    )
    assert verify_chain([*first, nxt], [old.public_key, new.public_key], all_signatures=True).ok


def test_rehashed_forgery(key: AuditKey) -> None:
    """An attacker without the key edits seq 3 and recomputes every hash and link after it."""
    records = make_chain(key, 10)
    forged = records[:2]
    for record in records[2:]:
        prev = forged[-1]
        payload_json = (
            record.payload_json.replace('"i":2,', '"i":99,') if record.seq == 3 else record.payload_json
        )
        candidate = replace(record, payload_json=payload_json, prev_hash=prev.hash)
        raw_prev = base64.urlsafe_b64decode(prev.signature + "==")
        forged.append(replace(candidate, hash=audit.record_hash(candidate.body(), raw_prev)))
    assert failure(check(forged, key, all_signatures=True)) == (3, audit.BAD_SIGNATURE)
    # The default pass cannot be fooled either: the last signatures do not match the re-hashed chain.
    seq, reason = failure(check(forged, key))
    assert reason == audit.BAD_SIGNATURE and seq in (9, 10)


def test_deleted_record(key: AuditKey) -> None:
    records = make_chain(key, 8)
    for all_signatures in (False, True):
        result = check(records[:3] + records[4:], key, all_signatures=all_signatures)
        assert failure(result) == (5, audit.DELETED)
        assert result.problem is not None and "seq 4 missing" in result.problem.detail
    assert failure(check(records[1:], key)) == (2, audit.DELETED)  # the first record gone
    assert failure(check(records[:2] + records[5:], key)) == (6, audit.DELETED)


def test_reordered_records(key: AuditKey) -> None:
    records = make_chain(key, 8)
    swapped = list(records)
    swapped[2], swapped[5] = swapped[5], swapped[2]
    for all_signatures in (False, True):
        result = check(swapped, key, all_signatures=all_signatures)
        assert failure(result) == (6, audit.REORDERED)
        assert result.problem is not None and "comes before seq 4" in result.problem.detail
    adjacent = list(records)
    adjacent[3], adjacent[4] = adjacent[4], adjacent[3]
    assert failure(check(adjacent, key)) == (5, audit.REORDERED)
    assert failure(check([*records[:4], records[3], *records[4:]], key)) == (4, audit.REORDERED)  # duplicate


def test_moved_record_keeps_its_new_seq(key: AuditKey) -> None:
    """Two records exchange their seq (as an UPDATE of the seq column would): the chain is in seq order."""
    records = make_chain(key, 8)
    moved = list(records)
    moved[2], moved[5] = replace(records[5], seq=3), replace(records[2], seq=6)
    result = check(moved, key, all_signatures=True)
    assert failure(result) == (3, audit.REORDERED)
    assert result.problem is not None and "chained after seq 5" in result.problem.detail


def test_truncated_tail_needs_an_anchor(key: AuditKey) -> None:
    records = make_chain(key, 8)
    anchor = (records[-1].seq, records[-1].hash)
    assert check(records, key, anchor=anchor).ok
    cut = records[:5]
    assert check(cut, key, all_signatures=True).ok  # a shorter chain is a valid chain
    result = check(cut, key, anchor=anchor)
    assert failure(result) == (None, audit.TRUNCATED)
    assert result.problem is not None and "ends at seq 5, before the anchored seq 8" in result.problem.detail
    rewritten = make_chain(key, 8, start=T0 + timedelta(days=1))  # re-signed by the key holder
    assert failure(check(rewritten, key, anchor=anchor)) == (8, audit.ANCHOR_MISMATCH)


def test_parallel_verification_agrees(key: AuditKey) -> None:
    records = make_chain(key, 5000)
    assert check(records, key, all_signatures=True, jobs=2).ok
    other = AuditKey.generate()
    bad = records[4321]
    records[4321] = replace(bad, signature=audit.encode_signature(other.sign(bad.body())))
    for jobs in (1, 2):
        result = check(records, key, all_signatures=True, jobs=jobs)
        assert failure(result) == (4322, audit.BAD_SIGNATURE)


# the signing key


def seed_of(key: AuditKey) -> bytes:
    """The raw 32-byte private key, as an operator would put it in TRADEGUARD_AUDIT_KEY."""
    private = serialization.load_pem_private_key(key.private_key_pem(), password=None)
    return private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def test_key_generated_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "var" / "audit_ed25519.pem"
    previous = os.umask(0)  # the key file must not depend on the umask
    try:
        key = load_signing_key(path, environ={})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    again = load_signing_key(path, environ={})
    assert again.key_id == key.key_id and len(key.key_id) == 16
    assert key.source == str(path)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    load_signing_key(path, environ={})
    path.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        load_signing_key(path, environ={})


def test_missing_key_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="no audit key"):
        load_signing_key(tmp_path / "absent.pem", environ={}, create=False)
    assert not (tmp_path / "absent.pem").exists()


def test_key_file_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "custom.pem"
    key = load_signing_key(environ={signing_key.AUDIT_KEY_FILE_ENV: str(path)})
    assert path.exists() and key.source == str(path)


def test_key_from_environment(tmp_path: Path) -> None:
    reference = AuditKey.generate()
    seed = seed_of(reference)
    file = tmp_path / "never.pem"
    for value in (
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
        reference.private_key_pem().decode(),
    ):
        key = load_signing_key(file, environ={AUDIT_KEY_ENV: value})
        assert key.key_id == reference.key_id and key.source == "environment"
    assert not file.exists()  # the environment wins: no file is generated
    for bad in ("not-base64!!", base64.b64encode(b"short").decode(), "-----BEGIN PRIVATE KEY-----\nxx\n"):
        with pytest.raises(InputError) as info:
            load_signing_key(file, environ={AUDIT_KEY_ENV: bad})
        assert AUDIT_KEY_ENV in str(info.value) and "xx" not in str(info.value)


def test_public_key_export(tmp_path: Path) -> None:
    key = AuditKey.generate()
    document = key.public_document()
    assert document["algorithm"] == "Ed25519" and document["key_id"] == key.key_id
    public_file = tmp_path / "audit.pub.pem"
    public_file.write_text(document["public_key_pem"])
    assert audit.key_id_of(load_public_key(public_file)) == key.key_id
    private_file = tmp_path / "audit.pem"
    private_file.write_bytes(key.private_key_pem())
    assert audit.key_id_of(load_public_key(private_file)) == key.key_id
    assert "AuditKey(key_id=" in repr(key) and "PRIVATE" not in repr(key)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(InputError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pem")


# the store, on SQLite and PostgreSQL


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as opened:
        yield opened


def fill(log: AuditLog, n: int) -> list[AuditRecord]:
    return [
        log.append(
            TYPES[i % len(TYPES)], f"acct-{i % 2}", {"i": i, "ratio": i / 3}, T0 + timedelta(minutes=i)
        )
        for i in range(n)
    ]


def tamper(store: Store, seq: int, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.update(audit_log).where(audit_log.c.seq == seq).values(**values))


def test_migration_creates_the_audit_log(store: Store) -> None:
    with store.engine.connect() as conn:
        assert "audit_log" in sa.inspect(conn).get_table_names()
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert [d for d in diff if "audit_log" in repr(d)] == []


def test_append_query_and_verify(store: Store, key: AuditKey) -> None:
    log = AuditLog(store.engine, key)
    assert log.head() is None and log.count() == 0
    records = fill(log, 6)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    head = log.head()
    assert head == records[-1] and log.count() == 6
    assert list(log.iter_all(batch=4)) == records  # exact round trip: ts, payload text, everything
    for all_signatures in (False, True):
        result = log.verify(all_signatures=all_signatures)
        assert result.ok and result.checked == 6 and result.head is not None and result.head.hash == head.hash

    envelopes = log.query(account="acct-1")
    assert [e["seq"] for e in envelopes] == [2, 4, 6]
    assert envelopes[0] == records[1].to_envelope() and envelopes[0]["payload"] == {"i": 1, "ratio": 1 / 3}
    assert [e["seq"] for e in log.query(type=audit.DRAWDOWN_ALERT)] == [2, 6]
    assert [e["seq"] for e in log.query(since=T0 + timedelta(minutes=4))] == [5, 6]
    assert [e["seq"] for e in log.query(account="acct-0", after_seq=1, limit=1)] == [3]
    assert log.query(account="nobody") == []
    for bad in (0, 10_001, True):
        with pytest.raises(InputError, match="limit"):
            log.query(limit=bad)
    with pytest.raises(InputError, match="timezone-aware"):
        log.query(since=datetime(2026, 1, 1))
    # Every envelope verifies on its own with the public key (what an API client can do).
    for envelope in log.query():
        assert audit.verify_record(AuditRecord.from_envelope(envelope), key.public_key) is None


def test_append_many_is_atomic(store: Store, key: AuditKey) -> None:
    log = AuditLog(store.engine, key)
    fill(log, 2)
    with pytest.raises(InputError):
        log.append_many(
            [
                AuditEvent(audit.KILL_SWITCH, None, {"engaged": True}, T0),
                AuditEvent(audit.KILL_SWITCH, None, {"big": 2**60}, T0),
            ]
        )
    assert log.count() == 2
    batch = log.append_many([AuditEvent(audit.KILL_SWITCH, None, {"n": n}, T0) for n in range(3)])
    assert [r.seq for r in batch] == [3, 4, 5] and batch[0].account is None
    assert log.append_many([]) == []
    assert log.verify(all_signatures=True).ok
    with pytest.raises(InputError, match="no signing key"):
        AuditLog(store.engine).append(audit.KILL_SWITCH, None, {}, T0)


def test_tampering_in_the_database_is_named(store: Store, key: AuditKey) -> None:
    log = AuditLog(store.engine, key)
    records = fill(log, 10)
    tamper(store, 4, payload=records[3].payload_json.replace('"i":3', '"i":4'))
    result = log.verify()
    assert failure(result) == (4, audit.EDITED)
    assert result.problem is not None and result.problem.id == records[3].id
    tamper(store, 4, payload=records[3].payload_json)
    assert log.verify().ok

    # A middle signature replaced: the default pass fails at seq 6, the re-check names seq 5.
    other = AuditKey.generate()
    tamper(store, 5, signature=audit.encode_signature(other.sign(records[4].body())))
    assert failure(log.verify()) == (5, audit.BAD_SIGNATURE)
    assert failure(log.verify(all_signatures=True, jobs=1)) == (5, audit.BAD_SIGNATURE)
    tamper(store, 5, signature=records[4].signature)

    # Two records exchange their seq.
    with store.engine.begin() as conn:
        for old, new in ((3, -1), (7, 3), (-1, 7)):
            conn.execute(sa.update(audit_log).where(audit_log.c.seq == old).values(seq=new))
    assert failure(log.verify()) == (3, audit.REORDERED)
    with store.engine.begin() as conn:
        for old, new in ((3, -1), (7, 3), (-1, 7)):
            conn.execute(sa.update(audit_log).where(audit_log.c.seq == old).values(seq=new))
    assert log.verify().ok

    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit_log).where(audit_log.c.seq == 6))
    result = log.verify()
    assert failure(result) == (7, audit.DELETED) and result.problem is not None
    assert "seq 6 missing" in result.problem.detail


def test_truncation_detected_against_a_kept_head(store: Store, key: AuditKey) -> None:
    log = AuditLog(store.engine, key)
    fill(log, 5)
    kept = log.head()
    assert kept is not None
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit_log).where(audit_log.c.seq >= 4))
    assert log.verify().ok  # not detectable from the chain alone
    now = log.head()
    assert now is not None and (now.seq, now.hash) != (kept.seq, kept.hash)  # but the head moved back
    assert failure(log.verify(anchor=(kept.seq, kept.hash))) == (None, audit.TRUNCATED)


def test_appender_refuses_a_tampered_head(store: Store, key: AuditKey) -> None:
    records = fill(AuditLog(store.engine, key), 4)
    other = AuditKey.generate()
    forged_signature = audit.encode_signature(other.sign(records[-1].body()))
    tamper(store, 4, signature=forged_signature)
    with pytest.raises(AuditIntegrityError, match="seq 4"):
        AuditLog(store.engine, key).append(audit.KILL_SWITCH, None, {}, T0)
    tamper(store, 4, signature=records[-1].signature)
    # The predecessor's signature is covered by the head's hash, which nothing has signed yet: checked too.
    tamper(store, 3, signature=audit.encode_signature(other.sign(records[2].body())))
    with pytest.raises(AuditIntegrityError, match="does not match its hash"):
        AuditLog(store.engine, key).append(audit.KILL_SWITCH, None, {}, T0)
    tamper(store, 3, signature=records[2].signature)
    tamper(store, 4, payload='{"i":3,"ratio":2}')
    with pytest.raises(AuditIntegrityError, match="does not match its hash"):
        AuditLog(store.engine, key).append(audit.KILL_SWITCH, None, {}, T0)
    tamper(store, 4, payload=records[3].payload_json)
    # A head signed by a key the appender does not trust.
    stranger = AuditLog(store.engine, other)
    with pytest.raises(AuditIntegrityError, match="not one of the verifying keys"):
        stranger.append(audit.KILL_SWITCH, None, {}, T0)
    rotated = AuditLog(store.engine, other, trusted_keys=[key.public_key])
    rotated.append(audit.KILL_SWITCH, None, {"rotated": True}, T0)
    assert rotated.verify([key.public_key, other.public_key], all_signatures=True).ok


def test_appender_notices_a_cut_tail(store: Store, key: AuditKey) -> None:
    log = AuditLog(store.engine, key)
    fill(log, 3)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit_log).where(audit_log.c.seq == 3))
    with pytest.raises(AuditIntegrityError, match="cut: this process appended seq 3, the head is now seq 2"):
        log.append(audit.KILL_SWITCH, None, {}, T0)
    assert log.count() == 2


def test_replicas_share_one_chain(store: Store, key: AuditKey) -> None:
    """Several appenders (threads, each its own AuditLog like separate replicas) never fork the chain."""
    logs = [AuditLog(store.engine, key) for _ in range(4)]
    errors: list[BaseException] = []

    def work(log: AuditLog, worker: int) -> None:
        try:
            for i in range(15):
                log.append(audit.ORDER_DECISION, f"bot-{worker}", {"i": i}, T0 + timedelta(seconds=i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(log, n)) for n, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert logs[0].count() == 60
    records = list(logs[0].iter_all())
    assert [r.seq for r in records] == list(range(1, 61))
    assert logs[1].verify(all_signatures=True).ok
    for n in range(4):
        assert [e["payload"]["i"] for e in logs[0].query(account=f"bot-{n}")] == list(range(15))


# the CLI


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, AuditKey]:
    if audit_cli not in main.COMMANDS:
        monkeypatch.setattr(main, "COMMANDS", (*main.COMMANDS, audit_cli))
    monkeypatch.delenv(keys_cli.STORE_URL_ENV, raising=False)
    key = AuditKey.generate()
    monkeypatch.setenv(AUDIT_KEY_ENV, base64.b64encode(seed_of(key)).decode())
    url = f"sqlite:///{tmp_path / 'var' / 'tradeguard.db'}"
    with Store.open(url) as store:
        fill(AuditLog(store.engine, key), 5)
    return url, key


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main.main(["audit", "verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_verify_ok(cli_env: tuple[str, AuditKey], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = cli_env
    with Store.open(url) as store:
        head = AuditLog(store.engine).head()
    assert head is not None
    code, out, _ = run(capsys, "--db", url)
    assert code == 0
    assert out.startswith(f"ok: 5 records, chain intact, head {head.hash}") and out.count("\n") == 1
    code, out, _ = run(capsys, "--db", url, "--all-signatures", "--jobs", "1", "--anchor", f"5:{head.hash}")
    assert code == 0 and "5 signatures verified" in out


def test_cli_verify_fails_naming_the_record(
    cli_env: tuple[str, AuditKey], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url, _ = cli_env
    with Store.open(url) as store:
        records = list(AuditLog(store.engine).iter_all())
        tamper(store, 2, payload='{"i":1,"ratio":0.5}')
    code, out, _ = run(capsys, "--db", url)
    assert code == 1
    assert (
        out == f"FAIL at seq 2 (id {records[1].id}): edited: the record's content does not match its hash\n"
    )

    with Store.open(url) as store:
        tamper(store, 2, payload=records[1].payload_json)
        with store.engine.begin() as conn:
            conn.execute(sa.delete(audit_log).where(audit_log.c.seq == 5))
    assert run(capsys, "--db", url)[0] == 0
    code, out, _ = run(capsys, "--db", url, "--anchor", f"5:{records[4].hash}")
    assert code == 1 and out.startswith("FAIL at the end (id -): truncated")

    other = tmp_path / "other.pub.pem"
    other.write_text(AuditKey.generate().public_key_pem())
    code, out, _ = run(capsys, "--db", url, "--public-key", str(other))
    assert code == 1 and "bad_signature" in out


def test_cli_verify_errors(
    cli_env: tuple[str, AuditKey],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = cli_env
    code, out, err = run(capsys, "--db", f"sqlite:///{tmp_path / 'absent.db'}")
    assert code == 2 and out == "" and "no database at" in err
    assert not (tmp_path / "absent.db").exists()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    sa.create_engine(empty).connect().close()
    code, _, err = run(capsys, "--db", empty)
    assert code == 2 and "has no audit log" in err
    code, _, err = run(capsys, "--db", url, "--anchor", "five")
    assert code == 2 and "--anchor must be SEQ:HASH" in err
    monkeypatch.delenv(AUDIT_KEY_ENV)
    monkeypatch.chdir(tmp_path)  # no var/audit_ed25519.pem here
    code, _, err = run(capsys, "--db", url)
    assert code == 2 and "no audit key" in err
    assert not (tmp_path / "var" / "audit_ed25519.pem").exists()  # verify never generates a key


def test_cli_verify_empty_log(
    cli_env: tuple[str, AuditKey], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    Store.open(url).close()
    code, out, _ = run(capsys, "--db", url)
    assert code == 0 and out.startswith("ok: 0 records, chain intact, head none")


def test_dataclasses_are_frozen(key: AuditKey) -> None:
    record = make_chain(key, 1)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.seq = 2  # type: ignore[misc]
