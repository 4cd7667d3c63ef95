"""Monte Carlo value at risk from bootstrapped joint daily returns, with a cached scenario P&L per account.

- Returns: simple daily returns of daily closes; a date missing for any asset is dropped for all of them.
- Scenarios: `n` whole rows (dates) drawn with replacement from the last `lookback_days` rows, so every
  scenario is one historical day's joint move of all assets (cross-asset correlation is kept).
- P&L: scenario returns times signed notional exposure per asset (in quote): ``pnl = R[:, assets] @ x``.
- VaR at confidence c: the loss at the lower empirical (1 − c)-quantile of the P&L, see `var_of_pnl`.

`PortfolioVar` keeps an account's P&L vector; a pre-trade check of an order adds one scenario column times
the order's notional and takes one order statistic (`np.partition`, O(n)), with no re-simulation.
Rebuild it when prices (a new `ScenarioSet`) or the account's positions change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from tradeguard.errors import InputError

MIN_HISTORY = 30


@dataclass(frozen=True, eq=False)
class ScenarioSet:
    """Bootstrap scenarios of joint simple daily returns: `returns` is (n_scenarios, n_assets), float64.

    One column per asset, in `assets` order. The matrix is copied column-major (each asset's scenarios
    contiguous) and made read-only.
    Equality is identity, so a set can key a cache.
    """

    assets: tuple[str, ...]
    returns: np.ndarray
    as_of: datetime
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        matrix = np.array(self.returns, dtype=np.float64, order="F")
        if matrix.ndim != 2 or matrix.shape[1] != len(self.assets) or matrix.shape[0] == 0:
            raise InputError(
                f"scenario matrix of shape {matrix.shape} does not fit {len(self.assets)} asset(s)"
            )
        if len(set(self.assets)) != len(self.assets):
            raise InputError(f"duplicate assets in scenarios: {self.assets}")
        if not np.isfinite(matrix).all():
            raise InputError("scenario returns must be finite")
        matrix.flags.writeable = False
        object.__setattr__(self, "assets", tuple(self.assets))
        object.__setattr__(self, "returns", matrix)
        object.__setattr__(self, "_index", {a: i for i, a in enumerate(self.assets)})

    def column(self, asset: str) -> np.ndarray | None:
        """The asset's scenario returns (a contiguous read-only view), or None without scenarios for it."""
        i = self._index.get(asset)
        return None if i is None else self.returns[:, i]


def daily_returns(closes: pd.DataFrame) -> pd.DataFrame:
    """Simple returns of a wide frame of daily closes (UTC date index, one column per asset).

    A row is dropped when any asset's return is missing (its close or the previous close is NaN) and, for
    a datetime index, when it is more than one day after the previous row, so the rows left are joint
    moves over one day; no multi-day return is formed across a gap.
    """
    frame = closes.sort_index().astype(np.float64)
    if (frame <= 0).to_numpy().any():
        raise InputError("daily closes must be positive")
    returns = frame / frame.shift(1) - 1.0
    if isinstance(frame.index, pd.DatetimeIndex):
        returns = returns[~(frame.index.to_series().diff() > pd.Timedelta(days=1)).to_numpy()]
    return returns.dropna(how="any")


def bootstrap_scenarios(
    returns: pd.DataFrame,
    n: int = 10_000,
    lookback_days: int = 90,
    seed: int | None = None,
    as_of: datetime | None = None,
) -> ScenarioSet:
    """Draw `n` whole rows with replacement from the last `lookback_days` rows of `returns`.

    `as_of` defaults to the date of the last row used (or now, for a non-datetime index).
    Raises InputError when fewer than 30 rows are available in that window.
    """
    if n < 1:
        raise InputError(f"need at least one scenario, got n={n}")
    window = returns.iloc[-lookback_days:] if lookback_days > 0 else returns.iloc[:0]
    if len(window) < MIN_HISTORY:
        raise InputError(
            f"VaR needs at least {MIN_HISTORY} days of joint returns, got {len(window)} "
            f"(assets: {', '.join(map(str, returns.columns))})"
        )
    values = window.to_numpy(dtype=np.float64)
    rows = np.random.default_rng(seed).integers(0, len(window), size=n)
    if as_of is None:
        last = window.index[-1]
        as_of = pd.Timestamp(last).to_pydatetime() if isinstance(last, pd.Timestamp) else datetime.now(UTC)
    return ScenarioSet(tuple(map(str, window.columns)), values[rows], as_of)


