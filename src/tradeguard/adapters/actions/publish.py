"""Trip action that hands the trip to a publisher (the audit log, the event bus, an alert channel)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tradeguard.adapters.actions.base import ActionOutcome, TripContext

Publish = Callable[[dict[str, Any]], Awaitable[None]]


class PublishEvent:
    """Publish :meth:`TripContext.as_dict` through ``publish``; the publisher's exception is the failure."""

    def __init__(self, publish: Publish, *, name: str = "publish") -> None:
        self._publish = publish
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def run(self, trip: TripContext) -> ActionOutcome:
        await self._publish(trip.as_dict())
        return ActionOutcome(
            self.name, True, detail=f"published trip of {trip.breaker_id} for {trip.account}"
        )
