"""Fake external-context APIs on 127.0.0.1 with the real response shapes, for the live source tests.

:class:`FakeExternal` serves, on one port:
- alternative.me ``GET /fng/?limit=N&format=json`` (Fear & Greed; newest first, ``limit=0`` = all);
- CoinGecko ``GET /api/v3/global`` (market-cap percentages and ``updated_at``);
- FRED ``GET /graph/fredgraph.csv?id=SERIES[&cosd=YYYY-MM-DD]`` (CSV, missing values as ``.`` or empty).

Controls: set the data (:meth:`~FakeExternal.set_fear_greed`, :meth:`~FakeExternal.set_global`,
:meth:`~FakeExternal.set_fred`), answer the next requests with an error status (optionally with
``Retry-After``), delay the next responses (to trigger client timeouts), and read the request log.

:func:`add_binance_futures` adds the USDⓈ-M futures endpoints ccxt's binance uses for funding rates
(``/fapi/v1/exchangeInfo``, ``/fapi/v1/fundingRate``) to a :class:`~tests.fakes.fake_binance.FakeBinance`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.background_server import BackgroundServer
from tests.fakes.fake_binance import FakeBinance, Response

FNG_PATH = "/fng/"
GLOBAL_PATH = "/api/v3/global"
FRED_PATH = "/graph/fredgraph.csv"

# (status, body, extra headers); a str body is sent as text (CSV for FRED), anything else as JSON.
Answer = tuple[int, object, dict[str, str]]


@dataclass(frozen=True, slots=True)
class ExternalRequest:
    """One request the fake received and the status it answered (a delayed one may find no client)."""

    path: str
    params: dict[str, str]
    status: int


@dataclass(slots=True)
class _Scripted:
    path: str | None
    remaining: int
    status: int = 0
    retry_after: str | None = None
    delay_s: float = 0.0


def fng_classification(value: int) -> str:
    """alternative.me's label for an index value."""
    if value <= 24:
        return "Extreme Fear"
    if value <= 46:
        return "Fear"
    if value <= 54:
        return "Neutral"
    if value <= 75:
        return "Greed"
    return "Extreme Greed"


class FakeExternal(BackgroundServer):
    """alternative.me, CoinGecko and FRED on one local port; a context manager."""

    thread_name = "fake-external"

    def __init__(self) -> None:
        self.fear_greed: list[tuple[int, int]] = []
        self.dominance: dict[str, float] = {"btc": 52.1, "eth": 17.0, "usdt": 4.4, "bnb": 3.6, "sol": 2.9}
        self.updated_at = 1_713_312_000
        self.fred: dict[str, list[tuple[str, str]]] = {}
        self.fred_date_header = "observation_date"
        self.requests: list[ExternalRequest] = []
        self.routes: dict[str, Callable[[dict[str, str]], Answer]] = {
            FNG_PATH: self._fng,
            GLOBAL_PATH: self._global,
            FRED_PATH: self._fredgraph,
        }
        self._failures: list[_Scripted] = []
        self._delays: list[_Scripted] = []
        self._lock = threading.Lock()

    def _make_server(self) -> _Server:
        return _Server(self)

    # -- scripting -----------------------------------------------------------------------------------

    def set_fear_greed(self, rows: Sequence[tuple[int, int]]) -> None:
        """Daily values as ``(timestamp in s at 00:00 UTC, value 0-100)``, in any order."""
        with self._lock:
            self.fear_greed = list(rows)

    def set_global(self, btc: float, updated_at: int) -> None:
        """BTC's market-cap share in % and the ``updated_at`` (s) the next ``/global`` answers carry."""
        with self._lock:
            self.dominance = {**self.dominance, "btc": btc}
            self.updated_at = updated_at

    def set_fred(
        self, series_id: str, rows: Sequence[tuple[str, str]], date_header: str | None = None
    ) -> None:
        """Rows ``(YYYY-MM-DD, value as FRED writes it: "18.40", "." or "")`` of one series."""
        with self._lock:
            self.fred[series_id] = list(rows)
            if date_header is not None:
                self.fred_date_header = date_header

    def fail_next(
        self, count: int, status: int = 500, *, path: str | None = None, retry_after: str | None = None
    ) -> None:
        """Answer the next ``count`` requests (to ``path``, or any) with ``status`` (and ``Retry-After``)."""
        with self._lock:
            self._failures.append(_Scripted(path, count, status=status, retry_after=retry_after))

    def delay_next(self, count: int, seconds: float, *, path: str | None = None) -> None:
        """Hold the next ``count`` responses (to ``path``, or any) for ``seconds`` before answering."""
        with self._lock:
            self._delays.append(_Scripted(path, count, delay_s=seconds))

    def requests_to(self, path: str) -> list[ExternalRequest]:
        """The requests received for one path, in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # -- HTTP ----------------------------------------------------------------------------------------

    def handle(self, path: str, params: dict[str, str]) -> Answer:
        """Answer one GET (after any scripted delay): a scripted failure, a route, or 404; it is logged."""
        with self._lock:
            delay = _take(self._delays, path)
            failure = _take(self._failures, path)
        if delay is not None:
            time.sleep(delay.delay_s)
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            answer: Answer = (failure.status, _error_body(path, failure.status), headers)
        elif (route := self.routes.get(path)) is not None:
            with self._lock:
                answer = route(params)
        else:
            answer = (HTTPStatus.NOT_FOUND, "Not Found", {})
        with self._lock:
            self.requests.append(ExternalRequest(path, params, int(answer[0])))
        return answer

    def _fng(self, params: dict[str, str]) -> Answer:
        try:
            limit = int(params.get("limit", "1"))
        except ValueError:
            return (
                HTTPStatus.OK,
                {"name": "Fear and Greed Index", "data": [], "metadata": {"error": "Bad limit"}},
                {},
            )
        rows = sorted(self.fear_greed, reverse=True)
        rows = rows if limit == 0 else rows[:limit]
        data: list[dict[str, str]] = [
            {"value": str(v), "value_classification": fng_classification(v), "timestamp": str(t)}
            for t, v in rows
        ]
        if data:
            data[0]["time_until_update"] = "40000"
        return HTTPStatus.OK, {"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}}, {}

    def _global(self, _params: dict[str, str]) -> Answer:
        total_usd = 2.45e12
        body = {
            "data": {
                "active_cryptocurrencies": 13690,
                "upcoming_icos": 0,
                "ongoing_icos": 49,
                "ended_icos": 3376,
                "markets": 1046,
                "total_market_cap": {"btc": total_usd / 63_000, "eth": total_usd / 3_100, "usd": total_usd},
                "total_volume": {"btc": 1.6e6, "eth": 3.2e7, "usd": 1.0e11},
                "market_cap_percentage": dict(self.dominance),
                "market_cap_change_percentage_24h_usd": -1.27,
                "updated_at": self.updated_at,
            }
        }
        return HTTPStatus.OK, body, {}

    def _fredgraph(self, params: dict[str, str]) -> Answer:
        series_id = params.get("id", "")
        if series_id not in self.fred:
            return HTTPStatus.NOT_FOUND, "<html><body><h1>Series not found</h1></body></html>", {}
        start = params.get("cosd", "")
        rows = [(d, v) for d, v in self.fred[series_id] if d >= start]
        lines = [f"{self.fred_date_header},{series_id}", *(f"{d},{v}" for d, v in rows)]
        return HTTPStatus.OK, "\n".join(lines) + "\n", {}


def _take(scripted: list[_Scripted], path: str) -> _Scripted | None:
    """The first scripted entry that still applies to ``path``, with one use consumed."""
    entry = next((s for s in scripted if s.remaining > 0 and s.path in (None, path)), None)
    if entry is not None:
        entry.remaining -= 1
    return entry


def _error_body(path: str, status: int) -> object:
    if status == HTTPStatus.TOO_MANY_REQUESTS and path == GLOBAL_PATH:
        return {
            "status": {
                "error_code": 429,
                "error_message": "You've exceeded the Rate Limit. Please visit "
                "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher "
                "rate limits.",
            }
        }
    return f"<html><head><title>{status} {HTTPStatus(status).phrase}</title></head></html>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeExternal) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that timed out and hung up is expected here; stay quiet about it."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        status, body, headers = self.server.fake.handle(
            url.path, dict(parse_qsl(url.query, keep_blank_values=True))
        )
        is_text = isinstance(body, str)
        payload = (body if is_text else json.dumps(body)).encode()
        content_type = "text/csv" if url.path == FRED_PATH and status == HTTPStatus.OK else "text/html"
        self.send_response(int(status))
        self.send_header("Content-Type", content_type if is_text else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log line on stderr."""


