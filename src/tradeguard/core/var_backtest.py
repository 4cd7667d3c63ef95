"""Backtesting 1-day VaR: exception series, coverage and independence tests, Basel traffic light, and two
rolling VaR models to backtest.

Conventions:
- VaR and returns are fractions of the portfolio value (0.05 = 5 %); VaR is positive for a loss.
- An exception is a day whose realized return is below −VaR (a loss strictly larger than the VaR).
- Likelihood ratios use 0·log 0 = 0, so zero exceptions, only exceptions, or a state never left or never
  entered give finite statistics instead of NaN. A statistic is ≥ 0 (rounding below 0 is clipped) and its
  p-value is the χ² survival function (1 degree of freedom for POF and independence, 2 for conditional
  coverage). With fewer than two observations there is no transition: independence is 0 with p-value 1.
- Rolling models: the VaR for the day at position t uses returns at positions < t only; its parameters
  may be re-estimated every few days, on a schedule that depends on positions, never on values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from arch import arch_model
from scipy.signal import lfilter
from scipy.special import xlogy
from scipy.stats import chi2

from tradeguard.core.var import PortfolioVar, bootstrap_scenarios, var_of_pnl
from tradeguard.errors import InputError

Zone = Literal["green", "yellow", "red"]
BASEL_WINDOW = 250
BASEL_CONFIDENCE = 0.99
BASEL_GREEN_MAX = 4
BASEL_YELLOW_MAX = 9
MIN_GARCH_HISTORY = 100


@dataclass(frozen=True)
class LRTest:
    """A likelihood-ratio test: statistic, its χ² p-value and degrees of freedom."""

    statistic: float
    p_value: float
    df: int


@dataclass(frozen=True)
class Coverage:
    """Exception count and the three standard tests for one VaR forecast series."""

    confidence: float
    observations: int
    exceptions: int
    kupiec: LRTest
    independence: LRTest
    conditional: LRTest

    @property
    def expected(self) -> float:
        return self.observations * (1.0 - self.confidence)

    @property
    def rate_pct(self) -> float:
        return 100.0 * self.exceptions / self.observations if self.observations else 0.0


@dataclass(frozen=True)
class BaselWindows:
    """Zone counts over every rolling window of `window` days (step one day) and the worst window."""

    window: int
    green: int
    yellow: int
    red: int
    worst_exceptions: int | None
    worst_end: pd.Timestamp | None


def _lr(statistic: float, df: int) -> LRTest:
    stat = max(float(statistic), 0.0)
    return LRTest(stat, float(chi2.sf(stat, df)), df)


def _bool_array(exceptions: Sequence[bool] | np.ndarray | pd.Series) -> np.ndarray:
    hits = np.asarray(exceptions)
    if hits.ndim != 1:
        raise InputError("exceptions must be a 1-D series")
    return hits.astype(bool)


def exception_series(realized: pd.Series, var: pd.Series) -> pd.Series:
    """True where the realized return is below −VaR, on the dates where both are known."""
    both = pd.concat({"r": realized, "v": var}, axis=1, join="inner").dropna()
    return (both["r"] < -both["v"]).rename("exception")


def kupiec_pof(exceptions: Sequence[bool] | np.ndarray | pd.Series, p: float) -> LRTest:
    """Kupiec's proportion-of-failures test of an exception probability `p` (e.g. 0.01 for 99 % VaR).

    LR = −2 ln[(1 − p)^(T−x) p^x] + 2 ln[(1 − x/T)^(T−x) (x/T)^x], χ²(1). Raises InputError when T = 0.
    """
    if not 0.0 < p < 1.0:
        raise InputError(f"exception probability must be in (0, 1), got {p}")
    hits = _bool_array(exceptions)
    t, x = hits.size, int(hits.sum())
    if t == 0:
        raise InputError("Kupiec test needs at least one observation")
    rate = x / t
    null = xlogy(t - x, 1.0 - p) + xlogy(x, p)
    alt = xlogy(t - x, 1.0 - rate) + xlogy(x, rate)
    return _lr(-2.0 * (null - alt), 1)


def christoffersen_independence(exceptions: Sequence[bool] | np.ndarray | pd.Series) -> LRTest:
    """Christoffersen's test that an exception today does not change tomorrow's exception probability.

    From the transition counts n_ij (state i then j; 1 = exception): π01 = n01/(n00+n01),
    π11 = n11/(n10+n11), π = (n01+n11)/(T−1); LR = −2 ln L(π) + 2 ln L(π01, π11), χ²(1).
    A state never left has no transitions, so its estimated probability does not enter (taken as 0).
    """
    hits = _bool_array(exceptions).astype(np.int8)
    if hits.size < 2:
        return LRTest(0.0, 1.0, 1)
    pairs = hits[:-1] * 2 + hits[1:]
    n00, n01, n10, n11 = (int(c) for c in np.bincount(pairs, minlength=4))
    from0, from1 = n00 + n01, n10 + n11
    pi01 = n01 / from0 if from0 else 0.0
    pi11 = n11 / from1 if from1 else 0.0
    pi = (n01 + n11) / (from0 + from1)
    null = xlogy(n00 + n10, 1.0 - pi) + xlogy(n01 + n11, pi)
    alt = xlogy(n00, 1.0 - pi01) + xlogy(n01, pi01) + xlogy(n10, 1.0 - pi11) + xlogy(n11, pi11)
    return _lr(-2.0 * (null - alt), 1)


def conditional_coverage(exceptions: Sequence[bool] | np.ndarray | pd.Series, p: float) -> LRTest:
    """Christoffersen's conditional coverage: LR_cc = LR_pof + LR_ind, χ²(2)."""
    pof = kupiec_pof(exceptions, p)
    ind = christoffersen_independence(exceptions)
    return _lr(pof.statistic + ind.statistic, 2)


