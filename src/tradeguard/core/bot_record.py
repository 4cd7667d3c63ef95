"""A bot's track record and the notional cap it has earned (cold-start caps).

A new bot may hold at most `caps[0]` (1,000) of notional. It is promoted to `caps[1]` (10,000) once it has
been known for `promote_days` (14) with an annualised Sharpe ratio above `promote_sharpe` (1) on its
recorded daily returns, and to `caps[2]` (100,000) after a further proof:

- known for at least `proven_days` (60) with at least `proven_min_returns` (40) daily returns recorded;
- Sharpe above `promote_sharpe` over the whole record *and* above 0 over the last `recent_days` (30): a bot
  whose edge has faded in the last month is not promoted on its older history;
- the worst peak-to-trough drawdown of its compounded daily returns at most `proven_max_drawdown_pct` (15).

Caps follow the record both ways: a bot that stops meeting a tier's proof falls back to the tier it still
meets. Returns come from the bot's `strategy_return` events (each compounded into its UTC day); days without
a report are not counted as zero. Sharpe = mean / sample std of daily returns x sqrt(365) (crypto trades every
day), no risk-free rate; undefined (no promotion) with fewer than `min_returns` days or zero dispersion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np

DAYS_PER_YEAR = 365


@dataclass(frozen=True, slots=True)
class CapPolicy:
    caps: tuple[float, float, float] = (1_000.0, 10_000.0, 100_000.0)
    promote_days: int = 14
    promote_sharpe: float = 1.0
    min_returns: int = 10
    proven_days: int = 60
    proven_min_returns: int = 40
    recent_days: int = 30
    proven_max_drawdown_pct: float = 15.0
    keep_days: int = 120


@dataclass(frozen=True, slots=True)
class CapTier:
    """The cap a bot has earned now, and the numbers behind it."""

    level: int
    cap: float
    days_known: float
    sharpe: float | None
    recent_sharpe: float | None
    max_drawdown_pct: float | None
    returns: int
    reason: str


@dataclass(slots=True)
class BotRecord:
    """When a bot was first seen and its daily returns (compounded per UTC day)."""

    first_seen: datetime
    daily: dict[date, float] = field(default_factory=dict)

    def seen(self, at: datetime) -> None:
        self.first_seen = min(self.first_seen, at)

    def add_return(self, period_end: datetime, ret: float) -> None:
        day = period_end.date()
        self.daily[day] = (1.0 + self.daily.get(day, 0.0)) * (1.0 + ret) - 1.0

    def trim(self, now: datetime, keep_days: int) -> None:
        cutoff = (now - timedelta(days=keep_days)).date()
        for day in [d for d in self.daily if d < cutoff]:
            del self.daily[day]


def sharpe(returns: np.ndarray, min_returns: int) -> float | None:
    """Annualised Sharpe of daily returns (None when too few or without dispersion)."""
    if len(returns) < min_returns:
        return None
    sd = float(np.std(returns, ddof=1))
    if not math.isfinite(sd) or sd <= 0:
        return None
    return float(np.mean(returns)) / sd * math.sqrt(DAYS_PER_YEAR)


def max_drawdown_pct(returns: np.ndarray) -> float:
    """Worst peak-to-trough fall of the compounded returns, % (0 without a fall)."""
    if len(returns) == 0:
        return 0.0
    wealth = np.concatenate([[1.0], np.cumprod(1.0 + returns)])
    peak = np.maximum.accumulate(wealth)
    return float(np.max(1.0 - wealth / peak) * 100.0)


def cap_tier(record: BotRecord | None, now: datetime, policy: CapPolicy = CapPolicy()) -> CapTier:
    """The tier `record` has earned at `now` (a bot never seen is new: tier 0)."""
    if record is None:
        return CapTier(0, policy.caps[0], 0.0, None, None, None, 0, "new bot: no track record yet")
    days = (now - record.first_seen).total_seconds() / 86400.0
    ordered = sorted(d for d in record.daily if d <= now.date())
    rets = np.array([record.daily[d] for d in ordered], dtype=float)
    recent_from = (now - timedelta(days=policy.recent_days)).date()
    recent = np.array([record.daily[d] for d in ordered if d >= recent_from], dtype=float)
    s = sharpe(rets, policy.min_returns)
    rs = sharpe(recent, policy.min_returns)
    dd = max_drawdown_pct(rets) if len(rets) else None

    def tier(level: int, reason: str) -> CapTier:
        return CapTier(level, policy.caps[level], days, s, rs, dd, len(rets), reason)

    if days < policy.promote_days:
        return tier(0, f"known for {days:.1f} of the {policy.promote_days} days needed for promotion")
    if s is None or s <= policy.promote_sharpe:
        shown = "undefined" if s is None else f"{s:.2f}"
        return tier(0, f"Sharpe {shown} on {len(rets)} daily returns, needs > {policy.promote_sharpe:g}")
    proven = (
        days >= policy.proven_days
        and len(rets) >= policy.proven_min_returns
        and rs is not None
        and rs > 0
        and dd is not None
        and dd <= policy.proven_max_drawdown_pct
    )
    if proven:
        return tier(
            2, f"proven: {days:.0f} days, Sharpe {s:.2f}, last-30-day Sharpe {rs:.2f}, max DD {dd:.1f}%"
        )
    return tier(
        1,
        f"promoted: Sharpe {s:.2f} after {days:.0f} days; the 100k tier needs {policy.proven_days} days, "
        f"{policy.proven_min_returns} returns, a positive recent Sharpe and max DD <= "
        f"{policy.proven_max_drawdown_pct:g}%",
    )
