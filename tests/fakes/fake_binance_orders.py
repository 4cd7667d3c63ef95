"""A fake Binance spot REST API with an order book behind the signed endpoints ccxt uses to cancel orders.

:class:`FakeBinanceOrders` extends :class:`~tests.fakes.fake_binance.FakeBinance` (public market data,
``fail_next``, ``requests``) with its own HTTP handler that also serves DELETE and POST, and with:

* ``GET /api/v3/openOrders`` (``symbol`` optional), ``DELETE /api/v3/order`` (``symbol`` and ``orderId`` or
  ``origClientOrderId``), ``DELETE /api/v3/openOrders`` (``symbol``), in Binance's response shapes; an
  unknown order, or no open order to cancel, answers Binance's ``-2011 Unknown order sent.``
* ``GET /sapi/v1/capital/config/getall``, ``/sapi/v1/margin/allPairs`` and ``.../isolated/allPairs`` (empty
  lists), which ccxt calls when it loads Binance markets with credentials (unless told not to).

Signed endpoints need an ``X-MBX-APIKEY`` header equal to ``api_key`` and ``timestamp`` and ``signature``
parameters (any signature is accepted), else they answer Binance's -2014 / -1102 errors. Their requests,
with the API-key header received, are in :attr:`FakeBinanceOrders.signed_requests`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.fake_binance import DEFAULT_MARKETS, FakeBinance, Response, _api_error

# ccxt loads coins and margin pairs (both empty here) with the markets when it has credentials.
EMPTY_LISTS = (
    "/sapi/v1/capital/config/getall",
    "/sapi/v1/margin/allPairs",
    "/sapi/v1/margin/isolated/allPairs",
)
SIGNED_PATHS = frozenset({"/api/v3/openOrders", "/api/v3/order", *EMPTY_LISTS})
UNKNOWN_ORDER = (-2011, "Unknown order sent.")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request to a signed endpoint with its parameters and the ``X-MBX-APIKEY`` header received."""

    method: str
    path: str
    params: dict[str, str]
    api_key: str | None


class SignedFakeBinance(FakeBinance):
    """A FakeBinance that also serves signed (private) endpoints: `private_paths` need the right
    `X-MBX-APIKEY` plus `timestamp` and `signature` parameters; every signed call is recorded."""

    private_paths: frozenset[str] = frozenset()
    api_key: str
    signed_requests: list[SignedRequest]

    def _make_server(self) -> _Server:
        return _Server(self)

    def handle_signed(self, method: str, path: str, params: dict[str, str], api_key: str | None) -> Response:
        """Check a signed request's key, timestamp and signature, then answer it like any other."""
        if path not in self.private_paths:
            return self.handle(method, path, params)
        with self._lock:
            self.signed_requests.append(SignedRequest(method, path, dict(params), api_key))
        if api_key != self.api_key:
            return HTTPStatus.UNAUTHORIZED, {"code": -2014, "msg": "API-key format invalid."}
        for name in ("timestamp", "signature"):
            if not params.get(name):
                return _api_error(
                    -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
                )
        return self.handle(method, path, params)


