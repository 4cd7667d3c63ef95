"""Event intake from NATS JetStream: a durable pull consumer that stores events, then acknowledges them.

Publishing (bots, the SDK). Publish each envelope as JSON to `tradeguard.events.<account>` (the account
is the rest of the subject after the prefix, so it may contain dots) with the header
`Nats-Msg-Id: <account>|<event id>` (`msg_id`), and wait for JetStream's publish ack before treating the
event as sent. Event ids are unique per account, and JetStream deduplicates per stream, so the header
names the account too: a bare id could make the server drop another account's event as a duplicate.
Within the stream's duplicate window (2 minutes) a repeated publish is dropped by the server; after it,
by the store.

Delivery guarantee: at-least-once delivery + an idempotent store = each event stored exactly once.

- A fetch of up to `batch` messages is validated message by message. An invalid message (not an envelope,
  or an envelope whose account differs from its subject's) is *terminated*: logged with its reason,
  counted in `rejected`, never redelivered, so it cannot block the messages behind it.
- The valid events are written with `EventLog.store_batch` in one transaction, and only after the commit
  are their messages acknowledged. An event that reuses a stored id with other content, or that the
  database cannot hold, is terminated like an invalid message and the rest of the fetch is stored.
- If the store fails, every valid message of the fetch is nak'ed with a growing delay (and the consumer
  backs off), so JetStream redelivers them; `max_deliver` is unlimited, so a store outage delays events
  but never drops them. A database error is never blamed on a message: terminating on one would lose it.
- A crash or lost ack after the commit means a redelivery of events already stored: `store_batch` reports
  them as duplicates (same content) and they are acknowledged again. Nothing acknowledged is lost, and
  nothing is stored twice.

The stream (created if absent, never reconfigured if it exists) uses file storage and work-queue
retention: a message leaves the stream once acknowledged, because by then the database holds it.

`ack_wait_s` is how long JetStream waits for an ack before redelivering. A message is acknowledged after
it has waited for the fetch in store and its own commit, so it must exceed the worst of those (a slow disk,
a store locked by another writer): a shorter one redelivers messages that are still being stored (harmless
duplicates, but more load on a store that is already slow). The durable consumer is created with it, and
an existing consumer's is updated to it at start; its other settings are left as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from pydantic import ValidationError

from tradeguard.adapters.status import Backoff, SourceStatus
from tradeguard.adapters.store.event_log import BatchRejected, EventLog, event_errors
from tradeguard.core.events import Event

log = logging.getLogger(__name__)

DEFAULT_STREAM = "TRADEGUARD_EVENTS"
DEFAULT_SUBJECT = "tradeguard.events.>"
DEFAULT_DURABLE = "tradeguard-intake"
DEFAULT_RETRY = Backoff(base_s=0.5, cap_s=30.0, jitter=False)  # nak delays and reconnects
MSG_ID_SEPARATOR = "|"  # not allowed in account names or event ids, so `<account>|<id>` is unambiguous

OnEvents = Callable[[list[Event]], Awaitable[None]]
Clock = Callable[[], datetime]


def msg_id(event: Event) -> str:
    """The `Nats-Msg-Id` header a publisher sets for `event`: unique per stream, like the stored key."""
    return f"{event.account}{MSG_ID_SEPARATOR}{event.id}"


def subject_for(account: str, subject: str = DEFAULT_SUBJECT) -> str:
    """The subject an event of `account` is published on (`subject` is the intake's `prefix.>` pattern)."""
    return f"{_prefix(subject)}{account}"


@dataclass
class IntakeCounters:
    """Totals since start. Each message received is stored, a duplicate, rejected, or nak'ed to come again."""

    received: int = 0  # messages fetched, redeliveries included
    stored: int = 0  # events newly written
    duplicates: int = 0  # events already stored (redeliveries): acknowledged again, not written
    rejected: int = 0  # messages terminated: invalid, wrong subject, id conflict, unstorable
    redelivered: int = 0  # messages fetched with a delivery count above 1
    store_failures: int = 0  # fetches whose store failed, nak'ed for redelivery
    callback_failures: int = 0  # on_events calls that raised (the events stay stored and acknowledged)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class NatsIntake:
    """Consumes `subject` of `stream` with the durable pull consumer `durable` into `event_log`.

    `on_events` (async, optional) receives the newly stored events after they are acknowledged, in order and
    one call at a time, from a task of its own: the next fetch is stored while it runs, and the events of
    every fetch stored meanwhile come together in its next call (so a slow callback gets larger calls, not
    a queue of small ones). Its failures are logged and counted, never redelivered.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        event_log: EventLog,
        on_events: OnEvents | None = None,
        *,
        stream: str = DEFAULT_STREAM,
        subject: str = DEFAULT_SUBJECT,
        durable: str = DEFAULT_DURABLE,
        batch: int = 500,
        fetch_timeout_s: float = 1.0,
        ack_wait_s: float = 30.0,
        duplicate_window_s: float = 120.0,
        max_ack_pending: int = 20_000,
        retry: Backoff = DEFAULT_RETRY,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        if not subject.endswith(".>"):
            raise ValueError(f"subject must be a 'prefix.>' pattern, got {subject!r}")
        if batch < 1:
            raise ValueError(f"batch must be positive, got {batch}")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.event_log = event_log
        self.on_events = on_events
        self.stream = stream
        self.subject = subject
        self.durable = durable
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        self.ack_wait_s = ack_wait_s
        self.duplicate_window_s = duplicate_window_s
        self.max_ack_pending = max_ack_pending
        self.retry = retry
        self.clock = clock
        self.status = SourceStatus("nats")
        self.counters = IntakeCounters()
        self.ready = asyncio.Event()  # set while subscribed
        self._prefix = _prefix(subject)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._nc: Client | None = None
        self._failures = 0  # consecutive store failures, for the backoff
        self._pull: _Pull | None = None
        self._stored: list[Event] = []  # stored and acknowledged, not yet handed to on_events
        self._delivery: asyncio.Task[None] | None = None

    # lifecycle

    async def start(self) -> None:
        """Start consuming in a background task (it connects, and reconnects, by itself)."""
        if self._task is not None:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="nats-intake")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the fetch in hand (store, ack), then disconnect. Unacked messages are redelivered later."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await self._close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def snapshot(self) -> dict[str, Any]:
        """Status and counters, for /ready and metrics."""
        return {**self.status.as_dict(self.clock()), "counters": self.counters.as_dict()}

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                return
            except Exception as exc:  # connection, stream or consumer trouble: start a new session
                if self.ready.is_set():
                    attempt = 0  # it had worked: retry soon
                self.ready.clear()
                self.status.failed(self.clock(), f"{type(exc).__name__}: {exc}")
                log.warning("NATS intake session failed (%s: %s); retrying", type(exc).__name__, exc)
                await self._close()
                await self._pause(self.retry.delay(attempt))
                attempt += 1

    async def _session(self) -> None:
        self._pull = None
        self._nc = await nats.connect(
            servers=self.servers,
            name="tradeguard-intake",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        js = self._nc.jetstream()
        await self.ensure_stream(js)
        await self.ensure_consumer(js)
        pull = self._pull = _Pull(self._nc, self.stream, self.durable, self.batch)
        await pull.start()
        self.ready.set()
        self.status.succeeded(self.clock())
        try:
            await self._consume(pull)
        finally:
            await pull.close()

    async def _consume(self, pull: _Pull) -> None:
        """Fetch and validate the next messages while the previous ones are being stored (one at a time)."""
        storing: asyncio.Task[bool] | None = None
        try:
            while not self._stopping.is_set():
                if storing is not None and storing.done():
                    stored, storing = storing.result(), None
                    if not stored:
                        await self._pause(self.retry.delay(self._failures - 1))
                msgs = await pull.fetch(self.fetch_timeout_s)
                if not msgs:
                    if storing is None and self._nc is not None and self._nc.is_connected:
                        self.status.succeeded(self.clock())  # idle
                    continue
                pending = await self._validate(msgs)
                if not pending:
                    continue
                if storing is not None:
                    stored, storing = await storing, None
                    if not stored:  # the store is failing: hand these back too, and back off
                        await self._nak(pending)
                        await self._pause(self.retry.delay(self._failures - 1))
                        continue
                    # What arrived during that store goes into this one: sooner, and fewer commits.
                    pending += await self._validate(pull.take(self.batch - len(pending)))
                storing = asyncio.create_task(self._store(pending))
        finally:
            if storing is not None:
                await storing  # commit and ack what is in hand
            if self._delivery is not None:
                await self._delivery  # and hand it to on_events

    async def ensure_consumer(self, js: JetStreamContext) -> None:
        """Create the durable pull consumer if it does not exist. An existing one is used as configured,
        but for `ack_wait`, which is updated to `ack_wait_s` (a warning is logged if the server refuses)."""
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None:
            current = info.config.ack_wait
            if current is None or abs(current - self.ack_wait_s) > 1e-6:
                await self._update_ack_wait(js, info.config)
            return
        await js.add_consumer(
            self.stream,
            ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait_s,
                max_deliver=-1,  # never give up on a message: a store outage must not drop events
                max_ack_pending=self.max_ack_pending,
                filter_subject=self.subject,
            ),
        )

    async def _update_ack_wait(self, js: JetStreamContext, config: ConsumerConfig) -> None:
        try:
            await js.add_consumer(self.stream, config.evolve(ack_wait=self.ack_wait_s))
        except nats.js.errors.APIError as exc:
            log.warning(
                "consumer %s keeps ack_wait %ss: updating it to the configured %ss failed (%s)",
                self.durable,
                config.ack_wait,
                self.ack_wait_s,
                exc,
            )
            return
        log.info("consumer %s: ack_wait %ss updated to %ss", self.durable, config.ack_wait, self.ack_wait_s)

    async def ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream if it does not exist; an existing one is used as configured."""
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[self.subject],
                    storage=StorageType.FILE,
                    retention=RetentionPolicy.WORK_QUEUE,
                    duplicate_window=self.duplicate_window_s,
                )
            )
            log.info("created JetStream stream %s on %s", self.stream, self.subject)
            return
        config = info.config
        if not config.duplicate_window:
            log.warning("stream %s has no duplicate window: repeated publishes reach the store", self.stream)
        if self.subject not in (config.subjects or []):
            log.warning("stream %s subjects %s do not list %s", self.stream, config.subjects, self.subject)

    # one fetch

    async def process(self, msgs: Sequence[Msg]) -> bool:
        """Validate, store, ack one fetch, then hand its new events to on_events; False if the store failed
        (and the messages were nak'ed)."""
        stored = await self._store(await self._validate(msgs))
        if self._delivery is not None:
            await self._delivery
        return stored

    async def _validate(self, msgs: Sequence[Msg]) -> list[tuple[Msg, Event]]:
        """The valid events of a fetch; invalid messages are terminated."""
        self.counters.received += len(msgs)
        pending: list[tuple[Msg, Event]] = []
        for msg in msgs:
            if _deliveries(msg) > 1:
                self.counters.redelivered += 1
            event, reason = self._parse(msg)
            if event is None:
                await self._reject(msg, reason)
            else:
                pending.append((msg, event))
        return pending

    async def _store(self, pending: list[tuple[Msg, Event]]) -> bool:
        """Store in one transaction, then ack; refused events are terminated and the rest stored."""
        while pending:
            try:
                result = await asyncio.to_thread(
                    self.event_log.store_batch, [event for _, event in pending], self.clock()
                )
            except BatchRejected as exc:
                bad = {r.index: r for r in exc.rejections}
                for index, rejection in bad.items():
                    await self._reject(pending[index][0], f"{rejection.reason}: {rejection.message}")
                pending = [item for index, item in enumerate(pending) if index not in bad]
                continue
            except Exception as exc:  # the database: never the messages' fault, so they are redelivered
                self._failures += 1
                self.counters.store_failures += 1
                self.status.failed(self.clock(), f"store: {type(exc).__name__}: {exc}")
                log.error(
                    "storing %d events failed (%s: %s); nak'ed for redelivery",
                    len(pending),
                    type(exc).__name__,
                    exc,
                )
                await self._nak(pending)
                return False
            for msg, _ in pending:
                await msg.ack()
            self._failures = 0
            self.counters.stored += len(result.accepted_ids)
            self.counters.duplicates += len(result.duplicates)
            self.status.succeeded(self.clock())
            self._hand_over(result.accepted)
            break
        return True

    def _parse(self, msg: Msg) -> tuple[Event | None, str]:
        try:
            event = Event.model_validate_json(msg.data)
        except ValidationError:
            return None, f"invalid envelope: {_describe(msg.data)}"
        account = msg.subject[len(self._prefix) :] if msg.subject.startswith(self._prefix) else msg.subject
        if account != event.account:
            return None, f"envelope account {event.account!r} published on the subject of {account!r}"
        return event, ""

    async def _reject(self, msg: Msg, reason: str) -> None:
        self.counters.rejected += 1
        log.warning("rejected NATS message %s on %s: %s", _sequence(msg), msg.subject, reason)
        await msg.term()

    async def _nak(self, pending: list[tuple[Msg, Event]]) -> None:
        """Hand messages back for redelivery after a delay growing with their delivery count."""
        for msg, _ in pending:
            await msg.nak(delay=self.retry.delay(_deliveries(msg) - 1))

    def _hand_over(self, events: list[Event]) -> None:
        """Queue stored events for on_events, starting the delivery task unless it is running."""
        if self.on_events is None or not events:
            return
        self._stored.extend(events)
        if self._delivery is None or self._delivery.done():
            self._delivery = asyncio.create_task(self._deliver(), name="nats-intake-on-events")

    async def _deliver(self) -> None:
        """Call on_events with everything queued, again while more was queued during the call."""
        while self._stored and self.on_events is not None:
            events, self._stored = self._stored, []
            try:
                await self.on_events(events)
            except Exception:
                self.counters.callback_failures += 1
                log.exception("on_events failed for %d stored events", len(events))

    # helpers

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        self.ready.clear()
        if nc is None or nc.is_closed:
            return
        try:
            await nc.flush(timeout=5)  # the acks sent so far reach the server
        except Exception as exc:
            log.debug("NATS flush before close failed: %s", exc)
        with contextlib.suppress(Exception):
            await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        self.status.failed(self.clock(), f"{type(exc).__name__}: {exc}")
        log.warning("NATS error: %s", exc)

    async def _on_reconnected(self) -> None:
        if self._pull is not None:
            self._pull.reset()  # the server forgot our open pull requests

    async def _on_disconnected(self) -> None:
        if not self._stopping.is_set():
            self.status.failed(self.clock(), "disconnected from NATS")


