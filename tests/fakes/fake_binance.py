"""A fake Binance spot REST API on 127.0.0.1, for tests that drive the real ccxt client.

It speaks the public subset ccxt's ``binance`` uses for spot market data, with Binance's response shapes:
``GET /api/v3/ping``, ``/api/v3/time``, ``/api/v3/exchangeInfo``, ``/api/v3/klines``, ``/api/v3/depth``
and ``/api/v3/ticker/24hr``. Candles are synthetic but deterministic: a candle's values depend only on (seed,
symbol, interval, open time), so the same candle is identical whatever range a request asks for. Open times
are multiples of the interval from the Unix epoch; the candle containing ``now_ms`` is served too, as on
Binance (it is still forming).

Each symbol has an order book (:class:`FakeBook`, by default five levels a side one unit apart around the
market's typical price) and a last trade price (by default the typical price), served by ``depth`` and
``ticker/24hr``; tests replace them with :meth:`FakeBinance.set_book` and :meth:`FakeBinance.set_last_price`.

Tests can remove candles (:meth:`FakeBinance.drop_candles`), make the next requests fail
(:meth:`FakeBinance.fail_next`), and inspect every request received (:attr:`FakeBinance.requests`).
More endpoints can be added through :attr:`FakeBinance.routes`.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.background_server import BackgroundServer

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
INTERVAL_MS = {
    "1s": 1_000,
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": DAY_MS,
    "3d": 3 * DAY_MS,
    "1w": 7 * DAY_MS,
}
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1000
DEPTH_DEFAULT_LIMIT = 100
DEPTH_MAX_LIMIT = 5000
DEFAULT_BOOK_LEVELS = 5

# symbol -> (base asset, quote asset, typical price)
DEFAULT_MARKETS: Mapping[str, tuple[str, str, float]] = {
    "BTCUSDT": ("BTC", "USDT", 30_000.0),
    "ETHUSDT": ("ETH", "USDT", 2_000.0),
}

# Bodies Binance sends with these statuses; other statuses get their reason phrase as plain text.
ERROR_BODIES: Mapping[int, dict[str, object]] = {
    418: {
        "code": -1003,
        "msg": "Way too many requests; IP(127.0.0.1) banned until 1700000000000. "
        "Please use WebSocket Streams for live updates to avoid bans.",
    },
    429: {
        "code": -1003,
        "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
        "Please use WebSocket Streams for live updates to avoid polling the API.",
    },
}

Response = tuple[int, object]
Route = Callable[[dict[str, str]], Response]
Levels = Iterable[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received, with the status it answered."""

    method: str
    path: str
    params: dict[str, str]
    status: int


@dataclass(slots=True)
class _Failure:
    status: int
    path: str | None
    remaining: int


@dataclass(slots=True)
class FakeBook:
    """One symbol's order book: amount by price on each side, and Binance's ``lastUpdateId``."""

    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    update_id: int = 1

    def levels(self, side: str, limit: int | None = None) -> list[tuple[float, float]]:
        """``(price, amount)`` of ``side`` ("bids" or "asks"), best first, at most ``limit`` levels."""
        book = self.bids if side == "bids" else self.asks
        return sorted(book.items(), reverse=side == "bids")[:limit]


@dataclass(frozen=True, slots=True)
class BookChange:
    """One change of a book as Binance's diff depth stream sends it: update ids ``first_id`` to ``last_id``
    and the levels that changed, with amount 0 for a level removed."""

    first_id: int
    last_id: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


def _api_error(code: int, msg: str) -> Response:
    return HTTPStatus.BAD_REQUEST, {"code": code, "msg": msg}


def _decimal(value: float, places: int) -> str:
    """Binance sends prices and quantities as 8-decimal strings."""
    return f"{round(value, places):.8f}"


