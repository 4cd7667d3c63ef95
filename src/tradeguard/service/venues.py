"""The exchanges the order guard reads, created on first use: one ccxt (pro) client per exchange id, shared by
its metadata/price-history cache and its order-book source. Public endpoints only — no keys are needed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import ccxt
import ccxt.pro

from tradeguard.adapters.exchange_download import configure_exchange, exchange_class, rebase_urls
from tradeguard.adapters.order_books import OrderBookSource
from tradeguard.adapters.order_market_data import ExchangeMarketData
from tradeguard.core.order_book import OrderBookConfig
from tradeguard.guards.order import Venue
from tradeguard.service.settings import OrderVenue


class Venues:
    """`venues(exchange_id)` → the Venue (None for an id ccxt does not know)."""

    def __init__(
        self,
        configs: Mapping[str, OrderVenue],
        book: OrderBookConfig,
        clock: Callable[[], datetime],
        *,
        quote: str = "USDT",
    ) -> None:
        self.configs = dict(configs)
        self.book = book
        self.clock = clock
        self.quote = quote
        self._venues: dict[str, Venue] = {}

    def __call__(self, exchange_id: str) -> Venue | None:
        venue = self._venues.get(exchange_id)
        if venue is None and exchange_id in ccxt.exchanges:
            venue = self._venues[exchange_id] = self._build(exchange_id)
        return venue

    def _build(self, exchange_id: str) -> Venue:
        cfg = self.configs.get(exchange_id, OrderVenue())
        namespace: Any = ccxt.pro if exchange_id in ccxt.pro.exchanges else ccxt.async_support
        exchange = exchange_class(exchange_id, namespace)({"enableRateLimit": True})
        configure_exchange(exchange, cfg.market_types, cfg.api_url)
        if cfg.ws_url is not None and isinstance(exchange.urls["api"], dict) and "ws" in exchange.urls["api"]:
            exchange.urls["api"]["ws"] = rebase_urls(exchange.urls["api"]["ws"], cfg.ws_url, ("ws", "wss"))
        books = OrderBookSource(exchange, self.book, clock=self.clock, watch=cfg.use_websocket)
        return Venue(ExchangeMarketData(exchange, quote=self.quote), books)

    async def close(self) -> None:
        for venue in self._venues.values():
            await venue.books.close()
            await venue.data.close()
        self._venues.clear()
