"""NATS JetStream intake against the local server (127.0.0.1:4222): stored once, then acked; invalid messages
terminated without blocking the rest; store failures redelivered; duplicate publishes dropped.

Each test uses its own stream, subjects and durable consumer, and deletes the stream afterwards. When NATS
is not reachable the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from nats.js import JetStreamContext

from tests.conftest import require
from tests.test_event_log import RECEIVED, envelope, event
from tradeguard.adapters.bus import NatsIntake, msg_id, subject_for
from tradeguard.adapters.status import Backoff
from tradeguard.adapters.store.event_log import EventLog, StoreResult, equity_history, events
from tradeguard.adapters.store.schema import metadata
from tradeguard.adapters.store.store import create_store_engine
from tradeguard.core.events import Event

NATS_URL = "nats://127.0.0.1:4222"
FAST_RETRY = Backoff(base_s=0.05, cap_s=0.2, jitter=False)


def nats_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=2):
            return True
    except OSError:
        return False


@dataclass
class Names:
    stream: str
    subject: str
    durable: str


@pytest.fixture
def names() -> Iterator[Names]:
    require(nats_reachable(), "NATS JetStream not reachable on 127.0.0.1:4222")
    tag = secrets.token_hex(4)
    created = Names(f"TG_TEST_{tag}", f"tgtest.{tag}.events.>", f"intake-{tag}")
    yield created

    async def delete() -> None:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_stream(created.stream)
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await nc.close()

    asyncio.run(delete())


@pytest.fixture
def event_log(tmp_path: Path) -> Iterator[EventLog]:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'events.db'}")
    metadata.create_all(engine, tables=[events, equity_history])
    yield EventLog(engine)
    engine.dispose()


class FlakyLog:
    """An EventLog whose first `failures` writes fail like a database outage."""

    def __init__(self, inner: EventLog, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    def store_batch(self, batch: list[Event], received_at: Any) -> StoreResult:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise sa.exc.OperationalError("INSERT", {}, Exception("could not connect to server"))
        return self.inner.store_batch(batch, received_at)


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    names: Names

    async def publish(self, item: dict[str, Any] | bytes, *, subject_account: str | None = None) -> Any:
        """Publish an envelope (with its Nats-Msg-Id) or raw bytes; the JetStream publish ack."""
        if isinstance(item, bytes):
            return await self.js.publish(subject_for(subject_account or "acme", self.names.subject), item)
        ev = Event.model_validate(item)
        subject = subject_for(subject_account or ev.account, self.names.subject)
        return await self.js.publish(subject, json.dumps(item).encode(), headers={"Nats-Msg-Id": msg_id(ev)})

    async def settled(self) -> bool:
        """True when the consumer has nothing pending or unacknowledged and the stream is empty."""
        info = await self.js.consumer_info(self.names.stream, self.names.durable)
        stream = await self.js.stream_info(self.names.stream)
        return info.num_pending == 0 and info.num_ack_pending == 0 and stream.state.messages == 0


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def run(names: Names, log: Any, scenario: Callable[[NatsIntake, Bus], Awaitable[None]], **kw: Any) -> None:
    """Run `scenario` with a started intake (fast retries) and a publishing connection."""

    async def main() -> None:
        intake = NatsIntake(
            NATS_URL,
            log,
            stream=names.stream,
            subject=names.subject,
            durable=names.durable,
            fetch_timeout_s=0.2,
            retry=FAST_RETRY,
            **kw,
        )
        await intake.start()
        nc = await nats.connect(NATS_URL)
        try:
            await asyncio.wait_for(intake.ready.wait(), 10)
            await scenario(intake, Bus(nc, nc.jetstream(), names))
        finally:
            await intake.stop()
            await nc.close()

    asyncio.run(main())


def test_events_are_stored_once_then_acked(names: Names, event_log: EventLog) -> None:
    seen: list[str] = []

    async def on_events(stored: list[Event]) -> None:
        seen.extend(e.id for e in stored)

    async def scenario(intake: NatsIntake, bus: Bus) -> None:
        for i in range(20):
            ack = await bus.publish(envelope(i, "equity" if i % 2 else "positions"))
            assert ack.stream == names.stream and not ack.duplicate
        await wait_until(lambda: intake.counters.stored == 20)
        await wait_until(bus.settled)
        assert intake.status.reachable

    run(names, event_log, scenario, on_events=on_events)
    assert event_log.count("acme") == 20
    assert sorted(seen) == sorted(f"e{i}" for i in range(20))
    assert event_log.get("acme", "e3") == event(3)
    assert len(event_log.equity_history("acme")) == 10


def test_invalid_messages_are_terminated_and_do_not_block_the_rest(
    names: Names, event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(intake: NatsIntake, bus: Bus) -> None:
        await bus.publish(envelope(0))
        await bus.publish(b"{not json")
        broken = envelope(1)
        broken["payload"]["total_equity"] = -1
        await bus.publish(json.dumps(broken).encode())
        await bus.publish(envelope(2), subject_account="globex")  # acme's event on globex's subject
        await bus.publish(envelope(3))
        await wait_until(lambda: intake.counters.stored == 2 and intake.counters.rejected == 3)
        await wait_until(bus.settled)  # terminated: nothing left to redeliver
        await asyncio.sleep(0.5)
        assert intake.counters.rejected == 3 and intake.counters.redelivered == 0

    run(names, event_log, scenario)
    assert [e.id for e in event_log.since("acme", RECEIVED.replace(hour=0))] == ["e0", "e3"]
    assert "not JSON" in caplog.text and "payload.total_equity" in caplog.text and "'globex'" in caplog.text


def test_a_store_failure_is_nakd_redelivered_and_stored_exactly_once(
    names: Names, event_log: EventLog
) -> None:
    flaky = FlakyLog(event_log, failures=2)

    async def scenario(intake: NatsIntake, bus: Bus) -> None:
        for i in range(5):
            await bus.publish(envelope(i))
        await wait_until(lambda: intake.counters.stored == 5)
        await wait_until(bus.settled)
        assert intake.counters.store_failures == 2
        assert intake.counters.redelivered >= 5  # every message came back at least once
        assert intake.status.reachable and intake.status.errors_total >= 2

    run(names, flaky, scenario)
    assert flaky.calls >= 3
    assert event_log.count() == 5


def test_a_duplicate_publish_is_dropped_by_the_server_window(names: Names, event_log: EventLog) -> None:
    async def scenario(intake: NatsIntake, bus: Bus) -> None:
        first = await bus.publish(envelope(0))
        again = await bus.publish(envelope(0))
        assert not first.duplicate and again.duplicate and again.seq == first.seq
        other_account = await bus.publish(envelope(0, account="globex"))  # same id, other account: kept
        assert not other_account.duplicate
        await wait_until(lambda: intake.counters.stored == 2)
        await wait_until(bus.settled)
        assert intake.counters.received == 2

    run(names, event_log, scenario)
    assert event_log.count("acme") == 1 and event_log.count("globex") == 1


def test_redelivery_of_stored_events_is_acknowledged_as_duplicates(names: Names, event_log: EventLog) -> None:
    event_log.store_batch([event(0), event(1)], RECEIVED)  # stored, but the acks were lost

    async def scenario(intake: NatsIntake, bus: Bus) -> None:
        for i in range(3):
            await bus.publish(envelope(i))
        await wait_until(lambda: intake.counters.duplicates == 2 and intake.counters.stored == 1)
        await wait_until(bus.settled)

    run(names, event_log, scenario)
    assert event_log.count() == 3


def test_an_id_conflict_is_terminated_and_the_rest_stored(names: Names, event_log: EventLog) -> None:
    event_log.store_batch([event(0)], RECEIVED)

    async def scenario(intake: NatsIntake, bus: Bus) -> None:
        changed = envelope(0)
        changed["payload"]["total_equity"] = 1.0
        await bus.js.publish(subject_for("acme", names.subject), json.dumps(changed).encode())
        await bus.publish(envelope(1))
        await wait_until(lambda: intake.counters.rejected == 1 and intake.counters.stored == 1)
        await wait_until(bus.settled)

    run(names, event_log, scenario)
    assert event_log.get("acme", "e0") == event(0) and event_log.count() == 2


def test_a_failing_callback_does_not_cause_redelivery(names: Names, event_log: EventLog) -> None:
    async def on_events(stored: list[Event]) -> None:
        raise RuntimeError("guard crashed")

    async def scenario(intake: NatsIntake, bus: Bus) -> None:
        await bus.publish(envelope(0))
        await wait_until(lambda: intake.counters.callback_failures == 1)
        await wait_until(bus.settled)
        assert intake.counters.stored == 1 and intake.counters.redelivered == 0

    run(names, event_log, scenario, on_events=on_events)


def test_a_slow_callback_gets_what_was_stored_meanwhile_in_one_call_in_order(
    names: Names, event_log: EventLog
) -> None:
    calls: list[list[str]] = []
    running = 0
    overlapped = False
    first_started = asyncio.Event()

    async def on_events(stored: list[Event]) -> None:
        nonlocal running, overlapped
        running += 1
        overlapped = overlapped or running > 1
        calls.append([e.id for e in stored])
        first_started.set()
        await asyncio.sleep(1.0)  # slower than storing what arrives meanwhile
        running -= 1

    async def scenario(intake: NatsIntake, bus: Bus) -> None:
        await bus.publish(envelope(0))
        await asyncio.wait_for(first_started.wait(), 10)
        for i in range(1, 21):
            await bus.publish(envelope(i))
        await wait_until(lambda: intake.counters.stored == 21)  # stored and acked while the callback runs
        assert calls == [["e0"]]
        await wait_until(lambda: sum(map(len, calls)) == 21)

    run(names, event_log, scenario, on_events=on_events)
    assert calls == [["e0"], [f"e{i}" for i in range(1, 21)]]  # one call for every fetch stored meanwhile
    assert not overlapped


def test_events_published_while_stopped_are_consumed_after_a_restart(
    names: Names, event_log: EventLog
) -> None:
    async def first(intake: NatsIntake, bus: Bus) -> None:
        await bus.publish(envelope(0))
        await wait_until(lambda: intake.counters.stored == 1)

    run(names, event_log, first)

    async def while_stopped() -> None:
        nc = await nats.connect(NATS_URL)
        try:
            bus = Bus(nc, nc.jetstream(), names)
            for i in range(1, 4):
                await bus.publish(envelope(i))
        finally:
            await nc.close()

    asyncio.run(while_stopped())

    async def second(intake: NatsIntake, bus: Bus) -> None:
        await wait_until(lambda: intake.counters.stored == 3)
        await wait_until(bus.settled)
        assert intake.counters.received == 3

    run(names, event_log, second)
    assert event_log.count() == 4


def test_unreachable_server_is_reported_not_raised(event_log: EventLog) -> None:
    async def main() -> None:
        intake = NatsIntake("nats://127.0.0.1:1", event_log, retry=FAST_RETRY)
        await intake.start()
        await wait_until(lambda: intake.status.errors_total >= 1, timeout=15)
        assert not intake.status.reachable and not intake.ready.is_set()
        await intake.stop(timeout_s=2)
        assert not intake.running

    asyncio.run(main())


def test_the_configured_ack_wait_is_applied_to_an_existing_consumer(
    names: Names, event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    async def ack_wait() -> float | None:
        nc = await nats.connect(NATS_URL)
        try:
            return (await nc.jetstream().consumer_info(names.stream, names.durable)).config.ack_wait
        finally:
            await nc.close()

    ids = iter(range(2))

    async def consume(intake: NatsIntake, bus: Bus) -> None:
        await bus.publish(envelope(next(ids)))
        await wait_until(lambda: intake.counters.stored == 1)

    run(names, event_log, consume, ack_wait_s=30.0)
    assert asyncio.run(ack_wait()) == 30.0
    caplog.set_level("INFO", logger="tradeguard.adapters.bus.nats_intake")
    run(names, event_log, consume, ack_wait_s=45.0)  # restarted with another setting: the consumer follows
    assert asyncio.run(ack_wait()) == 45.0
    assert "ack_wait 30.0s updated to 45.0s" in caplog.text
    assert event_log.count() == 2  # the same durable consumer, still at-least-once: nothing lost


def test_an_ack_wait_the_server_refuses_leaves_the_consumer_working(
    names: Names, event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    ids = iter(range(2))

    async def consume(intake: NatsIntake, bus: Bus) -> None:
        await bus.publish(envelope(next(ids)))
        await wait_until(lambda: intake.counters.stored == 1)

    run(names, event_log, consume, ack_wait_s=30.0)

    async def refuse(self: Any, stream: str, config: Any = None, **kw: Any) -> Any:
        raise nats.js.errors.APIError(code=400, description="consumer update not allowed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JetStreamContext, "add_consumer", refuse)
        run(names, event_log, consume, ack_wait_s=45.0)
    assert "keeps ack_wait 30.0s" in caplog.text and "consumer update not allowed" in caplog.text
    assert event_log.count() == 2
