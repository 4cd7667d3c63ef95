"""POST /v1/orders/check over HTTP, composed as `serve` composes it, against a local fake Binance: the
contract, tenancy, bad input, and the Python client end to end."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.fake_binance import DAY_MS, FakeBinance
from tests.service_kit import serving
from tradeguard.client import TradeguardClient
from tradeguard.core.order_check import CHECKS

ORDER = {
    "account": "alpha",
    "bot": "ft1",
    "exchange": "binance",
    "symbol": "BTC/USDT",
    "side": "buy",
    "amount": 0.01,
    "price": None,
    "type": "market",
    "mode": "paper",
}


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("orders")
    now_ms = int(time.time() * 1000)
    with FakeBinance(now_ms=now_ms, start_ms=now_ms - 200 * DAY_MS) as fake:
        venues = {"binance": {"api_url": fake.url, "use_websocket": False}}
        with serving(tmp, with_orders=True, orders={"venues": venues}) as served:
            yield served


def post(url: str, token: str | None, body: dict):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/v1/orders/check", json=body, headers=headers, timeout=10)


def test_the_decision_follows_the_contract(service):
    url, keys = service
    r = post(url, keys["bot_a"], ORDER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "decision",
        "allowed_amount",
        "retry_after_ms",
        "reasons",
        "checks",
        "var",
        "trading_state",
        "evaluated_at",
        "latency_ms",
    }
    assert list(body["checks"]) == list(CHECKS)
    assert all(set(c) == {"status", "value", "limit"} for c in body["checks"].values())
    assert set(body["var"]) == {
        "before_pct",
        "after_pct",
        "limit_pct",
        "confidence",
        "horizon_days",
        "scenarios",
    }
    assert all(set(r) == {"code", "check", "message"} for r in body["reasons"])
    # no equity was ever reported for alpha: VaR cannot run; a paper order goes on with the error listed
    assert body["decision"] == "allow" and body["checks"]["var"]["status"] == "error"
    assert [r["code"] for r in body["reasons"]] == ["check_error:var"]
    live = post(url, keys["bot_a"], ORDER | {"mode": "live"}).json()
    assert live["decision"] == "block" and live["allowed_amount"] == 0


def test_a_bot_key_checks_only_its_own_account(service):
    url, keys = service
    r = post(url, keys["bot_b"], ORDER)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert post(url, keys["read_a"], ORDER).status_code == 403  # read keys cannot check orders
    assert post(url, None, ORDER).status_code == 401
    assert post(url, keys["admin"], ORDER).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "limit"}, "price"),  # a limit order without a price
        ({"price": 30_000.0}, "price"),  # a market order with one
        ({"amount": -1}, "amount"),
        ({"side": "long"}, "side"),
        ({"mode": "real"}, "mode"),
        ({"extra": 1}, "extra"),
    ],
)
def test_malformed_orders_are_422_problems(service, change, field):
    url, keys = service
    r = post(url, keys["bot_a"], ORDER | change)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert field in r.text


def test_unreadable_bodies_and_missing_keys_are_problems_and_the_schema_is_published(service):
    url, keys = service
    auth = {"Authorization": f"Bearer {keys['bot_a']}", "Content-Type": "application/json"}
    r = httpx.post(f"{url}/v1/orders/check", content=b"{not json", headers=auth)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][0] == "body"
    assert httpx.post(f"{url}/v1/orders/check", content=b"{not json").status_code == 401  # key first
    operation = httpx.get(f"{url}/openapi.json").json()["paths"]["/v1/orders/check"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"account", "bot", "symbol", "side", "amount", "type", "mode"} <= set(schema["required"])


def test_the_python_client_checks_orders_end_to_end(service):
    url, keys = service
    with TradeguardClient(url, api_key=keys["bot_a"], on_unavailable="block") as client:
        decision = client.check_order(ORDER | {"bot": "ft2"})
        assert decision.source == "service" and decision.decision == "allow"
        assert decision.checks["instrument"].status == "pass"
        assert decision.checks["prices"].value == pytest.approx(30_000.0)
