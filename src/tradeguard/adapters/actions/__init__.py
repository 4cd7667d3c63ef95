"""Actions on a breaker trip (publish it, cancel open orders, pause bots), retried and reported."""

from tradeguard.adapters.actions.base import (
    DEFAULT_POLICY,
    ActionError,
    ActionOutcome,
    ActionPolicy,
    TripAction,
    TripContext,
    run_action,
    run_actions,
)
from tradeguard.adapters.actions.cancel_orders import CancelOpenOrders
from tradeguard.adapters.actions.freqtrade import PauseFreqtrade
from tradeguard.adapters.actions.publish import PublishEvent

__all__ = [
    "DEFAULT_POLICY",
    "ActionError",
    "ActionOutcome",
    "ActionPolicy",
    "CancelOpenOrders",
    "PauseFreqtrade",
    "PublishEvent",
    "TripAction",
    "TripContext",
    "run_action",
    "run_actions",
]