def coverage(exceptions: Sequence[bool] | np.ndarray | pd.Series, confidence: float) -> Coverage:
    """Count exceptions of a VaR series at `confidence` and run the Kupiec and Christoffersen tests."""
    hits = _bool_array(exceptions)
    p = 1.0 - confidence
    return Coverage(
        confidence=confidence,
        observations=hits.size,
        exceptions=int(hits.sum()),
        kupiec=kupiec_pof(hits, p),
        independence=christoffersen_independence(hits),
        conditional=conditional_coverage(hits, p),
    )


def basel_zone(exceptions: int) -> Zone:
    """Basel traffic-light zone of a 250-day 99 % VaR backtest: 0–4 green, 5–9 yellow, 10 or more red."""
    if exceptions < 0:
        raise InputError(f"exception count cannot be negative, got {exceptions}")
    if exceptions <= BASEL_GREEN_MAX:
        return "green"
    return "yellow" if exceptions <= BASEL_YELLOW_MAX else "red"


def basel_windows(exceptions: pd.Series, window: int = BASEL_WINDOW) -> BaselWindows:
    """Zones of every full rolling window of a dated 99 % exception series; worst = most exceptions
    (the earliest such window). No full window: all counts 0 and no worst window."""
    counts = exceptions.astype(int).rolling(window).sum().dropna().astype(int)
    if counts.empty:
        return BaselWindows(window, 0, 0, 0, None, None)
    zones = pd.Series([basel_zone(c) for c in counts]).value_counts()
    return BaselWindows(
        window=window,
        green=int(zones.get("green", 0)),
        yellow=int(zones.get("yellow", 0)),
        red=int(zones.get("red", 0)),
        worst_exceptions=int(counts.max()),
        worst_end=counts.idxmax(),
    )


