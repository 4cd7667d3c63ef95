"""Drawdown of one account's equity history: per window from the window's peak, escalation, shape,
the global (trailing-peak) drawdown, the daily loss and the intraday monitor.

Input: `times_ns` (int64 UTC epoch nanoseconds, non-decreasing) and `equity` (finite, >= 0, in the
account's settle currency) of the same length, as the store keeps them; `equity_arrays(series)` converts a
pandas Series indexed by time. `now` is a timezone-aware datetime; observations after it are not seen.

Equity is a step function: an observation holds until the next one. A window [now − w, now] therefore
sees the equity in effect at its start (the last observation at or before it, "carried in") plus every
observation inside it. A threshold is breached when it is reached (>=).

Rules (thresholds in DrawdownConfig):
- drawdown_pct (0–100) = (peak − equity) / peak × 100, the peak being the highest equity *within the
  window*, not the equity at its start (0 when the peak is 0). `current_pct` is at now; `max_pct` is the
  worst point of the window against the running peak since the window start.
- escalation of a current drawdown: >= circuit_breaker_pct → circuit_breaker; >= emergency_pct →
  emergency; >= critical_pct → critical; >= warning_pct → warning; else none. The report's level is that
  of the deepest current drawdown (the longest window's: a longer window's peak is never lower).
- shape of a window's current drawdown. peak time = the last time the window's highest equity was seen
  (the window start if it was carried in); trough = the lowest equity since then, first reached at trough
  time; depth = peak − trough; mid = peak − depth / 2; deep = peak − oscillation_depth_ratio × depth.
  crossings = recoveries since the peak: equity, having been at or below `deep`, gets back to mid or above
  (the band keeps noise around mid from counting, whatever the sampling rate). First match wins: current
  drawdown < classify_min_pct → none; crossings >= oscillation_crossings → oscillating; trough time − peak
  time <= fast_within → fast; else slow.
- global drawdown: the current drawdown from the trailing `global_lookback` peak; breached at
  global_drawdown_pct (the global breaker halts and needs a manual reset, see breakers.py).
- daily loss: pnl = equity now − equity in effect at 00:00 UTC today (the first observation of the day if
  there is none before); pnl_pct = pnl / capital × 100; breached when pnl_pct <= −daily_loss_pct, which
  pauses the account until the next 00:00 UTC. Deposits and withdrawals are not told apart from P&L here:
  the caller passes `capital` and may compute the pnl itself and call `daily_loss`.
- intraday monitor: session = the UTC day; session high = the highest equity since 00:00 (including the
  value carried in); drawdown from it >= intraday_crit_pct → CRIT, >= intraday_warn_pct → WARN, else OK.
- rapid loss: the fall from the equity in effect at now − rapid_loss_window to now, in percent (0 if up).

No equity observation at or before `now` raises InputError (so do NaN, negative or unsorted input): an unknown
equity is for the caller to treat as a failed check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.errors import InputError

NS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_seconds = lru_cache(maxsize=256)(timeframe_seconds)  # parsed once per timeframe, not per report
LEVELS = ("none", "warning", "critical", "emergency", "circuit_breaker")
SHAPES = ("none", "fast", "slow", "oscillating")
INTRADAY_STATES = ("OK", "WARN", "CRIT")
Level = Literal["none", "warning", "critical", "emergency", "circuit_breaker"]
Shape = Literal["none", "fast", "slow", "oscillating"]
IntradayState = Literal["OK", "WARN", "CRIT"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_timeframe(value: str) -> str:
    try:
        timeframe_seconds(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return value


class DrawdownConfig(_Frozen):
    """Every drawdown threshold. Durations are timeframe strings ("1h", "4h", "24h", "7d", "30d")."""

    windows: tuple[str, ...] = Field(("1h", "4h", "24h", "7d", "30d"), min_length=1)
    warning_pct: float = Field(5.0, gt=0, le=100)
    critical_pct: float = Field(8.0, gt=0, le=100)
    emergency_pct: float = Field(12.0, gt=0, le=100)
    circuit_breaker_pct: float = Field(15.0, gt=0, le=100)
    classify_min_pct: float = Field(1.0, ge=0, le=100, description="smaller drawdowns have shape none")
    fast_within: str = Field("4h", description="a fall from peak to trough this quick or quicker is fast")
    oscillation_crossings: int = Field(
        2, ge=1, description="this many recoveries above the mid-drawdown level make it oscillating"
    )
    oscillation_depth_ratio: float = Field(
        0.75, gt=0.5, le=1, description="a recovery counts from at or below this fraction of the depth"
    )
    global_lookback: str = "30d"
    global_drawdown_pct: float = Field(20.0, gt=0, le=100)
    daily_loss_pct: float = Field(5.0, gt=0, le=100, description="daily P&L at or below −this % pauses")
    intraday_warn_pct: float = Field(5.0, gt=0, le=100)
    intraday_crit_pct: float = Field(10.0, gt=0, le=100)
    rapid_loss_window: str = "15m"

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_timeframe(w) for w in value)

    _check_durations = field_validator("fast_within", "global_lookback", "rapid_loss_window")(
        _check_timeframe
    )

    @model_validator(mode="after")
    def _check(self) -> DrawdownConfig:
        if not self.warning_pct < self.critical_pct < self.emergency_pct < self.circuit_breaker_pct:
            raise ValueError("need warning_pct < critical_pct < emergency_pct < circuit_breaker_pct")
        if not self.intraday_warn_pct < self.intraday_crit_pct:
            raise ValueError("need intraday_warn_pct < intraday_crit_pct")
        if len(set(self.windows)) != len(self.windows):
            raise ValueError("windows must be distinct")
        return self


class WindowDrawdown(_Frozen):
    """Drawdown within one trailing window, measured from the window's peak."""

    window: str
    start: datetime
    observations: int
    peak: float
    peak_at: datetime
    trough: float = Field(description="lowest equity since the peak")
    trough_at: datetime
    equity: float
    current_pct: float
    max_pct: float
    level: Level
    shape: Shape
    fall_s: float = Field(description="seconds from the peak to the trough")
    crossings: int = Field(description="recoveries above the mid-drawdown level since the peak")
    reason: str


