"""Candle frames (Freqtrade's `date, open, high, low, close, volume`): validation, bad ticks, gaps.

The core never forward-fills: a missing candle is reported as a gap and simply absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tradeguard.core.config import DataQualityConfig

COLUMNS = ["date", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]


@dataclass(frozen=True, slots=True)
class BadTick:
    """One price field replaced or one row dropped by the bad-tick rule."""

    date: pd.Timestamp
    field: str
    original: float
    replacement: float | None
    rule: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Consecutive missing candles: open times `start` .. `end` inclusive."""

    start: pd.Timestamp
    end: pd.Timestamp
    missing: int


@dataclass(frozen=True, slots=True)
class DataQualityReport:
    """What cleaning changed and what is missing."""

    rows_in: int
    rows_out: int
    duplicates_dropped: int = 0
    bad_ticks: tuple[BadTick, ...] = field(default_factory=tuple)
    gaps: tuple[Gap, ...] = field(default_factory=tuple)

    @property
    def missing_candles(self) -> int:
        return sum(g.missing for g in self.gaps)


def validate_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Return the frame with exactly Freqtrade's columns, a UTC `date` and float prices.

    Raises ValueError naming the first problem; never guesses a timezone for naive dates.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"candles lack column(s) {', '.join(missing)}; need {', '.join(COLUMNS)}")
    out = df.loc[:, COLUMNS].copy()
    if not isinstance(out["date"].dtype, pd.DatetimeTZDtype):
        raise ValueError("candle 'date' must be timezone-aware UTC datetimes")
    out["date"] = out["date"].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    for col in COLUMNS[1:]:
        out[col] = pd.to_numeric(out[col], errors="raise").astype("float64")
    return out


def clean_candles(
    df: pd.DataFrame, timeframe_s: int, config: DataQualityConfig | None = None
) -> tuple[pd.DataFrame, DataQualityReport]:
    """Sort, de-duplicate, repair bad ticks and find gaps. Each step only looks at one candle.

    Rules, in order:
    1. rows are sorted by `date`; a repeated `date` keeps its last row (the latest write wins);
    2. a row with a non-finite or non-positive open/close is dropped (there is no price to repair from);
    3. high/low are made to contain open and close;
    4. a low below `wick_floor_ratio` x min(open, close), or a high above `wick_ceiling_ratio` x
       max(open, close), is a bad print and is replaced by that body edge.
    """
    config = config or DataQualityConfig()
    frame = validate_frame(df)
    rows_in = len(frame)
    frame = frame.sort_values("date", kind="stable")
    deduped = frame.drop_duplicates("date", keep="last")
    duplicates = len(frame) - len(deduped)
    frame = deduped.reset_index(drop=True)

    ticks: list[BadTick] = []
    body = frame[["open", "close"]]
    bad_rows = ~(np.isfinite(body).all(axis=1) & (body > 0).all(axis=1))
    for row in frame.loc[bad_rows].itertuples(index=False):
        ticks.append(BadTick(row.date, "row", float(row.close), None, "non_positive_or_missing_price"))
    frame = frame.loc[~bad_rows].reset_index(drop=True)

    body_low = np.minimum(frame["open"].to_numpy(), frame["close"].to_numpy())
    body_high = np.maximum(frame["open"].to_numpy(), frame["close"].to_numpy())
    low = frame["low"].to_numpy(copy=True)
    high = frame["high"].to_numpy(copy=True)
    dates = frame["date"]

    def _repair(values: np.ndarray, mask: np.ndarray, target: np.ndarray, name: str, rule: str) -> None:
        for i in np.flatnonzero(mask):
            ticks.append(BadTick(dates.iat[i], name, float(values[i]), float(target[i]), rule))
        values[mask] = target[mask]

    with np.errstate(invalid="ignore"):
        _repair(low, ~np.isfinite(low) | (low > body_low), body_low, "low", "low_above_body")
        _repair(high, ~np.isfinite(high) | (high < body_high), body_high, "high", "high_below_body")
        _repair(low, low < body_low * config.wick_floor_ratio, body_low, "low", "wick_below_floor")
        _repair(high, high > body_high * config.wick_ceiling_ratio, body_high, "high", "wick_above_ceiling")
    frame["low"] = low
    frame["high"] = high
    frame["volume"] = frame["volume"].fillna(0.0)

    report = DataQualityReport(
        rows_in=rows_in,
        rows_out=len(frame),
        duplicates_dropped=duplicates,
        bad_ticks=tuple(ticks),
        gaps=find_gaps(frame["date"], timeframe_s),
    )
    return frame, report


def find_gaps(dates: pd.Series, timeframe_s: int) -> tuple[Gap, ...]:
    """Runs of missing candles between consecutive sorted open times."""
    if len(dates) < 2:
        return ()
    ns = dates.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    step = timeframe_s * 1_000_000_000
    diffs = np.diff(ns)
    idx = np.flatnonzero(diffs > step)
    return tuple(
        Gap(
            start=pd.Timestamp(ns[i] + step, tz="UTC"),
            end=pd.Timestamp(ns[i + 1] - step, tz="UTC"),
            missing=int(-(-diffs[i] // step)) - 1,
        )
        for i in idx
    )


def resample(df: pd.DataFrame, source_s: int, target_s: int) -> pd.DataFrame:
    """Aggregate candles to a longer timeframe, keeping only buckets that are closed.

    Buckets are aligned to the Unix epoch (as exchanges align 4h/1d candles). A bucket is emitted only when
    the source data reaches its end, so a trailing, still-forming bucket never appears; a bucket with
    missing source candles inside it is kept (its OHLC is built from what exists) — the gap report of the
    source frame says where.
    """
    if target_s % source_s != 0 or target_s < source_s:
        raise ValueError(f"cannot resample {source_s}s candles to {target_s}s")
    if target_s == source_s or df.empty:
        return df.reset_index(drop=True)
    bucket = df["date"].dt.floor(f"{target_s}s")
    grouped = df.groupby(bucket, sort=True)
    out = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
    )
    data_end = df["date"].iloc[-1] + pd.Timedelta(seconds=source_s)
    closed = out.index + pd.Timedelta(seconds=target_s) <= data_end
    out = out.loc[closed].rename_axis("date").reset_index()
    return out.loc[:, COLUMNS]
