"""The composition root: `build_service` wires every mode, and a live service with no network stays up."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tradeguard.adapters.feeds.ccxt_live import CcxtLiveFeed
from tradeguard.adapters.feeds.replay import ReplayFeed
from tradeguard.adapters.feeds.simulator import SimulatorFeed
from tradeguard.adapters.sources.static import StaticSource
from tradeguard.service.kernel import build_service, ensure_admin_key
from tradeguard.service.settings import Settings

DEAD = "http://127.0.0.1:9"


def test_live_mode_without_network_reports_every_source(tmp_path):
    settings = Settings.load(
        store_url=f"sqlite:///{tmp_path / 'k.db'}",
        audit={"key_file": tmp_path / "audit.pem"},
        auth={"anonymous_read": True},
        feed={"api_url": DEAD, "ws_url": "ws://127.0.0.1:9"},
        external={
            "fear_greed_url": DEAD,
            "coingecko_url": DEAD,
            "fred_url": DEAD,
            "funding_api_url": DEAD,
            "timeout_s": 0.2,
        },
    )
    service = build_service(settings)
    assert isinstance(service.engine.feed, CcxtLiveFeed)
    assert set(service.engine.sources) == {"fear_greed", "btc_dominance", "vix", "dxy"}
    assert set(service.engine.funding) == {"BTC/USDT", "ETH/USDT"}
    first = ensure_admin_key(service.store)
    assert first is not None and first.scope == "admin" and ensure_admin_key(service.store) is None
    with TestClient(service.app) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        names = {s["name"] for s in ready.json()["sources"]}
        assert {
            "binance",
            "fear_greed",
            "btc_dominance",
            "vix",
            "dxy",
            "funding_rate:BTC/USDT",
            "funding_rate:ETH/USDT",
            "store",
        } <= names
        deadline = time.monotonic() + 10
        while service.engine.sources["vix"].status.errors_total == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.engine.sources["vix"].status.last_error  # tried at start, even before any candle
        deadline = time.monotonic() + 10
        while service.engine.feed.status.errors_total == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.engine.feed.status.errors_total > 0
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200
    service.store.close()


def test_simulator_and_replay_modes(tmp_path, shared_data):
    key = {"key_file": tmp_path / "audit.pem"}
    sim = build_service(Settings.load(store_url="sqlite://", feed={"mode": "simulator"}, audit=key))
    assert isinstance(sim.engine.feed, SimulatorFeed) and sim.engine.sources == {}
    sim.store.close()
    replay = build_service(
        Settings.load(
            store_url="sqlite://",
            feed={"mode": "replay", "data_dir": shared_data / "binance"},
            external={"directory": shared_data / "external"},
        )
    )
    assert isinstance(replay.engine.feed, ReplayFeed)
    assert {"fear_greed", "vix", "dxy"} <= set(replay.engine.sources)
    assert all(isinstance(s, StaticSource) for s in replay.engine.sources.values())
    assert set(replay.engine.funding) == {"BTC/USDT", "ETH/USDT"}
    replay.store.close()
