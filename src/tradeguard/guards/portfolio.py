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
import bisect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import numpy as np

from tradeguard.adapters.actions import TripAction, TripContext, run_actions
from tradeguard.adapters.store.guard_state import FLEET, GuardState
from tradeguard.core import breakers as brk
from tradeguard.core.correlation import CorrelationConfig, CorrelationReport, correlation_report
from tradeguard.core.drawdown import DrawdownConfig, DrawdownReport, drawdown_report
from tradeguard.core.events import (
    BalancePayload,
    EquityPayload,
    Event,
    PositionsPayload,
    StrategyReturnPayload,
)
from tradeguard.core.exposure import ExposureConfig, ExposureReport, aggregate_exposure, venue_states
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


@dataclass
class AccountBook:
    """What the guard knows of one account: latest venue events, equity path, strategy returns."""

    latest: dict[tuple[str, str], Event] = field(default_factory=dict)  # (exchange, type) -> event
    equity_ns: list[int] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
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
        t_ns = int(ts.timestamp() * NS)
        i = bisect.bisect_right(self.equity_ns, t_ns)
        if i and self.equity_ns[i - 1] == t_ns:
            self.equity[i - 1] = total
        else:
            self.equity_ns.insert(i, t_ns)
            self.equity.insert(i, total)

    def trim(self, now: datetime) -> None:
        cutoff = int((now - HISTORY).timestamp() * NS)
        cut = bisect.bisect_left(self.equity_ns, cutoff)
        if cut > 1:  # keep one point before the cutoff: the equity in force at the window's start
            del self.equity_ns[: cut - 1], self.equity[: cut - 1]
        old = now - HISTORY
        self.returns = {k: v for k, v in self.returns.items() if v.period_end >= old}

    def events(self) -> list[Event]:
        return list(self.latest.values())


@dataclass(frozen=True)
class AccountRisk:
    """The guard's latest view of one account."""

    account: str
    evaluated_at: datetime
    exposure: ExposureReport
    drawdown: DrawdownReport | None
    correlation: CorrelationReport
    liquidation: dict[str, LiquidationReport]
    readings: dict[str, float | None]
    trading: TradingStateDecision
    breakers: dict[str, brk.BreakerState]


class PortfolioGuard:
    """Owns every account's book and breakers; see the module docstring for the readings."""

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
            account: {bid: brk.BreakerState.from_dict(s) for bid, s in states.items()}
            for account, states in state.load_breakers().items()
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._correlation: dict[str, tuple[tuple[int, int, frozenset[str]], CorrelationReport]] = {}

    # --- intake ----------------------------------------------------------------------------------------

    async def on_events(self, events: Sequence[Event]) -> None:
        """Apply stored events and re-evaluate the accounts they touch."""
        accounts: list[str] = []
        for event in sorted(events, key=lambda e: e.ts):
            self.books.setdefault(event.account, AccountBook()).add(event)
            if event.account not in accounts:
                accounts.append(event.account)
        for account in accounts:
            await self.evaluate(account)

    # --- evaluation ------------------------------------------------------------------------------------

    def _breakers_of(self, account: str) -> dict[str, brk.BreakerState]:
        existing = self.breakers.setdefault(account, {})
        for kind in brk.BREAKER_KINDS:
            if kind not in existing:
                existing[kind] = brk.new_breaker(
                    kind, kind, threshold=self.policy.thresholds.get(kind), shadow=kind in self.policy.shadow
                )
        return existing

    async def evaluate(self, account: str) -> AccountRisk:
        """Recompute the account's risk, move its breakers, persist and audit what changed."""
        async with self._lock:
            now = self.clock()
            book = self.books.setdefault(account, AccountBook())
            book.trim(now)
            exposure = aggregate_exposure(
                venue_states(book.events()),
                self.base_asset,
                now,
                self.policy.exposure,
                settle_currency=self.settle_currency,
            )
            drawdown = self._drawdown(book, now)
            correlation = self._correlation_of(account, book, now)
            liquidation = self._liquidation(book, now)
            readings = self._readings(drawdown, correlation, liquidation)
            previous = self.risk.get(account)
            states = self._breakers_of(account)
            changed: dict[str, dict[str, Any]] = {}
            transitions: list[brk.Transition] = []
            for bid, current in states.items():
                new, moved = brk.evaluate(current, readings.get(current.kind), now, self.policy.breaker)
                if new != current:
                    states[bid] = new
                    changed[bid] = new.to_dict()
                transitions += moved
            if changed:
                await asyncio.to_thread(self.state.save_breakers, account, changed, now)
            trading = self._trading(account, states)
            risk = AccountRisk(
                account, now, exposure, drawdown, correlation, liquidation, readings, trading, dict(states)
            )
            self.risk[account] = risk
        await self._record(account, risk, previous, transitions)
        return risk

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
        if not book.equity_ns:
            return None
        try:
            return drawdown_report(
                np.array(book.equity_ns, dtype=np.int64), np.array(book.equity), now, self.policy.drawdown
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
        engaged = self.state.kill_switch(account).engaged
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
        states = self._breakers_of(account)
        if breaker_id not in states:
            raise KeyError(breaker_id)
        now = self.clock()
        new, moved = brk.reset(states[breaker_id], now, by)
        states[breaker_id] = new
        await asyncio.to_thread(self.state.save_breakers, account, {breaker_id: new.to_dict()}, now)
        for t in moved:
            await self._audit("risk.breaker.transition", account, t.to_dict(), now)
        await self.evaluate(account)
        return new

    async def set_kill_switch(self, account: str, engaged: bool, reason: str | None, by: str) -> None:
        """Engage or release the kill switch of an account (or `*` for the fleet) and re-evaluate."""
        now = self.clock()
        await asyncio.to_thread(self.state.set_kill_switch, account, engaged, reason, by, now)
        await self._audit("risk.kill_switch", account, {"engaged": engaged, "reason": reason, "by": by}, now)
        for name in list(self.books) if account == FLEET else [account]:
            await self.evaluate(name)

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
        stale = {f"{v.account}:{v.exchange}" for v in risk.exposure.fleet.stale}
        before_stale = (
            {f"{v.account}:{v.exchange}" for v in previous.exposure.fleet.stale} if previous else set()
        )
        for venue in sorted(stale - before_stale):
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


def _worst(report: LiquidationReport) -> str:
    order = ("critical", "warning", "safe")
    return next((s for s in order if report.counts.get(s)), "safe")


def _finite(values: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (v if v is None or math.isfinite(v) else None) for k, v in values.items()}
