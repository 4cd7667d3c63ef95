"""Portfolio guard: one book per account from the events of every bot and exchange; on each change it
recomputes exposure, drawdown, correlation and liquidation distance, feeds the circuit breakers, derives the
trading state, runs the account's trip actions and records every risk event in the audit log.

Breaker readings (one breaker of each kind per account, thresholds from settings):
- drawdown: current drawdown % of the `drawdown_window` (default 24h) from its peak;
- global_drawdown: % below the trailing 30-day peak (manual reset);
- daily_loss: today's loss % of the capital at 00:00 UTC (open until the next UTC day);
- rapid_loss: loss % within the rapid-loss window (15 min);
- correlation: the largest |correlation| between active strategies;
- liquidation_distance: the smallest distance % to liquidation over all positions (inf without positions).
A reading that cannot be computed is passed as None (no reading): the breaker keeps its state.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import Any, Protocol, TypeVar

import numpy as np

from tradeguard.adapters.actions import TripAction, TripContext, run_actions
from tradeguard.adapters.store.guard_state import FLEET, GuardState, KillSwitchCache
from tradeguard.core import breakers as brk
from tradeguard.core.correlation import CorrelationConfig, CorrelationReport, correlation_report
from tradeguard.core.drawdown import DrawdownConfig, DrawdownMemo, DrawdownReport, drawdown_report
from tradeguard.core.events import (
    BalancePayload,
    EquityPayload,
    Event,
    PositionsPayload,
    StrategyReturnPayload,
)
from tradeguard.core.exposure import (
    ExposureConfig,
    ExposureReport,
    VenueState,
    aggregate_exposure,
    venue_states,
)
from tradeguard.core.liquidation import LiquidationReport, Tier, assess_positions
from tradeguard.core.trading_state import TradingStateDecision, trading_state
from tradeguard.errors import InputError

log = logging.getLogger(__name__)

NS = 1_000_000_000
P = TypeVar("P", EquityPayload, PositionsPayload, BalancePayload)
_TYPE_OF: dict[type, str] = {
    EquityPayload: "equity",
    PositionsPayload: "positions",
    BalancePayload: "balance",
}
HISTORY = timedelta(days=31)
READINGS_FLUSH_S = 1.0  # breakers whose only change is their last reading are written at most this often


class AuditSink(Protocol):
    def append(self, event_type: str, account: str, payload: dict[str, Any], now: datetime) -> Any: ...


@dataclass(frozen=True)
class PortfolioPolicy:
    """Thresholds and configs of the portfolio guard (built from settings)."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    shadow: frozenset[str] = frozenset()
    drawdown_window: str = "24h"
    drawdown: DrawdownConfig = field(default_factory=DrawdownConfig)
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    exposure: ExposureConfig = field(default_factory=ExposureConfig)
    breaker: brk.BreakerConfig = field(default_factory=brk.BreakerConfig)


class EquityPath:
    """An account's equity over time, in time order, as int64 ns and float64 arrays grown in place (appends
    and trims in amortized O(1)), so that the drawdown reads them without copying. `generation` changes
    whenever an observation is replaced or inserted before the last one (a `DrawdownMemo` is then stale)."""

    def __init__(self, capacity: int = 256) -> None:
        self._t = np.empty(capacity, dtype=np.int64)
        self._x = np.empty(capacity, dtype=np.float64)
        self._start = 0  # observations before it were trimmed
        self._end = 0
        self.generation = 0

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def times_ns(self) -> np.ndarray:
        return self._t[self._start : self._end]

    @property
    def values(self) -> np.ndarray:
        return self._x[self._start : self._end]

    def set(self, t_ns: int, value: float) -> None:
        """The equity as of `t_ns` (replaces an observation at the same instant)."""
        offset = len(self)  # where it goes, from the first kept observation: at the end, usually
        if offset and t_ns <= self._t[self._end - 1]:
            offset = int(np.searchsorted(self.times_ns, t_ns, side="right"))
            self.generation += 1
            if offset and self._t[self._start + offset - 1] == t_ns:
                self._x[self._start + offset - 1] = value
                return
        if self._end == len(self._t):
            self._make_room()
        i, end = self._start + offset, self._end
        self._t[i + 1 : end + 1] = self._t[i:end]
        self._x[i + 1 : end + 1] = self._x[i:end]
        self._t[i], self._x[i] = t_ns, value
        self._end = end + 1

    def trim(self, cutoff_ns: int) -> None:
        """Forget observations before `cutoff_ns` but the last of them (the equity in force at the cutoff)."""
        cut = int(np.searchsorted(self.times_ns, cutoff_ns, side="left"))
        if cut > 1:
            self._start += cut - 1

    def _make_room(self) -> None:
        size = len(self)
        capacity = len(self._t) if size <= len(self._t) // 2 else 2 * len(self._t)
        t, x = np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.float64)
        t[:size], x[:size] = self.times_ns, self.values
        self._t, self._x, self._start, self._end = t, x, 0, size


