"""Slack channel: an incoming webhook.

``POST {webhook_url}`` with JSON ``{"text", "blocks"}``: ``text`` is the notification fallback, ``blocks``
a header (plain text, at most 150 characters) and one mrkdwn section per alert (at most 3000 characters;
at most 50 blocks per message). Slack answers 200 ``ok``; errors are plain text (400 ``invalid_payload``,
403 ``action_prohibited``, 404 ``no_service``, 410 ``channel_is_archived``, 429 with ``Retry-After``,
500). In mrkdwn ``&``, ``<`` and ``>`` are escaped. The webhook URL is the secret: it never appears in
errors or logs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from tradeguard.adapters.alerts.base import Delivery, RetryPolicy, blocks, http_url, post_json, subject
from tradeguard.core.alerting import Outgoing

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000


class SlackConfig(BaseModel):
    """The incoming webhook's URL (https://hooks.slack.com/services/...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_url: SecretStr


def escape_mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(message: Outgoing) -> dict[str, Any]:
    """The webhook payload: fallback text, a header and one section per alert (the rest counted)."""
    title = subject(message)
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, MAX_HEADER)}}
    ]
    parts = blocks(message)
    for shown, (headline, lines) in enumerate(parts):
        if len(out) == MAX_BLOCKS - 1 and len(parts) - shown > 1:
            more = f"… and {len(parts) - shown} more"
            out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
            break
        text = "\n".join([f"*{escape_mrkdwn(headline)}*", *map(escape_mrkdwn, lines)])
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, MAX_SECTION)}})
    return {"text": escape_mrkdwn(title), "blocks": out}


class SlackChannel:
    """Posts each message to one Slack channel through its incoming webhook."""

    def __init__(self, config: SlackConfig, policy: RetryPolicy | None = None, name: str = "slack") -> None:
        self._url = http_url(config.webhook_url.get_secret_value(), "slack webhook_url")
        self._policy = policy or RetryPolicy()
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def send(self, message: Outgoing) -> Delivery:
        _, attempts = await post_json(f"{self.name}: webhook", self._url, render(message), self._policy)
        return Delivery(self.name, len(message.alerts), True, attempts, detail="posted")
