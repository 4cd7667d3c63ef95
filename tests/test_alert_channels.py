"""Alert channels against local fakes of their APIs (Telegram, Slack, PagerDuty on HTTP, SMTP through
aiosmtpd): the request shapes, escaping, retries on 429/5xx and reported failures; and the notifier built
from settings, end to end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.fakes.fake_alert_apis import (
    FakePagerDuty,
    FakeSlack,
    FakeSmtp,
    FakeTelegram,
    html_error,
    markdown_v2_plain,
    self_signed_tls,
)
from tradeguard.adapters.alerts import (
    AlertDeliveryError,
    Delivery,
    EmailChannel,
    EmailConfig,
    Notifier,
    PagerDutyChannel,
    PagerDutyConfig,
    RetryPolicy,
    SlackChannel,
    SlackConfig,
    TelegramChannel,
    TelegramConfig,
    build_notifier,
)
from tradeguard.adapters.alerts.telegram import escape_markdown_v2
from tradeguard.adapters.signing_key import AuditKey
from tradeguard.adapters.status import Backoff
from tradeguard.core import audit
from tradeguard.core import breakers as brk
from tradeguard.core.alerting import Alert, AlertRouter, Outgoing, RoutingRule
from tradeguard.errors import InputError
from tradeguard.service.settings import AlertsSettings, Settings

T0 = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
TRIP = Alert(
    key="alpha:breaker:drawdown",
    account="alpha",
    event_type=audit.BREAKER_TRANSITION,
    severity="critical",
    title="drawdown breaker tripped <24h> & more",
    at=T0,
    details=("drawdown_pct 16.25 (trips at >= 15).", "drawdown: value 16.25, threshold 15, trip 1"),
    action="new exposure blocked (REDUCING), exits still allowed",
    reset="POST /v1/breakers/drawdown/reset?account=alpha (operator key)",
)
CLEAR = Alert(
    TRIP.key, "alpha", audit.BREAKER_TRANSITION, "critical", "drawdown breaker closed", T0, resolved=True
)


class RecordingSleep:
    """An injectable sleep that returns at once and remembers the delays asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def policy(attempts: int = 3) -> tuple[RetryPolicy, RecordingSleep]:
    sleep = RecordingSleep()
    return RetryPolicy(
        attempts, Backoff(base_s=0.5, cap_s=4.0, jitter=False), timeout_s=5.0, sleep=sleep
    ), sleep


def one(alert: Alert, channel: str) -> Outgoing:
    return Outgoing(channel, (alert,))


def many(n: int, channel: str) -> Outgoing:
    alerts = [
        Alert(f"alpha:k{i}", "alpha", "risk.exchange_failure", "warning", f"venue {i} is stale", T0)
        for i in range(n)
    ]
    return Outgoing(channel, tuple(alerts))


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        yield fake


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp(username="alerts", password="s3cret") as fake:
        yield fake


# --- Telegram -----------------------------------------------------------------------------------------


def telegram_channel(fake: FakeTelegram, retry: RetryPolicy, **options: Any) -> TelegramChannel:
    config = TelegramConfig(token=fake.token, chat_id="-1001234567890", api_url=fake.url, **options)
    return TelegramChannel(config, retry)


def test_telegram_send_message_fields_and_html_escaping(telegram: FakeTelegram):
    delivery = asyncio.run(telegram_channel(telegram, policy()[0]).send(one(TRIP, "telegram")))
    assert delivery == Delivery("telegram", 1, True, 1, detail="message_id 1")
    (request,) = telegram.requests
    body = request.json()
    assert (request.path, request.status) == (f"/bot{telegram.token}/sendMessage", 200)
    assert set(body) == {"chat_id", "text", "parse_mode", "disable_web_page_preview"}
    assert (body["chat_id"], body["parse_mode"], body["disable_web_page_preview"]) == (
        "-1001234567890",
        "HTML",
        True,
    )
    assert body["text"].startswith(
        "<b>CRITICAL [alpha] drawdown breaker tripped &lt;24h&gt; &amp; more</b>\n\n"
    )
    assert "drawdown_pct 16.25 (trips at &gt;= 15)." in body["text"]
    assert "Reset: POST /v1/breakers/drawdown/reset?account=alpha (operator key)" in body["text"]
    assert html_error(body["text"]) is None


