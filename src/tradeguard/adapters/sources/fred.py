"""VIX and the broad US dollar index (our DXY) from FRED, the St. Louis Fed's public economic database.

FRED serves any series as CSV without an API key: ``GET {base}/graph/fredgraph.csv?id=SERIES&cosd=YYYY-MM-DD``
(``cosd``: first observation date). Series used:
- ``VIXCLS`` — CBOE Volatility Index, daily close (source: Cboe);
- ``DTWEXBGS`` — Nominal Broad U.S. Dollar Index, daily (source: Federal Reserve H.10 release), the series
  of our ``usd_broad_index_daily.csv`` DXY file.

Response: a header ``observation_date,SERIES`` (exports before late 2024: ``DATE,SERIES``; both accepted)
and rows ``2024-04-16,18.40``; a missing value (holiday) is ``.`` or empty and is dropped, not filled.

Publication times follow the file loader (:mod:`tradeguard.adapters.external_files`): a VIX close is
usable from 00:00 UTC of the next day (``next_day``); DTWEXBGS comes out weekly with H.10 on Monday
afternoon for the days up to the previous Friday, so a value is usable from 00:00 UTC of the Tuesday
after the first Monday following its date (``weekly_monday``).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import httpx
import pandas as pd

from tradeguard.adapters.external_files import make_series, publication_times
from tradeguard.adapters.sources.base import SourceError
from tradeguard.adapters.sources.http import HttpGetter, HttpPolicy
from tradeguard.adapters.status import SourceStatus
from tradeguard.core.external import ExternalSeries

FRED_URL = "https://fred.stlouisfed.org"
# source name -> (FRED series id, publication rule)
FRED_SERIES: dict[str, tuple[str, str]] = {
    "vix": ("VIXCLS", "next_day"),
    "dxy": ("DTWEXBGS", "weekly_monday"),
}
DATE_COLUMNS = ("observation_date", "DATE")


class FredFetcher:
    """The last ``lookback_days`` of one FRED series (``name``: ``"vix"`` or ``"dxy"``)."""

    def __init__(
        self,
        name: str,
        base_url: str = FRED_URL,
        *,
        lookback_days: int = 120,
        policy: HttpPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if name not in FRED_SERIES:
            raise ValueError(f"unknown FRED source {name!r}; choose one of {', '.join(FRED_SERIES)}")
        if lookback_days < 1:
            raise ValueError(f"lookback_days must be at least 1, got {lookback_days}")
        self.name = name
        self.series_id, self.rule = FRED_SERIES[name]
        self.url = base_url.rstrip("/") + "/graph/fredgraph.csv"
        self.lookback_days = lookback_days
        self.status = SourceStatus(name)
        self._http = HttpGetter(name, policy or HttpPolicy(), client)

    async def fetch(self, now: datetime) -> ExternalSeries:
        """Observations since ``now - lookback_days`` with their publication times."""
        start = (now - timedelta(days=self.lookback_days)).strftime("%Y-%m-%d")
        text = await self._http.get_text(self.url, {"id": self.series_id, "cosd": start})
        return parse_fred_csv(text, self.name, self.series_id, self.rule)


def parse_fred_csv(text: str, name: str, series_id: str, rule: str) -> ExternalSeries:
    """A ``fredgraph.csv`` body as a series; raises SourceError on any other shape or an empty series."""
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise SourceError(f"{name}: FRED {series_id} is not a CSV ({exc})") from exc
    date_column = next((c for c in DATE_COLUMNS if c in frame.columns), None)
    if date_column is None or series_id not in frame.columns:
        header = ",".join(map(str, frame.columns))[:200]
        raise SourceError(f"{name}: FRED {series_id}: unexpected CSV header {header!r}")
    values = pd.to_numeric(frame[series_id].str.strip(), errors="coerce")  # "." and "" become NaN
    observed = pd.to_datetime(frame[date_column].str.strip(), utc=True, format="ISO8601", errors="coerce")
    keep = values.notna() & observed.notna()
    if not keep.any():
        raise SourceError(f"{name}: FRED {series_id} returned no values")
    observed, values = observed[keep], values[keep]
    return make_series(name, observed, publication_times(observed, rule), values)
