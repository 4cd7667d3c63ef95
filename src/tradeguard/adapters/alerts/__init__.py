"""Alert channels for people (Telegram, Slack, PagerDuty, e-mail) and the notifier that feeds them."""

from tradeguard.adapters.alerts.base import AlertChannel, AlertDeliveryError, Delivery, RetryPolicy
from tradeguard.adapters.alerts.email import EmailChannel, EmailConfig
from tradeguard.adapters.alerts.notifier import Notifier, build_notifier
from tradeguard.adapters.alerts.pagerduty import PagerDutyChannel, PagerDutyConfig
from tradeguard.adapters.alerts.slack import SlackChannel, SlackConfig
from tradeguard.adapters.alerts.telegram import TelegramChannel, TelegramConfig

__all__ = [
    "AlertChannel",
    "AlertDeliveryError",
    "Delivery",
    "EmailChannel",
    "EmailConfig",
    "Notifier",
    "PagerDutyChannel",
    "PagerDutyConfig",
    "RetryPolicy",
    "SlackChannel",
    "SlackConfig",
    "TelegramChannel",
    "TelegramConfig",
    "build_notifier",
]
