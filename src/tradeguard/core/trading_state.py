"""An account's trading state — ACTIVE / REDUCING / HALTED — derived from its breakers and the kill switch.

Mapping (the worst state wins; shadow breakers never count, they are only listed):
- kill switch engaged → HALTED.
- an enforced open breaker that is manual-reset (global_drawdown always is) → HALTED: nothing goes out
  until a person has looked.
- an enforced open breaker whose kind is in `reducing_kinds` → REDUCING: no new exposure, but orders that
  reduce exposure (exits, stop-losses, hedges that shrink a position) still go out. By default every
  automatic kind is reducing — drawdown, correlation, liquidation_distance, rapid_loss, daily_loss — the
  way Freqtrade's protections lock entries but let exits run; blocking exits in a crash adds risk.
- an enforced open breaker of any other kind (one removed from `reducing_kinds`) → HALTED.
- an enforced half-open breaker → ACTIVE, with new exposure limited to `probe_size_fraction` of normal
  size (`max_size_fraction`; the smallest if several apply).
- otherwise ACTIVE at full size (max_size_fraction 1). REDUCING and HALTED report max_size_fraction 0.

`order_allowed(state, reduces_exposure)`: ACTIVE → yes; REDUCING → only if it reduces exposure; HALTED → no.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from tradeguard.core.breakers import BREAKER_KINDS, BreakerState
from tradeguard.errors import InputError

DEFAULT_REDUCING_KINDS: frozenset[str] = frozenset(
    {"drawdown", "correlation", "liquidation_distance", "rapid_loss", "daily_loss"}
)
DEFAULT_PROBE_SIZE_FRACTION = 0.1


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


_RANK = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class TradingStateDecision(BaseModel):
    """The state, why, and which breakers (or "kill_switch") decided it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: TradingState
    max_size_fraction: float = Field(ge=0, le=1, description="new exposure allowed, vs normal size")
    decided_by: tuple[str, ...] = Field(description='"kill_switch" and/or breaker ids setting the state')
    reason_codes: tuple[str, ...]
    reasons: tuple[str, ...]
    probing: tuple[str, ...] = Field(description="enforced half-open breakers")
    shadow: tuple[str, ...] = Field(description="shadow breakers not closed: what would have acted")


def _effect(b: BreakerState, reducing_kinds: Collection[str]) -> tuple[TradingState, str]:
    """The state one open breaker imposes and its reason code."""
    if b.manual_reset or b.rule.always_manual:
        return TradingState.HALTED, f"{b.kind}_manual_reset"
    if b.kind in reducing_kinds:
        return TradingState.REDUCING, f"{b.kind}_open"
    return TradingState.HALTED, f"{b.kind}_open"


def trading_state(
    breakers: Iterable[BreakerState],
    kill_switch_engaged: bool,
    reducing_kinds: Collection[str] = DEFAULT_REDUCING_KINDS,
    probe_size_fraction: float = DEFAULT_PROBE_SIZE_FRACTION,
) -> TradingStateDecision:
    """Derive ACTIVE / REDUCING / HALTED from breaker states and the kill switch (see module docstring)."""
    unknown = set(reducing_kinds) - set(BREAKER_KINDS)
    if unknown:
        raise InputError(f"unknown breaker kinds in reducing_kinds: {', '.join(sorted(unknown))}")
    if not 0 < probe_size_fraction <= 1:
        raise InputError("probe_size_fraction must be in (0, 1]")
    imposed: list[tuple[TradingState, str, str, str]] = []  # (state, decider, code, sentence)
    if kill_switch_engaged:
        imposed.append((TradingState.HALTED, "kill_switch", "kill_switch", "The kill switch is engaged."))
    probing: list[BreakerState] = []
    shadow: list[str] = []
    for b in breakers:
        if b.state == "closed":
            continue
        if b.shadow:
            shadow.append(b.id)
            continue
        if b.state == "half_open":
            probing.append(b)
            continue
        state, code = _effect(b, reducing_kinds)
        imposed.append((state, b.id, code, b.last_reason or f"{b.kind} breaker {b.id} is open."))
    if imposed:
        worst = max(_RANK[s] for s, *_ in imposed)
        deciding = [item for item in imposed if _RANK[item[0]] == worst]
        state = deciding[0][0]
        return TradingStateDecision(
            state=state,
            max_size_fraction=0.0,
            decided_by=tuple(d for _, d, _, _ in deciding),
            reason_codes=tuple(c for _, _, c, _ in deciding),
            reasons=tuple(r for *_, r in deciding),
            probing=tuple(b.id for b in probing),
            shadow=tuple(shadow),
        )
    if probing:
        return TradingStateDecision(
            state=TradingState.ACTIVE,
            max_size_fraction=probe_size_fraction,
            decided_by=tuple(b.id for b in probing),
            reason_codes=tuple(f"{b.kind}_half_open" for b in probing),
            reasons=tuple(
                f"{b.kind} breaker {b.id} is half-open: probing at {probe_size_fraction:g} of normal size."
                for b in probing
            ),
            probing=tuple(b.id for b in probing),
            shadow=tuple(shadow),
        )
    return TradingStateDecision(
        state=TradingState.ACTIVE,
        max_size_fraction=1.0,
        decided_by=(),
        reason_codes=("all_clear",),
        reasons=("Kill switch off and every enforced breaker closed.",),
        probing=(),
        shadow=tuple(shadow),
    )


def order_allowed(state: TradingState | TradingStateDecision, reduces_exposure: bool) -> bool:
    """ACTIVE: any order; REDUCING: only exposure-reducing orders; HALTED: none."""
    s = state.state if isinstance(state, TradingStateDecision) else TradingState(state)
    if s is TradingState.ACTIVE:
        return True
    if s is TradingState.REDUCING:
        return reduces_exposure
    return False
