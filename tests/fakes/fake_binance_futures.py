"""A fake Binance USDⓈ-M futures account on 127.0.0.1: the endpoints ccxt's async ``binance`` (4.5.x) calls
for ``fetch_balance`` and ``fetch_positions`` on swap markets, in Binance's response shapes.

* ``GET /fapi/v1/exchangeInfo`` (public): a perpetual per market of the fake (``BTCUSDT`` is
  ``BTC/USDT:USDT``).
* ``GET /fapi/v3/account`` and ``/fapi/v2/account`` (signed): ``fetch_balance`` (ccxt default v3, ``useV2``
  option v2), wallet/margin totals, per-asset balances and per-symbol position margins.
* ``GET /fapi/v3/positionRisk`` (signed): ``fetch_positions`` (ccxt default). Like Binance's v3 it returns
  only symbols with a position, and has no ``leverage`` / ``marginType`` fields.
* ``GET /fapi/v2/positionRisk`` (signed): the older shape (``useV2``), with ``leverage`` and ``marginType``,
  and a row for every symbol (zero amounts included).
* ``GET /fapi/v1/leverageBracket`` (signed): maintenance-margin brackets, which ccxt loads (once) before
  parsing positions.

Signed endpoints need an ``X-MBX-APIKEY`` header equal to ``api_key`` and ``timestamp`` and ``signature``
parameters (any signature is accepted), else they answer Binance's -2014 / -1102 errors; their requests are
recorded in :attr:`FakeBinanceFutures.signed_requests`. ``fail_next`` and ``requests`` come from
:class:`~tests.fakes.fake_binance.FakeBinance`. Wallet balances and positions are set by the test
(:meth:`set_wallet`, :meth:`set_position`); unrealized PnL, notional and margins follow from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from tests.fakes.fake_binance import DEFAULT_MARKETS, Response, _api_error
from tests.fakes.fake_binance_orders import SignedFakeBinance, SignedRequest
from tests.fakes.fake_external import _perpetual_info

SIGNED_PATHS = frozenset(
    {
        "/fapi/v3/account",
        "/fapi/v2/account",
        "/fapi/v3/positionRisk",
        "/fapi/v2/positionRisk",
        "/fapi/v1/leverageBracket",
    }
)
# Binance's default brackets for BTCUSDT (first three), used for every symbol of the fake.
BRACKETS = (
    {
        "bracket": 1,
        "initialLeverage": 125,
        "notionalCap": 50000,
        "notionalFloor": 0,
        "maintMarginRatio": 0.004,
    },
    {
        "bracket": 2,
        "initialLeverage": 100,
        "notionalCap": 600000,
        "notionalFloor": 50000,
        "maintMarginRatio": 0.005,
    },
    {
        "bracket": 3,
        "initialLeverage": 75,
        "notionalCap": 3000000,
        "notionalFloor": 600000,
        "maintMarginRatio": 0.0065,
    },
)


def _s(value: float, places: int = 8) -> str:
    return f"{value:.{places}f}"


@dataclass(slots=True)
class FakePosition:
    """One position of the fake account; ``amount`` is signed (negative = short)."""

    symbol: str
    amount: float
    entry_price: float
    mark_price: float
    leverage: int = 10
    margin_type: Literal["cross", "isolated"] = "cross"
    liquidation_price: float = 0.0
    position_side: str = "BOTH"

    @property
    def notional(self) -> float:
        return self.amount * self.mark_price

    @property
    def unrealized(self) -> float:
        return self.amount * (self.mark_price - self.entry_price)

    @property
    def initial_margin(self) -> float:
        return abs(self.notional) / self.leverage

    @property
    def maint_margin(self) -> float:
        return abs(self.notional) * 0.004

    @property
    def isolated_margin(self) -> float:
        return self.initial_margin + self.unrealized if self.margin_type == "isolated" else 0.0

    @property
    def isolated_wallet(self) -> float:
        return self.initial_margin if self.margin_type == "isolated" else 0.0


class FakeBinanceFutures(SignedFakeBinance):
    """Fake Binance USDⓈ-M account (balances, positions) behind signed endpoints."""

    private_paths = SIGNED_PATHS

    thread_name = "fake-binance-futures"

    def __init__(
        self,
        *,
        now_ms: int,
        api_key: str = "test-key",
        wallet: Mapping[str, float] | None = None,
        markets: Mapping[str, tuple[str, str, float]] = DEFAULT_MARKETS,
    ) -> None:
        super().__init__(now_ms=now_ms, start_ms=now_ms, markets=markets)
        self.api_key = api_key
        self.wallet: dict[str, float] = dict(wallet if wallet is not None else {"USDT": 10_000.0})
        self.positions: dict[tuple[str, str], FakePosition] = {}
        self.signed_requests: list[SignedRequest] = []
        self.routes.update(
            {
                ("GET", "/fapi/v1/exchangeInfo"): self._exchange_info_futures,
                ("GET", "/fapi/v3/account"): lambda _p: (HTTPStatus.OK, self._account(v2=False)),
                ("GET", "/fapi/v2/account"): lambda _p: (HTTPStatus.OK, self._account(v2=True)),
                ("GET", "/fapi/v3/positionRisk"): lambda p: self._position_risk(p, v2=False),
                ("GET", "/fapi/v2/positionRisk"): lambda p: self._position_risk(p, v2=True),
                ("GET", "/fapi/v1/leverageBracket"): self._leverage_bracket,
            }
        )

    # -- scripting -----------------------------------------------------------------------------------

    def set_wallet(self, asset: str, balance: float) -> None:
        """Set the wallet balance (deposits minus withdrawals plus realized PnL) of one margin asset."""
        with self._lock:
            self.wallet[asset] = balance

    def set_position(
        self, symbol: str, amount: float, entry_price: float, mark_price: float, **kw: Any
    ) -> None:
        """Open, replace or (``amount=0``) close the position of ``symbol`` (one-way mode by default)."""
        if symbol not in self.markets:
            raise KeyError(f"{symbol} is not a market of the fake")
        position = FakePosition(symbol, amount, entry_price, mark_price, **kw)
        with self._lock:
            key = (symbol, position.position_side)
            if amount == 0:
                self.positions.pop(key, None)
            else:
                self.positions[key] = position

    def signed_paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.signed_requests]

    # -- HTTP ----------------------------------------------------------------------------------------

    def _exchange_info_futures(self, _params: dict[str, str]) -> Response:
        return HTTPStatus.OK, {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "0"} for a in self.wallet],
            "symbols": [_perpetual_info(s, base, quote) for s, (base, quote, _) in self.markets.items()],
        }

    def _account(self, *, v2: bool) -> dict[str, Any]:
        with self._lock:
            positions = list(self.positions.values())
            wallet = dict(self.wallet)
        assets = []
        for asset, balance in wallet.items():
            mine = [p for p in positions if self.markets[p.symbol][1] == asset]
            upnl = sum(p.unrealized for p in mine)
            initial = sum(p.initial_margin for p in mine)
            maint = sum(p.maint_margin for p in mine)
            available = balance + upnl - initial
            row: dict[str, Any] = {
                "asset": asset,
                "walletBalance": _s(balance),
                "unrealizedProfit": _s(upnl),
                "marginBalance": _s(balance + upnl),
                "maintMargin": _s(maint),
                "initialMargin": _s(initial),
                "positionInitialMargin": _s(initial),
                "openOrderInitialMargin": _s(0),
                "crossWalletBalance": _s(balance),
                "crossUnPnl": _s(upnl),
                "availableBalance": _s(available),
                "maxWithdrawAmount": _s(available),
                "updateTime": self.now_ms,
            }
            if v2:
                row["marginAvailable"] = True
            assets.append(row)
        usdt = next((a for a in assets if a["asset"] == "USDT"), None)

        def total(key: str) -> str:  # single-asset mode: the account totals are those of USDT
            return usdt[key] if usdt is not None else _s(0)

        rows = []
        for p in positions:
            row = {
                "symbol": p.symbol,
                "positionSide": p.position_side,
                "positionAmt": _s(p.amount, 3),
                "unrealizedProfit": _s(p.unrealized),
                "isolatedMargin": _s(p.isolated_margin),
                "notional": _s(p.notional),
                "isolatedWallet": _s(p.isolated_wallet),
                "initialMargin": _s(p.initial_margin),
                "maintMargin": _s(p.maint_margin),
                "updateTime": self.now_ms,
            }
            if v2:
                row |= {
                    "leverage": str(p.leverage),
                    "entryPrice": _s(p.entry_price, 5),
                    "positionInitialMargin": _s(p.initial_margin),
                    "openOrderInitialMargin": "0",
                    "isolated": p.margin_type == "isolated",
                    "breakEvenPrice": _s(p.entry_price, 5),
                    "maxNotional": "5000000",
                    "bidNotional": "0",
                    "askNotional": "0",
                }
            rows.append(row)
        body: dict[str, Any] = {
            "totalInitialMargin": total("initialMargin"),
            "totalMaintMargin": total("maintMargin"),
            "totalWalletBalance": total("walletBalance"),
            "totalUnrealizedProfit": total("unrealizedProfit"),
            "totalMarginBalance": total("marginBalance"),
            "totalPositionInitialMargin": total("positionInitialMargin"),
            "totalOpenOrderInitialMargin": total("openOrderInitialMargin"),
            "totalCrossWalletBalance": total("crossWalletBalance"),
            "totalCrossUnPnl": total("crossUnPnl"),
            "availableBalance": total("availableBalance"),
            "maxWithdrawAmount": total("maxWithdrawAmount"),
            "assets": assets,
            "positions": rows,
        }
        if v2:
            body |= {
                "feeTier": 0,
                "canTrade": True,
                "canDeposit": True,
                "canWithdraw": True,
                "feeBurn": True,
                "tradeGroupId": -1,
                "updateTime": 0,
                "multiAssetsMargin": False,
            }
        return body

    def _position_risk(self, params: dict[str, str], *, v2: bool) -> Response:
        symbol = params.get("symbol")
        if symbol is not None and symbol not in self.markets:
            return _api_error(-1121, "Invalid symbol.")
        with self._lock:
            positions = [p for p in self.positions.values() if symbol in (None, p.symbol)]
        rows = []
        for p in positions:
            row: dict[str, Any] = {
                "symbol": p.symbol,
                "positionSide": p.position_side,
                "positionAmt": _s(p.amount, 3),
                "entryPrice": _s(p.entry_price, 5),
                "breakEvenPrice": _s(p.entry_price, 5),
                "markPrice": _s(p.mark_price),
                "unRealizedProfit": _s(p.unrealized),
                "liquidationPrice": _s(p.liquidation_price) if p.liquidation_price else "0",
                "isolatedMargin": _s(p.isolated_margin),
                "notional": _s(p.notional),
                "isolatedWallet": _s(p.isolated_wallet),
                "updateTime": self.now_ms,
            }
            if v2:
                row |= {
                    "marginType": p.margin_type,
                    "isAutoAddMargin": "false",
                    "leverage": str(p.leverage),
                    "maxNotionalValue": "5000000",
                }
            else:
                row |= {
                    "marginAsset": self.markets[p.symbol][1],
                    "initialMargin": _s(p.initial_margin),
                    "maintMargin": _s(p.maint_margin),
                    "positionInitialMargin": _s(p.initial_margin),
                    "openOrderInitialMargin": "0",
                    "adl": 2,
                    "bidNotional": "0",
                    "askNotional": "0",
                }
            rows.append(row)
        if v2:  # v2 lists every symbol, flat ones with zero amounts
            held = {p.symbol for p in positions}
            for name, (_, _, price) in self.markets.items():
                if name not in held and symbol in (None, name):
                    rows.append(_flat_v2(name, price, self.now_ms))
        return HTTPStatus.OK, rows

    def _leverage_bracket(self, params: dict[str, str]) -> Response:
        symbol = params.get("symbol")
        if symbol is not None and symbol not in self.markets:
            return _api_error(-1121, "Invalid symbol.")
        rows = [
            {"symbol": s, "notionalCoef": 1.0, "brackets": [{**b, "cum": 0.0} for b in BRACKETS]}
            for s in self.markets
            if symbol in (None, s)
        ]
        return HTTPStatus.OK, rows


def _flat_v2(symbol: str, price: float, now_ms: int) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "positionAmt": "0.000",
        "entryPrice": "0.0",
        "breakEvenPrice": "0.0",
        "markPrice": _s(price),
        "unRealizedProfit": "0.00000000",
        "liquidationPrice": "0",
        "leverage": "20",
        "maxNotionalValue": "5000000",
        "marginType": "cross",
        "isolatedMargin": "0.00000000",
        "isAutoAddMargin": "false",
        "positionSide": "BOTH",
        "notional": "0",
        "isolatedWallet": "0",
        "updateTime": 0,
    }
