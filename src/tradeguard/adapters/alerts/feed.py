"""The alert feed: tails the audit log into the notifier, so every risk event the service records can page.

The feed reads what was appended after its cursor (a `read_cursors` row in the store), claims it by moving
the cursor, then hands it to the notifier in seq order. Reading the store rather than hooking the writers
means an alert survives a restart between the record and the message (the cursor is where the feed left
off), and replicas sharing the store split the records between them (each is claimed once) instead of
paging twice. A record is claimed before it is sent: if the process dies in between, those messages are
not sent (at most once; the webhook outbox is the at-least-once path). Records older than `max_age` when
they are read (after a long outage) are skipped and counted, not sent: a page about last week is noise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from tradeguard.adapters.alerts.notifier import Notifier
from tradeguard.adapters.store.audit_log import AuditLog
from tradeguard.adapters.store.cursors import ReadCursor
from tradeguard.core.alerting import ALERT_EVENT_TYPES

log = logging.getLogger(__name__)


class AlertFeed:
    """Audit records → notifier; `run()` polls every `poll_s`, flushes the notifier's groups every second."""

    def __init__(
        self,
        audit_log: AuditLog,
        cursor: ReadCursor,
        notifier: Notifier,
        clock: Callable[[], datetime],
        *,
        poll_s: float = 0.5,
        max_age: timedelta = timedelta(minutes=15),
        batch: int = 500,
    ) -> None:
        self.audit_log = audit_log
        self.cursor = cursor
        self.notifier = notifier
        self.clock = clock
        self.poll_s = poll_s
        self.max_age = max_age
        self.batch = batch
        self.handled = 0
        self.skipped = 0

    async def start(self) -> int:
        """Place the cursor: where it was left, or (first start) at the log's head — history never pages."""
        head = await asyncio.to_thread(self.audit_log.head)
        return await asyncio.to_thread(self.cursor.start_at, head.seq if head else 0, self.clock())

    async def poll(self) -> int:
        """Claim and hand over what was appended since the cursor; the number of records handed over."""
        handed = 0
        while True:
            at = await asyncio.to_thread(self.cursor.get)
            if at is None:
                at = await self.start()
            records, upto = await asyncio.to_thread(self.audit_log.tail, at, ALERT_EVENT_TYPES, self.batch)
            if upto == at:
                return handed
            if not await asyncio.to_thread(self.cursor.advance, at, upto, self.clock()):
                continue  # another replica claimed them: read again from where it left the cursor
            oldest = self.clock() - self.max_age
            for record in records:
                if record.ts < oldest:
                    self.skipped += 1
                    log.warning(
                        "alert feed: %s (seq %d) is older than %s: not sent",
                        record.type,
                        record.seq,
                        self.max_age,
                    )
                    continue
                await self.notifier.handle(record)
                self.handled += 1
                handed += 1
            if len(records) < self.batch:
                return handed

    async def run(self) -> None:
        """Poll and flush until cancelled; a failing store is logged and retried at the next poll."""
        loop = asyncio.get_running_loop()
        next_flush = loop.time()
        while True:
            try:
                await self.poll()
            except Exception:
                log.exception("alert feed: reading the audit log failed; retrying")
            if loop.time() >= next_flush:
                next_flush = loop.time() + 1.0
                await self.notifier.flush()
            await asyncio.sleep(self.poll_s)
