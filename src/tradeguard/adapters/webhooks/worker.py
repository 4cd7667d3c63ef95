"""The delivery worker: sends the outbox's deliveries, signed, and stores what happened.

While running it is the outbox's consumer: new deliveries are handed to it in memory as soon as their audit
records commit (leased to it in that transaction), and one task claims the rest — retries that came due,
backlog, other replicas' work — when woken or every `poll_interval_s`. Each delivery is sent by its own task
(at most `max_in_flight` at once) and a second task stores the outcomes in batches. Claims and writes run
in threads, off the event loop.

Delivery is at least once: a worker stopped between a receiver's answer and storing it leaves the delivery
leased, and it is sent again when the lease ends, under the same `webhook-id` — the key receivers use to
process it exactly once. A graceful stop hands back what it had not sent, due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from tradeguard import __version__
from tradeguard.adapters.store.audit_log import AuditLog
from tradeguard.adapters.store.outbox import Attempt, DueDelivery, Outbox
from tradeguard.adapters.store.webhooks import Webhook
from tradeguard.adapters.webhooks.http import HttpClient
from tradeguard.adapters.webhooks.policy import DeliveryPolicy, decide, retry_after
from tradeguard.adapters.webhooks.signing import webhook_headers
from tradeguard.core.audit import WEBHOOK_DISABLED

log = logging.getLogger(__name__)

_SNIPPET: Final = 200  # characters of a failed answer kept in last_error
_COALESCE_S: Final = 0.01  # outcomes are stored this long after the first is ready: fewer, larger writes
# New deliveries taken in memory, as a multiple of max_in_flight: an audit batch of a few hundred events
# fans out to thousands, and each one not taken costs a claim. Far less than a lease's worth of work.
_HANDOVER_WINDOW: Final = 8


class WebhookWorker:
    """Delivers the outbox. `start`/`stop` run it in the background; `run_once` does one pass (tests)."""

    def __init__(
        self,
        outbox: Outbox,
        policy: DeliveryPolicy,
        *,
        clock: Callable[[], datetime],
        audit: AuditLog | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.outbox = outbox
        self.policy = policy
        self._clock = clock
        self._audit = audit
        self._rand = rand
        self._http: HttpClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._backlog = False  # more may be due than the last claim took: claim again when there is room
        self._ready: deque[DueDelivery] = deque()  # leased to this worker, not yet being sent
        self._in_flight: dict[asyncio.Task[None], DueDelivery] = {}
        self._results: list[Attempt] = []
        self._results_ready = asyncio.Event()
        self._storing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: dict[str, asyncio.Future[None]] = {}

    # lifecycle

    async def start(self) -> None:
        """Deliver in the background until `stop`."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="webhook-claims"),
            asyncio.create_task(self._store_loop(), name="webhook-outcomes"),
        ]
        self.outbox.consumer = self

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking work, let attempts in flight finish (up to `grace_s`), store their outcomes, hand back
        what was not sent (due at once, for the next worker), close."""
        if self._tasks:
            self.outbox.consumer = None
            self._loop = None  # hand-overs still in flight stay leased: claimed again when the leases end
            claims, storing = self._tasks
            self._tasks = []
            await _cancel(claims)
            unsent = list(self._ready)
            self._ready.clear()
            if self._in_flight:
                _, late = await asyncio.wait(self._in_flight, timeout=grace_s)
                unsent += [self._in_flight[task] for task in late]
                for task in late:
                    await _cancel(task)
            async with self._storing:  # not in the middle of a write
                await _cancel(storing)
                try:
                    await self._store_pending()
                    if unsent:
                        await asyncio.to_thread(self.outbox.release, [d.id for d in unsent], self._clock())
                except Exception:  # left leased: claimed again when the leases end
                    log.exception("storing the webhook worker's last outcomes failed")
        await self.close()

    async def close(self) -> None:
        """Close the HTTP client's connections."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def run_once(self) -> int:
        """Attempt every delivery due now (round after round until none is) and store the outcomes."""
        done = 0
        while True:
            due = await self._claim(self.policy.max_in_flight)
            if not due:
                return done
            attempts = await asyncio.gather(*(self._send(d) for d in due))
            await self._store(list(attempts))
            done += len(due)

    def watch(self, delivery_id: str) -> asyncio.Future[None]:
        """A future resolved once an attempt of `delivery_id` is stored (cancel it to stop watching)."""
        future = asyncio.get_running_loop().create_future()
        self._watchers[delivery_id] = future
        future.add_done_callback(lambda _: self._watchers.pop(delivery_id, None))
        return future

    # the outbox's consumer (called from any thread)

    @property
    def lease(self) -> timedelta:
        return self.policy.lease

    def room(self) -> int:
        if not self._tasks:
            return 0
        return _HANDOVER_WINDOW * self.policy.max_in_flight - len(self._ready) - len(self._in_flight)

    def take(self, due: list[DueDelivery]) -> None:
        self._on_loop(self._accept, due)

    def wake(self) -> None:
        self._on_loop(self._claim_soon)

    def _claim_soon(self) -> None:
        self._backlog = True
        self._wake.set()

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not running: what was leased is claimed again when its lease ends
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    # claiming and sending

    def _accept(self, due: list[DueDelivery]) -> None:
        if not self._tasks:
            return  # stopped meanwhile: they stay leased, and are claimed again when the leases end
        self._ready.extend(due)
        while self._ready and len(self._in_flight) < self.policy.max_in_flight:
            item = self._ready.popleft()
            task = asyncio.create_task(self._attempt(item))
            self._in_flight[task] = item
            task.add_done_callback(self._attempt_done)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if self._ready:
            self._accept([])
        elif self._backlog and len(self._in_flight) == self.policy.max_in_flight // 2:  # room again
            self._wake.set()

    async def _claim(self, limit: int) -> list[DueDelivery]:
        now = self._clock()
        return await asyncio.to_thread(self.outbox.claim_due, now, limit, now + self.policy.lease)

    async def _claim_loop(self) -> None:
        while True:
            self._wake.clear()
            free = self.policy.max_in_flight - len(self._in_flight) - len(self._ready)
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    self._backlog = len(claimed) == free
                    self._accept(claimed)
                except Exception:
                    log.exception("claiming webhook deliveries failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.policy.poll_interval_s)

    async def _attempt(self, due: DueDelivery) -> None:
        outcome = await self._send(due)
        self._results.append(outcome)  # the list as it is now: the store loop swaps it for a new one
        self._results_ready.set()

    async def _send(self, due: DueDelivery) -> Attempt:
        """POST one delivery; its outcome under the policy. Never raises (but on cancellation)."""
        now = self._clock()
        headers = webhook_headers(due.webhook.signing_keys(now), due.id, int(now.timestamp()), due.body)
        headers["Content-Type"] = "application/json"
        status: int | None = None
        error: str | None = None
        wait_s: float | None = None
        try:
            response = await self._client().post(due.webhook.url, due.body, headers)
            status = response.status
            if not 200 <= status < 300:
                snippet = response.body[:_SNIPPET].decode("utf-8", "replace").strip()
                error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
                wait_s = retry_after(response.retry_after, now)
        except TimeoutError:
            error = f"no answer within {self.policy.timeout_s:g} s"
        except Exception as exc:  # connection refused or reset, not HTTP, ...: a failed attempt
            error = f"{type(exc).__name__}: {exc}"[:500]
        return decide(self.policy, due, self._clock(), status, error, wait_s, self._rand)

    def _client(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(
                timeout_s=self.policy.timeout_s,
                user_agent=f"tradeguard-webhooks/{__version__}",
                max_idle=self.policy.max_in_flight,
                targets=self.policy.targets,
            )
        return self._http

    # storing outcomes

    async def _store_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            await asyncio.sleep(_COALESCE_S)
            try:
                async with self._storing:
                    await self._store_pending()
            except Exception:
                log.exception("storing webhook attempts failed; retrying")
                await asyncio.sleep(self.policy.poll_interval_s)
                self._results_ready.set()

    async def _store_pending(self) -> None:
        self._results_ready.clear()
        batch, self._results = self._results, []
        try:
            await self._store(batch)
        except Exception:
            self._results[:0] = batch  # kept for the next try
            raise

    async def _store(self, attempts: list[Attempt]) -> None:
        if not attempts:
            return
        now = self._clock()
        disabled = await asyncio.to_thread(
            self.outbox.record, attempts, now=now, disable_failing_since=now - self.policy.disable_after
        )
        for attempt in attempts:
            future = self._watchers.get(attempt.delivery_id)
            if future is not None and not future.done():
                future.set_result(None)
        for webhook in disabled:
            log.warning(
                "webhook %s of account %s disabled: %s", webhook.id, webhook.account, webhook.disabled_reason
            )
            if self._audit is not None:
                await _audit_disabled(self._audit, webhook, now)


async def _audit_disabled(audit: AuditLog, webhook: Webhook, now: datetime) -> None:
    """Record `risk.webhook_disabled` (routed like any risk event: other webhooks, alert channels)."""
    payload = {
        "webhook_id": webhook.id,
        "description": webhook.description,
        "reason": webhook.disabled_reason,
        "failing_since": webhook.failing_since,
    }
    try:
        await asyncio.to_thread(audit.append, WEBHOOK_DISABLED, webhook.account, payload, now)
    except Exception:  # the webhook stays disabled; the attempts are stored: do not store them again
        log.exception("auditing that webhook %s was disabled failed", webhook.id)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
