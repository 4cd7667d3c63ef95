"""Download closed OHLCV candles from an exchange through ccxt into Freqtrade's data directory.

Pagination asks for ``limit`` candles from ``since``, then from just after the last candle returned, until
the page is empty, makes no progress, or reaches ``now``. The candle still forming at ``now`` is dropped.
Temporary ccxt errors (network, rate limit, exchange unavailable, timeout) are retried with exponential
backoff; every other ccxt error becomes an :class:`~tradeguard.errors.InputError` (unknown symbol) or an
:class:`~tradeguard.errors.ExchangeError`. Gaps in the exchange data are reported, never filled.
"""

from __future__ import annotations

import difflib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import ccxt
import pandas as pd

from tradeguard.adapters.candle_files import (
    FORMATS,
    candle_path,
    is_futures,
    parse_pair,
    read_candle_file,
    write_candles,
)
from tradeguard.core.candles import COLUMNS, Gap, find_gaps, validate_frame
from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.errors import ExchangeError, InputError

log = logging.getLogger(__name__)

T = TypeVar("T")

# RateLimitExceeded, DDoSProtection (HTTP 418/429), ExchangeNotAvailable (5xx) and RequestTimeout
# are all ccxt.NetworkError subclasses.
TEMPORARY_ERRORS: tuple[type[Exception], ...] = (ccxt.NetworkError,)

# Names under which exchanges list market types in ccxt's options["fetchMarkets"]["types"]
# (binance/bybit: spot, linear, inverse; okx: spot, swap, future), by the ccxt market type of a pair.
LOADABLE_TYPES = {
    "spot": {"spot"},
    "swap": {"swap", "linear", "inverse"},
    "future": {"future", "linear", "inverse"},
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently temporary exchange errors are retried (delays double each time)."""

    attempts: int = 5
    backoff_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What one pair's download fetched and what its file now holds."""

    pair: str
    fetched: int
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    path: Path | None
    gaps: tuple[Gap, ...]


def market_type(pair: str) -> str:
    """ccxt market type: ``BTC/USDT`` spot, ``BTC/USDT:USDT`` swap, ``BTC/USDT:USDT-250328`` future."""
    if not is_futures(pair):
        return "spot"
    return "future" if "-" in pair.split(":", 1)[1] else "swap"


def exchange_class(exchange_id: str, namespace: Any = ccxt) -> type:
    """The ccxt class of an exchange id in `namespace` (ccxt, ccxt.async_support, ccxt.pro)."""
    exchange_id = exchange_id.strip().lower()
    if exchange_id not in namespace.exchanges:
        close = difflib.get_close_matches(exchange_id, ccxt.exchanges, n=3, cutoff=0.8)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"{exchange_id!r} is not a ccxt exchange id{hint}")
    return getattr(namespace, exchange_id)


def configure_exchange(exchange: Any, market_types: Iterable[str], api_url: str | None = None) -> None:
    """Load only the market types needed, and optionally rebase every REST URL (sync or async client)."""
    wanted = set(market_types)
    unknown = wanted - LOADABLE_TYPES.keys()
    if unknown or not wanted:
        raise InputError(f"unsupported market type(s) {', '.join(sorted(unknown)) or '(none)'}")
    fetch_markets = exchange.options.get("fetchMarkets")
    if isinstance(fetch_markets, dict) and isinstance(fetch_markets.get("types"), list):
        names = set().union(*(LOADABLE_TYPES[t] for t in wanted))
        types = [t for t in fetch_markets["types"] if t in names]
        if types:
            exchange.options["fetchMarkets"] = {**fetch_markets, "types": types}
    if len(wanted) == 1:
        exchange.options["defaultType"] = next(iter(wanted))
    if api_url is not None:
        api = exchange.urls["api"]
        if isinstance(api, dict) and "ws" in api:
            exchange.urls["api"] = {
                **rebase_urls({k: v for k, v in api.items() if k != "ws"}, api_url),
                "ws": api["ws"],
            }
        else:
            exchange.urls["api"] = rebase_urls(api, api_url)


