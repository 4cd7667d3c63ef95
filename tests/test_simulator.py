"""MarketSimulator and SimulatorFeed: determinism, valid OHLCV, stylized facts, seed/run continuity."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tradeguard.adapters.feeds.base import CandleFeed
from tradeguard.adapters.feeds.simulator import (
    REGIME_NAMES,
    MarketSimulator,
    SimulatorFeed,
    simulate_candles,
)
from tradeguard.core.candles import COLUMNS, resample, validate_frame
from tradeguard.errors import InputError

START = datetime(2024, 1, 1, tzinfo=UTC)
N = 20_000
HOUR = timedelta(hours=1)


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps (plus an optional lag per sleep)."""

    def __init__(self, lag_s: float = 0.0) -> None:
        self.t = 1_000.0
        self.lag_s = lag_s
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds + self.lag_s
        await asyncio.sleep(0)


async def collect(
    feed: CandleFeed, pairs: list[str], timeframe: str, calls: int
) -> list[tuple[str, pd.DataFrame, datetime]]:
    """Run the feed until `calls` deliveries arrive, as (pair, frame, feed.now() at delivery); then cancel."""
    got: list[tuple[str, pd.DataFrame, datetime]] = []

    async def on_candles(pair: str, tf: str, frame: pd.DataFrame) -> None:
        assert tf == timeframe
        got.append((pair, frame, feed.now()))

    task = asyncio.create_task(feed.run(pairs, timeframe, on_candles))
    while len(got) < calls:
        if task.done():
            task.result()
            raise AssertionError("run() returned before it was cancelled")
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return got


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    sim = MarketSimulator(START, "1h", seed=7)
    return {
        "BTC": sim.candles("BTC/USDT", 0, N),
        "ETH": sim.candles("ETH/USDT", 0, N),
        "regimes": sim.regimes("BTC/USDT", 0, N),
    }


def log_returns(frame: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(frame["close"].to_numpy()))


# --- the generator ---------------------------------------------------------------------------------------


def test_same_seed_same_candles_and_another_seed_differs() -> None:
    a = simulate_candles("BTC/USDT", 600, START, seed=1)
    b = simulate_candles("BTC/USDT", 600, START, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"], simulate_candles("BTC/USDT", 600, START, seed=2)["close"])
    assert list(a.columns) == COLUMNS
    pd.testing.assert_frame_equal(validate_frame(a), a)
    assert a["date"].iloc[0] == pd.Timestamp(START)
    assert (a["date"].diff().dropna() == pd.Timedelta(hours=1)).all()


def test_a_pair_does_not_depend_on_slicing_or_other_pairs() -> None:
    whole = MarketSimulator(START, "1h", seed=5).candles("ETH/USDT", 0, 1000)
    sliced = MarketSimulator(START, "1h", seed=5)
    sliced.candles("SOL/USDT", 0, 900)  # another pair first: it must not shift ETH's random numbers
    parts = [sliced.candles("ETH/USDT", lo, hi) for lo, hi in ((0, 250), (250, 260), (260, 777), (777, 1000))]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)
    pd.testing.assert_frame_equal(
        sliced.candles("ETH/USDT", 300, 700), whole.iloc[300:700].reset_index(drop=True)
    )


def test_start_prices_are_plausible_and_anchored() -> None:
    assert simulate_candles("BTC/USDT", 1, START)["open"].iloc[0] == pytest.approx(60_000)
    assert simulate_candles("ETH/USDT", 1, START)["open"].iloc[0] == pytest.approx(3_000)
    assert simulate_candles("XRP/USDT", 1, START)["open"].iloc[0] == pytest.approx(1.0)
    anchored = MarketSimulator(START, "1h", seed=0, anchor=700).candles("BTC/USDT", 699, 701)
    assert anchored["close"].iloc[0] == pytest.approx(60_000)
    assert anchored["open"].iloc[1] == pytest.approx(60_000)


