"""Cold-start caps (bot track records), order anomaly rules and the bot rate limiter."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradeguard.core.bot_record import BotRecord, CapPolicy, cap_tier, max_drawdown_pct, sharpe
from tradeguard.core.order_anomaly import AnomalyPolicy, hourly_sigma, price_verdict, size_verdict
from tradeguard.core.rate_limit import TokenBucket
from tradeguard.errors import InputError

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def record(days: int, returns: list[float]) -> BotRecord:
    """A bot first seen `days` ago with one return per day, the last one yesterday."""
    rec = BotRecord(NOW - timedelta(days=days))
    for i, r in enumerate(reversed(returns)):
        rec.add_return(NOW - timedelta(days=i + 1), r)
    return rec


def steady(n: int, mean: float = 0.004, spread: float = 0.01) -> list[float]:
    return [mean + (spread if i % 2 else -spread) for i in range(n)]


def test_new_bot_gets_the_first_cap() -> None:
    tier = cap_tier(None, NOW)
    assert (tier.level, tier.cap) == (0, 1_000.0)


def test_promotion_needs_fourteen_days_and_sharpe_above_one() -> None:
    good = steady(13)  # Sharpe = 0.004/0.0104 * sqrt(365) ~ 7.4
    assert cap_tier(record(13, good), NOW).level == 0  # 13 days: too young
    promoted = cap_tier(record(14, steady(14)), NOW)
    assert (promoted.level, promoted.cap) == (1, 10_000.0)
    assert promoted.sharpe == pytest.approx(np.mean(steady(14)) / np.std(steady(14), ddof=1) * math.sqrt(365))
    flat = cap_tier(record(30, steady(30, mean=0.0003)), NOW)  # Sharpe ~ 0.55
    assert flat.level == 0 and "needs > 1" in flat.reason


def test_the_100k_tier_needs_the_further_proof() -> None:
    proven = cap_tier(record(60, steady(60)), NOW)
    assert (proven.level, proven.cap) == (2, 100_000.0)
    # the same record but a losing last month: not proven (recent Sharpe <= 0)
    faded = steady(30) + steady(30, mean=-0.002)
    tier = cap_tier(record(60, faded), NOW)
    assert tier.sharpe is not None and tier.sharpe > 1 and tier.recent_sharpe is not None
    assert tier.recent_sharpe < 0 and tier.level == 1
    # a deep drawdown inside an otherwise good record
    crash = [-0.1, -0.1, *steady(58)]
    deep = cap_tier(record(60, crash), NOW, CapPolicy(promote_sharpe=0.3))
    assert deep.max_drawdown_pct is not None and deep.max_drawdown_pct > 15 and deep.level == 1


def test_returns_compound_within_a_day_and_old_ones_are_trimmed() -> None:
    rec = BotRecord(NOW - timedelta(days=200))
    rec.add_return(NOW, 0.10)
    rec.add_return(NOW + timedelta(hours=1), 0.10)
    assert rec.daily[NOW.date()] == pytest.approx(0.21)
    rec.add_return(NOW - timedelta(days=150), 0.05)
    rec.trim(NOW, keep_days=120)
    assert list(rec.daily) == [NOW.date()]


def test_sharpe_and_drawdown_values() -> None:
    assert sharpe(np.array([0.01, 0.01, 0.01]), 2) is None  # no dispersion
    assert sharpe(np.array([0.01]), 2) is None
    assert max_drawdown_pct(np.array([0.1, -0.5, 0.2])) == pytest.approx(50.0)
    assert max_drawdown_pct(np.array([0.1, 0.2])) == 0.0


@given(st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=60))
def test_drawdown_is_a_percentage(returns: list[float]) -> None:
    dd = max_drawdown_pct(np.array(returns))
    assert 0.0 <= dd <= 100.0


def test_size_anomaly_against_the_median() -> None:
    policy = AnomalyPolicy()
    assert size_verdict([1.0] * 4, 100.0, policy).ratio is None  # too few orders: no baseline
    recent = [1.0, 2.0, 2.0, 3.0, 50.0]  # median 2 (robust to the one outlier)
    assert size_verdict(recent, 6.0, policy).anomalous is False  # exactly 3x: not above
    v = size_verdict(recent, 6.01, policy)
    assert v.anomalous and v.ratio == pytest.approx(3.005)


def test_price_anomaly_in_sigmas() -> None:
    closes = 100.0 * np.exp(np.cumsum([0.01 if i % 2 else -0.01 for i in range(169)]))
    sigma = hourly_sigma(closes, 24)
    assert sigma == pytest.approx(np.std(np.diff(np.log(closes)), ddof=1))
    policy = AnomalyPolicy()
    near = price_verdict(100.0 * math.exp(4.9 * sigma), 100.0, sigma, policy)
    far = price_verdict(100.0 * math.exp(-5.1 * sigma), 100.0, sigma, policy)
    assert near.sigmas == pytest.approx(4.9) and not near.anomalous
    assert far.sigmas == pytest.approx(5.1) and far.anomalous
    longer = price_verdict(100.0 * math.exp(5.1 * sigma), 100.0, sigma, AnomalyPolicy(horizon_hours=4))
    assert longer.sigmas == pytest.approx(2.55) and not longer.anomalous
    with pytest.raises(InputError):
        hourly_sigma(closes[:10], 24)


def test_token_bucket_rate_and_give_back() -> None:
    bucket = TokenBucket(10.0, 10, now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(10))
    assert bucket.take(0.0) == pytest.approx(0.1)
    bucket.give_back()
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.05) == pytest.approx(0.05)
    assert bucket.take(0.1) == 0.0
