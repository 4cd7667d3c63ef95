"""`risk.thresholds_updated`: the limits the guards enforce, audited whenever they change.

At every start the service writes the thresholds in force — breaker thresholds (defaults filled in),
shadow breakers, drawdown, correlation, breaker timing and exposure settings, and the order guard's limits
— into the audit trail if they differ from the last recorded ones, with the previous values and the list
of what changed. So the trail answers "what limit was in force when this was decided?".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from tradeguard.adapters.store.audit_log import AuditLog
from tradeguard.core import audit
from tradeguard.core.audit import AuditRecord
from tradeguard.core.breakers import BREAKER_KINDS, KIND_RULES
from tradeguard.guards.order import OrderPolicy
from tradeguard.guards.portfolio import PortfolioPolicy

# The order guard's limits (not its wiring): what a reader of the trail needs to judge a decision.
ORDER_LIMITS = (
    "rate_per_s",
    "rate_burst",
    "caps",
    "anomaly",
    "var_limits_pct",
    "var_confidence",
    "var_scenarios",
    "var_lookback_days",
    "book",
    "kill_switch_max_age_s",
    "bus_max_age_s",
    "accounts",
    "default_account",
)


def thresholds_in_force(portfolio: PortfolioPolicy, orders: OrderPolicy | None = None) -> dict[str, Any]:
    """The guards' limits as plain JSON values."""
    out: dict[str, Any] = {
        "breakers": {
            kind: {
                "threshold": portfolio.thresholds.get(kind, KIND_RULES[kind].default_threshold),
                "shadow": kind in portfolio.shadow,
            }
            for kind in BREAKER_KINDS
        },
        "drawdown_window": portfolio.drawdown_window,
        "drawdown": _plain(portfolio.drawdown),
        "correlation": _plain(portfolio.correlation),
        "breaker_timing": _plain(portfolio.breaker),
        "exposure": _plain(portfolio.exposure),
    }
    if orders is not None:
        out["orders"] = {name: _plain(getattr(orders, name)) for name in ORDER_LIMITS}
    return out


def record_thresholds(log: AuditLog, thresholds: Mapping[str, Any], now: datetime) -> AuditRecord | None:
    """Append `risk.thresholds_updated` unless the last one recorded the same thresholds; the new record."""
    last = log.latest(audit.THRESHOLDS_UPDATED)
    previous = last.payload.get("thresholds") if last is not None else None
    current = _plain(thresholds)
    if previous == current:
        return None
    payload = {"thresholds": current, "previous": previous, "changed": _changed(previous or {}, current)}
    return log.append(audit.THRESHOLDS_UPDATED, None, payload, now)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):  # field by field: model_dump keeps a frozenset's arbitrary order
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, Set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _changed(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose values differ (added, removed or changed)."""
    out = []
    for key in sorted({*before, *after}):
        path = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out += _changed(old, new, f"{path}.")
        elif old != new:
            out.append(path)
    return out