@dataclass
class AccountBook:
    """What the guard knows of one account: latest venue events, equity path, strategy returns."""

    latest: dict[tuple[str, str], Event] = field(default_factory=dict)  # (exchange, type) -> event
    equity: EquityPath = field(default_factory=EquityPath)
    drawdown_memo: DrawdownMemo = field(default_factory=DrawdownMemo)
    returns: dict[tuple[str, datetime], StrategyReturnPayload] = field(default_factory=dict)
    returns_version: int = 0
    last_return: dict[str, datetime] = field(default_factory=dict)  # strategy -> latest period_end

    def payload(self, exchange: str, kind: type[P]) -> P | None:
        """The latest payload of one type from one exchange (None if it never reported one)."""
        event = self.latest.get((exchange, _TYPE_OF[kind]))
        return event.payload if event is not None and isinstance(event.payload, kind) else None

    def add(self, event: Event) -> None:
        key = (event.exchange, event.type)
        payload = event.payload
        if isinstance(payload, StrategyReturnPayload):
            self.returns[(payload.strategy, payload.period_end)] = payload
            self.returns_version += 1
            last = self.last_return.get(payload.strategy)
            self.last_return[payload.strategy] = (
                payload.period_end if last is None else max(last, payload.period_end)
            )
            return
        current = self.latest.get(key)
        if current is None or event.ts >= current.ts:
            self.latest[key] = event
        if event.type == "equity":
            self._record_equity(event.ts)

    def _record_equity(self, ts: datetime) -> None:
        """Account equity (sum of every venue's latest) as of `ts`, kept in time order."""
        total = sum(
            e.payload.total_equity for e in self.latest.values() if isinstance(e.payload, EquityPayload)
        )
        if not math.isfinite(total):  # each is finite; only an absurd sum overflows (the path stays finite)
            log.warning("account equity overflows at %s: not recorded", ts.isoformat())
            return
        self.equity.set(int(ts.timestamp() * NS), total)

    def trim(self, now: datetime) -> None:
        self.equity.trim(int((now - HISTORY).timestamp() * NS))
        old = now - HISTORY
        self.returns = {k: v for k, v in self.returns.items() if v.period_end >= old}

    def events(self) -> list[Event]:
        return list(self.latest.values())


@dataclass(frozen=True)
class AccountRisk:
    """The guard's latest view of one account. `exposure` is computed on first use, from the venues as they
    stood at `evaluated_at`: no breaker reads it, so the decision does not wait for it."""

    account: str
    evaluated_at: datetime
    drawdown: DrawdownReport | None
    correlation: CorrelationReport
    liquidation: dict[str, LiquidationReport]
    readings: dict[str, float | None]
    trading: TradingStateDecision
    breakers: dict[str, brk.BreakerState]
    stale_venues: frozenset[str]  # `account:exchange` of the venues stale at evaluated_at
    _exposure: Callable[[], ExposureReport] = field(repr=False, compare=False)

    @cached_property
    def exposure(self) -> ExposureReport:
        return self._exposure()


@dataclass
class _Step:
    """One account's new readings and the breakers they move, before anything is persisted."""

    account: str
    venues: list[VenueState]
    drawdown: DrawdownReport | None
    correlation: CorrelationReport
    liquidation: dict[str, LiquidationReport]
    readings: dict[str, float | None]
    moved: dict[str, brk.BreakerState] = field(default_factory=dict)  # breaker id -> new state
    transitions: list[brk.Transition] = field(default_factory=list)
    material: bool = False  # some breaker changed more than its last reading


