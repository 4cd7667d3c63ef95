"""Test kit for the service: a scripted candle feed with a settable clock, app factories and key issuing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import uvicorn
from fastapi import FastAPI

from tests.synthetic import candles_from_closes, random_walk
from tradeguard.adapters.status import SourceStatus
from tradeguard.adapters.store import Store
from tradeguard.service.app import PortfolioParts, create_app
from tradeguard.service.engine import Engine
from tradeguard.service.kernel import build_orders, build_portfolio
from tradeguard.service.metrics import Metrics
from tradeguard.service.settings import Settings


class ManualClock:
    """An injected clock that stands still until a test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class ScriptedFeed:
    """A CandleFeed over prepared frames: seed() serves history, push() delivers a new closed candle."""

    name = "scripted"
    synthetic = True

    def __init__(self, frames: dict[str, pd.DataFrame], history: int = 1300) -> None:
        self.status = SourceStatus("scripted")
        self.frames = frames
        self.history = history
        self.clock = max(f["date"].iloc[history - 1] for f in frames.values()).to_pydatetime() + timedelta(
            hours=1
        )
        self.on_candles = None
        self.seed_failures = 0

    def now(self) -> datetime:
        return self.clock

    async def seed(self, pair: str, timeframe: str, limit: int) -> pd.DataFrame:
        if self.seed_failures:
            self.seed_failures -= 1
            raise ConnectionError("exchange unreachable")
        frame = self.frames[pair]
        return frame.iloc[max(0, self.history - limit) : self.history]

    async def run(self, pairs: list[str], timeframe: str, on_candles) -> None:
        self.on_candles = on_candles
        await asyncio.Event().wait()

    async def push(self, pair: str, index: int) -> None:
        """Deliver candle `index` of the pair's frame as closed, advancing the clock to its close."""
        row = self.frames[pair].iloc[[index]]
        self.clock = row["date"].iloc[0].to_pydatetime() + timedelta(hours=1)
        await self.on_candles(pair, "1h", row.reset_index(drop=True))

    async def close(self) -> None:
        return None


def make_frames(pairs: tuple[str, ...] = ("BTC/USDT", "ETH/USDT"), n: int = 1400) -> dict[str, pd.DataFrame]:
    return {p: candles_from_closes(random_walk(n, seed=i + 1, sigma=0.006)) for i, p in enumerate(pairs)}


def build(tmp_path: Path, feed: ScriptedFeed | None = None, **settings: object):
    """(app, engine, store, feed) on a fresh SQLite store; external sources off unless given."""
    feed = feed or ScriptedFeed(make_frames())
    values = {
        "store_url": f"sqlite:///{tmp_path / 'tg.db'}",
        "external": {"enabled": False},
        "refresh_interval_s": 3600.0,
    } | settings
    config = Settings.load(**values)
    store = Store.open(config.store_url)
    metrics = Metrics()
    engine = Engine(config, feed, store, metrics)
    return create_app(config, engine, store, metrics), engine, store, feed


def compose(
    tmp: Path, *, with_orders: bool = False, **settings: Any
) -> tuple[Settings, Store, Engine, PortfolioParts]:
    """(settings, store, engine, parts): the guards composed as the kernel composes them, on a scripted feed.

    A fresh SQLite store under `tmp`, external sources off, the audit key in `tmp/audit.pem` and an hourly
    refresh, unless `settings` replaces them (key by key). `with_orders` adds the order guard. The caller
    closes the store.
    """
    defaults: dict[str, Any] = {
        "store_url": f"sqlite:///{tmp / 'tg.db'}",
        "external": {"enabled": False},
        "audit": {"key_file": tmp / "audit.pem"},
        "refresh_interval_s": 3600.0,
    }
    config = Settings.load(**(defaults | settings))
    store = Store.open(config.store_url)
    try:
        engine = Engine(config, ScriptedFeed(make_frames()), store, Metrics())
        parts = build_portfolio(config, store)
        if with_orders:
            parts.orders = build_orders(config, parts, engine)
    except BaseException:
        store.close()
        raise
    return config, store, engine, parts


def issue_keys(store: Store, wanted: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """API keys for {name: (account, scope)}, as {name: token}."""
    now = datetime.now(UTC)
    return {name: store.create_key(acct, scope, now=now).token for name, (acct, scope) in wanted.items()}


def wait_for_market(engine: Engine, timeout_s: float = 20.0) -> None:
    """Wait until the engine has assessed the market; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while engine.market is None:
        assert time.monotonic() < deadline, "the engine did not assess the market"
        time.sleep(0.02)


class UvicornThread:
    """The app served by uvicorn on a free port of 127.0.0.1, from a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> UvicornThread:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


CLIENT_KEYS = {
    "bot_a": ("alpha", "bot"),
    "read_a": ("alpha", "read"),
    "bot_b": ("beta", "bot"),
    "admin": ("ops", "admin"),
}


@contextlib.contextmanager
def serving(tmp: Path, **settings: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """(base URL, CLIENT_KEYS tokens) of the app `compose(tmp, **settings)` builds, served by uvicorn once the
    market is assessed; the store is closed afterwards."""
    config, store, engine, parts = compose(tmp, **settings)
    try:
        keys = issue_keys(store, CLIENT_KEYS)
        with UvicornThread(create_app(config, engine, store, engine.metrics, portfolio=parts)) as server:
            wait_for_market(engine)
            yield server.url, keys
    finally:
        store.close()
