"""Local fakes of the alert channels' APIs on 127.0.0.1: Telegram Bot API, a Slack incoming webhook,
PagerDuty Events API v2 (HTTP, on BackgroundServer) and an SMTP server (aiosmtpd).

Each records what it received and validates it as the real service does for the fields we use:
- Telegram ``POST /bot<token>/sendMessage``: 401 for another token; 400 without chat_id or text, with a
  text over 4096 characters, or with text that does not parse in its parse_mode (HTML: only the
  formatting tags, ``<``, ``>``, ``&`` escaped; MarkdownV2: every reserved character escaped, ``*``
  balanced); answers ``{"ok": true, "result": {"message_id", ...}}``.
- Slack ``POST <webhook path>``: 404 ``no_service`` elsewhere; 400 ``invalid_payload`` without text or
  blocks, ``invalid_blocks`` for more than 50 blocks, a header over 150 or a section over 3000
  characters; answers 200 ``ok``.
- PagerDuty ``POST /v2/enqueue``: 400 for another routing key, an unknown event_action, a dedup_key over
  255 characters, a trigger without summary (at most 1024), source or a valid severity; answers 202
  ``{"status": "success", "dedup_key"}`` and keeps each dedup key's state (triggered, resolved).

``fail_next(count, status, retry_after=)`` makes the next requests fail the way the service does (429
with ``Retry-After`` or Telegram's ``parameters.retry_after``, or a 5xx).
"""

from __future__ import annotations

import email
import email.policy
import ipaddress
import itertools
import json
import re
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fakes.background_server import BackgroundServer

Answer = tuple[int, Any, dict[str, str]]  # status, body (JSON-able, or str for text/plain), headers


@dataclass(frozen=True, slots=True)
class Request:
    """One request a fake received, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


class _FakeApi(BackgroundServer):
    """Records requests; answers scripted failures first, then `answer()` of the subclass."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._failures: list[list[Any]] = []  # [remaining, status, retry_after]
        self._lock = threading.Lock()

    def _make_server(self) -> ThreadingHTTPServer:
        return _Server(self)

    def fail_next(self, count: int, status: int = 500, *, retry_after: float | None = None) -> None:
        """Answer the next `count` requests with `status` (and a retry-after hint when given)."""
        with self._lock:
            self._failures.append([count, status, retry_after])

    def bodies(self) -> list[Any]:
        """JSON bodies of the requests answered with success, in order."""
        return [r.json() for r in self.requests if r.status < 300]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self._lock:
            failure = next((f for f in self._failures if f[0] > 0), None)
            if failure is not None:
                failure[0] -= 1
        if failure is not None:
            answer = self.failure(failure[1], failure[2])
        elif method != "POST":
            answer = (405, "method not allowed", {})
        else:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            answer = self.answer(path, document)
        with self._lock:
            self.requests.append(Request(method, path, headers, body, answer[0]))
        return answer

    def answer(self, path: str, body: Any) -> Answer:
        raise NotImplementedError

    def failure(self, status: int, retry_after: float | None) -> Answer:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return status, HTTPStatus(status).phrase, headers


# --- Telegram ---------------------------------------------------------------------------------------

_HTML_TAGS = re.compile(
    r"</?(?:b|strong|i|em|u|ins|s|strike|del|code|pre|tg-spoiler|blockquote)>|<a href=\"[^\"]*\">|</a>"
)
_HTML_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+);")
_MD_RESERVED = set("_*[]()~`>#+-=|{}.!")


def html_error(text: str) -> str | None:
    """Why Telegram would refuse `text` as HTML (None if it parses)."""
    bare = _HTML_TAGS.sub("", text)
    if "<" in bare or ">" in bare:
        return "can't parse entities: unsupported tag or unescaped '<' or '>'"
    if "&" in _HTML_ENTITY.sub("", bare):
        return "can't parse entities: unescaped '&'"
    return None


def markdown_v2_error(text: str) -> str | None:
    """Why Telegram would refuse `text` as MarkdownV2 (bold `*` is the only entity accepted here)."""
    escaped, bold = False, 0
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "*":
            bold += 1
        elif ch in _MD_RESERVED:
            return f"can't parse entities: Character '{ch}' is reserved and must be escaped with a '\\'"
    return "can't parse entities: unclosed bold" if bold % 2 or escaped else None


def markdown_v2_plain(text: str) -> str:
    """The text a MarkdownV2 message shows (bold markers and escapes removed)."""
    return re.sub(r"\\(.)", r"\1", re.sub(r"(?<!\\)\*", "", text))


class FakeTelegram(_FakeApi):
    """Telegram's Bot API, sendMessage only."""

    thread_name = "fake-telegram"

    def __init__(self, token: str = "123456:TEST-token") -> None:
        super().__init__()
        self.token = token
        self._ids = itertools.count(1)

    def answer(self, path: str, body: Any) -> Answer:
        match = re.fullmatch(r"/bot([^/]+)/(\w+)", path)
        if match is None or match[2] != "sendMessage":
            return self._error(404, "Not Found")
        if match[1] != self.token:
            return self._error(401, "Unauthorized")
        if not isinstance(body, dict) or "chat_id" not in body:
            return self._error(400, "Bad Request: chat_id is empty")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        mode = body.get("parse_mode")
        why = {"HTML": html_error, "MarkdownV2": markdown_v2_error}.get(mode, lambda _: None)(text)
        if why is not None:
            return self._error(400, f"Bad Request: {why}")
        if len(text) > 4096:
            return self._error(400, "Bad Request: message is too long")
        result = {"message_id": next(self._ids), "chat": {"id": body["chat_id"]}, "text": text}
        return 200, {"ok": True, "result": result}, {}

    def failure(self, status: int, retry_after: float | None) -> Answer:
        if status == 429:
            after = int(retry_after or 1)
            return (
                429,
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {after}",
                    "parameters": {"retry_after": after},
                },
                {},
            )
        return self._error(status, HTTPStatus(status).phrase)

    @staticmethod
    def _error(status: int, description: str) -> Answer:
        return status, {"ok": False, "error_code": status, "description": description}, {}


