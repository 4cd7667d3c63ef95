"""Replay of a Freqtrade data directory as if it were a live exchange (`--data-dir DIR --speed N`).

A replay clock stands at `start` until `run()` is first called, then advances `speed` simulated seconds per
real second. `seed()` returns candles closed by the replay clock, `run()` hands each candle over once the
clock passes its close time (several per call when the speed outruns the event loop). When every replayed
pair has run out of data the feed idles until cancelled and its status says "replay finished".

The candles are real market data, only replayed: `synthetic` is False, `replayed` is True and `position()`
tells where the replay stands, so answers can say which moment of history they describe.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tradeguard.adapters.candle_files import available_pairs, parse_pair
from tradeguard.adapters.feeds.base import OnCandles
from tradeguard.adapters.status import SourceStatus
from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.errors import DataNotFoundError, InputError
from tradeguard.guards.market import load_market_data

DEFAULT_HISTORY = 2000  # candles of the data replayed as history before the default start
MIN_SLEEP_S = 1e-3  # shortest wait between two looks at the clock, so rounding can never spin the loop
NS = 1_000_000_000


def to_ns(moment: datetime | pd.Timestamp) -> int:
    """Nanoseconds since the epoch of a timezone-aware moment; a naive one is refused, never guessed."""
    ts = pd.Timestamp(moment)
    if ts.tzinfo is None:
        raise InputError(f"{moment} has no timezone: give UTC times, e.g. 2024-01-01T00:00:00Z")
    return int(ts.as_unit("ns").value)


def from_ns(ns: int) -> datetime:
    """A UTC datetime (microseconds: what datetime holds) from nanoseconds since the epoch."""
    return pd.Timestamp(ns - ns % 1000, unit="ns", tz="UTC").to_pydatetime()


def check_speed(speed: float) -> float:
    if not (math.isfinite(speed) and speed > 0):
        raise InputError(f"speed must be a positive number of simulated seconds per second, not {speed}")
    return float(speed)


def open_ns(frame: pd.DataFrame) -> np.ndarray:
    """Open times (ns since the epoch) of a candle frame's rows."""
    return frame["date"].to_numpy(dtype="datetime64[ns]").astype(np.int64)


