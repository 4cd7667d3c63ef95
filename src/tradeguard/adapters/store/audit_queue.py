"""Audit appends off the hot path: callers enqueue, a background task seals and stores them in batches.

The order guard answers in about a millisecond, far less than a durable, signed, chained write; so it enqueues
its decision and the queue appends (`AuditLog.append_many`, one transaction per batch, order kept). A failed
write keeps the batch and retries it — nothing enqueued is dropped while the process lives. `health()` is what
fail-closed callers check: the store is failing when the last write failed or the oldest pending event has
waited longer than `max_lag_s`; a full queue refuses new events (`StoreUnavailable`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from tradeguard.adapters.store.audit_log import AuditLog
from tradeguard.core.audit import AuditEvent, PreparedEvent, prepare_event
from tradeguard.errors import TradeguardError

log = logging.getLogger(__name__)


class StoreUnavailable(TradeguardError):
    """The audit store is failing or too far behind to accept more."""


class AuditQueue:
    """Batches audit appends from a background task (`run`)."""

    def __init__(
        self,
        audit_log: AuditLog,
        *,
        max_backlog: int = 50_000,
        max_batch: int = 1_000,
        max_lag_s: float = 2.0,
        retry_s: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit_log = audit_log
        self.max_backlog = max_backlog
        self.max_batch = max_batch
        self.max_lag_s = max_lag_s
        self.retry_s = retry_s
        self._monotonic = monotonic
        self._raw: deque[tuple[float, AuditEvent]] = deque()
        self._pending: deque[tuple[float, PreparedEvent]] = deque()
        self._prepare_scheduled = False
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self.last_error: str | None = None
        self.written = 0

    def put(self, event_type: str, account: str | None, payload: Mapping[str, Any], ts: datetime) -> None:
        """Enqueue one event; raises `StoreUnavailable` when the backlog is full.

        Canonicalising an event is the pure-Python part of an append (a few hundred microseconds for an order
        decision): in the writer thread it would hold the GIL against the event loop, and inline it would
        delay the caller's answer. So it runs on the event loop right after the caller's turn (`call_soon`,
        in order); the writer thread only hashes, signs and stores.
        """
        if len(self._pending) + len(self._raw) >= self.max_backlog:
            raise StoreUnavailable(f"audit backlog full ({self.max_backlog} events waiting)")
        self._raw.append((self._monotonic(), AuditEvent(event_type, account, payload, ts)))
        if not self._prepare_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self._prepare)
                self._prepare_scheduled = True
            except RuntimeError:  # no event loop: prepare now
                self._prepare()

    def _prepare(self) -> None:
        self._prepare_scheduled = False
        if not self._raw:
            return
        while self._raw:
            queued, e = self._raw.popleft()
            try:
                self._pending.append((queued, prepare_event(e.type, e.account, e.payload, e.ts)))
            except Exception:
                log.exception("audit event %s of %s refused", e.type, e.account)
        self._wake.set()

    def health(self) -> str | None:
        """None when healthy, else why the store counts as failing."""
        if self.last_error is not None:
            return f"audit store failing: {self.last_error}"
        oldest = self._pending[0][0] if self._pending else self._raw[0][0] if self._raw else None
        if oldest is not None:
            lag = self._monotonic() - oldest
            if lag > self.max_lag_s:
                return f"audit store {lag:.1f} s behind (limit {self.max_lag_s:g} s)"
        return None

    @property
    def backlog(self) -> int:
        return len(self._raw) + len(self._pending)

    async def flush(self) -> None:
        """Write everything pending now (raises the store's error, keeping the events). One writer at a time:
        a batch is removed from the queue only once stored, so concurrent flushes must not share it."""
        self._prepare()
        async with self._writing:
            while self._pending:
                batch = [e for _, e in itertools.islice(self._pending, self.max_batch)]
                try:
                    await asyncio.to_thread(self.audit_log.append_many, batch)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    raise
                for _ in batch:
                    self._pending.popleft()
                self.written += len(batch)
                self.last_error = None

    async def run(self) -> None:
        """Write batches as events arrive; on failure, retry after `retry_s`."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit append failed; %d events kept for retry", len(self._pending))
                await asyncio.sleep(self.retry_s)
                self._wake.set()
