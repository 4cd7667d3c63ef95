"""A source serving a fixed series (external files during a replay): same interface as CachedSource."""

from __future__ import annotations

from datetime import datetime

from tradeguard.adapters.status import SourceStatus
from tradeguard.core.external import ExternalSeries


class StaticSource:
    """Always the same series; lookups at a replayed time still see only values published by then."""

    def __init__(self, series: ExternalSeries) -> None:
        self.series = series
        self.status = SourceStatus(series.name)

    async def get(self, now: datetime) -> ExternalSeries:
        self.status.succeeded(now)
        return self.series
