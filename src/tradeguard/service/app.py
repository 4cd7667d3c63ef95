"""`create_app`: the FastAPI application, built from settings and already-constructed components."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from fastapi import FastAPI

from tradeguard import __version__
from tradeguard.adapters.alerts.feed import AlertFeed
from tradeguard.adapters.bus.nats_intake import NatsIntake
from tradeguard.adapters.exchange_poller import ExchangePoller
from tradeguard.adapters.signing_key import AuditKey
from tradeguard.adapters.status import SourceStatus
from tradeguard.adapters.store import AuditLog, EventLog
from tradeguard.adapters.store.audit_queue import AuditQueue
from tradeguard.adapters.webhooks.parts import WebhookParts
from tradeguard.core.events import Event
from tradeguard.guards.order import OrderGuard
from tradeguard.guards.portfolio import HISTORY, PortfolioGuard
from tradeguard.service import problems
from tradeguard.service.auth import Authenticator, KeyVerifier
from tradeguard.service.engine import Engine
from tradeguard.service.metrics import LatencyMiddleware, Metrics
from tradeguard.service.routes import audit, events, health, market, orders, sla, stream
from tradeguard.service.routes import portfolio as portfolio_routes
from tradeguard.service.routes import webhooks as webhook_routes
from tradeguard.service.settings import Settings
from tradeguard.service.thresholds import record_thresholds, thresholds_in_force


class Closeable(Protocol):
    async def close(self) -> None: ...


@dataclass
class OrderParts:
    """The order guard, the queue that audits its decisions, the exchanges it reads and its Redis (if any)."""

    guard: OrderGuard
    audit_queue: AuditQueue
    venues: Closeable
    redis: Closeable | None = None


@dataclass
class PortfolioParts:
    """The portfolio guard and what serves it: event intake, audit log and key, optional NATS intake."""

    guard: PortfolioGuard
    event_log: EventLog
    audit_log: AuditLog
    audit_key: AuditKey
    intake: NatsIntake | None = None
    pollers: list[ExchangePoller] = field(default_factory=list)
    orders: OrderParts | None = None
    webhooks: WebhookParts | None = None
    alerts: AlertFeed | None = None

    async def apply(self, events: Sequence[Event]) -> None:
        """Hand stored events to the guards (the portfolio guard, then the order guard's bot records)."""
        await self.guard.on_events(events)
        if self.orders is not None:
            self.orders.guard.on_events(events)

    async def store_and_apply(self, events: list[Event]) -> None:
        """Pull mode: store polled events (idempotent by id), then hand the new ones to the guards."""
        result = await asyncio.to_thread(self.event_log.store_batch, events, datetime.now(UTC))
        if result.accepted:
            await self.apply(result.accepted)


def create_app(
    settings: Settings,
    engine: Engine,
    store: Any,
    metrics: Metrics,
    *,
    portfolio: PortfolioParts | None = None,
    start_engine: bool = True,
) -> FastAPI:
    """The app; its lifespan starts and stops the engine (tests may drive the engine themselves)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_engine:
            await engine.start()
        ticker = None
        polling: list[asyncio.Task[None]] = []
        if portfolio is not None:
            if portfolio.webhooks is not None:
                await portfolio.webhooks.worker.start()
            await restore_portfolio(portfolio)
            orders_policy = portfolio.orders.guard.policy if portfolio.orders is not None else None
            limits = thresholds_in_force(portfolio.guard.policy, orders_policy)
            await asyncio.to_thread(record_thresholds, portfolio.audit_log, limits, portfolio.guard.clock())
            if portfolio.intake is not None:
                await portfolio.intake.start()
            polling = [asyncio.create_task(p.run(portfolio.store_and_apply)) for p in portfolio.pollers]
            if portfolio.orders is not None:
                polling.append(asyncio.create_task(portfolio.orders.audit_queue.run(), name="order-audit"))
            if portfolio.alerts is not None:
                await portfolio.alerts.start()
                polling.append(asyncio.create_task(portfolio.alerts.run(), name="alerts"))
            ticker = asyncio.create_task(
                _tick(
                    portfolio.guard, settings.portfolio.evaluate_every_s, settings.portfolio.snapshot_every_s
                )
            )
        try:
            yield
        finally:
            if ticker is not None:
                for task in (ticker, *polling):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                for poller in portfolio.pollers:
                    await poller.close()
                if portfolio.orders is not None:
                    await _close_orders(portfolio.orders)
            if portfolio is not None and portfolio.intake is not None:
                await portfolio.intake.stop()
            if portfolio is not None and portfolio.webhooks is not None:
                await portfolio.webhooks.worker.stop()
            if start_engine:
                await engine.stop()

    app = FastAPI(
        title="tradeguard",
        version=__version__,
        summary="Risk guard above fleets of trading bots: market, order and portfolio guards.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.store = store
    app.state.metrics = metrics
    verifier: KeyVerifier = store
    app.state.authenticator = Authenticator(verifier, settings.auth)
    routers = [health.router, market.router, stream.router]
    if portfolio is not None:
        app.state.portfolio = portfolio.guard
        app.state.event_log = portfolio.event_log
        app.state.on_events = portfolio.apply
        app.state.audit_log = portfolio.audit_log
        app.state.audit_key = portfolio.audit_key
        routers += [events.router, portfolio_routes.router, audit.router, sla.router]
        if portfolio.orders is not None:
            app.state.orders = portfolio.orders.guard
            routers.append(orders.router)
        if portfolio.webhooks is not None:
            app.state.webhooks = portfolio.webhooks
            routers.append(webhook_routes.router)
    metrics.add_sources(lambda: _statuses(engine, portfolio), engine.now)
    problems.install(app)
    for router in routers:
        app.include_router(router)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app


log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _statuses(engine: Engine, portfolio: PortfolioParts | None) -> Iterator[SourceStatus]:
    yield from engine.statuses()
    if portfolio is not None:
        if portfolio.intake is not None:
            yield portfolio.intake.status
        for poller in portfolio.pollers:
            yield poller.status


async def restore_portfolio(parts: PortfolioParts) -> None:
    """Rebuild every account's book from the stored events of the last 31 days (after a restart), and the
    order guard's bot records from their returns (kept days) and trades (all of them: holdings are net)."""
    now = parts.guard.clock()
    for account in await asyncio.to_thread(parts.event_log.accounts):
        stored = await asyncio.to_thread(parts.event_log.since, account, now - HISTORY - timedelta(days=1))
        await parts.guard.on_events(stored)
        log.info("restored %d events of account %s", len(stored), account)
        if parts.orders is not None:
            keep = timedelta(days=parts.orders.guard.policy.caps.keep_days)
            returns = await asyncio.to_thread(
                parts.event_log.since, account, now - keep, ("strategy_return",)
            )
            trades = await asyncio.to_thread(parts.event_log.since, account, _EPOCH, ("trade",))
            parts.orders.guard.on_events(sorted([*returns, *trades], key=lambda e: e.ts))


async def _close_orders(orders: OrderParts) -> None:
    """Write the queued decisions (best effort: the store may be what failed); close exchanges and Redis."""
    try:
        await orders.audit_queue.flush()
    except Exception:
        log.exception("%d order decisions could not be audited at shutdown", orders.audit_queue.backlog)
    await orders.venues.close()
    if orders.redis is not None:
        await orders.redis.close()


KILL_SWITCH_REFRESH_S = 1.0


async def _tick(guard: PortfolioGuard, every_s: float, snapshot_every_s: float) -> None:
    """Refresh the kill switches every second; re-evaluate every account on a timer; audit snapshots."""
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_refresh_kill_switches(guard, KILL_SWITCH_REFRESH_S))
        tasks.create_task(_evaluate_periodically(guard, every_s, snapshot_every_s))


async def _refresh_kill_switches(guard: PortfolioGuard, every_s: float) -> None:
    """Reload the kill switches (another instance sharing the store may set one); failures are logged and
    the last view kept (its age tells readers how stale it is)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await guard.refresh_kill_switches()
        except Exception:
            log.exception("refreshing the kill switches failed")


async def _evaluate_periodically(guard: PortfolioGuard, every_s: float, snapshot_every_s: float) -> None:
    """Re-evaluate every account on a timer (breakers cool down without new events); audit snapshots."""
    loop = asyncio.get_running_loop()
    next_snapshot = loop.time() + snapshot_every_s
    while True:
        await asyncio.sleep(every_s)
        snapshot = loop.time() >= next_snapshot
        if snapshot:
            next_snapshot = loop.time() + snapshot_every_s
        for account in list(guard.books):
            try:
                await guard.evaluate(account)
                if snapshot:
                    await guard.snapshot(account)
            except Exception:  # one account's failure must not stop the others' breakers
                log.exception("evaluating account %s failed", account)