class FakeBinance(BackgroundServer):
    """Fake Binance spot REST API; use as a context manager or call :meth:`start` / :meth:`stop`.

    ``now_ms`` is the fake's clock and ``start_ms`` the earliest time with candles; both may be changed
    while the server runs.
    """

    thread_name = "fake-binance"

    def __init__(
        self,
        *,
        now_ms: int,
        start_ms: int,
        seed: int = 1,
        markets: Mapping[str, tuple[str, str, float]] = DEFAULT_MARKETS,
    ) -> None:
        self.now_ms = now_ms
        self.start_ms = start_ms
        self.seed = seed
        self.markets = dict(markets)
        self.requests: list[RecordedRequest] = []
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/api/v3/ping"): lambda _params: (HTTPStatus.OK, {}),
            ("GET", "/api/v3/time"): lambda _params: (HTTPStatus.OK, {"serverTime": self.now_ms}),
            ("GET", "/api/v3/exchangeInfo"): self._exchange_info,
            ("GET", "/api/v3/klines"): self._klines,
            ("GET", "/api/v3/depth"): self._depth,
            ("GET", "/api/v3/ticker/24hr"): self._ticker_24hr,
        }
        self._books: dict[str, FakeBook] = {}
        self._last_prices: dict[str, float] = {}
        self._missing: list[tuple[str | None, int, int]] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()

    def _make_server(self) -> _Server:
        return _Server(self)

    # -- scripting -----------------------------------------------------------------------------------

    def drop_candles(self, start_ms: int, end_ms: int, symbol: str | None = None) -> None:
        """Stop serving candles opening in ``[start_ms, end_ms)`` (for ``symbol``, or every symbol)."""
        with self._lock:
            self._missing.append((symbol, start_ms, end_ms))

    def fail_next(
        self, count: int, status: int = HTTPStatus.INTERNAL_SERVER_ERROR, path: str | None = None
    ) -> None:
        """Answer the next ``count`` requests (to ``path``, or to any path) with ``status``."""
        with self._lock:
            self._failures.append(_Failure(int(status), path, count))

    def set_book(self, symbol: str, bids: Levels, asks: Levels) -> BookChange:
        """Replace a symbol's order book (one new update id); returns the change from the previous book."""
        new_bids, new_asks = dict(bids), dict(asks)
        if any(a <= 0 for a in (*new_bids.values(), *new_asks.values())):
            raise ValueError("book amounts must be positive (a missing level is an absent price)")
        with self._lock:
            book = self._book(symbol)
            change = BookChange(
                book.update_id + 1,
                book.update_id + 1,
                _diff(book.bids, new_bids),
                _diff(book.asks, new_asks),
            )
            book.bids, book.asks, book.update_id = new_bids, new_asks, change.last_id
        return change

    def book(self, symbol: str) -> FakeBook:
        """A copy of a symbol's current order book."""
        with self._lock:
            book = self._book(symbol)
            return FakeBook(dict(book.bids), dict(book.asks), book.update_id)

    def set_last_price(self, symbol: str, price: float) -> None:
        """The price of the symbol's last trade, as the tickers report it."""
        with self._lock:
            self._last_prices[symbol] = price

    def last_price(self, symbol: str) -> float:
        with self._lock:
            return self._last_prices.get(symbol, self.markets[symbol][2])

    def klines_requests(self, symbol: str | None = None) -> list[dict[str, str]]:
        """Query parameters of the ``/api/v3/klines`` requests answered with 200, in order."""
        return [
            r.params
            for r in self.requests
            if r.path == "/api/v3/klines"
            and r.status == HTTPStatus.OK
            and (symbol is None or r.params.get("symbol") == symbol)
        ]

    # -- data ----------------------------------------------------------------------------------------

    def open_times(
        self, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[int]:
        """Open times served for a symbol, ascending, optionally limited to ``[start_ms, end_ms]``."""
        return list(self._times(symbol, INTERVAL_MS[interval], start_ms, end_ms, backwards=False))

    def kline(self, symbol: str, interval: str, open_ms: int) -> list[object]:
        """The 12-field Binance kline row for one candle."""
        interval_ms = INTERVAL_MS[interval]
        price = self.markets[symbol][2]
        rng = random.Random(f"{self.seed}:{symbol}:{interval}:{open_ms}")
        level = price * (1 + 0.2 * math.sin(2 * math.pi * open_ms / (30 * DAY_MS)))
        open_ = level * (1 + rng.uniform(-0.01, 0.01))
        close = open_ * (1 + rng.uniform(-0.01, 0.01))
        high = max(open_, close) * (1 + rng.uniform(0, 0.005))
        low = min(open_, close) * (1 - rng.uniform(0, 0.005))
        volume = rng.uniform(1, 100)
        taker_volume = volume * rng.uniform(0.3, 0.7)
        mid = (high + low) / 2
        return [
            open_ms,
            _decimal(open_, 2),
            _decimal(high, 2),
            _decimal(low, 2),
            _decimal(close, 2),
            _decimal(volume, 5),
            open_ms + interval_ms - 1,
            _decimal(volume * mid, 8),
            rng.randint(100, 5000),
            _decimal(taker_volume, 5),
            _decimal(taker_volume * mid, 8),
            "0",
        ]

    def _book(self, symbol: str) -> FakeBook:
        """The symbol's book, created with the default levels on first use (call with the lock held)."""
        book = self._books.get(symbol)
        if book is None:
            price = self.markets[symbol][2]
            levels = range(1, DEFAULT_BOOK_LEVELS + 1)
            book = self._books[symbol] = FakeBook(
                bids={price - i: 1.0 for i in levels}, asks={price + i: 1.0 for i in levels}
            )
        return book

    def _times(
        self, symbol: str, interval_ms: int, start_ms: int | None, end_ms: int | None, *, backwards: bool
    ) -> Iterator[int]:
        lo = self.start_ms if start_ms is None else max(self.start_ms, start_ms)
        hi = self.now_ms if end_ms is None else min(self.now_ms, end_ms)
        first = -(-lo // interval_ms) * interval_ms
        last = hi // interval_ms * interval_ms
        times = range(last, first - 1, -interval_ms) if backwards else range(first, last + 1, interval_ms)
        with self._lock:
            missing = [(a, b) for s, a, b in self._missing if s is None or s == symbol]
        return (t for t in times if not any(a <= t < b for a, b in missing))

    # -- HTTP ----------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str]) -> Response:
        """Answer one request: an injected failure, a route, or 404; the request is recorded."""
        with self._lock:
            failure = next((f for f in self._failures if f.remaining > 0 and f.path in (None, path)), None)
            if failure is not None:
                failure.remaining -= 1
        if failure is not None:
            status, body = failure.status, ERROR_BODIES.get(failure.status, HTTPStatus(failure.status).phrase)
        elif (route := self.routes.get((method, path))) is not None:
            status, body = route(params)
        else:
            status, body = HTTPStatus.NOT_FOUND, HTTPStatus.NOT_FOUND.phrase
        with self._lock:
            self.requests.append(RecordedRequest(method, path, params, int(status)))
        return status, body

    def _exchange_info(self, _params: dict[str, str]) -> Response:
        return HTTPStatus.OK, {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [
                _symbol_info(symbol, base, quote) for symbol, (base, quote, _) in self.markets.items()
            ],
        }

    def _klines(self, params: dict[str, str]) -> Response:
        symbol = params.get("symbol")
        if not symbol:
            return _api_error(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        if symbol not in self.markets:
            return _api_error(-1121, "Invalid symbol.")
        interval = params.get("interval")
        if interval not in INTERVAL_MS:
            return _api_error(-1120, "Invalid interval.")
        try:
            limit = int(params.get("limit", KLINES_DEFAULT_LIMIT))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            return _api_error(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= KLINES_MAX_LIMIT:
            return _api_error(-1130, "Data sent for parameter 'limit' is not valid.")
        # from startTime forwards if given; otherwise the latest candles up to endTime (or now)
        times = self._times(symbol, INTERVAL_MS[interval], start, end, backwards=start is None)
        selected = [t for t, _ in zip(times, range(limit), strict=False)]
        return HTTPStatus.OK, [self.kline(symbol, interval, t) for t in sorted(selected)]

    def _depth(self, params: dict[str, str]) -> Response:
        symbol = params.get("symbol")
        if symbol not in self.markets:
            return _api_error(-1121, "Invalid symbol.")
        try:
            limit = int(params.get("limit", DEPTH_DEFAULT_LIMIT))
        except ValueError:
            return _api_error(-1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= DEPTH_MAX_LIMIT:
            return _api_error(-1130, "Data sent for parameter 'limit' is not valid.")
        book = self.book(symbol)
        return HTTPStatus.OK, {
            "lastUpdateId": book.update_id,
            "bids": [[_decimal(p, 8), _decimal(a, 8)] for p, a in book.levels("bids", limit)],
            "asks": [[_decimal(p, 8), _decimal(a, 8)] for p, a in book.levels("asks", limit)],
        }

    def _ticker_24hr(self, params: dict[str, str]) -> Response:
        symbol = params.get("symbol")
        if symbol not in self.markets:
            return _api_error(-1121, "Invalid symbol.")
        return HTTPStatus.OK, ticker_24hr(symbol, self.book(symbol), self.last_price(symbol), self.now_ms)


def ticker_24hr(symbol: str, book: FakeBook, last: float, now_ms: int) -> dict[str, object]:
    """Binance's 24h ticker of a symbol (REST shape) with this book's top and last price; no price change."""
    (bid, bid_qty), (ask, ask_qty) = _top(book)
    price = _decimal(last, 8)
    return {
        "symbol": symbol,
        "priceChange": "0.00000000",
        "priceChangePercent": "0.000",
        "weightedAvgPrice": price,
        "prevClosePrice": price,
        "lastPrice": price,
        "lastQty": "0.01000000",
        "bidPrice": bid,
        "bidQty": bid_qty,
        "askPrice": ask,
        "askQty": ask_qty,
        "openPrice": price,
        "highPrice": price,
        "lowPrice": price,
        "volume": "0.00000000",
        "quoteVolume": "0.00000000",
        "openTime": now_ms - DAY_MS,
        "closeTime": now_ms,
        "firstId": 1,
        "lastId": 1,
        "count": 1,
    }


def _top(book: FakeBook) -> tuple[tuple[str, str], tuple[str, str]]:
    """Best bid and best ask as Binance's decimal strings ("0.00000000" for an empty side)."""
    empty = (0.0, 0.0)
    bid = (book.levels("bids", 1) or [empty])[0]
    ask = (book.levels("asks", 1) or [empty])[0]
    return (_decimal(bid[0], 8), _decimal(bid[1], 8)), (_decimal(ask[0], 8), _decimal(ask[1], 8))


def _diff(old: dict[float, float], new: dict[float, float]) -> tuple[tuple[float, float], ...]:
    """Levels changed from ``old`` to ``new`` by price, amount 0 where a level went away."""
    changed = {p: a for p, a in new.items() if old.get(p) != a}
    changed.update({p: 0.0 for p in old.keys() - new.keys()})
    return tuple(sorted(changed.items()))


def _symbol_info(symbol: str, base: str, quote: str) -> dict[str, object]:
    """One entry of ``exchangeInfo.symbols`` as Binance sends it for a spot pair."""
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": [
            "LIMIT",
            "LIMIT_MAKER",
            "MARKET",
            "STOP_LOSS",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT",
            "TAKE_PROFIT_LIMIT",
        ],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.01000000",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001000",
                "maxQty": "9000.00000000",
                "stepSize": "0.00001000",
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeBinance) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        status, body = self.server.fake.handle("GET", url.path, dict(parse_qsl(url.query)))
        is_text = isinstance(body, str)
        payload = (body if is_text else json.dumps(body)).encode()
        self.send_response(int(status))
        self.send_header("Content-Type", "text/plain" if is_text else "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log line on stderr."""
