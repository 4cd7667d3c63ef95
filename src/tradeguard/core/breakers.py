"""Circuit breakers as a pure state machine: closed → open → half_open → closed, with an injected clock.

A breaker watches one trigger (its `kind`) and is fed that trigger's current value, the "observation":

kind                  observation                                      breaches at   default  reopens
drawdown              drawdown_pct from a window's peak                >= threshold  15       cooldown
correlation           max pairwise correlation (ratio, −1..1)          >= threshold  0.9      cooldown
liquidation_distance  min distance to liquidation, pct (inf: none)     <= threshold  5        cooldown
rapid_loss            loss pct within the rapid-loss window            >= threshold  5        cooldown
global_drawdown       drawdown_pct from the trailing 30-day peak       >= threshold  20       manual reset
daily_loss            today's loss, pct of capital (DailyLoss.loss_pct) >= threshold 5        next 00:00 UTC

Transitions (`evaluate(state, observation, now, config)`; clock-driven steps first, then the observation):
- closed + breach → open ("tripped"); trips += 1; cooldown = base_cooldown_s × 2^(trips−1), capped at
  max_cooldown_s (300, 600, 1200, 2400, 3600, 3600 …). daily_loss stays open until the next 00:00 UTC;
  manual-reset breakers (always global_drawdown) have no cooldown and stay open until `reset`.
- open, now >= cooldown_until → half_open ("cooldown_elapsed"), or for daily_loss → closed ("new_utc_day").
- half_open + breach → open again ("probe_breached") with trips += 1, so the next cooldown doubles.
- half_open + healthy observation → closed ("probe_healthy"), but only in a later evaluation than the one
  that entered half_open and once it has been half-open for half_open_min_s: the probe (orders at
  `probe_size_fraction` of normal size) must have had a chance to show. No observation (None) changes nothing.
- trips count consecutive trips: they survive a probe that closes the breaker and drop to 0 once it has
  stayed closed for trip_memory_s (default 3600 s), or on `reset`. So a breaker that re-trips soon after
  closing gets a doubled cooldown instead of flapping every 300 s.
- `reset(state, now, by)` closes any breaker (the only way out for manual-reset ones) and clears trips.
- shadow breakers move through the same states and record the same transitions with enforced=False; the
  trading state ignores them (they log, they don't halt).

States are frozen values; `to_dict`/`from_dict` give a JSON-safe round trip so state survives restarts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tradeguard.core.drawdown import next_utc_midnight
from tradeguard.errors import InputError

BreakerKind = Literal[
    "drawdown", "correlation", "liquidation_distance", "rapid_loss", "global_drawdown", "daily_loss"
]
CircuitState = Literal["closed", "open", "half_open"]
BREAKER_KINDS: tuple[BreakerKind, ...] = (
    "drawdown",
    "correlation",
    "liquidation_distance",
    "rapid_loss",
    "global_drawdown",
    "daily_loss",
)
TransitionReason = Literal[
    "tripped", "cooldown_elapsed", "new_utc_day", "probe_breached", "probe_healthy", "manual_reset"
]
REASONS: tuple[TransitionReason, ...] = (
    "tripped",
    "cooldown_elapsed",
    "new_utc_day",
    "probe_breached",
    "probe_healthy",
    "manual_reset",
)


@dataclass(frozen=True, slots=True)
class KindRule:
    """How a kind's observation is read: its name, breach direction, default threshold and reopening."""

    measure: str
    breaches_below: bool
    default_threshold: float
    always_manual: bool = False
    until_next_utc_day: bool = False


KIND_RULES: dict[str, KindRule] = {
    "drawdown": KindRule("drawdown_pct", False, 15.0),
    "correlation": KindRule("max_correlation_ratio", False, 0.9),
    "liquidation_distance": KindRule("min_liquidation_distance_pct", True, 5.0),
    "rapid_loss": KindRule("rapid_loss_pct", False, 5.0),
    "global_drawdown": KindRule("global_drawdown_pct", False, 20.0, always_manual=True),
    "daily_loss": KindRule("daily_loss_pct", False, 5.0, until_next_utc_day=True),
}


