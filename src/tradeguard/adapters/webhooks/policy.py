"""When to try a delivery again, and when to give up: the retry schedule as a pure function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

from tradeguard.adapters.store.outbox import Attempt, DueDelivery
from tradeguard.adapters.webhooks.targets import TargetPolicy

# The Standard Webhooks example schedule: delays before attempts 1..10 (about 3 days in all).
DEFAULT_SCHEDULE_S: Final = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How the worker delivers.

    `schedule_s[i]` is the delay before attempt i+1 (the first is normally 0); after the last attempt fails
    the delivery is dead. Each retry delay is stretched by up to `jitter_ratio` at random, so endpoints that
    fail together are not retried in lock-step. A webhook whose deliveries have all failed for
    `disable_after` is disabled. `targets`: the networks deliveries may not connect to.
    """

    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    timeout_s: float = 10.0
    disable_after: timedelta = timedelta(days=5)
    jitter_ratio: float = 0.1
    poll_interval_s: float = 1.0
    max_in_flight: int = 256
    lease_margin_s: float = 60.0  # a leased delivery is retried this long after the timeout if unrecorded
    targets: TargetPolicy = field(default_factory=TargetPolicy)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.timeout_s + self.lease_margin_s)


def decide(
    policy: DeliveryPolicy,
    due: DueDelivery,
    ended: datetime,
    status_code: int | None,
    error: str | None,
    retry_after_s: float | None,
    rand: Callable[[], float],
) -> Attempt:
    """The outcome of one attempt: success (no `error`), a retry at the next scheduled time, or dead."""
    attempts = due.attempts + 1
    webhook_id = due.webhook.id
    if error is None:
        latency_ms = (ended - due.created_at).total_seconds() * 1000.0
        return Attempt(due.id, webhook_id, "succeeded", attempts, ended, None, status_code, None, latency_ms)
    gone = status_code == 410
    if attempts >= len(policy.schedule_s):
        return Attempt(due.id, webhook_id, "dead", attempts, ended, None, status_code, error, None, gone)
    delay = policy.schedule_s[attempts] * (1.0 + policy.jitter_ratio * rand())
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max(policy.schedule_s)))
    next_at = ended + timedelta(seconds=delay)
    return Attempt(due.id, webhook_id, "failed", attempts, ended, next_at, status_code, error, None, gone)


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked for by a `Retry-After` header (delay seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
