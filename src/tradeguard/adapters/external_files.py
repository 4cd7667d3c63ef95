"""Load external context files (`../shared/data/external` formats, Freqtrade funding files).

Publication rules (when a value could first have been known), unless the file has a `published_at` column:
- daily values (Fear & Greed, VIX close, BTC dominance): from 00:00 UTC of the next day;
- the broad US dollar index (Fed H.10, our DXY): released weekly on Monday afternoon (US time) for the
  days up to the previous Friday, so a value is usable from 00:00 UTC of the Tuesday after the first
  Monday following its date;
- funding rates: at their funding time (the rate is fixed at settlement).
A file that is absent removes its source; a file that cannot be read is skipped with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tradeguard.adapters.candle_files import candle_stem, read_candle_file
from tradeguard.core.external import ExternalSeries
from tradeguard.errors import DataFormatError

log = logging.getLogger(__name__)

# source -> (file names tried in order, value column, publication rule)
FILES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "fear_greed": (("fear_greed_index_daily.csv", "fear_greed.csv"), "fng_value", "next_day"),
    "vix": (("vix_daily.csv", "vix.csv"), "value", "next_day"),
    "dxy": (("usd_broad_index_daily.csv", "dxy_daily.csv", "dxy.csv"), "value", "weekly_monday"),
    "btc_dominance": (("btc_dominance_daily.csv", "btc_dominance.csv"), "value", "next_day"),
}


@dataclass
class ExternalLoad:
    """Series that loaded, and a warning for each source that did not."""

    series: dict[str, ExternalSeries] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def publication_times(observed: pd.Series, rule: str) -> pd.Series:
    """When each observation could first be known, by one of the documented rules."""
    day = observed.dt.floor("D")
    if rule == "next_day":
        return day + pd.Timedelta(days=1)
    if rule == "weekly_monday":
        days_to_monday = (7 - day.dt.day_of_week) % 7
        days_to_monday = days_to_monday.where(days_to_monday > 0, 7)
        return day + pd.to_timedelta(days_to_monday + 1, unit="D")
    if rule == "at_time":
        return observed
    raise ValueError(f"unknown publication rule {rule!r}")


def read_daily_csv(path: Path, name: str, value_column: str, rule: str) -> ExternalSeries:
    """A `date,<value>[,published_at]` CSV; blank values (holidays) are dropped, not filled."""
    df = pd.read_csv(path)
    if "date" not in df.columns or value_column not in df.columns:
        raise DataFormatError(f"{path}: expected columns date,{value_column}")
    df = df.assign(
        date=pd.to_datetime(df["date"], utc=True, format="ISO8601"),
        value=pd.to_numeric(df[value_column], errors="coerce"),
    ).dropna(subset=["value"])
    if "published_at" in df.columns:
        published = pd.to_datetime(df["published_at"], utc=True, format="ISO8601")
    else:
        published = publication_times(df["date"], rule)
    return make_series(name, df["date"], published, df["value"])


def read_funding_file(path: Path) -> ExternalSeries:
    """A Freqtrade funding-rate file: `date` is the funding time, the rate is in `open`."""
    df = read_candle_file(path)
    return make_series("funding_rate", df["date"], df["date"], df["open"])


def find_funding_file(data_dir: Path, pair: str) -> Path | None:
    """Freqtrade's funding file for the pair's perpetual (`BTC/USDT` -> `BTC/USDT:USDT`)."""
    perp = pair if ":" in pair else f"{pair}:{pair.split('/')[1]}"
    stem = candle_stem(perp, "*", "funding_rate")
    folder = Path(data_dir) / "futures"
    matches = sorted(folder.glob(f"{stem}.*")) + sorted(folder.glob(f"*_{stem}.*"))
    return matches[0] if matches else None


def load_external(
    external_dir: Path | None, data_dir: Path | None = None, pair: str | None = None
) -> ExternalLoad:
    """Every source that can be found: daily files in `external_dir`, funding next to the candles."""
    result = ExternalLoad()
    if external_dir is not None:
        folder = Path(external_dir)
        if not folder.is_dir():
            result.warnings.append(f"external directory {folder} does not exist: no external context")
        else:
            for name, (names, column, rule) in FILES.items():
                path = next((folder / n for n in names if (folder / n).is_file()), None)
                if path is None:
                    continue
                _try(result, name, lambda p=path, n=name, c=column, r=rule: read_daily_csv(p, n, c, r))
    if data_dir is not None and pair is not None:
        path = find_funding_file(Path(data_dir), pair)
        if path is not None:
            _try(result, "funding_rate", lambda p=path: read_funding_file(p))
    return result


def _try(result: ExternalLoad, name: str, load: Callable[[], ExternalSeries]) -> None:
    try:
        result.series[name] = load()
    except (DataFormatError, ValueError, OSError) as exc:
        message = f"{name}: skipped, could not read it ({exc})"
        log.warning(message)
        result.warnings.append(message)


def make_series(name: str, observed: pd.Series, published: pd.Series, values: pd.Series) -> ExternalSeries:
    """An ExternalSeries from observation times, publication times and values, sorted by publication."""
    frame = pd.DataFrame({"o": observed, "p": published, "v": values}).sort_values(["p", "o"], kind="stable")
    return ExternalSeries(
        name=name,
        observed_at=frame["o"].to_numpy(dtype="datetime64[ns]").astype(np.int64),
        available_at=frame["p"].to_numpy(dtype="datetime64[ns]").astype(np.int64),
        values=frame["v"].to_numpy(dtype=np.float64),
    )
