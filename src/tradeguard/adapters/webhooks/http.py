"""A small HTTP/1.1 client for webhook deliveries: POST a body, read the answer, keep connections alive.

Why not a general client: POSTing to a local receiver from one core (uvloop), aiohttp managed about 9,000
requests a second here, httpx's async client about 450, this about 25,000; at 10,000 deliveries a second
that decides whether the service keeps up. The parsing is httptools' (llhttp, which uvicorn uses; it comes
with `uvicorn[standard]`), the transport asyncio's, TLS the `ssl` module's default context (certificates
and host names verified).

Scope, as webhooks need it: POST only; no redirects (Standard Webhooks counts a 3xx as a failure), no
proxies, no compression. The answer's status, Retry-After and first 64 KiB of body are kept; the body is read
to its end so the connection can be reused. A connection from the pool that turns out to have been closed
by the receiver is replaced once, transparently (deliveries are idempotent by `webhook-id`). Host names are
resolved here and checked against the blocked networks (`targets`) before connecting to the address checked.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

from tradeguard.adapters.webhooks.targets import TargetPolicy

MAX_BODY: Final = 64 * 1024

_Origin = tuple[str, str, int]  # scheme, host, port


class HttpError(Exception):
    """No answer: the connection failed, was closed, or the answer was not HTTP."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    retry_after: str | None  # the one header webhooks act on
    body: bytes  # at most MAX_BODY bytes


@dataclass(frozen=True, slots=True)
class _Target:
    origin: _Origin
    head: str  # request line, Host and User-Agent, each ending in CRLF


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._received = False
        self._retry_after: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done:  # an answer delimited by the end of the connection
            self._complete()
        else:
            self._fail(HttpError("connection closed before an answer" + (f": {exc}" if exc else "")))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if self._size < MAX_BODY:
            self._body.append(body[: MAX_BODY - self._size])
        self._size += len(body)

    def on_message_complete(self) -> None:
        self._complete()
        self.reusable = self._parser.should_keep_alive()

    # requests

    @property
    def received(self) -> bool:
        """True once any byte of the answer arrived (a failure before that may be retried elsewhere)."""
        return self._received

    def request(self, data: bytes, deadline: float) -> asyncio.Future[HttpResponse]:
        """Send; the answer, or TimeoutError at `deadline` (loop time)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._received = self._headers_done = self.reusable = False
        self._retry_after, self._body, self._size = None, [], 0
        self._deadline = loop.call_at(deadline, self._fail, TimeoutError())
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            status = self._parser.get_status_code()
            self._waiter.set_result(HttpResponse(status, self._retry_after, b"".join(self._body)))
            self._stop_clock()

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._stop_clock()
        self.close()

    def _stop_clock(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class HttpClient:
    """POSTs with per-origin keep-alive pools (up to `max_idle` connections each); each call bounded by
    `timeout_s` (TimeoutError)."""

    def __init__(
        self, *, timeout_s: float, user_agent: str, max_idle: int = 256, targets: TargetPolicy | None = None
    ) -> None:
        self._timeout_s = timeout_s
        self._policy = targets or TargetPolicy()
        self._user_agent = user_agent
        self._max_idle = max_idle
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        target = self._target(url)
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        data = f"{target.head}Content-Length: {len(body)}\r\n{fields}\r\n".encode("latin-1") + body
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        pooled = self._take_idle(target.origin)
        if pooled is not None:
            try:
                return await self._exchange(target.origin, pooled, data, deadline)
            except HttpError:
                if pooled.received:
                    raise
                # closed by the receiver while idle: once more on a new connection
        conn = await self._connect(target.origin, deadline)
        return await self._exchange(target.origin, conn, data, deadline)

    async def close(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()

    async def _exchange(
        self, origin: _Origin, conn: _Connection, data: bytes, deadline: float
    ) -> HttpResponse:
        try:
            response = await conn.request(data, deadline)
        except BaseException:
            conn.close()
            raise
        pool = self._idle.setdefault(origin, [])
        if conn.reusable and len(pool) < self._max_idle:
            pool.append(conn)
        else:
            conn.close()
        return response

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        pool = self._idle.get(origin)
        while pool:
            conn = pool.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, origin: _Origin, deadline: float) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise HttpError(f"cannot resolve {host}: {type(exc).__name__}: {exc}") from exc
            addresses = list(dict.fromkeys(info[4][:2] for info in infos))
            allowed = [a for a in addresses if self._policy.blocked_by(a[0]) is None]
            if not allowed:
                blocked = ", ".join(f"{a[0]} (in {self._policy.blocked_by(a[0])})" for a in addresses)
                raise HttpError(f"{host} resolves only to blocked addresses: {blocked}")
            error: OSError | None = None
            for address, address_port in allowed:  # connect to the address checked, not the name again
                try:
                    _, conn = await loop.create_connection(
                        _Connection, address, address_port, ssl=tls, server_hostname=host if tls else None
                    )
                    return conn
                except OSError as exc:
                    error = exc
        raise HttpError(f"cannot connect to {host}:{port}: {type(error).__name__}: {error}") from error

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https") or not parts.hostname:
                raise HttpError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: {self._user_agent}\r\n"
            target = _Target((scheme, parts.hostname, port), head)
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = target
        return target
