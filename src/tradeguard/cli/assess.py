"""`tradeguard assess`: the market guard's answer for one pair at one moment."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from tradeguard.cli import args as types
from tradeguard.cli.common import add_market_options, load_config
from tradeguard.core.assessment import Assessment
from tradeguard.guards.market import assess_pair, last_close, load_market_data


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "assess",
        help="assess one pair at one moment",
        description="Assess a pair at --at (default: now) from the candles closed by then. "
        "`--at latest` means the close of the newest candle in the data.",
    )
    add_market_options(parser)
    parser.add_argument(
        "--at", default=None, help="ISO-8601 UTC time (e.g. 2022-06-13T12:00:00Z), or 'latest'; default now"
    )
    parser.add_argument("--format", choices=("json", "table"), default="json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    data = load_market_data(args.data_dir, args.pair, args.timeframe, args.external_dir, config)
    if args.at is None:
        at = datetime.now(UTC)
    elif args.at == "latest":
        at = last_close(data)
    else:
        try:
            at = types.utc_timestamp(args.at).to_pydatetime()
        except argparse.ArgumentTypeError as exc:
            sys.stderr.write(f"tradeguard assess: error: --at: {exc}\n")
            return 2
    result = assess_pair(data, at, config)
    if args.format == "json":
        body = result.model_dump(mode="json") | {"data_quality": data.quality_summary()}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(result) + "\n")
    return 0


def render_table(a: Assessment) -> str:
    """A compact human view: verdict, key numbers, then the reasons."""

    def fmt(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    rows = [
        ("pair", f"{a.pair} {a.timeframe}"),
        ("as_of", a.as_of.isoformat() if a.as_of else "-"),
        ("data_age_s", fmt(a.data_age_s)),
        ("safe_to_trade", "YES" if a.safe_to_trade else "NO"),
        ("recommendation", a.recommendation),
        ("blocked_by", ", ".join(a.blocked_by) or "-"),
        ("risk_score", f"{fmt(a.risk_score)} ({fmt(a.risk_class)}, confidence {a.risk_confidence:.2f})"),
        ("regime", f"{fmt(a.regime)} / specialist {fmt(a.specialist_regime)}"),
        ("volatility", f"{fmt(a.volatility)} annualised ({fmt(a.volatility_classification)})"),
        ("trend / momentum", f"{fmt(a.trend_classification)} / {fmt(a.momentum_classification)}"),
        ("flags", ", ".join(k for k, v in a.event_flags.items() if v) or "-"),
        ("fear & greed / funding", f"{fmt(a.fear_greed_index)} / {fmt(a.funding_rate)}"),
        ("vix / dxy / btc dom.", f"{fmt(a.vix)} / {fmt(a.dxy)} / {fmt(a.btc_dominance)}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += ["", "reasons:"] + [f"  - {r}" for r in a.reasoning]
    return "\n".join(lines)