class FakeBinanceOrders(SignedFakeBinance):
    """FakeBinance plus open orders that ccxt can list and cancel with signed requests."""

    private_paths = SIGNED_PATHS

    thread_name = "fake-binance-orders"

    def __init__(
        self,
        *,
        now_ms: int,
        start_ms: int,
        api_key: str = "test-key",
        markets: Mapping[str, tuple[str, str, float]] = DEFAULT_MARKETS,
    ) -> None:
        super().__init__(now_ms=now_ms, start_ms=start_ms, markets=markets)
        self.api_key = api_key
        self.orders: dict[int, dict[str, Any]] = {}
        self.signed_requests: list[SignedRequest] = []
        self._order_ids = itertools.count(1001)
        self.routes.update(
            {
                ("GET", "/api/v3/openOrders"): self._open_orders,
                ("DELETE", "/api/v3/order"): self._cancel_order,
                ("DELETE", "/api/v3/openOrders"): self._cancel_open_orders,
            }
        )
        for path in EMPTY_LISTS:
            self.routes[("GET", path)] = lambda _params: (HTTPStatus.OK, [])

    # -- scripting -----------------------------------------------------------------------------------

    def add_order(self, symbol: str, side: str = "BUY", price: float = 100.0, quantity: float = 0.01) -> int:
        """Place a resting LIMIT GTC order; returns its ``orderId``."""
        if symbol not in self.markets:
            raise KeyError(f"{symbol} is not a market of the fake")
        order_id = next(self._order_ids)
        with self._lock:
            self.orders[order_id] = {
                "symbol": symbol,
                "orderId": order_id,
                "orderListId": -1,
                "clientOrderId": f"fake-{order_id}",
                "price": f"{price:.8f}",
                "origQty": f"{quantity:.8f}",
                "executedQty": "0.00000000",
                "cummulativeQuoteQty": "0.00000000",
                "status": "NEW",
                "timeInForce": "GTC",
                "type": "LIMIT",
                "side": side,
                "stopPrice": "0.00000000",
                "icebergQty": "0.00000000",
                "time": self.now_ms,
                "updateTime": self.now_ms,
                "isWorking": True,
                "workingTime": self.now_ms,
                "origQuoteOrderQty": "0.00000000",
                "selfTradePreventionMode": "EXPIRE_MAKER",
            }
        return order_id

    def open_order_ids(self, symbol: str | None = None) -> list[int]:
        with self._lock:
            return sorted(i for i, o in self.orders.items() if symbol in (None, o["symbol"]))

    # -- HTTP ----------------------------------------------------------------------------------------

    def _open_orders(self, params: dict[str, str]) -> Response:
        symbol = params.get("symbol")
        if symbol is not None and symbol not in self.markets:
            return _api_error(-1121, "Invalid symbol.")
        with self._lock:
            return HTTPStatus.OK, [o for o in self.orders.values() if symbol in (None, o["symbol"])]

    def _cancel_order(self, params: dict[str, str]) -> Response:
        symbol = params.get("symbol")
        if symbol not in self.markets:
            return _api_error(-1121, "Invalid symbol.")
        with self._lock:
            if "orderId" in params:
                found = self.orders.get(int(params["orderId"]))
            else:
                client_id = params.get("origClientOrderId")
                found = next((o for o in self.orders.values() if o["clientOrderId"] == client_id), None)
            if found is None or found["symbol"] != symbol:
                return _api_error(*UNKNOWN_ORDER)
            del self.orders[found["orderId"]]
        return HTTPStatus.OK, _cancelled(found, self.now_ms)

    def _cancel_open_orders(self, params: dict[str, str]) -> Response:
        symbol = params.get("symbol")
        if symbol not in self.markets:
            return _api_error(-1121, "Invalid symbol.")
        with self._lock:
            ids = [i for i, o in self.orders.items() if o["symbol"] == symbol]
            removed = [self.orders.pop(i) for i in ids]
        if not removed:
            return _api_error(*UNKNOWN_ORDER)
        return HTTPStatus.OK, [_cancelled(o, self.now_ms) for o in removed]


def _cancelled(order: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """Binance's answer to a cancel: the order with status CANCELED."""
    keep = ("symbol", "orderId", "orderListId", "price", "origQty", "executedQty", "cummulativeQuoteQty")
    keep += ("timeInForce", "type", "side", "selfTradePreventionMode")
    return {
        **{key: order[key] for key in keep},
        "origClientOrderId": order["clientOrderId"],
        "clientOrderId": f"cancel-{order['orderId']}",
        "transactTime": now_ms,
        "status": "CANCELED",
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: SignedFakeBinance) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query))
        length = int(self.headers.get("Content-Length") or 0)
        if length:  # signed POSTs send their parameters form-encoded in the body
            params.update(parse_qsl(self.rfile.read(length).decode()))
        status, body = self.server.fake.handle_signed(
            method, url.path, params, self.headers.get("X-MBX-APIKEY")
        )
        is_text = isinstance(body, str)
        payload = (body if is_text else json.dumps(body)).encode()
        self.send_response(int(status))
        self.send_header("Content-Type", "text/plain" if is_text else "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log line on stderr."""
