"""Trip actions: the retrying runner, publishing, cancelling orders through the real ccxt against a fake
Binance, and pausing bots against a fake Freqtrade API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any

import pytest

from tests.fakes.fake_binance import DAY_MS
from tests.fakes.fake_binance_orders import FakeBinanceOrders
from tests.fakes.fake_freqtrade import STOPENTRY_STATUS, FakeFreqtrade
from tests.fakes.fixtures import FAKE_CCXT_CONFIG, FAKE_NOW_MS
from tradeguard.adapters.actions import (
    ActionError,
    ActionOutcome,
    ActionPolicy,
    CancelOpenOrders,
    PauseFreqtrade,
    PublishEvent,
    TripAction,
    TripContext,
    run_actions,
)
from tradeguard.adapters.status import Backoff
from tradeguard.errors import InputError

TRIP = TripContext(
    account="main",
    breaker_id="daily_drawdown",
    kind="drawdown",
    reason="daily drawdown 6.2 % > 5 %",
    at=datetime(2024, 1, 10, 12, 30, tzinfo=UTC),
    state="halted",
)
API_KEY = "test-key"
# ccxt's async close() sleeps timeout_on_exit ms (for TLS shutdown); nothing to wait for on local HTTP.
CCXT_CONFIG = {**FAKE_CCXT_CONFIG, "timeout_on_exit": 0}


class RecordingSleep:
    """An injectable sleep that returns at once and remembers the delays asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def policy(attempts: int = 3, timeout_s: float = 5.0) -> tuple[ActionPolicy, RecordingSleep]:
    sleep = RecordingSleep()
    backoff = Backoff(base_s=0.5, cap_s=4.0, jitter=False)
    return ActionPolicy(attempts=attempts, backoff=backoff, timeout_s=timeout_s, sleep=sleep), sleep


def run(actions: list[Any], attempts: int = 3, timeout_s: float = 5.0) -> list[ActionOutcome]:
    return asyncio.run(run_actions(actions, TRIP, policy(attempts, timeout_s)[0]))


class Scripted:
    """A stub action: raises the scripted errors in turn, then succeeds."""

    def __init__(self, name: str, errors: list[Exception] | None = None) -> None:
        self.name = name
        self.errors = list(errors or [])
        self.calls = 0

    async def run(self, trip: TripContext) -> ActionOutcome:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ActionOutcome(self.name, True, detail=f"done for {trip.account}")


# -- the runner -----------------------------------------------------------------------------------------


def test_a_failing_action_is_retried_reported_and_does_not_stop_the_others() -> None:
    broken = Scripted("broken", [ActionError("exchange down")] * 5)
    first, last = Scripted("first"), Scripted("last")
    retry, sleep = policy(attempts=3)

    outcomes = asyncio.run(run_actions([first, broken, last], TRIP, retry))

    assert [o.action for o in outcomes] == ["first", "broken", "last"]
    assert outcomes[0].ok and outcomes[2].ok and last.calls == 1
    failed = outcomes[1]
    assert not failed.ok and failed.attempts == 3 and broken.calls == 3
    assert failed.error == "exchange down" and failed.errors == ("exchange down",) * 3
    assert sleep.delays == [0.5, 1.0]  # Backoff without jitter: base * 2**n


def test_recovered_failures_stay_in_the_report() -> None:
    flaky = Scripted("flaky", [ActionError("HTTP 500"), ValueError("bad body")])

    (outcome,) = run([flaky])

    assert outcome.ok and outcome.attempts == 3 and outcome.error is None
    assert outcome.errors == ("HTTP 500", "ValueError: bad body")
    assert outcome.detail == "done for main"


def test_a_permanent_error_is_not_retried() -> None:
    action = Scripted("bad-key", [ActionError("login rejected", retryable=False)])

    (outcome,) = run([action])

    assert (outcome.ok, outcome.attempts, outcome.error, action.calls) == (False, 1, "login rejected", 1)


def test_an_outcome_with_ok_false_is_retried_and_keeps_its_detail() -> None:
    class HalfDone:
        name = "half"

        async def run(self, trip: TripContext) -> ActionOutcome:
            return ActionOutcome(self.name, False, detail="cancelled 3; 1 failed", error="order 7: busy")

    (outcome,) = run([HalfDone()], attempts=2)

    assert (outcome.ok, outcome.attempts, outcome.error) == (False, 2, "order 7: busy")
    assert outcome.detail == "cancelled 3; 1 failed"


def test_a_hanging_action_times_out_and_the_next_one_runs() -> None:
    class Hangs:
        name = "hangs"

        async def run(self, trip: TripContext) -> ActionOutcome:
            await asyncio.sleep(60)
            raise AssertionError("not reached")

    outcomes = run([Hangs(), Scripted("next")], attempts=2, timeout_s=0.05)

    assert not outcomes[0].ok and outcomes[0].error == "timed out after 0.05s"
    assert outcomes[1].ok


