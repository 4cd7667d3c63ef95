"""ReplayFeed: a Freqtrade data directory replayed as if live, on an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.test_simulator import FakeTime, collect
from tradeguard.adapters.candle_files import write_candles
from tradeguard.adapters.feeds.replay import ReplayClock, ReplayFeed
from tradeguard.adapters.feeds.simulator import simulate_candles
from tradeguard.core.candles import COLUMNS, resample
from tradeguard.errors import DataNotFoundError, InputError

BTC_START = datetime(2024, 1, 1, tzinfo=UTC)
ETH_START = datetime(2024, 1, 3, tzinfo=UTC)  # starts later: the common span begins here
HOUR = timedelta(hours=1)
ETH_GAP = range(150, 153)  # rows missing from ETH's file


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    write_candles(simulate_candles("BTC/USDT", 300, BTC_START, seed=1), tmp_path, "BTC/USDT", "1h")
    eth = simulate_candles("ETH/USDT", 250, ETH_START, seed=1).drop(index=list(ETH_GAP))
    write_candles(eth.reset_index(drop=True), tmp_path, "ETH/USDT", "1h")
    return tmp_path


def disk(data_dir: Path, pair: str) -> pd.DataFrame:
    stem = pair.replace("/", "_")
    return pd.read_feather(data_dir / f"{stem}-1h.feather")


def make_feed(
    data_dir: Path,
    fake: FakeTime,
    speed: float = 3600,
    start: datetime | None = None,
    pairs: list[str] | None = None,
) -> ReplayFeed:
    return ReplayFeed(
        data_dir, pairs=pairs, speed=speed, start=start, history=100, clock=fake.monotonic, sleep=fake.sleep
    )


def test_replay_is_real_data_replayed_and_starts_after_the_history(data_dir: Path) -> None:
    feed = make_feed(data_dir, FakeTime())
    assert feed.name == "replay" and feed.synthetic is False and feed.replayed is True
    start = ETH_START + 100 * HOUR  # close time of candle 100 of the span both pairs share
    assert feed.now() == start
    position = feed.position()
    assert position.start == start and position.now == start and not position.finished
    assert position.data_start == BTC_START
    assert position.data_end == BTC_START + 300 * HOUR
    assert position.as_dict()["replayed"] is True
    assert position.progress_ratio == 0.0


def test_seed_returns_only_candles_closed_by_the_replay_clock(data_dir: Path) -> None:
    feed = make_feed(data_dir, FakeTime())
    btc = asyncio.run(feed.seed("BTC/USDT", "1h", 50))
    assert len(btc) == 50 and list(btc.columns) == COLUMNS
    assert btc["date"].iloc[-1] + HOUR == pd.Timestamp(feed.now())
    expected = disk(data_dir, "BTC/USDT")
    expected = expected[expected["date"] + HOUR <= pd.Timestamp(feed.now())].tail(50).reset_index(drop=True)
    pd.testing.assert_frame_equal(btc, expected, check_dtype=False)
    everything = asyncio.run(feed.seed("ETH/USDT", "1h", 10_000))
    assert len(everything) == 100  # ETH's first 100 candles, nothing newer
    four_hourly = asyncio.run(feed.seed("BTC/USDT", "4h", 5))  # resampled by load_market_data
    assert (four_hourly["date"] + 4 * HOUR <= pd.Timestamp(feed.now())).all()
    hourly = asyncio.run(feed.seed("BTC/USDT", "1h", 20))
    pd.testing.assert_frame_equal(four_hourly, resample(hourly, 3600, 4 * 3600), check_dtype=False)


def test_run_emits_in_order_at_the_right_simulated_times(data_dir: Path) -> None:
    fake = FakeTime()
    feed = make_feed(data_dir, fake, start=ETH_START + 148 * HOUR)  # ETH's gap is two candles ahead
    pairs = ["BTC/USDT", "ETH/USDT"]

    async def scenario() -> tuple[dict[str, pd.DataFrame], list[tuple[str, pd.DataFrame, datetime]]]:
        seeded = {p: await feed.seed(p, "1h", 30) for p in pairs}
        return seeded, await collect(feed, pairs, "1h", calls=14)

    seeded, got = asyncio.run(scenario())
    for _, frame, now in got:
        assert len(frame) == 1
        assert frame["date"].iloc[0] + HOUR == pd.Timestamp(now)  # delivered when it closed, not before
    assert fake.slept[:5] == [1.0] * 5  # 3600 simulated s per real s: one 1h candle a second
    for pair in pairs:
        emitted = pd.concat([f for p, f, _ in got if p == pair], ignore_index=True)
        joined = pd.concat([seeded[pair], emitted], ignore_index=True)
        on_disk = disk(data_dir, pair)
        first = on_disk.index[on_disk["date"] == joined["date"].iloc[0]][0]
        expected = on_disk.iloc[first : first + len(joined)].reset_index(drop=True)
        pd.testing.assert_frame_equal(joined, expected, check_dtype=False)  # in order, no repeats, no holes
    eth_dates = [f["date"].iloc[0] for p, f, _ in got if p == "ETH/USDT"]
    gap = pd.Timestamp(ETH_START) + ETH_GAP.start * HOUR
    assert gap not in eth_dates and gap + len(ETH_GAP) * HOUR in eth_dates  # the gap stays a gap


def test_run_batches_candles_when_the_replay_outruns_the_loop(data_dir: Path) -> None:
    fake = FakeTime(lag_s=4.0)
    feed = make_feed(data_dir, fake)
    got = asyncio.run(collect(feed, ["BTC/USDT"], "1h", calls=4))
    frames = [f for _, f, _ in got]
    assert max(len(f) for f in frames) >= 4
    dates = pd.concat(frames, ignore_index=True)["date"]
    assert dates.iloc[0] == pd.Timestamp(ETH_START + 100 * HOUR)
    assert (dates.diff().dropna() == pd.Timedelta(hours=1)).all()
    assert all(f["date"].iloc[-1] + HOUR <= pd.Timestamp(now) for _, f, now in got)


def test_end_of_data_leaves_the_feed_idle_and_says_so(data_dir: Path) -> None:
    fake = FakeTime()
    feed = make_feed(data_dir, fake, speed=3600 * 50)  # 50 candles a second
    got: list[pd.DataFrame] = []

    async def scenario() -> None:
        async def on_candles(pair: str, timeframe: str, frame: pd.DataFrame) -> None:
            got.append(frame)

        task = asyncio.create_task(feed.run(["BTC/USDT"], "1h", on_candles))
        for _ in range(1000):
            await asyncio.sleep(0)
            if feed.status.last_error:
                break
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()  # idle, not crashed, not returned
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert feed.status.last_error is not None and "replay finished" in feed.status.last_error
    assert not feed.status.reachable
    delivered = pd.concat(got, ignore_index=True)
    assert delivered["date"].iloc[-1] == pd.Timestamp(BTC_START + 299 * HOUR)
    assert delivered["date"].is_unique
    position = feed.position()
    assert position.finished and position.progress_ratio == 1.0


def test_unknown_pair_names_the_available_ones(data_dir: Path) -> None:
    feed = make_feed(data_dir, FakeTime())
    with pytest.raises(InputError, match=r"BTC/USDT, ETH/USDT"):
        asyncio.run(feed.seed("XRP/USDT", "1h", 10))
    with pytest.raises(InputError, match="XRP/USDT"):
        asyncio.run(collect(feed, ["BTC/USDT", "XRP/USDT"], "1h", calls=1))
    with pytest.raises(InputError, match=r"BTC/USDT, ETH/USDT"):
        make_feed(data_dir, FakeTime(), pairs=["XRP/USDT"]).now()


def test_bad_arguments(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        ReplayFeed(tmp_path / "missing")
    with pytest.raises(InputError):
        make_feed(data_dir, FakeTime(), speed=0)
    with pytest.raises(InputError):
        make_feed(data_dir, FakeTime(), start=datetime(2024, 1, 5))  # naive start: refused, not guessed
    with pytest.raises(InputError):
        ReplayClock(BTC_START, speed=float("inf"))


def test_replays_real_binance_data(shared_data: Path) -> None:
    crash = datetime(2020, 3, 12, 12, tzinfo=UTC)
    feed = ReplayFeed(shared_data / "binance", pairs=["BTC/USDT", "ETH/USDT"], speed=3600, start=crash)
    btc = asyncio.run(feed.seed("BTC/USDT", "1h", 500))
    assert len(btc) == 500 and btc["date"].iloc[-1] + HOUR == pd.Timestamp(crash)
    assert feed.position().data_start.year == 2018
