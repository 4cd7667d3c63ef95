"""The portfolio guard end to end in-process: events in, readings, breakers, trading state, actions, audit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tradeguard.adapters.actions import ActionOutcome, TripContext
from tradeguard.adapters.markets import BaseAssetResolver
from tradeguard.adapters.store.guard_state import FLEET, GuardState, breaker_states, kill_switches
from tradeguard.core.events import Event
from tradeguard.core.trading_state import TradingState
from tradeguard.guards.portfolio import EquityPath, PortfolioGuard, PortfolioPolicy

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def append(self, event_type: str, account: str, payload: dict[str, Any], now: datetime) -> None:
        self.records.append((event_type, account, payload))

    def types(self) -> list[str]:
        return [r[0] for r in self.records]


class RecordingAction:
    name = "record"

    def __init__(self) -> None:
        self.trips: list[TripContext] = []

    async def run(self, trip: TripContext) -> ActionOutcome:
        self.trips.append(trip)
        return ActionOutcome(self.name, True, 1, "recorded", None)


@pytest.fixture
def state(tmp_path) -> GuardState:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'g.db'}")
    breaker_states.metadata.create_all(engine, tables=[breaker_states, kill_switches])
    return GuardState(engine)


def guard(
    state: GuardState, clock: Clock, audit: Audit | None = None, actions=None, **kw: Any
) -> PortfolioGuard:
    return PortfolioGuard(
        kw.pop("policy", PortfolioPolicy()),
        state,
        clock,
        base_asset=BaseAssetResolver(),
        audit=audit,
        actions=actions or {},
        **kw,
    )


n = 0


def event(
    type_: str,
    payload: dict[str, Any],
    ts: datetime,
    account: str = "acme",
    exchange: str = "binance",
    bot: str = "b1",
) -> Event:
    global n
    n += 1
    return Event.model_validate(
        {
            "id": f"e{n}",
            "type": type_,
            "account": account,
            "exchange": exchange,
            "bot": bot,
            "ts": ts.isoformat(),
            "payload": payload,
        }
    )


def equity(value: float, ts: datetime, **kw: Any) -> Event:
    return event("equity", {"total_equity": value, "currency": "USDT"}, ts, **kw)


def position(symbol: str, side: str, contracts: float, mark: float, **extra: Any) -> dict[str, Any]:
    return {"symbol": symbol, "side": side, "contracts": contracts, "markPrice": mark, **extra}


def run(coro):
    return asyncio.run(coro)


def test_equity_path_keeps_time_order_through_growth_and_trims():
    path = EquityPath(capacity=4)
    for t_ns, value in [(10, 1.0), (30, 3.0), (20, 2.0), (40, 4.0), (30, 3.5), (5, 0.5), (50, 5.0)]:
        path.set(t_ns, value)  # out of order, one instant twice (the later value wins), past the capacity
    assert path.times_ns.tolist() == [5, 10, 20, 30, 40, 50]
    assert path.values.tolist() == [0.5, 1.0, 2.0, 3.5, 4.0, 5.0]
    path.trim(25)  # keeps 20: the equity in force at the cutoff
    assert path.times_ns.tolist() == [20, 30, 40, 50]
    for i in range(100):
        path.set(100 + i, float(i))
    path.set(45, 4.5)
    assert len(path) == 105 and path.times_ns.tolist() == [20, 30, 40, 45, 50, *range(100, 200)]
    assert path.values[:5].tolist() == [2.0, 3.5, 4.0, 4.5, 5.0] and path.values[-1] == 99.0
    path.trim(1_000)
    assert path.times_ns.tolist() == [199] and path.values.tolist() == [99.0]


def test_fleet_leverage_adds_up_across_venues(state):
    clock = Clock()
    g = guard(state, clock)
    events = [
        equity(5_000, T0, exchange="binance"),
        equity(5_000, T0, exchange="bybit"),
        event(
            "positions",
            {"positions": [position("BTC/USDT:USDT", "long", 0.5, 60_000)]},
            T0,
            exchange="binance",
        ),
        event(
            "positions", {"positions": [position("ETH/USDT:USDT", "long", 10, 3_000)]}, T0, exchange="bybit"
        ),
    ]
    run(g.on_events(events))
    report = g.risk["acme"].exposure.accounts["acme"]
    assert report.total_equity == 10_000 and report.gross_notional == 60_000
    assert report.leverage == pytest.approx(6.0)
    assert set(report.assets) == {"BTC", "ETH"}
    assert g.risk["acme"].trading.state == TradingState.ACTIVE


def test_drawdown_trips_breakers_halts_runs_actions_and_audits(state):
    clock, audit, action = Clock(), Audit(), RecordingAction()
    g = guard(state, clock, audit, {"acme": [action]})

    async def scenario() -> None:
        for i, value in enumerate([10_000, 10_200, 9_800, 9_000, 8_100]):
            clock.now = T0 + timedelta(hours=i)
            await g.on_events([equity(value, clock.now)])
        await asyncio.sleep(0.05)  # let the trip actions run

    run(scenario())
    risk = g.risk["acme"]
    assert risk.readings["drawdown"] == pytest.approx((10_200 - 8_100) / 10_200 * 100)
    assert risk.breakers["drawdown"].state == "open" and risk.breakers["global_drawdown"].state == "open"
    assert risk.trading.state == TradingState.HALTED  # global drawdown breaker is manual-reset: halts
    assert {t.breaker_id for t in action.trips} >= {"drawdown", "global_drawdown"}
    types = audit.types()
    assert types.count("risk.breaker.transition") >= 2 and "risk.drawdown_alert" in types
    assert "risk.portfolio_check" in types and "risk.breaker.action" in types


def test_breaker_state_survives_a_restart_and_resets_by_hand(state):
    clock = Clock()
    g = guard(state, clock)
    clock.now = T0 + timedelta(minutes=5)
    run(g.on_events([equity(10_000, T0), equity(7_000, clock.now)]))
    assert g.risk["acme"].breakers["global_drawdown"].state == "open"
    clock.now += timedelta(days=2)
    again = guard(state, clock)  # a new process: state comes from the store
    assert again.breakers["acme"]["global_drawdown"].state == "open"
    reset = run(again.reset_breaker("acme", "global_drawdown", by="ops"))
    assert reset.state == "closed"
    with pytest.raises(KeyError):
        run(again.reset_breaker("acme", "nope", by="ops"))


def test_restored_breakers_take_the_thresholds_configured_now(state):
    clock = Clock()
    g = guard(state, clock)
    clock.now = T0 + timedelta(minutes=5)
    run(g.on_events([equity(10_000, T0), equity(8_000, clock.now)]))  # 20 %: the drawdown breaker opens
    assert g.breakers["acme"]["drawdown"].state == "open" and g.breakers["acme"]["drawdown"].threshold == 15
    policy = PortfolioPolicy(thresholds={"drawdown": 25.0}, shadow=frozenset({"drawdown"}))
    restarted = guard(state, clock, policy=policy)  # the operator loosened it and restarted
    drawdown = restarted.breakers["acme"]["drawdown"]
    assert drawdown.threshold == 25.0 and drawdown.shadow and drawdown.state == "open"  # state kept
    back = guard(state, clock).breakers["acme"]["drawdown"]
    assert back.threshold == 15.0 and not back.shadow


def test_kill_switch_for_an_account_and_the_fleet(state):
    clock, audit = Clock(), Audit()
    g = guard(state, clock, audit)
    run(g.on_events([equity(1_000, T0, account="a"), equity(1_000, T0, account="b")]))
    run(g.set_kill_switch("a", True, "maintenance", by="ops"))
    assert (
        g.risk["a"].trading.state == TradingState.HALTED and g.risk["b"].trading.state == TradingState.ACTIVE
    )
    run(g.set_kill_switch(FLEET, True, "exchange incident", by="admin"))
    assert g.risk["b"].trading.state == TradingState.HALTED
    run(g.set_kill_switch(FLEET, False, None, by="admin"))
    run(g.set_kill_switch("a", False, None, by="ops"))
    assert g.risk["a"].trading.state == TradingState.ACTIVE
    assert audit.types().count("risk.kill_switch") == 4


def test_a_kill_switch_set_by_another_instance_halts_after_a_refresh(state, tmp_path):
    clock = Clock()
    g = guard(state, clock)
    run(g.on_events([equity(1_000, T0, account="a"), equity(1_000, T0, account="b")]))
    other = GuardState(sa.create_engine(f"sqlite:///{tmp_path / 'g.db'}"))  # another process, same store
    other.set_kill_switch("b", True, "desk decision", "ops", T0)
    assert g.risk["b"].trading.state == TradingState.ACTIVE  # not seen before a refresh
    run(g.refresh_kill_switches())
    assert g.risk["b"].trading.state == TradingState.HALTED  # re-evaluated on the refresh
    assert g.risk["a"].trading.state == TradingState.ACTIVE
    assert g.kill_switches.get("b").reason == "desk decision"


def test_changes_of_state_are_written_at_once_and_readings_behind(state):
    clock = Clock()
    g = guard(state, clock, readings_flush_s=3_600)

    def stored(kind: str) -> dict[str, Any]:
        return state.load_breakers("acme")["acme"][kind]

    async def scenario() -> None:
        await g.on_events([equity(10_000, T0)])  # new breakers get their first readings: written behind
        await wait_for(lambda: "acme" in state.load_breakers())
        assert stored("drawdown")["last_value"] == 0.0
        clock.now = T0 + timedelta(minutes=1)
        # 1 % down: a new reading, no change of state; and account b's first readings
        await g.on_events([equity(9_900, clock.now), equity(5_000, clock.now, account="b")])
        assert g.breakers["acme"]["drawdown"].last_value == pytest.approx(1.0)
        await asyncio.sleep(0.05)
        assert stored("drawdown")["last_value"] == 0.0  # the next flush is an hour away
        assert "b" not in state.load_breakers()
        clock.now = T0 + timedelta(minutes=2)
        await g.on_events([equity(8_000, clock.now)])  # 20 % down: breakers trip, written before it returns
        assert stored("drawdown")["state"] == "open" and stored("drawdown")["last_value"] == pytest.approx(
            20.0
        )
        assert stored("rapid_loss")["state"] == "open"
        assert state.load_breakers("b")["b"]["drawdown"]["last_value"] == 0.0  # the queue went along

    run(scenario())


async def wait_for(condition, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_liquidation_proximity_trips_the_distance_breaker(state):
    clock, audit = Clock(), Audit()
    g = guard(state, clock, audit)
    near = position(
        "BTC/USDT:USDT",
        "long",
        1.0,
        30_000,
        entryPrice=31_000,
        marginMode="isolated",
        leverage=20,
        collateral=1_550,
        unrealizedPnl=-1_000,
        liquidationPrice=29_500,
    )
    run(g.on_events([equity(10_000, T0), event("positions", {"positions": [near]}, T0)]))
    risk = g.risk["acme"]
    assert risk.readings["liquidation_distance"] < 5
    assert risk.breakers["liquidation_distance"].state == "open"
    assert risk.trading.state == TradingState.REDUCING
    assert "risk.liquidation_proximity" in audit.types()


def test_correlated_strategies_trip_the_correlation_breaker(state):
    clock = Clock()
    g = guard(state, clock)
    events = []
    for i in range(120):
        end = T0 + timedelta(minutes=15 * (i + 1))
        r = 0.01 if i % 3 else -0.012
        for strategy in ("trend", "breakout"):
            events.append(
                event(
                    "strategy_return",
                    {
                        "strategy": strategy,
                        "period_end": end.isoformat(),
                        "return": r + (0.0001 if strategy == "trend" else 0),
                    },
                    end,
                )
            )
    clock.now = T0 + timedelta(minutes=15 * 121)
    run(g.on_events(events))
    risk = g.risk["acme"]
    assert risk.readings["correlation"] == pytest.approx(1.0, abs=1e-6)
    assert risk.breakers["correlation"].state == "open"


def test_snapshots_audit_exposure_and_correlation(state):
    clock, audit = Clock(), Audit()
    g = guard(state, clock, audit)
    events = [equity(10_000, T0)]
    for i in range(60):
        end = T0 + timedelta(minutes=15 * (i + 1))
        for strategy, sign in (("a", 1), ("b", -1)):
            events.append(
                event(
                    "strategy_return",
                    {
                        "strategy": strategy,
                        "period_end": end.isoformat(),
                        "return": sign * (0.01 if i % 2 else -0.005),
                    },
                    end,
                )
            )
    clock.now = T0 + timedelta(minutes=15 * 61)
    events.append(equity(10_000, clock.now))  # a venue heard from recently (else it is stale, left out)
    run(g.on_events(events))
    run(g.snapshot("acme"))
    snap = next(p for t, _, p in audit.records if t == "risk.aggregate_snapshot")
    assert snap["exposure"]["total_equity"] == 10_000
    assert snap["trading_state"] == "REDUCING"  # |correlation| 1 >= 0.9 trips the correlation breaker
    matrix = next(p for t, _, p in audit.records if t == "risk.correlation_matrix")
    assert matrix["current"]["a"]["b"] == pytest.approx(-1.0)
