"""Pull mode: poll one exchange account with read-only API keys through ccxt (async) and emit guard events.

Each poll calls ``fetch_balance`` and, when swap/future markets are configured and the exchange has it,
``fetch_positions``, and turns the answers into up to three :class:`~tradeguard.core.events.Event`\\ s
sharing one timestamp (the poll time), with ``bot = "poller"``:

* ``balance``: ccxt's ``total`` / ``free`` / ``used`` per currency (currencies without a total dropped).
* ``equity``: the account value in the settle currency ``currency`` (default ``USDT``), *including*
  unrealized PnL. It is the exchange's own account-level margin balance when the balance ``info`` carries
  one (Binance USDⓈ-M ``totalMarginBalance`` = wallet balance + unrealized PnL; in Binance's multi-assets
  mode that total is in USD across all margin assets), else ccxt's ``total[currency]`` (for Binance
  futures ccxt reports each asset's ``marginBalance`` there, which includes unrealized PnL; on exchanges
  whose ``total`` is the wallet balance only, the unrealized PnL is not included). No equity event is sent
  when neither is available. A negative value (an account in deficit) is reported as 0.
* ``positions``: ccxt unified positions with a non-zero size only, restricted to the fields of
  :class:`~tradeguard.core.events.Position`. When the exchange does not report ``leverage`` (Binance's v3
  ``positionRisk``), it is derived as ``|notional| / positionInitialMargin`` from ``info``, rounded to an
  integer (Binance leverage is an integer). Values the event model cannot hold (a zero or negative price)
  are dropped to ``None``; a position without a side is skipped with a warning.

Event ids are ``poll:{exchange}:{type}:{ts_ms}``: deterministic per poll, so storing the same poll twice is
idempotent (the event log keys events by ``(account, id)``).

:meth:`ExchangePoller.run` polls forever every ``interval_s``; on any error it logs, records it in
:attr:`ExchangePoller.status` and retries after ``backoff`` (attempt-numbered, reset by a success). An error
raised by the ``on_events`` callback is logged and does not stop the loop either. Cancelling the task stops
it cleanly; call :meth:`ExchangePoller.close` (or use ``async with``) to release the HTTP session.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import ccxt.async_support

from tradeguard.adapters.actions.cancel_orders import EXTRA_LOADS
from tradeguard.adapters.exchange_download import (
    LOADABLE_TYPES,
    brief_error,
    configure_exchange,
    exchange_class,
)
from tradeguard.adapters.status import Backoff, SourceStatus
from tradeguard.core.events import Event, Position
from tradeguard.errors import InputError

log = logging.getLogger(__name__)

BOT = "poller"
DERIVATIVE_TYPES = frozenset({"swap", "future"})
# Account-level margin balance (wallet + unrealized PnL) in the balance `info`, by exchange convention.
EQUITY_INFO_KEYS = ("totalMarginBalance",)
POSITION_FIELDS = tuple(Position.model_fields)
_POSITIVE = ("entryPrice", "markPrice", "leverage", "contractSize")
_NON_NEGATIVE = ("initialMargin", "collateral", "liquidationPrice")


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


OnEvents = Callable[[list[Event]], Awaitable[None]]


_QUERY = re.compile(r"\?\S*")


def _error_text(exc: BaseException) -> str:
    """One-line error without URL query strings (signed requests carry timestamp and signature there)."""
    text = brief_error(exc) if isinstance(exc, Exception) else type(exc).__name__
    return _QUERY.sub("", text)


def _number(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


class ExchangePoller:
    """Poll one account of one exchange (read-only keys) and turn its state into guard events.

    ``config`` goes to the ccxt constructor (``timeout``, ``options``...); ``api_url`` rebases every REST
    endpoint (a local fake in tests). ``market_types`` selects the markets loaded and the wallet whose
    balance is read (the first type); positions are fetched when it includes ``swap`` or ``future``.
    """

    def __init__(
        self,
        account: str,
        exchange_id: str,
        api_key: str,
        secret: str,
        *,
        password: str | None = None,
        market_types: Iterable[str] = ("swap",),
        api_url: str | None = None,
        interval_s: float = 15.0,
        currency: str = "USDT",
        config: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff: Backoff = Backoff(base_s=1.0, cap_s=60.0),  # noqa: B008 - frozen dataclass
    ) -> None:
        cls = exchange_class(exchange_id, ccxt.async_support)
        self.account = account
        self.exchange_id = exchange_id.strip().lower()
        self.market_types = tuple(dict.fromkeys(market_types))
        unknown = set(self.market_types) - LOADABLE_TYPES.keys()
        if unknown or not self.market_types:
            raise InputError(f"unsupported market type(s) {', '.join(sorted(unknown)) or '(none)'}")
        if not api_key or not secret:
            raise InputError(f"{self.exchange_id}: polling account {account!r} needs an API key and secret")
        if interval_s <= 0:
            raise InputError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.currency = currency
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff
        self.status = SourceStatus(f"poll:{account}:{self.exchange_id}")
        settings: dict[str, Any] = {
            "enableRateLimit": True,
            **(config or {}),
            "apiKey": api_key,
            "secret": secret,
        }
        if password is not None:
            settings["password"] = password
        configured_options = settings.get("options") or {}
        self.exchange: Any = cls(settings)
        for option in EXTRA_LOADS:  # coins/margin pairs need wallet permissions; markets are enough here
            if isinstance(self.exchange.options.get(option), bool) and option not in configured_options:
                self.exchange.options[option] = False
        configure_exchange(self.exchange, self.market_types, api_url)
        # Balances and positions are read from the linear (stablecoin-settled) wallet, ccxt's default
        # sub-type: inverse (coin-margined) markets are not loaded.
        fetch_markets = self.exchange.options.get("fetchMarkets")
        if isinstance(fetch_markets, dict) and isinstance(fetch_markets.get("types"), list):
            types = [t for t in fetch_markets["types"] if t != "inverse"]
            if types:
                self.exchange.options["fetchMarkets"] = {**fetch_markets, "types": types}
        self._wants_positions = bool(DERIVATIVE_TYPES & set(self.market_types))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close ccxt's HTTP session."""
        await self.exchange.close()

    # -- one poll ------------------------------------------------------------------------------------

    async def poll_once(self) -> list[Event]:
        """Fetch balance (and positions) once; return the events and record success or failure in status.

        Exchange errors propagate (after being recorded); :meth:`run` is the retrying loop.
        """
        ts = self.clock()
        try:
            params = {"type": self.market_types[0]} if len(self.market_types) > 1 else {}
            balance = await self.exchange.fetch_balance(params)
            positions: list[dict[str, Any]] | None = None
            if self._wants_positions and self.exchange.has.get("fetchPositions"):
                positions = await self.exchange.fetch_positions()
            events = self._events(ts, balance, positions)
        except Exception as exc:
            self.status.failed(self.clock(), _error_text(exc))
            raise
        self.status.succeeded(self.clock())
        return events

    def _events(
        self, ts: datetime, balance: Mapping[str, Any], positions: list[dict[str, Any]] | None
    ) -> list[Event]:
        ts_ms = int(ts.timestamp() * 1000)

        def event(kind: str, payload: dict[str, Any]) -> Event:
            return Event.model_validate(
                {
                    "id": f"poll:{self.exchange_id}:{kind}:{ts_ms}",
                    "type": kind,
                    "account": self.account,
                    "exchange": self.exchange_id,
                    "bot": BOT,
                    "ts": ts,
                    "payload": payload,
                }
            )

        events = [event("balance", _balance_payload(balance))]
        equity = self.equity(balance)
        if equity is None:
            log.warning("%s: no %s balance to report equity from", self.status.name, self.currency)
        else:
            events.append(event("equity", {"total_equity": equity, "currency": self.currency}))
        if positions is not None:
            events.append(event("positions", {"positions": self._positions(positions)}))
        return events

    def equity(self, balance: Mapping[str, Any]) -> float | None:
        """Account equity incl. unrealized PnL (see the module docstring), or None if not reported."""
        info = balance.get("info")
        value = None
        if isinstance(info, Mapping):
            value = next((v for k in EQUITY_INFO_KEYS if (v := _number(info.get(k))) is not None), None)
        if value is None:
            total = balance.get("total")
            value = _number(total.get(self.currency)) if isinstance(total, Mapping) else None
        if value is None:
            return None
        if value < 0:
            log.warning("%s: negative equity %s reported as 0", self.status.name, value)
        return max(value, 0.0)

    def _positions(self, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for position in raw:
            contracts = _number(position.get("contracts"))
            if not contracts:
                continue
            if position.get("side") not in ("long", "short"):
                log.warning(
                    "%s: position %s without a side skipped", self.status.name, position.get("symbol")
                )
                continue
            fields: dict[str, Any] = {
                k: position.get(k) for k in POSITION_FIELDS if position.get(k) is not None
            }
            fields["contracts"] = abs(contracts)
            for key in (*_POSITIVE, *_NON_NEGATIVE, "notional", "unrealizedPnl"):
                if key in fields and (number := _number(fields[key])) is not None:
                    fields[key] = number
                elif key in fields:
                    del fields[key]
            for key in _POSITIVE:
                if key in fields and fields[key] <= 0:
                    del fields[key]
            for key in _NON_NEGATIVE:
                if key in fields and fields[key] < 0:
                    del fields[key]
            if fields.get("marginMode") not in ("isolated", "cross"):
                fields.pop("marginMode", None)
            if "leverage" not in fields and (leverage := _derived_leverage(position)) is not None:
                fields["leverage"] = leverage
            kept.append(fields)
        return kept

    # -- the loop ------------------------------------------------------------------------------------

    async def run(self, on_events: OnEvents) -> None:
        """Poll every ``interval_s`` forever, passing each poll's events to ``on_events``.

        Errors are logged and recorded in :attr:`status`, then retried after the backoff delay; the loop
        only ends when its task is cancelled.
        """
        attempt = 0
        while True:
            try:
                events = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "%s: poll failed (%d in a row): %s; retrying in %.1f s",
                    self.status.name,
                    self.status.consecutive_errors,
                    _error_text(exc),
                    delay,
                )
                await self.sleep(delay)
                continue
            attempt = 0
            try:
                await on_events(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: handling %d polled event(s) failed", self.status.name, len(events))
            await self.sleep(self.interval_s)


def _balance_payload(balance: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """ccxt's total/free/used, restricted to currencies with a numeric total."""
    raw_total = balance.get("total") if isinstance(balance.get("total"), Mapping) else {}
    total = {c: v for c, raw in raw_total.items() if (v := _number(raw)) is not None}
    payload: dict[str, dict[str, float]] = {"total": total}
    for key in ("free", "used"):
        part = balance.get(key)
        if isinstance(part, Mapping):
            payload[key] = {c: v for c, raw in part.items() if c in total and (v := _number(raw)) is not None}
    return payload


def _derived_leverage(position: Mapping[str, Any]) -> float | None:
    """|notional| / position initial margin from the raw ``info`` (Binance v3 positionRisk), rounded."""
    info = position.get("info")
    if not isinstance(info, Mapping):
        return None
    margin = _number(info.get("positionInitialMargin")) or _number(info.get("initialMargin"))
    notional = _number(position.get("notional")) or _number(info.get("notional"))
    if not margin or not notional or margin <= 0:
        return None
    leverage = round(abs(notional) / margin)
    return float(leverage) if leverage > 0 else None