# --- Slack ------------------------------------------------------------------------------------------


class FakeSlack(_FakeApi):
    """One Slack incoming webhook."""

    thread_name = "fake-slack"

    def __init__(self, path: str = "/services/T0000/B0000/XXXXXXXXXXXX") -> None:
        super().__init__()
        self.path = path

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{self.path}"

    def answer(self, path: str, body: Any) -> Answer:
        if path != self.path:
            return 404, "no_service", {}
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return 400, "invalid_payload", {}
        blocks = body.get("blocks", [])
        if len(blocks) > 50 or not all(self._valid(b) for b in blocks):
            return 400, "invalid_blocks", {}
        return 200, "ok", {}

    @staticmethod
    def _valid(block: dict[str, Any]) -> bool:
        kind = block.get("type")
        if kind == "header":
            return block["text"]["type"] == "plain_text" and 0 < len(block["text"]["text"]) <= 150
        if kind == "section":
            return block["text"]["type"] == "mrkdwn" and 0 < len(block["text"]["text"]) <= 3000
        return kind in ("context", "divider")

    def failure(self, status: int, retry_after: float | None) -> Answer:
        _, _, headers = super().failure(status, retry_after)
        return status, "rate_limited" if status == 429 else "rollup_error", headers


# --- PagerDuty --------------------------------------------------------------------------------------


class FakePagerDuty(_FakeApi):
    """PagerDuty's Events API v2 for one integration."""

    thread_name = "fake-pagerduty"

    def __init__(self, routing_key: str = "R0123456789ABCDEF0123456789ABCDE") -> None:
        super().__init__()
        self.routing_key = routing_key
        self.incidents: dict[str, str] = {}  # dedup_key -> "triggered" | "acknowledged" | "resolved"

    def answer(self, path: str, body: Any) -> Answer:
        if path != "/v2/enqueue":
            return 404, {"status": "not found"}, {}
        errors = self._errors(body)
        if errors:
            return (
                400,
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                {},
            )
        key = body["dedup_key"]
        self.incidents[key] = {"trigger": "triggered", "acknowledge": "acknowledged", "resolve": "resolved"}[
            body["event_action"]
        ]
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}, {}

    def _errors(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["Event must be a JSON object"]
        errors = []
        if body.get("routing_key") != self.routing_key:
            errors.append("Invalid routing key")
        action = body.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
        key = body.get("dedup_key")
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            errors.append("'dedup_key' must be a string of 1 to 255 characters")
        if action == "trigger":
            payload = body.get("payload") or {}
            summary = payload.get("summary")
            if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
                errors.append("'payload.summary' is missing or longer than 1024 characters")
            if not payload.get("source"):
                errors.append("'payload.source' is missing")
            if payload.get("severity") not in ("critical", "error", "warning", "info"):
                errors.append("'payload.severity' is invalid")
        return errors

    def failure(self, status: int, retry_after: float | None) -> Answer:
        _, _, headers = super().failure(status, retry_after)
        if status == 429:
            message = "Requests for this service are arriving too quickly. Please retry later."
            return 429, {"status": "throttle event", "message": message}, headers
        return status, {"status": "error", "message": HTTPStatus(status).phrase}, headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: _FakeApi) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, answer, extra = self.server.fake.handle(method, self.path, headers, body)
        text = isinstance(answer, str)
        payload = (answer if text else json.dumps(answer)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log line on stderr."""


# --- SMTP -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    login: str | None
    tls: bool


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1, and that certificate's
    file (for the client to trust)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


class FakeSmtp:
    """An SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it accepts.

    With `username`, AUTH (PLAIN/LOGIN, allowed without TLS here) is offered; `login` records who logged in.
    With `tls` (a server context), STARTTLS is required, or with `implicit_tls` TLS is spoken from the start.
    `fail_next(count, reply)` answers the next DATA commands with `reply` (e.g. a 4xx); `refuse[rcpt]`
    answers RCPT TO for that address with its reply.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.username = username
        self.password = password
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.received: list[ReceivedMail] = []
        self.refuse: dict[str, str] = {}
        self.data_commands = 0
        self._failures: list[str] = []
        self._controller: Controller | None = None

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("FakeSmtp is not started")
        return self._controller.port

    def fail_next(self, count: int, reply: str = "451 4.3.0 Temporary failure, try again later") -> None:
        self._failures += [reply] * count

    def start(self) -> Self:
        options: dict[str, Any] = {}
        if self.username is not None:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        if self.tls is not None and self.implicit_tls:
            options["ssl_context"] = self.tls
        elif self.tls is not None:
            options |= {"tls_context": self.tls, "require_starttls": True}
        self._controller = _Controller(self, hostname="127.0.0.1", port=0, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_commands += 1
        if self._failures:
            return self._failures.pop(0)
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        transport = server.transport
        tls = session.ssl is not None or (
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )
        self.received.append(
            ReceivedMail(str(envelope.mail_from), tuple(envelope.rcpt_tos), message, login, tls)
        )
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """aiosmtpd's Controller on a free port (port=0): read the bound port before the start-up probe."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()
