"""Service levels: the pure figures of `core.sla` and `GET /v1/sla` end to end on the real app."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.service_kit import ManualClock as Clock
from tests.service_kit import compose, issue_keys
from tradeguard.adapters.store.schema import webhook_deliveries
from tradeguard.core.sla import (
    STATES,
    BreakerChange,
    breaker_stats,
    histogram_quantile,
    parse_window,
    percentile,
    state_shares,
)
from tradeguard.errors import InputError
from tradeguard.service.app import create_app

T = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


# --- pure figures ------------------------------------------------------------------------------------


def test_state_shares_of_a_scripted_day():
    changes = [
        (T + 1 * H, "ACTIVE"),
        (T + 4 * H, "HALTED"),
        (T + 6 * H, "REDUCING"),
        (T + 7 * H, "ACTIVE"),
        (T + 12 * H, "HALTED"),  # after now: not seen
    ]
    shares = state_shares(None, changes, T, T + 10 * H)
    assert shares == pytest.approx({"ACTIVE": 0.6, "REDUCING": 0.1, "HALTED": 0.2, "unknown": 0.1})


def test_state_shares_start_from_the_state_in_force():
    assert state_shares("HALTED", [(T + H, "ACTIVE")], T, T + 4 * H) == pytest.approx(
        {"ACTIVE": 0.75, "REDUCING": 0.0, "HALTED": 0.25, "unknown": 0.0}
    )
    # a change before the window replaces the initial state; one at the start holds from it
    assert state_shares("HALTED", [(T - H, "REDUCING"), (T, "ACTIVE")], T, T + H)["ACTIVE"] == 1.0
    assert state_shares(None, [], T, T + H)["unknown"] == 1.0
    with pytest.raises(InputError, match="unknown trading state"):
        state_shares("PAUSED", [], T, T + H)
    with pytest.raises(InputError, match="end after it starts"):
        state_shares(None, [], T, T)


def _c(at, bid, kind, frm, to, reason, enforced=True):
    return BreakerChange(at, bid, kind, frm, to, reason, enforced)


def test_breaker_trips_and_time_to_reset():
    m = timedelta(minutes=1)
    changes = [
        _c(T - H, "dd", "drawdown", "closed", "open", "tripped"),  # the outage began before the window
        _c(T + H, "dd", "drawdown", "open", "half_open", "cooldown_elapsed"),
        _c(T + H + m, "dd", "drawdown", "half_open", "open", "probe_breached"),
        _c(T + 2 * H - m, "dd", "drawdown", "open", "half_open", "cooldown_elapsed"),
        _c(T + 2 * H, "dd", "drawdown", "half_open", "closed", "probe_healthy"),  # 3 h after the trip
        _c(T + 3 * H, "gd", "global_drawdown", "closed", "open", "tripped"),
        _c(T + 3.5 * H, "gd", "global_drawdown", "open", "closed", "manual_reset"),  # 30 min
        _c(T + 4 * H, "sh", "correlation", "closed", "open", "tripped", enforced=False),  # shadow
        _c(T + 5 * H, "rl", "rapid_loss", "open", "closed", "manual_reset"),  # start unknown
        _c(T + 9 * H, "dl", "daily_loss", "closed", "open", "tripped"),  # still open at now
        _c(T + 11 * H, "dl", "daily_loss", "open", "closed", "new_utc_day"),  # after now
    ]
    stats = breaker_stats(changes, T, T + 10 * H, ("drawdown", "correlation"))
    assert stats.trips_by_kind == {"drawdown": 1, "correlation": 0, "global_drawdown": 1, "daily_loss": 1}
    assert stats.trips == 3
    assert stats.resets == 2 and stats.mean_time_to_reset_s == pytest.approx((3 * 3600 + 1800) / 2)
    assert stats.manual_resets == 2
    empty = breaker_stats([], T, T + H)
    assert (empty.trips, empty.resets, empty.mean_time_to_reset_s, empty.manual_resets) == (0, 0, None, 0)


def test_percentiles():
    assert percentile([300.0, 100.0, 200.0], 0.95) == 300.0
    assert percentile(range(1, 101), 0.95) == 95
    assert percentile([], 0.95) is None
    inf = math.inf
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # from 0 within the first bucket
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.99, [(0.1, 1.0), (0.5, 1.0), (inf, 10.0)]) == 0.5  # the +Inf bucket
    assert histogram_quantile(0.99, [(0.1, 0.0), (inf, 0.0)]) is None
    with pytest.raises(InputError):
        histogram_quantile(0.99, [(0.1, 1.0)])


@pytest.mark.parametrize(("text", "hours"), [("1h", 1), ("24h", 24), ("7d", 168), ("30d", 720), ("90m", 1.5)])
def test_parse_window(text, hours):
    assert parse_window(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "0h", "24", "h", "1.5h", "-1h", "2w", "91d", "24 h", "2161h"])
def test_parse_window_refuses(text):
    with pytest.raises(InputError):
        parse_window(text)


_offsets = st.lists(st.integers(-10_000, 20_000), max_size=30).map(sorted)
_states = st.sampled_from(["ACTIVE", "REDUCING", "HALTED"])


@settings(max_examples=200, deadline=None)
@given(
    offsets=_offsets,
    states=st.lists(_states, min_size=30, max_size=30),
    initial=st.none() | _states,
    span=st.integers(1, 10_000),
    later=st.lists(_states, max_size=5),
)
def test_state_shares_properties(offsets, states, initial, span, later):
    start, now = T, T + timedelta(seconds=span)
    changes = [(T + timedelta(seconds=s), state) for s, state in zip(offsets, states, strict=False)]
    shares = state_shares(initial, changes, start, now)
    assert set(shares) == set(STATES)
    assert all(0.0 <= v <= 1.0 for v in shares.values())
    assert math.fsum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    future = [(now + timedelta(seconds=i + 1), s) for i, s in enumerate(later)]
    kept = [c for c in changes if c[0] <= now]
    assert state_shares(initial, kept + future, start, now) == shares


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 600), st.sampled_from(["a", "b"]), st.sampled_from(["trip", "close", "probe"])
        ),
        max_size=40,
    ),
    span=st.integers(1, 10_000),
)
def test_breaker_stats_ignore_the_future(steps, span):
    moves = {
        ("closed", "trip"): ("open", "tripped"),
        ("half_open", "trip"): ("open", "probe_breached"),
        ("open", "probe"): ("half_open", "cooldown_elapsed"),
        ("half_open", "probe"): ("closed", "probe_healthy"),
        ("open", "close"): ("closed", "manual_reset"),
        ("half_open", "close"): ("closed", "manual_reset"),
    }
    state = {"a": "closed", "b": "closed"}
    changes, at = [], T - timedelta(seconds=3_000)
    for gap, bid, action in steps:
        at += timedelta(seconds=gap)
        move = moves.get((state[bid], action))
        if move is not None:
            changes.append(_c(at, bid, "drawdown", state[bid], *move))
            state[bid] = move[0]
    start, now = T, T + timedelta(seconds=span)
    stats = breaker_stats(changes, start, now)
    assert stats == breaker_stats([c for c in changes if c.at <= now], start, now)
    assert stats.mean_time_to_reset_s is None or stats.mean_time_to_reset_s >= 0
    assert stats.resets == sum(1 for c in changes if start <= c.at <= now and c.to_state == "closed")
    assert stats.trips == sum(1 for c in changes if start <= c.at <= now and c.to_state == "open")


# --- GET /v1/sla --------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path):
    config, store, engine, parts = compose(
        tmp_path,
        portfolio={"evaluate_every_s": 3600.0},  # no timer evaluations: the clock moves by hand only
    )
    clock = Clock(T)
    parts.guard.clock = clock
    app = create_app(config, engine, store, engine.metrics, portfolio=parts)
    keys = issue_keys(
        store,
        {
            "bot_a": ("alpha", "bot"),
            "read_a": ("alpha", "read"),
            "op_a": ("alpha", "operator"),
            "admin": ("ops", "admin"),
        },
    )
    with TestClient(app) as client:
        yield client, keys, clock, store
    store.close()


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def equity(i: int, value: float, ts: datetime) -> dict:
    return {
        "id": f"alpha-{i}",
        "type": "equity",
        "account": "alpha",
        "exchange": "binance",
        "bot": "ft1",
        "ts": ts.isoformat(),
        "payload": {"total_equity": value, "currency": "USDT"},
    }


def test_sla_after_a_trip_and_a_manual_reset(api):
    client, keys, clock, _ = api
    s = timedelta(seconds=1)
    r = client.post("/v1/events", json={"events": [equity(1, 10_000, T - 60 * s)]}, headers=h(keys["bot_a"]))
    assert r.status_code == 202  # first evaluation at T: ACTIVE
    clock.now = T + 100 * s
    r = client.post("/v1/events", json={"events": [equity(2, 7_500, T - 30 * s)]}, headers=h(keys["bot_a"]))
    assert r.status_code == 202  # 25% down at T+100 s: global_drawdown (manual) trips, HALTED
    assert client.get("/v1/trading-state", headers=h(keys["read_a"])).json()["state"] == "HALTED"
    clock.now = T + 650 * s
    r = client.post("/v1/events", json={"events": [equity(3, 10_000, T)]}, headers=h(keys["bot_a"]))
    assert r.status_code == 202  # recovered, but the manual breaker stays open
    clock.now = T + 700 * s
    reset = client.post("/v1/breakers/global_drawdown/reset", headers=h(keys["op_a"]))
    assert reset.status_code == 200 and reset.json()["breaker"]["state"] == "closed"
    after_reset = client.get("/v1/trading-state", headers=h(keys["read_a"])).json()["state"]
    assert after_reset in ("ACTIVE", "REDUCING")
    clock.now = T + 1_300 * s

    r = client.get("/v1/sla", params={"window": "1h"}, headers=h(keys["read_a"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["account"] == "alpha" and body["window"] == "1h"
    assert datetime.fromisoformat(body["to"]) == clock.now
    assert datetime.fromisoformat(body["from"]) == clock.now - H
    shares = body["trading_state"]
    expected = {"unknown": 2_300, "ACTIVE": 100, "HALTED": 600, "REDUCING": 0}
    expected[after_reset] += 600
    assert shares == pytest.approx({k: v / 3_600 for k, v in expected.items()})
    trips = body["breaker_trips"]
    assert trips["total"] >= 1 and trips["by_kind"]["global_drawdown"] == 1
    assert trips["total"] == sum(trips["by_kind"].values())
    assert body["mean_time_to_reset_s"] == pytest.approx(600.0) and body["manual_resets"] == 1
    assert body["webhooks"] == {
        "deliveries": 0,
        "pending": 0,
        "succeeded": 0,
        "failed": 0,
        "dead": 0,
        "success_rate": None,
        "p95_latency_ms": None,
    }
    api_levels = body["api"]
    assert api_levels["requests"] >= 6 and api_levels["p99_latency_ms"] > 0

    # a window that ends before anything happened: all unknown, nothing to average
    clock.now = T - H
    early = client.get("/v1/sla", headers=h(keys["read_a"])).json()
    assert early["window"] == "24h" and early["trading_state"]["unknown"] == 1.0
    assert early["breaker_trips"]["total"] == 0 and early["mean_time_to_reset_s"] is None


def test_sla_open_outage_from_before_the_window(api):
    client, keys, clock, _ = api
    client.post("/v1/events", json={"events": [equity(1, 10_000, T - 2 * H)]}, headers=h(keys["bot_a"]))
    clock.now = T + 60 * timedelta(seconds=1)
    client.post("/v1/events", json={"events": [equity(2, 7_000, T)]}, headers=h(keys["bot_a"]))
    clock.now = T + 3 * H  # tripped at T+60 s, reset 3 h later, outside a 1h window's start
    client.post("/v1/events", json={"events": [equity(3, 10_000, clock.now)]}, headers=h(keys["bot_a"]))
    assert client.post("/v1/breakers/global_drawdown/reset", headers=h(keys["op_a"])).status_code == 200
    body = client.get("/v1/sla", params={"window": "1h"}, headers=h(keys["read_a"])).json()
    assert body["breaker_trips"]["by_kind"]["global_drawdown"] == 0  # the trip was before the window
    assert body["manual_resets"] == 1
    assert body["mean_time_to_reset_s"] == pytest.approx(3 * 3600 - 60)
    assert body["trading_state"]["unknown"] == 0.0 and body["trading_state"]["HALTED"] == 1.0


def test_sla_webhook_deliveries(api):
    client, keys, _, store = api
    hooks = client.app.state.webhooks.store
    hook = hooks.create("alpha", "http://127.0.0.1:9/hook", ["risk.kill_switch"], now=T)
    rows = [
        ("succeeded", 100.0, T - 10 * H),
        ("succeeded", 300.0, T - 2 * H),
        ("succeeded", 200.0, T - H),
        ("dead", None, T - H),
        ("failed", None, T - H),
        ("pending", None, T - H),
        ("succeeded", 9_000.0, T - 30 * H),  # before the window
    ]
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(webhook_deliveries),
            [
                {
                    "id": f"msg_{i}",
                    "webhook_id": hook.id,
                    "account": "alpha",
                    "audit_seq": i,
                    "event_type": "risk.kill_switch",
                    "status": status,
                    "attempts": 1,
                    "next_attempt_at": None,  # parked: the worker leaves them alone
                    "created_at": created,
                    "delivered_at": created if latency else None,
                    "latency_ms": latency,
                }
                for i, (status, latency, created) in enumerate(rows, start=1)
            ],
        )
    body = client.get("/v1/sla", headers=h(keys["read_a"])).json()
    assert body["webhooks"] == {
        "deliveries": 6,
        "pending": 1,
        "succeeded": 3,
        "failed": 1,
        "dead": 1,
        "success_rate": pytest.approx(0.75),
        "p95_latency_ms": 300.0,
    }
    admin = client.get("/v1/sla", params={"account": "beta"}, headers=h(keys["admin"])).json()
    assert admin["account"] == "beta" and admin["webhooks"]["deliveries"] == 0


def test_sla_tenancy_and_bad_windows(api):
    client, keys, _, _ = api
    assert client.get("/v1/sla").status_code == 401
    r = client.get("/v1/sla", params={"account": "beta"}, headers=h(keys["read_a"]))
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/sla", params={"account": "beta"}, headers=h(keys["admin"])).status_code == 200
    for window in ("abc", "0h", "91d", "1.5h", "x" * 40):
        r = client.get("/v1/sla", params={"window": window}, headers=h(keys["read_a"]))
        assert r.status_code == 422, window
        assert r.headers["content-type"] == "application/problem+json"
        assert "window" in r.json()["detail"]
