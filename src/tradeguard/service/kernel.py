"""Composition root: builds the feed, sources, store, engine and app from Settings (nothing else does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI

from tradeguard.adapters.actions import TripAction
from tradeguard.adapters.actions.cancel_orders import CancelOpenOrders
from tradeguard.adapters.actions.freqtrade import PauseFreqtrade
from tradeguard.adapters.alerts import build_notifier
from tradeguard.adapters.alerts.feed import AlertFeed
from tradeguard.adapters.bus.nats_intake import NatsIntake
from tradeguard.adapters.exchange_poller import ExchangePoller
from tradeguard.adapters.external_files import load_external
from tradeguard.adapters.feeds.base import CandleFeed
from tradeguard.adapters.feeds.ccxt_live import CcxtLiveFeed
from tradeguard.adapters.feeds.replay import ReplayFeed
from tradeguard.adapters.feeds.simulator import SimulatorFeed
from tradeguard.adapters.leverage_tiers import load_snapshot
from tradeguard.adapters.markets import BaseAssetResolver
from tradeguard.adapters.redis_rate_limit import RedisRateLimit
from tradeguard.adapters.signing_key import load_signing_key
from tradeguard.adapters.sources.cache import CachedSource
from tradeguard.adapters.sources.coingecko import BtcDominanceFetcher
from tradeguard.adapters.sources.fear_greed import FearGreedFetcher
from tradeguard.adapters.sources.fred import FredFetcher
from tradeguard.adapters.sources.funding import FundingRateFetcher
from tradeguard.adapters.sources.http import HttpPolicy
from tradeguard.adapters.sources.static import StaticSource
from tradeguard.adapters.store import AuditLog, EventLog, GuardState, IssuedKey, ReadCursor, Store
from tradeguard.adapters.store.audit_queue import AuditQueue
from tradeguard.adapters.store.outbox import Outbox
from tradeguard.adapters.store.webhooks import WebhookStore
from tradeguard.adapters.webhooks.parts import WebhookParts
from tradeguard.adapters.webhooks.policy import DeliveryPolicy
from tradeguard.adapters.webhooks.targets import TargetPolicy, parse_networks
from tradeguard.adapters.webhooks.worker import WebhookWorker
from tradeguard.core.bot_record import CapPolicy
from tradeguard.core.exposure import ExposureConfig
from tradeguard.core.order_book import OrderBookConfig
from tradeguard.errors import InputError
from tradeguard.guards.order import AccountOrderPolicy, OrderGuard, OrderPolicy
from tradeguard.guards.portfolio import PortfolioGuard, PortfolioPolicy
from tradeguard.service.app import OrderParts, PortfolioParts, create_app
from tradeguard.service.engine import Engine, ExternalSource
from tradeguard.service.metrics import Metrics
from tradeguard.service.settings import Settings
from tradeguard.service.venues import Venues


@dataclass
class Service:
    """Everything `serve` runs, wired together."""

    settings: Settings
    store: Store
    engine: Engine
    app: FastAPI


def build_feed(settings: Settings) -> CandleFeed:
    """The candle feed of the configured mode."""
    feed = settings.feed
    if feed.mode == "simulator":
        return SimulatorFeed(
            pairs=settings.pairs,
            seed=feed.seed,
            speed=feed.speed,
            timeframe=settings.timeframe,
            history=max(3 * feed.history_candles, 3000),
        )
    if feed.mode == "replay":
        if feed.data_dir is None:
            raise InputError("replay mode needs feed.data_dir (tradeguard serve --data-dir DIR)")
        return ReplayFeed(
            feed.data_dir,
            pairs=settings.pairs,
            timeframe=settings.timeframe,
            speed=feed.speed,
            history=feed.history_candles,
        )
    return CcxtLiveFeed(
        settings.exchange,
        api_url=feed.api_url,
        ws_url=feed.ws_url,
        poll_interval_s=feed.poll_interval_s,
        use_websocket=feed.use_websocket,
    )


def build_sources(settings: Settings) -> tuple[dict[str, ExternalSource], dict[str, ExternalSource]]:
    """(market-wide sources, funding per pair) for the configured mode.

    Live: the public APIs, cached. Replay: the external files of `external.directory` (their publication
    times keep lookups point in time). Simulator: none (there is no real context for synthetic prices).
    """
    ext = settings.external
    if not ext.enabled or settings.feed.mode == "simulator":
        return {}, {}
    if settings.feed.mode == "replay":
        sources: dict[str, ExternalSource] = {}
        funding: dict[str, ExternalSource] = {}
        for pair in settings.pairs:
            loaded = load_external(ext.directory, settings.feed.data_dir, pair)
            for name, series in loaded.series.items():
                if name == "funding_rate":
                    funding[pair] = StaticSource(series)
                    funding[pair].status.name = f"funding_rate:{pair}"
                elif name in ext.sources:
                    sources.setdefault(name, StaticSource(series))
        return sources, funding
    policy = HttpPolicy(timeout_s=ext.timeout_s)
    fetchers = {
        "fear_greed": lambda: FearGreedFetcher(ext.fear_greed_url, policy=policy),
        "btc_dominance": lambda: BtcDominanceFetcher(ext.coingecko_url, policy=policy),
        "vix": lambda: FredFetcher("vix", ext.fred_url, policy=policy),
        "dxy": lambda: FredFetcher("dxy", ext.fred_url, policy=policy),
    }

    def cached(name: str, fetcher: object) -> CachedSource:
        return CachedSource(
            fetcher, ext.ttl_s.get(name, 900.0), max(ext.keep_last_good_s, ext.ttl_s.get(name, 0))
        )

    sources = {name: cached(name, make()) for name, make in fetchers.items() if name in ext.sources}
    funding = {}
    if "funding_rate" in ext.sources:
        for pair in settings.pairs:
            fetcher = FundingRateFetcher(pair, settings.exchange, api_url=ext.funding_api_url, policy=policy)
            fetcher.status.name = f"funding_rate:{pair}"  # one health record (and metric series) per pair
            funding[pair] = cached("funding_rate", fetcher)
    return sources, funding


def build_actions(settings: Settings) -> dict[str, list[TripAction]]:
    """Per-account trip actions: pause Freqtrade bots first, then cancel open orders (so no bot re-enters)."""
    out: dict[str, list[TripAction]] = {}
    for account, cfg in settings.portfolio.actions.items():
        actions: list[TripAction] = [
            PauseFreqtrade(bot.url, bot.username, bot.password.get_secret_value(), mode=bot.mode)
            for bot in cfg.freqtrade
        ]
        for ex in cfg.cancel_orders:
            extra = {"password": ex.password.get_secret_value()} if ex.password else {}
            actions.append(
                CancelOpenOrders(
                    ex.exchange,
                    ex.api_key.get_secret_value(),
                    ex.secret.get_secret_value(),
                    symbols=ex.symbols,
                    market_types=tuple(ex.market_types),
                    config=extra,
                )
            )
        out[account] = actions
    return out


def build_portfolio(settings: Settings, store: Store) -> PortfolioParts:
    """The portfolio guard with its audit log (signed), event log, persisted state and NATS intake."""
    p = settings.portfolio
    key = load_signing_key(settings.audit.key_file)
    outbox = Outbox(store.engine, clock=_utcnow, subscription_ttl_s=settings.webhooks.subscription_ttl_s)
    audit_log = AuditLog(store.engine, key, outbox=outbox)  # webhook deliveries commit with the records
    resolver = BaseAssetResolver()
    policy = PortfolioPolicy(
        thresholds={k: b.threshold for k, b in p.breakers.items() if b.threshold is not None},
        shadow=frozenset(k for k, b in p.breakers.items() if b.shadow),
        drawdown_window=p.drawdown_window,
        exposure=ExposureConfig(stale_after_s=p.venue_stale_after_s, conservative=p.conservative),
    )
    guard = PortfolioGuard(
        policy,
        GuardState(store.engine),
        lambda: datetime.now(UTC),
        base_asset=resolver,
        settle_currency=resolver.settle_currency,
        tiers=load_snapshot().tiers,
        audit=audit_log,
        actions=build_actions(settings),
    )
    event_log = EventLog(store.engine)
    pollers = [
        ExchangePoller(
            account,
            pull.exchange,
            pull.api_key.get_secret_value(),
            pull.secret.get_secret_value(),
            password=pull.password.get_secret_value() if pull.password else None,
            market_types=tuple(pull.market_types),
            interval_s=pull.interval_s,
            currency=pull.currency,
            api_url=pull.api_url,
        )
        for account, pulls in p.pull.items()
        for pull in pulls
    ]
    parts = PortfolioParts(guard, event_log, audit_log, key, None, pollers)
    parts.webhooks = build_webhooks(settings, outbox, audit_log)
    if settings.bus.nats_url:
        parts.intake = NatsIntake(
            settings.bus.nats_url,
            event_log,
            on_events=parts.apply,
            stream=settings.bus.stream,
            durable=settings.bus.durable,
            ack_wait_s=settings.bus.ack_wait_s,
        )
    return parts


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build_webhooks(settings: Settings, outbox: Outbox, audit_log: AuditLog) -> WebhookParts:
    """Webhook endpoints, the outbox the audit log fills, and the worker that delivers it."""
    w = settings.webhooks
    targets = TargetPolicy(parse_networks(w.blocked_networks))
    policy = DeliveryPolicy(
        schedule_s=tuple(w.retry_schedule_s),
        timeout_s=w.timeout_s,
        disable_after=timedelta(days=w.disable_after_days),
        jitter_ratio=w.jitter_ratio,
        poll_interval_s=w.poll_interval_s,
        max_in_flight=w.max_in_flight,
        targets=targets,
    )
    return WebhookParts(
        store=WebhookStore(outbox.engine, on_change=outbox.invalidate, targets=targets),
        outbox=outbox,
        worker=WebhookWorker(outbox, policy, clock=_utcnow, audit=audit_log),
        rotation_overlap=timedelta(hours=w.rotation_overlap_h),
    )


def build_orders(settings: Settings, parts: PortfolioParts, engine: Engine) -> OrderParts:
    """The order guard over the portfolio guard, the market guard's views and public exchange data."""
    o = settings.orders
    book = OrderBookConfig(
        levels=o.book_levels,
        max_imbalance_ratio=o.book_max_imbalance_ratio,
        imbalance_action=o.book_imbalance_action,
        max_microprice_deviation_pct=o.book_max_microprice_deviation_pct,
        tick_ms=o.book_tick_ms,
        max_age_s=o.book_max_age_s,
    )
    account = {
        name: AccountOrderPolicy(a.risk_level, a.market_guard_action, a.market_guard_fraction)
        for name, a in o.accounts.items()
    }
    d = o.default_account
    policy = OrderPolicy(
        rate_per_s=o.rate_limit_per_s,
        rate_burst=o.rate_limit_burst,
        caps=CapPolicy(
            caps=o.caps,
            promote_days=o.promote_days,
            promote_sharpe=o.promote_sharpe,
            proven_days=o.proven_days,
        ),
        var_limits_pct=o.var_limits_pct,
        var_scenarios=o.var_scenarios,
        var_lookback_days=o.var_lookback_days,
        book=book,
        kill_switch_max_age_s=o.kill_switch_max_age_s,
        accounts=account,
        default_account=AccountOrderPolicy(d.risk_level, d.market_guard_action, d.market_guard_fraction),
    )
    venues = Venues(o.venues, book, parts.guard.clock, quote=o.var_quote)
    var_venue = venues(o.var_exchange)
    if var_venue is None:
        raise InputError(f"orders.var_exchange: ccxt knows no exchange {o.var_exchange!r}")
    queue = AuditQueue(parts.audit_log)
    shared_rate = (
        RedisRateLimit.from_url(
            o.redis_url.get_secret_value(),
            policy.rate_per_s,
            policy.rate_burst,
            timeout_s=o.redis_timeout_ms / 1000.0,
            prefix=o.redis_key_prefix,
            down_for_s=o.redis_down_for_ms / 1000.0,
        )
        if o.redis_url
        else None
    )

    def market_view(symbol: str) -> list[dict[str, Any]]:
        state = engine.states.get(symbol)
        views = [engine.view(state.latest)] if state is not None and state.latest is not None else []
        return views + ([engine.view(engine.market)] if engine.market is not None else [])

    guard = OrderGuard(
        policy,
        parts.guard,
        venues,
        var_data=var_venue.data,
        market_view=market_view,
        audit=queue,
        bus=parts.intake.status if parts.intake is not None else None,
        shared_rate=shared_rate,
        clock=parts.guard.clock,
    )
    return OrderParts(guard, queue, venues, shared_rate)


