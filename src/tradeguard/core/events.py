"""The one event envelope bots send (HTTP batch or NATS), with a typed payload per event type.

Positions are the ccxt unified position structure (the subset the guard uses; extra ccxt keys are ignored).
Amounts are in the quote/settle currency named by the position or payload; times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EVENT_TYPES = ("equity", "positions", "balance", "trade", "strategy_return")
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a timezone (UTC)")
    return value.astimezone(UTC)


class Position(BaseModel):
    """One open position, ccxt unified fields (https://docs.ccxt.com/#/?id=position-structure)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    symbol: str = Field(min_length=1)
    side: Literal["long", "short"]
    contracts: float = Field(ge=0)
    contractSize: float = Field(1.0, gt=0)  # camelCase: ccxt's field names, kept as sent
    entryPrice: float | None = Field(None, gt=0)
    markPrice: float | None = Field(None, gt=0)
    notional: float | None = None
    leverage: float | None = Field(None, gt=0)
    marginMode: Literal["isolated", "cross"] | None = None
    unrealizedPnl: float | None = None
    initialMargin: float | None = Field(None, ge=0)
    collateral: float | None = Field(None, ge=0)
    liquidationPrice: float | None = Field(None, ge=0)

    @property
    def abs_notional(self) -> float | None:
        """|notional| in the settle currency: the reported one, else contracts x size x mark price."""
        if self.notional is not None:
            return abs(self.notional)
        if self.markPrice is not None:
            return self.contracts * self.contractSize * self.markPrice
        return None

    @property
    def signed_notional(self) -> float | None:
        n = self.abs_notional
        return None if n is None else (n if self.side == "long" else -n)


class EquityPayload(_Payload):
    total_equity: float = Field(ge=0, allow_inf_nan=False)
    currency: str = Field(min_length=1)


class PositionsPayload(_Payload):
    positions: list[Position]


class BalancePayload(_Payload):
    """ccxt balance totals per currency (free/used optional)."""

    total: dict[str, float]
    free: dict[str, float] | None = None
    used: dict[str, float] | None = None


class TradePayload(_Payload):
    symbol: str = Field(min_length=1)
    side: Literal["buy", "sell"]
    amount: float = Field(gt=0)
    price: float = Field(gt=0)
    realized_pnl: float = 0.0
    closed_at: datetime

    _utc_closed = field_validator("closed_at")(_utc)


class StrategyReturnPayload(_Payload):
    """A strategy's return over the period ending at `period_end`, as a ratio (0.01 = +1 %)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    strategy: Name
    period_end: datetime
    return_: float = Field(alias="return", gt=-1.0)

    _utc_end = field_validator("period_end")(_utc)


PAYLOADS: dict[str, type[_Payload]] = {
    "equity": EquityPayload,
    "positions": PositionsPayload,
    "balance": BalancePayload,
    "trade": TradePayload,
    "strategy_return": StrategyReturnPayload,
}
Payload = EquityPayload | PositionsPayload | BalancePayload | TradePayload | StrategyReturnPayload


class Event(BaseModel):
    """`{id, type, account, exchange, bot, ts, payload}`; `id` is the sender's idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Name
    type: Literal["equity", "positions", "balance", "trade", "strategy_return"]
    account: Name
    exchange: Name
    bot: Name
    ts: datetime
    payload: Payload

    _utc_ts = field_validator("ts")(_utc)

    @model_validator(mode="before")
    @classmethod
    def _typed_payload(cls, data: Any) -> Any:
        """Validate `payload` against the model of `type` (so errors name the right fields)."""
        if isinstance(data, dict) and isinstance(data.get("payload"), dict) and data.get("type") in PAYLOADS:
            data = {**data, "payload": PAYLOADS[data["type"]].model_validate(data["payload"])}
        return data

    def wire(self) -> dict[str, Any]:
        """The JSON form, as sent by bots (aliases restored: `return`)."""
        return self.model_dump(mode="json", by_alias=True)