class BreakerConfig(BaseModel):
    """Timing of every breaker (thresholds live on each BreakerState)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_cooldown_s: float = Field(300.0, gt=0, description="cooldown after the first trip")
    max_cooldown_s: float = Field(3600.0, gt=0, description="cap of the doubling cooldown")
    probe_size_fraction: float = Field(0.1, gt=0, le=1, description="order size allowed while half-open")
    half_open_min_s: float = Field(60.0, ge=0, description="least time half-open before a probe can close it")
    trip_memory_s: float = Field(3600.0, ge=0, description="closed this long, consecutive trips reset to 0")

    @model_validator(mode="after")
    def _check(self) -> BreakerConfig:
        if self.max_cooldown_s < self.base_cooldown_s:
            raise ValueError("max_cooldown_s must be >= base_cooldown_s")
        return self

    def cooldown_s(self, trips: int) -> float:
        """base × 2^(trips−1), capped at max (trips >= 1)."""
        return min(self.base_cooldown_s * 2.0 ** min(max(trips, 1) - 1, 62), self.max_cooldown_s)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return value.astimezone(UTC)


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (ISO-8601 UTC times; infinite values as "Infinity")."""
        return json.loads(self.model_dump_json())


class BreakerState(_Value):
    """One breaker's persisted state."""

    id: str = Field(min_length=1, max_length=128)
    kind: BreakerKind
    state: CircuitState = "closed"
    trips: int = Field(0, ge=0, description="consecutive trips (see module docstring)")
    opened_at: datetime | None = None
    cooldown_until: datetime | None = Field(None, description="None while open: manual reset only")
    half_open_at: datetime | None = None
    closed_at: datetime | None = None
    manual_reset: bool = False
    shadow: bool = False
    last_reason: str = ""
    last_value: float | None = None
    threshold: float

    _utc_times = field_validator("opened_at", "cooldown_until", "half_open_at", "closed_at")(_utc)

    @model_validator(mode="after")
    def _check(self) -> BreakerState:
        rule = KIND_RULES[self.kind]
        if rule.always_manual and not self.manual_reset:
            raise ValueError(f"{self.kind} breakers are manual-reset only")
        if not math.isfinite(self.threshold):
            raise ValueError("threshold must be finite")
        if self.last_value is not None and math.isnan(self.last_value):
            raise ValueError("last_value cannot be NaN")
        if self.state == "open" and self.opened_at is None:
            raise ValueError("an open breaker needs opened_at")
        if self.state == "half_open" and self.half_open_at is None:
            raise ValueError("a half-open breaker needs half_open_at")
        return self

    @property
    def enforced(self) -> bool:
        """False for shadow breakers: they record what they would do, nothing more."""
        return not self.shadow

    @property
    def rule(self) -> KindRule:
        return KIND_RULES[self.kind]

    def breached_by(self, value: float) -> bool:
        """Whether an observation breaches this breaker's threshold (thresholds count when reached)."""
        return value <= self.threshold if self.rule.breaches_below else value >= self.threshold

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakerState:
        return cls.model_validate(data)


class Transition(_Value):
    """One state change, for the audit log and the bus."""

    breaker_id: str
    kind: BreakerKind
    from_state: CircuitState
    to_state: CircuitState
    reason: TransitionReason
    message: str
    value: float | None
    threshold: float
    at: datetime
    trips: int
    cooldown_until: datetime | None
    enforced: bool
    by: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transition:
        return cls.model_validate(data)


def new_breaker(
    id: str,
    kind: BreakerKind,
    *,
    threshold: float | None = None,
    manual_reset: bool | None = None,
    shadow: bool = False,
) -> BreakerState:
    """A closed breaker with the kind's defaults (global_drawdown is always manual-reset)."""
    if kind not in KIND_RULES:
        raise InputError(f"unknown breaker kind {kind!r}: expected one of {', '.join(BREAKER_KINDS)}")
    rule = KIND_RULES[kind]
    return BreakerState(
        id=id,
        kind=kind,
        threshold=rule.default_threshold if threshold is None else threshold,
        manual_reset=rule.always_manual if manual_reset is None else manual_reset,
        shadow=shadow,
    )


