"""The order guard in-process, composed as `serve` composes it (kernel build_portfolio + build_orders),
reading a local fake Binance through ccxt: every check, the decision rules, and fault injection for
fail-closed live orders and fail-open paper orders (each dependency made to really fail)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from tests.fakes.fake_binance import DAY_MS, FakeBinance
from tests.service_kit import ScriptedFeed, make_frames
from tradeguard.adapters.bus.nats_intake import NatsIntake
from tradeguard.adapters.store import Store
from tradeguard.adapters.store.guard_state import KillSwitchCache
from tradeguard.core.events import Event
from tradeguard.core.order_check import CHECKS, OrderRequest
from tradeguard.core.var import var_of_pnl
from tradeguard.service.app import PortfolioParts
from tradeguard.service.engine import Engine
from tradeguard.service.kernel import build_orders, build_portfolio
from tradeguard.service.metrics import Metrics
from tradeguard.service.settings import Settings

SAFE = [{"pair": "BTC/USDT", "safe_to_trade": True, "stale": False, "blocked_by": []}]
n = 0


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fake():
    now = int(time.time() * 1000)
    with FakeBinance(now_ms=now, start_ms=now - 200 * DAY_MS) as server:
        yield server


def event(type_: str, payload: dict[str, Any], *, account: str = "acme", bot: str = "b1", ts=None) -> Event:
    global n
    n += 1
    return Event.model_validate(
        {
            "id": f"e{n}",
            "type": type_,
            "account": account,
            "exchange": "binance",
            "bot": bot,
            "ts": (ts or datetime.now(UTC)).isoformat(),
            "payload": payload,
        }
    )


def portfolio_events(equity: float = 100_000.0, btc: float = 1.0, account: str = "acme") -> list[Event]:
    """Equity and one BTC perpetual position worth `btc` x 30,000."""
    positions = [
        {
            "symbol": "BTC/USDT:USDT",
            "side": "long",
            "contracts": btc,
            "markPrice": 30_000.0,
            "entryPrice": 30_000.0,
            "leverage": 2.0,
            "marginMode": "cross",
        }
    ]
    return [
        event("equity", {"total_equity": equity, "currency": "USDT"}, account=account),
        event("positions", {"positions": positions}, account=account),
    ]


def order(**fields: Any) -> OrderRequest:
    base = {
        "account": "acme",
        "bot": "b1",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "side": "buy",
        "amount": 0.01,
        "price": None,
        "type": "market",
        "mode": "live",
    }
    return OrderRequest.model_validate(base | fields)


def run(
    tmp_path,
    fake: FakeBinance,
    body: Callable[[PortfolioParts], Awaitable[None]],
    *,
    views: list[dict[str, Any]] | None = SAFE,
    orders: dict[str, Any] | None = None,
    **settings: Any,
) -> None:
    """Build the guards as the kernel does, with portfolio events for acme, and run `body` in one loop."""
    config = Settings.load(
        store_url=f"sqlite:///{tmp_path / 'o.db'}",
        external={"enabled": False},
        audit={"key_file": tmp_path / "audit.pem"},
        orders={"venues": {"binance": {"api_url": fake.url, "use_websocket": False}}} | (orders or {}),
        **settings,
    )
    store = Store.open(config.store_url)
    engine = Engine(config, ScriptedFeed(make_frames()), store, Metrics())
    parts = build_portfolio(config, store)
    parts.orders = build_orders(config, parts, engine)
    if views is not None:
        parts.orders.guard.market_view = lambda _symbol: views

    async def go() -> None:
        try:
            await parts.apply(portfolio_events())
            await body(parts)
        finally:
            await parts.orders.venues.close()

    try:
        asyncio.run(go())
    finally:
        store.close()


def reasons(decision) -> list[str]:
    return [r.code for r in decision.reasons]


# --- the checks -------------------------------------------------------------------------------------------


def test_an_ordinary_order_is_allowed_with_every_check_reported_and_audited(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        d = await guard.check(order())
        assert d.decision == "allow" and d.allowed_amount == 0.01 and d.reasons == []
        assert list(d.checks) == list(CHECKS)
        # no bus or Redis configured; a first market order has no size baseline
        skipped = {"bus", "redis", "anomaly"}
        assert {k for k, c in d.checks.items() if c.status == "pass"} == set(CHECKS) - skipped
        assert {k for k, c in d.checks.items() if c.status == "skipped"} == skipped
        assert d.checks["prices"].value == pytest.approx(30_000.0)  # mid of the fake's book
        assert (
            d.checks["notional_cap"].value == pytest.approx(300.0) and d.checks["notional_cap"].limit == 1000
        )
        assert d.trading_state == "ACTIVE" and d.latency_ms > 0
        # VaR: 1 BTC (30,000) on 100,000 equity, then with +300 of BTC; checked against the scenarios
        scenarios = guard._scenarios[1]
        btc = scenarios.column("BTC")
        assert d.var.scenarios == 10_000 and d.var.limit_pct == 15.0 and d.var.confidence == 0.95
        assert d.var.before_pct == pytest.approx(var_of_pnl(btc * 30_000, 0.95) / 1000)
        assert d.var.after_pct == pytest.approx(var_of_pnl(btc * 30_300, 0.95) / 1000)
        await parts.orders.audit_queue.flush()
        records = parts.audit_log.query(account="acme", type="risk.order_decision")
        assert len(records) == 1 and records[0]["payload"]["decision"] == "allow"
        assert records[0]["payload"]["order"]["symbol"] == "BTC/USDT"

    run(tmp_path, fake, body)


def test_kill_switch_blocks_all_but_reduce_only(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        await parts.guard.set_kill_switch("acme", True, "incident 42", "ops")
        d = await parts.orders.guard.check(order())
        assert d.decision == "block" and reasons(d) == ["kill_switch_engaged"]
        assert "incident 42" in d.reasons[0].message and d.trading_state is None
        assert d.checks["instrument"].status == "skipped"
        exit_ = await parts.orders.guard.check(order(side="sell", reduce_only=True))
        assert exit_.decision == "allow" and exit_.checks["var"].status == "skipped"
        await parts.guard.set_kill_switch("*", False, None, "ops")
        await parts.guard.set_kill_switch("acme", False, None, "ops")
        assert (await parts.orders.guard.check(order())).decision == "allow"

    run(tmp_path, fake, body)


def test_reducing_state_lets_only_exposure_reducing_orders_out(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        await parts.apply([event("equity", {"total_equity": 88_000.0, "currency": "USDT"})])
        assert parts.guard.risk["acme"].trading.state == "REDUCING"
        guard = parts.orders.guard
        buy = await guard.check(order())
        assert buy.decision == "block" and reasons(buy) == ["trading_reducing"]
        # a limit sell of 0.5 BTC against the 1 BTC long reduces exposure: it goes out without price checks
        sell = await guard.check(order(side="sell", amount=0.5, type="limit", price=30_000.0))
        assert sell.decision == "allow" and sell.checks["trading_state"].status == "pass"
        assert sell.checks["var"].status == "skipped" and sell.checks["daily_loss"].status == "pass"
        # a sell larger than the long would flip it short: new exposure
        flip = await guard.check(order(side="sell", amount=2.0, type="limit", price=30_000.0))
        assert flip.decision == "block" and reasons(flip) == ["trading_reducing"]

    run(tmp_path, fake, body)


def test_instrument_metadata_from_ccxt(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        unknown = await guard.check(order(symbol="NOPE/USDT"))
        assert unknown.decision == "block" and reasons(unknown) == ["unknown_instrument"]
        off_step = await guard.check(order(amount=0.0123456))  # step 0.00001
        assert off_step.decision == "reduce" and off_step.allowed_amount == pytest.approx(0.01234)
        assert reasons(off_step) == ["amount_precision"]
        tiny = await guard.check(order(amount=0.000001))
        assert tiny.decision == "block" and reasons(tiny) == ["amount_precision"]
        off_tick = await guard.check(order(type="limit", price=30_000.005))  # tick 0.01
        assert off_tick.decision == "block" and reasons(off_tick) == ["price_precision"]
        exchange = await guard.check(order(exchange="nosuchexchange"))
        assert reasons(exchange) == ["unknown_exchange"]

    run(tmp_path, fake, body)


def test_rate_limit_delays_and_only_allowed_orders_count(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        for _ in range(5):  # blocked orders give their token back
            assert (await guard.check(order(symbol="NOPE/USDT"))).decision == "block"
        decisions = [await guard.check(order(amount=0.001)) for _ in range(11)]
        assert [d.decision for d in decisions[:10]] == ["allow"] * 10
        late = decisions[10]
        assert late.decision == "delay" and reasons(late) == ["rate_limited"] and late.allowed_amount == 0
        assert 0 < late.retry_after_ms <= 1000
        other_bot = await guard.check(order(amount=0.001, bot="b2"))
        assert other_bot.decision == "allow"

    run(tmp_path, fake, body, orders={"rate_limit_per_s": 1.0})


def test_cold_start_cap_reduces_to_fit_and_counts_the_bots_holdings(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        big = await guard.check(order(amount=0.1))  # 3,000 of notional for a new bot capped at 1,000
        assert big.decision == "reduce" and reasons(big) == ["notional_cap_exceeded"]
        assert big.allowed_amount == pytest.approx(0.03333)  # 1,000 / 30,000 truncated to the step
        trade = {"symbol": "BTC/USDT", "side": "buy", "amount": 0.03, "price": 30_000.0}
        await parts.apply([event("trade", trade | {"closed_at": datetime.now(UTC).isoformat()})])
        more = await guard.check(order(amount=0.01))  # holds 900: 100 of room
        assert more.decision == "reduce" and more.allowed_amount == pytest.approx(0.00333)
        exit_ = await guard.check(order(side="sell", amount=0.02))  # an exit is never capped
        assert exit_.decision == "allow" and exit_.checks["notional_cap"].status == "skipped"

    run(tmp_path, fake, body)


def test_a_proven_bot_earns_the_higher_cap(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        now = datetime.now(UTC)
        returns = [
            event(
                "strategy_return",
                {"strategy": "s", "period_end": (now - timedelta(days=d)).isoformat(), "return": r},
                ts=now - timedelta(days=d),
            )
            for d, r in zip(range(20, 0, -1), [0.01, 0.002] * 10, strict=True)
        ]
        await parts.apply(returns)
        d = await parts.orders.guard.check(order(amount=0.1))
        assert d.decision == "allow" and d.checks["notional_cap"].limit == 10_000

    run(tmp_path, fake, body)


def test_anomalous_amount_and_limit_price_are_blocked(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        for _ in range(5):
            assert (await guard.check(order(amount=0.001))).decision == "allow"
        fat = await guard.check(order(amount=0.004))
        assert fat.decision == "block" and reasons(fat) == ["amount_anomaly"]
        assert fat.checks["anomaly"].value == pytest.approx(4.0)
        closes = await guard.venues("binance").data.hourly_closes("BTC/USDT")
        sigma = float(np.std(np.diff(np.log(closes)), ddof=1))
        far = round(30_000.0 * float(np.exp(6 * sigma)), 2)
        wild = await guard.check(order(amount=0.001, type="limit", price=far))
        assert wild.decision == "block" and reasons(wild) == ["price_anomaly"]
        assert wild.checks["anomaly"].value == pytest.approx(6.0, rel=1e-3)
        near = round(30_000.0 * float(np.exp(2 * sigma)), 2)
        assert (await guard.check(order(amount=0.001, type="limit", price=near))).decision == "allow"

    run(tmp_path, fake, body)


def test_market_guard_blocks_or_reduces_per_account_policy(tmp_path, fake):
    unsafe = [{"pair": "BTC/USDT", "safe_to_trade": False, "stale": False, "blocked_by": ["panic"]}]

    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        blocked = await guard.check(order())
        assert blocked.decision == "block" and reasons(blocked) == ["market_unsafe"]
        assert "panic" in blocked.reasons[0].message
        await parts.apply(portfolio_events(account="calm"))
        cut = await guard.check(order(account="calm", amount=0.02))
        assert cut.decision == "reduce" and cut.allowed_amount == pytest.approx(0.01)
        assert (await guard.check(order(side="sell", reduce_only=True))).decision == "allow"

    accounts = {"calm": {"market_guard_action": "reduce", "market_guard_fraction": 0.5}}
    run(tmp_path, fake, body, views=unsafe, orders={"accounts": accounts})


def test_stale_market_guard_fails_closed_live_and_open_paper(tmp_path, fake):
    stale = [
        {"pair": "BTC/USDT", "safe_to_trade": False, "stale": True, "data_age_s": 9000, "blocked_by": []}
    ]

    async def body(parts: PortfolioParts) -> None:
        live = await parts.orders.guard.check(order())
        assert live.decision == "block" and reasons(live) == ["check_error:market_guard"]
        paper = await parts.orders.guard.check(order(mode="paper"))
        assert paper.decision == "allow" and reasons(paper) == ["check_error:market_guard"]
        assert paper.checks["market_guard"].status == "error" and paper.checks["var"].status == "pass"

    run(tmp_path, fake, body, views=stale)


def test_var_limit_blocks_orders_that_push_it_over(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        await parts.apply(portfolio_events(equity=1_000.0, btc=0.02, account="tiny"))
        before = await guard.check(order(account="tiny", amount=0.001))
        assert before.decision == "allow"
        limit_pct = before.var.limit_pct
        assert limit_pct == 8.0  # tiny is conservative
        # find an amount whose VaR exceeds the limit: VaR is linear in a one-asset book
        per_btc = before.var.before_pct / 0.02
        amount = round((limit_pct / per_btc - 0.02) * 1.5, 4)
        over = await guard.check(order(account="tiny", amount=amount))
        assert over.decision == "block" and reasons(over) == ["var_limit_exceeded"]
        assert over.var.after_pct > limit_pct > over.var.before_pct
        # selling (de-risking) is fine whatever the VaR
        sell = await guard.check(order(account="tiny", side="sell", amount=0.01))
        assert sell.decision in ("allow", "reduce") and sell.checks["var"].status in ("pass", "skipped")

    accounts = {"tiny": {"risk_level": "conservative"}}
    run(tmp_path, fake, body, orders={"accounts": accounts, "caps": [1e9, 1e9, 1e9]})


def test_order_book_imbalance_reduces_and_adverse_microprice_delays(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        fake.set_book(
            "BTCUSDT", bids=[(29_999.0, 0.1), (29_998.0, 0.1)], asks=[(30_001.0, 0.8), (30_002.0, 0.4)]
        )
        heavy = await guard.check(order(amount=0.03))  # asks 1.2 vs bids 0.2: 6:1 against a buy
        assert heavy.decision == "reduce" and reasons(heavy) == ["book_imbalance"]
        assert heavy.allowed_amount == pytest.approx(0.03 / 6, abs=1e-5)
        fake.set_book("BTCUSDT", bids=[(29_999.0, 1.0)], asks=[(30_001.0, 1.0)])
        fake.set_last_price("BTCUSDT", 29_850.0)  # microprice 30,000 is 0.5% above the last trade
        await asyncio.sleep(0.35)  # the held book and last trade are now older than the age limit
        moving = await guard.check(order(amount=0.001))
        assert moving.decision == "delay" and reasons(moving) == ["book_microprice_adverse"]
        assert moving.retry_after_ms == 1000 and moving.allowed_amount == 0

    run(tmp_path, fake, body, orders={"book_max_age_s": 0.3})


# --- fault injection: each dependency really fails --------------------------------------------------------


def test_exchange_down_blocks_live_orders_and_lets_paper_orders_through(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        assert (await guard.check(order())).decision == "allow"  # metadata and history now cached
        fake.stop()
        await asyncio.sleep(0.35)
        live = await guard.check(order())
        assert live.decision == "block" and reasons(live) == ["check_error:prices"]
        assert live.checks["prices"].status == "error" and live.checks["var"].status == "skipped"
        paper = await guard.check(order(mode="paper"))
        assert paper.decision == "allow" and reasons(paper) == ["check_error:prices"]
        # exits never need prices
        assert (await guard.check(order(side="sell", reduce_only=True))).decision == "allow"

    run(tmp_path, fake, body, orders={"book_max_age_s": 0.3})


def test_store_failure_blocks_live_orders_and_loses_no_decision(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard, queue = parts.orders.guard, parts.orders.audit_queue
        # no refresher runs here: keep the kill switch view fresh (its own failure is the next test)
        parts.guard.kill_switches = KillSwitchCache(parts.guard.state, clock=lambda: 0.0)
        parts.guard.kill_switches.refresh()
        other = sqlite3.connect(tmp_path / "o.db")
        other.execute("ALTER TABLE audit_log RENAME TO audit_log_away")  # the audit table is gone
        other.commit()
        try:
            assert (await guard.check(order(mode="paper"))).decision == "allow"
            with pytest.raises(Exception, match="no such table"):
                await queue.flush()
            live = await guard.check(order())
            assert live.decision == "block" and reasons(live) == ["check_error:store"]
            paper = await guard.check(order(mode="paper"))
            assert paper.decision == "allow" and reasons(paper) == ["check_error:store"]
            exit_ = await guard.check(order(side="sell", reduce_only=True))  # queued until the store is back
            assert exit_.decision == "allow" and reasons(exit_) == ["check_error:store"]
        finally:
            other.execute("ALTER TABLE audit_log_away RENAME TO audit_log")
            other.commit()
            other.close()
        await queue.flush()
        assert queue.health() is None
        records = parts.audit_log.query(account="acme", type="risk.order_decision")
        assert [r["payload"]["decision"] for r in records] == ["allow", "block", "allow", "allow"]
        assert parts.audit_log.verify().ok
        assert (await guard.check(order())).decision == "allow"

    run(tmp_path, fake, body)


def test_stale_kill_switch_view_blocks_live_orders(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        ticks = [time.monotonic()]
        cache = parts.guard.kill_switches = KillSwitchCache(parts.guard.state, clock=lambda: ticks[0])
        cache.refresh()
        other = sqlite3.connect(tmp_path / "o.db")
        other.execute("ALTER TABLE kill_switches RENAME TO kill_switches_away")  # the table is gone
        other.commit()
        try:
            with pytest.raises(Exception, match="no such table"):
                cache.refresh()
            ticks[0] += 10.0  # the refreshes kept failing for 10 s
            live = await guard.check(order())
            assert live.decision == "block" and reasons(live) == ["check_error:kill_switch"]
            paper = await guard.check(order(mode="paper"))
            assert paper.decision == "allow" and reasons(paper) == ["check_error:kill_switch"]
            exit_ = await guard.check(order(side="sell", reduce_only=True))
            assert exit_.decision == "allow" and reasons(exit_) == ["check_error:kill_switch"]
        finally:
            other.execute("ALTER TABLE kill_switches_away RENAME TO kill_switches")
            other.commit()
            other.close()
        cache.refresh()
        assert (await guard.check(order())).decision == "allow"

    run(tmp_path, fake, body)


def test_var_without_price_history_blocks_live_orders(tmp_path, fake):
    async def body(parts: PortfolioParts) -> None:
        doge = [
            {"symbol": "DOGE/USDT:USDT", "side": "long", "contracts": 1000.0, "markPrice": 0.1},
        ]
        await parts.apply([event("positions", {"positions": doge}, account="acme")])
        live = await parts.orders.guard.check(order())
        assert live.decision == "block" and reasons(live) == ["check_error:var"]
        assert "DOGE" in live.reasons[0].message
        paper = await parts.orders.guard.check(order(mode="paper"))
        assert paper.decision == "allow" and paper.var.before_pct is None

    run(tmp_path, fake, body)


def test_bus_down_blocks_live_orders(tmp_path, fake, unused_port):
    async def body(parts: PortfolioParts) -> None:
        intake = NatsIntake(f"nats://127.0.0.1:{unused_port}", parts.event_log, on_events=parts.apply)
        parts.orders.guard.bus = intake.status
        await intake.start()
        try:
            await asyncio.sleep(0.3)
            live = await parts.orders.guard.check(order())
            assert live.decision == "block" and reasons(live) == ["check_error:bus"]
            paper = await parts.orders.guard.check(order(mode="paper"))
            assert paper.decision == "allow" and reasons(paper) == ["check_error:bus"]
            exit_ = await parts.orders.guard.check(order(side="sell", reduce_only=True))
            assert exit_.decision == "allow" and reasons(exit_) == ["check_error:bus"]
        finally:
            await intake.stop()

    run(tmp_path, fake, body)
