"""Argument types shared by commands: each turns bad input into a clear argparse error."""

from __future__ import annotations

import argparse

import pandas as pd

from tradeguard.adapters.candle_files import parse_pair
from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.errors import InputError


def utc_timestamp(text: str) -> pd.Timestamp:
    """ISO-8601 date or datetime; naive values are UTC."""
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"invalid date {text!r}: use ISO-8601, e.g. 2022-06-13T12:00:00Z"
        ) from exc
    if ts is pd.NaT:
        raise argparse.ArgumentTypeError(f"invalid date {text!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def timeframe(text: str) -> str:
    try:
        timeframe_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def pair(text: str) -> str:
    try:
        return parse_pair(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def pair_list(text: str) -> list[str]:
    pairs = [pair(p) for p in text.split(",") if p.strip()]
    if not pairs:
        raise argparse.ArgumentTypeError("give at least one pair, e.g. BTC/USDT,ETH/USDT")
    return pairs


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value
