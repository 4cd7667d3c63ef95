"""Entry point of the `tradeguard` command: one sub-module per command, each with `register()`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tradeguard import __version__
from tradeguard.cli import assess, audit, download, history, keys, serve
from tradeguard.errors import TradeguardError

COMMANDS = (serve, assess, history, download, keys, audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradeguard", description="Risk guard for fleets of trading bots.")
    parser.add_argument("--version", action="version", version=f"tradeguard {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors become a one-line message on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except TradeguardError as exc:
        sys.stderr.write(f"tradeguard {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
