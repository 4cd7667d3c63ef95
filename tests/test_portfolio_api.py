"""Portfolio guard over HTTP, composed as `serve` composes it: events in, risk out, tenancy on every route."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.service_kit import compose, issue_keys
from tradeguard.cli.main import main
from tradeguard.service.app import create_app

ACCOUNT_ROUTES = [
    "/v1/portfolio",
    "/v1/portfolio/drawdown",
    "/v1/portfolio/correlation",
    "/v1/portfolio/liquidation",
    "/v1/breakers",
    "/v1/trading-state",
    "/v1/audit",
]


@pytest.fixture
def api(tmp_path):
    settings, store, engine, parts = compose(tmp_path)
    app = create_app(settings, engine, store, engine.metrics, portfolio=parts)
    keys = issue_keys(
        store,
        {
            "bot_a": ("alpha", "bot"),
            "read_a": ("alpha", "read"),
            "op_a": ("alpha", "operator"),
            "bot_b": ("beta", "bot"),
            "admin": ("ops", "admin"),
        },
    )
    with TestClient(app) as client:
        yield client, keys, settings
    store.close()


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def envelope(i: int, type_: str, payload: dict, ts: datetime, account: str = "alpha") -> dict:
    return {
        "id": f"{account}-{i}",
        "type": type_,
        "account": account,
        "exchange": "binance",
        "bot": "ft1",
        "ts": ts.isoformat(),
        "payload": payload,
    }


def post(client: TestClient, token: str, events: list[dict]):
    return client.post("/v1/events", json={"events": events}, headers=h(token))


def test_events_drive_portfolio_breakers_and_audit(api, tmp_path):
    client, keys, settings = api
    t = datetime.now(UTC) - timedelta(seconds=60)
    r = post(
        client,
        keys["bot_a"],
        [
            envelope(1, "equity", {"total_equity": 10_000, "currency": "USDT"}, t),
            envelope(
                2,
                "positions",
                {
                    "positions": [
                        {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.5, "markPrice": 60_000}
                    ]
                },
                t,
            ),
        ],
    )
    assert r.status_code == 202 and r.json()["accepted"] == ["alpha-1", "alpha-2"]
    body = client.get("/v1/portfolio", headers=h(keys["read_a"])).json()
    assert body["account"] == "alpha" and body["leverage"] == pytest.approx(3.0)
    assert body["trading_state"] == "ACTIVE"
    post(
        client,
        keys["bot_b"],
        [envelope(9, "equity", {"total_equity": 10_000, "currency": "USDT"}, t, account="beta")],
    )
    fleet = client.get("/v1/portfolio", headers=h(keys["admin"])).json()
    assert fleet["account"] is None and set(fleet["accounts"]) == {"alpha", "beta"}
    assert fleet["total_equity"] == 20_000 and fleet["leverage"] == pytest.approx(1.5)

    r = post(
        client,
        keys["bot_a"],
        [envelope(3, "equity", {"total_equity": 7_500, "currency": "USDT"}, t + timedelta(seconds=30))],
    )
    assert r.status_code == 202
    breakers = {b["id"]: b for b in client.get("/v1/breakers", headers=h(keys["read_a"])).json()["breakers"]}
    assert breakers["global_drawdown"]["state"] == "open" and breakers["drawdown"]["state"] == "open"
    state = client.get("/v1/trading-state", headers=h(keys["read_a"])).json()
    assert state["state"] == "HALTED" and "global_drawdown" in state["decided_by"]
    dd = client.get("/v1/portfolio/drawdown", headers=h(keys["read_a"])).json()["drawdown"]
    assert dd["global_drawdown"]["drawdown_pct"] == pytest.approx(25.0)

    assert client.post("/v1/breakers/global_drawdown/reset", headers=h(keys["read_a"])).status_code == 403
    reset = client.post("/v1/breakers/global_drawdown/reset", headers=h(keys["op_a"]))
    assert reset.status_code == 200 and reset.json()["breaker"]["state"] == "closed"
    assert client.post("/v1/breakers/nope/reset", headers=h(keys["op_a"])).status_code == 404

    assert (
        client.post(
            "/v1/kill-switch", json={"engaged": True, "reason": "drill"}, headers=h(keys["op_a"])
        ).status_code
        == 200
    )
    assert client.get("/v1/trading-state", headers=h(keys["read_a"])).json()["state"] == "HALTED"

    records = client.get("/v1/audit", headers=h(keys["read_a"])).json()["records"]
    types = [r["type"] for r in records]
    assert "risk.breaker.transition" in types and "risk.kill_switch" in types
    key = client.get("/v1/audit/public-key", headers=h(keys["read_a"])).json()
    assert key["algorithm"] == "Ed25519"
    pem = tmp_path / "audit.pub"
    pem.write_text(key["public_key_pem"])
    assert main(["audit", "verify", "--db", settings.store_url, "--public-key", str(pem)]) == 0


def test_tenancy_on_every_account_route(api):
    client, keys, _ = api
    for route in ACCOUNT_ROUTES:
        r = client.get(route, params={"account": "beta"}, headers=h(keys["read_a"]))
        assert r.status_code == 403, route
        assert client.get(route, params={"account": "beta"}, headers=h(keys["admin"])).status_code == 200, (
            route
        )
        assert client.get(route).status_code == 401, route
    r = post(
        client,
        keys["bot_a"],
        [envelope(1, "equity", {"total_equity": 1, "currency": "USDT"}, datetime.now(UTC), account="beta")],
    )
    assert r.status_code == 403
    assert (
        client.post(
            "/v1/breakers/drawdown/reset", params={"account": "beta"}, headers=h(keys["op_a"])
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/v1/kill-switch", json={"engaged": True, "account": "beta"}, headers=h(keys["op_a"])
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/v1/kill-switch", json={"engaged": True, "account": "*"}, headers=h(keys["op_a"])
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/v1/kill-switch", json={"engaged": False, "account": "*"}, headers=h(keys["admin"])
        ).status_code
        == 200
    )


def test_portfolio_survives_a_restart(api, tmp_path):
    client, keys, settings = api
    t = datetime.now(UTC) - timedelta(hours=1)
    post(
        client,
        keys["bot_a"],
        [
            envelope(1, "equity", {"total_equity": 10_000, "currency": "USDT"}, t),
            envelope(2, "equity", {"total_equity": 7_000, "currency": "USDT"}, t + timedelta(minutes=30)),
        ],
    )
    client.close()
    settings, store, engine, parts = compose(tmp_path, store_url=settings.store_url)
    app = create_app(settings, engine, store, engine.metrics, portfolio=parts)
    with TestClient(app) as again:
        deadline = time.monotonic() + 5
        while "alpha" not in app.state.portfolio.risk and time.monotonic() < deadline:
            time.sleep(0.02)
        state = again.get("/v1/trading-state", headers=h(keys["read_a"])).json()
        assert state["state"] == "HALTED"  # the global drawdown breaker and the equity path came back
        dd = again.get("/v1/portfolio/drawdown", headers=h(keys["read_a"])).json()["drawdown"]
        assert dd["global_drawdown"]["drawdown_pct"] == pytest.approx(30.0)
    store.close()


def test_pull_mode_polls_positions_into_the_portfolio(tmp_path):
    from tests.fakes.fake_binance_futures import FakeBinanceFutures

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    with FakeBinanceFutures(now_ms=now_ms, api_key="readonly", wallet={"USDT": 10_000.0}) as fake:
        fake.set_position("BTCUSDT", 0.5, 30_000.0, 31_000.0, leverage=5, liquidation_price=12_500.0)
        pull = {
            "exchange": "binance",
            "api_key": "readonly",
            "secret": "s",
            "api_url": fake.url,
            "interval_s": 0.2,
        }
        settings, store, engine, parts = compose(tmp_path, portfolio={"pull": {"gamma": [pull]}})
        app = create_app(settings, engine, store, engine.metrics, portfolio=parts)
        token = store.create_key("gamma", "read", now=datetime.now(UTC)).token
        with TestClient(app) as client:
            deadline = time.monotonic() + 10
            body: dict = {}
            while time.monotonic() < deadline:
                body = client.get("/v1/portfolio", headers=h(token)).json()
                if body.get("gross_notional"):
                    break
                time.sleep(0.1)
            assert body["gross_notional"] == pytest.approx(15_500.0)
            assert set(body["assets"]) == {"BTC"}
            liq = client.get("/v1/portfolio/liquidation", headers=h(token)).json()
            assert liq["exchanges"]["binance"]["positions"][0]["exchange_liquidation_price"] == 12_500.0
        store.close()