def rolling_bootstrap_var(
    returns: pd.DataFrame,
    weights: Mapping[str, float],
    confidences: Sequence[float],
    lookback_days: int = 90,
    n_scenarios: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """The production model, day by day: VaR (fraction of gross exposure) of a portfolio of `weights`.

    For the row at position t ≥ `lookback_days` (the forecast day), `bootstrap_scenarios` draws
    `n_scenarios` joint rows from rows t − lookback … t − 1 and `var_of_pnl` takes each confidence's
    quantile of the P&L, exactly as `PortfolioVar` does. One column per confidence; each day gets its own
    seed from `seed`, independent of the data.
    """
    if not confidences:
        raise InputError("need at least one confidence")
    gross = sum(abs(w) for w in weights.values())
    if not gross > 0:
        raise InputError("weights must not all be zero")
    if missing := sorted(set(weights) - set(returns.columns)):
        raise InputError(f"no returns for {', '.join(missing)}")
    seeds = np.random.SeedSequence(seed).generate_state(max(len(returns), 1))
    out = np.full((len(returns), len(confidences)), np.nan)
    for t in range(lookback_days, len(returns)):
        scenarios = bootstrap_scenarios(
            returns.iloc[t - lookback_days : t], n_scenarios, lookback_days, seed=int(seeds[t])
        )
        pnl = PortfolioVar(scenarios, weights, equity=gross, confidence=confidences[0]).pnl / gross
        out[t] = [var_of_pnl(pnl, c) for c in confidences]
    return pd.DataFrame(out, index=returns.index, columns=list(confidences)).iloc[lookback_days:]


def _garch_fit(window: np.ndarray) -> tuple[float, float, float, float, float]:
    """Gaussian quasi-ML GARCH(1,1) with a constant mean on returns in percent (arch's preferred scale).

    Returns (mu, omega, alpha, beta, first conditional variance) in fraction units.
    """
    result = arch_model(window * 100.0, mean="Constant", vol="GARCH", p=1, q=1, rescale=False).fit(
        disp="off", show_warning=False
    )
    params = result.params
    first_var = float(result.conditional_volatility[0]) ** 2 / 1e4
    return (
        float(params["mu"]) / 100.0,
        float(params["omega"]) / 1e4,
        float(params["alpha[1]"]),
        float(params["beta[1]"]),
        first_var,
    )


def rolling_fhs_garch_var(
    returns: pd.Series,
    confidences: Sequence[float],
    window: int = 1000,
    min_history: int = 250,
    refit_every: int = 20,
) -> pd.DataFrame:
    """Filtered historical simulation with GARCH(1,1) volatility, day by day (fraction of the position).

    Every `refit_every` days (from position `min_history` on) GARCH(1,1) is fitted to the last `window`
    returns before that day (`arch`, Gaussian QML, constant mean μ). Between refits the parameters stay
    fixed while the variance recursion h_t = ω + α(r_{t−1} − μ)² + β h_{t−1} runs on. The VaR for day t is
    −μ + σ_t · VaR_c(z), with z the standardized residuals (r_s − μ)/σ_s of the estimation window up to
    day t − 1, and VaR_c(z) their empirical quantile by `var_of_pnl` — the limit of bootstrapping z as
    n → ∞, so no scenarios are drawn. One column per confidence.
    """
    if not confidences:
        raise InputError("need at least one confidence")
    if min_history < MIN_GARCH_HISTORY or refit_every < 1 or window < min_history:
        raise InputError(
            f"need min_history ≥ {MIN_GARCH_HISTORY}, window ≥ min_history and refit_every ≥ 1 "
            f"(got {min_history}, {window}, {refit_every})"
        )
    r = returns.to_numpy(dtype=np.float64)
    n = len(r)
    out = np.full((n, len(confidences)), np.nan)
    for start in range(min_history, n, refit_every):
        lo, end = max(0, start - window), min(start + refit_every, n)
        mu, omega, alpha, beta, first_var = _garch_fit(r[lo:start])
        eps = r[lo:end] - mu
        # h[i] is the variance of eps[i] given eps[:i]; lfilter runs h[i+1] = ω + α eps[i]² + β h[i].
        tail = lfilter([1.0], [1.0, -beta], omega + alpha * eps[:-1] ** 2, zi=[beta * first_var])[0]
        sigma = np.sqrt(np.concatenate([[first_var], tail]))
        z = eps / sigma
        for t in range(start, end):
            i = t - lo
            out[t] = [-mu + sigma[i] * var_of_pnl(z[:i], c) for c in confidences]
    return pd.DataFrame(out, index=returns.index, columns=list(confidences)).iloc[min_history:]