def test_telegram_markdown_v2_escapes_every_reserved_character(telegram: FakeTelegram):
    tricky = "a_b*c[d]e(f)g~h`i>j#k+l-m=n|o{p}q.r!s\\t"
    assert markdown_v2_plain(escape_markdown_v2(tricky)) == tricky
    channel = telegram_channel(telegram, policy()[0], parse_mode="MarkdownV2")
    asyncio.run(channel.send(one(TRIP, "telegram")))
    asyncio.run(channel.send(Outgoing("telegram", (TRIP, CLEAR), held=1)))
    first, second = (r.json() for r in telegram.requests)
    assert [r.status for r in telegram.requests] == [200, 200]  # the fake parsed both
    assert first["parse_mode"] == "MarkdownV2"
    assert first["text"].startswith(r"*CRITICAL \[alpha\] drawdown breaker tripped <24h\> & more*")
    plain = markdown_v2_plain(first["text"])
    assert "drawdown: value 16.25, threshold 15, trip 1" in plain
    assert "POST /v1/breakers/drawdown/reset?account=alpha (operator key)" in plain
    assert markdown_v2_plain(second["text"]).startswith(
        "tradeguard: 2 alerts (2 critical, 1 resolved, 1 held during quiet hours)"
    )


def test_telegram_keeps_a_large_group_under_4096_characters(telegram: FakeTelegram):
    asyncio.run(telegram_channel(telegram, policy()[0]).send(many(300, "telegram")))
    (request,) = telegram.requests
    text = request.json()["text"]
    assert request.status == 200 and len(text) <= 4096
    assert text.startswith("<b>tradeguard: 300 alerts (300 warning)</b>") and text.endswith("more")


def test_telegram_honours_retry_after_on_429(telegram: FakeTelegram):
    retry, sleep = policy()
    telegram.fail_next(1, 429, retry_after=3)
    delivery = asyncio.run(telegram_channel(telegram, retry).send(one(TRIP, "telegram")))
    assert (delivery.ok, delivery.attempts, sleep.delays) == (True, 2, [3.0])
    assert [r.status for r in telegram.requests] == [429, 200]


def test_telegram_rejected_token_fails_at_once_without_leaking_it(telegram: FakeTelegram):
    retry, sleep = policy()
    config = TelegramConfig(token="999:wrong-token", chat_id="1", api_url=telegram.url)
    with pytest.raises(AlertDeliveryError, match="HTTP 401") as failure:
        asyncio.run(TelegramChannel(config, retry).send(one(TRIP, "telegram")))
    assert failure.value.attempts == 1 and sleep.delays == []
    assert "wrong-token" not in str(failure.value) and "telegram: sendMessage failed" in str(failure.value)


# --- Slack --------------------------------------------------------------------------------------------


def slack_channel(fake: FakeSlack, retry: RetryPolicy) -> SlackChannel:
    return SlackChannel(SlackConfig(webhook_url=fake.webhook_url), retry)


def test_slack_webhook_json_has_text_and_blocks_with_escaped_mrkdwn(slack: FakeSlack):
    delivery = asyncio.run(slack_channel(slack, policy()[0]).send(Outgoing("slack", (TRIP, CLEAR))))
    assert (delivery.ok, delivery.alerts, delivery.attempts) == (True, 2, 1)
    (request,) = slack.requests
    body = request.json()
    assert (request.path, request.status, request.headers["content-type"]) == (
        slack.path,
        200,
        "application/json",
    )
    assert body["text"] == "tradeguard: 2 alerts (2 critical, 1 resolved)"
    header, trip, clear = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": body["text"]}}
    assert trip["type"] == "section" and trip["text"]["type"] == "mrkdwn"
    assert trip["text"]["text"].startswith(
        "*CRITICAL [alpha] drawdown breaker tripped &lt;24h&gt; &amp; more*\n"
    )
    assert "drawdown_pct 16.25 (trips at &gt;= 15)." in trip["text"]["text"]
    assert clear["text"]["text"].startswith("*RESOLVED [alpha] drawdown breaker closed*")


