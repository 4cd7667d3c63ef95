"""Market guard application service: load a pair's data, clean it, and run the pure core on it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from tradeguard.adapters.candle_files import find_candle_file, read_candle_file
from tradeguard.adapters.external_files import ExternalLoad, load_external
from tradeguard.core.assessment import Assessment, assess, assess_history
from tradeguard.core.candles import DataQualityReport, clean_candles, resample
from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.external import with_derived
from tradeguard.core.features import CandleArrays
from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.errors import DataNotFoundError, InputError

log = logging.getLogger(__name__)

# Timeframes a longer one may be resampled from, when its own file is absent.
_SOURCE_TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")


@dataclass(frozen=True)
class MarketData:
    """A pair's cleaned candles, where they came from, and its external context."""

    pair: str
    timeframe: str
    frame: pd.DataFrame
    candles: CandleArrays
    quality: DataQualityReport
    source: Path
    resampled_from: str | None
    external: ExternalLoad

    def quality_summary(self) -> dict[str, object]:
        q = self.quality
        return {
            "source": str(self.source),
            "resampled_from": self.resampled_from,
            "candles": q.rows_out,
            "first_candle": _iso(self.frame["date"].iloc[0]) if q.rows_out else None,
            "last_candle": _iso(self.frame["date"].iloc[-1]) if q.rows_out else None,
            "gaps": len(q.gaps),
            "missing_candles": q.missing_candles,
            "duplicates_dropped": q.duplicates_dropped,
            "bad_ticks": [
                {
                    "date": _iso(t.date),
                    "field": t.field,
                    "original": t.original,
                    "replacement": t.replacement,
                    "rule": t.rule,
                }
                for t in q.bad_ticks
            ],
            "external_sources": sorted(self.external.series),
            "warnings": list(self.external.warnings),
        }


def load_market_data(
    data_dir: Path,
    pair: str,
    timeframe: str,
    external_dir: Path | None = None,
    config: MarketGuardConfig | None = None,
) -> MarketData:
    """Load, clean and (if only a shorter timeframe is on disk) resample a pair's candles."""
    config = config or MarketGuardConfig()
    target_s = timeframe_seconds(timeframe)
    path, source_tf = _find_source(Path(data_dir), pair, timeframe, target_s)
    source_s = timeframe_seconds(source_tf)
    raw = read_candle_file(path)
    frame, quality = clean_candles(raw, source_s, config.data_quality)
    if source_tf != timeframe:
        frame = resample(frame, source_s, target_s)
        quality = DataQualityReport(
            rows_in=quality.rows_in,
            rows_out=len(frame),
            duplicates_dropped=quality.duplicates_dropped,
            bad_ticks=quality.bad_ticks,
            gaps=quality.gaps,
        )
    if frame.empty:
        raise DataNotFoundError(f"{path} holds no usable candles for {pair}")
    for tick in quality.bad_ticks:
        log.info(
            "%s %s: bad tick at %s %s %s -> %s",
            pair,
            timeframe,
            tick.date,
            tick.field,
            tick.original,
            tick.replacement,
        )
    external = load_external(external_dir, data_dir, pair)
    external.series = with_derived(external.series, config.external)
    return MarketData(
        pair=pair,
        timeframe=timeframe,
        frame=frame,
        candles=CandleArrays.from_frame(frame, target_s),
        quality=quality,
        source=path,
        resampled_from=source_tf if source_tf != timeframe else None,
        external=external,
    )


def assess_pair(data: MarketData, at: datetime, config: MarketGuardConfig | None = None) -> Assessment:
    """The market guard's answer for the pair at `at` (only data known by then is used)."""
    first_close = data.candles.close_ns[0]
    if pd.Timestamp(at).value < first_close:
        raise InputError(
            f"no {data.timeframe} candle of {data.pair} had closed by {_iso(at)}; "
            f"the data starts at {_iso(data.frame['date'].iloc[0])}"
        )
    return assess(
        data.candles, data.external.series, at, pair=data.pair, timeframe=data.timeframe, config=config
    )


def history_for_pair(
    data: MarketData, start: datetime, end: datetime, config: MarketGuardConfig | None = None
) -> pd.DataFrame:
    """Point-in-time assessment of every candle with open time in [start, end]."""
    if start > end:
        raise InputError(f"--start {_iso(start)} is after --end {_iso(end)}")
    frame = assess_history(
        data.candles, data.external.series, timeframe=data.timeframe, start=start, end=end, config=config
    )
    if frame.empty:
        dates = data.frame["date"]
        raise InputError(
            f"no {data.timeframe} candles of {data.pair} between {_iso(start)} and {_iso(end)}; "
            f"the data covers {_iso(dates.iloc[0])} to {_iso(dates.iloc[-1])}"
        )
    return frame


def last_close(data: MarketData) -> datetime:
    """Close time of the newest candle: the moment `--at latest` stands for."""
    return pd.Timestamp(int(data.candles.close_ns[-1]), tz="UTC").to_pydatetime()


def _find_source(data_dir: Path, pair: str, timeframe: str, target_s: int) -> tuple[Path, str]:
    try:
        return find_candle_file(data_dir, pair, timeframe), timeframe
    except DataNotFoundError as missing:
        shorter = [
            tf
            for tf in _SOURCE_TIMEFRAMES
            if timeframe_seconds(tf) < target_s and target_s % timeframe_seconds(tf) == 0
        ]
        for tf in reversed(shorter):
            try:
                return find_candle_file(data_dir, pair, tf), tf
            except DataNotFoundError:
                continue
        raise missing


def _iso(ts: datetime | pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
