"""`tradeguard download-data`: fetch closed candles through ccxt into a Freqtrade data directory."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tradeguard.adapters.candle_files import FORMATS
from tradeguard.adapters.exchange_download import (
    DownloadResult,
    check_market,
    download_to_dir,
    make_exchange,
    market_type,
)
from tradeguard.cli.args import pair_list, positive_int, timeframe

DAY_MS = 86_400_000
GAPS_SHOWN = 3


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "download-data",
        help="download OHLCV candles from an exchange (ccxt) as Freqtrade data files",
        description=(
            "Download closed candles of each pair for the last DAYS days and merge them into the pair's "
            "file in DATA_DIR (Freqtrade layout; newly downloaded rows replace stored rows of the same "
            "date). Gaps in the exchange's data are reported, not filled."
        ),
    )
    parser.add_argument("--exchange", default="binance", help="ccxt exchange id (default: binance)")
    parser.add_argument(
        "--pairs",
        required=True,
        type=pair_list,
        help="comma-separated ccxt pairs, e.g. BTC/USDT,ETH/USDT:USDT",
    )
    parser.add_argument("--timeframe", default="1h", type=timeframe, help="candle length (default: 1h)")
    parser.add_argument(
        "--days", default=30, type=positive_int, help="days of history to fetch (default: 30)"
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="Freqtrade data directory to write to")
    parser.add_argument("--format", default="feather", choices=FORMATS, help="file format (default: feather)")
    parser.add_argument(
        "--api-url",
        metavar="URL",
        help="send exchange API requests to this base URL instead of the exchange's hosts, keeping the "
        "paths (e.g. a local mock or a proxy)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pairs: list[str] = list(dict.fromkeys(args.pairs))
    exchange = make_exchange(
        args.exchange, market_types={market_type(p) for p in pairs}, api_url=args.api_url
    )
    try:
        for pair in pairs:  # fail on a bad pair before downloading anything
            check_market(exchange, pair, args.timeframe)
        now_ms = int(time.time() * 1000)
        since_ms = now_ms - args.days * DAY_MS
        for pair in pairs:
            result = download_to_dir(
                exchange,
                pair,
                args.timeframe,
                since_ms=since_ms,
                now_ms=now_ms,
                data_dir=args.data_dir,
                fmt=args.format,
            )
            sys.stdout.write(_summary(result) + "\n")
            sys.stdout.flush()
    finally:
        exchange.close()
    return 0


def _summary(result: DownloadResult) -> str:
    if result.path is None:
        return f"{result.pair}: no candles in the requested period; nothing written"
    span = f"{result.first:%Y-%m-%d %H:%M} .. {result.last:%Y-%m-%d %H:%M} UTC"
    line = f"{result.pair}: fetched {result.fetched}, {result.rows} in file, {span}, wrote {result.path}"
    if not result.gaps:
        return f"{line}, no gaps"
    missing = sum(g.missing for g in result.gaps)
    shown = ", ".join(
        f"{g.start:%Y-%m-%d %H:%M} .. {g.end:%Y-%m-%d %H:%M} ({g.missing})" for g in result.gaps[:GAPS_SHOWN]
    )
    more = f", and {len(result.gaps) - GAPS_SHOWN} more" if len(result.gaps) > GAPS_SHOWN else ""
    return f"{line}, {len(result.gaps)} gap(s), {missing} candles missing: {shown}{more}"