def test_concurrent_actions_all_run_and_report_in_order() -> None:
    actions = [Scripted("a", [RuntimeError("boom")]), Scripted("b")]

    outcomes = asyncio.run(run_actions(actions, TRIP, policy(attempts=1)[0], concurrent=True))

    assert [(o.action, o.ok, o.error) for o in outcomes] == [
        ("a", False, "RuntimeError: boom"),
        ("b", True, None),
    ]


def test_trip_context_is_utc_and_json_ready() -> None:
    local = TripContext(
        "a", "b", "kill_switch", "manual", datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    )
    assert local.at == datetime(2024, 1, 1, 0, tzinfo=UTC) and local.state == "open"
    assert TRIP.as_dict()["at"] == "2024-01-10T12:30:00+00:00"
    with pytest.raises(ValueError, match="timezone"):
        TripContext("a", "b", "c", "d", datetime(2024, 1, 1))


# -- publish --------------------------------------------------------------------------------------------


def test_publish_hands_the_trip_to_the_publisher_and_reports_its_failure() -> None:
    published: list[dict[str, Any]] = []
    failures = [ConnectionError("bus unreachable")]

    async def publish(event: dict[str, Any]) -> None:
        if failures:
            raise failures.pop()
        published.append(event)

    action = PublishEvent(publish)
    assert isinstance(action, TripAction)

    (outcome,) = run([action])

    assert outcome.ok and outcome.attempts == 2 and outcome.errors == ("ConnectionError: bus unreachable",)
    assert published == [TRIP.as_dict()]


# -- cancel open orders through ccxt ------------------------------------------------------------------


@pytest.fixture
def exchange() -> Iterator[FakeBinanceOrders]:
    with FakeBinanceOrders(now_ms=FAKE_NOW_MS, start_ms=FAKE_NOW_MS - DAY_MS, api_key=API_KEY) as fake:
        yield fake


def cancel_action(fake: FakeBinanceOrders, **kwargs: Any) -> CancelOpenOrders:
    kwargs.setdefault("config", CCXT_CONFIG)
    return CancelOpenOrders("binance", API_KEY, "test-secret", api_url=fake.url, **kwargs)


def test_cancel_lists_and_cancels_every_open_order_with_signed_requests(exchange: FakeBinanceOrders) -> None:
    for symbol in ("BTCUSDT", "BTCUSDT", "ETHUSDT"):
        exchange.add_order(symbol)

    (outcome,) = run([cancel_action(exchange)])

    assert outcome.ok and outcome.attempts == 1, outcome
    assert outcome.detail == "cancelled 3 open order(s) on binance (BTC/USDT: 2, ETH/USDT: 1)"
    assert exchange.open_order_ids() == []
    calls = [(r.method, r.path, r.params.get("symbol")) for r in exchange.signed_requests]
    assert calls == [
        ("GET", "/api/v3/openOrders", None),
        ("DELETE", "/api/v3/openOrders", "BTCUSDT"),
        ("DELETE", "/api/v3/openOrders", "ETHUSDT"),
    ]
    for request in exchange.signed_requests:
        assert request.api_key == API_KEY
        assert len(request.params["signature"]) == 64 and request.params["timestamp"].isdigit()


def test_cancel_one_by_one_and_only_the_configured_symbols(exchange: FakeBinanceOrders) -> None:
    btc = [exchange.add_order("BTCUSDT"), exchange.add_order("BTCUSDT", "SELL", 40_000)]
    eth = exchange.add_order("ETHUSDT")

    (outcome,) = run([cancel_action(exchange, symbols=["BTC/USDT"], cancel_all=False)])

    assert outcome.ok and outcome.detail == "cancelled 2 open order(s) on binance (BTC/USDT: 2)"
    assert exchange.open_order_ids() == [eth]
    listed = [r.params.get("symbol") for r in exchange.signed_requests if r.method == "GET"]
    cancelled = [r.params["orderId"] for r in exchange.signed_requests if r.path == "/api/v3/order"]
    assert listed == ["BTCUSDT"] and sorted(cancelled) == [str(i) for i in btc]


def test_a_failing_cancel_is_retried_until_the_book_is_empty(exchange: FakeBinanceOrders) -> None:
    order_id = exchange.add_order("BTCUSDT")
    exchange.fail_next(1, HTTPStatus.INTERNAL_SERVER_ERROR, path="/api/v3/order")

    (outcome,) = run([cancel_action(exchange, cancel_all=False)])

    assert outcome.ok and outcome.attempts == 2
    assert len(outcome.errors) == 1 and outcome.errors[0].startswith(
        f"could not cancel 1 of 1 open order(s): {order_id} (BTC/USDT)"
    )
    assert exchange.open_order_ids() == []


