"""Webhooks: Standard Webhooks signatures checked by an independent receiver, the durable outbox (same
transaction as the audit record), retries on an injected clock, dead letters, redelivery, restarts, disabling
failing endpoints, the HTTP client, and the API (CRUD, tenancy, validation).

Store tests run on SQLite and on the local PostgreSQL (`store_url`; PostgreSQL skips locally and fails under
CI=true when it is not reachable). Every receiver listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.fakes.background_server import BackgroundServer
from tests.service_kit import ManualClock as Clock
from tests.service_kit import compose, issue_keys
from tradeguard.adapters.signing_key import AuditKey
from tradeguard.adapters.store import Store
from tradeguard.adapters.store.audit_log import AuditLog, audit_log
from tradeguard.adapters.store.outbox import Outbox, delivery_id
from tradeguard.adapters.store.schema import webhook_deliveries
from tradeguard.adapters.store.webhooks import Webhook, WebhookStore
from tradeguard.adapters.webhooks.http import HttpClient, HttpError
from tradeguard.adapters.webhooks.policy import DEFAULT_SCHEDULE_S, DeliveryPolicy
from tradeguard.adapters.webhooks.targets import TargetPolicy, parse_networks
from tradeguard.adapters.webhooks.worker import WebhookWorker
from tradeguard.core import audit
from tradeguard.core.audit import AuditRecord, verify_record
from tradeguard.errors import InputError
from tradeguard.service.app import create_app

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)


# --- the receiver: Standard Webhooks verification written from the spec, independently of the sender ---


def verify_standard_webhook(
    secret: str, headers: dict[str, str], body: bytes, now: datetime
) -> tuple[bool, str]:
    """(accepted, why): the spec's symmetric scheme — HMAC-SHA256 over `{id}.{timestamp}.{body}` with the
    base64-decoded `whsec_` secret, any `v1,` signature of the space-separated list, and a timestamp within
    five minutes of now."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return False, "missing headers"
    if abs(now.timestamp() - int(timestamp)) > TOLERANCE.total_seconds():
        return False, "timestamp outside tolerance"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True, "ok"
    return False, "no matching signature"


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes
    verdict: str


