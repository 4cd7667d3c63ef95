"""Timeframe strings in ccxt/Freqtrade form ("5m", "1h", "1d") and their lengths."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}
_PATTERN = re.compile(r"^(\d+)([smhdwMy])$")
SECONDS_PER_YEAR = 365 * 86400


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle in seconds, with ccxt's units (M is 30 days, y 365 days)."""
    match = _PATTERN.match(timeframe.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"invalid timeframe {timeframe!r}: expected e.g. 5m, 1h, 4h, 1d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def periods_per_year(timeframe: str) -> float:
    """Candles of this timeframe in a 365-day year (crypto trades every day)."""
    return SECONDS_PER_YEAR / timeframe_seconds(timeframe)
