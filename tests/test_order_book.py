"""Order-book gates (pure) and the order-book source through the real ccxt.pro binance client against local
fakes of Binance's REST API and WebSocket streams (no internet). The source's clock and the fake's clock move
together, by hand. Async scenarios run with ``asyncio.run`` inside plain test functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import ccxt.async_support
import ccxt.pro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes import fixtures, ws_fixtures
from tests.fakes.fake_binance import FakeBinance, Response
from tests.fakes.fake_binance_ws import FakeBinanceWs
from tests.fakes.fixtures import FAKE_CCXT_CONFIG, FAKE_NOW_MS
from tradeguard.adapters.exchange_download import configure_exchange, rebase_urls
from tradeguard.adapters.order_books import OrderBookSource, StaleBookError
from tradeguard.adapters.status import Backoff
from tradeguard.core.order_book import (
    BookSnapshot,
    BookVerdict,
    Level,
    OrderBookConfig,
    book_age_s,
    book_gate,
)
from tradeguard.errors import ExchangeError, InputError

fake_binance = fixtures.fake_binance
fake_binance_ws = ws_fixtures.fake_binance_ws

T0 = datetime(2024, 1, 10, 12, 30, tzinfo=UTC)
CFG = OrderBookConfig()


def snap(bids: list[Level], asks: list[Level], last: float | None = None) -> BookSnapshot:
    return BookSnapshot("BTC/USDT", tuple(bids), tuple(asks), T0, last)


# -- the gate: hand-computed values ---------------------------------------------------------------------

# bid depth 2, ask depth 6: sellers outweigh buyers exactly 3:1; microprice (100*2 + 101*1) / 3
SELL_HEAVY = snap([(100.0, 1.0), (99.0, 1.0)], [(101.0, 2.0), (102.0, 4.0)], last=100.5)


def test_a_buy_into_a_book_3_to_1_against_it_is_reduced_at_the_threshold() -> None:
    verdict = book_gate(SELL_HEAVY, "buy", 1.5, CFG)
    assert (verdict.action, verdict.code, verdict.retry_after_ms) == ("reduce", "book_imbalance", None)
    assert verdict.imbalance_ratio == 3.0
    assert verdict.microprice == pytest.approx(301 / 3)
    assert verdict.microprice_deviation_pct == pytest.approx((301 / 3 - 100.5) / 100.5 * 100)  # -0.166%
    # min(amount 1.5, bid depth 2) / 3
    assert verdict.allowed_amount == pytest.approx(0.5)
    assert verdict.allowed_fraction == pytest.approx(1 / 3)
    assert verdict.message == (
        "Sellers outweigh buyers 3.00:1 in the top 2 levels of the book (limit 3:1): the buy is cut from 1.5 "
        "to 0.5, the smaller of the amount and the bid depth (2) divided by 3.00."
    )


def test_a_reduced_order_never_exceeds_its_own_side_depth_over_the_ratio() -> None:
    verdict = book_gate(SELL_HEAVY, "buy", 5.0, CFG)  # larger than the 2 bid
    assert verdict.allowed_amount == pytest.approx(2 / 3)
    assert verdict.allowed_fraction == pytest.approx(2 / 15)


def test_the_same_book_supports_a_sell() -> None:
    verdict = book_gate(SELL_HEAVY, "sell", 1.5, CFG)
    assert (verdict.action, verdict.code) == ("allow", "book_ok")
    assert verdict.imbalance_ratio == pytest.approx(1 / 3)
    assert verdict.microprice_deviation_pct == pytest.approx((100.5 - 301 / 3) / 100.5 * 100)  # +0.166%
    assert (verdict.allowed_fraction, verdict.allowed_amount, verdict.retry_after_ms) == (1.0, 1.5, None)
    assert verdict.message.startswith("The book does not lean against the sell: buyers to sellers 0.33:1")


def test_just_under_3_to_1_is_allowed() -> None:
    book = snap([(100.0, 1.0), (99.0, 1.0)], [(101.0, 2.0), (102.0, 3.98)], last=100.5)
    verdict = book_gate(book, "buy", 1.5, CFG)
    assert verdict.action == "allow"
    assert verdict.imbalance_ratio == pytest.approx(2.99)


def test_imbalance_can_delay_instead_of_reduce() -> None:
    cfg = OrderBookConfig(imbalance_action="delay", tick_ms=250)
    verdict = book_gate(SELL_HEAVY, "buy", 1.5, cfg)
    assert (verdict.action, verdict.code, verdict.retry_after_ms) == ("delay", "book_imbalance", 250)
    assert (verdict.allowed_fraction, verdict.allowed_amount) == (0.0, 0.0)
    assert verdict.message.endswith("(limit 3:1): the buy waits one tick (250 ms).")


def test_only_the_top_levels_count() -> None:
    deep_bids = snap([(100.0, 1.0), (99.0, 1.0), (98.0, 100.0)], [(101.0, 2.0), (102.0, 4.0)], last=100.5)
    assert book_gate(deep_bids, "buy", 1.0, OrderBookConfig(levels=2)).imbalance_ratio == 3.0
    assert book_gate(deep_bids, "buy", 1.0, OrderBookConfig(levels=3)).imbalance_ratio == pytest.approx(
        6 / 102
    )
    top_only = book_gate(deep_bids, "buy", 1.0, OrderBookConfig(levels=1))
    assert top_only.imbalance_ratio == 2.0  # asks 2 against bids 1


@pytest.mark.parametrize(
    ("side", "bid", "ask", "action"),
    [
        # microprice 1003 against a last trade of 1000: exactly 0.3% above, the limit itself passes
        ("buy", 1002.0, 1004.0, "allow"),
        ("buy", 1002.0, 1004.02, "delay"),  # 1003.01: 0.301% above
        ("sell", 996.0, 998.0, "allow"),  # 997: exactly 0.3% below
        ("sell", 995.98, 998.0, "delay"),  # 996.99: 0.301% below
    ],
)
def test_microprice_limit_is_exclusive(side: str, bid: float, ask: float, action: str) -> None:
    verdict = book_gate(snap([(bid, 1.0)], [(ask, 1.0)], last=1000.0), side, 2.0, CFG)  # type: ignore[arg-type]
    assert verdict.microprice == pytest.approx((bid + ask) / 2)
    assert verdict.microprice_deviation_pct == pytest.approx(0.3 if action == "allow" else 0.301)
    assert verdict.action == action
    if action == "allow":
        assert verdict.microprice_deviation_pct == 0.3
    else:
        assert (verdict.code, verdict.retry_after_ms, verdict.allowed_amount) == (
            "book_microprice_adverse",
            1000,
            0.0,
        )


def test_an_adverse_microprice_delays_and_names_the_move() -> None:
    # bid size 3 against ask size 1: microprice (100*1 + 101*3) / 4 = 100.75, 0.75% above the last 100
    book = snap([(100.0, 3.0)], [(101.0, 1.0)], last=100.0)
    verdict = book_gate(book, "buy", 1.0, CFG)
    assert verdict == BookVerdict(
        action="delay",
        code="book_microprice_adverse",
        message="The microprice 100.75 is 0.750% above the last trade 100 (limit 0.3%), so the price is "
        "moving against the buy: the buy waits one tick (1000 ms).",
        imbalance_ratio=1 / 3,
        microprice=100.75,
        microprice_deviation_pct=0.75,
        allowed_fraction=0.0,
        allowed_amount=0.0,
        retry_after_ms=1000,
    )
    # for a sell the same microprice is 0.75% in its favour
    assert book_gate(book, "sell", 1.0, CFG).microprice_deviation_pct == -0.75


def test_both_gates_firing_delay_and_say_both() -> None:
    # asks outweigh bids 4:1 in depth, but the top bid is large: microprice far above the last trade
    book = snap([(100.0, 3.0)], [(101.0, 1.0), (102.0, 11.0)], last=100.0)
    verdict = book_gate(book, "buy", 1.0, CFG)
    assert (verdict.action, verdict.code, verdict.retry_after_ms) == (
        "delay",
        "book_microprice_adverse",
        1000,
    )
    assert verdict.imbalance_ratio == 4.0
    assert "sellers outweigh buyers 4.00:1" in verdict.message


def test_without_a_last_trade_only_the_imbalance_is_checked() -> None:
    verdict = book_gate(replace(SELL_HEAVY, last_trade_price=None), "buy", 1.5, CFG)
    assert (verdict.action, verdict.microprice_deviation_pct) == ("reduce", None)
    allowed = book_gate(replace(SELL_HEAVY, last_trade_price=None), "sell", 1.5, CFG)
    assert allowed.action == "allow"
    assert allowed.message.endswith("no last trade price, so the microprice is not checked.")


@pytest.mark.parametrize(
    ("bids", "asks", "message"),
    [
        ([], [(101.0, 1.0)], "empty side"),
        ([(100.0, 1.0)], [], "empty side"),
        ([(101.0, 1.0)], [(100.0, 1.0)], "crossed"),
        ([(100.0, 1.0)], [(100.0, 1.0)], "crossed"),
        ([(99.0, 1.0), (100.0, 1.0)], [(101.0, 1.0)], "sorted best first"),
        ([(100.0, 1.0)], [(102.0, 1.0), (101.5, 1.0)], "sorted best first"),
        ([(100.0, 0.0)], [(101.0, 1.0)], "must be positive"),
        ([(100.0, 1.0)], [(float("nan"), 1.0)], "must be positive"),
    ],
)
def test_unusable_books_are_input_errors(bids: list[Level], asks: list[Level], message: str) -> None:
    with pytest.raises(InputError, match=message):
        book_gate(snap(bids, asks), "buy", 1.0, CFG)


def test_bad_orders_and_configs_are_input_errors() -> None:
    book = snap([(100.0, 1.0)], [(101.0, 1.0)])
    with pytest.raises(InputError, match="amount must be positive"):
        book_gate(book, "buy", 0.0, CFG)
    with pytest.raises(InputError, match="last trade price must be positive"):
        book_gate(replace(book, last_trade_price=0.0), "buy", 1.0, CFG)
    with pytest.raises(InputError, match="timezone-aware"):
        BookSnapshot("BTC/USDT", book.bids, book.asks, datetime(2024, 1, 1))
    for bad in (
        {"levels": 0},
        {"max_imbalance_ratio": 1.0},
        {"max_age_s": 0.0},
        {"imbalance_action": "block"},
    ):
        with pytest.raises(InputError):
            OrderBookConfig(**bad)  # type: ignore[arg-type]


def test_book_age() -> None:
    assert book_age_s(SELL_HEAVY, T0 + timedelta(seconds=2.5)) == 2.5


# -- the gate: properties -------------------------------------------------------------------------------


@st.composite
def books(draw: st.DrawFn) -> BookSnapshot:
    """Books on a whole-number price grid around a last trade price, up to 12 levels a side."""
    last = draw(st.integers(1_000, 100_000))
    best_bid = last + draw(st.integers(-60, 60))
    best_ask = best_bid + draw(st.integers(1, 20))
    amounts = st.floats(0.001, 1_000.0, allow_nan=False)

    def side(best: int, step: int) -> tuple[Level, ...]:
        gaps = draw(st.lists(st.integers(1, 5), max_size=11))
        prices = [best]
        for gap in gaps:
            prices.append(prices[-1] + step * gap)
        return tuple((float(p), draw(amounts)) for p in prices)

    return BookSnapshot("BTC/USDT", side(best_bid, -1), side(best_ask, 1), T0, float(last))


def mirrored(book: BookSnapshot) -> BookSnapshot:
    """The book reflected about its last trade price: bids become asks and asks bids, amounts kept."""
    last = book.last_trade_price or 0.0

    def flip(levels: tuple[Level, ...]) -> tuple[Level, ...]:
        return tuple((2 * last - p, a) for p, a in levels)

    return replace(book, bids=flip(book.asks), asks=flip(book.bids))


configs = st.builds(
    OrderBookConfig,
    levels=st.integers(1, 12),
    max_imbalance_ratio=st.floats(1.5, 6.0),
    imbalance_action=st.sampled_from(["reduce", "delay"]),
    max_microprice_deviation_pct=st.floats(0.01, 1.0),
)
amounts = st.floats(0.0001, 10_000.0, allow_nan=False)


@given(book=books(), amount=amounts, cfg=configs)
def test_a_mirrored_book_and_the_opposite_side_get_the_same_verdict(
    book: BookSnapshot, amount: float, cfg: OrderBookConfig
) -> None:
    buy = book_gate(book, "buy", amount, cfg)
    sell = book_gate(mirrored(book), "sell", amount, cfg)
    same = ("action", "code", "imbalance_ratio", "microprice_deviation_pct", "allowed_fraction")
    assert [getattr(buy, f) for f in same] == [getattr(sell, f) for f in same]
    assert (buy.allowed_amount, buy.retry_after_ms) == (sell.allowed_amount, sell.retry_after_ms)
    assert buy.microprice == pytest.approx(2 * (book.last_trade_price or 0) - sell.microprice)


@given(book=books(), side=st.sampled_from(["buy", "sell"]), amount=amounts, cfg=configs)
def test_the_gate_never_allows_more_than_requested(
    book: BookSnapshot, side: str, amount: float, cfg: OrderBookConfig
) -> None:
    verdict = book_gate(book, side, amount, cfg)  # type: ignore[arg-type]
    assert 0.0 <= verdict.allowed_amount <= amount
    assert verdict.allowed_amount == pytest.approx(amount * verdict.allowed_fraction)
    if verdict.action == "allow":
        assert (verdict.allowed_fraction, verdict.retry_after_ms) == (1.0, None)
    elif verdict.action == "delay":
        assert (verdict.allowed_fraction, verdict.retry_after_ms) == (0.0, cfg.tick_ms)
    else:
        assert 0.0 < verdict.allowed_fraction <= (1 + 1e-12) / verdict.imbalance_ratio
        assert verdict.imbalance_ratio >= cfg.max_imbalance_ratio


# -- the source, through ccxt against the fakes ----------------------------------------------------------

BTC = "BTCUSDT"
FAST = Backoff(base_s=0.01, cap_s=0.05, jitter=False)
CONFIG = {**FAKE_CCXT_CONFIG, "timeout_on_exit": 0}
BIDS = [(29_990.0, 1.5), (29_989.0, 2.0), (29_980.0, 9.0)]
ASKS = [(30_010.0, 0.5), (30_011.0, 1.0), (30_020.0, 9.0)]
BOOK_CFG = OrderBookConfig(levels=2, max_age_s=5.0)


class Clock:
    """The source's clock, which also moves the REST fake's clock (the WebSocket event times)."""

    def __init__(self, rest: FakeBinance, ms: int = FAKE_NOW_MS) -> None:
        self.rest = rest
        self.set(ms)

    def set(self, ms: int) -> None:
        self.ms = ms
        self.rest.now_ms = ms

    def advance(self, seconds: float) -> None:
        self.set(self.ms + round(seconds * 1000))

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.ms / 1000, UTC)


def client(rest: FakeBinance, ws: FakeBinanceWs | None = None) -> Any:
    exchange = ccxt.pro.binance(CONFIG)
    configure_exchange(exchange, ["spot"], rest.url)
    if ws is not None:
        exchange.urls["api"]["ws"] = rebase_urls(exchange.urls["api"]["ws"], ws.url, ("ws", "wss"))
    return exchange


def requests(rest: FakeBinance, path: str, **params: str) -> int:
    """How many requests to ``path`` (with these parameters) the fake answered with 200."""
    return sum(
        1 for r in rest.requests if r.path == path and r.status == 200 and params.items() <= r.params.items()
    )


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def cached_bids(source: OrderBookSource) -> tuple[Level, ...] | None:
    book = source.cached("BTC/USDT")
    return None if book is None else book.bids


def run_scenario(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


def test_fetches_book_and_last_price_and_reuses_them_while_fresh(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance)
    fake_binance.set_book(BTC, BIDS, ASKS)
    fake_binance.set_last_price(BTC, 30_005.0)

    async def scenario() -> None:
        exchange = client(fake_binance)
        source = OrderBookSource(exchange, BOOK_CFG, clock=clock, watch=False)
        try:
            assert source.cached("BTC/USDT") is None
            book = await source.get("BTC/USDT")
            assert book == BookSnapshot("BTC/USDT", tuple(BIDS[:2]), tuple(ASKS[:2]), T0, 30_005.0)
            assert requests(fake_binance, "/api/v3/depth", symbol=BTC, limit="2") == 1
            assert requests(fake_binance, "/api/v3/ticker/24hr", symbol=BTC) == 1
            assert source.status.reachable and not source.watching

            clock.advance(5)  # exactly the age limit: still fresh, no exchange call
            assert await source.get("BTC/USDT") == book
            assert requests(fake_binance, "/api/v3/depth") == 1

            clock.advance(0.001)
            fake_binance.set_book(BTC, [(29_995.0, 1.0)], [(30_000.0, 4.0)])
            fake_binance.set_last_price(BTC, 29_999.0)
            book = await source.get("BTC/USDT")
            assert book == BookSnapshot(
                "BTC/USDT", ((29_995.0, 1.0),), ((30_000.0, 4.0),), clock(), last_trade_price=29_999.0
            )
            assert source.cached("BTC/USDT") == book
            assert requests(fake_binance, "/api/v3/depth") == 2
            # and the gate takes it: asks 4 against bids 1 in the top levels, a buy is reduced to a quarter
            verdict = book_gate(book, "buy", 0.5, BOOK_CFG)
            assert (verdict.action, verdict.imbalance_ratio, verdict.allowed_amount) == ("reduce", 4.0, 0.125)
        finally:
            await source.close()
            await exchange.close()

    run_scenario(scenario)


def test_fetch_limit_and_concurrent_gets_share_one_fetch(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance)

    async def scenario() -> None:
        exchange = client(fake_binance)
        source = OrderBookSource(exchange, BOOK_CFG, clock=clock, watch=False, fetch_limit=5)
        try:
            books = await asyncio.gather(*(source.get("ETH/USDT") for _ in range(3)))
            assert books[0] == books[1] == books[2]
            assert books[0].bids == ((1_999.0, 1.0), (1_998.0, 1.0))  # the fake's default book, top 2 levels
            assert books[0].last_trade_price == 2_000.0
            assert requests(fake_binance, "/api/v3/depth", symbol="ETHUSDT", limit="5") == 1
            with pytest.raises(InputError, match="NOPE/USDT"):
                await source.get("NOPE/USDT")
        finally:
            await exchange.close()

    run_scenario(scenario)


def test_watched_books_and_tickers_are_used_while_fresh(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    clock = Clock(fake_binance)
    fake_binance.set_book(BTC, BIDS, ASKS)
    streams = {"btcusdt@depth@100ms", "btcusdt@miniTicker"}

    async def scenario() -> None:
        exchange = client(fake_binance, fake_binance_ws)
        source = OrderBookSource(exchange, BOOK_CFG, clock=clock, backoff=FAST)
        try:
            assert source.watching
            first = await source.get("BTC/USDT")  # from REST; the streams start in the background
            assert first.bids == tuple(BIDS[:2])
            await until(lambda: streams <= fake_binance_ws.streams(), "subscriptions")
            await until(lambda: requests(fake_binance, "/api/v3/depth", limit="1000") == 1, "ccxt's snapshot")

            clock.advance(1)
            new_bids, new_asks = [(29_995.0, 3.0), *BIDS[1:]], [(30_001.0, 1.0), *ASKS]
            fake_binance.set_last_price(BTC, 30_002.0)
            assert fake_binance_ws.push_book(BTC, new_bids, new_asks) == 1
            assert fake_binance_ws.push_ticker(BTC) == 1
            expected = BookSnapshot("BTC/USDT", tuple(new_bids[:2]), tuple(new_asks[:2]), clock(), 30_002.0)
            await until(lambda: source.cached("BTC/USDT") == expected, "the pushed book and ticker")

            clock.advance(4)
            assert await source.get("BTC/USDT") == expected
            assert requests(fake_binance, "/api/v3/depth", limit="2") == 1  # only the first get fetched
            assert requests(fake_binance, "/api/v3/ticker/24hr") == 1

            clock.advance(2)  # no update for 6 s: the watched data is stale, REST answers instead
            book = await source.get("BTC/USDT")
            assert (book.bids, book.timestamp) == (tuple(new_bids[:2]), clock())
            assert requests(fake_binance, "/api/v3/depth", limit="2") == 2

            source.start(["ETH/USDT"])
            await until(lambda: "ethusdt@depth@100ms" in fake_binance_ws.streams(), "ETH subscription")
        finally:
            await source.close()
            await exchange.close()
        assert not source.watching

    run_scenario(scenario)


def test_a_missed_book_update_resubscribes_with_a_new_snapshot(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    clock = Clock(fake_binance)

    async def scenario() -> None:
        exchange = client(fake_binance, fake_binance_ws)
        source = OrderBookSource(exchange, BOOK_CFG, clock=clock, backoff=FAST)
        try:
            source.start(["BTC/USDT"])
            await until(lambda: requests(fake_binance, "/api/v3/depth", limit="1000") == 1, "ccxt's snapshot")
            await until(lambda: source.cached("BTC/USDT") is not None, "the first watched book")
            fake_binance.set_book(BTC, [(29_000.0, 1.0)], [(31_000.0, 1.0)])  # an update the stream misses
            clock.advance(1)
            fake_binance_ws.push_book(BTC, BIDS, ASKS)  # its update ids do not follow on: ccxt gives up
            await until(lambda: source.status.errors_total >= 1, "the sequence error")
            assert "BTC/USDT order book stream" in (source.status.last_error or "")
            await until(lambda: requests(fake_binance, "/api/v3/depth", limit="1000") == 2, "a new snapshot")
            await until(lambda: cached_bids(source) == tuple(BIDS[:2]), "the book in sync again")
            assert source.status.reachable
        finally:
            await source.close()
            await exchange.close()

    run_scenario(scenario)


def test_a_stale_book_that_cannot_be_refreshed_is_a_stale_book_error(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance)

    async def scenario() -> None:
        exchange = client(fake_binance)
        source = OrderBookSource(exchange, BOOK_CFG, clock=clock, watch=False)
        try:
            await source.get("BTC/USDT")
            clock.advance(6)
            fake_binance.fail_next(1, 500, path="/api/v3/depth")
            with pytest.raises(
                StaleBookError, match=r"newest one is 6\.0s old \(limit 5s\) and refreshing it"
            ):
                await source.get("BTC/USDT")
            assert not source.status.reachable
            # the old book is still there, with its own time, but never handed out as fresh
            held = source.cached("BTC/USDT")
            assert held is not None and book_age_s(held, clock()) == 6.0
            assert (await source.get("BTC/USDT")).timestamp == clock()  # the exchange answers again
        finally:
            await exchange.close()

    run_scenario(scenario)


def test_an_answer_slower_than_the_age_limit_is_stale(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance)
    depth = fake_binance.routes[("GET", "/api/v3/depth")]

    def slow_depth(params: dict[str, str]) -> Response:
        clock.advance(5.5)  # the exchange takes 5.5 s to answer
        return depth(params)

    fake_binance.routes[("GET", "/api/v3/depth")] = slow_depth

    async def scenario() -> None:
        exchange = client(fake_binance)
        source = OrderBookSource(exchange, BOOK_CFG, clock=clock, watch=False)
        try:
            with pytest.raises(StaleBookError, match=r"5\.5s old on arrival \(limit 5s\)"):
                await source.get("BTC/USDT")
        finally:
            await exchange.close()

    run_scenario(scenario)


def test_an_exchange_failure_without_a_book_is_an_exchange_error(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance)

    async def scenario() -> None:
        exchange = client(fake_binance)
        source = OrderBookSource(exchange, BOOK_CFG, clock=clock, watch=False)
        try:
            fake_binance.fail_next(1, 500, path="/api/v3/depth")
            with pytest.raises(ExchangeError, match="fetching the BTC/USDT order book") as raised:
                await source.get("BTC/USDT")
            assert not isinstance(raised.value, StaleBookError)
            assert isinstance(raised.value.__cause__, ccxt.ExchangeNotAvailable)
            assert source.status.consecutive_errors == 1
            fake_binance.fail_next(1, 500, path="/api/v3/ticker/24hr")
            with pytest.raises(ExchangeError, match="fetching the BTC/USDT ticker"):
                await source.get("BTC/USDT")
            await source.get("BTC/USDT")  # works again; then the exchange goes away
            fake_binance.stop()
            clock.advance(10)
            with pytest.raises(StaleBookError, match="refreshing it failed"):
                await source.get("BTC/USDT")
            with pytest.raises(ExchangeError) as raised:
                await source.get("ETH/USDT")
            assert not isinstance(raised.value, StaleBookError)
            assert isinstance(raised.value.__cause__, ccxt.NetworkError)
        finally:
            await exchange.close()

    run_scenario(scenario)


def test_exchanges_without_book_streams_only_fetch() -> None:
    exchange = ccxt.async_support.bitbank(CONFIG)  # in ccxt, not in ccxt.pro
    assert not OrderBookSource(exchange).watching
    asyncio.run(exchange.close())