class PortfolioGuard:
    """Owns every account's book and breakers; see the module docstring for the readings.

    Breaker persistence: a change of state (a transition, the trip count) is written before the evaluation
    that made it is published. A change of the last reading alone is applied at once and written behind,
    at most every `readings_flush_s` (and with the next change of state): after a crash the stored readings
    may be that much older, and replaying the events after a restart computes them anew.
    """

    def __init__(
        self,
        policy: PortfolioPolicy,
        state: GuardState,
        clock: Callable[[], datetime],
        *,
        base_asset: Callable[[str, str | None], str],
        settle_currency: Callable[[str, str | None], str | None] | None = None,
        tiers: Mapping[str, Sequence[Tier]] | None = None,
        audit: AuditSink | None = None,
        actions: Mapping[str, Sequence[TripAction]] | None = None,
        readings_flush_s: float = READINGS_FLUSH_S,
    ) -> None:
        self.policy = policy
        self.state = state
        self.clock = clock
        self.base_asset = base_asset
        self.settle_currency = settle_currency
        self.tiers = dict(tiers or {})
        self.audit = audit
        self.actions = dict(actions or {})
        self.books: dict[str, AccountBook] = {}
        self.risk: dict[str, AccountRisk] = {}
        self.breakers: dict[str, dict[str, brk.BreakerState]] = {
            account: {bid: self._configured(brk.BreakerState.from_dict(s)) for bid, s in states.items()}
            for account, states in state.load_breakers().items()
        }
        self.kill_switches = KillSwitchCache(state)
        self.kill_switches.refresh()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._correlation: dict[str, tuple[tuple[int, int, frozenset[str]], CorrelationReport]] = {}
        self.readings_flush_s = readings_flush_s
        self._unsaved: dict[str, dict[str, brk.BreakerState]] = {}  # readings applied, not yet written
        self._flush: asyncio.Task[None] | None = None
        self._flushed_at = -math.inf  # time.monotonic() of the last flush started

    # --- intake ----------------------------------------------------------------------------------------

    async def on_events(self, events: Sequence[Event]) -> None:
        """Apply stored events and re-evaluate the accounts they touch, each once."""
        accounts: dict[str, None] = {}
        for event in sorted(events, key=lambda e: e.ts):
            self.books.setdefault(event.account, AccountBook()).add(event)
            accounts[event.account] = None
        if accounts:
            await self.evaluate_many(list(accounts))

    # --- evaluation ------------------------------------------------------------------------------------

    def _configured(self, breaker: brk.BreakerState) -> brk.BreakerState:
        """A restored breaker with the threshold and shadow mode configured now (its state kept): a changed
        setting applies to accounts that already have breakers, not only to new ones."""
        threshold = self.policy.thresholds.get(breaker.kind, brk.KIND_RULES[breaker.kind].default_threshold)
        shadow = breaker.kind in self.policy.shadow
        if (breaker.threshold, breaker.shadow) == (threshold, shadow):
            return breaker
        log.info(
            "breaker %s: threshold %g -> %g, shadow %s -> %s (settings changed)",
            breaker.id,
            breaker.threshold,
            threshold,
            breaker.shadow,
            shadow,
        )
        return breaker.model_copy(update={"threshold": threshold, "shadow": shadow})

    def _breakers_of(self, account: str) -> dict[str, brk.BreakerState]:
        existing = self.breakers.setdefault(account, {})
        for kind in brk.BREAKER_KINDS:
            if kind not in existing:
                existing[kind] = brk.new_breaker(
                    kind, kind, threshold=self.policy.thresholds.get(kind), shadow=kind in self.policy.shadow
                )
        return existing

    async def evaluate(self, account: str) -> AccountRisk:
        """Recompute one account's risk (see `evaluate_many`)."""
        return (await self.evaluate_many([account]))[0]

    async def evaluate_many(self, accounts: Sequence[str]) -> list[AccountRisk]:
        """Recompute the accounts' risk at one instant and move their breakers; changes of state are written
        (one transaction for all the accounts) before the new risk is published, then what changed is
        audited. Should that write fail, the breakers stay as they were and the error propagates."""
        async with self._lock:
            now = self.clock()
            steps = [self._step(account, now) for account in accounts]
            moved = {step.account: step.moved for step in steps if step.moved}
            if any(step.material for step in steps):
                await self._write(moved, now)
            else:
                self._queue(moved, now)
            published: list[tuple[AccountRisk, AccountRisk | None, list[brk.Transition]]] = []
            for step in steps:
                states = self._breakers_of(step.account)
                states.update(step.moved)
                risk = AccountRisk(
                    step.account,
                    now,
                    step.drawdown,
                    step.correlation,
                    step.liquidation,
                    step.readings,
                    self._trading(step.account, states),
                    dict(states),
                    _stale_venues(step.venues, now, self.policy.exposure),
                    partial(
                        aggregate_exposure,
                        step.venues,
                        self.base_asset,
                        now,
                        self.policy.exposure,
                        settle_currency=self.settle_currency,
                    ),
                )
                published.append((risk, self.risk.get(step.account), step.transitions))
                self.risk[step.account] = risk
        for risk, previous, transitions in published:
            await self._record(risk.account, risk, previous, transitions)
        return [risk for risk, _, _ in published]

    def _step(self, account: str, now: datetime) -> _Step:
        """The account's readings at `now` and where they move its breakers (nothing is changed yet)."""
        book = self.books.setdefault(account, AccountBook())
        book.trim(now)
        drawdown = self._drawdown(book, now)
        correlation = self._correlation_of(account, book, now)
        liquidation = self._liquidation(book, now)
        readings = self._readings(drawdown, correlation, liquidation)
        step = _Step(account, venue_states(book.events()), drawdown, correlation, liquidation, readings)
        for bid, current in self._breakers_of(account).items():
            new, moved = brk.evaluate(current, readings.get(current.kind), now, self.policy.breaker)
            if new != current:
                step.moved[bid] = new
                step.material = (
                    step.material or new.model_copy(update={"last_value": current.last_value}) != current
                )
            step.transitions += moved
        return step

    # --- persistence -----------------------------------------------------------------------------------

    async def _write(self, moved: Mapping[str, Mapping[str, brk.BreakerState]], now: datetime) -> None:
        """Write `moved` and the readings still unwritten, in one transaction, after any flush under way
        (so that an older reading never lands after a newer state). Called under the lock."""
        if self._flush is not None:
            await asyncio.wait([self._flush])
        rows = {account: dict(states) for account, states in self._unsaved.items()}
        for account, states in moved.items():
            rows.setdefault(account, {}).update(states)
        await asyncio.to_thread(self.state.save_breaker_states, _as_dicts(rows), now)
        self._unsaved.clear()

    def _queue(self, moved: Mapping[str, Mapping[str, brk.BreakerState]], now: datetime) -> None:
        """Queue changed readings; start writing them unless a flush is under way or one started less than
        `readings_flush_s` ago. Called under the lock."""
        for account, states in moved.items():
            self._unsaved.setdefault(account, {}).update(states)
        due = time.monotonic() - self._flushed_at >= self.readings_flush_s
        if self._unsaved and due and (self._flush is None or self._flush.done()):
            batch, self._unsaved = self._unsaved, {}
            self._flushed_at = time.monotonic()
            self._flush = asyncio.create_task(self._flush_readings(batch, now), name="breaker-readings")

    async def _flush_readings(self, batch: dict[str, dict[str, brk.BreakerState]], now: datetime) -> None:
        try:
            await asyncio.to_thread(self.state.save_breaker_states, _as_dicts(batch), now)
        except Exception:
            log.exception("writing the last readings of %d accounts' breakers failed; retried", len(batch))
            for account, states in batch.items():  # back in the queue, unless a newer one is there
                queued = self._unsaved.setdefault(account, {})
                for bid, state in states.items():
                    queued.setdefault(bid, state)

    def _correlation_of(self, account: str, book: AccountBook, now: datetime) -> CorrelationReport:
        """The correlation report, recomputed only when returns arrived, a bucket closed or a strategy fell
        silent since the last one (it depends on nothing else)."""
        cfg = self.policy.correlation
        silent = frozenset(s for s, last in book.last_return.items() if now - last > cfg.silent_after)
        key = (book.returns_version, int(now.timestamp() // cfg.freq.total_seconds()), silent)
        cached = self._correlation.get(account)
        if cached is not None and cached[0] == key:
            return cached[1]
        report = correlation_report(list(book.returns.values()), now, self.policy.correlation)
        self._correlation[account] = (key, report)
        return report

    def _drawdown(self, book: AccountBook, now: datetime) -> DrawdownReport | None:
        if not len(book.equity):
            return None
        try:
            return drawdown_report(
                book.equity.times_ns,
                book.equity.values,
                now,
                self.policy.drawdown,
                memo=book.drawdown_memo,
                generation=book.equity.generation,
                trusted=True,
            )
        except InputError as exc:
            log.warning("drawdown not computable: %s", exc)
            return None

    def _liquidation(self, book: AccountBook, now: datetime) -> dict[str, LiquidationReport]:
        out: dict[str, LiquidationReport] = {}
        for exchange in sorted({ex for ex, _ in book.latest}):
            positions = book.payload(exchange, PositionsPayload)
            if positions is not None:
                out[exchange] = assess_positions(
                    positions.positions, self._wallet(book, exchange), self.tiers, exchange, now
                )
        return out

    @staticmethod
    def _wallet(book: AccountBook, exchange: str) -> float | None:
        """Cross wallet balance: a stablecoin balance if reported, else equity minus unrealized PnL."""
        balance = book.payload(exchange, BalancePayload)
        if balance is not None:
            for currency in ("USDT", "USDC", "USD", "BUSD", "FDUSD"):
                if currency in balance.total:
                    return balance.total[currency]
        equity = book.payload(exchange, EquityPayload)
        if equity is None:
            return None
        positions = book.payload(exchange, PositionsPayload)
        upnl = sum(p.unrealizedPnl or 0.0 for p in positions.positions) if positions else 0.0
        return equity.total_equity - upnl

    def _readings(
        self, dd: DrawdownReport | None, corr: CorrelationReport, liq: dict[str, LiquidationReport]
    ) -> dict[str, float | None]:
        window = (
            next((w for w in dd.windows if w.window == self.policy.drawdown_window), None) if dd else None
        )
        distances = [r.min_distance_pct for r in liq.values() if r.min_distance_pct is not None]
        positions = any(r.positions for r in liq.values())
        return {
            "drawdown": window.current_pct if window else None,
            "global_drawdown": dd.global_drawdown.drawdown_pct if dd else None,
            "daily_loss": dd.daily.loss_pct if dd else None,
            "rapid_loss": dd.rapid_loss_pct if dd else None,
            "correlation": abs(corr.max_abs_correlation.correlation) if corr.max_abs_correlation else None,
            "liquidation_distance": min(distances) if distances else (None if positions else math.inf),
        }

    def _trading(self, account: str, states: Mapping[str, brk.BreakerState]) -> TradingStateDecision:
        engaged = self.kill_switches.get(account).engaged
        return trading_state(
            states.values(), engaged, probe_size_fraction=self.policy.breaker.probe_size_fraction
        )

    def fleet_exposure(self) -> ExposureReport:
        """Exposure of every account together: the fleet view (leverage adds up across accounts too)."""
        events = [e for book in self.books.values() for e in book.events()]
        return aggregate_exposure(
            venue_states(events),
            self.base_asset,
            self.clock(),
            self.policy.exposure,
            settle_currency=self.settle_currency,
        )

    async def snapshot(self, account: str) -> None:
        """Audit the account's aggregate exposure and correlation matrix as they stand (periodic evidence)."""
        risk = self.risk.get(account)
        if risk is None:
            return
        summary = risk.exposure.accounts.get(account)
        await self._audit(
            "risk.aggregate_snapshot",
            account,
            {
                "exposure": summary.model_dump(mode="json") if summary else None,
                "trading_state": risk.trading.state,
                "readings": _finite(risk.readings),
            },
            risk.evaluated_at,
        )
        corr = risk.correlation
        if corr.strategies:
            await self._audit(
                "risk.correlation_matrix",
                account,
                {
                    "current": corr.current,
                    "fast": corr.fast,
                    "slow": corr.slow,
                    "excluded": [s.strategy for s in corr.excluded],
                    "early_warning": corr.early_warning,
                },
                risk.evaluated_at,
            )

    # --- operator actions ------------------------------------------------------------------------------

    async def reset_breaker(self, account: str, breaker_id: str, by: str) -> brk.BreakerState:
        """Close a breaker by hand (the only way out for manual-reset breakers)."""
        async with self._lock:
            states = self._breakers_of(account)
            if breaker_id not in states:
                raise KeyError(breaker_id)
            now = self.clock()
            new, moved = brk.reset(states[breaker_id], now, by)
            await self._write({account: {breaker_id: new}}, now)
            states[breaker_id] = new
        for t in moved:
            await self._audit("risk.breaker.transition", account, t.to_dict(), now)
        await self.evaluate(account)
        return new

    async def set_kill_switch(self, account: str, engaged: bool, reason: str | None, by: str) -> None:
        """Engage or release the kill switch of an account (or `*` for the fleet) and re-evaluate."""
        now = self.clock()
        switch = await asyncio.to_thread(self.state.set_kill_switch, account, engaged, reason, by, now)
        self.kill_switches.apply(switch)
        await self._audit("risk.kill_switch", account, {"engaged": engaged, "reason": reason, "by": by}, now)
        await self.evaluate_many(list(self.books) if account == FLEET else [account])

    async def refresh_kill_switches(self) -> None:
        """Reload the kill switches from the store (another instance sharing it may have set one), then
        re-evaluate the accounts whose switch in force changed."""
        before = {account: self.kill_switches.get(account).engaged for account in self.books}
        await asyncio.to_thread(self.kill_switches.refresh)
        flipped = [a for a, engaged in before.items() if self.kill_switches.get(a).engaged != engaged]
        if flipped:
            await self.evaluate_many(flipped)

    # --- recording -------------------------------------------------------------------------------------

    async def _audit(self, event_type: str, account: str, payload: dict[str, Any], now: datetime) -> None:
        if self.audit is not None:
            await asyncio.to_thread(self.audit.append, event_type, account, payload, now)

    async def _record(
        self, account: str, risk: AccountRisk, previous: AccountRisk | None, transitions: list[brk.Transition]
    ) -> None:
        now = risk.evaluated_at
        for t in transitions:
            await self._audit("risk.breaker.transition", account, t.to_dict(), now)
            if t.to_state == "open" and t.enforced:
                self._trip(account, t)
        if previous is None or previous.trading.state != risk.trading.state:
            await self._audit(
                "risk.portfolio_check",
                account,
                {
                    "trading_state": risk.trading.state,
                    "decided_by": list(risk.trading.decided_by),
                    "reasons": list(risk.trading.reasons),
                    "readings": _finite(risk.readings),
                },
                now,
            )
        dd, prev_dd = risk.drawdown, previous.drawdown if previous else None
        if dd is not None and dd.level != "none" and (prev_dd is None or prev_dd.level != dd.level):
            await self._audit(
                "risk.drawdown_alert",
                account,
                {
                    "level": dd.level,
                    "window": dd.level_window,
                    "shape": dd.shape,
                    "reasons": list(dd.reasons),
                },
                now,
            )
        if risk.correlation.regime_change and not (previous and previous.correlation.regime_change):
            await self._audit(
                "risk.correlation_regime_change",
                account,
                {"score": risk.correlation.regime_change_score, "current": risk.correlation.current},
                now,
            )
        for exchange, report in risk.liquidation.items():
            before = previous.liquidation.get(exchange) if previous else None
            worst = _worst(report)
            if worst in ("warning", "critical") and (before is None or _worst(before) != worst):
                await self._audit(
                    "risk.liquidation_proximity",
                    account,
                    {
                        "exchange": exchange,
                        "status": worst,
                        "min_distance_pct": report.min_distance_pct,
                        "closest": report.closest.symbol if report.closest else None,
                    },
                    now,
                )
        before_stale = previous.stale_venues if previous else frozenset()
        for venue in sorted(risk.stale_venues - before_stale):
            await self._audit("risk.exchange_failure", account, {"venue": venue, "reason": "stale"}, now)

    def _trip(self, account: str, transition: brk.Transition) -> None:
        actions = self.actions.get(account, ())
        if not actions:
            return
        trip = TripContext(account, transition.breaker_id, transition.kind, transition.message, transition.at)

        async def run() -> None:
            outcomes = await run_actions(actions, trip)
            for outcome in outcomes:
                await self._audit("risk.breaker.action", account, outcome.as_dict(), self.clock())

        task = asyncio.create_task(run(), name=f"trip:{account}:{transition.breaker_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _stale_venues(venues: Sequence[VenueState], now: datetime, config: ExposureConfig) -> frozenset[str]:
    """`account:exchange` of the venues silent for longer than their limit at `now` (exposure's rule)."""
    return frozenset(
        f"{v.account}:{v.exchange}"
        for v in venues
        if (now - v.last_seen).total_seconds() > config.stale_limit_s(v.exchange)
    )


def _as_dicts(states: Mapping[str, Mapping[str, brk.BreakerState]]) -> dict[str, dict[str, dict[str, Any]]]:
    return {account: {bid: s.to_dict() for bid, s in by_id.items()} for account, by_id in states.items()}


def _worst(report: LiquidationReport) -> str:
    order = ("critical", "warning", "safe")
    return next((s for s in order if report.counts.get(s)), "safe")


def _finite(values: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (v if v is None or math.isfinite(v) else None) for k, v in values.items()}