def build_alerts(settings: Settings, audit_log: AuditLog, metrics: Metrics) -> AlertFeed | None:
    """The feed from the audit log to the configured alert channels; None when none is configured."""
    notifier = build_notifier(settings.alerts, clock=_utcnow, on_delivery=metrics.observe_alert)
    if notifier is None:
        return None
    return AlertFeed(
        audit_log,
        ReadCursor(audit_log.engine, "alerts"),
        notifier,
        _utcnow,
        max_age=timedelta(seconds=settings.alerts.max_age_s),
    )


def build_service(settings: Settings) -> Service:
    """Open the store (migrating it), build feed, sources, engine, portfolio guard and app."""
    store = Store.open(settings.store_url)
    metrics = Metrics()
    sources, funding = build_sources(settings)
    engine = Engine(settings, build_feed(settings), store, metrics, sources=sources, funding=funding)
    portfolio = build_portfolio(settings, store)
    portfolio.orders = build_orders(settings, portfolio, engine)
    portfolio.alerts = build_alerts(settings, portfolio.audit_log, metrics)
    app = create_app(settings, engine, store, metrics, portfolio=portfolio)
    return Service(settings, store, engine, app)


def ensure_admin_key(store: Store) -> IssuedKey | None:
    """On first start (no active admin key) create one for account `admin`; None if one exists."""
    if store.count_keys("admin"):
        return None
    return store.create_key("admin", "admin", "created on first start", now=datetime.now(UTC))
