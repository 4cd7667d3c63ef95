"""PagerDuty channel: the Events API v2.

``POST {api_url}/v2/enqueue`` with one event per alert. A trigger is ``{routing_key, event_action:
"trigger", dedup_key, payload: {summary (at most 1024 characters), source, severity (critical, error,
warning or info), timestamp, component, class, custom_details}, client}``; a resolve is ``{routing_key,
event_action: "resolve", dedup_key}``. The alert's key is the dedup key (at most 255 characters; a longer
key is replaced by its SHA-256), so a resolve closes the incident its trigger opened and a repeated
trigger updates it. PagerDuty answers 202 ``{"status": "success", "dedup_key"}``; 400 for an invalid
event, 429 when throttled, 5xx (both retried).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from tradeguard.adapters.alerts.base import AlertDeliveryError, Delivery, RetryPolicy, http_url, post_json
from tradeguard.core.alerting import Alert, Outgoing

MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


class PagerDutyConfig(BaseModel):
    """An Events API v2 integration's routing key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    routing_key: SecretStr
    api_url: str = "https://events.pagerduty.com"
    source: str = "tradeguard"


def dedup_key(alert: Alert) -> str:
    key = alert.key
    return key if len(key) <= MAX_DEDUP_KEY else hashlib.sha256(key.encode()).hexdigest()


def event(alert: Alert, routing_key: str, source: str) -> dict[str, Any]:
    """The Events API v2 body for one alert."""
    base = {"routing_key": routing_key, "dedup_key": dedup_key(alert)}
    if alert.resolved:
        return {**base, "event_action": "resolve"}
    summary = alert.headline
    return {
        **base,
        "event_action": "trigger",
        "payload": {
            "summary": summary if len(summary) <= MAX_SUMMARY else summary[: MAX_SUMMARY - 1] + "…",
            "source": source,
            "severity": alert.severity,
            "timestamp": alert.at.isoformat(),
            "component": alert.account,
            "class": alert.event_type,
            "custom_details": {
                "account": alert.account,
                "details": list(alert.details),
                "guard_action": alert.action,
                "reset": alert.reset,
            },
        },
        "client": "tradeguard",
    }


class PagerDutyChannel:
    """Triggers and resolves PagerDuty alerts of one service, one event per alert."""

    def __init__(
        self, config: PagerDutyConfig, policy: RetryPolicy | None = None, name: str = "pagerduty"
    ) -> None:
        self._url = f"{http_url(config.api_url, 'pagerduty api_url')}/v2/enqueue"
        self._config = config
        self._policy = policy or RetryPolicy()
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def send(self, message: Outgoing) -> Delivery:
        """Every alert's event, in order; the failures are raised together after trying all of them."""
        attempts, errors = 0, []
        key = self._config.routing_key.get_secret_value()
        for alert in message.alerts:
            body = event(alert, key, self._config.source)
            what = f"{self.name}: {body['event_action']} {body['dedup_key']}"
            try:
                _, made = await post_json(what, self._url, body, self._policy)
            except AlertDeliveryError as exc:
                attempts += exc.attempts
                errors.append(str(exc))
                continue
            attempts += made
        if errors:
            failed = f"{len(errors)} of {len(message.alerts)} event(s) failed"
            raise AlertDeliveryError(f"{failed}: {'; '.join(errors)}", attempts=attempts)
        return Delivery(
            self.name, len(message.alerts), True, attempts, detail=f"{len(message.alerts)} event(s) accepted"
        )
