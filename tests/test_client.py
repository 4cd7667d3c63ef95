"""The Python client: against the real app on a real socket (market, portfolio, events, auth), and against a
scriptable stand-in for the fault behaviours (fallback, retries, timeouts, the circuit breaker)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.fake_tradeguard import GARBAGE, HANG, BlackHole, FakeTradeguard, Reply, refused_url
from tests.service_kit import serving
from tradeguard.client import (
    AsyncTradeguardClient,
    CircuitBreaker,
    CircuitOpen,
    ClientOrderDecision,
    GuardUnavailable,
    OnUnavailable,
    RetryPolicy,
    TradeguardAPIError,
    TradeguardClient,
)
from tradeguard.core.order_check import OrderDecision, OrderRequest
from tradeguard.core.trading_state import TradingState
from tradeguard.errors import TradeguardError

CHECK = "/v1/orders/check"
FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02, deadline_s=2.0)
ORDER = {
    "account": "alpha",
    "bot": "ft1",
    "exchange": "binance",
    "symbol": "BTC/USDT",
    "side": "buy",
    "amount": 0.25,
    "price": None,
    "type": "market",
    "mode": "live",
}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """(base URL, keys by name) of the real app, composed as test_portfolio_api composes it."""
    with serving(tmp_path_factory.mktemp("client")) as served:
        yield served


@pytest.fixture
def fake() -> Iterator[FakeTradeguard]:
    with FakeTradeguard() as server:
        yield server


def client(url: str, **kwargs) -> TradeguardClient:
    kwargs.setdefault("on_unavailable", "block")
    kwargs.setdefault("api_key", "k")
    kwargs.setdefault("timeout", 0.5)
    kwargs.setdefault("retry", FAST)
    return TradeguardClient(url, **kwargs)


def aclient(url: str, **kwargs) -> AsyncTradeguardClient:
    kwargs.setdefault("on_unavailable", "block")
    kwargs.setdefault("api_key", "k")
    kwargs.setdefault("timeout", 0.5)
    kwargs.setdefault("retry", FAST)
    return AsyncTradeguardClient(url, **kwargs)


def envelope(i: int, type_: str, payload: dict, ts: datetime, account: str = "alpha") -> dict:
    return {
        "id": f"client-{account}-{i}",
        "type": type_,
        "account": account,
        "exchange": "binance",
        "bot": "ft1",
        "ts": ts.isoformat(),
        "payload": payload,
    }


def assert_fail_fast(durations: list[float]) -> None:
    """No network: the median call is under 10 ms, and none is anywhere near a timeout (one scheduler
    hiccup on the shared 2 cores is tolerated)."""
    assert sorted(durations)[len(durations) // 2] < 0.01 and max(durations) < 0.1, durations


# --- the real app -------------------------------------------------------------------------------------------


def test_get_risk_of_a_pair_and_of_the_market(service):
    url, keys = service
    with client(url, api_key=keys["read_a"]) as guard:
        btc = guard.get_risk("BTC/USDT")
        market = guard.get_risk()
    assert btc.pair == "BTC/USDT" and btc.synthetic and btc.source == "scripted"
    assert 0 <= btc.risk_score <= 1 and btc.risk_breakdown is not None
    assert btc.indicators  # members the model does not name are kept
    assert market.pair is None and set(market.pairs) == {"BTC/USDT", "ETH/USDT"}


def test_unknown_pair_is_a_problem_with_its_extensions(service):
    url, keys = service
    with client(url, api_key=keys["read_a"]) as guard, pytest.raises(TradeguardAPIError) as caught:
        guard.get_risk("DOGE/USDT")
    error = caught.value
    assert (error.status, error.title, error.type) == (404, "Not Found", "about:blank")
    assert "DOGE/USDT" in error.detail and error.extensions["tracked_pairs"] == ["BTC/USDT", "ETH/USDT"]
    assert isinstance(error, TradeguardError)


def test_publish_events_then_see_them_in_the_portfolio(service):
    url, keys = service
    t = datetime.now(UTC) - timedelta(seconds=30)
    position = {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.5, "markPrice": 60_000}
    events = [
        envelope(1, "equity", {"total_equity": 10_000, "currency": "USDT"}, t),
        envelope(2, "positions", {"positions": [position]}, t),
    ]
    with client(url, api_key=keys["bot_a"]) as guard:
        assert guard.publish_events(events) == ["client-alpha-1", "client-alpha-2"]
        assert guard.publish_events(events) == ["client-alpha-1", "client-alpha-2"]  # a resend: duplicates
        portfolio = guard.get_portfolio()
        state = guard.get_trading_state("alpha")
    assert portfolio.account == "alpha" and portfolio.trading_state is TradingState.ACTIVE
    assert portfolio.total_equity == 10_000 and portfolio.leverage == pytest.approx(3.0)
    assert portfolio.assets["BTC"].net_notional == pytest.approx(30_000)
    assert state.account == "alpha" and state.state is TradingState.ACTIVE and state.max_size_fraction == 1.0


def test_an_admin_key_sees_the_fleet(service):
    url, keys = service
    event = envelope(1, "equity", {"total_equity": 2_000, "currency": "USDT"}, datetime.now(UTC), "gamma")
    with client(url, api_key=keys["admin"]) as guard:
        assert guard.publish_events([event]) == ["client-gamma-1"]
        fleet = guard.get_portfolio()
        gamma = guard.get_portfolio("gamma")
    assert fleet.account is None and fleet.trading_state is None and fleet.accounts is not None
    assert fleet.accounts["gamma"].total_equity == 2_000 and fleet.total_equity >= 2_000
    assert gamma.account == "gamma" and gamma.accounts is None


def test_another_accounts_data_is_403_with_problem_details(service):
    url, keys = service
    with client(url, api_key=keys["bot_a"]) as guard:
        with pytest.raises(TradeguardAPIError) as caught:
            guard.get_portfolio("beta")
        assert caught.value.status == 403 and "'alpha', not 'beta'" in caught.value.detail
        with pytest.raises(TradeguardAPIError) as caught:
            foreign = envelope(
                1, "equity", {"total_equity": 1, "currency": "USDT"}, datetime.now(UTC), "beta"
            )
            guard.publish_events([foreign])
        assert caught.value.status == 403 and caught.value.extensions["foreign_accounts"] == ["beta"]
        assert guard.breaker.state == "closed"  # the service answered


def test_no_key_is_401(service, monkeypatch):
    url, _ = service
    monkeypatch.delenv("TRADEGUARD_API_KEY", raising=False)
    with client(url, api_key=None) as guard, pytest.raises(TradeguardAPIError) as caught:
        guard.get_trading_state()
    assert caught.value.status == 401 and caught.value.title == "Unauthorized"


def test_api_key_from_the_environment(service, monkeypatch):
    url, keys = service
    monkeypatch.setenv("TRADEGUARD_API_KEY", keys["read_a"])
    with client(url, api_key=None) as guard:
        assert guard.get_trading_state().account == "alpha"


def test_async_client_against_the_real_app(service):
    url, keys = service

    async def main() -> None:
        async with aclient(url, api_key=keys["bot_b"]) as guard:
            risk, state = await asyncio.gather(guard.get_risk("ETH/USDT"), guard.get_trading_state())
            assert risk.pair == "ETH/USDT" and state.account == "beta"
            ids = await guard.publish_events(
                [envelope(7, "equity", {"total_equity": 500, "currency": "USDT"}, datetime.now(UTC), "beta")]
            )
            assert ids == ["client-beta-7"]
            assert (await guard.get_portfolio()).total_equity == 500
            with pytest.raises(TradeguardAPIError) as caught:
                await guard.get_portfolio("alpha")
            assert caught.value.status == 403

    asyncio.run(main())


# --- check_order against the stand-in -----------------------------------------------------------------------


def test_check_order_sends_the_request_and_parses_the_decision(fake):
    with client(fake.url, api_key="secret") as guard:
        decision = guard.check_order(OrderRequest.model_validate(ORDER))
        from_dict = guard.check_order(ORDER | {"type": "limit", "price": 60_000.0})
    assert isinstance(decision, ClientOrderDecision) and isinstance(decision, OrderDecision)
    assert decision.source == "service" and not decision.synthesized
    assert decision.decision == "allow" and decision.allowed_amount == 0.25 and "var" in decision.checks
    assert decision.trading_state is TradingState.ACTIVE and decision.var.scenarios == 10_000
    assert from_dict.decision == "allow"
    first, second = fake.calls_to(CHECK)
    assert first.body == OrderRequest.model_validate(ORDER).model_dump(mode="json")
    assert second.body["price"] == 60_000.0
    assert first.headers["authorization"] == "Bearer secret"


@pytest.mark.parametrize("policy", ["allow", "block"])
def test_check_order_falls_back_on_503_without_retrying(fake, policy):
    fake.script(CHECK, Reply(503, headers={"Retry-After": "0"}), Reply(200, {"never": "read"}))
    with client(fake.url, on_unavailable=policy) as guard:
        decision = guard.check_order(ORDER)
    assert len(fake.calls_to(CHECK)) == 1  # not retried: the service may have counted the check
    assert decision.source == "client_fallback" and decision.synthesized
    assert decision.decision == policy
    assert decision.allowed_amount == (0.25 if policy == "allow" else 0.0)
    (reason,) = decision.reasons
    assert (reason.code, reason.check) == ("guard_unavailable", "client") and "503" in reason.message
    assert decision.checks == {} and decision.trading_state is None and decision.retry_after_ms is None
    assert (decision.var.before_pct, decision.var.after_pct, decision.var.limit_pct) == (None, None, None)
    assert abs(decision.evaluated_at - datetime.now(UTC)) < timedelta(seconds=5)
    assert decision.latency_ms > 0


def test_on_unavailable_per_call_overrides_the_client(fake):
    fake.script(CHECK, Reply(500))
    with client(fake.url, on_unavailable=OnUnavailable.BLOCK) as guard:
        assert guard.check_order(ORDER, on_unavailable="allow").decision == "allow"


def test_on_unavailable_must_be_chosen():
    with pytest.raises(TypeError):
        TradeguardClient("http://127.0.0.1:1")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        TradeguardClient("http://127.0.0.1:1", on_unavailable="maybe")  # type: ignore[arg-type]


def test_check_order_falls_back_when_the_connection_is_refused():
    with client(refused_url(), on_unavailable="allow") as guard:
        started = time.perf_counter()
        decision = guard.check_order(ORDER)
    assert decision.synthesized and decision.decision == "allow" and decision.allowed_amount == 0.25
    assert "ConnectError" in decision.reasons[0].message and time.perf_counter() - started < 0.4


def test_check_order_raises_4xx_problems(fake):
    fake.script(CHECK, Reply(422), Reply(403, {"title": "Forbidden", "status": 403, "detail": "not yours"}))
    with client(fake.url, on_unavailable="allow") as guard:
        with pytest.raises(TradeguardAPIError) as caught:
            guard.check_order(ORDER)
        assert caught.value.status == 422 and caught.value.detail == "scripted failure"
        with pytest.raises(TradeguardAPIError) as caught:
            guard.check_order(ORDER)
        assert (caught.value.status, caught.value.detail) == (403, "not yours")
        assert guard.breaker.state == "closed"
    assert len(fake.calls_to(CHECK)) == 2


def test_check_order_invalid_locally_never_reaches_the_network(fake):
    with client(fake.url) as guard, pytest.raises(ValueError):
        guard.check_order(ORDER | {"type": "limit"})  # a limit order needs a price
    assert fake.calls == []


def test_429_is_retried_after_retry_after_within_the_deadline(fake):
    fake.script(CHECK, Reply(429, headers={"Retry-After": "0.05"}))
    with client(fake.url) as guard:
        started = time.perf_counter()
        assert guard.check_order(ORDER).source == "service"  # the 429 came before anything ran: retried
        assert time.perf_counter() - started >= 0.05
        fake.script(CHECK, Reply(429, headers={"Retry-After": "30"}))
        with pytest.raises(TradeguardAPIError) as caught:
            guard.check_order(ORDER)  # 30 s is past the deadline: raised at once
    assert caught.value.status == 429 and caught.value.retry_after_s == 30
    assert len(fake.calls_to(CHECK)) == 3


def test_unreadable_answer_is_unavailable(fake):
    fake.script(CHECK, GARBAGE)
    fake.script("/v1/risk", Reply(200, {"pair": "BTC/USDT"}))
    with client(fake.url) as guard:
        decision = guard.check_order(ORDER)
        assert decision.synthesized and "unexpected answer" in decision.reasons[0].message
        with pytest.raises(GuardUnavailable, match="unexpected answer"):
            guard.get_risk("BTC/USDT")


# --- retries of idempotent calls ----------------------------------------------------------------------------


def test_get_is_retried_with_jitter_after_503_then_succeeds(fake):
    fake.script("/v1/risk", Reply(503), Reply(502))
    with client(fake.url) as guard:
        risk = guard.get_risk("BTC/USDT")
        assert risk.pair == "BTC/USDT" and risk.safe_to_trade
        assert guard.breaker.state == "closed"
    calls = fake.calls_to("/v1/risk")
    assert len(calls) == 3 and all(c.query == "pair=BTC%2FUSDT" for c in calls)


def test_get_gives_up_after_its_attempts(fake):
    fake.script("/v1/risk", Reply(503), Reply(503), Reply(503))
    breaker = CircuitBreaker(failure_threshold=5)
    with client(fake.url, breaker=breaker) as guard, pytest.raises(GuardUnavailable) as caught:
        guard.get_risk()
    assert caught.value.status == 503 and not isinstance(caught.value, CircuitOpen)
    assert len(fake.calls_to("/v1/risk")) == 3 and breaker.state == "closed"


def test_retry_after_past_the_deadline_is_not_waited_for(fake):
    fake.script("/v1/risk", Reply(503, headers={"Retry-After": "5"}))
    with client(fake.url) as guard, pytest.raises(GuardUnavailable):
        started = time.perf_counter()
        guard.get_risk()
    assert time.perf_counter() - started < 0.5 and len(fake.calls_to("/v1/risk")) == 1


def test_publish_events_is_retried_with_the_same_batch(fake):
    fake.script("/v1/events", Reply(503))
    event = envelope(1, "equity", {"total_equity": 1, "currency": "USDT"}, datetime.now(UTC))
    with client(fake.url) as guard:
        assert guard.publish_events([event]) == ["client-alpha-1"]
        assert guard.publish_events([]) == []
    first, second = fake.calls_to("/v1/events")
    assert first.body == second.body and first.body["events"][0]["ts"].endswith("Z")


def test_full_jitter_stays_within_its_exponential_cap():
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=0.3)
    rng = random.Random(7)
    for attempt, cap in ((1, 0.1), (2, 0.2), (3, 0.3), (8, 0.3)):
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= cap and max(delays) > cap * 0.8
        assert len(set(delays)) == 200
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


# --- the circuit breaker ------------------------------------------------------------------------------------


def test_a_hung_service_costs_one_timeout_not_one_per_call():
    with BlackHole() as hole, client(hole.url, timeout=0.3, on_unavailable="block") as guard:
        started = time.perf_counter()
        first = guard.check_order(ORDER)
        first_s = time.perf_counter() - started
        assert 0.25 <= first_s < 1.0 and first.synthesized and "timed out" in first.reasons[0].message
        assert guard.breaker.state == "open"
        durations = []
        for _ in range(5):
            started = time.perf_counter()
            decision = guard.check_order(ORDER)
            durations.append(time.perf_counter() - started)
            assert decision.decision == "block" and "circuit open" in decision.reasons[0].message
        assert_fail_fast(durations)
        started = time.perf_counter()
        with pytest.raises(CircuitOpen) as caught:
            guard.get_risk()  # a GET does not retry into an open breaker either
        assert_fail_fast([time.perf_counter() - started])
        assert 29 < caught.value.retry_in_s <= 30


def test_a_hung_get_is_not_retried_into_more_timeouts():
    with BlackHole() as hole, client(hole.url, timeout=0.2) as guard:
        started = time.perf_counter()
        with pytest.raises(GuardUnavailable, match="timed out"):
            guard.get_trading_state()
        assert time.perf_counter() - started < 0.6


def test_breaker_opens_after_consecutive_failures_then_half_open_recovers(fake):
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30, clock=clock)
    fake.script(CHECK, Reply(503), Reply(503), Reply(503))
    with client(fake.url, breaker=breaker) as guard:
        for _ in range(3):
            assert guard.check_order(ORDER).synthesized
        assert breaker.state == "open" and len(fake.calls_to(CHECK)) == 3
        assert guard.check_order(ORDER).synthesized and len(fake.calls_to(CHECK)) == 3  # fail fast
        clock.now += 29.9
        assert guard.check_order(ORDER).synthesized and len(fake.calls_to(CHECK)) == 3
        clock.now += 0.1
        assert breaker.state == "half_open"
        fake.script(CHECK, Reply(503))  # the trial fails: open for another cooldown
        assert guard.check_order(ORDER).synthesized and len(fake.calls_to(CHECK)) == 4
        assert breaker.state == "open"
        clock.now += 30
        decision = guard.check_order(ORDER)  # this trial succeeds: closed again
        assert decision.source == "service" and breaker.state == "closed"
        assert len(fake.calls_to(CHECK)) == 5


def test_a_success_resets_the_consecutive_count(fake):
    fake.script(CHECK, Reply(503), Reply(503), Reply(503))
    breaker = CircuitBreaker(failure_threshold=3)
    with client(fake.url, breaker=breaker) as guard:
        guard.check_order(ORDER)
        guard.check_order(ORDER)
        guard.get_risk()  # answered: the count starts again
        guard.check_order(ORDER)
        assert breaker.state == "closed"


def test_half_open_lets_one_trial_out_at_a_time():
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    assert breaker.acquire() is False
    breaker.failure("boom")
    with pytest.raises(CircuitOpen):
        breaker.acquire()
    clock.now += 10
    assert breaker.acquire() is True
    with pytest.raises(CircuitOpen, match="trial"):
        breaker.acquire()
    breaker.release(True)  # the trial was cancelled: the next call may try
    assert breaker.acquire() is True
    breaker.success()
    assert breaker.state == "closed" and breaker.acquire() is False


def test_sync_client_is_thread_safe(fake):
    with client(fake.url) as guard, ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(lambda _: guard.check_order(ORDER), range(40)))
    assert all(d.source == "service" and d.decision == "allow" for d in decisions)
    assert len(fake.calls_to(CHECK)) == 40


# --- the async client ---------------------------------------------------------------------------------------


def test_async_check_order_parses_and_falls_back(fake):
    fake.script(CHECK, Reply(504))

    async def main() -> None:
        async with aclient(fake.url, on_unavailable="allow") as guard:
            fallback = await guard.check_order(ORDER)
            assert fallback.synthesized and fallback.decision == "allow" and fallback.allowed_amount == 0.25
            decision = await guard.check_order(ORDER, on_unavailable="block")
            assert decision.source == "service" and decision.decision == "allow"
            fake.script("/v1/risk", Reply(503))
            assert (await guard.get_risk("ETH/USDT")).pair == "ETH/USDT"  # retried

    asyncio.run(main())
    assert len(fake.calls_to(CHECK)) == 2 and len(fake.calls_to("/v1/risk")) == 2


def test_async_breaker_fails_fast_on_a_hung_service():
    async def main() -> None:
        with BlackHole() as hole:
            async with aclient(hole.url, timeout=0.3) as guard:
                started = time.perf_counter()
                assert (await guard.check_order(ORDER)).decision == "block"
                assert 0.25 <= time.perf_counter() - started < 1.0
                durations = []
                for _ in range(5):
                    started = time.perf_counter()
                    assert (await guard.check_order(ORDER)).synthesized
                    durations.append(time.perf_counter() - started)
                assert_fail_fast(durations)
                with pytest.raises(CircuitOpen):
                    await guard.publish_events(
                        [envelope(1, "equity", {"total_equity": 1, "currency": "USDT"}, datetime.now(UTC))]
                    )

    asyncio.run(main())


def test_a_cancelled_trial_call_frees_the_half_open_slot(fake):
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.failure("earlier")
    clock.now += 5
    fake.script(CHECK, HANG)

    async def main() -> None:
        async with aclient(fake.url, timeout=5, breaker=breaker) as guard:
            trial = asyncio.create_task(guard.check_order(ORDER))
            while not fake.calls_to(CHECK):
                await asyncio.sleep(0.01)
            trial.cancel()
            with pytest.raises(asyncio.CancelledError):
                await trial
            assert (await guard.check_order(ORDER)).source == "service"  # a new trial went out
            assert breaker.state == "closed"

    asyncio.run(main())
