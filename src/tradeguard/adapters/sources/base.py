"""The external-source port: each source fetches a point-in-time series of one external value."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from tradeguard.adapters.status import SourceStatus
from tradeguard.core.external import ExternalSeries


class SourceError(Exception):
    """A source could not be fetched or parsed (after its retries)."""


class ExternalFetcher(Protocol):
    """Fetches the recent history of one source (`name` is a key of core.external.SOURCES)."""

    name: str
    status: SourceStatus

    async def fetch(self, now: datetime) -> ExternalSeries:
        """Recent observations with their publication times; raises SourceError on failure."""
        ...
