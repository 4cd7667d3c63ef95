"""`create_app`: the FastAPI application, built from settings and already-constructed components."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from tradeguard import __version__
from tradeguard.service import problems
from tradeguard.service.auth import Authenticator, KeyVerifier
from tradeguard.service.engine import Engine
from tradeguard.service.metrics import LatencyMiddleware, Metrics
from tradeguard.service.routes import health, market, stream
from tradeguard.service.settings import Settings


def create_app(
    settings: Settings, engine: Engine, store: Any, metrics: Metrics, *, start_engine: bool = True
) -> FastAPI:
    """The app; its lifespan starts and stops the engine (tests may drive the engine themselves)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_engine:
            await engine.start()
        try:
            yield
        finally:
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
    metrics.add_sources(engine.statuses, engine.now)
    problems.install(app)
    for router in (health.router, market.router, stream.router):
        app.include_router(router)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app
