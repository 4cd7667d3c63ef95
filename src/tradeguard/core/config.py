"""Every threshold and weight of the market guard, in one typed config with documented defaults.

Units follow the project rule: `_pct` is 0–100, `_ratio` and percentile ranks are 0–1, periods are in
candles ("bars") of the timeframe being assessed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IndicatorConfig(_Frozen):
    """Indicator periods (TA-Lib) and the realized-volatility window."""

    ema_fast: int = Field(50, ge=2, description="fast moving-average period (EMA and SMA)")
    ema_slow: int = Field(200, ge=3, description="slow moving-average period (EMA and SMA)")
    adx_period: int = Field(14, ge=2)
    atr_period: int = Field(14, ge=2)
    rsi_period: int = Field(14, ge=2)
    bb_period: int = Field(20, ge=2)
    bb_stdev: float = Field(2.0, gt=0)
    vol_window: int = Field(20, ge=2, description="bars of log returns in the realized volatility")
    vol_rank_window: int = Field(
        1000, ge=50, description="trailing bars the realized volatility is ranked against"
    )
    vol_rank_min_periods: int = Field(
        200, ge=10, description="fewer ranked values than this leaves the volatility class unknown"
    )
    shock_ewma_period: int = Field(
        200, ge=10, description="EMA period of squared returns giving the reference sigma for shocks"
    )

    @model_validator(mode="after")
    def _check(self) -> IndicatorConfig:
        if self.ema_fast >= self.ema_slow:
            raise ValueError("ema_fast must be shorter than ema_slow")
        if self.vol_rank_min_periods > self.vol_rank_window:
            raise ValueError("vol_rank_min_periods cannot exceed vol_rank_window")
        return self


class VolatilityConfig(_Frozen):
    """Volatility class by percentile rank of the pair's realized vol within its own trailing window."""

    low_below: float = Field(0.25, gt=0, lt=1)
    high_from: float = Field(0.75, gt=0, lt=1)
    extreme_from: float = Field(0.95, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> VolatilityConfig:
        if not self.low_below < self.high_from < self.extreme_from:
            raise ValueError("need low_below < high_from < extreme_from")
        return self


class TrendConfig(_Frozen):
    """Trend from price/EMA alignment and ADX; momentum from RSI."""

    adx_trend: float = Field(20.0, ge=0, le=100, description="ADX at or above: the market trends")
    adx_strong: float = Field(30.0, ge=0, le=100, description="ADX at or above: a strong trend")
    rsi_overbought: float = Field(70.0, gt=50, le=100)
    rsi_bullish: float = Field(55.0, gt=50, le=100)
    rsi_bearish: float = Field(45.0, ge=0, lt=50)
    rsi_oversold: float = Field(30.0, ge=0, lt=50)


class PanicConfig(_Frozen):
    """A panic is a sharp down-move measured against the pair's own recent volatility."""

    shock_sigma: float = Field(
        6.0, gt=0, description="a one-bar log return at or below -shock_sigma x reference sigma is a shock"
    )
    shock_min_move_pct: float = Field(
        2.0, ge=0, description="...and it must also be a fall of at least this many percent"
    )
    drop_window: int = Field(6, ge=2, description="bars over which a cumulative fall is measured")
    drop_sigma: float = Field(
        7.0, gt=0, description="cumulative fall at or below -drop_sigma x sigma x sqrt(n)"
    )
    lookback: int = Field(6, ge=1, description="a shock or drop within this many bars keeps the panic flag")


class SpecialistConfig(_Frozen):
    """specialist_regime: STRESS when realized vol ranks above stress_rank in its trailing window."""

    stress_rank: float = Field(0.9, gt=0, lt=1)
    min_dwell: int = Field(0, ge=0, description="hysteresis: bars a new regime must persist (0 = off)")


class ExternalConfig(_Frozen):
    """How sentiment and macro values map to a 0-1 risk and to flags."""

    extreme_fear_at_or_below: float = Field(25.0, ge=0, le=100)
    extreme_greed_at_or_above: float = Field(76.0, ge=0, le=100)
    vix_calm: float = Field(15.0, ge=0)
    vix_panic: float = Field(40.0, gt=0)
    funding_extreme_abs: float = Field(
        0.001, gt=0, description="|funding rate| per period treated as maximum risk (0.1 %)"
    )
    dxy_change_days: int = Field(20, ge=2, description="trading days over which the DXY change is taken")
    dxy_extreme_change_pct: float = Field(3.0, gt=0)
    btc_dominance_change_days: int = Field(7, ge=1)
    btc_dominance_extreme_change_pct: float = Field(5.0, gt=0)
    max_age_days: float = Field(
        7.0, gt=0, description="an external value older than this is treated as missing"
    )


class ScoreWeights(_Frozen):
    """Weights of the composite risk score; renormalised over the components that are available."""

    volatility: float = Field(0.30, ge=0)
    regime: float = Field(0.25, ge=0)
    trend_strength: float = Field(0.20, ge=0)
    momentum: float = Field(0.10, ge=0)
    external: float = Field(0.15, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ScoreWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one weight must be positive")
        return self


class ComponentRisk(_Frozen):
    """0-1 risk of each categorical state, as used by the regime/trend/momentum components."""

    regime: dict[str, float] = Field(
        default_factory=lambda: {
            "panic": 1.0,
            "high_vol": 0.8,
            "bear": 0.65,
            "choppy": 0.5,
            "sideways": 0.3,
            "bull": 0.15,
        }
    )
    trend: dict[str, float] = Field(
        default_factory=lambda: {
            "strong_downtrend": 1.0,
            "downtrend": 0.75,
            "sideways": 0.4,
            "uptrend": 0.2,
            "strong_uptrend": 0.1,
        }
    )
    momentum: dict[str, float] = Field(
        default_factory=lambda: {
            "oversold": 0.8,
            "bearish": 0.6,
            "overbought": 0.55,
            "neutral": 0.35,
            "bullish": 0.2,
        }
    )


class DecisionConfig(_Frozen):
    """Where a score becomes a class, and which conditions block new entries."""

    class_medium_from: float = Field(0.35, gt=0, lt=1)
    class_high_from: float = Field(0.55, gt=0, lt=1)
    class_very_high_from: float = Field(0.72, gt=0, lt=1)
    block_risk_score_from: float = Field(0.72, gt=0, le=1)
    block_on_panic: bool = True
    block_on_extreme_volatility: bool = True
    block_on_extreme_fear_downtrend: bool = True
    min_confidence: float = Field(0.3, ge=0, le=1, description="below this the guard is blind: not safe")
    max_data_age_candles: float = Field(
        2.0, gt=0, description="last candle closed longer ago than this many candles: stale, not safe"
    )

    @model_validator(mode="after")
    def _check(self) -> DecisionConfig:
        if not self.class_medium_from < self.class_high_from < self.class_very_high_from:
            raise ValueError("need class_medium_from < class_high_from < class_very_high_from")
        return self


class DataQualityConfig(_Frozen):
    """Bad-tick rule: a wick further than these ratios from the candle body is treated as a bad print.

    The rule looks at one candle only, so it is causal. The defaults repair LINK/USDT's 0.0001 low on
    2020-03-12 (a 99.99 % wick) but keep the real 2025-10-10 alt-coin wicks of about -55 %.
    """

    wick_floor_ratio: float = Field(0.2, gt=0, lt=1, description="low below body_low x this is bad")
    wick_ceiling_ratio: float = Field(5.0, gt=1, description="high above body_high x this is bad")


class MarketGuardConfig(_Frozen):
    """All market-guard parameters. Construct with overrides, e.g. MarketGuardConfig(panic={...})."""

    data_quality: DataQualityConfig = Field(default_factory=DataQualityConfig)
    indicators: IndicatorConfig = Field(default_factory=IndicatorConfig)
    volatility: VolatilityConfig = Field(default_factory=VolatilityConfig)
    trend: TrendConfig = Field(default_factory=TrendConfig)
    panic: PanicConfig = Field(default_factory=PanicConfig)
    specialist: SpecialistConfig = Field(default_factory=SpecialistConfig)
    external: ExternalConfig = Field(default_factory=ExternalConfig)
    weights: ScoreWeights = Field(default_factory=ScoreWeights)
    component_risk: ComponentRisk = Field(default_factory=ComponentRisk)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)

    @property
    def lookback_bars(self) -> int:
        """Candles needed for every indicator and rank to be fully warmed up."""
        ind = self.indicators
        return max(ind.ema_slow * 3, ind.vol_rank_window + ind.vol_window + 1)