def test_a_cancel_that_keeps_failing_is_reported_with_each_order(exchange: FakeBinanceOrders) -> None:
    btc, eth = exchange.add_order("BTCUSDT"), exchange.add_order("ETHUSDT")
    exchange.fail_next(100, HTTPStatus.SERVICE_UNAVAILABLE, path="/api/v3/order")

    (outcome,) = run([cancel_action(exchange, cancel_all=False)])

    assert not outcome.ok and outcome.attempts == 3 and len(outcome.errors) == 3
    assert outcome.detail == "cancelled 0 open order(s) on binance; 2 failed"
    assert outcome.error is not None
    assert outcome.error.startswith("could not cancel 2 of 2 open order(s): ")
    assert f"{btc} (BTC/USDT): binance" in outcome.error and f"{eth} (ETH/USDT): binance" in outcome.error
    assert exchange.open_order_ids() == [btc, eth]


def test_a_failing_cancel_all_falls_back_to_cancelling_each_order(exchange: FakeBinanceOrders) -> None:
    exchange.add_order("BTCUSDT")
    exchange.add_order("BTCUSDT")
    exchange.routes[("DELETE", "/api/v3/openOrders")] = lambda _params: (
        HTTPStatus.BAD_GATEWAY,
        "Bad Gateway",
    )

    (outcome,) = run([cancel_action(exchange)])

    assert outcome.ok and outcome.attempts == 1 and outcome.detail.startswith("cancelled 2 open order(s)")
    assert [r.path for r in exchange.signed_requests if r.method == "DELETE"] == [
        "/api/v3/openOrders",
        "/api/v3/order",
        "/api/v3/order",
    ]
    assert exchange.open_order_ids() == []


@pytest.mark.parametrize("cancel_all", [True, False])
def test_orders_already_gone_count_as_closed(exchange: FakeBinanceOrders, cancel_all: bool) -> None:
    stale = exchange.orders.pop(exchange.add_order("BTCUSDT"))  # filled between listing and cancelling
    exchange.routes[("GET", "/api/v3/openOrders")] = lambda _params: (HTTPStatus.OK, [stale])

    (outcome,) = run([cancel_action(exchange, cancel_all=cancel_all)])

    assert outcome.ok, outcome
    assert outcome.detail == "cancelled 0 open order(s) on binance; 1 already closed"


def test_rejected_key_and_unknown_symbol_are_not_retried(exchange: FakeBinanceOrders) -> None:
    exchange.add_order("BTCUSDT")
    wrong_key = CancelOpenOrders("binance", "other-key", "s", api_url=exchange.url, config=CCXT_CONFIG)
    unknown = cancel_action(exchange, symbols=["DOGE/USDT"])

    bad_key, bad_symbol = run([wrong_key, unknown])

    assert (bad_key.ok, bad_key.attempts) == (False, 1) and "API-key format invalid" in (bad_key.error or "")
    assert (bad_symbol.ok, bad_symbol.attempts) == (False, 1) and "DOGE/USDT" in (bad_symbol.error or "")
    assert exchange.open_order_ids() != []


def test_cancel_orders_rejects_bad_configuration() -> None:
    with pytest.raises(InputError, match="not a ccxt exchange"):
        CancelOpenOrders("binanse", "k", "s")
    with pytest.raises(InputError, match="market type"):
        CancelOpenOrders("binance", "k", "s", market_types=("options",))
    with pytest.raises(InputError, match="API key"):
        CancelOpenOrders("binance", "", "s")


# -- pause Freqtrade ------------------------------------------------------------------------------------


@pytest.fixture
def freqtrade() -> Iterator[FakeFreqtrade]:
    with FakeFreqtrade(username="bot", password="pw") as fake:
        yield fake


def pause(fake: FakeFreqtrade, **kwargs: Any) -> PauseFreqtrade:
    return PauseFreqtrade(fake.url, "bot", "pw", timeout_s=2, **kwargs)


def test_pause_logs_in_then_stops_entries_with_the_bearer_token(freqtrade: FakeFreqtrade) -> None:
    (outcome,) = run([pause(freqtrade)])

    assert outcome.ok and outcome.attempts == 1
    assert outcome.detail == f"stopentry via POST /api/v1/stopentry: {STOPENTRY_STATUS}"
    assert [(c.path, c.auth, c.status) for c in freqtrade.calls] == [
        ("/api/v1/token/login", "basic", 200),
        ("/api/v1/stopentry", "bearer", 200),
    ]
    assert freqtrade.entries_stopped and freqtrade.state == "running"


