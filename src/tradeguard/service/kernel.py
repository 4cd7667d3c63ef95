"""Composition root: builds the feed, sources, store, engine and app from Settings (nothing else does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI

from tradeguard.adapters.actions import TripAction
from tradeguard.adapters.actions.cancel_orders import CancelOpenOrders
from tradeguard.adapters.actions.freqtrade import PauseFreqtrade
from tradeguard.adapters.bus.nats_intake import NatsIntake
from tradeguard.adapters.exchange_poller import ExchangePoller
from tradeguard.adapters.external_files import load_external
from tradeguard.adapters.feeds.base import CandleFeed
from tradeguard.adapters.feeds.ccxt_live import CcxtLiveFeed
from tradeguard.adapters.feeds.replay import ReplayFeed
from tradeguard.adapters.feeds.simulator import SimulatorFeed
from tradeguard.adapters.leverage_tiers import load_snapshot
from tradeguard.adapters.markets import BaseAssetResolver
from tradeguard.adapters.signing_key import load_signing_key
from tradeguard.adapters.sources.cache import CachedSource
from tradeguard.adapters.sources.coingecko import BtcDominanceFetcher
from tradeguard.adapters.sources.fear_greed import FearGreedFetcher
from tradeguard.adapters.sources.fred import FredFetcher
from tradeguard.adapters.sources.funding import FundingRateFetcher
from tradeguard.adapters.sources.http import HttpPolicy
from tradeguard.adapters.sources.static import StaticSource
from tradeguard.adapters.store import AuditLog, EventLog, GuardState, IssuedKey, Store
from tradeguard.core.exposure import ExposureConfig
from tradeguard.errors import InputError
from tradeguard.guards.portfolio import PortfolioGuard, PortfolioPolicy
from tradeguard.service.app import PortfolioParts, create_app
from tradeguard.service.engine import Engine, ExternalSource
from tradeguard.service.metrics import Metrics
from tradeguard.service.settings import Settings


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
    audit_log = AuditLog(store.engine, key)
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
    intake = None
    if settings.bus.nats_url:
        intake = NatsIntake(
            settings.bus.nats_url,
            event_log,
            on_events=guard.on_events,
            stream=settings.bus.stream,
            durable=settings.bus.durable,
        )
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
    return PortfolioParts(guard, event_log, audit_log, key, intake, pollers)


def build_service(settings: Settings) -> Service:
    """Open the store (migrating it), build feed, sources, engine, portfolio guard and app."""
    store = Store.open(settings.store_url)
    metrics = Metrics()
    sources, funding = build_sources(settings)
    engine = Engine(settings, build_feed(settings), store, metrics, sources=sources, funding=funding)
    app = create_app(settings, engine, store, metrics, portfolio=build_portfolio(settings, store))
    return Service(settings, store, engine, app)


def ensure_admin_key(store: Store) -> IssuedKey | None:
    """On first start (no active admin key) create one for account `admin`; None if one exists."""
    if store.count_keys("admin"):
        return None
    return store.create_key("admin", "admin", "created on first start", now=datetime.now(UTC))
