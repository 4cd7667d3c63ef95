"""Candle cleaning: bad ticks, duplicates, gaps, resampling."""

import numpy as np
import pandas as pd
import pytest

from tests.synthetic import candles_from_closes
from tradeguard.core.candles import clean_candles, find_gaps, resample
from tradeguard.core.config import DataQualityConfig


def test_wick_far_below_body_is_repaired_and_reported():
    df = candles_from_closes(np.linspace(3.0, 2.5, 10))
    df.loc[5, "low"] = 0.0001
    clean, report = clean_candles(df, 3600)
    assert clean.loc[5, "low"] == pytest.approx(min(df.loc[5, "open"], df.loc[5, "close"]))
    [tick] = report.bad_ticks
    assert (tick.field, tick.original, tick.rule) == ("low", 0.0001, "wick_below_floor")
    assert tick.date == df.loc[5, "date"]


def test_real_crash_wick_is_kept():
    df = candles_from_closes(np.full(5, 17.0))
    df.loc[2, "low"] = 7.9  # -55 % intra-candle, like alt-coins on 2025-10-10
    clean, report = clean_candles(df, 3600)
    assert clean.loc[2, "low"] == 7.9
    assert report.bad_ticks == ()


def test_spike_high_and_inconsistent_ohlc_are_repaired():
    df = candles_from_closes(np.full(4, 10.0))
    df.loc[1, "high"] = 80.0
    df.loc[2, "high"] = 9.0  # below the body
    clean, report = clean_candles(df, 3600, DataQualityConfig(wick_ceiling_ratio=5.0))
    assert clean.loc[1, "high"] == 10.0 and clean.loc[2, "high"] == 10.0
    assert {t.rule for t in report.bad_ticks} == {"wick_above_ceiling", "high_below_body"}


def test_rows_without_a_price_are_dropped_and_duplicates_keep_the_last():
    df = candles_from_closes(np.arange(1.0, 7.0))
    df.loc[3, "close"] = 0.0
    dup = df.iloc[[4]].assign(close=42.0, high=43.0)
    clean, report = clean_candles(pd.concat([df.iloc[::-1], dup]), 3600)  # unsorted; dup written last
    assert clean["date"].is_monotonic_increasing
    assert len(clean) == 5 and report.duplicates_dropped == 1
    assert clean.loc[clean["date"] == df.loc[4, "date"], "close"].item() == 42.0
    assert [t.rule for t in report.bad_ticks] == ["non_positive_or_missing_price"]
    assert report.gaps[0].missing == 1 and report.gaps[0].start == df.loc[3, "date"]


def test_naive_dates_are_refused():
    df = candles_from_closes(np.ones(3))
    df["date"] = df["date"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="timezone-aware"):
        clean_candles(df, 3600)


def test_gaps_are_reported_not_filled():
    df = candles_from_closes(np.arange(1.0, 11.0)).drop(index=[3, 4, 7]).reset_index(drop=True)
    gaps = find_gaps(df["date"], 3600)
    assert [(g.start.hour, g.end.hour, g.missing) for g in gaps] == [(3, 4, 2), (7, 7, 1)]
    clean, report = clean_candles(df, 3600)
    assert len(clean) == 7 and report.missing_candles == 3


def test_resample_builds_ohlcv_and_drops_the_forming_bucket():
    df = candles_from_closes(np.arange(1.0, 11.0))  # 10 hourly candles from 00:00
    out = resample(df, 3600, 4 * 3600)
    assert list(out["date"].dt.hour) == [0, 4]  # 08:00 bucket has only 2 of 4 candles: still forming
    first = df.iloc[:4]
    assert out.iloc[0][["open", "high", "low", "close", "volume"]].tolist() == [
        first["open"].iloc[0],
        first["high"].max(),
        first["low"].min(),
        first["close"].iloc[-1],
        first["volume"].sum(),
    ]


def test_resample_keeps_a_closed_bucket_with_a_gap_inside():
    df = candles_from_closes(np.arange(1.0, 9.0)).drop(index=[2]).reset_index(drop=True)
    out = resample(df, 3600, 4 * 3600)
    assert len(out) == 2 and out.iloc[0]["volume"] == 30.0


def test_resample_refuses_incompatible_timeframes():
    with pytest.raises(ValueError):
        resample(candles_from_closes(np.ones(3)), 3600, 5400)
