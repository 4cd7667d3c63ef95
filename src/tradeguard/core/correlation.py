"""Rolling correlation of strategy returns, with early-warning and regime-change flags.

Pure: observations and `now` are passed in. Definitions:

- Resampling. An observation is a strategy's return over the period ending at `period_end`. It belongs to
  the bucket (E − freq, E], E = `period_end` rounded up to a multiple of `freq` since the Unix epoch
  (right-closed, labelled by its end). Returns in one bucket compound: (1 + r).prod() − 1. A re-sent
  (strategy, period_end) replaces the earlier value instead of compounding twice.
- Missing buckets stay missing (NaN), never zero-filled nor forward-filled: no report is not a flat return,
  and filling would pull correlations toward 0. Pairs use pairwise-complete buckets.
- Grid. The last bucket is the last closed one, ending at `now` rounded down to `freq`; observations in the
  still-open bucket or after `now` are not used in the matrices.
- Silence. A strategy whose last observation (at or before `now`) ended more than `silent_after` before
  `now` is excluded from every matrix and listed in `excluded`; none of its values are used.
- Matrices (Pearson, pairwise-complete; None where undefined):
  `current` = the last `window` buckets; `previous` = the `window` buckets just before those
  (non-overlapping); `fast` = the last `fast` buckets; `slow` = the last `slow` buckets.
  A pair needs at least max(3, ceil(`min_periods_ratio` × length)) buckets where both strategies have a
  value (defaults: 50 of 100, 25 of 50, 75 of 150), and neither series constant on them.
- Mean absolute change of two matrices: the mean of |a_ij − b_ij| over the pairs i < j defined in both.
  `fast_slow_change` compares `fast` with `slow`: above `early_warning_threshold` → `early_warning`.
  `regime_change_score` compares `current` with `previous`: above `regime_change_threshold` →
  `regime_change` (the confirmation, on twice the history).
- `max_abs_correlation`: the off-diagonal pair of `current` with the largest |correlation|.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

Matrix = dict[str, dict[str, float | None]]


class ReturnObservation(Protocol):
    """Anything with these attributes, e.g. `tradeguard.core.events.StrategyReturnPayload`."""

    @property
    def strategy(self) -> str: ...
    @property
    def period_end(self) -> datetime: ...
    @property
    def return_(self) -> float: ...


class ReturnObs(NamedTuple):
    """A plain return observation (ratio: 0.01 = +1 %)."""

    strategy: str
    period_end: datetime
    return_: float


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CorrelationConfig(_Frozen):
    """Resampling frequency, window lengths (in buckets) and thresholds."""

    freq: timedelta = Field(timedelta(minutes=15), description="common bucket length")
    window: int = Field(100, ge=3, description="buckets in the current (and the previous) window")
    fast: int = Field(50, ge=3, description="buckets in the fast window")
    slow: int = Field(150, ge=3, description="buckets in the slow window")
    min_periods_ratio: float = Field(0.5, gt=0, le=1, description="share of a window a pair needs")
    early_warning_threshold: float = Field(0.3, gt=0, le=2)
    regime_change_threshold: float = Field(0.3, gt=0, le=2)
    silent_after: timedelta = Field(timedelta(minutes=30), description="older last observation = excluded")

    @model_validator(mode="after")
    def _check(self) -> CorrelationConfig:
        if self.fast >= self.slow:
            raise ValueError("fast must be shorter than slow")
        if self.freq <= timedelta(0) or self.freq % _US:
            raise ValueError("freq must be a positive whole number of microseconds")
        return self

    def min_periods(self, length: int) -> int:
        return max(3, math.ceil(self.min_periods_ratio * length))


class SilentStrategy(_Frozen):
    strategy: str
    last_period_end: datetime
    silent_for_s: float


class PairCorrelation(_Frozen):
    a: str
    b: str
    correlation: float


class CorrelationReport(_Frozen):
    """Matrices are `{a: {b: value}}` over `strategies` (JSON-ready; None where undefined)."""

    as_of: datetime
    last_bucket_end: datetime
    freq_s: float
    strategies: tuple[str, ...]
    excluded: tuple[SilentStrategy, ...]
    buckets: dict[str, int] = Field(description="buckets with a value in the current window, per strategy")
    current: Matrix
    previous: Matrix
    fast: Matrix
    slow: Matrix
    max_abs_correlation: PairCorrelation | None
    fast_slow_change: float | None
    regime_change_score: float | None
    early_warning: bool
    regime_change: bool


def _us(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("timestamps must carry a timezone (UTC)")
    return (t - _EPOCH) // _US


def resample_returns(
    observations: Iterable[ReturnObservation], freq: timedelta, first_end: datetime, last_end: datetime
) -> pd.DataFrame:
    """Compounded return per bucket (rows: bucket ends `first_end`..`last_end`, UTC) and strategy (columns).

    Observations outside (first_end − freq, last_end] are dropped; buckets with none are NaN.
    """
    f = freq // _US
    lo, hi = _us(first_end), _us(last_end)
    latest: dict[tuple[str, int], float] = {}
    for ob in observations:
        latest[(ob.strategy, _us(ob.period_end))] = ob.return_
    growth: dict[tuple[int, str], float] = {}
    for (strategy, t), r in latest.items():
        end = -(-t // f) * f
        if lo <= end <= hi:
            growth[(end, strategy)] = growth.get((end, strategy), 1.0) * (1.0 + r)
    grid = pd.DatetimeIndex([_EPOCH + k * _US for k in range(lo, hi + 1, f)], name="bucket_end")
    if not growth:
        return pd.DataFrame(index=grid, dtype=float)
    s = pd.Series(growth, dtype=float) - 1.0
    frame = s.unstack()
    frame.index = pd.DatetimeIndex([_EPOCH + k * _US for k in frame.index])
    return frame.reindex(index=grid, columns=sorted(frame.columns))


def correlation_report(
    observations: Iterable[ReturnObservation], now: datetime, config: CorrelationConfig | None = None
) -> CorrelationReport:
    """Correlation matrices of the active strategies at `now` (see the module doc for every definition)."""
    cfg = config or CorrelationConfig()
    now_us, f = _us(now), cfg.freq // _US
    last_end_us = now_us // f * f
    length = max(2 * cfg.window, cfg.slow, cfg.fast)
    usable = [ob for ob in observations if _us(ob.period_end) <= now_us]
    last_seen: dict[str, datetime] = {}
    for ob in usable:
        if ob.strategy not in last_seen or ob.period_end > last_seen[ob.strategy]:
            last_seen[ob.strategy] = ob.period_end
    silent_us = cfg.silent_after // _US
    active = sorted(s for s, t in last_seen.items() if now_us - _us(t) <= silent_us)
    excluded = tuple(
        SilentStrategy(
            strategy=s, last_period_end=t.astimezone(UTC), silent_for_s=(now_us - _us(t)) / 1_000_000
        )
        for s, t in sorted(last_seen.items())
        if s not in active
    )
    last_end = _EPOCH + last_end_us * _US
    active_set = set(active)
    frame = resample_returns(
        (ob for ob in usable if ob.strategy in active_set),
        cfg.freq,
        last_end - (length - 1) * cfg.freq,
        last_end,
    ).reindex(columns=active)
    current = _corr(frame.iloc[-cfg.window :], cfg.min_periods(cfg.window))
    previous = _corr(frame.iloc[-2 * cfg.window : -cfg.window], cfg.min_periods(cfg.window))
    fast = _corr(frame.iloc[-cfg.fast :], cfg.min_periods(cfg.fast))
    slow = _corr(frame.iloc[-cfg.slow :], cfg.min_periods(cfg.slow))
    fast_slow = _mean_abs_change(fast, slow)
    regime = _mean_abs_change(current, previous)
    return CorrelationReport(
        as_of=now.astimezone(UTC),
        last_bucket_end=last_end,
        freq_s=cfg.freq.total_seconds(),
        strategies=tuple(active),
        excluded=excluded,
        buckets={s: int(frame[s].iloc[-cfg.window :].notna().sum()) for s in active},
        current=_nested(current),
        previous=_nested(previous),
        fast=_nested(fast),
        slow=_nested(slow),
        max_abs_correlation=_max_abs(current),
        fast_slow_change=fast_slow,
        regime_change_score=regime,
        early_warning=fast_slow is not None and fast_slow > cfg.early_warning_threshold,
        regime_change=regime is not None and regime > cfg.regime_change_threshold,
    )


def _corr(frame: pd.DataFrame, min_periods: int) -> pd.DataFrame:
    """Pairwise-complete Pearson, clipped to [-1, 1]; NaN where undefined."""
    return frame.corr(method="pearson", min_periods=min_periods).clip(-1.0, 1.0)


def _nested(m: pd.DataFrame) -> Matrix:
    return {
        str(a): {str(b): (float(v) if np.isfinite(v) else None) for b, v in row.items()}
        for a, row in m.iterrows()
    }


def _upper(m: pd.DataFrame) -> np.ndarray:
    return m.to_numpy(dtype=float)[np.triu_indices(len(m), k=1)]


def _mean_abs_change(a: pd.DataFrame, b: pd.DataFrame) -> float | None:
    diff = np.abs(_upper(a) - _upper(b))
    diff = diff[np.isfinite(diff)]
    return float(diff.mean()) if diff.size else None


def _max_abs(m: pd.DataFrame) -> PairCorrelation | None:
    values = _upper(m)
    if not np.isfinite(values).any():
        return None
    k = int(np.nanargmax(np.abs(values)))
    i, j = (idx[k] for idx in np.triu_indices(len(m), k=1))
    return PairCorrelation(a=str(m.index[i]), b=str(m.columns[j]), correlation=float(values[k]))
