"""The notifier: audit envelopes in, messages to people out, through the router and the channels.

Feed it every risk event the service records (`await notifier.handle(record)`) and let `run()` flush it
every second (groups that are due, alerts held by quiet hours). Each message sent ends in a `Delivery`
(returned, passed to `on_delivery` and logged when it failed): a failure is reported, never swallowed.
Messages to one channel go out one at a time, in the order the router released them, so a resolve
never overtakes its trigger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from tradeguard.adapters.alerts.base import AlertChannel, AlertDeliveryError, Delivery, RetryPolicy
from tradeguard.adapters.alerts.email import EmailChannel, EmailConfig
from tradeguard.adapters.alerts.pagerduty import PagerDutyChannel, PagerDutyConfig
from tradeguard.adapters.alerts.slack import SlackChannel, SlackConfig
from tradeguard.adapters.alerts.telegram import TelegramChannel, TelegramConfig
from tradeguard.core.alerting import (
    AlertRouter,
    FatiguePolicy,
    Outgoing,
    QuietHours,
    RoutingRule,
    alert_from_envelope,
)
from tradeguard.core.audit import AuditRecord

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Notifier:
    """Owns the router and the channels (named as the router knows them)."""

    def __init__(
        self,
        router: AlertRouter,
        channels: Sequence[AlertChannel],
        *,
        clock: Callable[[], datetime] = utc_now,
        service_url: str = "",
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.router = router
        self.channels = {channel.name: channel for channel in channels}
        missing = set(router.channels) - set(self.channels)
        if missing:
            raise ValueError(f"the router names channels without an adapter: {sorted(missing)}")
        self.clock = clock
        self.service_url = service_url
        self.on_delivery = on_delivery
        self._locks = {name: asyncio.Lock() for name in self.channels}

    async def handle(self, envelope: Mapping[str, Any] | AuditRecord) -> list[Delivery]:
        """Offer the alert a risk event calls for (if any) and send what is due now."""
        alert = alert_from_envelope(envelope, self.service_url)
        if alert is None:
            return []
        return await self._send(self.router.offer(alert, self.clock()))

    async def flush(self) -> list[Delivery]:
        """Send the groups that are due and the alerts quiet hours held, if they are over."""
        return await self._send(self.router.flush(self.clock()))

    async def run(self, interval_s: float = 1.0) -> None:
        """Flush every `interval_s` until cancelled."""
        while True:
            await self.flush()
            await asyncio.sleep(interval_s)

    async def _send(self, messages: list[Outgoing]) -> list[Delivery]:
        if not messages:
            return []
        return list(await asyncio.gather(*(self._deliver(m) for m in messages)))

    async def _deliver(self, message: Outgoing) -> Delivery:
        channel = self.channels[message.channel]
        async with self._locks[message.channel]:
            try:
                delivery = await channel.send(message)
            except AlertDeliveryError as exc:
                delivery = Delivery(channel.name, len(message.alerts), False, exc.attempts, error=str(exc))
            except Exception as exc:  # a bug or an unexpected error is a failed delivery like any other
                log.exception("alert channel %s raised", channel.name)
                delivery = Delivery(
                    channel.name, len(message.alerts), False, 1, error=f"{type(exc).__name__}: {exc}"
                )
        if not delivery.ok:
            log.error(
                "alert to %s not delivered (%d alert(s)): %s", channel.name, delivery.alerts, delivery.error
            )
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        return delivery


class AlertsSection(Protocol):
    """What `build_notifier` reads: the `[alerts]` settings section."""

    @property
    def telegram(self) -> TelegramConfig | None: ...
    @property
    def slack(self) -> SlackConfig | None: ...
    @property
    def pagerduty(self) -> PagerDutyConfig | None: ...
    @property
    def email(self) -> EmailConfig | None: ...
    @property
    def routes(self) -> Mapping[str, Sequence[RoutingRule]]: ...
    @property
    def quiet_hours(self) -> Mapping[str, QuietHours]: ...
    @property
    def fatigue(self) -> FatiguePolicy: ...
    @property
    def service_url(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...


def build_notifier(
    section: AlertsSection,
    *,
    clock: Callable[[], datetime] = utc_now,
    on_delivery: Callable[[Delivery], None] | None = None,
) -> Notifier | None:
    """The notifier of the configured channels; None when no channel is configured."""
    policy = RetryPolicy(attempts=section.attempts, timeout_s=section.timeout_s)
    channels: list[AlertChannel] = []
    if section.pagerduty is not None:
        channels.append(PagerDutyChannel(section.pagerduty, policy))
    if section.telegram is not None:
        channels.append(TelegramChannel(section.telegram, policy))
    if section.slack is not None:
        channels.append(SlackChannel(section.slack, policy))
    if section.email is not None:
        channels.append(EmailChannel(section.email, policy))
    if not channels and not section.routes:
        return None
    router = AlertRouter([c.name for c in channels], section.routes, section.quiet_hours, section.fatigue)
    return Notifier(
        router,
        channels,
        clock=clock,
        service_url=section.service_url,
        on_delivery=on_delivery,
    )