def _order_index(n: int, confidence: float) -> int:
    """0-based index of the ⌈n(1 − c)⌉-th smallest of n values (n(1 − c) rounded to 1e-9 first)."""
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    return max(math.ceil(round(n * (1.0 - confidence), 9)) - 1, 0)


def var_of_pnl(pnl: np.ndarray, confidence: float) -> float:
    """Value at risk of a P&L sample: minus its ⌈n(1 − c)⌉-th smallest value (positive = loss).

    This is the lower empirical quantile (numpy's ``method="inverted_cdf"`` in exact arithmetic): the loss
    met or exceeded in a share 1 − c of the scenarios, e.g. the 500th worst of 10,000 at 95%. n(1 − c) is
    rounded to 9 decimals first, so 1 − 0.95 counts as exactly 5% despite its binary representation.
    Negative when even that scenario is a gain.
    """
    values = np.asarray(pnl, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InputError("VaR needs a non-empty 1-D P&L sample")
    k = _order_index(values.size, confidence)
    return 0.0 - float(np.partition(values, k)[k])


class PortfolioVar:
    """An account's cached scenario P&L: ``pnl = returns[:, assets] @ exposures``.

    Exposures are signed notionals per asset, in quote (long > 0). `missing` lists exposure assets
    without scenario columns; they are left out of `pnl` (the caller decides whether that is an error).
    `pnl` is read-only and `with_order` keeps no shared scratch buffer, so checks may run concurrently.
    """

    def __init__(
        self,
        scenarios: ScenarioSet,
        exposures: Mapping[str, float],
        equity: float,
        confidence: float = 0.95,
    ) -> None:
        if not (math.isfinite(equity) and equity > 0):
            raise InputError(f"equity must be positive, got {equity}")
        self.scenarios = scenarios
        self.equity = float(equity)
        self.confidence = confidence
        self._k = _order_index(len(scenarios.returns), confidence)
        present = [a for a in exposures if scenarios.column(a) is not None]
        self.missing: tuple[str, ...] = tuple(a for a in exposures if scenarios.column(a) is None)
        notional = np.array([exposures[a] for a in present], dtype=np.float64)
        if not np.isfinite(notional).all():
            raise InputError("exposures must be finite")
        cols = [scenarios.assets.index(a) for a in present]
        pnl = scenarios.returns[:, cols] @ notional if cols else np.zeros(len(scenarios.returns))
        pnl.flags.writeable = False
        self.pnl: np.ndarray = pnl
        self._var_pct = self._pct(np.partition(pnl, self._k)[self._k])

    def _pct(self, quantile: float) -> float:
        return 0.0 - float(quantile) / self.equity * 100.0

    def var_pct(self) -> float:
        """VaR of the current positions as % of equity (positive = loss)."""
        return self._var_pct

    def with_order(self, asset: str, signed_notional: float) -> float:
        """VaR % of equity with an order of `signed_notional` (quote; buy > 0, sell < 0) in `asset` added.

        One multiply into a fresh buffer, an in-place add and an in-place partition (O(n), no sort); raises
        InputError when the asset has no scenarios or the notional is not finite.
        """
        column = self.scenarios.column(asset)
        if column is None:
            raise InputError(f"no return scenarios for {asset}")
        if not math.isfinite(signed_notional):
            raise InputError(f"order notional must be finite, got {signed_notional}")
        buf = np.multiply(column, signed_notional)
        buf += self.pnl
        buf.partition(self._k)
        return self._pct(buf[self._k])