def test_ohlcv_is_valid(market: dict[str, pd.DataFrame]) -> None:
    for frame in (market["BTC"], market["ETH"]):
        prices = frame[["open", "high", "low", "close"]].to_numpy()
        assert np.isfinite(prices).all() and (prices > 0).all()
        assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
        assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
        assert (frame["volume"] >= 0).all() and np.isfinite(frame["volume"]).all()
        np.testing.assert_allclose(frame["open"].to_numpy()[1:], frame["close"].to_numpy()[:-1])
        assert (frame["date"].diff().dropna() == pd.Timedelta(hours=1)).all()


def test_volatility_clusters(market: dict[str, pd.DataFrame]) -> None:
    abs_r = np.abs(log_returns(market["BTC"]))
    acf = [np.corrcoef(abs_r[:-lag], abs_r[lag:])[0, 1] for lag in range(1, 11)]
    assert min(acf) > 0.1, acf


def test_returns_have_fat_tails(market: dict[str, pd.DataFrame]) -> None:
    for name in ("BTC", "ETH"):
        assert pd.Series(log_returns(market[name])).kurt() > 3


def test_regimes_switch_between_distinct_volatility_levels(market: dict[str, pd.DataFrame]) -> None:
    regimes = market["regimes"]["market_regime"].to_numpy()[1:]
    assert set(regimes) == set(REGIME_NAMES)
    r = log_returns(market["BTC"])
    vol = {name: r[regimes == name].std() for name in REGIME_NAMES}
    assert vol["crash"] > vol["turbulent"] > 2 * vol["calm"]
    assert vol["calm"] < vol["trending_up"] < vol["turbulent"]
    switches = (market["regimes"]["market_regime"] != market["regimes"]["market_regime"].shift()).sum()
    assert switches > 50


def test_crashes_and_jumps_happen(market: dict[str, pd.DataFrame]) -> None:
    regimes = market["regimes"]["market_regime"]
    crashes = ((regimes == "crash") & (regimes.shift() != "crash")).sum()
    assert crashes >= 1
    log_close = np.log(market["BTC"]["close"])
    assert log_close.diff(24).min() < -0.10  # a day losing over 10 %
    r = log_returns(market["BTC"])
    calm = r[market["regimes"]["market_regime"].to_numpy()[1:] == "calm"]
    assert r.min() < -8 * calm.std()  # a jump far outside calm-market noise


def test_pairs_move_together_and_volume_follows_volatility(market: dict[str, pd.DataFrame]) -> None:
    corr = np.corrcoef(log_returns(market["BTC"]), log_returns(market["ETH"]))[0, 1]
    assert 0.5 < corr < 0.97
    btc = market["BTC"]
    quote_volume = btc["volume"] * btc["close"]
    assert np.corrcoef(quote_volume, np.log(btc["high"] / btc["low"]))[0, 1] > 0.3


def test_volatility_scales_with_the_timeframe() -> None:
    hourly = log_returns(simulate_candles("BTC/USDT", 8000, START, "1h", seed=3)).std()
    daily = log_returns(simulate_candles("BTC/USDT", 1000, START, "1d", seed=3)).std()
    assert 0.5 < daily / (hourly * 24**0.5) < 2


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        MarketSimulator(START, seed=-1)
    with pytest.raises(InputError):
        MarketSimulator(datetime(2024, 1, 1))  # naive: refused, not guessed
    with pytest.raises(InputError):
        MarketSimulator(START).candles("BTC/USDT", -1, 5)


# --- the feed --------------------------------------------------------------------------------------------

FEED_START = datetime(2024, 3, 1, 12, tzinfo=UTC)


def make_feed(fake: FakeTime, speed: float = 3600, timeframe: str = "1h") -> SimulatorFeed:
    return SimulatorFeed(
        pairs=["BTC/USDT", "ETH/USDT"],
        seed=3,
        speed=speed,
        start=FEED_START,
        timeframe=timeframe,
        history=500,
        clock=fake.monotonic,
        sleep=fake.sleep,
    )


def test_feed_is_labelled_synthetic_and_seeds_up_to_its_clock() -> None:
    feed = make_feed(FakeTime())
    assert feed.synthetic is True and feed.name == "simulator"
    assert feed.now() == FEED_START
    seeded = asyncio.run(feed.seed("BTC/USDT", "1h", 200))
    assert len(seeded) == 200
    assert seeded["date"].iloc[-1] + HOUR == pd.Timestamp(FEED_START)  # the newest closed candle
    assert seeded["close"].iloc[-1] == pytest.approx(60_000)  # the market is anchored at the feed's start
    everything = asyncio.run(feed.seed("BTC/USDT", "1h", 100_000))
    assert 500 <= len(everything) < 500 + 24  # history, from the start of a UTC day
    pd.testing.assert_frame_equal(everything.tail(200).reset_index(drop=True), seeded)