@dataclass
class Receiver(BackgroundServer):
    """Verifies every POST, processes each webhook-id once, answers as scripted (default 204).

    Script items: an HTTP status, or ("slow", seconds) to answer 204 only after that long, or
    ("hold", event) to answer 204 once the event is set.
    """

    secrets: list[str]
    now: Callable[[], datetime]
    script: deque[Any] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def _make_server(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                action = receiver.script.popleft() if receiver.script else 204
                ok, why = False, "no secret"
                for secret in receiver.secrets:
                    ok, why = verify_standard_webhook(secret, headers, body, receiver.now())
                    if ok:
                        break
                receiver.seen.append(Seen(headers, body, why))
                receiver.arrived.set()
                status = 204
                if not ok:
                    status = 400
                elif isinstance(action, tuple) and action[0] == "slow":
                    time.sleep(action[1])
                elif isinstance(action, tuple) and action[0] == "hold":
                    action[1].wait(10)
                elif isinstance(action, int):
                    status = action
                if ok and 200 <= status < 300 and headers["webhook-id"] not in receiver.processed:
                    receiver.processed.append(headers["webhook-id"])  # idempotent by webhook-id
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def post(self, headers: dict[str, str], body: bytes) -> int:
        """POST as a sender would (for replayed and tampered requests)."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{self.url}/hook", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code


# --- the service side, as the kernel wires it ---


@dataclass
class Side:
    store: Store
    outbox: Outbox
    hooks: WebhookStore
    log: AuditLog
    worker: WebhookWorker

    def append(
        self, event_type: str = audit.BREAKER_TRANSITION, account: str | None = "alpha"
    ) -> AuditRecord:
        return self.log.append(
            event_type, account, {"breaker": "drawdown", "to": "open"}, self.outbox._clock()
        )

    def deliver(self) -> int:
        """One pass of the worker (everything due now), then close its connections."""

        async def once() -> int:
            try:
                return await self.worker.run_once()
            finally:
                await self.worker.close()

        return asyncio.run(once())

    def deliveries(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(webhook_deliveries).order_by(webhook_deliveries.c.id)).mappings()
            return [dict(row) for row in rows]

    def close(self) -> None:
        self.store.close()


KEY = AuditKey.generate()


def open_side(url: str, clock: Clock, **policy: Any) -> Side:
    store = Store.open(url)
    outbox = Outbox(store.engine, clock=clock, subscription_ttl_s=0)
    log = AuditLog(store.engine, KEY, outbox=outbox)
    options = {"jitter_ratio": 0.0, "timeout_s": 2.0} | policy
    worker = WebhookWorker(outbox, DeliveryPolicy(**options), clock=clock, audit=log)
    return Side(store, outbox, WebhookStore(store.engine, on_change=outbox.invalidate), log, worker)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def side(store_url: str, clock: Clock) -> Iterator[Side]:
    opened = open_side(store_url, clock)
    yield opened
    opened.close()


@pytest.fixture
def receiver(clock: Clock) -> Iterator[Receiver]:
    with Receiver(secrets=[], now=clock) as started:
        yield started


def register(
    side: Side, receiver: Receiver, patterns: tuple[str, ...] = ("risk.breaker.*",), **kw: Any
) -> Webhook:
    hook = side.hooks.create("alpha", f"{receiver.url}/hook", list(patterns), now=side.outbox._clock(), **kw)
    receiver.secrets.append(hook.secret)
    return hook


def closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


# --- signatures ---


def test_delivery_is_a_standard_webhook_signed_envelope(side: Side, receiver: Receiver, clock: Clock) -> None:
    hook = register(side, receiver)
    record = side.append()
    side.append(audit.KILL_SWITCH)  # not subscribed
    assert side.deliver() == 1
    [seen] = receiver.seen
    assert seen.verdict == "ok" and receiver.processed == [delivery_id(record.seq, hook.id)]
    assert seen.headers["webhook-timestamp"] == str(int(clock().timestamp()))
    assert seen.headers["content-type"] == "application/json"
    assert "." not in seen.headers["webhook-id"]  # the spec forbids it in the signed content's fields
    # The body is the signed audit envelope: receivers can check our Ed25519 signature too.
    envelope = json.loads(seen.body)
    assert envelope == record.to_envelope()
    assert verify_record(AuditRecord.from_envelope(envelope), [KEY.public_key]) is None
    [row] = side.deliveries()
    assert row["status"] == "succeeded" and row["attempts"] == 1 and row["last_status_code"] == 204
    assert row["next_attempt_at"] is None and row["delivered_at"] == clock()


def test_receiver_rejects_a_tampered_body_and_an_old_timestamp(
    side: Side, receiver: Receiver, clock: Clock
) -> None:
    register(side, receiver)
    side.append()
    side.deliver()
    [seen] = receiver.seen
    headers = {k: v for k, v in seen.headers.items() if k.startswith("webhook-")}
    tampered = seen.body.replace(b'"open"', b'"closed"')
    assert tampered != seen.body
    assert receiver.post(headers, tampered) == 400
    assert receiver.seen[-1].verdict == "no matching signature"
    clock.advance(minutes=6)  # the same signed request, replayed later
    assert receiver.post(headers, seen.body) == 400
    assert receiver.seen[-1].verdict == "timestamp outside tolerance"
    clock.advance(minutes=-6)
    assert receiver.post(headers, seen.body) == 204  # intact and fresh: accepted (and not processed twice)
    assert len(receiver.processed) == 1


def test_rotation_signs_with_both_secrets_during_the_overlap(
    side: Side, receiver: Receiver, clock: Clock
) -> None:
    hook = register(side, receiver)
    old = hook.secret
    rotated = side.hooks.rotate_secret(hook.id, now=clock(), overlap=timedelta(hours=24))
    assert rotated is not None and rotated.secret != old and rotated.secret.startswith("whsec_")
    side.append()
    side.deliver()
    headers, body = receiver.seen[-1].headers, receiver.seen[-1].body
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, rotated.secret):  # a receiver holding either secret accepts
        assert verify_standard_webhook(secret, headers, body, clock()) == (True, "ok")
    clock.advance(hours=24, seconds=1)  # the overlap is over: only the new secret signs
    side.append()
    side.deliver()
    headers, body = receiver.seen[-1].headers, receiver.seen[-1].body
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert verify_standard_webhook(rotated.secret, headers, body, clock())[0]
    assert not verify_standard_webhook(old, headers, body, clock())[0]


# --- the outbox: same transaction as the audit record ---


class FailingAfterEnqueue(Outbox):
    def enqueue(self, conn: Any, records: Any) -> Any:
        super().enqueue(conn, records)
        raise RuntimeError("the append failed after the deliveries were written")


def test_deliveries_commit_or_roll_back_with_their_audit_record(store_url: str, clock: Clock) -> None:
    with Store.open(store_url) as store:
        outbox = FailingAfterEnqueue(store.engine, clock=clock)
        hooks = WebhookStore(store.engine, on_change=outbox.invalidate)
        hooks.create("alpha", "http://127.0.0.1:9/hook", ["*"], now=clock())
        log = AuditLog(store.engine, KEY, outbox=outbox)
        with pytest.raises(RuntimeError):
            log.append(audit.BREAKER_TRANSITION, "alpha", {"x": 1}, clock())
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(webhook_deliveries)).scalar_one() == 0
            assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one() == 0
        ok = AuditLog(store.engine, KEY, outbox=Outbox(store.engine, clock=clock))
        record = ok.append(audit.BREAKER_TRANSITION, "alpha", {"x": 1}, clock())
        with store.engine.connect() as conn:
            seqs = conn.execute(sa.select(webhook_deliveries.c.audit_seq)).scalars().all()
        assert seqs == [record.seq]


def test_routing_by_account_pattern_and_fleet(side: Side, clock: Clock) -> None:
    mine = side.hooks.create(
        "alpha", "http://127.0.0.1:9/a", ["risk.breaker.*", "risk.kill_switch"], now=clock()
    )
    other = side.hooks.create("beta", "http://127.0.0.1:9/b", ["*"], now=clock())
    fleet = side.hooks.create("*", "http://127.0.0.1:9/f", ["risk.kill_switch"], now=clock())
    off = side.hooks.create("alpha", "http://127.0.0.1:9/o", ["*"], now=clock())
    side.hooks.update(off.id, now=clock(), enabled=False)
    side.append(audit.BREAKER_ACTION)  # alpha's breaker: mine
    side.append(audit.KILL_SWITCH)  # alpha's kill switch: mine and the fleet webhook
    side.append(audit.KILL_SWITCH, account="*")  # the fleet switch: the fleet webhook only
    side.append(audit.DRAWDOWN_ALERT, account="beta")  # beta's: other
    got = sorted((d["audit_seq"], d["webhook_id"]) for d in side.deliveries())
    assert got == sorted([(1, mine.id), (2, mine.id), (2, fleet.id), (3, fleet.id), (4, other.id)])


# --- retries on the injected clock, dead letters, redelivery ---


def test_down_receiver_is_retried_on_schedule_then_dead(side: Side, clock: Clock) -> None:
    side.hooks.create("alpha", closed_port_url(), ["risk.breaker.*"], now=clock())
    side.append()
    start = clock()
    for attempt, delay in enumerate(DEFAULT_SCHEDULE_S, start=1):
        if delay:
            clock.advance(seconds=delay - 0.5)
            assert side.deliver() == 0, f"attempt {attempt} came early"
            clock.advance(seconds=0.5)
        assert side.deliver() == 1
        [row] = side.deliveries()
        assert row["attempts"] == attempt and "ConnectionRefused" in row["last_error"]
    assert row["status"] == "dead" and row["next_attempt_at"] is None
    assert clock() - start == timedelta(seconds=sum(DEFAULT_SCHEDULE_S))  # 75 h 35 min 5 s


def test_blocked_networks_are_refused_at_registration_and_on_connect(
    store_url: str, clock: Clock, receiver: Receiver
) -> None:
    default = TargetPolicy()
    assert default.blocked_by("169.254.169.254") is not None and default.blocked_by("::ffff:169.254.1.1")
    assert default.blocked_by("fd00:ec2::254") is not None and default.blocked_by("127.0.0.1") is None
    for literal in ("http://169.254.169.254/hook", "http://[fe80::1]/hook", "http://[::ffff:169.254.1.1]/x"):
        with pytest.raises(InputError, match="blocked network"):
            WebhookStore(Store.open("sqlite://").engine).create("alpha", literal, ["risk.*"], now=clock())
    loopback = TargetPolicy(parse_networks(["127.0.0.0/8", "::1/128"]))  # a shared, untrusted-tenant setup
    side = open_side(store_url, clock, targets=loopback)
    try:
        port = receiver.url.rsplit(":", 1)[1]
        side.hooks.create("alpha", f"http://localhost:{port}/hook", ["risk.breaker.*"], now=clock())  # a name
        side.append()
        assert side.deliver() == 1
        [row] = side.deliveries()
        assert row["status"] == "failed" and "resolves only to blocked addresses" in row["last_error"]
        assert "127.0.0.1 (in 127.0.0.0/8)" in row["last_error"] and receiver.seen == []
    finally:
        side.close()


def test_500s_and_timeouts_are_retried(store_url: str, clock: Clock, receiver: Receiver) -> None:
    side = open_side(store_url, clock, timeout_s=0.3)
    try:
        register(side, receiver)
        receiver.script.extend([500, ("slow", 1.0), 503])
        side.append()
        side.deliver()
        [row] = side.deliveries()
        assert (row["status"], row["last_status_code"], row["last_error"]) == ("failed", 500, "HTTP 500")
        assert row["next_attempt_at"] == clock() + timedelta(seconds=5)
        clock.advance(seconds=5)
        side.deliver()
        [row] = side.deliveries()
        assert row["attempts"] == 2 and row["last_error"] == "no answer within 0.3 s"
        assert row["next_attempt_at"] == clock() + timedelta(minutes=5)
        clock.advance(minutes=5)
        side.deliver()
        clock.advance(minutes=30)
        side.deliver()
        [row] = side.deliveries()
        assert row["status"] == "succeeded" and row["attempts"] == 4 and row["last_error"] is None
        assert {s.headers["webhook-id"] for s in receiver.seen} == {row["id"]}  # one id on every attempt
        assert receiver.processed == [row["id"]]
    finally:
        side.close()


def test_retry_after_is_honoured(store_url: str, clock: Clock, receiver: Receiver) -> None:
    side = open_side(store_url, clock)
    try:
        register(side, receiver)
        receiver.script.append(429)
        original = receiver._server.RequestHandlerClass  # type: ignore[union-attr]

        class Limited(original):  # type: ignore[misc, valid-type]
            def send_header(self, key: str, value: str) -> None:
                super().send_header(key, value)
                if key == "Content-Length":
                    super().send_header("Retry-After", "120")

        receiver._server.RequestHandlerClass = Limited  # type: ignore[union-attr]
        side.append()
        side.deliver()
        [row] = side.deliveries()
        assert row["next_attempt_at"] == clock() + timedelta(seconds=120)  # not the scheduled 5 s
    finally:
        side.close()


def test_dead_letter_then_redeliver_under_the_same_id(
    store_url: str, clock: Clock, receiver: Receiver
) -> None:
    side = open_side(store_url, clock, schedule_s=(0.0, 5.0))
    try:
        register(side, receiver)
        receiver.script.extend([500, 500])
        side.append()
        side.deliver()
        clock.advance(seconds=5)
        side.deliver()
        [row] = side.deliveries()
        assert row["status"] == "dead" and row["attempts"] == 2
        clock.advance(hours=1)
        assert side.deliver() == 0
        again = side.outbox.redeliver(row["id"], clock())
        assert again is not None and again.status == "pending" and again.next_attempt_at == clock()
        side.deliver()
        [row] = side.deliveries()
        assert row["status"] == "succeeded" and row["attempts"] == 1
        assert [s.headers["webhook-id"] for s in receiver.seen] == [row["id"]] * 3
    finally:
        side.close()


def test_concurrent_workers_never_claim_the_same_delivery(store_url: str, clock: Clock) -> None:
    side = open_side(store_url, clock)
    try:
        for i in range(4):
            side.hooks.create("alpha", f"http://127.0.0.1:9/{i}", ["*"], now=clock())
        side.log.append_many(
            [audit.AuditEvent(audit.KILL_SWITCH, "alpha", {"i": i}, clock()) for i in range(50)]
        )
        replicas = [Outbox(Store.open(store_url).engine, clock=clock) for _ in range(3)]
        claimed: list[list[str]] = [[] for _ in replicas]

        def claim(index: int) -> None:
            while due := replicas[index].claim_due(clock(), 7, clock() + timedelta(minutes=1)):
                claimed[index].extend(d.id for d in due)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(replicas))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [msg_id for ids in claimed for msg_id in ids]
        assert len(every) == len(set(every)) == 200
        for replica in replicas:
            replica.engine.dispose()
    finally:
        side.close()


# --- restarts: nothing lost, exactly once by webhook-id ---


def test_restart_mid_retry_delivers_once(store_url: str, clock: Clock, receiver: Receiver) -> None:
    first = open_side(store_url, clock)
    register(first, receiver)
    receiver.script.append(500)
    first.append()
    first.deliver()
    first.close()  # the service stops with the retry pending
    clock.advance(seconds=5)
    second = open_side(store_url, clock)
    try:
        assert second.deliver() == 1
        clock.advance(days=3)
        assert second.deliver() == 0
        [row] = second.deliveries()
        assert row["status"] == "succeeded"
        assert [s.headers["webhook-id"] for s in receiver.seen] == [row["id"]] * 2
        assert receiver.processed == [row["id"]]
    finally:
        second.close()


def test_crash_after_the_receiver_answered_resends_the_same_id(
    store_url: str, clock: Clock, receiver: Receiver
) -> None:
    first = open_side(store_url, clock)
    register(first, receiver)
    release = threading.Event()
    receiver.script.append(("hold", release))
    first.append()

    async def crash_mid_attempt() -> None:
        attempt = asyncio.create_task(first.worker.run_once())
        while not receiver.arrived.is_set():
            await asyncio.sleep(0.01)
        attempt.cancel()  # dies before storing the outcome
        with contextlib.suppress(asyncio.CancelledError):
            await attempt
        await first.worker.close()

    asyncio.run(crash_mid_attempt())
    release.set()  # the receiver did process it
    first.close()
    second = open_side(store_url, clock)
    try:
        assert second.deliver() == 0  # still leased to the dead worker
        clock.advance(seconds=second.worker.policy.lease.total_seconds())
        assert second.deliver() == 1
        [row] = second.deliveries()
        assert row["status"] == "succeeded"
        assert [s.headers["webhook-id"] for s in receiver.seen] == [row["id"]] * 2
        assert receiver.processed == [row["id"]]  # the receiver's idempotency key made it exactly once
    finally:
        second.close()


def test_background_worker_stores_every_outcome_and_hands_back_on_stop(
    side: Side, receiver: Receiver, clock: Clock
) -> None:
    register(side, receiver, ("risk.breaker.*", "risk.kill_switch"))
    register(side, receiver)

    def all_stored() -> bool:
        rows = side.deliveries()
        return len(rows) == 100 and all(r["status"] == "succeeded" for r in rows)

    async def scenario() -> None:
        await side.worker.start()
        for _ in range(50):  # one commit each: handed to the worker as they commit, sent concurrently
            await asyncio.to_thread(side.append)
        deadline = time.monotonic() + 10
        while not all_stored():  # every outcome is stored while it runs, none lost to a batch swap
            assert time.monotonic() < deadline, "outcomes not stored"
            await asyncio.sleep(0.02)
        release = threading.Event()
        receiver.script.append(("hold", release))
        receiver.arrived.clear()
        await asyncio.to_thread(side.append, audit.KILL_SWITCH)  # to the first webhook only
        while not receiver.arrived.is_set():
            await asyncio.sleep(0.01)
        await side.worker.stop(grace_s=0.1)  # the attempt in flight is abandoned and handed back
        release.set()

    asyncio.run(scenario())
    assert len(receiver.processed) == 101  # the receiver did process the abandoned attempt
    [held] = [r for r in side.deliveries() if r["audit_seq"] == 51]
    assert held["status"] == "pending" and held["attempts"] == 0 and held["next_attempt_at"] == clock()


# --- failing endpoints ---


def test_endpoint_failing_for_days_is_disabled_and_the_operator_told(
    side: Side, clock: Clock, receiver: Receiver
) -> None:
    daily = (0.0, *([86400.0] * 9))
    side.worker = WebhookWorker(
        side.outbox, DeliveryPolicy(schedule_s=daily, jitter_ratio=0.0), clock=clock, audit=side.log
    )
    failing = side.hooks.create("alpha", closed_port_url(), ["risk.breaker.*"], now=clock())
    register(side, receiver, ("risk.webhook_*",))
    side.append()
    for _ in range(5):
        side.deliver()
        assert side.hooks.get(failing.id).enabled  # type: ignore[union-attr]
        clock.advance(days=1)
    side.deliver()  # day 5: still failing since day 0
    hook = side.hooks.get(failing.id)
    assert hook is not None and not hook.enabled and hook.failing_since == T0
    assert hook.disabled_reason == "every delivery failed since 2026-03-02T09:30:00Z"
    side.append()  # new events no longer go to it
    # The operator is told: a risk.webhook_disabled audit event, which other webhooks (and channels) route.
    [told] = [json.loads(s.body) for s in receiver.seen]
    assert told["type"] == "risk.webhook_disabled" and told["payload"]["webhook_id"] == failing.id
    rows = {d["webhook_id"]: d for d in side.deliveries()}
    assert rows[failing.id]["status"] == "failed" and rows[failing.id]["next_attempt_at"] is None  # parked
    side.hooks.update(failing.id, now=clock(), enabled=True)
    rows = {d["webhook_id"]: d for d in side.deliveries()}
    assert rows[failing.id]["next_attempt_at"] == clock()  # resumed, nothing lost
    assert side.hooks.get(failing.id).failing_since is None  # type: ignore[union-attr]


def test_410_gone_disables_at_once(side: Side, receiver: Receiver, clock: Clock) -> None:
    hook = register(side, receiver)
    receiver.script.append(410)
    side.append()
    side.deliver()
    disabled = side.hooks.get(hook.id)
    assert disabled is not None and not disabled.enabled
    assert disabled.disabled_reason == "the receiver answered 410 Gone"


def test_a_success_resets_failing_since(side: Side, receiver: Receiver, clock: Clock) -> None:
    hook = register(side, receiver)
    receiver.script.append(500)
    side.append()
    side.deliver()
    assert side.hooks.get(hook.id).failing_since == clock()  # type: ignore[union-attr]
    clock.advance(seconds=5)
    side.deliver()
    assert side.hooks.get(hook.id).failing_since is None  # type: ignore[union-attr]


# --- endpoint validation ---


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "http:///nohost"}, "http:// or https://"),
        ({"url": "https://user:pw@example.com/"}, "credentials"),
        ({"url": "https://example.com/a b"}, "ASCII"),
        ({"event_types": []}, "1 to 50"),
        ({"event_types": ["risk.nothing.*"]}, "matches no event type"),
        ({"event_types": ["risk.[a]*"]}, "letters, digits"),
        ({"secret": "not-a-secret"}, "whsec_"),
        ({"secret": "whsec_" + base64.b64encode(b"short").decode()}, "24 to 64 bytes"),
    ],
)
def test_invalid_webhooks_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'v.db'}") as store:
        values: dict[str, Any] = {"url": "https://example.com/hook", "event_types": ["*"]} | change
        with pytest.raises(InputError, match=message):
            WebhookStore(store.engine).create("alpha", now=T0, **values)


# --- the HTTP client ---


async def raw_server(answer: Callable[[bytes], bytes | None]) -> tuple[asyncio.Server, str]:
    """A server answering each request's bytes with `answer(request)` (None: close without answering)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))[15:]
                )
                reply = answer(head + await reader.readexactly(length))
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply or reply.startswith(b"HTTP/1.0"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/path?q=1"


def test_http_client_keep_alive_chunked_and_close_delimited_answers() -> None:
    answers = deque(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n3\r\nbad\r\n0\r\n\r\n",
            b"HTTP/1.0 202 Accepted\r\n\r\nuntil the end",
        ]
    )
    requests: list[bytes] = []

    def answer(request: bytes) -> bytes:
        requests.append(request)
        return answers.popleft()

    async def scenario() -> list[Any]:
        server, url = await raw_server(answer)
        client = HttpClient(timeout_s=2, user_agent="test")
        try:
            return [await client.post(url, b"{}", {"webhook-id": "msg_1"}) for _ in range(3)]
        finally:
            await client.close()
            server.close()

    first, second, third = asyncio.run(scenario())
    assert (first.status, first.body) == (200, b"ok")
    assert (second.status, second.body, second.retry_after) == (500, b"bad", "7")
    assert (third.status, third.body) == (202, b"until the end")
    assert requests[0].startswith(b"POST /path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"webhook-id: msg_1\r\n" in requests[0] and requests[0].endswith(b"\r\n\r\n{}")


def test_http_client_replaces_a_pooled_connection_the_server_closed() -> None:
    served = 0

    def answer(_: bytes) -> bytes:
        nonlocal served
        served += 1
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    async def scenario() -> tuple[int, int]:
        server, url = await raw_server(answer)
        client = HttpClient(timeout_s=2, user_agent="test")
        try:
            first = await client.post(url, b"{}", {})
            for pool in client._idle.values():  # the receiver dropped the idle connection
                for conn in pool:
                    conn.transport.abort()  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
            second = await client.post(url, b"{}", {})
            return first.status, second.status
        finally:
            await client.close()
            server.close()

    assert asyncio.run(scenario()) == (204, 204) and served == 2


def test_http_client_errors_and_timeouts() -> None:
    async def scenario() -> None:
        client = HttpClient(timeout_s=0.2, user_agent="test")
        with pytest.raises(HttpError, match="cannot connect"):
            await client.post(closed_port_url(), b"{}", {})
        silent, url = await raw_server(lambda _: None)
        with pytest.raises(HttpError, match="closed before an answer"):
            await client.post(url, b"{}", {})
        silent.close()
        stalled = await asyncio.start_server(lambda r, w: asyncio.sleep(5), "127.0.0.1", 0)
        port = stalled.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError):
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {})
        stalled.close()
        await client.close()

    asyncio.run(scenario())


