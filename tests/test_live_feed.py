"""CcxtLiveFeed through the real ccxt.pro binance client against local fakes of Binance's REST API and
kline WebSocket stream (no internet). The feed's clock and the fake's clock move together, by hand.

Async scenarios run with ``asyncio.run`` inside plain test functions (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from tests.fakes import fixtures, ws_fixtures
from tests.fakes.fake_binance import HOUR_MS, FakeBinance
from tests.fakes.fake_binance_ws import FakeBinanceWs
from tests.fakes.fixtures import FAKE_CCXT_CONFIG, FAKE_NOW_MS
from tradeguard.adapters.feeds.base import CandleFeed
from tradeguard.adapters.feeds.ccxt_live import CcxtLiveFeed
from tradeguard.adapters.status import Backoff
from tradeguard.core.candles import COLUMNS
from tradeguard.errors import ExchangeError, InputError

fake_binance = fixtures.fake_binance
fake_binance_ws = ws_fixtures.fake_binance_ws

H = HOUR_MS
T12 = FAKE_NOW_MS // H * H  # 12:00, the hourly candle forming at FAKE_NOW_MS (12:30)
FAST = Backoff(base_s=0.01, cap_s=0.05, jitter=False)
CONFIG = {**FAKE_CCXT_CONFIG, "timeout_on_exit": 0}
PAIRS = {"BTC/USDT": "BTCUSDT", "ETH/USDT": "ETHUSDT"}
BTC_STREAM = "btcusdt@kline_1h"
WAIT_S = 5.0


class Clock:
    """The feed's clock, which also moves the REST fake's clock."""

    def __init__(self, rest: FakeBinance, ms: int) -> None:
        self.rest = rest
        self.set(ms)

    def set(self, ms: int) -> None:
        self.ms = ms
        self.rest.now_ms = ms

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.ms / 1000, UTC)


class Collector:
    """An ``on_candles`` callback that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, pd.DataFrame]] = []

    async def __call__(self, pair: str, timeframe: str, frame: pd.DataFrame) -> None:
        self.calls.append((pair, timeframe, frame))

    def frame(self, pair: str = "BTC/USDT") -> pd.DataFrame:
        frames = [f for p, _, f in self.calls if p == pair]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)

    def opens(self, pair: str = "BTC/USDT") -> list[int]:
        return open_ms(self.frame(pair))


class SleepLog:
    """An injected ``sleep`` that records the delays the feed asks for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(seconds)


def open_ms(df: pd.DataFrame) -> list[int]:
    return (df["date"].astype("int64") // 1_000_000).tolist()


def expected_frame(fake: FakeBinance, symbol: str, times: list[int]) -> pd.DataFrame:
    """The fake's final candles at these open times as a Freqtrade frame."""
    rows = [fake.kline(symbol, "1h", t) for t in times]
    return pd.DataFrame(
        {
            "date": pd.to_datetime(times, unit="ms", utc=True).astype("datetime64[ns, UTC]"),
            **{col: [float(r[i]) for r in rows] for i, col in enumerate(COLUMNS[1:], start=1)},
        }
    )


def hours(first: int, last: int) -> list[int]:
    """Open times from ``first`` to ``last`` inclusive."""
    return list(range(first, last + 1, H))


def make_feed(
    rest: FakeBinance, clock: Clock, ws: FakeBinanceWs | None = None, **kwargs: Any
) -> CcxtLiveFeed:
    options: dict[str, Any] = {"backoff": FAST, "poll_interval_s": 0.02, "config": CONFIG}
    options.update(kwargs)
    ws_url = ws.url if ws is not None else None
    return CcxtLiveFeed("binance", api_url=rest.url, ws_url=ws_url, clock=clock, **options)


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def klines_since(rest: FakeBinance, start: int) -> int:
    """How many klines requests were answered since request number ``start``."""
    return sum(1 for r in rest.requests[start:] if r.path == "/api/v3/klines" and r.status == 200)


def run_scenario(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=10))


