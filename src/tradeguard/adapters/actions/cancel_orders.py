"""Trip action that cancels an account's open orders on an exchange through ccxt (async).

Each run builds a fresh ``ccxt.async_support`` client (so it works from any event loop), loads the
configured market types, lists the open orders and cancels them, then closes the client. Market loading is
kept to the public market list: boolean ccxt options that load coins and margin pairs with the markets
(Binance's ``fetchCurrencies`` and ``fetchMargins``: four more signed calls needing wallet and margin
permissions) are turned off unless ``config["options"]`` sets them, so they cannot block a cancel.

* **Listing.** With ``symbols``, ``fetch_open_orders(symbol)`` per symbol. Without, one call per market type
  without a symbol (Binance allows it at a higher rate-limit weight; ccxt's warning about that is turned
  off). Exchanges that only list per symbol raise ccxt's ``ArgumentsRequired``: configure ``symbols``.
* **Cancelling.** Per symbol, ``cancel_all_orders(symbol)`` where the exchange supports it (one request,
  and it also catches orders placed after the listing); otherwise, or when that call fails, each order
  with ``cancel_order(id, symbol)``. An order the exchange no longer knows (``OrderNotFound``) is already
  closed, not a failure.

Orders that could not be cancelled make the outcome ``ok=False`` with each order's error, so
:func:`~tradeguard.adapters.actions.base.run_actions` retries: a retry lists again and cancels what is left.
Rejected credentials, unknown symbols and unsupported calls raise a non-retryable
:class:`~tradeguard.adapters.actions.base.ActionError`; other ccxt errors a retryable one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ccxt
import ccxt.async_support

from tradeguard.adapters.actions.base import ActionError, ActionOutcome, TripContext
from tradeguard.adapters.exchange_download import (
    LOADABLE_TYPES,
    brief_error,
    configure_exchange,
    exchange_class,
)
from tradeguard.errors import InputError

log = logging.getLogger(__name__)

# Errors a retry cannot fix: the configuration or the API key is wrong.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    ccxt.AuthenticationError,  # also PermissionDenied, AccountSuspended
    ccxt.BadSymbol,
    ccxt.ArgumentsRequired,
    ccxt.NotSupported,
)

Order = dict[str, Any]

# Boolean ccxt options that make load_markets fetch more than markets (turned off unless configured).
EXTRA_LOADS = ("fetchCurrencies", "fetchMargins")


class CancelOpenOrders:
    """Cancel every open order of one exchange account (or of the given ``symbols`` only).

    ``config`` goes to the ccxt constructor (``password`` for exchanges with a passphrase, ``timeout``,
    ``options``...); ``api_url`` replaces scheme and host of every REST endpoint (a local fake in tests).
    """

    def __init__(
        self,
        exchange_id: str,
        api_key: str,
        secret: str,
        *,
        symbols: Sequence[str] | None = None,
        api_url: str | None = None,
        market_types: Iterable[str] = ("spot",),
        config: Mapping[str, Any] | None = None,
        cancel_all: bool = True,
        name: str | None = None,
    ) -> None:
        self._cls = exchange_class(exchange_id, ccxt.async_support)
        self.exchange_id = exchange_id.strip().lower()
        self.market_types = tuple(dict.fromkeys(market_types))
        unknown = set(self.market_types) - LOADABLE_TYPES.keys()
        if unknown or not self.market_types:
            raise InputError(f"unsupported market type(s) {', '.join(sorted(unknown)) or '(none)'}")
        if not api_key or not secret:
            raise InputError(f"{self.exchange_id}: cancelling orders needs an API key and secret")
        self.symbols = tuple(symbols) if symbols is not None else None
        if self.symbols == ():
            raise InputError("symbols must name at least one market (or be None for all)")
        self.api_url = api_url
        self.cancel_all = cancel_all
        self._config = {"enableRateLimit": True, **(config or {}), "apiKey": api_key, "secret": secret}
        self._name = name or f"cancel_orders:{self.exchange_id}"

    @property
    def name(self) -> str:
        return self._name

    async def run(self, trip: TripContext) -> ActionOutcome:
        exchange = self._cls(dict(self._config))
        try:
            _skip_extra_loads(exchange, self._config.get("options") or {})
            configure_exchange(exchange, self.market_types, self.api_url)
            await exchange.load_markets()
            orders = await self._open_orders(exchange)
            return await self._cancel(exchange, orders)
        except ccxt.BaseError as exc:
            retryable = not isinstance(exc, PERMANENT_ERRORS)
            raise ActionError(f"{self.exchange_id}: {brief_error(exc)}", retryable=retryable) from exc
        except InputError as exc:
            raise ActionError(str(exc), retryable=False) from exc
        finally:
            await exchange.close()

    async def _open_orders(self, exchange: Any) -> list[Order]:
        """Open orders of the configured symbols, or of every market of the configured types."""
        if not exchange.has.get("fetchOpenOrders"):
            raise ActionError(f"{self.exchange_id} cannot list open orders through ccxt", retryable=False)
        if self.symbols is not None:
            pages = [await exchange.fetch_open_orders(symbol) for symbol in self.symbols]
        else:
            _allow_fetch_without_symbol(exchange)
            pages = []
            for market_type in self.market_types:
                params = {"type": market_type} if len(self.market_types) > 1 else {}
                try:
                    pages.append(await exchange.fetch_open_orders(None, None, None, params))
                except ccxt.ArgumentsRequired as exc:
                    raise ActionError(
                        f"{self.exchange_id} lists open orders only per symbol; configure the symbols "
                        f"to cancel ({brief_error(exc)})",
                        retryable=False,
                    ) from exc
        unique = {(o["symbol"], str(o["id"])): o for page in pages for o in page}
        return list(unique.values())

    async def _cancel(self, exchange: Any, orders: list[Order]) -> ActionOutcome:
        by_symbol: dict[str, list[str]] = {}
        for order in orders:
            by_symbol.setdefault(order["symbol"], []).append(str(order["id"]))
        cancelled: dict[str, int] = {}
        closed = 0
        failed: list[str] = []
        for symbol, ids in by_symbol.items():
            done, gone, errors = await self._cancel_symbol(exchange, symbol, ids)
            if done:
                cancelled[symbol] = done
            closed += gone
            failed += errors
        detail = f"cancelled {sum(cancelled.values())} open order(s) on {self.exchange_id}"
        if cancelled:
            detail += " (" + ", ".join(f"{symbol}: {n}" for symbol, n in cancelled.items()) + ")"
        if closed:
            detail += f"; {closed} already closed"
        if not failed:
            return ActionOutcome(self.name, True, detail=detail)
        error = f"could not cancel {len(failed)} of {len(orders)} open order(s): " + "; ".join(failed)
        return ActionOutcome(self.name, False, detail=f"{detail}; {len(failed)} failed", error=error)

    async def _cancel_symbol(self, exchange: Any, symbol: str, ids: list[str]) -> tuple[int, int, list[str]]:
        """Cancel one market's listed orders: (cancelled, already closed, one error per failed order)."""
        if self.cancel_all and exchange.has.get("cancelAllOrders"):
            try:
                result = await exchange.cancel_all_orders(symbol)
            except ccxt.OrderNotFound:
                return 0, len(ids), []  # nothing was left open in this market
            except PERMANENT_ERRORS:
                raise
            except ccxt.BaseError as exc:
                log.warning(
                    "%s: cancel_all_orders(%s) failed: %s; cancelling one by one",
                    self.exchange_id,
                    symbol,
                    brief_error(exc),
                )
            else:
                returned = {str(o["id"]) for o in result if isinstance(o, dict) and o.get("id")}
                return len(returned | set(ids)), 0, []
        results = await asyncio.gather(
            *(exchange.cancel_order(order_id, symbol) for order_id in ids), return_exceptions=True
        )
        done, gone, errors = 0, 0, []
        for order_id, result in zip(ids, results, strict=True):
            if isinstance(result, PERMANENT_ERRORS):
                raise result
            if isinstance(result, ccxt.OrderNotFound):
                gone += 1
            elif isinstance(result, Exception):
                errors.append(f"{order_id} ({symbol}): {brief_error(result)}")
            elif isinstance(result, BaseException):
                raise result
            else:
                done += 1
        return done, gone, errors


def _skip_extra_loads(exchange: Any, configured: Mapping[str, Any]) -> None:
    """Turn off the EXTRA_LOADS options the exchange has as booleans, unless configured explicitly."""
    for option in EXTRA_LOADS:
        if isinstance(exchange.options.get(option), bool) and option not in configured:
            exchange.options[option] = False


def _allow_fetch_without_symbol(exchange: Any) -> None:
    """Acknowledge ccxt's warning that listing open orders without a symbol weighs more."""
    options = exchange.options
    if isinstance(options.get("fetchOpenOrders"), dict):
        options["fetchOpenOrders"] = {**options["fetchOpenOrders"], "warnWithoutSymbol": False}
    options["warnOnFetchOpenOrdersWithoutSymbol"] = False
