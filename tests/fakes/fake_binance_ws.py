"""A fake Binance spot WebSocket market stream on 127.0.0.1, for tests that drive the real ccxt.pro client.

It speaks the subset ccxt.pro's ``binance.watch_ohlcv`` uses. ccxt connects to ``<urls.api.ws.spot>/<n>``
(``wss://stream.binance.com:9443/ws/0`` on the real exchange; ``n`` is ccxt's stream index), sends
``{"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 1}`` and expects ``{"result": null,
"id": 1}``; then Binance pushes kline events ``{"e": "kline", "E": ..., "s": "BTCUSDT", "k": {...}}``.
A raw stream named in the path (``/ws/btcusdt@kline_1h``) is subscribed on connect, as on Binance.

Nothing is pushed on its own: a test calls :meth:`FakeBinanceWs.push_kline`. Values come from the REST fake
(:meth:`FakeBinance.kline`) so that REST and WebSocket agree: a closed kline (``"x": true``) carries exactly
the REST candle; a forming one carries a deterministic partial state of it (same open, close half-way to the
final close, half the volume), so a consumer that takes a forming update for the final candle is caught.

Order books (``watch_order_book``: streams ``<symbol>@depth`` / ``<symbol>@depth@100ms``) follow Binance's
diff protocol: ccxt fetches a REST snapshot (``lastUpdateId``) and applies ``depthUpdate`` events whose update
ids ``U``..``u`` continue it. :meth:`FakeBinanceWs.push_book` replaces the REST fake's book and pushes the
change; a book changed on the REST fake alone (:meth:`FakeBinance.set_book`) is an update the stream missed,
so the next event breaks the sequence. :meth:`FakeBinanceWs.push_ticker` pushes the 24h ticker and mini
ticker (``<symbol>@ticker``, ``<symbol>@miniTicker``: ``watch_ticker``) with the REST fake's last price.

Tests can drop every connection abruptly (:meth:`FakeBinanceWs.drop_connections`, no close frame) and
refuse the next handshakes (:meth:`FakeBinanceWs.refuse_connections`, HTTP 503).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Collection, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from tests.fakes.fake_binance import DAY_MS, INTERVAL_MS, FakeBinance, Levels, ticker_24hr

T = TypeVar("T")

# How long a call from the test thread waits for the server's loop.
_CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Subscription:
    """One SUBSCRIBE / UNSUBSCRIBE request received, with the connection (numbered from 1) it came on."""

    connection: int
    method: str
    params: tuple[str, ...]
    id: object


@dataclass(eq=False)
class _Connection:
    number: int
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    streams: set[str] = field(default_factory=set)


def _price(value: float) -> str:
    return f"{round(value, 2):.8f}"


class FakeBinanceWs:
    """Fake Binance kline stream; use as a context manager or call :meth:`start` / :meth:`stop`.

    ``rest`` supplies the candle values and the event clock (``rest.now_ms``).
    """

    def __init__(self, rest: FakeBinance) -> None:
        self.rest = rest
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._subscriptions: list[Subscription] = []
        self._accepted = 0
        self._refused = 0
        self._refuse_next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL (``ws://127.0.0.1:PORT``); pass it as the WebSocket base, paths are Binance's."""
        if self._port is None:
            raise RuntimeError("FakeBinanceWs is not started")
        return f"ws://127.0.0.1:{self._port}"

    def start(self) -> FakeBinanceWs:
        """Listen on a free port of 127.0.0.1 and serve from a background thread with its own loop."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-binance-ws", daemon=True)
        self._thread.start()
        self._port = self._call(self._serve())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            self.drop_connections()
            self._call(self._runner.cleanup())
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=_CALL_TIMEOUT_S)
            self._thread = None
        self._loop.close()
        self._loop = None
        self._port = None

    def __enter__(self) -> FakeBinanceWs:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- inspection ----------------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Client connections open now."""
        with self._lock:
            return len(self._connections)

    @property
    def connections_total(self) -> int:
        """Handshakes accepted since start."""
        with self._lock:
            return self._accepted

    @property
    def refused_total(self) -> int:
        """Handshakes refused since start."""
        with self._lock:
            return self._refused

    @property
    def subscriptions(self) -> list[Subscription]:
        """Every SUBSCRIBE / UNSUBSCRIBE received, in order."""
        with self._lock:
            return list(self._subscriptions)

    def streams(self) -> set[str]:
        """Streams some open connection is subscribed to now, e.g. ``{"btcusdt@kline_1h"}``."""
        with self._lock:
            return set().union(*(c.streams for c in self._connections))

    # -- scripting -----------------------------------------------------------------------------------

    def kline_event(self, symbol: str, interval: str, open_ms: int, closed: bool) -> dict[str, Any]:
        """The kline event Binance would push for this candle (``closed``: its final update)."""
        row = [float(str(value)) for value in self.rest.kline(symbol, interval, open_ms)]
        open_, high, low, close, volume = row[1:6]
        quote_volume, trades, taker, taker_quote = row[7], int(row[8]), row[9], row[10]
        if not closed:
            close = (open_ + close) / 2
            high, low = max(open_, close), min(open_, close)
            volume, quote_volume, trades = volume / 2, quote_volume / 2, max(trades // 2, 1)
            taker, taker_quote = taker / 2, taker_quote / 2
        first_trade = open_ms // 1000
        return {
            "e": "kline",
            "E": self.rest.now_ms,
            "s": symbol,
            "k": {
                "t": open_ms,
                "T": open_ms + INTERVAL_MS[interval] - 1,
                "s": symbol,
                "i": interval,
                "f": first_trade,
                "L": first_trade + trades - 1,
                "o": _price(open_),
                "c": _price(close),
                "h": _price(high),
                "l": _price(low),
                "v": f"{volume:.8f}",
                "n": trades,
                "x": closed,
                "q": f"{quote_volume:.8f}",
                "V": f"{taker:.8f}",
                "Q": f"{taker_quote:.8f}",
                "B": "0",
            },
        }

    def push_kline(self, symbol: str, interval: str, open_ms: int, closed: bool = True) -> int:
        """Send one kline update to every connection subscribed to it; returns how many got it.

        The message has been written to the sockets when this returns.
        """
        if interval not in INTERVAL_MS:
            raise ValueError(f"unknown interval {interval!r}")
        stream = f"{symbol.lower()}@kline_{interval}"
        text = json.dumps(self.kline_event(symbol, interval, open_ms, closed))
        return self._call(self._send({stream}, text))

    def push_book(self, symbol: str, bids: Levels, asks: Levels) -> int:
        """Replace the symbol's book on the REST fake and push the change as one ``depthUpdate`` event to
        every connection subscribed to its depth stream; returns how many got it (once written)."""
        change = self.rest.set_book(symbol, bids, asks)
        event = {
            "e": "depthUpdate",
            "E": self.rest.now_ms,
            "s": symbol,
            "U": change.first_id,
            "u": change.last_id,
            "b": [[f"{p:.8f}", f"{a:.8f}"] for p, a in change.bids],
            "a": [[f"{p:.8f}", f"{a:.8f}"] for p, a in change.asks],
        }
        streams = {f"{symbol.lower()}@depth", f"{symbol.lower()}@depth@100ms"}
        return self._call(self._send(streams, json.dumps(event)))

    def push_ticker(self, symbol: str) -> int:
        """Push the symbol's 24h ticker (last price and top of book from the REST fake) to every connection
        subscribed to ``<symbol>@ticker``, and its mini ticker to ``<symbol>@miniTicker`` (what ccxt's
        ``watch_ticker`` subscribes to); returns how many connections got one."""
        now = self.rest.now_ms
        rest = ticker_24hr(symbol, self.rest.book(symbol), self.rest.last_price(symbol), now)
        mini = {
            "E": now,
            "s": symbol,
            "c": rest["lastPrice"],
            "o": rest["openPrice"],
            "h": rest["highPrice"],
            "l": rest["lowPrice"],
            "v": rest["volume"],
            "q": rest["quoteVolume"],
        }
        full = {
            **mini,
            "e": "24hrTicker",
            "p": rest["priceChange"],
            "P": rest["priceChangePercent"],
            "w": rest["weightedAvgPrice"],
            "x": rest["prevClosePrice"],
            "Q": rest["lastQty"],
            "b": rest["bidPrice"],
            "B": rest["bidQty"],
            "a": rest["askPrice"],
            "A": rest["askQty"],
            "O": now - DAY_MS,
            "C": now,
            "F": rest["firstId"],
            "L": rest["lastId"],
            "n": rest["count"],
        }
        stream = symbol.lower()
        sent = self._call(self._send({f"{stream}@ticker"}, json.dumps(full)))
        return sent + self._call(
            self._send({f"{stream}@miniTicker"}, json.dumps({"e": "24hrMiniTicker", **mini}))
        )

    def drop_connections(self) -> int:
        """Abort every client connection (TCP closed without a WebSocket close frame); returns how many."""
        return self._call(self._drop())

    def refuse_connections(self, count: int) -> None:
        """Answer the next ``count`` WebSocket handshakes with HTTP 503."""
        with self._lock:
            self._refuse_next = count

    # -- server --------------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FakeBinanceWs is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT_S)

    async def _serve(self) -> int:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        app.router.add_get("/ws/{name}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        if server is None or not server.sockets:
            raise RuntimeError("fake Binance WebSocket server did not start")
        return int(server.sockets[0].getsockname()[1])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            refuse = self._refuse_next > 0
            if refuse:
                self._refuse_next -= 1
                self._refused += 1
        if refuse:
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self._lock:
            self._accepted += 1
            conn = _Connection(self._accepted, ws, request.transport)
            name = request.match_info.get("name", "")
            if "@" in name:
                conn.streams.add(name)
            self._connections.append(conn)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_text(conn, message.data)
        finally:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
        return ws

    async def _on_text(self, conn: _Connection, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            await conn.ws.send_str(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}))
            return
        method, params, request_id = request.get("method"), request.get("params", []), request.get("id")
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            error = {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}
            reply = {"error": error, "id": request_id}
            await conn.ws.send_str(json.dumps(reply))
            return
        with self._lock:
            self._subscriptions.append(Subscription(conn.number, method, tuple(params), request_id))
            if method == "SUBSCRIBE":
                conn.streams.update(params)
            else:
                conn.streams.difference_update(params)
        await conn.ws.send_str(json.dumps({"result": None, "id": request_id}))

    async def _send(self, streams: Collection[str], text: str) -> int:
        with self._lock:
            targets = [c for c in self._connections if not c.streams.isdisjoint(streams)]
        sent = 0
        for conn in targets:
            if conn.ws.closed:
                continue
            try:
                await conn.ws.send_str(text)
            except ConnectionError:
                continue
            sent += 1
        return sent

    async def _drop(self) -> int:
        with self._lock:
            dropped, self._connections = self._connections, []
        for conn in dropped:
            if conn.transport is not None:
                conn.transport.abort()
        return len(dropped)
