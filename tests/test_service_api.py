"""The HTTP API: contract, auth, rate limits, problems, stale policy, readiness, metrics, stream."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.service_kit import ScriptedFeed, build, make_frames
from tests.test_cli_market import CONTRACT


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def service(tmp_path):
    app, engine, store, feed = build(tmp_path)
    keys = {s: store.create_key("acme", s, now=datetime.now(UTC)).token for s in ("read", "bot", "admin")}
    with TestClient(app) as client:
        wait_for(lambda: engine.market is not None)
        yield client, engine, store, feed, keys
    store.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_risk_has_the_contract_fields(service):
    client, _, _, _, keys = service
    r = client.get("/v1/risk", params={"pair": "BTC/USDT"}, headers=auth(keys["read"]))
    assert r.status_code == 200
    body = r.json()
    assert CONTRACT | {"stale", "exchange"} <= body.keys()
    assert body["pair"] == "BTC/USDT" and body["stale"] is False and body["data_age_s"] == 0
    assert body["synthetic"] is True


def test_market_wide_combines_pairs(service):
    client, engine, _, _, keys = service
    body = client.get("/v1/risk", headers=auth(keys["read"])).json()
    assert body["pair"] is None and set(body["pairs"]) == {"BTC/USDT", "ETH/USDT"}
    pair_scores = [engine.states[p].latest["risk_score"] for p in ("BTC/USDT", "ETH/USDT")]
    assert body["risk_score"] == pytest.approx(max(sum(pair_scores) / 2, pair_scores[0]))


def test_regime_volatility_and_pairs(service):
    client, _, _, _, keys = service
    h = auth(keys["read"])
    regime = client.get("/v1/regime", params={"pair": "ETH/USDT"}, headers=h).json()
    assert {
        "regime",
        "specialist_regime",
        "trend_classification",
    } <= regime.keys() and "risk_score" not in regime
    vol = client.get("/v1/volatility", params={"pair": "ETH/USDT"}, headers=h).json()
    assert {"volatility", "volatility_percentile", "volatility_classification", "atr_pct"} <= vol.keys()
    pairs = client.get("/v1/pairs", headers=h).json()
    assert [p["pair"] for p in pairs] == ["BTC/USDT", "ETH/USDT"] and pairs[0]["candles"] == 1200


def test_unknown_pair_is_404_problem_listing_tracked_pairs(service):
    client, _, _, _, keys = service
    r = client.get("/v1/risk", params={"pair": "DOGE/USDT"}, headers=auth(keys["read"]))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["tracked_pairs"] == ["BTC/USDT", "ETH/USDT"] and r.json()["status"] == 404
    bad = client.get("/v1/risk", params={"pair": "BTCUSDT"}, headers=auth(keys["read"]))
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


def test_auth_missing_wrong_scope_revoked(service):
    client, _, store, _, _keys = service
    assert client.get("/health").status_code == 200
    r = client.get("/v1/risk", params={"pair": "BTC/USDT"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/pairs", headers=auth("tg_nope")).status_code == 401
    assert client.get("/v1/pairs", headers={"Authorization": "Basic abc"}).status_code == 401
    key = store.create_key("acme", "read", now=datetime.now(UTC))
    app = client.app
    assert client.get("/v1/pairs", headers=auth(key.token)).status_code == 200
    store.revoke_key(key.key_id, datetime.now(UTC))
    app.state.authenticator.forget(key.key_id)
    assert client.get("/v1/pairs", headers=auth(key.token)).status_code == 401


def test_scope_too_low_is_403(tmp_path):
    from fastapi import Depends

    from tradeguard.service.auth import Principal, require

    app, _engine, store, _ = build(tmp_path)

    operator = Depends(require("operator"))

    @app.get("/v1/operator-only")
    def operator_only(_: Principal = operator) -> dict[str, bool]:
        return {"ok": True}

    read = store.create_key("acme", "read", now=datetime.now(UTC)).token
    admin = store.create_key("acme", "admin", now=datetime.now(UTC)).token
    with TestClient(app) as client:
        r = client.get("/v1/operator-only", headers=auth(read))
        assert r.status_code == 403 and "operator" in r.json()["detail"]
        assert client.get("/v1/operator-only", headers=auth(admin)).status_code == 200
    store.close()


def test_rate_limit_is_429_with_retry_after(tmp_path):
    app, _engine, store, _ = build(tmp_path, auth={"rate_limit_per_s": 1.0, "rate_limit_burst": 3})
    token = store.create_key("acme", "read", now=datetime.now(UTC)).token
    with TestClient(app) as client:
        codes = [client.get("/v1/pairs", headers=auth(token)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        r = client.get("/v1/pairs", headers=auth(token))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"] == "application/problem+json"
    store.close()


def test_anonymous_read_when_enabled(tmp_path):
    app, engine, store, _ = build(tmp_path, auth={"anonymous_read": True})
    with TestClient(app) as client:
        wait_for(lambda: engine.market is not None)
        assert client.get("/v1/risk", params={"pair": "BTC/USDT"}).status_code == 200
    store.close()


def test_stale_data_is_200_stale_and_not_safe(service):
    client, _engine, _, feed, keys = service
    feed.clock += timedelta(hours=5)
    body = client.get("/v1/risk", params={"pair": "BTC/USDT"}, headers=auth(keys["read"])).json()
    assert body["stale"] is True and body["data_age_s"] == 5 * 3600
    assert body["safe_to_trade"] is False and "stale_data" in body["blocked_by"]
    assert any(r.startswith("Stale data") for r in body["reasoning"])
    ready = client.get("/ready", headers=auth(keys["read"]))
    assert ready.status_code == 503 and ready.json()["stale_sources"] == [
        "binance:BTC/USDT",
        "binance:ETH/USDT",
    ]


def test_stale_policy_can_be_relaxed(tmp_path):
    app, engine, store, feed = build(tmp_path, stale={"block": False}, auth={"anonymous_read": True})
    with TestClient(app) as client:
        wait_for(lambda: engine.market is not None)
        feed.clock += timedelta(hours=5)
        body = client.get("/v1/risk", params={"pair": "BTC/USDT"}).json()
        assert body["stale"] is True and "stale_data" not in body["blocked_by"]
    store.close()


def test_ready_is_503_while_seeding_then_200(tmp_path):
    feed = ScriptedFeed(make_frames())
    feed.seed_failures = 2
    from tradeguard.adapters.status import Backoff

    app, engine, store, _ = build(tmp_path, feed=feed, auth={"anonymous_read": True})
    engine.backoff = Backoff(base_s=0.01, cap_s=0.02)
    with TestClient(app) as client:
        wait_for(lambda: engine.market is not None)
        assert client.get("/ready").status_code == 200
        assert feed.status.errors_total == 2 and feed.status.reachable
    store.close()


def test_candle_close_recomputes_stores_and_streams(service):
    client, _engine, store, feed, keys = service
    with client.websocket_connect("/v1/stream", headers=auth(keys["read"])) as ws:
        initial = {ws.receive_json()["pair"] for _ in range(2)}
        assert initial == {"BTC/USDT", "ETH/USDT"}
        client.portal.call(feed.push, "BTC/USDT", 1300)
        pushed = ws.receive_json()
        assert pushed["pair"] == "BTC/USDT" and pushed["as_of"] == "2024-02-24T05:00:00Z"
        market = ws.receive_json()
        assert market["pair"] is None
    wait_for(lambda: store.latest_assessment("binance", "BTC/USDT", "1h") is not None)
    h = auth(keys["read"])
    rows = client.get("/v1/risk/history", params={"pair": "BTC/USDT"}, headers=h).json()
    assert [r["as_of"] for r in rows] == ["2024-02-24T05:00:00Z"]
    csv = client.get("/v1/risk/history", params={"pair": "BTC/USDT", "format": "csv"}, headers=h)
    assert csv.headers["content-type"].startswith("text/csv") and "safe_to_trade" in csv.text.splitlines()[0]
    assert csv.text.splitlines()[1].startswith("2024-02-24T05:00:00Z,")
    parquet = client.get("/v1/risk/history", params={"pair": "BTC/USDT", "format": "parquet"}, headers=h)
    assert len(pd.read_parquet(io.BytesIO(parquet.content))) == 1
    bad = client.get(
        "/v1/risk/history", params={"pair": "BTC/USDT", "start": "2025-01-02", "end": "2025-01-01"}, headers=h
    )
    assert bad.status_code == 422


def test_stream_rejects_missing_key(service):
    client, *_ = service
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as exc, client.websocket_connect("/v1/stream") as ws:
        ws.receive_json()
    assert exc.value.code == 4401


def test_stream_accepts_query_token_and_filters_pair(service):
    client, _, _, _, keys = service
    with client.websocket_connect(f"/v1/stream?token={keys['read']}&pair=ETH/USDT") as ws:
        assert ws.receive_json()["pair"] == "ETH/USDT"


def test_metrics_expose_risk_sources_and_latency(service):
    client, _, _, _, keys = service
    client.get("/v1/risk", params={"pair": "BTC/USDT"}, headers=auth(keys["read"]))
    text = client.get("/metrics", headers=auth(keys["read"])).text
    for name in (
        'tradeguard_risk_score{pair="BTC/USDT"}',
        'tradeguard_safe_to_trade{pair="ETH/USDT"}',
        'tradeguard_regime{pair="BTC/USDT",regime="panic"}',
        'tradeguard_volatility{pair="BTC/USDT"}',
        'tradeguard_data_age_seconds{source="scripted"}',
        'tradeguard_source_errors_total{source="store"}',
        'tradeguard_http_request_duration_seconds_count{route="/v1/risk",status="200"}',
    ):
        assert name in text, name


def test_openapi_and_docs(service):
    client, *_ = service
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/risk",
        "/v1/regime",
        "/v1/volatility",
        "/v1/risk/history",
        "/v1/pairs",
        "/health",
        "/ready",
        "/metrics",
    } <= spec["paths"].keys()
    assert client.get("/docs").status_code == 200
