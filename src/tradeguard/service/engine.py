"""The scheduler: seeds and follows candle feeds, refreshes external sources, recomputes assessments on
every candle close and at a fixed interval, stores them, pushes them to subscribers and to metrics.

It starts even when every source is unreachable: seeding retries with backoff in the background, and the
API answers 503 (`/ready`) or stale until data arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

import pandas as pd

from tradeguard.adapters.feeds.base import CandleFeed
from tradeguard.adapters.status import Backoff, SourceStatus
from tradeguard.core.external import ExternalSeries, with_derived
from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.guards.market_live import PairState, market_wide
from tradeguard.service.broadcast import Broadcaster
from tradeguard.service.metrics import Metrics
from tradeguard.service.settings import Settings

log = logging.getLogger(__name__)


class ExternalSource(Protocol):
    """A cached external source (see adapters.sources.cache.CachedSource)."""

    status: SourceStatus

    async def get(self, now: datetime) -> ExternalSeries | None: ...


class AssessmentStore(Protocol):
    def save_assessment(self, exchange: str, pair: str, timeframe: str, payload: dict[str, Any]) -> None: ...


class Engine:
    """Owns the live state of every tracked pair; the API reads from it."""

    def __init__(
        self,
        settings: Settings,
        feed: CandleFeed,
        store: AssessmentStore,
        metrics: Metrics,
        sources: dict[str, ExternalSource] | None = None,
        funding: dict[str, ExternalSource] | None = None,
        static_external: dict[str, ExternalSeries] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.store = store
        self.metrics = metrics
        self.sources = sources or {}
        self.funding = funding or {}
        self.external: dict[str, ExternalSeries] = dict(static_external or {})
        self.backoff = backoff or Backoff(base_s=1.0, cap_s=60.0)
        self.broadcaster = Broadcaster()
        self.store_status = SourceStatus("store")
        self.states = {
            p: PairState(settings.exchange, p, settings.timeframe, settings.feed.history_candles)
            for p in settings.pairs
        }
        self.market: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._funding_series: dict[str, ExternalSeries] = {}
        self._rendered: dict[int, tuple[dict[str, Any], int | None, bytes]] = {}

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start seeding, streaming and the refresh loop in the background."""
        self.store_status.succeeded(self.now())  # the store was opened and migrated before the engine
        self._tasks = [
            asyncio.create_task(self._seed_then_follow(), name="feed"),
            asyncio.create_task(self._refresh_loop(), name="refresh"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.feed.close()
        for source in (*self.sources.values(), *self.funding.values()):
            close = getattr(getattr(source, "fetcher", None), "close", None)
            if close is not None:
                await close()

    # --- reading ---------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.feed.now()

    def statuses(self) -> Iterable[SourceStatus]:
        yield self.feed.status
        for source in (*self.sources.values(), *self.funding.values()):
            yield source.status
        yield self.store_status

    @property
    def stale_after(self) -> timedelta:
        return timedelta(
            seconds=self.settings.stale.max_age_candles * timeframe_seconds(self.settings.timeframe)
        )

    def view(self, assessment: dict[str, Any]) -> dict[str, Any]:
        """An assessment as served now: data age, `stale`, and the stale policy applied."""
        now = self.now()
        out = dict(assessment)
        as_of = datetime.fromisoformat(assessment["as_of"]) if assessment.get("as_of") else None
        age = float(int((now - as_of).total_seconds())) if as_of is not None else None
        stale = age is None or age > self.stale_after.total_seconds()
        out["data_age_s"] = age
        out["stale"] = stale
        out["synthetic"] = self.feed.synthetic
        out["source"] = self.feed.name
        if stale and self.settings.stale.block and "stale_data" not in out["blocked_by"]:
            out["blocked_by"] = [*out["blocked_by"], "stale_data"]
            out["safe_to_trade"] = False
            out["recommendation"] = "no_entry"
            out["decided_by"] = out["blocked_by"][0]
            limit = self.stale_after.total_seconds()
            when = "never" if age is None else f"{age:.0f} s ago"
            out["reasoning"] = [
                *out["reasoning"],
                f"Stale data: the last candle closed {when} (limit {limit:.0f} s); "
                "a guard that cannot see the market does not say safe.",
            ]
        return out

    def render(self, assessment: dict[str, Any]) -> bytes:
        """`view()` as JSON bytes, cached per assessment and whole second of data age (the hot path)."""
        as_of = assessment.get("as_of")
        age = int((self.now() - datetime.fromisoformat(as_of)).total_seconds()) if as_of else None
        hit = self._rendered.get(id(assessment))
        if hit is not None and hit[0] is assessment and hit[1] == age:
            return hit[2]
        body = json.dumps(self.view(assessment), separators=(",", ":")).encode()
        if len(self._rendered) > 256:
            self._rendered.clear()
        self._rendered[id(assessment)] = (assessment, age, body)
        return body

    def stale_sources(self) -> list[str]:
        """Pairs without fresh candles (for /ready)."""
        now = self.now()
        out = []
        for pair, state in self.states.items():
            close = state.last_close
            if close is None or now - close > self.stale_after:
                out.append(f"{self.settings.exchange}:{pair}")
        return out

    # --- work ------------------------------------------------------------------------------------------

    async def _seed_then_follow(self) -> None:
        await asyncio.gather(*(self._seed(pair) for pair in self.states))
        await self.refresh_external()
        self.recompute_all()
        await self.feed.run(list(self.states), self.settings.timeframe, self.on_candles)

    async def _seed(self, pair: str) -> None:
        attempt = 0
        while True:
            try:
                frame = await self.feed.seed(
                    pair, self.settings.timeframe, self.settings.feed.history_candles
                )
                self.feed.status.succeeded(self.now())
                self.states[pair].add(frame)
                log.info("seeded %s with %d candles", pair, len(frame))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of an outside source is retried, never fatal
                self.feed.status.failed(self.now(), f"seed {pair}: {exc}")
                delay = self.backoff.delay(attempt)
                log.warning("seeding %s failed (%s); retrying in %.1f s", pair, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def on_candles(self, pair: str, timeframe: str, frame: pd.DataFrame) -> None:
        """Feed callback: merge closed candles and reassess the pair and the market."""
        if pair not in self.states or timeframe != self.settings.timeframe or frame.empty:
            return
        self.feed.status.succeeded(self.now())
        state = self.states[pair]
        known = set(state.frame["date"]) if not state.frame.empty else set()
        if not state.add(frame):
            return
        step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
        for opened in sorted(d for d in frame["date"] if d not in known):
            await self.recompute(pair, at=(opened + step).to_pydatetime())  # each candle at its own close
        self._recompute_market()

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh_external()
            self.recompute_all()
            await asyncio.sleep(self.settings.refresh_interval_s)

    async def refresh_external(self) -> None:
        """Refresh every external source that is due (each caches and keeps its last good value)."""
        now = self.now()
        names = list(self.sources) + [f"funding:{p}" for p in self.funding]
        sources = list(self.sources.values()) + list(self.funding.values())
        results = await asyncio.gather(*(s.get(now) for s in sources), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("external source %s failed: %s", name, result)
                continue
            if result is None:
                continue
            if name.startswith("funding:"):
                self._funding_series[name.split(":", 1)[1]] = result
            else:
                self.external[name] = result
                self.external.pop(f"{name}_change_pct", None)
        self.external = with_derived(self.external, self.settings.market.external)

    def recompute_all(self) -> None:
        """Reassess every seeded pair at the feed's current time, then the market."""
        for pair, state in self.states.items():
            if not state.frame.empty:
                self._assess(pair)
        self._recompute_market()

    async def recompute(self, pair: str, at: datetime | None = None) -> dict[str, Any]:
        """Assess the pair at `at` (default: now), publish it and store it."""
        assessment = self._assess(pair, at)
        await self._save(pair, assessment)
        return assessment

    def _assess(self, pair: str, at: datetime | None = None) -> dict[str, Any]:
        external = dict(self.external)
        if pair in self._funding_series:
            external["funding_rate"] = self._funding_series[pair]
        assessment = self.states[pair].assess(external, at or self.now(), self.settings.market)
        self.metrics.observe_assessment(assessment)
        if self.broadcaster.subscribers:
            self.broadcaster.publish(self.view(assessment))
        return assessment

    def _recompute_market(self) -> None:
        latest = [s.latest for s in self.states.values() if s.latest is not None]
        if latest:
            self.market = market_wide(latest, self.now(), self.settings.market)
            self.metrics.observe_assessment(self.market)
            if self.broadcaster.subscribers:
                self.broadcaster.publish(self.view(self.market))

    async def _save(self, pair: str, assessment: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(
                self.store.save_assessment, self.settings.exchange, pair, self.settings.timeframe, assessment
            )
            self.store_status.succeeded(self.now())
        except Exception as exc:  # the store failing must not stop the guard; it is reported
            self.store_status.failed(self.now(), str(exc))
            log.error("storing the assessment of %s failed: %s", pair, exc)
