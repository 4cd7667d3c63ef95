"""Live candles from an exchange through ccxt: history over REST, then new candles over WebSocket.

:class:`CcxtLiveFeed` implements :class:`~tradeguard.adapters.feeds.base.CandleFeed` with one async ccxt
client (``ccxt.pro.<id>``, or ``ccxt.async_support.<id>`` for exchanges ccxt.pro does not stream).

* ``seed`` pages through ``fetch_ohlcv`` (ccxt returns at most ``page_limit`` candles a call).
* ``run`` follows each pair with ``watch_ohlcv`` when the exchange streams candles, and otherwise (or with
  ``use_websocket=False``) polls ``fetch_ohlcv`` every ``poll_interval_s``.

**When a candle is closed.** ccxt's ``watch_ohlcv`` drops Binance's "kline closed" flag, and REST answers
include the candle still forming, so a candle counts as closed once the exchange has shown a newer one, or
once ``close_grace_s`` have passed since its close time by :meth:`CcxtLiveFeed.now`. A candle closed only by
the clock may still lack its final update, so it is delivered only with values from a REST request sent
after its close plus the grace; on a healthy stream the next candle's first update arrives within the grace
and no REST call is needed.

**Nothing lost, nothing twice.** Each pair has a cursor: the open time of the last candle delivered.
Candles at or before it are never delivered again. When a closed candle after it is missing or not final
(after a disconnect, when a candle closed between a REST fill and the subscription, or when the stream went
quiet), it is fetched over REST before anything later is delivered. A candle that REST does not have either
is a real gap: it is logged and skipped, never invented (the same candles are fetched again at most every
``poll_interval_s``). On any error the pair's stream state is discarded (a candle seen before a disconnect
may have missed its final update), the source status records the failure, and the pair retries after
``backoff.delay(attempt)``; the attempt count resets when the stream (or, when polling, REST) works again.
ccxt reconnects silently when a connection dropped while no call was waiting on it, so every new
connection also discards the candles cached from the previous one. A stream silent for ``stream_idle_s``
is not an error; the clock then decides which candles closed, and they are fetched over REST.

``run`` continues from where ``seed`` (or an earlier ``run``) of the same pair and timeframe left off, so
``seed`` then ``run`` misses no candle that closes in between; without either, it starts with the first
candle that closes after it was called. Timeframes must divide one day (1m ... 1d), whose candles open at
multiples of their length since the Unix epoch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pandas as pd

from tradeguard.adapters.candle_files import parse_pair
from tradeguard.adapters.exchange_download import brief_error, configure_exchange, exchange_class, rebase_urls
from tradeguard.adapters.feeds.base import OnCandles
from tradeguard.adapters.status import Backoff, SourceStatus
from tradeguard.core.candles import COLUMNS, validate_frame
from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.errors import ExchangeError, InputError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
Row = list[Any]

DAY_S = 86_400


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass
class _Cursor:
    """Delivery state of one pair and timeframe.

    A candle is *closed* once a newer one was seen or the clock passed its close plus the grace, and
    *final* (safe to deliver) once a newer one was seen or its values came from a REST request sent after
    its close plus the grace: a stream update of a candle closed only by the clock may not be its last.
    """

    step_ms: int
    grace_ms: int
    last_ms: int  # open time of the last candle delivered (or known to the consumer)
    newest_ms: int | None = None  # open time of the newest candle the exchange has shown
    pending: dict[int, Row] = field(default_factory=dict)  # candles after last_ms, by open time
    settled: set[int] = field(default_factory=set)  # pending candles with values fetched after their close
    filled_from: int | None = None  # next_ms of the last REST fill ...
    refill_at: float = 0.0  # ... and the loop time before which the same candles are not fetched again
    connection: int | None = None  # the WebSocket connection the pending stream candles came from

    @property
    def next_ms(self) -> int:
        return self.last_ms + self.step_ms

    def merge(self, rows: Iterable[Sequence[Any]], fetched_ms: int | None = None) -> None:
        """Take candles from the stream, or from a REST request sent at ``fetched_ms``.

        A later update replaces an earlier one, except that the stream never replaces settled REST values.
        """
        for row in rows:
            opened = int(row[0])
            if self.newest_ms is None or opened > self.newest_ms:
                self.newest_ms = opened
            if opened <= self.last_ms or (fetched_ms is None and opened in self.settled):
                continue
            self.pending[opened] = [opened, *row[1:6]]
            if fetched_ms is not None and opened + self.step_ms + self.grace_ms <= fetched_ms:
                self.settled.add(opened)

    def is_closed(self, open_ms: int, now_ms: int) -> bool:
        newer_seen = self.newest_ms is not None and open_ms < self.newest_ms
        return newer_seen or open_ms + self.step_ms + self.grace_ms <= now_ms

    def is_final(self, open_ms: int) -> bool:
        newer_seen = self.newest_ms is not None and open_ms < self.newest_ms
        return open_ms in self.pending and (newer_seen or open_ms in self.settled)

    def needs_rest(self, now_ms: int) -> bool:
        """True when a closed candle from the next one on is missing or not final."""
        opened = self.next_ms
        while self.is_closed(opened, now_ms):
            if not self.is_final(opened):
                return True
            opened += self.step_ms
        return False

    def take_final(self) -> list[Row]:
        """Remove and return the final pending candles, oldest first, and advance the cursor past them."""
        ready = sorted(t for t in self.pending if self.is_final(t))
        if not ready:
            return []
        rows = [self.pending.pop(t) for t in ready]
        self.settled.difference_update(ready)
        self.last_ms = ready[-1]
        return rows

    def forget(self) -> None:
        """Discard candles received but not delivered (their latest update may be missing)."""
        self.pending.clear()
        self.settled.clear()
        self.filled_from = None
        self.connection = None


class CcxtLiveFeed:
    """Closed candles of an exchange through ccxt: REST seed and pagination, WebSocket follow, REST polling.

    ``api_url`` (``http://host:port``) and ``ws_url`` (``ws://host:port``) replace scheme and host of the
    exchange's REST and WebSocket endpoints (paths are kept), e.g. to talk to a local fake. ``config`` is
    passed to the ccxt constructor (``timeout``, ``enableRateLimit``, ``options``...). ``market_types``
    limits the markets ccxt loads (``spot``, ``swap``, ``future``). ``clock`` and ``sleep`` replace the
    wall clock and ``asyncio.sleep`` (backoff and polling waits).
    """

    synthetic = False

    def __init__(
        self,
        exchange_id: str,
        *,
        api_url: str | None = None,
        ws_url: str | None = None,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        backoff: Backoff | None = None,
        poll_interval_s: float = 10.0,
        use_websocket: bool = True,
        close_grace_s: float = 2.0,
        stream_idle_s: float = 30.0,
        page_limit: int = 1000,
        seed_attempts: int = 3,
        market_types: Iterable[str] = ("spot",),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if poll_interval_s <= 0 or stream_idle_s <= 0 or close_grace_s < 0:
            raise InputError("poll_interval_s and stream_idle_s must be positive, close_grace_s not negative")
        if page_limit < 1 or seed_attempts < 1:
            raise InputError("page_limit and seed_attempts must be at least 1")
        self._exchange = _make_client(exchange_id, market_types, api_url, ws_url, config)
        self.name: str = self._exchange.id
        self.status = SourceStatus(self.name)
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff or Backoff()
        self._poll_interval_s = poll_interval_s
        self._grace_ms = round(close_grace_s * 1000)
        self._stream_idle_s = stream_idle_s
        self._page_limit = page_limit
        self._seed_attempts = seed_attempts
        self._delivered: dict[tuple[str, str], int] = {}
        self.streaming: bool = use_websocket and bool(self._exchange.has.get("watchOHLCV"))
        self._connections = 0  # WebSocket connections opened so far
        if self.streaming:
            self._hook_connections()

    @property
    def exchange(self) -> Any:
        """The underlying async ccxt client."""
        return self._exchange

    def now(self) -> datetime:
        return self._clock()

    # -- CandleFeed -----------------------------------------------------------------------------------

    async def seed(self, pair: str, timeframe: str, limit: int) -> pd.DataFrame:
        """The closed candles of the last ``limit`` periods (fewer where the exchange has gaps), oldest first.

        Temporary network errors are retried ``seed_attempts`` times; then ExchangeError. An unknown pair or
        timeframe is an InputError.
        """
        pair = parse_pair(pair)
        step_ms = self._step_ms(timeframe)
        if limit < 1:
            raise InputError(f"seed limit must be at least 1, got {limit}")
        now_ms = self._now_ms()
        since = now_ms // step_ms * step_ms - limit * step_ms
        cursor = _Cursor(step_ms, self._grace_ms, last_ms=since - step_ms)
        what = f"{self.name}: fetching {timeframe} candles of {pair}"
        for attempt in range(self._seed_attempts):
            try:
                fetched_ms = self._now_ms()
                cursor.merge(await self._fetch_since(pair, timeframe, since), fetched_ms)
                break
            except ccxt.BadSymbol as exc:
                raise InputError(f"{what}: {brief_error(exc)}") from exc
            except ccxt.NetworkError as exc:
                self._failed(what, exc)
                if attempt + 1 >= self._seed_attempts:
                    raise ExchangeError(f"{what}: still failing after {attempt + 1} attempts") from exc
                await self._sleep(self._backoff.delay(attempt))
            except ccxt.BaseError as exc:
                self._failed(what, exc)
                raise ExchangeError(f"{what}: {brief_error(exc)}") from exc
        self.status.succeeded(self.now())
        rows = cursor.take_final()[-limit:]
        if rows:
            key = (pair, timeframe)
            self._delivered[key] = max(self._delivered.get(key, rows[-1][0]), rows[-1][0])
        return _frame(rows)

    async def run(self, pairs: list[str], timeframe: str, on_candles: OnCandles) -> None:
        """Deliver newly closed candles of ``pairs`` until cancelled, one task per pair.

        Exchange errors are retried forever with backoff. An unknown pair raises InputError, and an
        exception from ``on_candles`` propagates (the candles passed to it count as delivered); either
        ends every pair's task.
        """
        step_ms = self._step_ms(timeframe)
        wanted = list(dict.fromkeys(parse_pair(p) for p in pairs))
        if not wanted:
            raise InputError("run needs at least one pair")
        follow = self._follow_stream if self.streaming else self._poll
        tasks = [
            asyncio.create_task(follow(pair, timeframe, step_ms, on_candles), name=f"{self.name} {pair}")
            for pair in wanted
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Close the ccxt client (its HTTP session and WebSocket connections)."""
        await self._exchange.close()

    # -- following ------------------------------------------------------------------------------------

    async def _follow_stream(self, pair: str, timeframe: str, step_ms: int, on_candles: OnCandles) -> None:
        cursor = self._cursor(pair, timeframe, step_ms)
        attempt = 0
        while True:
            try:
                if self._needs_fill(cursor):
                    await self._fill(pair, timeframe, cursor)
                else:
                    rows = await self._watch(pair, timeframe, cursor)
                    if rows is None:  # quiet stream: the clock may have closed candles it did not show
                        await self._deliver(pair, timeframe, cursor, on_candles)
                        continue
                    cursor.merge(rows)
                    attempt = 0  # the stream works again (a REST success does not say so)
            except ccxt.BadSymbol as exc:
                raise InputError(f"{self.name}: {pair}: {brief_error(exc)}") from exc
            except Exception as exc:
                cursor.forget()
                self._drop_stream_cache(pair, timeframe)
                await self._retry_later(f"{pair} {timeframe} stream", exc, attempt)
                attempt += 1
                continue
            self.status.succeeded(self.now())
            await self._deliver(pair, timeframe, cursor, on_candles)

    async def _poll(self, pair: str, timeframe: str, step_ms: int, on_candles: OnCandles) -> None:
        cursor = self._cursor(pair, timeframe, step_ms)
        attempt = 0
        while True:
            try:
                await self._fill(pair, timeframe, cursor)
            except ccxt.BadSymbol as exc:
                raise InputError(f"{self.name}: {pair}: {brief_error(exc)}") from exc
            except Exception as exc:
                cursor.forget()
                await self._retry_later(f"{pair} {timeframe} poll", exc, attempt)
                attempt += 1
                continue
            attempt = 0
            self.status.succeeded(self.now())
            await self._deliver(pair, timeframe, cursor, on_candles)
            await self._sleep(self._poll_interval_s)

    def _cursor(self, pair: str, timeframe: str, step_ms: int) -> _Cursor:
        last = self._delivered.get((pair, timeframe))
        if last is None:  # the candle before the one forming now counts as known
            last = self._now_ms() // step_ms * step_ms - step_ms
        return _Cursor(step_ms, self._grace_ms, last_ms=last)

    def _needs_fill(self, cursor: _Cursor) -> bool:
        """Whether to fetch over REST now: candles are missing or not final, and were not just fetched.

        The same candles are fetched again only after ``poll_interval_s``: a candle REST does not have is a
        gap (or REST lags behind the stream).
        """
        if not cursor.needs_rest(self._now_ms()):
            return False
        refetch = cursor.filled_from == cursor.next_ms
        return not refetch or asyncio.get_running_loop().time() >= cursor.refill_at

    async def _fill(self, pair: str, timeframe: str, cursor: _Cursor) -> None:
        start, fetched_ms = cursor.next_ms, self._now_ms()
        cursor.merge(await self._fetch_since(pair, timeframe, start), fetched_ms)
        cursor.filled_from = start
        cursor.refill_at = asyncio.get_running_loop().time() + self._poll_interval_s

    async def _watch(self, pair: str, timeframe: str, cursor: _Cursor) -> list[Row] | None:
        """Wait for a stream update; return every cached candle after the cursor (None: idle timeout).

        ccxt keeps the stream's candles in ``exchange.ohlcvs[symbol][timeframe]`` (in arrival order) and
        updates them in place; its return value holds only the rows it counts as updated since the previous
        call, so the cache is read instead. If the connection changed since the cursor's last update (ccxt
        reconnects silently when the drop happened while nobody was waiting), the cursor's undelivered
        candles are discarded: a candle that closed in between missed its final update.
        """
        try:
            await asyncio.wait_for(self._exchange.watch_ohlcv(pair, timeframe), self._stream_idle_s)
        except TimeoutError:
            log.debug("%s %s %s: no stream update for %.0fs", self.name, pair, timeframe, self._stream_idle_s)
            return None
        if cursor.connection is not None and cursor.connection != self._connections:
            log.info("%s %s %s: stream reconnected; refetching what it missed", self.name, pair, timeframe)
            cursor.forget()
        cursor.connection = self._connections
        ohlcvs = self._exchange.ohlcvs if isinstance(self._exchange.ohlcvs, dict) else {}
        cache = ohlcvs.get(pair, {}).get(timeframe) or []
        return [list(row) for row in cache if row[0] > cursor.last_ms]

    def _hook_connections(self) -> None:
        """Count WebSocket connections and forget ccxt's cached candles whenever one opens.

        ``on_connected`` is ccxt's hook for user code; it runs before the new connection's first message,
        so afterwards the cache holds only candles sent on the current connection.
        """
        exchange = self._exchange
        ccxt_on_connected = exchange.on_connected

        def on_connected(client: Any, message: Any = None) -> None:
            ccxt_on_connected(client, message)
            self._connections += 1
            if isinstance(exchange.ohlcvs, dict):
                exchange.ohlcvs.clear()

        exchange.on_connected = on_connected

    def _drop_stream_cache(self, pair: str, timeframe: str) -> None:
        """Forget ccxt's cached stream candles, so nothing seen before an error is taken as current."""
        cached = self._exchange.ohlcvs.get(pair) if isinstance(self._exchange.ohlcvs, dict) else None
        if isinstance(cached, dict):
            cached.pop(timeframe, None)

    async def _deliver(self, pair: str, timeframe: str, cursor: _Cursor, on_candles: OnCandles) -> None:
        if self._needs_fill(cursor):  # fetch what is missing before delivering anything after it
            return
        before = cursor.last_ms
        rows = cursor.take_final()
        if not rows:
            return
        missing = (rows[-1][0] - before) // cursor.step_ms - len(rows)
        if missing:
            log.warning(
                "%s %s %s: the exchange has no candle for %d period(s) between %s and %s",
                self.name,
                pair,
                timeframe,
                missing,
                _iso(before),
                _iso(rows[-1][0]),
            )
        self._delivered[(pair, timeframe)] = cursor.last_ms
        await on_candles(pair, timeframe, _frame(rows))

    async def _retry_later(self, what: str, exc: Exception, attempt: int) -> None:
        delay = self._backoff.delay(attempt)
        self._failed(f"{self.name} {what}", exc)
        log.warning("%s %s: %s; retrying in %.2fs", self.name, what, brief_error(exc), delay)
        await self._sleep(delay)

    # -- REST -----------------------------------------------------------------------------------------

    async def _fetch_since(self, pair: str, timeframe: str, since_ms: int) -> list[Row]:
        """Candles opening at or after ``since_ms``, page by page, including the one forming if served."""
        step_ms = self._step_ms(timeframe)
        rows: list[Row] = []
        since = since_ms
        while True:
            page = await self._exchange.fetch_ohlcv(pair, timeframe, since=since, limit=self._page_limit)
            log.debug("%s %s %s: %d candles from %s", self.name, pair, timeframe, len(page), _iso(since))
            if not page:
                break
            rows.extend(page)
            last = int(page[-1][0])
            if last < since:
                log.warning("%s %s: candles before %s returned; stopping", self.name, pair, _iso(since))
                break
            since = last + step_ms
            if since + step_ms > self._now_ms():  # no further closed candle can exist
                break
        return rows

    # -- helpers --------------------------------------------------------------------------------------

    def _step_ms(self, timeframe: str) -> int:
        timeframes = self._exchange.timeframes
        if timeframes and timeframe not in timeframes:
            raise InputError(f"{self.name} has no {timeframe} candles; it offers {', '.join(timeframes)}")
        seconds = timeframe_seconds(timeframe)
        if DAY_S % seconds:
            raise InputError(f"live feeds need a timeframe that divides one day (1m ... 1d), not {timeframe}")
        return seconds * 1000

    def _now_ms(self) -> int:
        return int(self._clock().timestamp() * 1000)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.status.failed(self.now(), f"{what}: {brief_error(exc)}"[:500])


def _frame(rows: Sequence[Row]) -> pd.DataFrame:
    frame = pd.DataFrame([row[: len(COLUMNS)] for row in rows], columns=COLUMNS)
    frame["date"] = pd.to_datetime(frame["date"].astype("int64"), unit="ms", utc=True)
    return validate_frame(frame)


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


def _make_client(
    exchange_id: str,
    market_types: Iterable[str],
    api_url: str | None,
    ws_url: str | None,
    config: Mapping[str, Any] | None,
) -> Any:
    """Build the async ccxt client: ccxt.pro when it supports the exchange, else ccxt.async_support."""
    namespace = ccxt.pro if exchange_id.strip().lower() in ccxt.pro.exchanges else ccxt.async_support
    exchange = exchange_class(exchange_id, namespace)({"enableRateLimit": True, **(config or {})})
    configure_exchange(exchange, market_types, api_url)
    if ws_url is not None:
        api = exchange.urls.get("api")
        if not (isinstance(api, dict) and "ws" in api):
            raise InputError(f"{exchange_id} has no WebSocket URLs to replace")
        exchange.urls["api"] = {**api, "ws": rebase_urls(api["ws"], ws_url, ("ws", "wss"))}
    return exchange
