"""ASGI apps the HTTP benchmark serves with uvicorn (run in their own processes).

- `tradeguard_app`: the real app and engine (auth, rate limit, metrics middleware, stale policy) over
  simulated BTC/USDT and ETH/USDT candles; the store URL and the engine are prepared from the environment.
- `bare_app`: a bare Starlette route returning the same assessment JSON, for comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from tradeguard.adapters.feeds.simulator import simulate_candles
from tradeguard.adapters.status import SourceStatus
from tradeguard.adapters.store import Store
from tradeguard.service.app import create_app
from tradeguard.service.engine import Engine
from tradeguard.service.metrics import Metrics
from tradeguard.service.settings import Settings

START = datetime(2024, 1, 1, tzinfo=UTC)
N = 1200


class FrozenFeed:
    """A feed whose candles are all seeded and whose clock stands at the last close."""

    name = "bench"
    synthetic = True

    def __init__(self) -> None:
        self.status = SourceStatus("bench")

    def now(self) -> datetime:
        return START + timedelta(hours=N)

    async def seed(self, pair: str, timeframe: str, limit: int):
        return simulate_candles(pair, N, START, seed=1)

    async def run(self, pairs: list[str], timeframe: str, on_candles) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


def tradeguard_app():
    settings = Settings.load(
        store_url=os.environ["BENCH_STORE_URL"],
        external={"enabled": False},
        auth={"rate_limit_per_s": 1e9, "rate_limit_burst": 10**9},
    )
    store = Store.open(settings.store_url)
    metrics = Metrics()
    engine = Engine(settings, FrozenFeed(), store, metrics)
    return create_app(settings, engine, store, metrics)


def bare_app() -> Starlette:
    body = json.dumps(json.loads(os.environ["BENCH_BODY"])).encode()

    async def risk(request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/v1/risk", risk)])
