"""E-mail channel: one plain-text message per alert message, through SMTP (stdlib ``smtplib`` in a thread).

``security``: ``starttls`` (port 587: plain connection, then STARTTLS), ``tls`` (port 465: TLS from the
start) or ``none`` (a relay on a trusted network); ``ca_file`` trusts a private CA. With a username, it
logs in after securing the connection. SMTP 4xx answers, timeouts and lost connections are retried; 5xx
answers (a refused sender, bad credentials) and an untrusted certificate are not. A message some
recipients refused is a failure naming them (not retried: the others already have it).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tradeguard.adapters.alerts.base import (
    AttemptFailed,
    Delivery,
    RetryPolicy,
    plain_text,
    subject,
    with_retries,
)
from tradeguard.core.alerting import Outgoing


class EmailConfig(BaseModel):
    """The SMTP server, its credentials, and who sends to whom."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(description="the From address")
    recipients: list[str] = Field(min_length=1)
    subject_prefix: str = "[tradeguard]"
    local_hostname: str | None = Field(None, description="name given in EHLO (default: this host's FQDN)")
    ca_file: Path | None = Field(None, description="trust this CA bundle instead of the system's")


def compose(message: Outgoing, config: EmailConfig) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = config.sender
    mail["To"] = ", ".join(config.recipients)
    mail["Subject"] = f"{config.subject_prefix} {subject(message)}".strip()
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(domain=config.sender.rpartition("@")[2] or None)
    mail.set_content(plain_text(message))
    return mail


class EmailChannel:
    """Mails each message to the configured recipients."""

    def __init__(self, config: EmailConfig, policy: RetryPolicy | None = None, name: str = "email") -> None:
        self._config = config
        self._policy = policy or RetryPolicy()
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def send(self, message: Outgoing) -> Delivery:
        mail = compose(message, self._config)
        what = f"{self.name}: SMTP {self._config.host}:{self._config.port}"
        _, attempts = await with_retries(what, self._policy, lambda: asyncio.to_thread(self._deliver, mail))
        return Delivery(
            self.name, len(message.alerts), True, attempts, detail=f"mailed to {len(self._config.recipients)}"
        )

    def _deliver(self, mail: EmailMessage) -> None:
        """One SMTP session (blocking); AttemptFailed on any failure."""
        c = self._config
        try:
            with self._connect() as smtp:
                if c.security == "starttls":
                    smtp.starttls(context=self._tls())
                if c.username:
                    smtp.login(c.username, c.password.get_secret_value() if c.password else "")
                refused = smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise AttemptFailed(
                f"every recipient refused: {_refused(exc.recipients)}",
                retryable=all(400 <= code < 500 for code in codes),
            ) from exc
        except smtplib.SMTPResponseException as exc:
            reason = f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"
            raise AttemptFailed(reason, retryable=400 <= exc.smtp_code < 500) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise AttemptFailed(f"the server does not support it: {exc}", retryable=False) from exc
        except ssl.SSLCertVerificationError as exc:
            raise AttemptFailed(
                f"the server's TLS certificate is not trusted: {exc}", retryable=False
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:  # lost connection, timeout, refused connection
            raise AttemptFailed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if refused:
            raise AttemptFailed(f"some recipients refused: {_refused(refused)}", retryable=False)

    def _connect(self) -> smtplib.SMTP:
        c = self._config
        timeout = self._policy.timeout_s
        if c.security == "tls":
            return smtplib.SMTP_SSL(c.host, c.port, c.local_hostname, timeout=timeout, context=self._tls())
        return smtplib.SMTP(c.host, c.port, c.local_hostname, timeout=timeout)

    def _tls(self) -> ssl.SSLContext:
        ca_file = self._config.ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _refused(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{rcpt} ({code} {_text(why)})" for rcpt, (code, why) in recipients.items())
