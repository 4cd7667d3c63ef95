"""Test kit for the service: a scripted candle feed with a settable clock, and an app factory."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import uvicorn
from fastapi import FastAPI

from tests.synthetic import candles_from_closes, random_walk
from tradeguard.adapters.status import SourceStatus
from tradeguard.adapters.store import Store
from tradeguard.service.app import create_app
from tradeguard.service.engine import Engine
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
