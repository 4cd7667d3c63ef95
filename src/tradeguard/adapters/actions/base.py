"""The port for what happens when a breaker trips, and the runner that retries and reports every action.

An action is anything with a ``name`` and ``async run(trip) -> ActionOutcome``: publish the trip, cancel
open orders, pause bots. An action signals failure by raising (an :class:`ActionError` says whether a
retry can help) or by returning an outcome with ``ok=False``. :func:`run_actions` runs each configured
action, retries failed attempts with :class:`~tradeguard.adapters.status.Backoff`, bounds every attempt by
a timeout and returns one outcome per action: a failure is logged and reported with its error, never
swallowed, and never stops the actions after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from tradeguard.adapters.status import Backoff
from tradeguard.errors import TradeguardError

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class ActionError(TradeguardError):
    """An action failed; ``retryable=False`` when trying again cannot help (bad credentials, bad config)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class TripContext:
    """What tripped: the account, which breaker, its kind and reason, when, and the state it left."""

    account: str
    breaker_id: str
    kind: str
    reason: str
    at: datetime
    state: str = "open"

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("TripContext.at must carry a timezone (UTC)")
        object.__setattr__(self, "at", self.at.astimezone(UTC))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``at`` as ISO-8601 UTC)."""
        return {
            "account": self.account,
            "breaker_id": self.breaker_id,
            "kind": self.kind,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """How one action ended: ``ok``, after how many ``attempts``, what it did, and why it failed.

    ``error`` is the last failure's message when ``ok`` is False; ``errors`` lists every failed attempt's
    message in order (also those a later attempt recovered from).
    """

    action: str
    ok: bool
    attempts: int = 1
    detail: str = ""
    error: str | None = None
    errors: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "ok": self.ok,
            "attempts": self.attempts,
            "detail": self.detail,
            "error": self.error,
            "errors": list(self.errors),
        }


@runtime_checkable
class TripAction(Protocol):
    """One thing to do when a breaker trips; raises (or returns ``ok=False``) when it could not."""

    @property
    def name(self) -> str: ...

    async def run(self, trip: TripContext) -> ActionOutcome: ...


@dataclass(frozen=True, slots=True)
class ActionPolicy:
    """Attempts per action, the backoff between them, a timeout per attempt, and an injectable sleep."""

    attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=10.0))
    timeout_s: float = 30.0
    sleep: Sleep = asyncio.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"ActionPolicy.attempts must be at least 1, got {self.attempts}")
        if self.timeout_s <= 0:
            raise ValueError(f"ActionPolicy.timeout_s must be positive, got {self.timeout_s}")


DEFAULT_POLICY = ActionPolicy()


async def run_actions(
    actions: Sequence[TripAction],
    trip: TripContext,
    policy: ActionPolicy = DEFAULT_POLICY,
    *,
    concurrent: bool = False,
) -> list[ActionOutcome]:
    """Run every action for ``trip`` and return their outcomes in the order given.

    By default the actions run one after the other, in order (list pauses before order cancels, so a bot
    cannot place orders after they were cancelled); ``concurrent=True`` runs them all at once.
    """
    if concurrent:
        return list(await asyncio.gather(*(run_action(a, trip, policy) for a in actions)))
    return [await run_action(action, trip, policy) for action in actions]


async def run_action(
    action: TripAction, trip: TripContext, policy: ActionPolicy = DEFAULT_POLICY
) -> ActionOutcome:
    """One action with retries; every failure ends in the outcome, none escapes as an exception."""
    name = _name(action)
    errors: list[str] = []
    attempt = 0
    while True:
        attempt += 1
        retryable, detail = True, ""
        try:
            outcome = await asyncio.wait_for(action.run(trip), timeout=policy.timeout_s)
        except TimeoutError:
            error = f"timed out after {policy.timeout_s:g}s"
        except ActionError as exc:
            error, retryable = _one_line(str(exc)) or type(exc).__name__, exc.retryable
        except Exception as exc:  # an unexpected error (or a bug) is reported like any other failure
            log.warning("action %s raised %s", name, type(exc).__name__, exc_info=True)
            error = _one_line(f"{type(exc).__name__}: {exc}")
        else:
            if outcome.ok:
                return replace(outcome, action=name, attempts=attempt, error=None, errors=tuple(errors))
            error, detail = outcome.error or outcome.detail or "failed without a message", outcome.detail
        errors.append(error)
        if not retryable or attempt >= policy.attempts:
            why = "not retryable" if not retryable else f"after {attempt} attempt(s)"
            log.error(
                "trip %s/%s: action %s failed (%s): %s", trip.account, trip.breaker_id, name, why, error
            )
            return ActionOutcome(name, False, attempt, detail=detail, error=error, errors=tuple(errors))
        delay = policy.backoff.delay(attempt - 1)
        log.warning("action %s failed (attempt %d): %s; retrying in %.1fs", name, attempt, error, delay)
        await policy.sleep(delay)


def _one_line(text: str, width: int = 1000) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _name(action: object) -> str:
    name = getattr(action, "name", None)
    return name if isinstance(name, str) and name else type(action).__name__
