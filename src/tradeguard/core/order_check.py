"""The pre-trade check's contract: the order a bot asks about and the guard's decision.

`POST /v1/orders/check` takes an `OrderRequest` and answers an `OrderDecision`; the Python client uses the
same models. Amounts are in base units of the symbol, prices in its quote currency; `allowed_amount` is the
amount the bot may send (0 when blocked or delayed, less than asked when reduced).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tradeguard.core.events import Name
from tradeguard.core.trading_state import TradingState

Decision = Literal["allow", "reduce", "delay", "block"]
CheckStatus = Literal["pass", "fail", "error", "skipped"]

# The checks in the order they run (the response lists every one of them).
# `store` and `bus` are the dependencies every decision needs (audit writes, event intake); `prices` is the
# fresh order book the priced checks use; `redis` holds the per-bot rate limit shared by replicas (when set).
CHECKS: tuple[str, ...] = (
    "store",
    "bus",
    "kill_switch",
    "trading_state",
    "instrument",
    "redis",
    "rate_limit",
    "prices",
    "notional_cap",
    "daily_loss",
    "anomaly",
    "market_guard",
    "var",
    "order_book",
)


class OrderRequest(BaseModel):
    """One order a bot is about to send."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: Name
    bot: Name
    exchange: Name
    symbol: str = Field(min_length=1, max_length=64, examples=["BTC/USDT"])
    side: Literal["buy", "sell"]
    amount: float = Field(gt=0, allow_inf_nan=False, description="base units")
    price: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="limit price; null for market orders"
    )
    type: Literal["market", "limit"]
    leverage: float | None = Field(None, gt=0, le=200, allow_inf_nan=False)
    reduce_only: bool = False
    mode: Literal["live", "paper"]
    client_order_id: str | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _price_matches_type(self) -> OrderRequest:
        if self.type == "limit" and self.price is None:
            raise ValueError("a limit order needs a price")
        if self.type == "market" and self.price is not None:
            raise ValueError("a market order takes no price (send null)")
        return self


class Reason(BaseModel):
    """Why a check did not pass: a stable code, the check, and a sentence for people."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(examples=["notional_cap_exceeded", "check_error:var"])
    check: str
    message: str


class CheckResult(BaseModel):
    """One check's outcome; `value` and `limit` are what it compared (null when not numeric)."""

    model_config = ConfigDict(frozen=True)

    status: CheckStatus
    value: float | str | bool | None = None
    limit: float | str | None = None


class VarReport(BaseModel):
    """The account's Monte Carlo VaR as % of equity, before and with the order."""

    model_config = ConfigDict(frozen=True)

    before_pct: float | None
    after_pct: float | None
    limit_pct: float | None
    confidence: float = 0.95
    horizon_days: int = 1
    scenarios: int = 0


class OrderDecision(BaseModel):
    """The guard's answer to one `OrderRequest`."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    allowed_amount: float = Field(ge=0)
    retry_after_ms: int | None = Field(None, ge=0, description="set when decision is delay")
    reasons: list[Reason]
    checks: dict[str, CheckResult]
    var: VarReport
    trading_state: TradingState | None
    evaluated_at: datetime
    latency_ms: float = Field(ge=0)

    @field_validator("evaluated_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
