"""Typed responses. The server's own models where a route answers one (the order decision, the trading state,
the exposure summary), extended with the members the route adds; unknown top-level members are kept
(`RiskAssessment`) or ignored, so a newer service does not break an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tradeguard.core.exposure import ExposureSummary
from tradeguard.core.order_check import OrderDecision
from tradeguard.core.trading_state import TradingState, TradingStateDecision


class RiskAssessment(BaseModel):
    """`GET /v1/risk`: a pair's market-guard assessment, or the market-wide view (`pair` None, `pairs` set).

    Members not named here (indicators, inputs_age_s, specialist_regime, ...) are kept as extra attributes.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    pair: str | None
    exchange: str | None = None
    timeframe: str
    as_of: datetime | None
    evaluated_at: datetime
    data_age_s: float | None
    stale: bool
    synthetic: bool
    source: str
    safe_to_trade: bool
    recommendation: str
    blocked_by: list[str]
    decided_by: str
    reasoning: list[str]
    risk_score: float | None
    risk_class: str | None
    risk_confidence: float
    regime: str | None
    event_flags: dict[str, bool]
    volatility: float | None = None
    volatility_classification: str | None = None
    trend_classification: str | None = None
    momentum_classification: str | None = None
    risk_breakdown: dict[str, float | None] | None = None
    pairs: dict[str, dict[str, object]] | None = None


class Portfolio(ExposureSummary):
    """`GET /v1/portfolio`: an account's exposure summary (`account` None and `accounts` set: the fleet)."""

    model_config = ConfigDict(extra="ignore")

    evaluated_at: datetime
    trading_state: TradingState | None = None
    accounts: dict[str, ExposureSummary] | None = None


class TradingStateReport(TradingStateDecision):
    """`GET /v1/trading-state`: ACTIVE / REDUCING / HALTED of an account, and why."""

    model_config = ConfigDict(extra="ignore")

    account: str
    evaluated_at: datetime


class ClientOrderDecision(OrderDecision):
    """`POST /v1/orders/check`'s `OrderDecision`, with where it came from.

    `source` is "service" for the guard's answer, "client_fallback" for a decision the client synthesized
    from `on_unavailable` because the service could not answer (then `reasons` holds one
    `guard_unavailable` reason from check "client", `checks` is empty and `trading_state` is None).
    """

    source: Literal["service", "client_fallback"] = "service"

    @property
    def synthesized(self) -> bool:
        """True when the client decided on its own (the service was unavailable)."""
        return self.source == "client_fallback"
