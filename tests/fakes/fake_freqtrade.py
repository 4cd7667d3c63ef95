"""A fake Freqtrade REST API on 127.0.0.1, for tests of the actions that pause bots.

It follows Freqtrade's ``freqtrade/rpc/api_server``: ``POST /api/v1/token/login`` with HTTP basic auth
answers ``{"access_token", "refresh_token"}``; the private endpoints accept ``Authorization: Bearer`` with a
valid access token (or basic auth, as Freqtrade does) and otherwise answer 401; ``POST /api/v1/stopentry``
(alias ``/stopbuy``; only ``/stopbuy`` with ``legacy=True``, as before Freqtrade 2022), ``/stop`` and
``/start`` answer ``{"status": ...}``; unknown paths answer 404 ``{"detail": "Not Found"}``.

Tests can make the next requests fail (:meth:`FakeFreqtrade.fail_next`), invalidate every token issued
(:meth:`FakeFreqtrade.expire_tokens`) and inspect every request received (:attr:`FakeFreqtrade.calls`).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.fakes.background_server import BackgroundServer

API = "/api/v1"
STOPENTRY_STATUS = "No more entries will occur from now. Run /reload_config to reset."

Response = tuple[int, object]


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One request the fake received: how it authenticated (basic, bearer, none) and the status sent."""

    method: str
    path: str
    auth: str | None
    token: str | None
    status: int


@dataclass(slots=True)
class _Failure:
    status: int
    path: str | None
    remaining: int


class FakeFreqtrade(BackgroundServer):
    """Fake Freqtrade API; ``state`` is "running" or "stopped", ``max_open_trades`` 0 after stopentry."""

    thread_name = "fake-freqtrade"

    def __init__(
        self, *, username: str = "freqtrader", password: str = "s3cret", legacy: bool = False
    ) -> None:
        self.username = username
        self.password = password
        self.legacy = legacy
        self.state = "running"
        self.max_open_trades = 3
        self.calls: list[RecordedCall] = []
        self._tokens: set[str] = set()
        self._serial = itertools.count(1)
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()

    def _make_server(self) -> _Server:
        return _Server(self)

    # -- scripting -----------------------------------------------------------------------------------

    def fail_next(
        self, count: int, status: int = HTTPStatus.INTERNAL_SERVER_ERROR, path: str | None = None
    ) -> None:
        """Answer the next ``count`` requests (to ``path``, or to any path) with ``status``."""
        with self._lock:
            self._failures.append(_Failure(int(status), path, count))

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far (as after their 15 minutes or a bot restart)."""
        with self._lock:
            self._tokens.clear()

    def paths(self, method: str = "POST") -> list[str]:
        """Paths requested with ``method``, in order."""
        return [c.path for c in self.calls if c.method == method]

    @property
    def entries_stopped(self) -> bool:
        return self.max_open_trades == 0

    # -- HTTP ----------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, authorization: str | None) -> Response:
        """Answer one request (an injected failure, a route, 401 or 404) and record it."""
        scheme, token, user = _parse_auth(authorization)
        with self._lock:
            failure = next((f for f in self._failures if f.remaining > 0 and f.path in (None, path)), None)
            if failure is not None:
                failure.remaining -= 1
            token_valid = token in self._tokens
        if failure is not None:
            status, body = failure.status, {"detail": HTTPStatus(failure.status).phrase}
        else:
            status, body = self._route(method, path, scheme, token_valid, user)
        with self._lock:
            self.calls.append(RecordedCall(method, path, scheme, token, int(status)))
        return status, body

    def _route(
        self, method: str, path: str, scheme: str | None, token_valid: bool, user: tuple[str, str] | None
    ) -> Response:
        basic_ok = scheme == "basic" and user == (self.username, self.password)
        if (method, path) == ("GET", f"{API}/ping"):
            return HTTPStatus.OK, {"status": "pong"}
        if (method, path) == ("POST", f"{API}/token/login"):
            if not basic_ok:
                return HTTPStatus.UNAUTHORIZED, {"detail": "Incorrect username or password"}
            return HTTPStatus.OK, {"access_token": self._issue(), "refresh_token": self._issue()}
        handler = self._private_routes().get((method, path))
        if handler is None:
            return HTTPStatus.NOT_FOUND, {"detail": "Not Found"}
        if scheme == "bearer" and not token_valid:
            return HTTPStatus.UNAUTHORIZED, {"detail": "Could not validate credentials"}
        if not (basic_ok or (scheme == "bearer" and token_valid)):
            return HTTPStatus.UNAUTHORIZED, {"detail": "Unauthorized"}
        return HTTPStatus.OK, handler()

    def _private_routes(self) -> dict[tuple[str, str], Callable[[], dict[str, str]]]:
        routes: dict[tuple[str, str], Callable[[], dict[str, str]]] = {
            ("POST", f"{API}/stopbuy"): self._stopentry,
            ("POST", f"{API}/stop"): self._stop,
            ("POST", f"{API}/start"): self._start,
        }
        if not self.legacy:
            routes[("POST", f"{API}/stopentry")] = self._stopentry
        return routes

    def _issue(self) -> str:
        token = f"token-{next(self._serial)}"
        with self._lock:
            self._tokens.add(token)
        return token

    def _stopentry(self) -> dict[str, str]:
        if self.state == "running":
            self.max_open_trades = 0
        return {"status": STOPENTRY_STATUS}

    def _stop(self) -> dict[str, str]:
        if self.state == "running":
            self.state = "stopped"
            return {"status": "stopping trader ..."}
        return {"status": "already stopped"}

    def _start(self) -> dict[str, str]:
        if self.state == "running":
            return {"status": "already running"}
        self.state = "running"
        return {"status": "starting trader ..."}


def _parse_auth(header: str | None) -> tuple[str | None, str | None, tuple[str, str] | None]:
    """(scheme, bearer token, basic (user, password)) of an Authorization header."""
    if not header or " " not in header:
        return None, None, None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return "bearer", value.strip(), None
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "basic", None, None
        return "basic", None, (user, password)
    return scheme.lower(), None, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeFreqtrade) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, body = self.server.fake.handle(
            method, urlsplit(self.path).path, self.headers.get("Authorization")
        )
        payload = json.dumps(body).encode()
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log line on stderr."""