class ReplayClock:
    """Simulated UTC time: stands at `start` until `begin()`, then runs `speed` simulated s per real s."""

    def __init__(self, start: datetime, speed: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.start_ns = to_ns(start)
        self.speed = check_speed(speed)
        self._clock = clock
        self._began: float | None = None

    def begin(self) -> None:
        """Start the clock (later calls do nothing)."""
        if self._began is None:
            self._began = self._clock()

    def now_ns(self) -> int:
        if self._began is None:
            return self.start_ns
        return self.start_ns + int((self._clock() - self._began) * self.speed * 1e6) * 1000  # whole µs

    def now(self) -> datetime:
        return from_ns(self.now_ns())

    def real_seconds_until(self, moment_ns: int) -> float:
        """Real seconds until the clock reaches `moment_ns` (at least MIN_SLEEP_S)."""
        return max((moment_ns - self.now_ns()) / NS / self.speed, MIN_SLEEP_S)


@dataclass(frozen=True, slots=True)
class ReplayPosition:
    """Where a replay stands: the simulated now inside the span of the replayed data."""

    data_start: datetime  # open time of the earliest replayed candle
    data_end: datetime  # close time of the latest replayed candle
    start: datetime  # where the replay clock started
    now: datetime
    speed: float
    finished: bool

    @property
    def progress_ratio(self) -> float:
        """Share of the data between `start` and `data_end` already replayed (0–1)."""
        span = (self.data_end - self.start).total_seconds()
        done = (self.now - self.start).total_seconds()
        return 1.0 if span <= 0 else min(max(done / span, 0.0), 1.0)

    def as_dict(self) -> dict[str, object]:
        return {
            "replayed": True,
            "data_start": _iso(self.data_start),
            "data_end": _iso(self.data_end),
            "start": _iso(self.start),
            "now": _iso(self.now),
            "speed": self.speed,
            "progress_ratio": round(self.progress_ratio, 6),
            "finished": self.finished,
        }


class ReplayFeed:
    """A CandleFeed replaying a Freqtrade data directory.

    `pairs` (default: every pair with `timeframe` files in `data_dir`) fix the replayed span; other pairs of
    the directory may still be seeded and run. `start` defaults to the close time of candle number `history`
    of the span all those pairs share (half-way through that span when it is shorter than 2 x `history`).
    Data is loaded, cleaned and resampled by `load_market_data` on first use; gaps stay gaps.
    """

    name = "replay"
    synthetic = False
    replayed = True

    def __init__(
        self,
        data_dir: Path,
        pairs: Sequence[str] | None = None,
        timeframe: str = "1h",
        speed: float = 1.0,
        start: datetime | None = None,
        history: int = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise DataNotFoundError(f"data directory {self.data_dir} does not exist")
        if history < 1:
            raise InputError(f"history must be at least one candle, not {history}")
        timeframe_seconds(timeframe)
        self.pairs = [parse_pair(p) for p in pairs] if pairs is not None else None
        self.timeframe = timeframe
        self.speed = check_speed(speed)
        self.status = SourceStatus(self.name)
        self._start_ns = to_ns(start) if start is not None else None
        self._history = history
        self._clock_fn = clock
        self._sleep = sleep
        self._frames: dict[tuple[str, str], pd.DataFrame] = {}
        self._clock: ReplayClock | None = None
        self._span_ns: tuple[int, int] = (0, 0)

    def now(self) -> datetime:
        return self._replay_clock().now()

    def position(self) -> ReplayPosition:
        clock = self._replay_clock()
        now = clock.now_ns()
        first, last = self._span_ns
        return ReplayPosition(
            data_start=from_ns(first),
            data_end=from_ns(last),
            start=from_ns(clock.start_ns),
            now=from_ns(now),
            speed=clock.speed,
            finished=now >= last,
        )

    async def seed(self, pair: str, timeframe: str, limit: int) -> pd.DataFrame:
        frame = self._frame(pair, timeframe)
        closes = open_ns(frame) + timeframe_seconds(timeframe) * NS
        closed = int(np.searchsorted(closes, self._replay_clock().now_ns(), "right"))
        return frame.iloc[max(closed - limit, 0) : closed].reset_index(drop=True)

    async def run(self, pairs: list[str], timeframe: str, on_candles: OnCandles) -> None:
        tf_s = timeframe_seconds(timeframe)
        frames = {parse_pair(p): self._frame(p, timeframe) for p in pairs}
        closes = {p: open_ns(f) + tf_s * NS for p, f in frames.items()}
        clock = self._replay_clock()
        clock.begin()
        start = clock.now_ns()
        sent = {p: int(np.searchsorted(c, start, "right")) for p, c in closes.items()}
        while True:
            now = clock.now_ns()
            for pair, frame in frames.items():
                due = int(np.searchsorted(closes[pair], now, "right"))
                if due > sent[pair]:
                    await on_candles(pair, timeframe, frame.iloc[sent[pair] : due].reset_index(drop=True))
                    sent[pair] = due
            upcoming = [int(closes[p][i]) for p, i in sent.items() if i < len(closes[p])]
            if not upcoming:
                end = from_ns(max(int(c[-1]) for c in closes.values()))
                self.status.failed(clock.now(), f"replay finished: the data ends at {_iso(end)}")
                await asyncio.get_running_loop().create_future()  # idle until cancelled
            self.status.succeeded(clock.now())
            await self._sleep(clock.real_seconds_until(min(upcoming)))

    async def close(self) -> None:
        self._frames.clear()

    def _frame(self, pair: str, timeframe: str) -> pd.DataFrame:
        pair = parse_pair(pair)
        key = (pair, timeframe)
        if key not in self._frames:
            try:
                data = load_market_data(self.data_dir, pair, timeframe)
            except DataNotFoundError as exc:
                found = ", ".join(available_pairs(self.data_dir, timeframe)) or "none"
                raise InputError(
                    f"no {timeframe} candles for {pair} in {self.data_dir}; "
                    f"pairs with {timeframe} data there: {found}"
                ) from exc
            self._frames[key] = data.frame
        return self._frames[key]

    def _replay_clock(self) -> ReplayClock:
        if self._clock is None:
            pairs = self.pairs if self.pairs is not None else available_pairs(self.data_dir, self.timeframe)
            if not pairs:
                raise InputError(f"no {self.timeframe} candle files in {self.data_dir} to replay")
            tf_s = timeframe_seconds(self.timeframe)
            frames = [self._frame(p, self.timeframe) for p in pairs]
            opens = [open_ns(f) for f in frames]
            self._span_ns = (min(int(o[0]) for o in opens), max(int(o[-1]) + tf_s * NS for o in opens))
            start_ns = self._start_ns if self._start_ns is not None else self._default_start(opens, tf_s)
            self._clock = ReplayClock(from_ns(start_ns), self.speed, self._clock_fn)
        return self._clock

    def _default_start(self, opens: list[np.ndarray], tf_s: int) -> int:
        common_first = max(int(o[0]) for o in opens)
        common_last = min(int(o[-1]) for o in opens)
        shared = max((common_last - common_first) // (tf_s * NS) + 1, 1)
        return common_first + min(self._history, max(shared // 2, 1)) * tf_s * NS


def _iso(moment: datetime) -> str:
    return pd.Timestamp(moment).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
