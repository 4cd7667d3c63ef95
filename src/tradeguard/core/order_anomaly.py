"""Fat-finger checks on one order: its size against the bot's recent orders, its limit price against the mark.

- size: an amount more than `amount_multiple` (3) times the median of the bot's last allowed orders on that
  symbol is anomalous; with fewer than `min_orders` (5) such orders there is no baseline and the check is
  skipped.
- price: a limit price more than `max_sigmas` (5) from the mark price, where sigma is the standard deviation
  of the symbol's recent 1-hour log returns scaled to the horizon (sqrt(horizon_hours)). Distance is measured
  in log terms, so it is symmetric for prices above and below the mark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tradeguard.errors import InputError


@dataclass(frozen=True, slots=True)
class AnomalyPolicy:
    amount_multiple: float = 3.0
    min_orders: int = 5
    history: int = 50
    max_sigmas: float = 5.0
    horizon_hours: float = 1.0
    min_returns: int = 24


@dataclass(frozen=True, slots=True)
class SizeVerdict:
    ratio: float | None  # amount / median (None: no baseline)
    anomalous: bool


@dataclass(frozen=True, slots=True)
class PriceVerdict:
    sigmas: float  # |log(price / mark)| / (sigma x sqrt(horizon))
    sigma_pct: float  # the horizon sigma, %
    anomalous: bool


def size_verdict(recent: Sequence[float], amount: float, policy: AnomalyPolicy) -> SizeVerdict:
    """Compare `amount` with the median of `recent` allowed amounts."""
    if len(recent) < policy.min_orders:
        return SizeVerdict(None, False)
    ratio = amount / float(np.median(recent))
    return SizeVerdict(ratio, ratio > policy.amount_multiple)


def hourly_sigma(closes: np.ndarray, min_returns: int) -> float:
    """Standard deviation of 1-hour log returns from consecutive hourly closes."""
    closes = np.asarray(closes, dtype=float)
    closes = closes[np.isfinite(closes) & (closes > 0)]
    if len(closes) - 1 < min_returns:
        raise InputError(f"{len(closes) - 1} hourly returns, at least {min_returns} needed for sigma")
    return float(np.std(np.diff(np.log(closes)), ddof=1))


def price_verdict(price: float, mark: float, sigma_1h: float, policy: AnomalyPolicy) -> PriceVerdict:
    """How many horizon sigmas a limit price is from the mark."""
    horizon_sigma = sigma_1h * math.sqrt(policy.horizon_hours)
    distance = abs(math.log(price / mark))
    sigmas = distance / horizon_sigma if horizon_sigma > 0 else (0.0 if distance == 0 else math.inf)
    return PriceVerdict(sigmas, horizon_sigma * 100.0, sigmas > policy.max_sigmas)
