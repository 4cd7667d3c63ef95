"""Service-level figures of one account over a window [start, now], as pure functions of recorded history.

Definitions:
- window: a duration `<n>m`, `<n>h` or `<n>d` (e.g. 1h, 24h, 7d, 30d), at most 90 days, ending at now.
- time in trading state: the trading state is a step function, each change holding until the next. The
  share of the window spent ACTIVE / REDUCING / HALTED is that time over the window's length; time before
  the first known state (no change at or before it) is "unknown". The four shares sum to 1.
- breaker trips: transitions of enforced breakers to "open" because of a breach (reasons `tripped` and
  `probe_breached`), inside the window, in total and per kind. Shadow breakers are left out throughout.
- time to reset: an outage of a breaker runs from the trip that moved it out of "closed" until it is
  "closed" again — by a healthy probe, a manual reset or a new UTC day (daily_loss) — however many times it
  re-opened in between. The mean time to reset averages the outages that ended inside the window (they may
  have begun before it); an outage whose start is not in the history given has no known length and is not
  averaged. `manual_resets` counts the outages ended by an operator's reset inside the window.
- percentiles of observed values use the nearest rank: the ⌈q·n⌉-th smallest value.
- percentiles of a Prometheus histogram interpolate linearly inside the bucket the rank falls in (the
  first bucket starting at 0), as PromQL's `histogram_quantile` does; a rank in the +Inf bucket gives the
  largest finite bound.
Events after now are not seen.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from tradeguard.core.trading_state import TradingState
from tradeguard.errors import InputError

MAX_WINDOW: Final = timedelta(days=90)
UNKNOWN: Final = "unknown"
KNOWN_STATES: Final = tuple(s.value for s in TradingState)
STATES: Final = (*KNOWN_STATES, UNKNOWN)
TRIP_REASONS: Final = frozenset({"tripped", "probe_breached"})
_WINDOW = re.compile(r"([1-9][0-9]{0,5})([mhd])")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


def parse_window(text: str) -> timedelta:
    """`1h`, `24h`, `7d`, `30d` … (units m, h, d) as a timedelta; InputError unless 1 minute to 90 days."""
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise InputError(f"window {text!r}: use a whole number and a unit m, h or d, e.g. 1h, 24h, 7d, 30d")
    window = int(match[1]) * _UNIT[match[2]]
    if window > MAX_WINDOW:
        raise InputError(f"window {text!r} is longer than the maximum of {MAX_WINDOW.days}d")
    return window


def _span(start: datetime, now: datetime) -> None:
    if start.tzinfo is None or now.tzinfo is None:
        raise InputError("start and now must be timezone-aware")
    if now <= start:
        raise InputError(f"the window must end after it starts, got {start.isoformat()} → {now.isoformat()}")


def state_shares(
    initial: str | None, changes: Iterable[tuple[datetime, str]], start: datetime, now: datetime
) -> dict[str, float]:
    """Share (0–1) of [start, now] spent in each trading state, plus "unknown" (see module docstring).

    `initial`: the state in force at `start` (None: not known); `changes`: (ts, state) in time order.
    Changes before `start` replace `initial`; changes after `now` are ignored.
    """
    _span(start, now)
    spent = dict.fromkeys(STATES, timedelta(0))
    state, since = UNKNOWN if initial is None else _known(initial), start
    for ts, new in changes:
        new = _known(new)
        if ts > now:
            break
        if ts > since:
            spent[state] += ts - since
            since = ts
        state = new
    spent[state] += now - since
    total = now - start
    return {name: d / total for name, d in spent.items()}


def _known(state: str) -> str:
    if state not in KNOWN_STATES:
        raise InputError(f"unknown trading state {state!r}: expected one of {', '.join(KNOWN_STATES)}")
    return state


@dataclass(frozen=True, slots=True)
class BreakerChange:
    """The parts of a breaker transition (`core.breakers.Transition`) that the figures need."""

    at: datetime
    breaker_id: str
    kind: str
    from_state: str
    to_state: str
    reason: str
    enforced: bool = True


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """Trips, outages ended and their mean length inside a window (see module docstring)."""

    trips_by_kind: dict[str, int] = field(default_factory=dict)
    resets: int = 0  # outages ended in the window, of known length
    mean_time_to_reset_s: float | None = None
    manual_resets: int = 0

    @property
    def trips(self) -> int:
        return sum(self.trips_by_kind.values())


def breaker_stats(
    changes: Iterable[BreakerChange], start: datetime, now: datetime, kinds: Sequence[str] = ()
) -> BreakerStats:
    """Trips and time to reset in [start, now] from transitions in time order.

    Give the transitions of the window and, for every breaker not closed at `start`, the trip that began its
    outage (earlier transitions do no harm). `kinds` are listed in `trips_by_kind` even without trips.
    """
    _span(start, now)
    trips = dict.fromkeys(kinds, 0)
    opened: dict[str, datetime] = {}
    durations: list[float] = []
    manual = 0
    for c in changes:
        if c.at > now:
            break
        if not c.enforced:
            continue
        inside = c.at >= start
        if c.from_state == "closed" and c.to_state != "closed":
            opened[c.breaker_id] = c.at
        if inside and c.to_state == "open" and c.reason in TRIP_REASONS:
            trips[c.kind] = trips.get(c.kind, 0) + 1
        if c.to_state == "closed":
            began = opened.pop(c.breaker_id, None)
            if inside:
                if c.reason == "manual_reset":
                    manual += 1
                if began is not None:
                    durations.append((c.at - began).total_seconds())
    return BreakerStats(
        trips_by_kind=trips,
        resets=len(durations),
        mean_time_to_reset_s=math.fsum(durations) / len(durations) if durations else None,
        manual_resets=manual,
    )


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) of the values; None without any."""
    if not 0 < q <= 1:
        raise InputError(f"q must be in (0, 1], got {q!r}")
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(math.ceil(q * len(ordered) - 1e-9), 1) - 1]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram: (upper bound, count <= bound) by bound, the last +Inf.

    Linear interpolation inside the bucket the rank falls in (see module docstring); None when empty.
    """
    if not 0 < q <= 1:
        raise InputError(f"q must be in (0, 1], got {q!r}")
    if not buckets or not math.isinf(buckets[-1][0]):
        raise InputError("a histogram needs its +Inf bucket last")
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets[:-1]:
        if count >= rank:  # then count > below: the bucket before held fewer than rank
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower  # the rank is in the +Inf bucket
