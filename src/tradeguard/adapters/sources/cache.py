"""Caching in front of an external fetcher: a fresh series is reused, a stale one bridges short outages.

Both limits are measured from the last *successful* fetch, on the ``now`` the caller passes:
- younger than ``ttl_s``: the cached series is returned without a request;
- otherwise a fetch is made; on failure the last good series is returned while it is younger than
  ``max_age_s``, and None after that (the source then counts as missing; the core treats it so).
After a failure no new attempt is made before ``failure_backoff.delay(consecutive errors - 1)`` seconds
have passed, so a dead source does not stall every caller with its timeouts and retries.

The cache owns the fetcher's :class:`~tradeguard.adapters.status.SourceStatus`: it records each fetch's
success or failure there. Concurrent callers share one in-flight fetch.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from tradeguard.adapters.sources.base import ExternalFetcher, SourceError
from tradeguard.adapters.status import Backoff, SourceStatus
from tradeguard.core.external import NS_PER_S, ExternalSeries

log = logging.getLogger(__name__)


class CachedSource:
    """A fetcher behind a TTL cache with a stale fallback (see the module docstring)."""

    def __init__(
        self,
        fetcher: ExternalFetcher,
        ttl_s: float,
        max_age_s: float,
        *,
        failure_backoff: Backoff | None = None,
    ) -> None:
        if ttl_s < 0 or max_age_s < ttl_s:
            raise ValueError(f"need 0 <= ttl_s <= max_age_s, got ttl_s={ttl_s}, max_age_s={max_age_s}")
        self.fetcher = fetcher
        self.ttl_s = ttl_s
        self.max_age_s = max_age_s
        self.failure_backoff = failure_backoff or Backoff(base_s=30.0, cap_s=600.0)
        self._series: ExternalSeries | None = None
        self._fetched_at: datetime | None = None
        self._next_attempt: datetime | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.fetcher.name

    @property
    def status(self) -> SourceStatus:
        """The health of the source behind the cache."""
        return self.fetcher.status

    async def get(self, now: datetime) -> ExternalSeries | None:
        """The series to use at ``now``: cached, freshly fetched, the stale fallback, or None."""
        async with self._lock:
            age = self._cache_age_s(now)
            if age is not None and age < self.ttl_s:
                return self._series
            if self._next_attempt is None or now >= self._next_attempt:
                await self._refresh(now)
            return self._usable(now)

    def age_s(self, now: datetime) -> float | None:
        """Freshness of the data served: seconds since the newest value published at or before ``now``.

        None when nothing is served (no successful fetch yet, fallback expired) or no value is published
        yet. The time since the last successful fetch is ``fetcher.status.age_s(now)``.
        """
        series = self._usable(now)
        if series is None:
            return None
        now_ns = pd.Timestamp(now).value
        published = series.available_at[series.available_at <= now_ns]
        return None if not len(published) else float(now_ns - np.max(published)) / NS_PER_S

    async def _refresh(self, now: datetime) -> None:
        status = self.fetcher.status
        try:
            series = await self.fetcher.fetch(now)
        except SourceError as exc:
            status.failed(now, str(exc))
            delay = self.failure_backoff.delay(status.consecutive_errors - 1)
            self._next_attempt = now + timedelta(seconds=delay)
            log.warning("%s: %s (next attempt in %.0fs)", self.name, exc, delay)
            return
        status.succeeded(now)
        self._series, self._fetched_at, self._next_attempt = series, now, None

    def _usable(self, now: datetime) -> ExternalSeries | None:
        age = self._cache_age_s(now)
        return self._series if age is not None and age < self.max_age_s else None

    def _cache_age_s(self, now: datetime) -> float | None:
        return None if self._fetched_at is None else (now - self._fetched_at).total_seconds()