def pair_tasks(feed: CcxtLiveFeed) -> list[asyncio.Task[Any]]:
    """The feed's per-pair tasks still alive (they are named "<exchange> <pair>")."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(f"{feed.name} ")]


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


# -- construction --------------------------------------------------------------------------------------


def test_feed_is_a_candle_feed_pointed_at_the_fakes(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS)
    feed: CandleFeed = make_feed(fake_binance, clock, fake_binance_ws)
    assert isinstance(feed, CcxtLiveFeed)
    assert (feed.name, feed.synthetic, feed.streaming) == ("binance", False, True)
    assert feed.now() == datetime(2024, 1, 10, 12, 30, tzinfo=UTC)
    api = feed.exchange.urls["api"]
    assert api["public"] == fake_binance.url + "/api/v3"
    assert api["ws"]["spot"] == fake_binance_ws.url + "/ws"
    assert api["ws"]["ws-api"]["spot"] == fake_binance_ws.url + "/ws-api/v3"
    assert feed.exchange.options["fetchMarkets"]["types"] == ["spot"]


def test_exchanges_without_a_candle_stream_and_use_websocket_false_poll() -> None:
    assert CcxtLiveFeed("binance", use_websocket=False).streaming is False
    assert CcxtLiveFeed("bitbank").streaming is False  # in ccxt, not in ccxt.pro


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"exchange_id": "binanse"}, "did you mean binance"),
        ({"exchange_id": "binance", "ws_url": "http://127.0.0.1:1"}, "invalid URL .*expected ws://"),
        ({"exchange_id": "binance", "api_url": "ws://127.0.0.1:1"}, "invalid URL .*expected http://"),
        ({"exchange_id": "binance", "market_types": ["options"]}, "unsupported market type"),
        ({"exchange_id": "binance", "poll_interval_s": 0}, "must be positive"),
    ],
)
def test_bad_construction_is_an_input_error(args: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        CcxtLiveFeed(**args)


# -- seed ----------------------------------------------------------------------------------------------


def test_seed_returns_exactly_the_closed_candles(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS)

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock)
        try:
            frame = await feed.seed("btc/usdt", "1h", 50)
            pd.testing.assert_frame_equal(
                frame, expected_frame(fake_binance, "BTCUSDT", hours(T12 - 50 * H, T12 - H))
            )
            # exactly at 13:00 the 12:00 candle has closed: Binance serves 13:00 as the forming one
            clock.set(T12 + H)
            frame = await feed.seed("BTC/USDT", "1h", 2)
            assert open_ms(frame) == [T12 - H, T12]
            assert feed.status.reachable
        finally:
            await feed.close()

    run_scenario(scenario)


def test_seed_pages_through_the_history(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS)

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock)
        try:
            frame = await feed.seed("ETH/USDT", "1h", 2500)
        finally:
            await feed.close()
        assert open_ms(frame) == hours(T12 - 2500 * H, T12 - H)
        assert frame["close"].tolist() == [
            float(fake_binance.kline("ETHUSDT", "1h", t)[4]) for t in open_ms(frame)
        ]
        starts = [int(p["startTime"]) for p in fake_binance.klines_requests("ETHUSDT")]
        assert starts == [T12 - 2500 * H, T12 - 1500 * H, T12 - 500 * H]

    run_scenario(scenario)


def test_seed_retries_temporary_errors_then_gives_up(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS)
    sleeps = SleepLog()

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, sleep=sleeps, seed_attempts=3)
        try:
            fake_binance.fail_next(2, 503)
            frame = await feed.seed("BTC/USDT", "1h", 3)
            assert open_ms(frame) == hours(T12 - 3 * H, T12 - H)
            assert feed.status.errors_total == 2 and feed.status.reachable
            assert sleeps.delays == [0.01, 0.02]
            fake_binance.fail_next(3, 503, path="/api/v3/klines")
            with pytest.raises(ExchangeError, match="still failing after 3 attempts"):
                await feed.seed("BTC/USDT", "1h", 3)
            assert feed.status.consecutive_errors == 3 and not feed.status.reachable
            with pytest.raises(InputError, match="NOPE/USDT"):
                await feed.seed("NOPE/USDT", "1h", 3)
            with pytest.raises(InputError, match="divides one day"):
                await feed.seed("BTC/USDT", "1w", 3)
            with pytest.raises(InputError, match="has no 7m candles"):
                await feed.seed("BTC/USDT", "7m", 3)
        finally:
            await feed.close()

    run_scenario(scenario)


# -- streaming -----------------------------------------------------------------------------------------


def test_stream_delivers_each_closed_candle_once_with_its_final_values(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS)
    got = Collector()
    ws = fake_binance_ws

    def push(t: int, closed: bool) -> None:
        assert ws.push_kline("BTCUSDT", "1h", t, closed=closed) == 1

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, ws)
        task = asyncio.create_task(feed.run(["BTC/USDT"], "1h", got))
        try:
            await until(lambda: BTC_STREAM in ws.streams(), "the subscription")
            push(T12, closed=False)
            push(T12, closed=False)
            await asyncio.sleep(0.1)
            assert got.calls == []  # still forming
            # 13:00:00.5: the final update of 12:00, then the first of 13:00, which closes 12:00
            clock.set(T12 + H + 500)
            push(T12, closed=True)
            push(T12 + H, closed=False)
            await until(lambda: len(got.calls) == 1, "12:00")
            push(T12 + H, closed=False)
            push(T12, closed=True)  # a late repeat of a delivered candle
            clock.set(T12 + 2 * H + 300)
            push(T12 + H, closed=True)
            push(T12 + 2 * H, closed=False)
            await until(lambda: len(got.calls) == 2, "13:00")
            clock.set(T12 + 3 * H + 100)
            push(T12 + 2 * H, closed=True)
            push(T12 + 3 * H, closed=False)
            await until(lambda: len(got.calls) == 3, "14:00")
            await asyncio.sleep(0.05)
            await stop(task)
        finally:
            await feed.close()
        assert [(p, tf, len(f)) for p, tf, f in got.calls] == [("BTC/USDT", "1h", 1)] * 3
        pd.testing.assert_frame_equal(
            got.frame(), expected_frame(fake_binance, "BTCUSDT", hours(T12, T12 + 2 * H))
        )
        assert fake_binance.klines_requests() == []  # all from the stream
        assert [s.params for s in ws.subscriptions] == [(BTC_STREAM,)]
        assert feed.status.reachable and feed.status.errors_total == 0

    run_scenario(scenario)


def test_a_candle_closed_only_by_the_clock_is_confirmed_over_rest(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    """The stream goes quiet after a forming update: the clock closes the candle, REST gives its values."""
    clock = Clock(fake_binance, FAKE_NOW_MS)
    got = Collector()

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, fake_binance_ws, stream_idle_s=0.05, close_grace_s=2.0)
        task = asyncio.create_task(feed.run(["BTC/USDT"], "1h", got))
        try:
            await until(lambda: BTC_STREAM in fake_binance_ws.streams(), "the subscription")
            fake_binance_ws.push_kline("BTCUSDT", "1h", T12, closed=False)
            clock.set(T12 + H + 1000)  # closed, but within the grace: wait for the stream
            await asyncio.sleep(0.15)
            assert got.calls == [] and fake_binance.klines_requests() == []
            clock.set(T12 + H + 2000)
            await until(lambda: len(got.calls) == 1, "12:00 from REST")
            await stop(task)
        finally:
            await feed.close()
        pd.testing.assert_frame_equal(got.frame(), expected_frame(fake_binance, "BTCUSDT", [T12]))
        assert [int(p["startTime"]) for p in fake_binance.klines_requests()] == [T12]

    run_scenario(scenario)


def test_reconnect_recovers_the_candles_missed_while_disconnected(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS)
    got = Collector()
    sleeps = SleepLog()
    ws = fake_binance_ws

    def push(t: int, closed: bool) -> None:
        for symbol in PAIRS.values():
            ws.push_kline(symbol, "1h", t, closed=closed)

    def delivered(t: int) -> bool:
        return all(got.opens(pair)[-1:] == [t] for pair in PAIRS)

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, ws, sleep=sleeps)
        seeded = {pair: await feed.seed(pair, "1h", 5) for pair in PAIRS}
        task = asyncio.create_task(feed.run(list(PAIRS), "1h", got))
        try:
            await until(lambda: len(ws.streams()) == 2, "both subscriptions")
            assert ws.connections == 1  # ccxt multiplexes the pairs on one connection
            push(T12, closed=False)
            clock.set(T12 + H + 500)
            push(T12, closed=True)
            push(T12 + H, closed=False)
            await until(lambda: delivered(T12), "12:00")
            push(T12 + H, closed=False)
            await asyncio.sleep(0.05)  # both pairs wait on the stream again
            # the socket dies; the next two reconnects are refused; 13:00, 14:00, 15:00 close meanwhile
            ws.refuse_connections(2)
            assert ws.drop_connections() == 1
            clock.set(T12 + 4 * H + 30 * 60 * 1000)  # 16:30
            await until(lambda: delivered(T12 + 3 * H), "13:00 .. 15:00 over REST")
            await until(lambda: len(ws.streams()) == 2 and ws.refused_total == 2, "the resubscription")
            push(T12 + 3 * H, closed=True)  # a late repeat of a candle already delivered over REST
            push(T12 + 4 * H, closed=False)
            clock.set(T12 + 5 * H + 500)
            push(T12 + 4 * H, closed=True)
            push(T12 + 5 * H, closed=False)
            await until(lambda: delivered(T12 + 4 * H), "16:00 from the stream")
            await asyncio.sleep(0.05)
            await stop(task)
        finally:
            await feed.close()
        for pair, symbol in PAIRS.items():
            assert open_ms(seeded[pair]) == hours(T12 - 5 * H, T12 - H)
            opens = got.opens(pair)
            assert opens == hours(T12, T12 + 4 * H), f"{pair}: lost or repeated candles"
            pd.testing.assert_frame_equal(got.frame(pair), expected_frame(fake_binance, symbol, opens))
        # per pair, the disconnect and the refused handshakes are errors retried after 0.01, 0.02, 0.04 s:
        # the REST catch-up in between does not reset the backoff, only the stream's recovery does
        assert set(sleeps.delays) == {0.01, 0.02, 0.04} and sleeps.delays.count(0.01) == 2
        assert feed.status.errors_total >= 3
        assert feed.status.last_error is not None and "binance" in feed.status.last_error
        assert feed.status.reachable
        assert ws.connections_total == 2

    run_scenario(scenario)


def test_a_disconnect_while_the_consumer_is_busy_is_not_missed(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    """ccxt reports a dropped socket only to calls waiting on it; one that starts later just reconnects.

    Here the 13:00 candle's forming update arrives, then the socket drops while the consumer still handles
    12:00, and 13:00 closes before the reconnect: its last update on the stream was not its final one.
    """
    clock = Clock(fake_binance, FAKE_NOW_MS)
    got = Collector()
    busy = asyncio.Event()
    release = asyncio.Event()
    ws = fake_binance_ws

    async def slow_consumer(pair: str, timeframe: str, frame: pd.DataFrame) -> None:
        await got(pair, timeframe, frame)
        if len(got.calls) == 1:
            busy.set()
            await release.wait()

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, ws)
        task = asyncio.create_task(feed.run(["BTC/USDT"], "1h", slow_consumer))
        try:
            await until(lambda: BTC_STREAM in ws.streams(), "the subscription")
            ws.push_kline("BTCUSDT", "1h", T12, closed=False)
            clock.set(T12 + H + 500)
            ws.push_kline("BTCUSDT", "1h", T12, closed=True)
            ws.push_kline("BTCUSDT", "1h", T12 + H, closed=False)
            await asyncio.wait_for(busy.wait(), WAIT_S)
            await asyncio.sleep(0.05)  # ccxt caches the 13:00 update meanwhile
            ws.drop_connections()
            await until(lambda: ws.connections == 0, "the drop")
            await asyncio.sleep(0.05)
            clock.set(T12 + 2 * H + 500)
            release.set()
            await until(lambda: BTC_STREAM in ws.streams(), "the resubscription")
            ws.push_kline("BTCUSDT", "1h", T12 + 2 * H, closed=False)
            await until(lambda: len(got.calls) == 2, "13:00")
            await stop(task)
        finally:
            await feed.close()
        pd.testing.assert_frame_equal(got.frame(), expected_frame(fake_binance, "BTCUSDT", [T12, T12 + H]))
        assert [int(p["startTime"]) for p in fake_binance.klines_requests()] == [T12 + H]

    run_scenario(scenario)


def test_run_continues_from_the_seed(fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs) -> None:
    """A candle that closes between seed and run is delivered by run, over REST."""
    clock = Clock(fake_binance, FAKE_NOW_MS)
    got = Collector()

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, fake_binance_ws)
        try:
            assert open_ms(await feed.seed("BTC/USDT", "1h", 2)) == [T12 - 2 * H, T12 - H]
            clock.set(T12 + 2 * H + 60_000)  # 12:00 and 13:00 closed since
            task = asyncio.create_task(feed.run(["BTC/USDT"], "1h", got))
            await until(lambda: len(got.calls) == 1, "the catch-up")
            await stop(task)
        finally:
            await feed.close()
        assert got.opens() == [T12, T12 + H]

    run_scenario(scenario)


# -- polling -------------------------------------------------------------------------------------------


def test_rest_polling_delivers_every_closed_candle_once_through_errors(fake_binance: FakeBinance) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS)
    got = Collector()

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, use_websocket=False, poll_interval_s=0.01)
        assert not feed.streaming
        task = asyncio.create_task(feed.run(["BTC/USDT"], "1h", got))
        try:
            start = len(fake_binance.requests)
            await until(lambda: klines_since(fake_binance, start) >= 3, "a few polls")
            assert got.calls == []  # 12:00 is forming
            clock.set(T12 + 2 * H + 5000)
            await until(lambda: got.opens() == [T12, T12 + H], "12:00 and 13:00")
            fake_binance.fail_next(3, 500, path="/api/v3/klines")
            await until(lambda: feed.status.consecutive_errors == 3, "three failed polls")
            clock.set(T12 + 3 * H + 5000)
            await until(lambda: got.opens()[-1:] == [T12 + 2 * H], "14:00")
            start = len(fake_binance.requests)
            await until(lambda: klines_since(fake_binance, start) >= 3, "a few more polls")
            await stop(task)
        finally:
            await feed.close()
        assert [len(f) for _, _, f in got.calls] == [2, 1]
        pd.testing.assert_frame_equal(
            got.frame(), expected_frame(fake_binance, "BTCUSDT", hours(T12, T12 + 2 * H))
        )
        assert feed.status.errors_total == 3 and feed.status.reachable
        polls = [int(p["startTime"]) for p in fake_binance.klines_requests()]
        assert polls == sorted(polls) and polls[-1] == T12 + 3 * H  # always from the next candle on

    run_scenario(scenario)


def test_a_rest_answer_from_before_the_close_is_not_taken_as_final(fake_binance: FakeBinance) -> None:
    """The poll at 12:59:59 is answered late: 12:00 was forming in it, though the clock now says closed."""
    clock = Clock(fake_binance, T12 + H - 1000)
    got = Collector()
    klines = fake_binance.routes[("GET", "/api/v3/klines")]
    late: list[int] = []

    def late_klines(params: dict[str, str]) -> tuple[int, object]:
        status, body = klines(params)
        if not late and isinstance(body, list) and body:
            body[-1] = [*body[-1][:4], body[-1][1], *body[-1][5:]]  # forming: close still at the open
            late.append(int(params["startTime"]))
            clock.set(T12 + H + 5000)  # the answer arrives after 12:00 closed
        return status, body

    fake_binance.routes[("GET", "/api/v3/klines")] = late_klines

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, use_websocket=False, poll_interval_s=0.01)
        task = asyncio.create_task(feed.run(["BTC/USDT"], "1h", got))
        try:
            await until(lambda: len(got.calls) == 1, "12:00")
            await stop(task)
        finally:
            await feed.close()
        assert late == [T12]
        pd.testing.assert_frame_equal(got.frame(), expected_frame(fake_binance, "BTCUSDT", [T12]))

    run_scenario(scenario)


# -- lifecycle -----------------------------------------------------------------------------------------


def test_cancellation_stops_every_pair_cleanly_even_during_backoff(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS)
    sleeps = SleepLog()

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, fake_binance_ws, sleep=sleeps, backoff=Backoff(30, 60, False))
        try:
            task = asyncio.create_task(feed.run(list(PAIRS), "1h", Collector()))
            await until(lambda: len(fake_binance_ws.streams()) == 2, "the subscriptions")
            fake_binance_ws.drop_connections()
            await until(lambda: len(sleeps.delays) == 2, "both pairs backing off")
            assert sleeps.delays == [30, 30]
            await stop(task)
            assert pair_tasks(feed) == []
            task = asyncio.create_task(feed.run(list(PAIRS), "1h", Collector()))
            await until(lambda: fake_binance_ws.connections == 1, "a new connection")
            await stop(task)
        finally:
            await feed.close()
        await until(lambda: fake_binance_ws.connections == 0, "close() to close the socket")

    run_scenario(scenario)


def test_unknown_pairs_and_consumer_errors_end_run(
    fake_binance: FakeBinance, fake_binance_ws: FakeBinanceWs
) -> None:
    clock = Clock(fake_binance, FAKE_NOW_MS + H)

    async def failing(pair: str, timeframe: str, frame: pd.DataFrame) -> None:
        raise RuntimeError("consumer bug")

    async def scenario() -> None:
        feed = make_feed(fake_binance, clock, fake_binance_ws)
        try:
            with pytest.raises(InputError, match="NOPE/USDT"):
                await feed.run(["BTC/USDT", "NOPE/USDT"], "1h", Collector())
            with pytest.raises(InputError, match="at least one pair"):
                await feed.run([], "1h", Collector())
            await feed.seed("BTC/USDT", "1h", 1)
            clock.set(FAKE_NOW_MS + 2 * H)  # one candle to deliver, over REST, to a consumer that fails
            with pytest.raises(RuntimeError, match="consumer bug"):
                await feed.run(["BTC/USDT", "ETH/USDT"], "1h", failing)
            assert pair_tasks(feed) == []
        finally:
            await feed.close()

    run_scenario(scenario)
