"""The service end to end on live exchange data: real ccxt.pro against the fake Binance (REST + WebSocket)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from tests.fakes import fixtures, ws_fixtures
from tests.fakes.fake_binance import HOUR_MS, FakeBinance
from tests.fakes.fake_binance_ws import FakeBinanceWs
from tests.fakes.fixtures import FAKE_NOW_MS
from tests.test_live_feed import CONFIG, FAST, Clock
from tradeguard.adapters.feeds.ccxt_live import CcxtLiveFeed
from tradeguard.adapters.status import Backoff
from tradeguard.adapters.store import Store
from tradeguard.service.app import create_app
from tradeguard.service.engine import Engine
from tradeguard.service.metrics import Metrics
from tradeguard.service.settings import Settings

fake_binance = fixtures.fake_binance
fake_binance_ws = ws_fixtures.fake_binance_ws

T12 = FAKE_NOW_MS // HOUR_MS * HOUR_MS


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def service(tmp_path, feed: CcxtLiveFeed):
    settings = Settings.load(
        store_url=f"sqlite:///{tmp_path / 'live.db'}",
        external={"enabled": False},
        auth={"anonymous_read": True},
        refresh_interval_s=3600.0,
    )
    store = Store.open(settings.store_url)
    engine = Engine(settings, feed, store, Metrics(), backoff=Backoff(0.01, 0.05, jitter=False))
    return create_app(settings, engine, store, engine.metrics), engine, store


def test_live_service_follows_the_stream_across_a_dropped_socket(
    tmp_path, fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
):
    clock = Clock(fake_binance, FAKE_NOW_MS)
    feed = CcxtLiveFeed(
        "binance",
        api_url=fake_binance.url,
        ws_url=fake_binance_ws.url,
        clock=clock,
        backoff=FAST,
        config=CONFIG,
    )
    app, engine, store = service(tmp_path, feed)
    with TestClient(app) as client:
        wait_for(lambda: engine.market is not None, "seeding")
        body = client.get("/v1/risk", params={"pair": "BTC/USDT"}).json()
        assert body["as_of"] == iso(T12) and body["stale"] is False and body["synthetic"] is False
        assert client.get("/ready").status_code == 200
        wait_for(lambda: "btcusdt@kline_1h" in fake_binance_ws.streams(), "the subscription")

        # 12:00 closes on the stream
        clock.set(T12 + HOUR_MS + 500)
        fake_binance_ws.push_kline("BTCUSDT", "1h", T12, closed=True)
        fake_binance_ws.push_kline("BTCUSDT", "1h", T12 + HOUR_MS, closed=False)
        wait_for(lambda: engine.states["BTC/USDT"].latest["as_of"] == iso(T12 + HOUR_MS), "13:00 assessment")

        # the socket drops; 13:00 and 14:00 close while the feed is away; REST fills them in. The clock moves
        # first: a reconnect racing ahead of it (10 ms backoff) would find nothing to fill in.
        clock.set(T12 + 3 * HOUR_MS + 500)
        fake_binance_ws.drop_connections()
        wait_for(
            lambda: engine.states["BTC/USDT"].latest["as_of"] == iso(T12 + 3 * HOUR_MS),
            "recovered 15:00",
            timeout=15,
        )
        body = client.get("/v1/risk", params={"pair": "BTC/USDT"}).json()
        assert body["as_of"] == iso(T12 + 3 * HOUR_MS) and body["stale"] is False
        frame = engine.states["BTC/USDT"].frame
        assert frame["date"].is_unique and frame["date"].diff().dropna().nunique() == 1  # no loss, no dup
        wait_for(lambda: len(store.assessment_history("binance", "BTC/USDT", "1h")) == 3, "stored history")
        stored = [r["as_of"] for r in store.assessment_history("binance", "BTC/USDT", "1h")]
        assert [t.strftime("%H:%M") for t in stored] == ["13:00", "14:00", "15:00"]
        assert feed.status.errors_total >= 1 and feed.status.reachable
    store.close()


def test_offline_service_keeps_running_and_says_so(tmp_path, fake_binance: FakeBinance):
    clock = Clock(fake_binance, FAKE_NOW_MS)
    feed = CcxtLiveFeed(
        "binance",
        api_url="http://127.0.0.1:9",
        ws_url="ws://127.0.0.1:9",
        clock=clock,
        backoff=FAST,
        config={**CONFIG, "timeout": 300},
        seed_attempts=1,
    )
    app, _engine, store = service(tmp_path, feed)
    with TestClient(app) as client:
        wait_for(lambda: feed.status.errors_total >= 2, "retries")
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and "binance:BTC/USDT" in ready.json()["stale_sources"]
        source = next(s for s in ready.json()["sources"] if s["name"] == feed.status.name)
        assert source["reachable"] is False and source["last_error"]
        risk = client.get("/v1/risk", params={"pair": "BTC/USDT"})
        assert risk.status_code == 503 and risk.headers["retry-after"] == "5"
        assert 'tradeguard_source_errors_total{source="binance"}' in client.get("/metrics").text
    store.close()