class ConsumerGoneError(RuntimeError):
    """The consumer was deleted (or replaced) under the intake: a new session re-creates it."""


class _Pull:
    """Pull requests to one JetStream consumer, with the deliveries gathered by a subscription callback.

    nats-py's `PullSubscription.fetch` waits for each message with a task and a timeout of its own (about
    40 us a message here, more than storing it); a callback costs an append. The protocol (NATS ADR-13): a
    request `{"batch": n, "expires": ns}` on `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with our inbox
    as its reply subject; up to n messages arrive on the inbox, oldest request first; a status message (no
    body, header `Status`: 408 expired, 409 ...) ends a request early. Requests are kept topped up to
    `batch` messages, so deliveries continue while the previous fetch is stored, and `fetch` returns what
    has arrived (up to `batch`) instead of waiting for a full batch: low latency when quiet, full batches
    under load.
    """

    def __init__(self, nc: Client, stream: str, consumer: str, batch: int, expires_s: float = 5.0) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._batch = batch
        self._expires_s = expires_s
        self._inbox = nc.new_inbox()
        self._buffer: deque[Msg] = deque()
        self._requests: deque[list[float]] = deque()  # [messages still due, local deadline], oldest first
        self._arrived = asyncio.Event()
        self._subscription: Any = None
        self._gone: str | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def fetch(self, timeout_s: float) -> list[Msg]:
        """The messages delivered so far (at most `batch`), waiting up to `timeout_s` for the first."""
        if self._gone is not None:
            raise ConsumerGoneError(self._gone)
        await self._top_up()
        if not self._buffer:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
            await asyncio.sleep(0)  # let the rest of the same read reach the buffer
        return self.take(self._batch)

    def take(self, limit: int) -> list[Msg]:
        """The messages delivered so far, at most `limit`, without waiting."""
        take = min(len(self._buffer), limit)
        return [self._buffer.popleft() for _ in range(take)]

    def reset(self) -> None:
        """Forget the open requests (after a reconnect the server no longer holds them)."""
        self._requests.clear()

    async def close(self) -> None:
        """Stop the deliveries and hand back the messages not yet fetched (nak: redelivered at once)."""
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()
        while self._buffer:
            with contextlib.suppress(Exception):
                await self._buffer.popleft().nak()

    async def _top_up(self) -> None:
        now = time.monotonic()
        while self._requests and self._requests[0][1] < now:
            self._requests.popleft()  # expired without its status message (lost in a reconnect)
        due = sum(request[0] for request in self._requests)
        if due + len(self._buffer) < self._batch:
            request = {"batch": self._batch, "expires": int(self._expires_s * 1e9)}
            await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)
            self._requests.append([self._batch, now + self._expires_s + 1.0])

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers and not msg.data else None
        if status is None:
            self._buffer.append(msg)
            if self._requests:
                self._requests[0][0] -= 1
                if self._requests[0][0] <= 0:
                    self._requests.popleft()
        elif status == "100":  # idle heartbeat or flow control: not ours to count
            return
        else:
            if self._requests:
                self._requests.popleft()
            description = (msg.headers or {}).get("Description", "")
            if status == "409" and ("Deleted" in description or "push based" in description):
                self._gone = f"consumer unusable: {status} {description}"
        self._arrived.set()


def _prefix(subject: str) -> str:
    return subject[:-1] if subject.endswith(">") else subject


def _deliveries(msg: Msg) -> int:
    """How many times JetStream has delivered `msg` (1 the first time), from its ack subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`, or the newer
    form with `<domain>.<account hash>` after `$JS.ACK` and a random token at the end; read directly, as
    nats-py's `msg.metadata` builds objects costing more than the rest of the message's handling.
    """
    tokens = (msg.reply or "").split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[4])
        if len(tokens) >= 12:
            return int(tokens[6])
    except ValueError:
        pass
    return 1


def _sequence(msg: Msg) -> str:
    try:
        return f"#{msg.metadata.sequence.stream}"
    except Exception:
        return "(no sequence)"


def _describe(data: bytes) -> str:
    """A short reason why `data` is not a valid envelope."""
    try:
        item = json.loads(data)
    except ValueError as exc:
        return f"not JSON ({exc})"
    errors = event_errors(item)
    shown = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(envelope)'}: {e['msg']}" for e in errors[:3])
    return shown + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
