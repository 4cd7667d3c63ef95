"""Telegram channel: the Bot API's ``sendMessage``.

``POST {api_url}/bot{token}/sendMessage`` with JSON ``{chat_id, text, parse_mode,
disable_web_page_preview}`` answers ``{"ok": true, "result": {"message_id", ...}}``; errors answer
``{"ok": false, "error_code", "description"}`` with the same HTTP status, and 429 carries
``parameters.retry_after`` (honoured). The text is at most 4096 characters. ``parse_mode`` HTML escapes
``<``, ``>`` and ``&``; MarkdownV2 puts a backslash before each of ``_*[]()~`>#+-=|{}.!`` and ``\\``.
The bot token is part of the URL, so the URL never appears in errors or logs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tradeguard.adapters.alerts.base import Delivery, RetryPolicy, blocks, http_url, post_json, subject
from tradeguard.core.alerting import Outgoing

MAX_TEXT = 4096
MAX_LINE = 300  # characters of one body line, before escaping
ParseMode = Literal["HTML", "MarkdownV2"]
_MARKDOWN_V2 = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")


class TelegramConfig(BaseModel):
    """A bot token (from @BotFather) and the chat it writes to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr
    chat_id: str = Field(description='a chat id ("-1001234567890") or "@channelusername"')
    api_url: str = "https://api.telegram.org"
    parse_mode: ParseMode = "HTML"


def escape_html(text: str) -> str:
    return html.escape(text, quote=False)


def escape_markdown_v2(text: str) -> str:
    return _MARKDOWN_V2.sub(r"\\\1", text)


def render(message: Outgoing, parse_mode: ParseMode) -> str:
    """The message text in `parse_mode`, bold headlines, at most MAX_TEXT characters."""
    escape: Callable[[str], str] = escape_html if parse_mode == "HTML" else escape_markdown_v2

    def bold(text: str) -> str:
        return f"<b>{escape(text)}</b>" if parse_mode == "HTML" else f"*{escape(text)}*"

    def body(lines: list[str]) -> list[str]:
        return [escape(line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…") for line in lines]

    parts = blocks(message)
    if len(parts) == 1:  # the subject is the alert's headline
        parts = [("", parts[0][1])]
    text = bold(subject(message))
    for shown, (headline, lines) in enumerate(parts):
        part = "\n".join([bold(headline)] * bool(headline) + body(lines))
        more = escape(f"… and {len(parts) - shown} more")
        if len(text) + len(part) + len(more) + 4 > MAX_TEXT:
            return f"{text}\n\n{more}"
        text += f"\n\n{part}"
    return text


class TelegramChannel:
    """Sends each message to one chat through a Telegram bot."""

    def __init__(
        self, config: TelegramConfig, policy: RetryPolicy | None = None, name: str = "telegram"
    ) -> None:
        base = http_url(config.api_url, "telegram api_url")
        self._url = f"{base}/bot{config.token.get_secret_value()}/sendMessage"
        self._config = config
        self._policy = policy or RetryPolicy()
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def send(self, message: Outgoing) -> Delivery:
        body = {
            "chat_id": self._config.chat_id,
            "text": render(message, self._config.parse_mode),
            "parse_mode": self._config.parse_mode,
            "disable_web_page_preview": True,
        }
        response, attempts = await post_json(f"{self.name}: sendMessage", self._url, body, self._policy)
        try:
            message_id = response.json()["result"]["message_id"]
        except (ValueError, KeyError, TypeError):
            message_id = None
        return Delivery(self.name, len(message.alerts), True, attempts, detail=f"message_id {message_id}")
