"""A built-in market simulator (`tradeguard demo`): synthetic candles for machines without data or network.

Every candle it makes is synthetic (`SimulatorFeed.synthetic` is True): answers built on it must say so.

Model
-----
The log return of a pair is a common market factor plus the pair's own idiosyncratic part::

    r_pair = beta * r_market + r_idio

The market factor and each pair's idiosyncratic part are regime-switching GARCH-jump processes, each with its
own hidden regime chain, over one regime table (the idiosyncratic part multiplies drift, volatility and jump
sizes by the pair's `idio_scale`). Pairs are therefore correlated through the market factor: a market crash
hits every pair, and a pair can also crash on its own.

1. Regimes: a Markov chain over calm, trending_up, trending_down, turbulent and crash. In a candle of dt
   hours a regime ends with probability 1 - exp(-dt / mean_hours), then moves on with the probabilities of
   `TRANSITIONS` (row: from, column: to). Crashes mostly follow downtrends and turbulence, and give way to
   turbulence. Long-run shares of time: calm 22 %, trending_up 39 %, trending_down 28 %, turbulent 11 %,
   crash 0.4 % (about 3 market crashes a year); the expected log drift is about +12 % a year.
2. Volatility clustering: GARCH(1,1) on the regime's unit variance. With u the previous standardized shock
   (diffusion plus jumps; u**2 capped at 25), g = (1 - phi) + alpha * u**2 + (phi - alpha) * g, and the
   candle variance is g * vol**2 * dt. Persistence phi = 0.5 ** (dt / 24 h) (shocks fade with a one-day
   half-life); alpha and the long-run variance vol**2 are the regime's, so a regime change moves the level
   at once while the clustering carries over.
3. Jumps: compound Poisson. Down and up jumps arrive at jumps_per_hour split by p_down, with exponential
   log sizes of mean down_mean and up_mean: rare and symmetric when calm, frequent and skewed to the
   downside in turbulent and crash regimes.
4. OHLC: each candle is 32 sub-steps of the diffusion (drift spread evenly, the candle's jumps on one
   random sub-step); open is the previous close, high and low are the extremes of that intrabar path.
5. Volume: quote volume = quote_volume_per_hour * dt * (range / calm range) ** 0.9 * lognormal noise
   (sigma 0.5, mean 1), so volume rises with volatility; reported in the base currency, like an exchange.

Regime table (per hour; log returns; vol is the market factor's, per square-root hour):

=============  ==========  ========  ======  =====  =======  ======  =========  =======
regime         mean_hours  drift     vol     alpha  jumps/h  p_down  down_mean  up_mean
=============  ==========  ========  ======  =====  =======  ======  =========  =======
calm           96          +0.01 %   0.30 %  0.05   0.002    0.50    1.0 %      1.0 %
trending_up    240         +0.03 %   0.45 %  0.06   0.003    0.40    1.2 %      1.5 %
trending_down  168         -0.03 %   0.55 %  0.07   0.004    0.60    1.5 %      1.2 %
turbulent      48          +0.01 %   1.00 %  0.10   0.020    0.75    2.5 %      1.5 %
crash          12          -0.30 %   2.00 %  0.12   0.100    0.80    3.0 %      2.0 %
=============  ==========  ========  ======  =====  =======  ======  =========  =======

Pairs (`pair_profile`, by base asset; prices assume a USD quote): BTC 60,000 (beta 1.0, idio_scale 0.35),
ETH 3,000 (1.1, 0.55), BNB 600 (1.0, 0.7), SOL 150 (1.3, 0.9), any other 1.0 (1.2, 1.0). Prices are scaled so
that a pair opens at its profile price at the anchor candle (the feed's start).

On 20,000 simulated 1h BTC candles (seeds 0-7) this gives hourly volatility 0.6-0.75 %, excess kurtosis
9-32, autocorrelation of |returns| 0.17-0.35 at every lag 1-10, BTC/ETH return correlation 0.81-0.88, a
mean high-low range of 1.1-1.25 return standard deviations, worst 24 h -19 % to -49 % and 3-15 market
crashes; Binance BTC/USDT 1h since 2019 has 0.67 %, 49, 0.19-0.28, 0.84, 1.30 and -62 % (2020-03-12).

Determinism: the random numbers of block b (256 candles) of a process come from
numpy.random.default_rng([seed, tag, b]), with a stable tag per process (CRC-32 of the timeframe and the
pair), so a pair's candles depend only on (seed, timeframe, origin, anchor, pair): not on which other pairs
are simulated, how many candles are asked for, or in which slices.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from tradeguard.adapters.candle_files import parse_pair
from tradeguard.adapters.feeds.base import OnCandles
from tradeguard.adapters.feeds.replay import NS, ReplayClock, check_speed, from_ns, to_ns
from tradeguard.adapters.status import SourceStatus
from tradeguard.core.candles import COLUMNS, resample
from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.errors import InputError

DAY_S = 86_400
BLOCK = 256  # candles per block of random numbers
SUBSTEPS = 32  # intrabar path steps per candle
SHOCK_HALF_LIFE_H = 24.0
U2_CAP = 25.0
VOLUME_EXPONENT = 0.9
VOLUME_NOISE = 0.5
DEFAULT_PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT")
DEFAULT_HISTORY = 10_000


@dataclass(frozen=True, slots=True)
class Regime:
    """One hidden market regime; rates and sizes per hour, sizes and drift as log returns."""

    name: str
    mean_hours: float
    drift_per_hour: float
    vol_per_sqrt_hour: float
    alpha: float  # GARCH reaction to the previous squared standardized shock
    jumps_per_hour: float
    p_down: float  # share of jumps that go down
    down_mean: float
    up_mean: float


REGIMES = (
    Regime("calm", 96, 0.0001, 0.0030, 0.05, 0.002, 0.50, 0.010, 0.010),
    Regime("trending_up", 240, 0.0003, 0.0045, 0.06, 0.003, 0.40, 0.012, 0.015),
    Regime("trending_down", 168, -0.0003, 0.0055, 0.07, 0.004, 0.60, 0.015, 0.012),
    Regime("turbulent", 48, 0.0001, 0.0100, 0.10, 0.020, 0.75, 0.025, 0.015),
    Regime("crash", 12, -0.003, 0.0200, 0.12, 0.100, 0.80, 0.030, 0.020),
)
REGIME_NAMES = tuple(r.name for r in REGIMES)

# Where a regime goes when it ends (rows: from, columns: to, in REGIMES order; the diagonal is zero).
TRANSITIONS = np.array(
    [
        [0.00, 0.40, 0.30, 0.29, 0.01],
        [0.50, 0.00, 0.12, 0.36, 0.02],
        [0.30, 0.15, 0.00, 0.47, 0.08],
        [0.40, 0.22, 0.30, 0.00, 0.08],
        [0.10, 0.00, 0.25, 0.65, 0.00],
    ]
)


@dataclass(frozen=True, slots=True)
class PairProfile:
    """How a simulated pair relates to the market factor, and its scale."""

    start_price: float
    beta: float
    idio_scale: float
    quote_volume_per_hour: float


_PROFILES = {
    "BTC": PairProfile(60_000.0, 1.0, 0.35, 5e7),
    "ETH": PairProfile(3_000.0, 1.1, 0.55, 2.5e7),
    "BNB": PairProfile(600.0, 1.0, 0.7, 1e7),
    "SOL": PairProfile(150.0, 1.3, 0.9, 1e7),
}
_DEFAULT_PROFILE = PairProfile(1.0, 1.2, 1.0, 3e6)


def pair_profile(pair: str) -> PairProfile:
    """Profile by base asset (BTC, ETH, BNB, SOL known; any other base starts at 1.0)."""
    return _PROFILES.get(pair.split("/")[0].upper(), _DEFAULT_PROFILE)


@dataclass(frozen=True, slots=True)
class _State:
    regime: int
    g: float  # GARCH variance in units of the regime's long-run variance
    u2: float  # previous squared standardized shock


@dataclass(frozen=True, slots=True)
class _Block:
    regimes: np.ndarray  # (BLOCK,) regime index per candle
    steps: np.ndarray  # (BLOCK, SUBSTEPS) log-return sub-steps


class _Process:
    """A regime-switching GARCH-jump process (the market factor or a pair's idiosyncratic part), in blocks."""

    def __init__(self, seed: int, tag: int, scale: float, dt_h: float, cache_blocks: int) -> None:
        self._seed = seed
        self._tag = tag
        self._states = [_State(0, 1.0, 1.0)]  # state at the start of each block generated so far
        self._cache: dict[int, _Block] = {}
        self._cache_blocks = cache_blocks
        self._phi = 0.5 ** (dt_h / SHOCK_HALF_LIFE_H)
        self._exit = [1.0 - math.exp(-dt_h / r.mean_hours) for r in REGIMES]
        cum = np.cumsum(TRANSITIONS, axis=1)
        cum[:, -1] = 1.0
        self._cum = cum.tolist()
        self._alpha = np.array([min(r.alpha, self._phi) for r in REGIMES])
        self._var = np.array([(r.vol_per_sqrt_hour * scale) ** 2 * dt_h for r in REGIMES])
        self._drift = np.array([r.drift_per_hour * scale * dt_h for r in REGIMES])
        self._rate = np.array([r.jumps_per_hour * dt_h for r in REGIMES])
        self._p_down = np.array([r.p_down for r in REGIMES])
        self._down = np.array([r.down_mean * scale for r in REGIMES])
        self._up = np.array([r.up_mean * scale for r in REGIMES])

    def block(self, b: int) -> _Block:
        if b in self._cache:
            return self._cache[b]
        while len(self._states) <= b:
            self._generate(len(self._states) - 1)
        return self._generate(b)

    def _generate(self, b: int) -> _Block:
        rng = np.random.default_rng([self._seed, self._tag, b])
        state = self._states[b]
        u = rng.random((BLOCK, 2)).tolist()
        z = rng.standard_normal((BLOCK, SUBSTEPS))

        regimes = np.empty(BLOCK, dtype=np.int64)
        k = state.regime
        for t, (leave, where) in enumerate(u):
            if leave < self._exit[k]:
                k = bisect.bisect_right(self._cum[k], where)
            regimes[t] = k

        rate = self._rate[regimes]
        p_down = self._p_down[regimes]
        n_down = rng.poisson(rate * p_down)
        n_up = rng.poisson(rate * (1.0 - p_down))
        jumps = rng.gamma(n_up, self._up[regimes]) - rng.gamma(n_down, self._down[regimes])
        jump_step = rng.integers(0, SUBSTEPS, BLOCK)

        var = self._var[regimes]
        alpha = self._alpha[regimes]
        shock = (z.sum(axis=1) / math.sqrt(SUBSTEPS)).tolist()
        g, u2, phi = state.g, state.u2, self._phi
        g_path = np.empty(BLOCK)
        for t, (v, a, zt, jump) in enumerate(
            zip(var.tolist(), alpha.tolist(), shock, jumps.tolist(), strict=True)
        ):
            g = (1.0 - phi) + a * u2 + (phi - a) * g
            eps = math.sqrt(g * v) * zt + jump
            u2 = min(eps * eps / v, U2_CAP)
            g_path[t] = g

        steps = (self._drift[regimes] / SUBSTEPS)[:, None] + np.sqrt(g_path * var / SUBSTEPS)[:, None] * z
        steps[np.arange(BLOCK), jump_step] += jumps
        if len(self._states) == b + 1:
            self._states.append(_State(k, g, u2))
        out = _Block(regimes, steps)
        if self._cache_blocks:
            self._cache[b] = out
            while len(self._cache) > self._cache_blocks:
                del self._cache[next(iter(self._cache))]
        return out


@dataclass
class _PairSeries:
    """A pair's generated candles so far, block by block (open, high, low, close, volume, regimes)."""

    process: _Process
    profile: PairProfile
    tag: int
    last_log_close: float = 0.0  # prices are generated from 1.0 and scaled on the way out
    blocks: list[np.ndarray] = field(default_factory=list)


class MarketSimulator:
    """Deterministic candle generator for any set of pairs (see the module docstring for the model).

    Candle `i` of every pair opens at `origin + i * timeframe`; prices are scaled so that candle `anchor`
    opens at the pair's profile price. No clock, no sleep: the same arguments always give the same candles;
    generated blocks are kept so that extending a series costs only the new candles.
    """

    def __init__(self, origin: datetime, timeframe: str = "1h", seed: int = 0, anchor: int = 0) -> None:
        if seed < 0:
            raise InputError(f"seed must be a non-negative integer, not {seed}")
        if anchor < 0:
            raise InputError(f"anchor must be a candle number (0 or more), not {anchor}")
        self.anchor = anchor
        self.timeframe = timeframe
        self.timeframe_s = timeframe_seconds(timeframe)
        self.seed = seed
        self.origin_ns = to_ns(origin)
        self._dt_h = self.timeframe_s / 3600
        self._market = _Process(seed, _tag(f"{timeframe}|market"), 1.0, self._dt_h, cache_blocks=32)
        self._pairs: dict[str, _PairSeries] = {}

    def candles(self, pair: str, start: int, stop: int) -> pd.DataFrame:
        """Candles number `start` .. `stop - 1` of a pair as a Freqtrade frame."""
        rows = self._rows(pair, start, stop)
        frame = pd.DataFrame({"date": self._dates(start, stop)})
        for i, column in enumerate(COLUMNS[1:]):
            frame[column] = rows[:, i]
        return frame

    def regimes(self, pair: str, start: int, stop: int) -> pd.DataFrame:
        """The hidden regimes behind candles `start` .. `stop - 1`: date, market_regime, pair_regime."""
        rows = self._rows(pair, start, stop)
        names = np.array(REGIME_NAMES)
        return pd.DataFrame(
            {
                "date": self._dates(start, stop),
                "market_regime": names[rows[:, 5].astype(np.int64)],
                "pair_regime": names[rows[:, 6].astype(np.int64)],
            }
        )

    def _dates(self, start: int, stop: int) -> pd.DatetimeIndex:
        ns = self.origin_ns + np.arange(start, max(stop, start), dtype=np.int64) * self.timeframe_s * NS
        return pd.to_datetime(ns, unit="ns", utc=True)

    def _rows(self, pair: str, start: int, stop: int) -> np.ndarray:
        if start < 0:
            raise InputError(f"candle numbers start at 0 (the origin), not {start}")
        series = self._series(pair)
        while len(series.blocks) * BLOCK < max(stop, self.anchor + 1):
            self._extend(series)
        if stop <= start:
            return np.empty((0, 7))
        first, last = start // BLOCK, (stop - 1) // BLOCK
        rows = np.concatenate(series.blocks[first : last + 1])[start - first * BLOCK : stop - first * BLOCK]
        scale = series.profile.start_price / series.blocks[self.anchor // BLOCK][self.anchor % BLOCK, 0]
        rows[:, :4] *= scale
        rows[:, 4] /= scale
        return rows

    def _series(self, pair: str) -> _PairSeries:
        pair = parse_pair(pair)
        if pair not in self._pairs:
            profile = pair_profile(pair)
            tag = _tag(f"{self.timeframe}|{pair}")
            self._pairs[pair] = _PairSeries(
                process=_Process(self.seed, tag, profile.idio_scale, self._dt_h, cache_blocks=0),
                profile=profile,
                tag=tag,
            )
        return self._pairs[pair]

    def _extend(self, series: _PairSeries) -> None:
        b = len(series.blocks)
        market = self._market.block(b)
        own = series.process.block(b)
        profile = series.profile
        path = np.cumsum(profile.beta * market.steps + own.steps, axis=1)
        log_close = series.last_log_close + np.cumsum(path[:, -1])
        log_open = np.concatenate([[series.last_log_close], log_close[:-1]])
        log_high = np.maximum.reduce([log_open + path.max(axis=1), log_open, log_close])
        log_low = np.minimum.reduce([log_open + path.min(axis=1), log_open, log_close])

        calm = REGIMES[0].vol_per_sqrt_hour * math.hypot(profile.beta, profile.idio_scale)
        calm_range = 1.6 * calm * math.sqrt(self._dt_h)
        noise = np.random.default_rng([self.seed, series.tag, b, 1]).standard_normal(BLOCK)
        quote_volume = (
            profile.quote_volume_per_hour
            * self._dt_h
            * ((log_high - log_low) / calm_range) ** VOLUME_EXPONENT
            * np.exp(VOLUME_NOISE * noise - VOLUME_NOISE**2 / 2)
        )
        volume = quote_volume / np.exp((log_open + log_close) / 2)
        series.blocks.append(
            np.column_stack(
                [
                    np.exp(log_open),
                    np.exp(log_high),
                    np.exp(log_low),
                    np.exp(log_close),
                    volume,
                    market.regimes,
                    own.regimes,
                ]
            )
        )
        series.last_log_close = float(log_close[-1])


def simulate_candles(
    pair: str, n: int, start: datetime, timeframe: str = "1h", seed: int = 0
) -> pd.DataFrame:
    """`n` simulated candles of a pair, the first opening at `start` (pure: no clock, no sleep)."""
    return MarketSimulator(start, timeframe, seed).candles(pair, 0, n)


class SimulatorFeed:
    """A CandleFeed backed by MarketSimulator, paced like a live exchange.

    Simulated time stands at `start` (default: the current UTC time floored to `timeframe`) until `run()` is
    first called, then advances `speed` simulated seconds per real second (3600 with 1h candles: one candle a
    second). The simulated market opens `history` candles before `start` (floored to a UTC day), so `seed()`
    can return up to that many; it serves `timeframe` and multiples of it that divide a day (resampled).
    """

    name = "simulator"
    synthetic = True

    def __init__(
        self,
        pairs: Sequence[str] | None = None,
        seed: int = 0,
        speed: float = 1.0,
        start: datetime | None = None,
        timeframe: str = "1h",
        history: int = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        tf_s = timeframe_seconds(timeframe)
        if DAY_S % tf_s:
            raise InputError(f"the simulator's timeframe must divide a day, not {timeframe}")
        if history < 0:
            raise InputError(f"history must be zero or more candles, not {history}")
        self.pairs = tuple(parse_pair(p) for p in (pairs if pairs is not None else DEFAULT_PAIRS))
        self.random_seed = seed
        self.speed = check_speed(speed)
        self.timeframe = timeframe
        self.status = SourceStatus(self.name)
        start_ns = to_ns(start if start is not None else datetime.now(UTC))
        start_ns -= start_ns % (tf_s * NS)
        origin_ns = start_ns - history * tf_s * NS
        origin_ns -= origin_ns % (DAY_S * NS)
        self._clock = ReplayClock(from_ns(start_ns), speed, clock)
        self._sleep = sleep
        anchor = (start_ns - origin_ns) // (tf_s * NS)
        self._market = MarketSimulator(from_ns(origin_ns), timeframe, seed, anchor)

    def now(self) -> datetime:
        """Close time of the latest closed simulated candle."""
        return from_ns(self._market.origin_ns + self._closed(self.timeframe) * self._market.timeframe_s * NS)

    async def seed(self, pair: str, timeframe: str, limit: int) -> pd.DataFrame:
        closed = self._closed(timeframe)
        return self._candles(pair, timeframe, max(closed - limit, 0), closed)

    async def run(self, pairs: list[str], timeframe: str, on_candles: OnCandles) -> None:
        pairs = [self._check_pair(p) for p in pairs]
        tf_ns = self._ratio(timeframe) * self._market.timeframe_s * NS
        self._clock.begin()
        sent = dict.fromkeys(pairs, self._closed(timeframe))
        while True:
            due = self._closed(timeframe)
            for pair in pairs:
                if due > sent[pair]:
                    await on_candles(pair, timeframe, self._candles(pair, timeframe, sent[pair], due))
                    sent[pair] = due
            self.status.succeeded(self.now())
            await self._sleep(self._clock.real_seconds_until(self._market.origin_ns + (due + 1) * tf_ns))

    async def close(self) -> None:
        """Nothing to release."""

    def _ratio(self, timeframe: str) -> int:
        tf_s = timeframe_seconds(timeframe)
        base_s = self._market.timeframe_s
        if tf_s % base_s or DAY_S % tf_s:
            raise InputError(
                f"the simulator serves {self.timeframe} candles and multiples of it that divide a day, "
                f"not {timeframe}"
            )
        return tf_s // base_s

    def _closed(self, timeframe: str) -> int:
        """How many candles of `timeframe` have closed since the origin by the simulated now."""
        return (self._clock.now_ns() - self._market.origin_ns) // (
            self._ratio(timeframe) * self._market.timeframe_s * NS
        )

    def _candles(self, pair: str, timeframe: str, start: int, stop: int) -> pd.DataFrame:
        """Candles number `start` .. `stop - 1` of `timeframe` (resampled from the simulator's timeframe)."""
        ratio = self._ratio(timeframe)
        base = self._market.candles(self._check_pair(pair), start * ratio, stop * ratio)
        if ratio == 1:
            return base
        return resample(base, self._market.timeframe_s, ratio * self._market.timeframe_s)

    def _check_pair(self, pair: str) -> str:
        pair = parse_pair(pair)
        if pair not in self.pairs:
            raise InputError(f"the simulator lists {', '.join(self.pairs)}, not {pair}")
        return pair


def _tag(text: str) -> int:
    return zlib.crc32(text.encode())
