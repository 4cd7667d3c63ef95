"""Live market guard: per-pair candle state, the latest assessment of each pair, and the market-wide view.

The market-wide assessment combines the tracked pairs:
- `safe_to_trade` is false when any pair is in panic, when the market leader (the first tracked pair, BTC
  by default) is unsafe, or when at least half of the pairs are unsafe;
- `risk_score` is the larger of the median pair score and the leader's score; `risk_class` follows it;
- `regime` is panic if any pair panics, else the most common pair regime (ties: the riskier one);
- flags are set when any pair sets them; `pairs` lists every pair's verdict.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from tradeguard.core import classify
from tradeguard.core.assessment import assess
from tradeguard.core.candles import clean_candles
from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.external import ExternalData
from tradeguard.core.features import CandleArrays
from tradeguard.core.timeframe import timeframe_seconds

_REGIME_RISK_ORDER = ("panic", "high_vol", "bear", "choppy", "sideways", "bull")


@dataclass
class PairState:
    """Closed candles of one pair (newest `keep` of them) and its latest assessment."""

    exchange: str
    pair: str
    timeframe: str
    keep: int
    frame: pd.DataFrame = field(default_factory=lambda: pd.DataFrame())
    latest: dict[str, Any] | None = None
    candles: CandleArrays | None = None

    def add(self, candles: pd.DataFrame) -> int:
        """Merge closed candles (bad ticks repaired, duplicates dropped); returns how many were new."""
        tf_s = timeframe_seconds(self.timeframe)
        before = set(self.frame["date"]) if not self.frame.empty else set()
        merged = candles if self.frame.empty else pd.concat([self.frame, candles], ignore_index=True)
        clean, _ = clean_candles(merged, tf_s)
        self.frame = clean.iloc[-self.keep :].reset_index(drop=True)
        self.candles = CandleArrays.from_frame(self.frame, tf_s)
        return int((~candles["date"].isin(before)).sum())

    @property
    def last_close(self) -> datetime | None:
        if self.frame.empty:
            return None
        return (
            self.frame["date"].iloc[-1] + pd.Timedelta(seconds=timeframe_seconds(self.timeframe))
        ).to_pydatetime()

    def assess(self, external: ExternalData, now: datetime, config: MarketGuardConfig) -> dict[str, Any]:
        """Assess the pair at `now` and keep the answer as its latest (a JSON-ready dict)."""
        if self.candles is None:
            raise ValueError(f"{self.pair} has no candles yet")
        result = assess(self.candles, external, now, pair=self.pair, timeframe=self.timeframe, config=config)
        self.latest = {"exchange": self.exchange, **result.model_dump(mode="json")}
        return self.latest


def market_wide(
    assessments: list[dict[str, Any]], now: datetime, config: MarketGuardConfig
) -> dict[str, Any]:
    """Combine the latest pair assessments into one market answer (rules in the module docstring)."""
    if not assessments:
        raise ValueError("no pair has been assessed yet")
    leader = assessments[0]
    scores = [a["risk_score"] for a in assessments if a["risk_score"] is not None]
    unsafe = [a for a in assessments if not a["safe_to_trade"]]
    panics = [a["pair"] for a in assessments if a["event_flags"].get("flag_panic")]
    blocked: list[str] = []
    if panics:
        blocked.append("pair_panic")
    if not leader["safe_to_trade"]:
        blocked.append("leader_unsafe")
    if len(unsafe) * 2 >= len(assessments):
        blocked.append("majority_unsafe")
    score = None
    if scores:
        score = float(np.median(scores))
        if leader["risk_score"] is not None:
            score = max(score, leader["risk_score"])
    regimes = Counter(a["regime"] for a in assessments if a["regime"])
    if panics:
        regime = "panic"
    elif regimes:
        top = max(regimes.values())
        regime = min((r for r, c in regimes.items() if c == top), key=_REGIME_RISK_ORDER.index)
    else:
        regime = None
    flags = {k: any(a["event_flags"].get(k, False) for a in assessments) for k in leader["event_flags"]}
    reasoning = [
        f"{len(unsafe)} of {len(assessments)} tracked pairs are unsafe"
        + (f" ({', '.join(a['pair'] for a in unsafe)})." if unsafe else "."),
        f"Market leader {leader['pair']} is {'safe' if leader['safe_to_trade'] else 'unsafe'}"
        + (f" ({', '.join(leader['blocked_by'])})." if leader["blocked_by"] else "."),
    ]
    if panics:
        reasoning.append(f"Panic on {', '.join(panics)}.")
    risk_cls = None
    if score is not None:
        risk_cls = classify.risk_class(np.array([score]), config)[0] or None
    as_of = (
        min(a["as_of"] for a in assessments if a["as_of"]) if any(a["as_of"] for a in assessments) else None
    )
    return {
        "pair": None,
        "exchange": leader.get("exchange"),
        "timeframe": leader["timeframe"],
        "as_of": as_of,
        "evaluated_at": pd.Timestamp(now).isoformat(),
        "safe_to_trade": not blocked,
        "recommendation": "no_entry" if blocked else ("caution" if any(flags.values()) else "entry_ok"),
        "blocked_by": blocked,
        "decided_by": blocked[0] if blocked else "all_checks_passed",
        "reasoning": reasoning,
        "risk_score": score,
        "risk_class": risk_cls,
        "risk_confidence": float(min(a["risk_confidence"] for a in assessments)),
        "regime": regime,
        "event_flags": flags,
        **{k: leader.get(k) for k in ("fear_greed_index", "btc_dominance", "vix", "dxy")},
        "pairs": {
            a["pair"]: {
                "safe_to_trade": a["safe_to_trade"],
                "risk_score": a["risk_score"],
                "regime": a["regime"],
            }
            for a in assessments
        },
    }
