"""The Crypto Fear & Greed Index from alternative.me (``GET {base}/fng/?limit=N&format=json``).

Response: ``{"name": "Fear and Greed Index", "data": [{"value": "23", "value_classification":
"Extreme Fear", "timestamp": "1713312000", "time_until_update": "..."}, ...], "metadata": {"error": null}}``,
newest first; ``timestamp`` is 00:00 UTC of the day the value is for.

Publication time (``available_at``): 00:00 UTC of the day *after* ``timestamp`` — the ``next_day`` rule the
file loader applies to the same index. alternative.me publishes the value for day D at or shortly after
D 00:00 UTC, but the API does not say when each value actually appeared (updates are regularly minutes to
hours late, and ``time_until_update`` only concerns the next one), so no earlier moment is provably safe.
The next-day rule is never early, and it makes a live run and a replay from the CSV history see the same
value at the same instant, so backtests of the guard match what it does live. The cost is that the
value in use is up to one day older than the freshest one alternative.me shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pandas as pd

from tradeguard.adapters.external_files import make_series, publication_times
from tradeguard.adapters.sources.base import SourceError
from tradeguard.adapters.sources.http import HttpGetter, HttpPolicy
from tradeguard.adapters.status import SourceStatus
from tradeguard.core.external import ExternalSeries

ALTERNATIVE_ME_URL = "https://api.alternative.me"
PUBLICATION_RULE = "next_day"


class FearGreedFetcher:
    """The last ``limit`` daily values of the Fear & Greed Index (0-100)."""

    name = "fear_greed"

    def __init__(
        self,
        base_url: str = ALTERNATIVE_ME_URL,
        *,
        limit: int = 30,
        policy: HttpPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.url = base_url.rstrip("/") + "/fng/"
        self.limit = limit
        self.status = SourceStatus(self.name)
        self._http = HttpGetter(self.name, policy or HttpPolicy(), client)

    async def fetch(self, now: datetime) -> ExternalSeries:
        """Recent daily values, each available from 00:00 UTC of the next day (see the module docstring)."""
        body = await self._http.get_json(self.url, {"limit": str(self.limit), "format": "json"})
        return parse_fear_greed(body)


def parse_fear_greed(body: Any) -> ExternalSeries:
    """An alternative.me ``/fng/`` JSON body as a series; raises SourceError on any other shape."""
    try:
        error = (body.get("metadata") or {}).get("error")
        if error:
            raise SourceError(f"fear_greed: alternative.me reported an error: {error}")
        rows = [(int(row["timestamp"]), float(row["value"])) for row in body["data"]]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"fear_greed: unexpected response shape ({type(exc).__name__}: {exc})") from exc
    if not rows:
        raise SourceError("fear_greed: the response holds no values")
    frame = pd.DataFrame(rows, columns=["t", "v"]).drop_duplicates("t", keep="first")
    observed = pd.to_datetime(frame["t"], unit="s", utc=True)
    return make_series("fear_greed", observed, publication_times(observed, PUBLICATION_RULE), frame["v"])
