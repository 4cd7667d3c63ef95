"""`tradeguard history`: the point-in-time assessment of every candle of a range, to CSV or Parquet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tradeguard.cli import args as types
from tradeguard.cli.common import add_market_options, load_config
from tradeguard.errors import InputError
from tradeguard.guards.market import history_for_pair, load_market_data


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "history",
        help="assess every candle of a range (point in time) and write CSV or Parquet",
        description="One row per candle; `date` is the candle's open time (Freqtrade's convention) and the "
        "row holds what was known when that candle closed.",
    )
    add_market_options(parser)
    parser.add_argument("--start", type=types.utc_timestamp, required=True, help="ISO-8601 UTC, inclusive")
    parser.add_argument("--end", type=types.utc_timestamp, required=True, help="ISO-8601 UTC, inclusive")
    parser.add_argument("--out", type=Path, required=True, help="FILE.csv or FILE.parquet")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"--out must end in .csv or .parquet, got {out.name!r}")
    config = load_config(args.config)
    data = load_market_data(args.data_dir, args.pair, args.timeframe, args.external_dir, config)
    frame = history_for_pair(data, args.start.to_pydatetime(), args.end.to_pydatetime(), config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if suffix == ".csv":
        frame.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    else:
        frame.to_parquet(tmp, index=False)
    tmp.replace(out)
    unsafe = int((~frame["safe_to_trade"]).sum())
    sys.stdout.write(
        f"wrote {len(frame)} rows for {data.pair} {data.timeframe} "
        f"({frame['date'].iloc[0]:%Y-%m-%d %H:%M} .. {frame['date'].iloc[-1]:%Y-%m-%d %H:%M} UTC) to {out}; "
        f"unsafe {unsafe} rows ({unsafe / len(frame):.1%})\n"
    )
    return 0
