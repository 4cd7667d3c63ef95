"""Scriptable stand-ins for the tradeguard service on 127.0.0.1, for the client's fault behaviours.

`FakeTradeguard` answers in the service's contract: ``POST /v1/orders/check`` an ``OrderDecision`` (the
``core.order_check`` models) allowing the posted ``OrderRequest``, ``GET /v1/risk`` a small assessment,
``POST /v1/events`` 202 with the ids; anything else a 404 problem. Tests script the next answers of a path
with :meth:`FakeTradeguard.script`: a :class:`Reply`, :data:`HANG` (read the request, never answer) or
:data:`GARBAGE` (200 with an HTML body); every request is recorded in :attr:`FakeTradeguard.calls`.

`BlackHole` accepts connections and never answers anything; `refused_url()` is a port nobody listens on.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

from tests.fakes.background_server import BackgroundServer
from tradeguard.core.order_check import CHECKS, CheckResult, OrderDecision, OrderRequest, VarReport
from tradeguard.core.trading_state import TradingState


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer; a non-2xx status without `body` is answered as problem details."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


HANG: Literal["hang"] = "hang"
GARBAGE: Literal["garbage"] = "garbage"
Scripted = Reply | Literal["hang", "garbage"]


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


def decision_body(order: dict[str, Any], decision: str = "allow") -> dict[str, Any]:
    """A contract-shaped decision on `order` (every check passed, or the decision named)."""
    request = OrderRequest.model_validate(order)
    return OrderDecision(
        decision=decision,  # type: ignore[arg-type]
        allowed_amount=request.amount if decision in ("allow", "reduce") else 0.0,
        reasons=[],
        checks={name: CheckResult(status="pass") for name in CHECKS},
        var=VarReport(before_pct=1.0, after_pct=1.2, limit_pct=5.0, scenarios=10_000),
        trading_state=TradingState.ACTIVE,
        evaluated_at=datetime.now(UTC),
        latency_ms=1.5,
    ).model_dump(mode="json")


def risk_body(pair: str | None) -> dict[str, Any]:
    """A small assessment with the members every `GET /v1/risk` answer has."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "pair": pair,
        "exchange": "binance",
        "timeframe": "1h",
        "as_of": now,
        "evaluated_at": now,
        "data_age_s": 0.0,
        "stale": False,
        "synthetic": True,
        "source": "fake",
        "safe_to_trade": True,
        "recommendation": "entry_ok",
        "blocked_by": [],
        "decided_by": "all_checks_passed",
        "reasoning": ["fake"],
        "risk_score": 0.2,
        "risk_class": "low",
        "risk_confidence": 0.9,
        "regime": "sideways",
        "event_flags": {"flag_panic": False},
    }


def problem(status: int, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}


class FakeTradeguard(BackgroundServer):
    thread_name = "fake-tradeguard"

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._scripts: dict[str, deque[Scripted]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._release = threading.Event()

    def script(self, path: str, *replies: Scripted) -> None:
        """Answer the next requests to `path` with `replies`, in order; then the default answer again."""
        with self._lock:
            self._scripts[path].extend(replies)

    def calls_to(self, path: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path == path]

    def stop(self) -> None:
        self._release.set()
        super().stop()

    def _next(self, call: Call) -> Scripted:
        with self._lock:
            self.calls.append(call)
            queue = self._scripts.get(call.path)
            if queue:
                return queue.popleft()
        return _default(call)

    def _make_server(self) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                call = Call(
                    self.command,
                    url.path,
                    url.query,
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
                reply = fake._next(call)
                if reply == HANG:
                    fake._release.wait()
                    self.close_connection = True
                    return
                if reply == GARBAGE:
                    self._send(200, b"<html>proxy error</html>", "text/html", {})
                    return
                assert isinstance(reply, Reply)
                body = reply.body
                media = "application/json"
                if body is None and reply.status >= 400:
                    body, media = problem(reply.status, "scripted failure"), "application/problem+json"
                self._send(reply.status, json.dumps(body).encode(), media, reply.headers)

            def _send(self, status: int, payload: bytes, media: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def _default(call: Call) -> Reply:
    if call.method == "POST" and call.path == "/v1/orders/check":
        return Reply(200, decision_body(call.body))
    if call.method == "GET" and call.path == "/v1/risk":
        return Reply(200, risk_body(parse_qs(call.query).get("pair", [None])[0]))
    if call.method == "POST" and call.path == "/v1/events":
        return Reply(202, {"accepted": [e["id"] for e in call.body["events"]], "duplicates": []})
    return Reply(404, problem(404, f"no route {call.method} {call.path}"))


class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and never reads or answers: every request times out."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self._stopped = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self._held.append(conn)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()
        for conn in self._held:
            conn.close()


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