class GlobalDrawdown(_Frozen):
    lookback: str
    peak: float
    peak_at: datetime
    equity: float
    drawdown_pct: float
    threshold_pct: float
    breached: bool
    reason: str


class DailyPnl(_Frozen):
    day_start: datetime
    start_equity: float
    equity: float
    pnl: float


class DailyLoss(_Frozen):
    breached: bool
    pnl: float
    capital: float
    pnl_pct: float
    loss_pct: float = Field(description="max(0, −pnl_pct): what the daily_loss breaker observes")
    threshold_pct: float
    paused_until: datetime | None
    reason: str


class IntradayStatus(_Frozen):
    state: IntradayState
    session_start: datetime
    session_high: float
    equity: float
    drawdown_pct: float
    reason: str


class DrawdownReport(_Frozen):
    """Everything above for one account at one moment."""

    evaluated_at: datetime
    as_of: datetime = Field(description="time of the last equity observation seen")
    equity: float
    windows: tuple[WindowDrawdown, ...]
    level: Level
    level_window: str
    shape: Shape
    global_drawdown: GlobalDrawdown
    daily: DailyLoss
    intraday: IntradayStatus
    rapid_loss_pct: float
    reasons: tuple[str, ...]


# ---------------------------------------------------------------- inputs and time


def equity_arrays(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(times_ns, equity) from a pandas Series indexed by time (a naive index is taken as UTC)."""
    index = pd.DatetimeIndex(series.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.as_unit("ns").asi8.astype(np.int64), series.to_numpy(dtype=np.float64)


def _checked(times_ns: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times_ns, dtype=np.int64)
    x = np.asarray(equity, dtype=np.float64)
    if t.ndim != 1 or t.shape != x.shape:
        raise InputError("times_ns and equity must be 1-D arrays of the same length")
    if not np.isfinite(x).all() or (x < 0).any():
        raise InputError("equity must be finite and >= 0")
    if len(t) > 1 and (np.diff(t) < 0).any():
        raise InputError("times_ns must be non-decreasing")
    return t, x


def _ns(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise InputError("times must be timezone-aware (UTC)")
    return (ts - _EPOCH) // _US * 1000


def _dt(ns: int) -> datetime:
    """UTC datetime of an ns timestamp (to the microsecond, as datetimes hold)."""
    return _EPOCH + timedelta(microseconds=int(ns) // 1000)


def utc_day_start(now: datetime) -> datetime:
    """00:00 UTC of `now`'s UTC day."""
    if now.tzinfo is None:
        raise InputError("times must be timezone-aware (UTC)")
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_utc_midnight(now: datetime) -> datetime:
    """The next 00:00 UTC strictly after `now`."""
    return utc_day_start(now) + timedelta(days=1)


def _segment(t: np.ndarray, x: np.ndarray, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Observations seen by [start, end]: the one in effect at start + those inside (views, not copies).

    Only the first can be before start; its time counts as start: `max(time, start_ns)` for any of them.
    """
    lo, hi = _bounds(t, start_ns, end_ns)
    return t[lo:hi], x[lo:hi]


def _bounds(t: np.ndarray, start_ns: int, end_ns: int) -> tuple[int, int]:
    """[lo, hi) of `_segment`."""
    hi = int(np.searchsorted(t, end_ns, side="right"))
    lo = max(int(np.searchsorted(t, start_ns, side="right")) - 1, 0)
    if hi <= lo:
        raise InputError(f"no equity observed at or before {_dt(end_ns).isoformat()}")
    return lo, hi


def _pct_below(peak: float, value: float) -> float:
    return 0.0 if peak <= 0 else min(100.0, max(0.0, (peak - value) / peak * 100.0))


# ---------------------------------------------------------------- rules


def escalation_level(drawdown_pct: float, config: DrawdownConfig | None = None) -> Level:
    """The escalation level a drawdown (0–100) has reached."""
    c = config or DrawdownConfig()
    if drawdown_pct >= c.circuit_breaker_pct:
        return "circuit_breaker"
    if drawdown_pct >= c.emergency_pct:
        return "emergency"
    if drawdown_pct >= c.critical_pct:
        return "critical"
    if drawdown_pct >= c.warning_pct:
        return "warning"
    return "none"


@dataclass(frozen=True, slots=True)
class _Fall:
    """What a segment's drawdown is made of, wherever in its first observation the window starts."""

    max_pct: float
    peak: float
    equity: float
    peak_i: int  # the last time at the peak
    trough_i: int  # the lowest point after it (the first, if several)
    crossings: int  # recoveries above mid after the peak
    last_up: bool | None  # the last mark after the peak: True at or above mid, False at or below deep


def _fall(seg_x: np.ndarray, config: DrawdownConfig) -> _Fall:
    running = np.maximum.accumulate(seg_x)
    peak_i = len(seg_x) - 1 - int(np.argmax(seg_x[::-1]))
    return _after(seg_x, peak_i, _max_pct(running, seg_x, 0.0), float(running[-1]), config)


def _max_pct(running: np.ndarray, xs: np.ndarray, before: float) -> float:
    """The deepest fall (%) below the running peak over `xs`, at least `before`."""
    # Where the running peak is 0 the equity is 0 too (it is >= 0): the fall there is 0 / 1 = 0. The peak
    # never falls, so a positive first one means no zero to guard against.
    safe = running if running[0] > 0 else np.where(running > 0, running, 1.0)
    fall = float(((running - xs) / safe).max())
    return max(before, min(100.0, max(0.0, fall * 100.0)))


def _after(seg_x: np.ndarray, peak_i: int, max_pct: float, peak: float, config: DrawdownConfig) -> _Fall:
    """The fall with its peak at `peak_i`: trough and recoveries counted over everything after it."""
    after = seg_x[peak_i:]
    trough_i = peak_i + int(np.argmin(after))
    crossings, last_up = _recoveries(after, seg_x[peak_i], seg_x[trough_i], None, config)
    return _Fall(max_pct, peak, float(seg_x[-1]), peak_i, trough_i, crossings, last_up)


def _recoveries(
    xs: np.ndarray, peak: float, trough: float, last_up: bool | None, config: DrawdownConfig
) -> tuple[int, bool | None]:
    """Recoveries (a down mark followed by an up mark) in `xs` after a mark `last_up`, and the last mark."""
    depth = peak - trough
    if depth <= 0:
        return 0, None
    up = xs >= peak - depth / 2.0
    marks = up[np.flatnonzero(up | (xs <= peak - config.oscillation_depth_ratio * depth))]  # booleans
    if not len(marks):
        return 0, last_up
    crossings = int(np.count_nonzero(~marks[:-1] & marks[1:]))
    if last_up is False and marks[0]:
        crossings += 1
    return crossings, bool(marks[-1])


def _extend(f: _Fall, seg_x: np.ndarray, n: int, config: DrawdownConfig) -> _Fall:
    """`f` of `seg_x[:n]` carried over the observations appended since: exactly what `_fall(seg_x)` gives,
    in time proportional to them (and to the after-peak part when the trough deepens)."""
    new = seg_x[n:]
    if not len(new):
        return f
    running = np.maximum(np.maximum.accumulate(new), f.peak)
    max_pct = _max_pct(running, new, f.max_pct)
    peak = float(running[-1])
    if float(new.max()) >= f.peak:  # the last time at the peak is a new observation
        return _after(seg_x, n + len(new) - 1 - int(np.argmax(new[::-1])), max_pct, peak, config)
    if float(new.min()) < seg_x[f.trough_i]:  # a deeper trough moves the marks' levels: count them again
        return _after(seg_x, f.peak_i, max_pct, peak, config)
    crossings, last_up = _recoveries(new, f.peak, float(seg_x[f.trough_i]), f.last_up, config)
    return _Fall(max_pct, peak, float(new[-1]), f.peak_i, f.trough_i, f.crossings + crossings, last_up)


@dataclass(frozen=True, slots=True)
class _Memo:
    generation: int
    first_ns: int  # the time of the segment's first observation
    n: int  # its observations
    fall: _Fall


class DrawdownMemo:
    """The windows of one equity path kept between `drawdown_report` calls, so that the next call extends
    each over the observations appended since instead of rescanning it (O(new) rather than O(window)).

    Valid while the path only grows at its end: the caller passes a `generation` that changes whenever an
    observation is inserted before the last one or replaced; a window whose first observation changed (its
    start passed one) is scanned again.
    """

    def __init__(self) -> None:
        self._windows: dict[str, _Memo] = {}


def _shape(
    f: _Fall, seg_t: np.ndarray, start_ns: int, current_pct: float, config: DrawdownConfig
) -> tuple[Shape, float]:
    """(shape, fall seconds) of the current drawdown of a window starting at `start_ns`."""
    fall_s = (max(int(seg_t[f.trough_i]), start_ns) - max(int(seg_t[f.peak_i]), start_ns)) / NS
    shape: Shape
    if current_pct <= 0.0 or current_pct < config.classify_min_pct:
        shape = "none"
    elif f.crossings >= config.oscillation_crossings:
        shape = "oscillating"
    elif fall_s <= _seconds(config.fast_within):
        shape = "fast"
    else:
        shape = "slow"
    return shape, fall_s


def _window(
    t: np.ndarray,
    x: np.ndarray,
    now_ns: int,
    window: str,
    config: DrawdownConfig,
    falls: dict[int, _Fall] | None = None,
    memo: tuple[DrawdownMemo, int] | None = None,
) -> WindowDrawdown:
    """One window; `falls` shares the segment work between windows cut from the same first observation
    (all of them, while the history is shorter than the windows); `memo` (memo, generation) carries it over
    from the last call."""
    start_ns = now_ns - _seconds(window) * NS
    lo, hi = _bounds(t, start_ns, now_ns)
    seg_t = t[lo:hi]
    f = falls.get(lo) if falls is not None else None
    if f is None:
        kept = memo[0]._windows.get(window) if memo is not None else None
        if kept is not None and memo is not None and kept.generation == memo[1] and kept.first_ns == t[lo]:
            f = _extend(kept.fall, x[lo:hi], kept.n, config) if hi - lo >= kept.n else None
        if f is None:
            f = _fall(x[lo:hi], config)
        if falls is not None:
            falls[lo] = f
    if memo is not None:
        memo[0]._windows[window] = _Memo(memo[1], int(t[lo]), hi - lo, f)
    current = _pct_below(f.peak, f.equity)
    level = escalation_level(current, config)
    shape, fall_s = _shape(f, seg_t, start_ns, current, config)
    how = f", {shape} ({f.crossings} recoveries above mid, fall took {fall_s:g}s)" if shape != "none" else ""
    return WindowDrawdown(
        window=window,
        start=_dt(start_ns),
        observations=len(seg_t),
        peak=f.peak,
        peak_at=_dt(max(int(seg_t[f.peak_i]), start_ns)),
        trough=float(x[lo + f.trough_i]),
        trough_at=_dt(max(int(seg_t[f.trough_i]), start_ns)),
        equity=f.equity,
        current_pct=current,
        max_pct=f.max_pct,
        level=level,
        shape=shape,
        fall_s=fall_s,
        crossings=f.crossings,
        reason=f"{window}: equity {f.equity:g} is {current:.2f}% below the window peak {f.peak:g} (max "
        f"{f.max_pct:.2f}% within the window); level {level}{how}.",
    )


def _global(
    t: np.ndarray, x: np.ndarray, now_ns: int, config: DrawdownConfig, w: WindowDrawdown | None = None
) -> GlobalDrawdown:
    """`w`: the global lookback's window, if already computed."""
    w = w or _window(t, x, now_ns, config.global_lookback, config)
    breached = w.current_pct >= config.global_drawdown_pct
    return GlobalDrawdown(
        lookback=config.global_lookback,
        peak=w.peak,
        peak_at=w.peak_at,
        equity=w.equity,
        drawdown_pct=w.current_pct,
        threshold_pct=config.global_drawdown_pct,
        breached=breached,
        reason=f"Equity {w.equity:g} is {w.current_pct:.2f}% below its {config.global_lookback} peak "
        f"{w.peak:g} (global limit {config.global_drawdown_pct:g}%)" + ("; breached." if breached else "."),
    )


def _daily_pnl(t: np.ndarray, x: np.ndarray, now: datetime) -> DailyPnl:
    day = utc_day_start(now)
    _, seg_x = _segment(t, x, _ns(day), _ns(now))
    start, value = float(seg_x[0]), float(seg_x[-1])
    return DailyPnl(day_start=day, start_equity=start, equity=value, pnl=value - start)


def _intraday(t: np.ndarray, x: np.ndarray, now: datetime, config: DrawdownConfig) -> IntradayStatus:
    day = utc_day_start(now)
    _, seg_x = _segment(t, x, _ns(day), _ns(now))
    high, value = float(seg_x.max()), float(seg_x[-1])
    dd = _pct_below(high, value)
    state: IntradayState = (
        "CRIT" if dd >= config.intraday_crit_pct else "WARN" if dd >= config.intraday_warn_pct else "OK"
    )
    return IntradayStatus(
        state=state,
        session_start=day,
        session_high=high,
        equity=value,
        drawdown_pct=dd,
        reason=f"Equity {value:g} is {dd:.2f}% below today's high {high:g} (WARN at "
        f"{config.intraday_warn_pct:g}%, CRIT at {config.intraday_crit_pct:g}%): {state}.",
    )


def _loss(t: np.ndarray, x: np.ndarray, now_ns: int, window: str) -> float:
    _, seg_x = _segment(t, x, now_ns - _seconds(window) * NS, now_ns)
    return _pct_below(float(seg_x[0]), float(seg_x[-1]))


# ---------------------------------------------------------------- public functions


def window_drawdown(
    times_ns: np.ndarray, equity: np.ndarray, now: datetime, window: str, config: DrawdownConfig | None = None
) -> WindowDrawdown:
    """Drawdown of the trailing `window` ending at `now`, from the window's peak."""
    t, x = _checked(times_ns, equity)
    return _window(t, x, _ns(now), _check_timeframe(window), config or DrawdownConfig())


def window_drawdowns(
    times_ns: np.ndarray, equity: np.ndarray, now: datetime, config: DrawdownConfig | None = None
) -> tuple[WindowDrawdown, ...]:
    """One WindowDrawdown per configured window, in config order."""
    config = config or DrawdownConfig()
    t, x = _checked(times_ns, equity)
    now_ns = _ns(now)
    return tuple(_window(t, x, now_ns, w, config) for w in config.windows)


def global_drawdown(
    times_ns: np.ndarray, equity: np.ndarray, now: datetime, config: DrawdownConfig | None = None
) -> GlobalDrawdown:
    """Current drawdown from the trailing `global_lookback` peak against `global_drawdown_pct`."""
    t, x = _checked(times_ns, equity)
    return _global(t, x, _ns(now), config or DrawdownConfig())


def daily_pnl(times_ns: np.ndarray, equity: np.ndarray, now: datetime) -> DailyPnl:
    """P&L of `now`'s UTC day: equity now minus the equity in effect at 00:00 UTC."""
    t, x = _checked(times_ns, equity)
    return _daily_pnl(t, x, now)


def daily_loss(pnl: float, capital: float, now: datetime, config: DrawdownConfig | None = None) -> DailyLoss:
    """The daily-loss rule: pnl at or below −daily_loss_pct of capital pauses until the next 00:00 UTC."""
    config = config or DrawdownConfig()
    if not np.isfinite(pnl):
        raise InputError("pnl must be finite")
    if not (np.isfinite(capital) and capital > 0):
        raise InputError("capital must be finite and > 0")
    pnl_pct = pnl / capital * 100.0
    breached = pnl_pct <= -config.daily_loss_pct
    until = next_utc_midnight(now) if breached else None
    return DailyLoss(
        breached=breached,
        pnl=pnl,
        capital=capital,
        pnl_pct=pnl_pct,
        loss_pct=max(0.0, -pnl_pct),
        threshold_pct=config.daily_loss_pct,
        paused_until=until,
        reason=f"Today's P&L {pnl:+g} is {pnl_pct:+.2f}% of capital {capital:g} (limit "
        f"−{config.daily_loss_pct:g}%)" + (f"; paused until {until.isoformat()}." if until else "."),
    )


def intraday_status(
    times_ns: np.ndarray, equity: np.ndarray, now: datetime, config: DrawdownConfig | None = None
) -> IntradayStatus:
    """OK / WARN / CRIT from the drawdown below the UTC session's high."""
    t, x = _checked(times_ns, equity)
    return _intraday(t, x, now, config or DrawdownConfig())


def loss_pct(times_ns: np.ndarray, equity: np.ndarray, now: datetime, window: str) -> float:
    """Fall (0–100) from the equity in effect at now − window to the equity now; 0 if it rose."""
    t, x = _checked(times_ns, equity)
    return _loss(t, x, _ns(now), _check_timeframe(window))


def drawdown_report(
    times_ns: np.ndarray,
    equity: np.ndarray,
    now: datetime,
    config: DrawdownConfig | None = None,
    capital: float | None = None,
    *,
    memo: DrawdownMemo | None = None,
    generation: int = 0,
    trusted: bool = False,
) -> DrawdownReport:
    """All drawdown views of one account at `now`. `capital` defaults to the equity at 00:00 UTC today.

    `memo` keeps the windows for the next call on the same path (see `DrawdownMemo`; `generation` as
    described there); without one every window is scanned. `trusted`: the arrays come from a structure that
    keeps them sorted, finite and >= 0 (the portfolio guard's equity path), so the O(n) checks are skipped.
    """
    config = config or DrawdownConfig()
    t, x = (times_ns, equity) if trusted else _checked(times_ns, equity)
    now_ns = _ns(now)
    falls: dict[int, _Fall] = {}
    kept = (memo, generation) if memo is not None else None
    windows = tuple(_window(t, x, now_ns, w, config, falls, kept) for w in config.windows)
    worst = max(windows, key=lambda w: (w.current_pct, _seconds(w.window)))
    day = _daily_pnl(t, x, now)
    if capital is None and day.start_equity <= 0:
        raise InputError("equity at the start of the day is 0: pass capital for the daily-loss rule")
    daily = daily_loss(day.pnl, day.start_equity if capital is None else capital, now, config)
    lookback = next((w for w in windows if w.window == config.global_lookback), None)
    glob = _global(t, x, now_ns, config, lookback)
    intraday = _intraday(t, x, now, config)
    last = int(np.searchsorted(t, now_ns, side="right")) - 1
    return DrawdownReport(
        evaluated_at=_dt(now_ns),
        as_of=_dt(t[last]),
        equity=float(x[last]),
        windows=windows,
        level=worst.level,
        level_window=worst.window,
        shape=worst.shape,
        global_drawdown=glob,
        daily=daily,
        intraday=intraday,
        rapid_loss_pct=_loss(t, x, now_ns, config.rapid_loss_window),
        reasons=(worst.reason, glob.reason, daily.reason, intraday.reason),
    )
