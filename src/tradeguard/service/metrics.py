"""Prometheus metrics, on a registry per app (so several apps can live in one process, e.g. in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradeguard.adapters.alerts.base import Delivery
from tradeguard.adapters.status import SourceStatus
from tradeguard.core.classify import REGIMES

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class SourceCollector(Collector):
    """Data age and error counts of every source, read from their statuses at scrape time."""

    def __init__(self, statuses: Callable[[], Iterable[SourceStatus]], clock: Callable[[], datetime]) -> None:
        self._statuses = statuses
        self._clock = clock

    def collect(self) -> Iterable[Any]:
        now = self._clock()
        age = GaugeMetricFamily(
            "tradeguard_data_age_seconds", "Seconds since the source last delivered data", labels=["source"]
        )
        errors = CounterMetricFamily(
            "tradeguard_source_errors", "Errors fetching from the source", labels=["source"]
        )
        for status in self._statuses():
            seconds = status.age_s(now)
            if seconds is not None:
                age.add_metric([status.name], seconds)
            errors.add_metric([status.name], status.errors_total)
        yield age
        yield errors


class Metrics:
    """The service's metrics: risk per pair, HTTP latency, and the source collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.risk_score = Gauge("tradeguard_risk_score", "Composite risk score 0-1", ["pair"], registry=r)
        self.safe = Gauge("tradeguard_safe_to_trade", "1 when safe to open new risk", ["pair"], registry=r)
        self.regime = Gauge(
            "tradeguard_regime", "1 for the pair's current regime", ["pair", "regime"], registry=r
        )
        self.volatility = Gauge(
            "tradeguard_volatility", "Annualised realized volatility", ["pair"], registry=r
        )
        self.http = Histogram(
            "tradeguard_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts = Counter(
            "tradeguard_alert_messages",
            "Alert messages to people by channel and outcome (ok / failed)",
            ["channel", "outcome"],
            registry=r,
        )

    def observe_assessment(self, a: dict[str, Any]) -> None:
        pair = a["pair"] or "market"
        self.safe.labels(pair).set(1.0 if a["safe_to_trade"] else 0.0)
        if a.get("risk_score") is not None:
            self.risk_score.labels(pair).set(a["risk_score"])
        if a.get("volatility") is not None:
            self.volatility.labels(pair).set(a["volatility"])
        for regime in REGIMES:
            self.regime.labels(pair, regime).set(1.0 if a.get("regime") == regime else 0.0)

    def observe_alert(self, delivery: Delivery) -> None:
        """Count one alert message (a notifier's `on_delivery`)."""
        self.alerts.labels(delivery.channel, "ok" if delivery.ok else "failed").inc()

    def add_sources(
        self, statuses: Callable[[], Iterable[SourceStatus]], clock: Callable[[], datetime]
    ) -> None:
        self.registry.register(SourceCollector(statuses, clock))


class LatencyMiddleware:
    """Pure ASGI middleware timing every HTTP request by route template and status code."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.http.labels(path, str(status)).observe(time.perf_counter() - start)
