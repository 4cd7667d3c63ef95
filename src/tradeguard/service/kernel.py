"""Composition root: builds the feed, sources, store, engine and app from Settings (nothing else does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI

from tradeguard.adapters.external_files import load_external
from tradeguard.adapters.feeds.base import CandleFeed
from tradeguard.adapters.feeds.ccxt_live import CcxtLiveFeed
from tradeguard.adapters.feeds.replay import ReplayFeed
from tradeguard.adapters.feeds.simulator import SimulatorFeed
from tradeguard.adapters.sources.cache import CachedSource
from tradeguard.adapters.sources.coingecko import BtcDominanceFetcher
from tradeguard.adapters.sources.fear_greed import FearGreedFetcher
from tradeguard.adapters.sources.fred import FredFetcher
from tradeguard.adapters.sources.funding import FundingRateFetcher
from tradeguard.adapters.sources.http import HttpPolicy
from tradeguard.adapters.sources.static import StaticSource
from tradeguard.adapters.store import IssuedKey, Store
from tradeguard.errors import InputError
from tradeguard.service.app import create_app
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


def build_service(settings: Settings) -> Service:
    """Open the store (migrating it), build feed, sources, engine and app."""
    store = Store.open(settings.store_url)
    metrics = Metrics()
    sources, funding = build_sources(settings)
    engine = Engine(settings, build_feed(settings), store, metrics, sources=sources, funding=funding)
    return Service(settings, store, engine, create_app(settings, engine, store, metrics))


def ensure_admin_key(store: Store) -> IssuedKey | None:
    """On first start (no active admin key) create one for account `admin`; None if one exists."""
    if store.count_keys("admin"):
        return None
    return store.create_key("admin", "admin", "created on first start", now=datetime.now(UTC))