def test_run_continues_seed_one_candle_per_interval() -> None:
    fake = FakeTime()
    feed = make_feed(fake)
    pairs = ["BTC/USDT", "ETH/USDT"]

    async def scenario() -> tuple[dict[str, pd.DataFrame], list[tuple[str, pd.DataFrame, datetime]]]:
        seeded = {p: await feed.seed(p, "1h", 100) for p in pairs}
        return seeded, await collect(feed, pairs, "1h", calls=12)

    seeded, got = asyncio.run(scenario())
    assert [pair for pair, _, _ in got] == pairs * 6
    for _, frame, now in got:
        assert len(frame) == 1 and list(frame.columns) == COLUMNS
        assert frame["date"].iloc[-1] + HOUR == pd.Timestamp(now)  # closed, delivered the moment it closed
    assert fake.slept[:6] == [1.0] * 6  # 3600 simulated s per real s: one 1h candle a second
    for pair in pairs:
        emitted = pd.concat([f for p, f, _ in got if p == pair], ignore_index=True)
        joined = pd.concat([seeded[pair], emitted], ignore_index=True)
        assert joined["date"].is_unique
        assert (joined["date"].diff().dropna() == pd.Timedelta(hours=1)).all()  # no gap, no duplicate
        again = asyncio.run(feed.seed(pair, "1h", 300))  # the same candles, asked again afterwards
        again = again[again["date"] <= joined["date"].iloc[-1]].tail(len(joined)).reset_index(drop=True)
        pd.testing.assert_frame_equal(again, joined)


def test_run_batches_when_the_loop_falls_behind() -> None:
    fake = FakeTime(lag_s=3.5)  # each wake-up comes 3.5 s (3.5 candles) late
    feed = make_feed(fake)
    got = asyncio.run(collect(feed, ["BTC/USDT"], "1h", calls=5))
    frames = [f for _, f, _ in got]
    assert max(len(f) for f in frames) >= 3
    dates = pd.concat(frames, ignore_index=True)["date"]
    assert (dates.diff().dropna() == pd.Timedelta(hours=1)).all()
    assert dates.iloc[0] == pd.Timestamp(FEED_START)
    assert all(f["date"].iloc[-1] + HOUR <= pd.Timestamp(now) for _, f, now in got)


def test_longer_timeframes_are_resampled_consistently() -> None:
    fake = FakeTime()
    feed = make_feed(fake)
    four_hourly = asyncio.run(feed.seed("ETH/USDT", "4h", 10))
    hourly = asyncio.run(feed.seed("ETH/USDT", "1h", 40))
    pd.testing.assert_frame_equal(four_hourly, resample(hourly, 3600, 4 * 3600))
    got = asyncio.run(collect(feed, ["ETH/USDT"], "4h", calls=2))
    assert [len(f) for _, f, _ in got] == [1, 1]
    assert got[0][1]["date"].iloc[0] == pd.Timestamp(FEED_START)
    assert fake.slept[:2] == [4.0, 4.0]


def test_feed_refuses_unknown_pairs_and_timeframes() -> None:
    feed = make_feed(FakeTime())
    with pytest.raises(InputError, match=r"BTC/USDT, ETH/USDT"):
        asyncio.run(feed.seed("DOGE/USDT", "1h", 10))
    with pytest.raises(InputError, match="DOGE/USDT"):
        asyncio.run(collect(feed, ["DOGE/USDT"], "1h", calls=1))
    for timeframe in ("5m", "7h", "1w"):
        with pytest.raises(InputError):
            asyncio.run(feed.seed("BTC/USDT", timeframe, 10))
    with pytest.raises(InputError):
        make_feed(FakeTime(), speed=0)
    with pytest.raises(InputError):
        make_feed(FakeTime(), timeframe="7m")