def make_exchange(
    exchange_id: str,
    *,
    market_types: Iterable[str] = ("spot",),
    api_url: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> ccxt.Exchange:
    """Build a sync ccxt client that loads only the market types needed.

    ``api_url`` replaces scheme and host of every API endpoint (paths are kept), e.g. to use a local mock.
    ``config`` is passed to the ccxt constructor (``timeout``, ``enableRateLimit``, ``options``, ...).
    """
    cls = exchange_class(exchange_id)
    exchange = cls({"enableRateLimit": True, **(config or {})})
    configure_exchange(exchange, market_types, api_url)
    return exchange


def check_market(
    exchange: ccxt.Exchange, pair: str, timeframe: str, retry: RetryPolicy = DEFAULT_RETRY
) -> None:
    """Raise InputError unless the exchange lists ``pair`` and serves OHLCV in ``timeframe``."""
    if not exchange.has.get("fetchOHLCV"):
        raise InputError(f"{exchange.id} does not provide OHLCV candles through ccxt")
    if exchange.timeframes and timeframe not in exchange.timeframes:
        raise InputError(
            f"{exchange.id} has no {timeframe} candles; it offers {', '.join(exchange.timeframes)}"
        )
    markets = _call(retry, exchange.load_markets, f"{exchange.id}: loading markets")
    if pair not in markets:
        close = difflib.get_close_matches(pair, list(markets), n=3)
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise InputError(f"{pair} is not listed on {exchange.id} ({market_type(pair)} markets){hint}")


def download_pair(
    exchange: ccxt.Exchange,
    pair: str,
    timeframe: str,
    since_ms: int,
    now_ms: int,
    *,
    limit: int = 1000,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> pd.DataFrame:
    """Closed candles opening in ``[since_ms floored to the timeframe, now_ms)``, sorted and unique."""
    pair = parse_pair(pair)
    check_market(exchange, pair, timeframe, retry)
    step = timeframe_seconds(timeframe) * 1000
    start = since_ms - since_ms % step
    since = start
    rows: list[list[Any]] = []
    while since + step <= now_ms:
        fetch = functools.partial(exchange.fetch_ohlcv, pair, timeframe, since=since, limit=limit)
        page = _call(retry, fetch, f"{exchange.id}: fetching {timeframe} candles of {pair}")
        log.info("%s %s: %d candles from %s", pair, timeframe, len(page), pd.Timestamp(since, unit="ms"))
        if not page:
            break
        rows.extend(page)
        last = int(page[-1][0])
        if last < since:
            log.warning("%s: exchange returned candles before %d; stopping", pair, since)
            break
        since = last + step
    frame = pd.DataFrame([row[: len(COLUMNS)] for row in rows], columns=COLUMNS)
    opened = frame["date"].astype("int64")
    closed = (opened >= start) & (opened + step <= now_ms)
    frame = frame.loc[closed].assign(date=pd.to_datetime(opened[closed], unit="ms", utc=True))
    frame = validate_frame(frame).drop_duplicates("date", keep="last").sort_values("date")
    return frame.reset_index(drop=True)


def download_to_dir(
    exchange: ccxt.Exchange,
    pair: str,
    timeframe: str,
    *,
    since_ms: int,
    now_ms: int,
    data_dir: Path,
    fmt: str = "feather",
    retry: RetryPolicy = DEFAULT_RETRY,
) -> DownloadResult:
    """Download a pair, merge it into its file in ``data_dir`` (new rows win on equal dates) and write it.

    Nothing is written when neither the file nor the exchange has candles.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    pair = parse_pair(pair)
    fresh = download_pair(exchange, pair, timeframe, since_ms, now_ms, retry=retry)
    path = candle_path(Path(data_dir), pair, timeframe, fmt)
    merged = fresh
    if path.is_file():
        merged = pd.concat([read_candle_file(path), fresh], ignore_index=True)
        merged = merged.drop_duplicates("date", keep="last").sort_values("date").reset_index(drop=True)
    if merged.empty:
        return DownloadResult(pair, 0, 0, None, None, None, ())
    written = write_candles(merged, data_dir, pair, timeframe, fmt)
    dates = merged["date"]
    gaps = find_gaps(dates, timeframe_seconds(timeframe))
    return DownloadResult(pair, len(fresh), len(merged), dates.iat[0], dates.iat[-1], written, gaps)


def _call(retry: RetryPolicy, fn: Callable[[], T], what: str) -> T:
    """Run one exchange call, retrying temporary errors and translating ccxt errors into ours."""
    attempt = 1
    while True:
        try:
            return fn()
        except TEMPORARY_ERRORS as exc:
            if attempt >= retry.attempts:
                raise ExchangeError(
                    f"{what}: still failing after {attempt} attempts: {brief_error(exc)}"
                ) from exc
            delay = retry.backoff_s * 2 ** (attempt - 1)
            log.warning("%s: %s; retrying in %.1fs", what, brief_error(exc), delay)
            retry.sleep(delay)
            attempt += 1
        except ccxt.BadSymbol as exc:
            raise InputError(f"{what}: {brief_error(exc)}") from exc
        except ccxt.BaseError as exc:
            raise ExchangeError(f"{what}: {brief_error(exc)}") from exc


def brief_error(exc: Exception, width: int = 400) -> str:
    """An exception as one line of at most ``width`` characters (ccxt messages embed response bodies).

    ccxt's network errors only name the URL; the transport error they wrap says what went wrong.
    """
    text = str(exc)
    if exc.__cause__ is not None:
        text += f" ({type(exc.__cause__).__name__}: {exc.__cause__})"
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= width else text[: width - 1] + "…"


def rebase_urls(urls: Any, base: str, schemes: tuple[str, ...] = ("http", "https")) -> Any:
    """Replace scheme and host of every URL in ccxt's (possibly nested) ``urls['api']`` with ``base``'s.

    ``schemes`` are the ones ``base`` may use (``("ws", "wss")`` for WebSocket URLs).
    """
    target = urlsplit(base)
    if target.scheme not in schemes or not target.netloc:
        raise InputError(
            f"invalid URL {base!r}: expected {schemes[0]}://host:port, e.g. {schemes[0]}://127.0.0.1:8080"
        )
    if isinstance(urls, dict):
        return {key: rebase_urls(value, base, schemes) for key, value in urls.items()}
    if isinstance(urls, str):
        parts = urlsplit(urls)
        path = target.path.rstrip("/") + parts.path
        return urlunsplit((target.scheme, target.netloc, path, parts.query, parts.fragment))
    return urls