def _observation(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        raise InputError("observation is NaN: pass None when there is no reading")
    return value


def _now(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise InputError("now must be timezone-aware (UTC)")
    return now.astimezone(UTC)


def _describe(s: BreakerState, value: float | None) -> str:
    op = "<=" if s.rule.breaches_below else ">="
    shown = "no reading" if value is None else f"{value:g}"
    return f"{s.kind} breaker {s.id}: {s.rule.measure} {shown} (trips at {op} {s.threshold:g})"


def _move(
    s: BreakerState,
    to: CircuitState,
    reason: TransitionReason,
    message: str,
    value: float | None,
    now: datetime,
    by: str | None = None,
    **update: Any,
) -> tuple[BreakerState, Transition]:
    new = s.model_copy(update={"state": to, "last_reason": message, **update})
    return new, Transition(
        breaker_id=s.id,
        kind=s.kind,
        from_state=s.state,
        to_state=to,
        reason=reason,
        message=message,
        value=value,
        threshold=s.threshold,
        at=now,
        trips=new.trips,
        cooldown_until=new.cooldown_until,
        enforced=s.enforced,
        by=by,
    )


def _trip(
    s: BreakerState, value: float, now: datetime, reason: TransitionReason, config: BreakerConfig
) -> tuple[BreakerState, Transition]:
    trips = s.trips + 1
    if s.manual_reset:
        until, after = None, "stays open until a manual reset"
    elif s.rule.until_next_utc_day:
        until = next_utc_midnight(now)
        after = f"paused until {until.isoformat()}"
    else:
        cooldown = config.cooldown_s(trips)
        until = now + timedelta(seconds=cooldown)
        after = f"open for {cooldown:g}s (trip {trips}), then half-open"
    verb = "tripped" if reason == "tripped" else "probe breached, reopened"
    message = f"{_describe(s, value)}: {verb}; {after}."
    return _move(
        s,
        "open",
        reason,
        message,
        value,
        now,
        trips=trips,
        opened_at=now,
        cooldown_until=until,
        half_open_at=None,
    )


def evaluate(
    state: BreakerState, observation: float | None, now: datetime, config: BreakerConfig | None = None
) -> tuple[BreakerState, list[Transition]]:
    """Advance one breaker to `now` and apply the trigger's current value (None: no reading)."""
    config = config or BreakerConfig()
    now = _now(now)
    value = _observation(observation)
    s, out = state, []
    entered_half_open = False
    if s.state == "open" and s.cooldown_until is not None and not s.manual_reset and now >= s.cooldown_until:
        if s.rule.until_next_utc_day:
            message = f"{_describe(s, value)}: a new UTC day began; closed."
            s, t = _move(s, "closed", "new_utc_day", message, value, now, closed_at=now, cooldown_until=None)
        else:
            message = (
                f"{_describe(s, value)}: cooldown over; half-open, probing at "
                f"{config.probe_size_fraction:g} of normal size."
            )
            s, t = _move(s, "half_open", "cooldown_elapsed", message, value, now, half_open_at=now)
            entered_half_open = True
        out.append(t)
    if (
        s.state == "closed"
        and s.trips
        and s.closed_at is not None
        and (now - s.closed_at).total_seconds() >= config.trip_memory_s
    ):
        s = s.model_copy(update={"trips": 0})
    if value is None:
        return s, out
    breached = s.breached_by(value)
    if s.state == "closed" and breached:
        s, t = _trip(s, value, now, "tripped", config)
        out.append(t)
    elif s.state == "half_open" and breached:
        s, t = _trip(s, value, now, "probe_breached", config)
        out.append(t)
    elif (
        s.state == "half_open"
        and not entered_half_open
        and s.half_open_at is not None
        and (now - s.half_open_at).total_seconds() >= config.half_open_min_s
    ):
        message = f"{_describe(s, value)}: healthy after the probe; closed."
        s, t = _move(
            s,
            "closed",
            "probe_healthy",
            message,
            value,
            now,
            closed_at=now,
            cooldown_until=None,
            half_open_at=None,
        )
        out.append(t)
    return s.model_copy(update={"last_value": value}), out


def reset(state: BreakerState, now: datetime, by: str) -> tuple[BreakerState, list[Transition]]:
    """Close a breaker by hand (`by` names who) and clear its trips; the only way out for manual ones."""
    now = _now(now)
    if not by.strip():
        raise InputError("reset needs who did it (by)")
    cleared = {"trips": 0, "cooldown_until": None, "half_open_at": None}
    if state.state == "closed":
        return state.model_copy(update=cleared), []
    message = f"{_describe(state, state.last_value)}: reset by {by}; closed."
    new, t = _move(
        state, "closed", "manual_reset", message, state.last_value, now, by=by, closed_at=now, **cleared
    )
    return new, [t]
