"""Options shared by the market-guard commands, and loading of an optional config file."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from pydantic import ValidationError

from tradeguard.cli import args as types
from tradeguard.core.config import MarketGuardConfig
from tradeguard.errors import InputError


def add_market_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        help="Freqtrade data directory (e.g. user_data/data/binance) or a folder of CSVs",
    )
    parser.add_argument("--pair", type=types.pair, required=True, help="ccxt pair, e.g. BTC/USDT")
    parser.add_argument("--timeframe", type=types.timeframe, default="1h", help="candle timeframe (1h)")
    parser.add_argument(
        "--external-dir",
        type=Path,
        default=None,
        help="folder with fear_greed_index_daily.csv, vix_daily.csv, ... (optional)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML file overriding MarketGuardConfig defaults (sections as in the model)",
    )


def load_config(path: Path | None) -> MarketGuardConfig:
    """Defaults, or the defaults overridden by a TOML file; unknown keys are errors."""
    if path is None:
        return MarketGuardConfig()
    try:
        with path.open("rb") as fh:
            return MarketGuardConfig.model_validate(tomllib.load(fh))
    except OSError as exc:
        raise InputError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config {path} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"config {path}: {where}: {first['msg']}") from exc