def test_pause_falls_back_to_stopbuy_on_older_freqtrade() -> None:
    with FakeFreqtrade(username="bot", password="pw", legacy=True) as fake:
        action = pause(fake)
        first, second = run([action]), run([action])

    assert first[0].ok and first[0].detail.startswith("stopentry via POST /api/v1/stopbuy")
    assert second[0].ok
    assert fake.paths() == [
        "/api/v1/token/login",
        "/api/v1/stopentry",  # 404
        "/api/v1/stopbuy",
        "/api/v1/stopbuy",  # remembered
    ]
    assert fake.entries_stopped


def test_stop_mode_stops_the_bot(freqtrade: FakeFreqtrade) -> None:
    (outcome,) = run([pause(freqtrade, mode="stop")])

    assert outcome.ok and outcome.detail == "stop via POST /api/v1/stop: stopping trader ..."
    assert freqtrade.state == "stopped" and freqtrade.paths()[-1] == "/api/v1/stop"


def test_an_expired_token_logs_in_again_once(freqtrade: FakeFreqtrade) -> None:
    action = pause(freqtrade)
    run([action])
    freqtrade.expire_tokens()

    (outcome,) = run([action])

    assert outcome.ok and outcome.attempts == 1
    assert [(c.path, c.status) for c in freqtrade.calls[2:]] == [
        ("/api/v1/stopentry", 401),
        ("/api/v1/token/login", 200),
        ("/api/v1/stopentry", 200),
    ]
    assert freqtrade.calls[2].token != freqtrade.calls[4].token


def test_server_errors_are_retried_with_backoff(freqtrade: FakeFreqtrade) -> None:
    freqtrade.fail_next(2, path="/api/v1/stopentry")
    retry, sleep = policy(attempts=3)

    (outcome,) = asyncio.run(run_actions([pause(freqtrade)], TRIP, retry))

    assert outcome.ok and outcome.attempts == 3 and sleep.delays == [0.5, 1.0]
    assert all("HTTP 500" in e for e in outcome.errors) and len(outcome.errors) == 2
    assert freqtrade.paths().count("/api/v1/token/login") == 1 and freqtrade.entries_stopped


def test_a_bot_that_keeps_failing_is_reported_not_raised(freqtrade: FakeFreqtrade) -> None:
    freqtrade.fail_next(100, HTTPStatus.BAD_GATEWAY, path="/api/v1/stopentry")

    (outcome,) = run([pause(freqtrade)])

    assert not outcome.ok and outcome.attempts == 3
    assert outcome.error is not None and "POST /api/v1/stopentry: HTTP 502" in outcome.error
    assert not freqtrade.entries_stopped


def test_wrong_credentials_fail_at_once(freqtrade: FakeFreqtrade) -> None:
    action = PauseFreqtrade(freqtrade.url, "bot", "wrong", timeout_s=2)

    (outcome,) = run([action])

    assert (outcome.ok, outcome.attempts) == (False, 1)
    assert "login rejected" in (outcome.error or "") and "wrong" not in (outcome.error or "")
    assert freqtrade.paths() == ["/api/v1/token/login"]


def test_an_unreachable_bot_is_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    action = PauseFreqtrade(f"http://127.0.0.1:{port}/api/v1/", "bot", "pw", timeout_s=1)

    (outcome,) = run([action], attempts=2)

    assert action.base_url == f"http://127.0.0.1:{port}"
    assert not outcome.ok and outcome.attempts == 2 and "ConnectError" in (outcome.error or "")


def test_pause_rejects_bad_configuration() -> None:
    with pytest.raises(InputError, match="mode"):
        PauseFreqtrade("http://127.0.0.1:8080", "u", "p", mode="halt")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="URL"):
        PauseFreqtrade("127.0.0.1:8080", "u", "p")


def test_all_actions_together_isolate_a_failing_bot(
    exchange: FakeBinanceOrders, freqtrade: FakeFreqtrade
) -> None:
    exchange.add_order("ETHUSDT")
    freqtrade.fail_next(100, path="/api/v1/stopentry")
    published: list[dict[str, Any]] = []

    async def publish(event: dict[str, Any]) -> None:
        published.append(event)

    actions = [pause(freqtrade), cancel_action(exchange), PublishEvent(publish)]
    outcomes = run(actions)

    assert [(o.action, o.ok) for o in outcomes] == [
        (f"freqtrade_stopentry:127.0.0.1:{freqtrade.url.rsplit(':', 1)[1]}", False),
        ("cancel_orders:binance", True),
        ("publish", True),
    ]
    assert exchange.open_order_ids() == [] and published == [TRIP.as_dict()]
