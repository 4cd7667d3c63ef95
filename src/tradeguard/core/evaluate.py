"""Scores, flags and the safe-to-trade decision for a range of rows, shared by the single-point and the
history paths so that both give the same answer at every candle.

Composite risk score: a weighted mean of 0-1 components over those that are known (weights renormalised):
volatility (the vol percentile rank), regime, trend_strength and momentum (fixed risk per class, see
ComponentRisk) and external (see core.external.external_risk).

Confidence (0-1) = completeness x coverage x (0.75 + 0.25 x external share) x (0.6 + 0.4 x agreement):
completeness = candles available / lookback needed; coverage = share of candles present (no gap) in the
last `vol_window` candles' span; external share = known external sources / 5; agreement =
1 - min(1, 2 x stdev of the known components).

Blocks (each a reason code in blocked_by): insufficient_data (indicators not warmed up or confidence below
`min_confidence`), stale_data (last candle closed more than `max_data_age_candles` ago), panic,
extreme_volatility, extreme_fear_downtrend, risk_score (score >= block level).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tradeguard.core import classify
from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.external import ExternalAt, external_risk
from tradeguard.core.features import Features

COMPONENTS = ("volatility", "regime", "trend_strength", "momentum", "external")
FLAGS = (
    "flag_extreme_fear",
    "flag_high_volatility",
    "flag_downtrend",
    "flag_panic",
    "flag_stress",
    "flag_extreme_greed",
    "flag_extreme_funding",
    "flag_data_gap",
)
BLOCKS = (
    "insufficient_data",
    "stale_data",
    "panic",
    "extreme_volatility",
    "extreme_fear_downtrend",
    "risk_score",
)


@dataclass(frozen=True, slots=True, eq=False)
class Evaluation:
    """Every scalar output of the market guard for a range of rows (arrays aligned with those rows)."""

    labels: dict[str, np.ndarray]
    components: dict[str, np.ndarray]
    risk_score: np.ndarray
    risk_confidence: np.ndarray
    flags: dict[str, np.ndarray]
    blocks: dict[str, np.ndarray]

    @property
    def safe_to_trade(self) -> np.ndarray:
        return ~np.logical_or.reduce(list(self.blocks.values()))

    @property
    def recommendation(self) -> np.ndarray:
        cautious = np.isin(self.labels["risk_class"], ["high", "very_high"]) | np.logical_or.reduce(
            [
                self.flags[f]
                for f in (
                    "flag_high_volatility",
                    "flag_downtrend",
                    "flag_extreme_fear",
                    "flag_stress",
                    "flag_extreme_funding",
                    "flag_data_gap",
                )
            ]
        )
        out = np.where(cautious, "caution", "entry_ok").astype(object)
        out[~self.safe_to_trade] = "no_entry"
        return out


def evaluate(
    f: Features,
    rows: slice,
    n_candles: np.ndarray,
    data_age_candles: np.ndarray,
    ext: ExternalAt,
    config: MarketGuardConfig,
) -> Evaluation:
    """Classify, score and decide for `rows` of the features.

    `n_candles`: candles known at each row; `data_age_candles`: time since the last close, in candles.
    """
    cr = config.component_risk
    vol_rank = f.vol_rank[rows]
    vol_class = classify.volatility_class(vol_rank, config)
    trend = classify.trend_class(f, rows, config)
    momentum = classify.momentum_class(f.rsi[rows], config)
    regime = classify.regime(f, rows, vol_class, config)
    specialist = classify.specialist_regime(f, rows, config)

    ext_risk, ext_share = external_risk(ext, config.external)
    size = len(vol_rank)
    components = {
        "volatility": vol_rank,
        "regime": _lookup(regime, cr.regime),
        "trend_strength": _lookup(trend, cr.trend),
        "momentum": _lookup(momentum, cr.momentum),
        "external": np.broadcast_to(ext_risk, (size,)).astype(np.float64),
    }
    weights = config.weights.model_dump()
    stacked = np.vstack([components[c] for c in COMPONENTS])
    w = np.array([weights[c] for c in COMPONENTS])[:, None] * np.isfinite(stacked)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.nansum(stacked * w, axis=0) / w.sum(axis=0)
        spread = np.nanstd(np.where(w > 0, stacked, np.nan), axis=0)
    score = np.where(np.isfinite(vol_rank) & (regime != ""), score, np.nan)
    risk_cls = classify.risk_class(score, config)

    lookback = config.lookback_bars
    completeness = np.minimum(1.0, n_candles / lookback)
    window = config.indicators.vol_window
    missing = f.missing_in_window[rows]
    coverage = window / (window + missing)
    agreement = 1.0 - np.minimum(1.0, 2.0 * np.nan_to_num(spread))
    share = np.broadcast_to(ext_share, (size,))
    confidence = completeness * coverage * (0.75 + 0.25 * share) * (0.6 + 0.4 * agreement)
    confidence = np.where(np.isfinite(score), confidence, 0.0)

    xc = config.external
    fng = ext.values.get("fear_greed", np.full(size, np.nan))
    funding = ext.values.get("funding_rate", np.full(size, np.nan))
    with np.errstate(invalid="ignore"):
        flags = {
            "flag_extreme_fear": np.broadcast_to(fng <= xc.extreme_fear_at_or_below, (size,)),
            "flag_high_volatility": np.isin(vol_class, ["high", "extreme"]),
            "flag_downtrend": np.isin(trend, ["downtrend", "strong_downtrend"]),
            "flag_panic": regime == "panic",
            "flag_stress": specialist == "STRESS",
            "flag_extreme_greed": np.broadcast_to(fng >= xc.extreme_greed_at_or_above, (size,)),
            "flag_extreme_funding": np.broadcast_to(np.abs(funding) >= xc.funding_extreme_abs, (size,)),
            "flag_data_gap": missing > 0,
        }
    d = config.decision
    blocks = {
        "insufficient_data": ~np.isfinite(score) | (confidence < d.min_confidence),
        "stale_data": np.broadcast_to(data_age_candles > d.max_data_age_candles, (size,)),
        "panic": flags["flag_panic"] & d.block_on_panic,
        "extreme_volatility": (vol_class == "extreme") & d.block_on_extreme_volatility,
        "extreme_fear_downtrend": flags["flag_extreme_fear"]
        & flags["flag_downtrend"]
        & d.block_on_extreme_fear_downtrend,
        "risk_score": np.nan_to_num(score) >= d.block_risk_score_from,
    }
    labels = {
        "regime": regime,
        "specialist_regime": specialist,
        "volatility_classification": vol_class,
        "trend_classification": trend,
        "momentum_classification": momentum,
        "risk_class": risk_cls,
    }
    return Evaluation(
        labels=labels,
        components=components,
        risk_score=score,
        risk_confidence=confidence,
        flags={k: np.asarray(v, dtype=bool) for k, v in flags.items()},
        blocks={k: np.asarray(v, dtype=bool) for k, v in blocks.items()},
    )


def _lookup(labels: np.ndarray, table: dict[str, float]) -> np.ndarray:
    out = np.full(len(labels), np.nan)
    for label, value in table.items():
        out[labels == label] = value
    return out
