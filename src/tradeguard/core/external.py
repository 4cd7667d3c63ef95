"""External context (Fear & Greed, funding, BTC dominance, VIX, DXY) as point-in-time series.

Every value carries `available_at`: the moment it was published and could have been known. Lookups at
time t only ever see values with `available_at <= t`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tradeguard.core.config import ExternalConfig

SOURCES = ("fear_greed", "funding_rate", "btc_dominance", "vix", "dxy")
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S


@dataclass(frozen=True, slots=True, eq=False)
class ExternalSeries:
    """Observations of one source, sorted by `available_at` (int64 ns since the epoch, UTC)."""

    name: str
    observed_at: np.ndarray
    available_at: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.values)
        if len(self.observed_at) != n or len(self.available_at) != n:
            raise ValueError(f"{self.name}: observed_at, available_at and values differ in length")
        if n and np.any(np.diff(self.available_at) < 0):
            raise ValueError(f"{self.name}: available_at must be sorted")

    def lookup(self, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latest value published at or before each t, and its publication time (NaN / -1 if none)."""
        t_ns = np.asarray(t_ns, dtype=np.int64)
        idx = np.searchsorted(self.available_at, t_ns, side="right") - 1
        known = idx >= 0
        safe = np.where(known, idx, 0)
        values = np.where(known, self.values[safe] if len(self.values) else np.nan, np.nan)
        published = np.where(known, self.available_at[safe] if len(self.values) else -1, -1)
        return values.astype(np.float64), published.astype(np.int64)

    def daily_last(self) -> ExternalSeries:
        """The last observation of each UTC day (by observation time), keeping its publication time.

        Intraday sources (CoinGecko updates every few minutes) become daily, so changes "over N days" are.
        """
        if len(self.values) == 0:
            return self
        day = self.observed_at // NS_PER_DAY
        order = np.lexsort((self.available_at, self.observed_at))
        day_sorted = day[order]
        last = order[np.r_[day_sorted[1:] != day_sorted[:-1], True]]
        keep = np.sort(last)
        keep = keep[np.argsort(self.available_at[keep], kind="stable")]
        return ExternalSeries(self.name, self.observed_at[keep], self.available_at[keep], self.values[keep])

    def pct_change(self, periods: int, name: str) -> ExternalSeries:
        """Change in % over `periods` observations, published when the newer observation is."""
        v = self.values
        change = np.full(len(v), np.nan)
        if len(v) > periods:
            change[periods:] = (v[periods:] / v[:-periods] - 1.0) * 100.0
        return ExternalSeries(name, self.observed_at, self.available_at, change)


ExternalData = Mapping[str, ExternalSeries]


@dataclass(frozen=True, slots=True)
class ExternalAt:
    """External values as known at each of a set of times (arrays aligned with those times)."""

    values: dict[str, np.ndarray]
    age_s: dict[str, np.ndarray]


def external_at(external: ExternalData, t_ns: np.ndarray, config: ExternalConfig) -> ExternalAt:
    """Look up every source at each time; values older than `max_age_days` count as missing (NaN)."""
    values: dict[str, np.ndarray] = {}
    ages: dict[str, np.ndarray] = {}
    max_age_ns = config.max_age_days * NS_PER_DAY
    for name, series in external.items():
        v, published = series.lookup(t_ns)
        age_ns = np.where(published >= 0, t_ns - published, -1)
        fresh = (published >= 0) & (age_ns <= max_age_ns) & np.isfinite(v)
        values[name] = np.where(fresh, v, np.nan)
        ages[name] = np.where(published >= 0, age_ns / NS_PER_S, np.nan)
    return ExternalAt(values, ages)


def external_risk(ext: ExternalAt, config: ExternalConfig) -> tuple[np.ndarray, np.ndarray]:
    """0-1 risk from the external context, and the share (0-1) of the five sources that were known.

    Sub-risks (each 0-1), averaged over the known ones:
    - Fear & Greed: (50 - F&G)/50 on the fear side, 0.6 x (F&G - 50)/50 on the greed side;
    - VIX: linear from `vix_calm` (0) to `vix_panic` (1);
    - funding rate: |rate| / `funding_extreme_abs`, capped at 1 (crowded positioning either way);
    - DXY: rise over `dxy_change_days` / `dxy_extreme_change_pct` (a rising dollar is risk-off);
    - BTC dominance: rise over `btc_dominance_change_days` / its extreme (money fleeing to BTC).
    """
    subs: list[np.ndarray] = []
    if (fng := ext.values.get("fear_greed")) is not None:
        subs.append(np.where(fng <= 50, (50 - fng) / 50, 0.6 * (fng - 50) / 50))
    if (vix := ext.values.get("vix")) is not None:
        subs.append((vix - config.vix_calm) / (config.vix_panic - config.vix_calm))
    if (funding := ext.values.get("funding_rate")) is not None:
        subs.append(np.abs(funding) / config.funding_extreme_abs)
    if (dxy := ext.values.get("dxy_change_pct")) is not None:
        subs.append(dxy / config.dxy_extreme_change_pct)
    if (dom := ext.values.get("btc_dominance_change_pct")) is not None:
        subs.append(dom / config.btc_dominance_extreme_change_pct)
    if not subs:
        return np.array(np.nan), np.array(0.0)
    stacked = np.clip(np.vstack(np.broadcast_arrays(*subs)), 0.0, 1.0)
    known = np.isfinite(stacked)
    count = known.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = np.where(count > 0, np.nansum(stacked, axis=0) / np.maximum(count, 1), np.nan)
    return risk, count / len(SOURCES)


def with_derived(external: ExternalData, config: ExternalConfig) -> dict[str, ExternalSeries]:
    """Add the change series the risk uses (DXY and BTC dominance % change) to the raw sources.

    Already-derived series are kept, so callers can derive once when their data changes and pass the result.
    """
    out = dict(external)
    if "dxy" in external and "dxy_change_pct" not in external:
        out["dxy_change_pct"] = (
            external["dxy"].daily_last().pct_change(config.dxy_change_days, "dxy_change_pct")
        )
    if "btc_dominance" in external and "btc_dominance_change_pct" not in external:
        out["btc_dominance_change_pct"] = (
            external["btc_dominance"]
            .daily_last()
            .pct_change(config.btc_dominance_change_days, "btc_dominance_change_pct")
        )
    return out