# --- the API ---


@pytest.fixture
def api(store_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings, store, engine, parts = compose(
        tmp_path,
        store_url=store_url,
        portfolio={"evaluate_every_s": 3600.0, "snapshot_every_s": 3600.0},
        webhooks={"timeout_s": 2.0},
    )
    app = create_app(settings, engine, store, engine.metrics, portfolio=parts)
    keys = issue_keys(
        store,
        {
            "op_a": ("alpha", "operator"),
            "read_a": ("alpha", "read"),
            "op_b": ("beta", "operator"),
            "admin": ("ops", "admin"),
        },
    )
    with TestClient(app) as client:
        yield client, keys
    store.close()


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def wait_for(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_webhook_api_crud_tenancy_and_deliveries(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    with Receiver(secrets=[], now=lambda: datetime.now(UTC)) as receiver:
        body = {"url": f"{receiver.url}/hook", "event_types": ["risk.kill_switch"], "description": "ops"}
        assert client.post("/v1/webhooks", json=body, headers=h(keys["read_a"])).status_code == 403
        created = client.post("/v1/webhooks", json=body, headers=h(keys["op_a"]))
        assert created.status_code == 201
        hook = created.json()
        assert hook["account"] == "alpha" and hook["secret"].startswith("whsec_") and hook["enabled"]
        receiver.secrets.append(hook["secret"])
        path = f"/v1/webhooks/{hook['id']}"
        shown = client.get(path, headers=h(keys["op_a"])).json()
        assert "secret" not in shown and shown["description"] == "ops"
        listed = client.get("/v1/webhooks", headers=h(keys["op_a"])).json()
        assert [w["id"] for w in listed["webhooks"]] == [hook["id"]] and "secret" not in listed["webhooks"][0]

        # tenancy: another account's operator sees nothing and changes nothing
        for method, url in [("get", path), ("patch", path), ("delete", path), ("post", f"{path}/test")]:
            kwargs = {"json": {"description": "x"}} if method == "patch" else {}
            problem(client.request(method, url, headers=h(keys["op_b"]), **kwargs), 404)
        problem(client.get("/v1/webhooks", params={"account": "alpha"}, headers=h(keys["op_b"])), 403)
        problem(client.post("/v1/webhooks", json={**body, "account": "*"}, headers=h(keys["op_a"])), 403)
        assert (
            client.get("/v1/webhooks", params={"account": "beta"}, headers=h(keys["op_b"])).json()["webhooks"]
            == []
        )
        assert client.get(path, headers=h(keys["admin"])).status_code == 200  # admin is fleet-wide
        fleet_body = {**body, "account": "*", "event_types": ["risk.webhook_disabled"]}
        fleet = client.post("/v1/webhooks", json=fleet_body, headers=h(keys["admin"]))
        assert fleet.status_code == 201 and fleet.json()["account"] == "*"

        # validation errors are problem details
        assert (
            "http:// or https://"
            in problem(
                client.post("/v1/webhooks", json={**body, "url": "ftp://x/y"}, headers=h(keys["op_a"])), 422
            )["detail"]
        )
        problem(client.post("/v1/webhooks", json={"url": body["url"]}, headers=h(keys["op_a"])), 422)
        metadata_url = {**body, "url": "http://169.254.169.254/latest/meta-data/"}
        assert (
            "blocked network 169.254.0.0/16"
            in problem(client.post("/v1/webhooks", json=metadata_url, headers=h(keys["op_a"])), 422)["detail"]
        )
        problem(client.patch(path, json={"event_types": ["nope.*"]}, headers=h(keys["op_a"])), 422)

        # a risk event reaches the receiver, signed; the delivery log shows it
        assert (
            client.post(
                "/v1/kill-switch", json={"engaged": True, "reason": "drill"}, headers=h(keys["op_a"])
            ).status_code
            == 200
        )
        wait_for(lambda: len(receiver.processed) == 1)
        event = json.loads(receiver.seen[0].body)
        assert event["type"] == "risk.kill_switch" and event["payload"]["reason"] == "drill"
        log = client.get(f"{path}/deliveries", headers=h(keys["op_a"])).json()
        [delivery] = log["deliveries"]
        assert delivery["id"] == receiver.processed[0] and delivery["status"] in ("pending", "succeeded")
        wait_for(
            lambda: (
                client.get(f"{path}/deliveries", headers=h(keys["op_a"])).json()["deliveries"][0]["status"]
                == "succeeded"
            )
        )
        one = client.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=h(keys["op_a"])).json()
        assert one["body"].encode() == receiver.seen[0].body
        problem(client.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=h(keys["op_b"])), 404)

        # redeliver: the same webhook-id again
        again = client.post(f"/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=h(keys["op_a"]))
        assert again.status_code == 202
        wait_for(lambda: len(receiver.seen) == 2)
        assert receiver.seen[1].headers["webhook-id"] == delivery["id"]

        # test: a signed risk.webhook_test event to this webhook only, answered after the attempt
        tested = client.post(f"{path}/test", headers=h(keys["op_a"]))
        assert tested.status_code == 200 and tested.json()["status"] == "succeeded"
        assert json.loads(receiver.seen[-1].body)["type"] == "risk.webhook_test"

        # rotate: a new secret, shown once; deliveries carry both signatures for the overlap
        rotated = client.post(f"{path}/rotate-secret", headers=h(keys["op_a"])).json()
        assert rotated["secret"] != hook["secret"] and rotated["previous_secret_expires_at"]
        receiver.secrets[:] = [rotated["secret"]]
        assert client.post(f"{path}/test", headers=h(keys["op_a"])).json()["status"] == "succeeded"
        assert len(receiver.seen[-1].headers["webhook-signature"].split(" ")) == 2

        # disable, enable, delete
        off = client.patch(path, json={"enabled": False}, headers=h(keys["op_a"])).json()
        assert not off["enabled"] and off["disabled_reason"].startswith("disabled by key")
        problem(client.post(f"{path}/test", headers=h(keys["op_a"])), 409)
        assert client.patch(path, json={"enabled": True}, headers=h(keys["op_a"])).json()["enabled"]
        assert client.delete(path, headers=h(keys["op_a"])).status_code == 204
        problem(client.get(path, headers=h(keys["op_a"])), 404)
        assert all(s.verdict == "ok" for s in receiver.seen)