def test_slack_caps_blocks_at_50_and_counts_the_rest(slack: FakeSlack):
    asyncio.run(slack_channel(slack, policy()[0]).send(many(60, "slack")))
    (request,) = slack.requests
    blocks = request.json()["blocks"]
    assert request.status == 200 and len(blocks) == 50
    assert blocks[-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": "… and 12 more"}]}


def test_slack_retries_a_500_and_honours_retry_after_on_429(slack: FakeSlack):
    retry, sleep = policy(attempts=4)
    slack.fail_next(1, 500)
    slack.fail_next(1, 429, retry_after=7)
    delivery = asyncio.run(slack_channel(slack, retry).send(one(TRIP, "slack")))
    assert (delivery.ok, delivery.attempts) == (True, 3)
    assert sleep.delays == [0.5, 7.0]  # backoff after the 500, Retry-After after the 429
    assert [r.status for r in slack.requests] == [500, 429, 200]


def test_slack_final_failure_is_reported_with_the_last_error_and_no_secret(slack: FakeSlack):
    retry, sleep = policy(attempts=3)
    slack.fail_next(5, 500)
    with pytest.raises(AlertDeliveryError) as failure:
        asyncio.run(slack_channel(slack, retry).send(one(TRIP, "slack")))
    assert str(failure.value) == "slack: webhook failed after 3 attempt(s): HTTP 500 rollup_error"
    assert failure.value.attempts == 3 and sleep.delays == [0.5, 1.0]
    assert slack.path not in str(failure.value)


def test_slack_refuses_a_retry_after_longer_than_the_policy_allows(slack: FakeSlack):
    retry, sleep = policy()
    slack.fail_next(1, 429, retry_after=3600)
    with pytest.raises(AlertDeliveryError, match=r"retry after 3600s \(more than 300s\)"):
        asyncio.run(slack_channel(slack, retry).send(one(TRIP, "slack")))
    assert sleep.delays == []


# --- PagerDuty ----------------------------------------------------------------------------------------


def pagerduty_channel(
    fake: FakePagerDuty, retry: RetryPolicy, routing_key: str | None = None
) -> PagerDutyChannel:
    config = PagerDutyConfig(routing_key=routing_key or fake.routing_key, api_url=fake.url, source="guard-1")
    return PagerDutyChannel(config, retry)


def test_pagerduty_trigger_then_resolve_with_the_same_dedup_key(pagerduty: FakePagerDuty):
    channel = pagerduty_channel(pagerduty, policy()[0])
    delivery = asyncio.run(channel.send(one(TRIP, "pagerduty")))
    assert (delivery.ok, delivery.detail) == (True, "1 event(s) accepted")
    assert pagerduty.incidents == {TRIP.key: "triggered"}
    asyncio.run(channel.send(one(CLEAR, "pagerduty")))
    assert pagerduty.incidents == {TRIP.key: "resolved"}
    trigger, resolve = (r.json() for r in pagerduty.requests)
    assert [r.path for r in pagerduty.requests] == ["/v2/enqueue"] * 2
    assert (trigger["routing_key"], trigger["event_action"], trigger["dedup_key"]) == (
        pagerduty.routing_key,
        "trigger",
        "alpha:breaker:drawdown",
    )
    payload = trigger["payload"]
    assert payload["summary"] == TRIP.headline
    assert (payload["source"], payload["severity"], payload["timestamp"]) == (
        "guard-1",
        "critical",
        T0.isoformat(),
    )
    assert (payload["component"], payload["class"]) == ("alpha", audit.BREAKER_TRANSITION)
    assert payload["custom_details"] == {
        "account": "alpha",
        "details": list(TRIP.details),
        "guard_action": TRIP.action,
        "reset": TRIP.reset,
    }
    assert resolve == {"routing_key": pagerduty.routing_key, "dedup_key": TRIP.key, "event_action": "resolve"}


def test_pagerduty_maps_severities_and_bounds_summary_and_dedup_key(pagerduty: FakePagerDuty):
    long = Alert("a:" + "x" * 300, "a", "risk.drawdown_alert", "warning", "y" * 2000, T0)
    info = Alert("a:i", "a", "risk.breaker.action", "info", "done", T0)
    asyncio.run(pagerduty_channel(pagerduty, policy()[0]).send(Outgoing("pagerduty", (long, info))))
    first, second = (r.json() for r in pagerduty.requests)
    assert [r.status for r in pagerduty.requests] == [202, 202]
    assert len(first["payload"]["summary"]) == 1024 and first["payload"]["severity"] == "warning"
    assert len(first["dedup_key"]) == 64  # SHA-256 of a key over 255 characters
    assert second["payload"]["severity"] == "info"


def test_pagerduty_invalid_routing_key_is_not_retried(pagerduty: FakePagerDuty):
    retry, sleep = policy()
    with pytest.raises(AlertDeliveryError, match=r"HTTP 400 .*Invalid routing key") as failure:
        asyncio.run(pagerduty_channel(pagerduty, retry, routing_key="nope").send(one(TRIP, "pagerduty")))
    assert failure.value.attempts == 1 and sleep.delays == [] and len(pagerduty.requests) == 1


def test_pagerduty_tries_every_event_and_reports_the_ones_that_failed(pagerduty: FakePagerDuty):
    retry, _ = policy(attempts=3)
    pagerduty.fail_next(3, 502)  # the first event fails three times; the second goes through
    other = Alert("alpha:kill_switch", "alpha", audit.KILL_SWITCH, "critical", "kill switch engaged", T0)
    with pytest.raises(AlertDeliveryError) as failure:
        asyncio.run(pagerduty_channel(pagerduty, retry).send(Outgoing("pagerduty", (TRIP, other))))
    assert str(failure.value).startswith(
        "1 of 2 event(s) failed: pagerduty: trigger alpha:breaker:drawdown failed after 3 attempt(s): "
        "HTTP 502"
    )
    assert failure.value.attempts == 4 and pagerduty.incidents == {"alpha:kill_switch": "triggered"}


def test_pagerduty_retries_a_throttled_event(pagerduty: FakePagerDuty):
    retry, sleep = policy()
    pagerduty.fail_next(1, 429)
    delivery = asyncio.run(pagerduty_channel(pagerduty, retry).send(one(TRIP, "pagerduty")))
    assert (delivery.attempts, sleep.delays, pagerduty.incidents) == (2, [0.5], {TRIP.key: "triggered"})


# --- e-mail -------------------------------------------------------------------------------------------


def email_channel(fake: FakeSmtp, retry: RetryPolicy, **options: Any) -> EmailChannel:
    settings = {
        "host": "127.0.0.1",
        "port": fake.port,
        "security": "none",
        "username": "alerts",
        "password": "s3cret",
        "sender": "guard@example.com",
        "recipients": ["ops@example.com", "risk@example.com"],
        "local_hostname": "localhost",
    }
    config = EmailConfig.model_validate(settings | options)
    return EmailChannel(config, retry)


def test_email_reaches_the_smtp_server_with_from_to_subject_and_the_numbers(smtp: FakeSmtp):
    delivery = asyncio.run(email_channel(smtp, policy()[0]).send(one(TRIP, "email")))
    assert (delivery.ok, delivery.attempts, delivery.detail) == (True, 1, "mailed to 2")
    (mail,) = smtp.received
    assert (mail.mail_from, mail.rcpt_tos, mail.login) == (
        "guard@example.com",
        ("ops@example.com", "risk@example.com"),
        "alerts",
    )
    message = mail.message
    assert message["From"] == "guard@example.com" and message["To"] == "ops@example.com, risk@example.com"
    assert message["Subject"] == "[tradeguard] CRITICAL [alpha] drawdown breaker tripped <24h> & more"
    assert message["Message-ID"].endswith("@example.com>")
    body = message.get_content()
    assert "drawdown: value 16.25, threshold 15, trip 1" in body
    assert "Guard: new exposure blocked (REDUCING), exits still allowed" in body
    assert "Reset: POST /v1/breakers/drawdown/reset?account=alpha (operator key)" in body


def test_email_retries_a_temporary_smtp_failure(smtp: FakeSmtp):
    retry, sleep = policy()
    smtp.fail_next(1)  # 451
    delivery = asyncio.run(email_channel(smtp, retry).send(many(3, "email")))
    assert (delivery.ok, delivery.attempts, sleep.delays, smtp.data_commands) == (True, 2, [0.5], 2)
    (mail,) = smtp.received
    assert mail.message["Subject"] == "[tradeguard] tradeguard: 3 alerts (3 warning)"


def test_email_permanent_refusals_are_reported_not_retried(smtp: FakeSmtp):
    retry, sleep = policy()
    smtp.refuse["risk@example.com"] = "550 5.1.1 No such user"
    with pytest.raises(
        AlertDeliveryError, match=r"some recipients refused: risk@example.com \(550 5.1.1 No such user\)"
    ):
        asyncio.run(email_channel(smtp, retry).send(one(TRIP, "email")))
    assert [m.rcpt_tos for m in smtp.received] == [("ops@example.com",)]
    smtp.fail_next(1, "554 5.7.1 Message rejected")
    with pytest.raises(AlertDeliveryError, match=r"SMTP 554 5\.7\.1 Message rejected") as failure:
        asyncio.run(email_channel(smtp, retry).send(one(TRIP, "email")))
    assert failure.value.attempts == 1 and sleep.delays == []


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_tls_trusts_the_configured_ca_and_refuses_an_unknown_one(tmp_path: Path, security: str):
    context, ca_file = self_signed_tls(tmp_path)
    with FakeSmtp(username="alerts", password="s3cret", tls=context, implicit_tls=security == "tls") as fake:
        asyncio.run(
            email_channel(fake, policy()[0], security=security, ca_file=ca_file).send(one(TRIP, "email"))
        )
        (mail,) = fake.received
        assert (mail.tls, mail.login) == (True, "alerts")
        with pytest.raises(AlertDeliveryError, match=r"not trusted.*CERTIFICATE_VERIFY_FAILED") as failure:
            asyncio.run(
                email_channel(fake, policy()[0], security=security).send(one(TRIP, "email"))
            )  # system CAs
        assert failure.value.attempts == 1
        assert len(fake.received) == 1


def test_email_to_an_unreachable_server_fails_after_the_retries():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    retry, sleep = policy(attempts=2)
    config = EmailConfig(
        host="127.0.0.1", port=port, security="none", sender="g@example.com", recipients=["o@example.com"]
    )
    with pytest.raises(AlertDeliveryError, match=r"failed after 2 attempt\(s\): ConnectionRefusedError"):
        asyncio.run(EmailChannel(config, retry).send(one(TRIP, "email")))
    assert sleep.delays == [0.5]


# --- settings and the notifier, end to end -------------------------------------------------------------


KEY = AuditKey.generate()


def record(event_type: str, payload: dict[str, Any], ts: datetime) -> audit.AuditRecord:
    record_id = f"{event_type}@{ts.isoformat()}"
    return audit.seal(
        None, record_id=record_id, event_type=event_type, account="alpha", ts=ts, payload=payload, signer=KEY
    )


def test_alert_settings_take_secrets_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    toml = tmp_path / "tradeguard.toml"
    toml.write_text(
        '[alerts.telegram]\nchat_id = "-100"\n[alerts.quiet_hours.alpha]\nstart = 22:00:00\nend = "07:00"\n'
        'timezone = "Europe/Berlin"\n[[alerts.routes."*"]]\nevent_types = ["risk.kill_switch"]\n'
        'channels = ["telegram"]\n[alerts.fatigue]\ngroup_window_s = 10\n'
    )
    monkeypatch.setenv("TRADEGUARD_ALERTS__TELEGRAM__TOKEN", "123:from-env")
    alerts = Settings.load(toml).alerts
    assert alerts.telegram is not None and alerts.telegram.token.get_secret_value() == "123:from-env"
    assert alerts.telegram.chat_id == "-100" and alerts.fatigue.group_window_s == 10
    assert alerts.quiet_hours["alpha"].timezone == "Europe/Berlin"
    assert alerts.routes["*"][0].channels == ("telegram",)
    assert "from-env" not in repr(alerts)
    with pytest.raises(ValidationError):
        AlertsSettings.model_validate({"telegram": {"token": "t", "chat_id": "1", "colour": "red"}})
    assert build_notifier(AlertsSettings()) is None
    with pytest.raises(InputError, match="slack webhook_url must be an http") as bad:
        build_notifier(AlertsSettings.model_validate({"slack": {"webhook_url": "hooks/T0/B0/secret"}}))
    assert "secret" not in str(bad.value)
    with pytest.raises(InputError, match=r"unknown channels \['pagerduty'\]"):
        build_notifier(AlertsSettings.model_validate({"routes": {"*": [{"channels": ["pagerduty"]}]}}))


def test_the_notifier_pages_posts_groups_resolves_and_reports_failures(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    telegram: FakeTelegram,
    slack: FakeSlack,
    pagerduty: FakePagerDuty,
):
    toml = tmp_path / "tradeguard.toml"
    toml.write_text(
        f'[alerts]\nattempts = 1\nservice_url = "https://guard.example.com"\n'
        f'[alerts.telegram]\nchat_id = "42"\napi_url = "{telegram.url}"\n'
        f'[alerts.pagerduty]\napi_url = "{pagerduty.url}"\n'
    )
    monkeypatch.setenv("TRADEGUARD_ALERTS__TELEGRAM__TOKEN", telegram.token)
    monkeypatch.setenv("TRADEGUARD_ALERTS__PAGERDUTY__ROUTING_KEY", pagerduty.routing_key)
    monkeypatch.setenv("TRADEGUARD_ALERTS__SLACK__WEBHOOK_URL", slack.webhook_url)
    now = [T0]
    recorded: list[Delivery] = []
    notifier = build_notifier(Settings.load(toml).alerts, clock=lambda: now[0], on_delivery=recorded.append)
    assert notifier is not None and list(notifier.channels) == ["pagerduty", "telegram", "slack"]

    liquidation = brk.new_breaker("liquidation_distance", "liquidation_distance")
    liquidation, (trip,) = brk.evaluate(liquidation, 2.4, T0)
    drawdown = brk.evaluate(brk.new_breaker("drawdown", "drawdown"), 17.0, T0)[1][0]

    async def feed(event_type: str, payload: dict[str, Any], seconds: float) -> list[Delivery]:
        now[0] = T0 + timedelta(seconds=seconds)
        return await notifier.handle(record(event_type, payload, now[0]))

    async def scenario() -> None:
        # critical: paged and on Telegram at once
        sent = await feed(audit.BREAKER_TRANSITION, trip.to_dict(), 0)
        assert sorted(d.channel for d in sent) == ["pagerduty", "telegram"] and all(d.ok for d in sent)
        # warning: Slack at once; two more within the group window wait and go out as one message
        assert [d.channel for d in await feed(audit.BREAKER_TRANSITION, drawdown.to_dict(), 0)] == ["slack"]
        assert await feed(audit.CORRELATION_REGIME_CHANGE, {"score": 0.41, "current": {}}, 5) == []
        assert await feed(audit.EXCHANGE_FAILURE, {"venue": "alpha:okx", "reason": "stale"}, 5) == []
        assert await feed(audit.AGGREGATE_SNAPSHOT, {"exposure": None}, 5) == []  # evidence only
        assert await notifier.flush() == []
        now[0] = T0 + timedelta(seconds=35)
        assert [d.alerts for d in await notifier.flush()] == [2]
        # the liquidation breaker half-opens: PagerDuty resolves, Telegram says so
        _, (half_open,) = brk.evaluate(liquidation, 10.0, T0 + timedelta(seconds=301))
        await feed(audit.BREAKER_TRANSITION, half_open.to_dict(), 301)
        # a Slack outage is reported, not swallowed
        slack.fail_next(1, 503)
        dd = {"level": "warning", "window": "24h", "shape": "fast", "reasons": ["5.2% below the peak"]}
        (failed,) = await feed(audit.DRAWDOWN_ALERT, dd, 400)
        assert (failed.channel, failed.ok, failed.attempts) == ("slack", False, 1)
        assert failed.error == "slack: webhook failed after 1 attempt(s): HTTP 503 rollup_error"

    asyncio.run(scenario())
    trigger, resolve = (r.json() for r in pagerduty.requests)
    assert (trigger["event_action"], trigger["dedup_key"], trigger["payload"]["severity"]) == (
        "trigger",
        "alpha:breaker:liquidation_distance",
        "critical",
    )
    reset = "POST https://guard.example.com/v1/breakers/liquidation_distance/reset?account=alpha"
    assert reset in trigger["payload"]["custom_details"]["reset"]
    assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", trigger["dedup_key"])
    texts = [r.json()["text"] for r in telegram.requests]
    assert texts[0].startswith("<b>CRITICAL [alpha] liquidation_distance breaker tripped</b>")
    assert texts[1].startswith("<b>RESOLVED [alpha] liquidation_distance breaker half-open")
    first, group = (r.json() for r in slack.requests[:2])
    assert first["text"] == "WARNING [alpha] drawdown breaker tripped"
    assert group["text"] == "tradeguard: 2 alerts (2 warning)"
    assert [d.ok for d in recorded] == [True] * 6 + [False]  # every delivery reaches on_delivery


class RecordingChannel:
    """An in-memory channel: keeps what it is sent, or raises what it is told to."""

    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name = name
        self.error = error
        self.sent: list[Outgoing] = []

    async def send(self, message: Outgoing) -> Delivery:
        if self.error is not None:
            raise self.error
        self.sent.append(message)
        return Delivery(self.name, len(message.alerts), True, 1)


def test_run_flushes_due_groups_and_a_channel_bug_is_a_failed_delivery():
    now = [T0]
    slack, broken = RecordingChannel("slack"), RecordingChannel("email", error=KeyError("boom"))
    recorded: list[Delivery] = []
    rules = [
        RoutingRule(severities=frozenset({"critical"}), channels=("email",)),
        RoutingRule(channels=("slack",)),
    ]
    router = AlertRouter(["slack", "email"], {"*": rules})
    notifier = Notifier(router, [slack, broken], clock=lambda: now[0], on_delivery=recorded.append)
    exchange = {"venue": "alpha:okx", "reason": "stale"}

    async def scenario() -> None:
        await notifier.handle(record(audit.EXCHANGE_FAILURE, exchange, T0))  # at once: the channel is idle
        await notifier.handle(record(audit.CORRELATION_REGIME_CHANGE, {"score": 0.5}, T0))  # grouped
        runner = asyncio.create_task(notifier.run(interval_s=0.01))
        await asyncio.sleep(0.05)
        assert len(slack.sent) == 1  # not due yet
        now[0] = T0 + timedelta(seconds=30)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(slack.sent) == 2:
                break
        runner.cancel()
        (failed,) = await notifier.handle(record(audit.KILL_SWITCH, {"engaged": True, "by": "k"}, now[0]))
        assert (failed.channel, failed.ok, failed.error) == ("email", False, "KeyError: 'boom'")

    asyncio.run(scenario())
    assert [[a.title for a in m.alerts] for m in slack.sent] == [
        ["venue alpha:okx is stale"],
        ["correlation regime change between strategies"],
    ]
    assert [d.ok for d in recorded] == [True, True, False]