# -- Binance USDⓈ-M futures (funding rates) on FakeBinance -----------------------------------------------


def add_binance_futures(fake: FakeBinance, funding: Mapping[str, Sequence[tuple[int, str]]]) -> None:
    """Serve ``/fapi/v1/exchangeInfo`` (a perpetual per spot market of ``fake``) and ``/fapi/v1/fundingRate``.

    ``funding`` maps a Binance symbol (``BTCUSDT``) to ``(fundingTime ms, fundingRate as "0.00010000")``.
    """
    rates = {symbol: sorted(rows) for symbol, rows in funding.items()}

    def exchange_info(_params: dict[str, str]) -> Response:
        symbols = [_perpetual_info(s, base, quote) for s, (base, quote, _) in fake.markets.items()]
        return HTTPStatus.OK, {
            "timezone": "UTC",
            "serverTime": fake.now_ms,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [
                {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
                {"asset": "BTC", "marginAvailable": True, "autoAssetExchange": "0"},
            ],
            "symbols": symbols,
        }

    def funding_rate(params: dict[str, str]) -> Response:
        symbol = params.get("symbol")
        if symbol is not None and symbol not in fake.markets:
            return HTTPStatus.BAD_REQUEST, {"code": -1121, "msg": "Invalid symbol."}
        try:
            limit = int(params.get("limit", "100"))
            start = int(params.get("startTime", "0"))
            end = int(params.get("endTime", str(fake.now_ms)))
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        if not 1 <= limit <= 1000:
            return HTTPStatus.BAD_REQUEST, {
                "code": -1130,
                "msg": "Data sent for parameter 'limit' is not valid.",
            }
        price = fake.markets[symbol][2] if symbol is not None else 0.0
        rows = [
            {"symbol": s, "fundingTime": t, "fundingRate": rate, "markPrice": f"{price:.8f}"}
            for s, series in rates.items()
            if symbol in (None, s)
            for t, rate in series
            if start <= t <= end
        ]
        return HTTPStatus.OK, rows[:limit]

    fake.routes[("GET", "/fapi/v1/exchangeInfo")] = exchange_info
    fake.routes[("GET", "/fapi/v1/fundingRate")] = funding_rate


def _perpetual_info(symbol: str, base: str, quote: str) -> dict[str, object]:
    """One entry of the USDⓈ-M ``exchangeInfo.symbols`` as Binance sends it for a perpetual."""
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["PoW"],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": [
            "LIMIT",
            "MARKET",
            "STOP",
            "STOP_MARKET",
            "TAKE_PROFIT",
            "TAKE_PROFIT_MARKET",
            "TRAILING_STOP_MARKET",
        ],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSets": ["GRID", "COPY"],
    }
