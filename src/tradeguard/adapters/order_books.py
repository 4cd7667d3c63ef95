"""Fresh order books for the pre-trade check, through one async ccxt client (``ccxt.pro`` to watch them).

:class:`OrderBookSource` answers ``get(symbol)`` with a :class:`~tradeguard.core.order_book.BookSnapshot` no
older than ``config.max_age_s``, or raises. It keeps the newest book and last trade price of each symbol:

* **watched** (``watch=True`` and the exchange streams books): the first ``get`` of a symbol, or ``start``,
  follows it in the background with ``watch_order_book`` (ccxt keeps the book in sync: snapshot plus diffs)
  and ``watch_ticker`` for the last trade price (on Binance a mini ticker pushed once a second). A stream that
  fails is retried with backoff; meanwhile its data only ages.
* **fetched** when nothing fresh is held: ``fetch_order_book(symbol, fetch_limit)`` and, for the last trade
  price, ``fetch_ticker(symbol)["last"]`` (a light call: weight 2 on Binance, where recent trades cost 25),
  concurrently. A fetched book is reused while fresh.

**Age.** A book is as old as its exchange timestamp, or as the moment it was received (a fetched one: the
moment the request was sent) if that is earlier, so neither a lagging exchange nor a slow answer passes for
fresh. A last trade price is as old as the message or request it came with (the trade itself may be older: it
is still the last one). Ages are measured with the injected ``clock``.

**Failures** are not retried here (a pre-trade check answers now; the caller fails closed in live mode): an
exchange error is an :class:`~tradeguard.errors.ExchangeError`, or a :class:`StaleBookError` when a book is
held but too old and the refresh failed, or when the refreshed data is already too old (the exchange took
longer than the age limit to answer). An unknown symbol is an :class:`~tradeguard.errors.InputError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import ccxt

from tradeguard.adapters.exchange_download import brief_error
from tradeguard.adapters.status import Backoff, SourceStatus
from tradeguard.core.order_book import BookSnapshot, Level, OrderBookConfig, book_age_s
from tradeguard.errors import ExchangeError, InputError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


class StaleBookError(ExchangeError):
    """The newest order book (or last trade price) available is older than the age limit."""


@dataclass(frozen=True, slots=True)
class _Last:
    price: float | None
    at: datetime


@dataclass
class _Symbol:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    book: BookSnapshot | None = None  # the newest book, from either path (its last_trade_price unset)
    last: _Last | None = None
    tasks: tuple[asyncio.Task[None], ...] = ()


class OrderBookSource:
    """Order books of one exchange (``exchange``: an async ccxt client, owned and closed by the caller).

    ``config.levels`` levels a side are kept, and fetched unless ``fetch_limit`` says otherwise (some
    exchanges accept only certain depths). ``watch=False`` only fetches.
    """

    def __init__(
        self,
        exchange: Any,
        config: OrderBookConfig | None = None,
        *,
        clock: Clock = utc_now,
        watch: bool = True,
        fetch_limit: int | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        config = config or OrderBookConfig()
        self._exchange = exchange
        self._levels = config.levels
        self._max_age_s = config.max_age_s
        self._clock = clock
        self._watch = watch and bool(exchange.has.get("watchOrderBook"))
        self._fetch_limit = config.levels if fetch_limit is None else fetch_limit
        self._backoff = backoff or Backoff()
        self._symbols: dict[str, _Symbol] = {}
        self.status = SourceStatus(f"{exchange.id} order books")

    @property
    def watching(self) -> bool:
        """Whether books are followed with WebSocket streams."""
        return self._watch

    async def get(self, symbol: str) -> BookSnapshot:
        """The symbol's book, with its last trade price, no older than ``max_age_s`` (see the module doc)."""
        state = self._state(symbol)
        self._follow(symbol, state)
        async with state.lock:  # one refresh per symbol, however many checks wait for it
            now = self._clock()
            book, last = state.book, state.last
            if book is not None and book_age_s(book, now) > self._max_age_s:
                book = None
            if last is not None and _age_s(last.at, now) > self._max_age_s:
                last = None
            if book is None or last is None:
                book, last = await self._fetch(symbol, state, book, last)
        return replace(book, last_trade_price=last.price)

    def cached(self, symbol: str) -> BookSnapshot | None:
        """The newest book held for the symbol, whatever its age (see ``timestamp``); no exchange call."""
        state = self._symbols.get(symbol)
        if state is None or state.book is None:
            return None
        return replace(state.book, last_trade_price=state.last.price if state.last else None)

    def start(self, symbols: Iterable[str]) -> None:
        """Follow these symbols now rather than from their first ``get`` (from the event loop; no-op without
        watching)."""
        for symbol in symbols:
            self._follow(symbol, self._state(symbol))

    async def close(self) -> None:
        """Stop following every symbol (``get`` then only fetches); the ccxt client stays open."""
        self._watch = False
        tasks = [task for state in self._symbols.values() for task in state.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for state in self._symbols.values():
            state.tasks = ()

    # -- REST -----------------------------------------------------------------------------------------

    async def _fetch(
        self, symbol: str, state: _Symbol, book: BookSnapshot | None, last: _Last | None
    ) -> tuple[BookSnapshot, _Last]:
        """Fetch what is missing (``None``) of the book and last trade price; store and return both."""
        sent = self._clock()
        raw_book, ticker = await asyncio.gather(
            self._exchange.fetch_order_book(symbol, self._fetch_limit) if book is None else _nothing(),
            self._exchange.fetch_ticker(symbol) if last is None else _nothing(),
            return_exceptions=True,
        )
        for result, call in ((raw_book, "order book"), (ticker, "ticker")):
            what = f"{self._exchange.id}: fetching the {symbol} {call}"
            if isinstance(result, ccxt.BadSymbol):
                raise InputError(f"{what}: {brief_error(result)}") from result
            if isinstance(result, ccxt.BaseError):
                self._failed(what, result)
                if call == "order book" and state.book is not None:
                    age = book_age_s(state.book, self._clock())
                    raise StaleBookError(
                        f"{what}: the newest one is {age:.1f}s old (limit {self._max_age_s:g}s) and "
                        f"refreshing it failed: {brief_error(result)}"
                    ) from result
                raise ExchangeError(f"{what}: {brief_error(result)}") from result
            if isinstance(result, BaseException):
                raise result
        if book is None:
            book = state.book = _newer(state.book, _snapshot(symbol, raw_book, sent, self._levels))
        if last is None:
            last = _Last(_price(ticker), sent)
            if state.last is None or state.last.at <= last.at:
                state.last = last
        self.status.succeeded(sent)
        age = _age_s(min(book.timestamp, last.at), self._clock())
        if age > self._max_age_s:
            raise StaleBookError(
                f"{self._exchange.id}: the {symbol} order book and ticker are {age:.1f}s old on arrival "
                f"(limit {self._max_age_s:g}s)"
            )
        return book, last

    # -- WebSocket ------------------------------------------------------------------------------------

    def _state(self, symbol: str) -> _Symbol:
        state = self._symbols.get(symbol)
        if state is None:
            state = self._symbols[symbol] = _Symbol()
        return state

    def _follow(self, symbol: str, state: _Symbol) -> None:
        """Start the symbol's streams unless watching is off or they run (or ended on a bad symbol)."""
        if not self._watch or state.tasks:
            return
        streams: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("order book", lambda: self._watch_book(symbol, state))
        ]
        if self._exchange.has.get("watchTicker"):
            streams.append(("ticker", lambda: self._watch_last(symbol, state)))
        state.tasks = tuple(
            asyncio.create_task(self._stream(symbol, what, step), name=f"{self.status.name} {symbol} {what}")
            for what, step in streams
        )

    async def _stream(self, symbol: str, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run one stream's updates until cancelled; errors are retried with backoff, an unknown symbol
        ends the stream."""
        attempt = 0
        while True:
            try:
                await step()
            except ccxt.BadSymbol as exc:
                self._failed(f"{symbol} {what} stream", exc)
                return
            except Exception as exc:
                delay = self._backoff.delay(attempt)
                self._failed(f"{symbol} {what} stream", exc)
                log.warning(
                    "%s %s %s stream: %s; retrying in %.2fs",
                    self.status.name,
                    symbol,
                    what,
                    brief_error(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                attempt += 1
                continue
            attempt = 0
            self.status.succeeded(self._clock())

    async def _watch_book(self, symbol: str, state: _Symbol) -> None:
        raw = await self._exchange.watch_order_book(symbol)
        state.book = _newer(state.book, _snapshot(symbol, raw, self._clock(), self._levels))

    async def _watch_last(self, symbol: str, state: _Symbol) -> None:
        ticker = await self._exchange.watch_ticker(symbol)
        last = _Last(_price(ticker), self._clock())
        if state.last is None or state.last.at <= last.at:
            state.last = last

    def _failed(self, what: str, exc: BaseException) -> None:
        self.status.failed(self._clock(), f"{what}: {brief_error(exc)}"[:500])


async def _nothing() -> None:
    return None


def _age_s(at: datetime, now: datetime) -> float:
    return (now - at).total_seconds()


def _newer(held: BookSnapshot | None, new: BookSnapshot) -> BookSnapshot:
    return new if held is None or held.timestamp <= new.timestamp else held


def _snapshot(symbol: str, raw: Mapping[str, Any], received: datetime, levels: int) -> BookSnapshot:
    """A ccxt order book as a snapshot of its top ``levels``, timed by the exchange or ``received``."""
    stamp = received
    if raw.get("timestamp") is not None:
        stamp = min(received, datetime.fromtimestamp(raw["timestamp"] / 1000, UTC))
    return BookSnapshot(symbol, _levels(raw["bids"], levels), _levels(raw["asks"], levels), stamp)


def _levels(side: Sequence[Sequence[Any]], levels: int) -> tuple[Level, ...]:
    return tuple((float(row[0]), float(row[1])) for row in side[:levels])


def _price(ticker: Mapping[str, Any]) -> float | None:
    last = ticker.get("last")
    return None if last is None else float(last)
