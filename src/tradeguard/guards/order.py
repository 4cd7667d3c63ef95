"""Order guard: the pre-trade check of one order (`check`), in the order of `core.order_check.CHECKS`.

Dependencies first (`store`: the audit queue keeps up; `bus`: the NATS intake is connected), then:
kill switch → trading state → instrument (ccxt metadata: listed, precision, min/max amount, min notional) →
per-bot rate limit (`redis`: one bucket per bot shared by every replica when configured, else in-process) →
prices (a fresh order book: mark = mid) → notional cap (earned by the bot's record, see `core.bot_record`) →
daily loss breaker → anomaly (`core.order_anomaly`) → market guard → Monte Carlo VaR
(`core.var`, cached per account) → order-book gates (`core.order_book`).

Each check passes, fails, errors or is skipped. A failure blocks, reduces the amount (cap, probe size,
market guard per account policy, book imbalance) or delays (rate limit, microprice). A check that cannot run
is an `error`: in `live` mode it blocks with reason `check_error:<check>` (fail-closed); in `paper` mode it is
listed and the order goes on (fail-open). After a block the remaining checks are `skipped`.

Reduce-only orders (and, in a REDUCING state, orders that shrink the account's net exposure) take no new risk:
they pass the kill switch and trading state when those only allow exits, and skip the checks that price risk
(cap, daily loss, anomaly, market guard, VaR, book). No outage traps a position: a reduce-only order (the
exchange enforces the flag) is never blocked by a check that could not run — store, bus, kill-switch view,
Redis, instrument metadata — the errors are listed, as for paper orders; an outage cannot be stricter than
an engaged kill switch. During a Redis outage the exiting orders are rate-limited in process.

Allowed and reduced orders feed the bot's rate limit and its order-size history; every decision is audited
(`risk.order_decision`) through the audit queue.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from tradeguard.adapters.order_market_data import STABLECOINS, ExchangeMarketData
from tradeguard.adapters.status import SourceStatus
from tradeguard.core import audit as audit_types
from tradeguard.core.bot_record import BotRecord, CapPolicy, cap_tier
from tradeguard.core.events import Event, StrategyReturnPayload, TradePayload
from tradeguard.core.order_anomaly import AnomalyPolicy, hourly_sigma, price_verdict, size_verdict
from tradeguard.core.order_book import BookSnapshot, OrderBookConfig, book_gate
from tradeguard.core.order_check import (
    CHECKS,
    CheckResult,
    CheckStatus,
    OrderDecision,
    OrderRequest,
    Reason,
    VarReport,
)
from tradeguard.core.rate_limit import TokenBucket
from tradeguard.core.trading_state import TradingState, TradingStateDecision, trading_state
from tradeguard.core.var import PortfolioVar, ScenarioSet, bootstrap_scenarios, daily_returns
from tradeguard.guards.portfolio import AccountRisk, PortfolioGuard

log = logging.getLogger(__name__)

RiskLevel = Literal["conservative", "balanced", "aggressive"]
VAR_LIMITS_PCT: Mapping[str, float] = {"conservative": 8.0, "balanced": 15.0, "aggressive": 25.0}


class BookSource(Protocol):
    async def get(self, symbol: str) -> BookSnapshot: ...

    def cached(self, symbol: str) -> BookSnapshot | None: ...


class SharedRateLimit(Protocol):
    """Per-bot token buckets shared by every replica (`adapters.redis_rate_limit`)."""

    async def take(self, account: str, bot: str) -> float: ...

    async def give_back(self, account: str, bot: str) -> None: ...


class AuditSink(Protocol):
    def put(self, event_type: str, account: str | None, payload: Mapping[str, Any], ts: datetime) -> None: ...

    def health(self) -> str | None: ...

    @property
    def backlog(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Venue:
    """One exchange as the order guard sees it: metadata and price history, and its order books."""

    data: ExchangeMarketData
    books: BookSource


@dataclass(frozen=True, slots=True)
class AccountOrderPolicy:
    risk_level: RiskLevel = "balanced"
    market_guard_action: Literal["block", "reduce"] = "block"
    market_guard_fraction: float = 0.5


@dataclass(frozen=True)
class OrderPolicy:
    rate_per_s: float = 10.0
    rate_burst: int = 10
    caps: CapPolicy = field(default_factory=CapPolicy)
    anomaly: AnomalyPolicy = field(default_factory=AnomalyPolicy)
    var_limits_pct: Mapping[str, float] = field(default_factory=lambda: dict(VAR_LIMITS_PCT))
    var_confidence: float = 0.95
    var_scenarios: int = 10_000
    var_lookback_days: int = 90
    book: OrderBookConfig = field(default_factory=OrderBookConfig)
    kill_switch_max_age_s: float = 5.0
    bus_max_age_s: float = 60.0
    accounts: Mapping[str, AccountOrderPolicy] = field(default_factory=dict)
    default_account: AccountOrderPolicy = AccountOrderPolicy()

    def account(self, name: str) -> AccountOrderPolicy:
        return self.accounts.get(name, self.default_account)


class _Stop(Exception):
    """The order is blocked: the remaining checks are skipped."""


@dataclass
class _Run:
    """One check in progress: outcomes, reasons and the amount still allowed."""

    req: OrderRequest
    checks: dict[str, CheckResult] = field(default_factory=dict)
    reasons: list[Reason] = field(default_factory=list)
    allowed: float = 0.0
    retry_after_ms: int | None = None
    blocked: bool = False
    base: str | None = None
    market: Mapping[str, Any] | None = None
    book: BookSnapshot | None = None
    mark: float | None = None
    risk: AccountRisk | None = None
    reduces: bool = False
    trading: TradingStateDecision | None = None
    var: VarReport = field(default_factory=lambda: VarReport(before_pct=None, after_pct=None, limit_pct=None))

    def __post_init__(self) -> None:
        self.allowed = self.req.amount

    @property
    def price(self) -> float | None:
        return self.req.price if self.req.price is not None else self.mark

    def done(self, check: str, status: CheckStatus, value: Any = None, limit: Any = None) -> None:
        """Record an outcome (a failure or error already recorded for the check stands)."""
        current = self.checks.get(check)
        if current is None or current.status not in ("fail", "error") or status in ("fail", "error"):
            self.checks[check] = CheckResult(status=status, value=value, limit=limit)

    def fail(
        self,
        check: str,
        code: str,
        message: str,
        *,
        value: Any = None,
        limit: Any = None,
        amount: float | None = None,
        delay_ms: int | None = None,
    ) -> None:
        """A failed check: reduce to `amount`, delay by `delay_ms`, or (neither given) block."""
        self.done(check, "fail", value, limit)
        self.reasons.append(Reason(code=code, check=check, message=message))
        if delay_ms is not None:
            self.retry_after_ms = max(self.retry_after_ms or 0, delay_ms)
        elif amount is not None and amount > 0:
            self.allowed = min(self.allowed, amount)
        else:
            self.blocked = True
            raise _Stop

    def error(self, check: str, message: str, *, fail_open: bool = False) -> None:
        """A check that could not run: blocks live orders (unless `fail_open` or reduce-only), is listed for
        paper ones."""
        self.done(check, "error", message)
        self.reasons.append(Reason(code=f"check_error:{check}", check=check, message=message))
        if self.req.mode == "live" and not (fail_open or self.req.reduce_only):
            self.blocked = True
            raise _Stop


class OrderGuard:
    """Pre-trade checks against the portfolio guard's view, exchange data and the bots' records."""

    def __init__(
        self,
        policy: OrderPolicy,
        portfolio: PortfolioGuard,
        venues: Callable[[str], Venue | None],
        *,
        var_data: ExchangeMarketData | None,
        market_view: Callable[[str], Sequence[Mapping[str, Any]]] | None = None,
        audit: AuditSink | None = None,
        bus: SourceStatus | None = None,
        shared_rate: SharedRateLimit | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.portfolio = portfolio
        self.venues = venues
        self.var_data = var_data
        self.market_view = market_view
        self.audit = audit
        self.bus = bus
        self.shared_rate = shared_rate
        self.clock = clock
        self.monotonic = monotonic
        self.records: dict[tuple[str, str], BotRecord] = {}
        self.holdings: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(dict)
        self.amounts: dict[tuple[str, str, str], deque[float]] = {}
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self._scenarios: tuple[float, ScenarioSet] | None = None
        self._portfolio_var: dict[str, tuple[AccountRisk, PortfolioVar]] = {}

    # --- what the bots report --------------------------------------------------------------------------

    def on_events(self, events: Sequence[Event]) -> None:
        """Bots' track records (first seen, daily returns) and holdings (net amounts from their trades: a
        `positions` report is the exchange account's, which several bots may share, so it is not a bot's)."""
        for event in events:
            key = (event.account, event.bot)
            record = self.records.get(key)
            if record is None:
                record = self.records[key] = BotRecord(event.ts)
            record.seen(event.ts)
            payload = event.payload
            if isinstance(payload, StrategyReturnPayload):
                record.add_return(payload.period_end, payload.return_)
                record.trim(event.ts, self.policy.caps.keep_days)
            elif isinstance(payload, TradePayload):
                held = self.holdings[key].setdefault(payload.symbol, [0.0, payload.price])
                held[0] += payload.amount if payload.side == "buy" else -payload.amount
                held[1] = payload.price

    # --- the check -------------------------------------------------------------------------------------

    async def check(self, req: OrderRequest) -> OrderDecision:
        """Run every check on `req` and decide; the decision is audited before it is returned."""
        started = time.perf_counter()
        now = self.clock()
        run = _Run(req)
        taken: SharedRateLimit | TokenBucket | None = None
        try:
            self._store(run)
            self._bus(run)
            self._kill_switch(run)
            self._trading_state(run)
            await self._instrument(run)
            taken = await self._rate_limit(run)
            await self._prices(run)
            self._notional_cap(run, now)
            self._daily_loss(run)
            await self._anomaly(run)
            self._market_guard(run)
            await self._var(run, now)
            self._order_book(run)
            self._tradable(run)
        except _Stop:
            pass
        for name in CHECKS:
            if name not in run.checks:
                run.done(name, "skipped", "decided by an earlier check" if run.blocked else None)
        decision = self._decide(run)
        if decision.decision in ("allow", "reduce"):
            self._remember(req, decision.allowed_amount)
        elif taken is not None:
            await self._give_back(req, taken)
        result = decision.model_copy(
            update={"evaluated_at": now, "latency_ms": (time.perf_counter() - started) * 1000.0}
        )
        self._audit(req, result)
        return result

    def _decide(self, run: _Run) -> OrderDecision:
        req = run.req
        if run.blocked:
            verdict, amount = "block", 0.0
        elif run.retry_after_ms is not None:
            verdict, amount = "delay", 0.0
        elif run.allowed < req.amount:
            verdict, amount = "reduce", run.allowed
        else:
            verdict, amount = "allow", req.amount
        return OrderDecision(
            decision=verdict,
            allowed_amount=amount,
            retry_after_ms=run.retry_after_ms if verdict == "delay" else None,
            reasons=run.reasons,
            checks=run.checks,
            var=run.var,
            trading_state=run.trading.state if run.trading else None,
            evaluated_at=self.clock(),
            latency_ms=0.0,
        )

    # --- dependencies ----------------------------------------------------------------------------------

    def _store(self, run: _Run) -> None:
        if self.audit is None:
            run.done("store", "skipped", "no audit store configured")
            return
        problem = self.audit.health()
        if problem:
            run.error("store", problem)
        run.done("store", "pass", self.audit.backlog)

    def _bus(self, run: _Run) -> None:
        if self.bus is None:
            run.done("bus", "skipped", "no bus configured")
            return
        age = self.bus.age_s(self.clock())
        if not self.bus.reachable or age is None or age > self.policy.bus_max_age_s:
            why = self.bus.last_error or ("never connected" if age is None else f"silent for {age:.0f} s")
            run.error("bus", f"event bus unavailable: {why}")
        run.done("bus", "pass", age, self.policy.bus_max_age_s)

    # --- checks ----------------------------------------------------------------------------------------

    def _kill_switch(self, run: _Run) -> None:
        cache = self.portfolio.kill_switches
        age = cache.age_s()
        if age > self.policy.kill_switch_max_age_s:
            limit = self.policy.kill_switch_max_age_s
            run.error("kill_switch", f"kill switch state is {age:.1f} s old (limit {limit:g} s)")
        switch = cache.get(run.req.account)
        if not switch.engaged:
            run.done("kill_switch", "pass", False)
            return
        scope = "fleet" if switch.account == "*" else "account"
        if run.req.reduce_only:
            run.done("kill_switch", "pass", True)
            return
        run.fail(
            "kill_switch",
            "kill_switch_engaged",
            f"The {scope} kill switch is engaged ({switch.reason or 'no reason given'}, by "
            f"{switch.changed_by or 'unknown'}); only reduce-only orders go out.",
            value=True,
        )

    def _trading_state(self, run: _Run) -> None:
        req = run.req
        run.risk = self.portfolio.risk.get(req.account)
        if run.risk is not None:
            run.trading = run.risk.trading
        else:
            engaged = self.portfolio.kill_switches.get(req.account).engaged
            states = self.portfolio.breakers.get(req.account, {}).values()
            run.trading = trading_state(states, engaged)
        run.base = self.portfolio.base_asset(req.symbol, req.exchange)
        run.reduces = req.reduce_only or self._reduces_exposure(run)
        state = run.trading.state
        if state == TradingState.ACTIVE:
            fraction = run.trading.max_size_fraction
            if fraction < 1.0 and not run.reduces:
                run.fail(
                    "trading_state",
                    "probe_size",
                    f"A breaker is half-open ({', '.join(run.trading.probing)}): new exposure is limited "
                    f"to {fraction:g} of the order.",
                    value=state.value,
                    limit=fraction,
                    amount=req.amount * fraction,
                )
            else:
                run.done("trading_state", "pass", state.value)
            return
        if state == TradingState.REDUCING and run.reduces:
            run.done("trading_state", "pass", state.value)
            return
        if state == TradingState.HALTED and req.reduce_only:
            run.done("trading_state", "pass", state.value)
            return
        allowed = "reduce-only orders" if state == TradingState.HALTED else "orders that reduce exposure"
        run.fail(
            "trading_state",
            f"trading_{state.value.lower()}",
            f"Account {req.account} is {state.value} ({'; '.join(run.trading.reasons) or 'no reason'}): "
            f"only {allowed} go out.",
            value=state.value,
        )

    def _reduces_exposure(self, run: _Run) -> bool:
        """Opposite to the account's net exposure in the asset, and not larger than it (at a known price)."""
        req = run.req
        summary = run.risk.exposure.accounts.get(req.account) if run.risk else None
        asset = summary.assets.get(run.base or "") if summary else None
        if asset is None or asset.net_notional == 0:
            return False
        opposite = (asset.net_notional > 0) == (req.side == "sell")
        venue = self.venues(req.exchange)
        price = req.price
        if price is None and venue is not None:
            book = venue.books.cached(req.symbol)  # no exchange call: a price if one is held
            price = _mid(book) if book is not None else None
        return opposite and price is not None and req.amount * price <= abs(asset.net_notional)

    async def _instrument(self, run: _Run) -> None:
        req = run.req
        venue = self.venues(req.exchange)
        if venue is None:
            run.fail("instrument", "unknown_exchange", f"ccxt knows no exchange {req.exchange!r}.")
            return
        try:
            market = await venue.data.market(req.symbol)
        except Exception as exc:
            run.error("instrument", f"market metadata of {req.exchange} unavailable: {exc}")
            return
        if market is None:
            run.fail(
                "instrument",
                "unknown_instrument",
                f"{req.exchange} lists no market {req.symbol!r}.",
                value=req.symbol,
            )
            return
        run.market = market
        run.base = market.get("base") or run.base
        if market.get("active") is False:
            run.fail("instrument", "instrument_inactive", f"{req.symbol} is not trading on {req.exchange}.")
        if req.price is not None and not venue.data.price_on_tick(req.symbol, req.price):
            tick = market.get("precision", {}).get("price")
            run.fail(
                "instrument",
                "price_precision",
                f"Limit price {req.price:g} is not a multiple of the tick {tick} of {req.symbol}.",
                value=req.price,
                limit=tick,
            )
        limits = market.get("limits") or {}
        amount_limits = limits.get("amount") or {}
        max_amount = amount_limits.get("max")
        if max_amount and req.amount > max_amount:
            run.fail(
                "instrument",
                "amount_above_max",
                f"{req.amount:g} is above the exchange's maximum order amount {max_amount:g}; reduced to it.",
                value=req.amount,
                limit=max_amount,
                amount=max_amount,
            )
        precise = venue.data.amount_to_precision(req.symbol, run.allowed)
        if precise < run.allowed:
            step = market.get("precision", {}).get("amount")
            if precise <= 0:
                run.fail(
                    "instrument",
                    "amount_precision",
                    f"{req.amount:g} is below one amount step ({step}) of {req.symbol}.",
                    value=req.amount,
                    limit=step,
                )
            run.fail(
                "instrument",
                "amount_precision",
                f"{req.amount:g} is not a multiple of the amount step {step}; truncated to {precise:g}.",
                value=req.amount,
                limit=step,
                amount=precise,
            )
        min_amount = amount_limits.get("min")
        if min_amount and run.allowed < min_amount:
            run.fail(
                "instrument",
                "amount_below_min",
                f"{run.allowed:g} is below the minimum order amount {min_amount:g} of {req.symbol}.",
                value=run.allowed,
                limit=min_amount,
            )
        min_cost = (limits.get("cost") or {}).get("min")
        if min_cost and req.price is not None and run.allowed * req.price < min_cost:
            run.fail(
                "instrument",
                "notional_below_min",
                f"Notional {run.allowed * req.price:g} is below the minimum {min_cost:g} of {req.symbol}.",
                value=run.allowed * req.price,
                limit=min_cost,
            )
        run.done("instrument", "pass", req.symbol)

    async def _rate_limit(self, run: _Run) -> SharedRateLimit | TokenBucket | None:
        """Take a token of the bot: from its bucket in Redis when one is configured, else (or when Redis fails
        for an order that goes on anyway: paper, or an exit) in process. Returns where the token came from,
        to give it back if the order does not go out; None when none was taken."""
        req = run.req
        wait: float | None = None
        if self.shared_rate is None:
            run.done("redis", "skipped", "no Redis configured: in-process rate limit")
        else:
            try:
                wait = await self.shared_rate.take(req.account, req.bot)
            except Exception as exc:
                run.error("redis", f"shared rate limit unavailable: {exc}", fail_open=run.reduces)
            else:
                run.done("redis", "pass")
        taken: SharedRateLimit | TokenBucket | None = self.shared_rate
        if wait is None:
            key = (req.account, req.bot)
            now = self.monotonic()
            bucket = self.buckets.get(key)
            if bucket is None:
                bucket = self.buckets[key] = TokenBucket(self.policy.rate_per_s, self.policy.rate_burst, now)
            wait, taken = bucket.take(now), bucket
        if wait <= 0:
            run.done("rate_limit", "pass", None, self.policy.rate_per_s)
            return taken
        run.fail(
            "rate_limit",
            "rate_limited",
            f"Bot {run.req.bot} is over its {self.policy.rate_per_s:g} orders/s; "
            f"retry in {wait * 1000:.0f} ms.",
            limit=self.policy.rate_per_s,
            delay_ms=math.ceil(wait * 1000),
        )
        return None

    async def _give_back(self, req: OrderRequest, taken: SharedRateLimit | TokenBucket) -> None:
        """Return the token of an order that does not go out (if Redis fails now, the token is spent)."""
        if isinstance(taken, TokenBucket):
            taken.give_back()
            return
        try:
            await taken.give_back(req.account, req.bot)
        except Exception as exc:
            log.warning("rate-limit token of %s/%s not given back: %s", req.account, req.bot, exc)

    async def _prices(self, run: _Run) -> None:
        if run.reduces:
            run.done("prices", "skipped", "reduces exposure")
            return
        venue = self.venues(run.req.exchange)
        assert venue is not None  # the instrument check passed
        try:
            run.book = await venue.books.get(run.req.symbol)
        except Exception as exc:
            run.error("prices", f"no fresh order book for {run.req.symbol}: {exc}")
            return
        run.mark = _mid(run.book)
        run.done("prices", "pass", run.mark)

    def _notional_cap(self, run: _Run, now: datetime) -> None:
        req = run.req
        if run.reduces or run.price is None:
            run.done("notional_cap", "skipped", "reduces exposure" if run.reduces else "no price")
            return
        key = (req.account, req.bot)
        tier = cap_tier(self.records.get(key), now, self.policy.caps)
        price = run.price
        held = self.holdings.get(key, {})
        net = held.get(req.symbol, [0.0, price])[0]
        others = sum(abs(n) * p for s, (n, p) in held.items() if s != req.symbol)
        sign = 1.0 if req.side == "buy" else -1.0
        after = others + abs(net + sign * run.allowed) * price
        before = others + abs(net) * price
        if after <= tier.cap or after <= before:
            run.done("notional_cap", "pass", after, tier.cap)
            return
        room = (tier.cap - others) / price  # the largest |net| allowed on this symbol
        fit = max(0.0, room - sign * net)
        run.fail(
            "notional_cap",
            "notional_cap_exceeded",
            f"Bot {req.bot} would hold {after:,.0f} of notional, above its cap of {tier.cap:,.0f} "
            f"(tier {tier.level}: {tier.reason}).",
            value=after,
            limit=tier.cap,
            amount=fit,
        )

    def _daily_loss(self, run: _Run) -> None:
        breaker = run.risk.breakers.get("daily_loss") if run.risk else None
        reading = run.risk.readings.get("daily_loss") if run.risk else None
        if breaker is None:
            run.done("daily_loss", "skipped", "no portfolio readings for the account yet")
            return
        if breaker.state != "open" or breaker.shadow or run.reduces:
            run.done("daily_loss", "pass", reading, breaker.threshold)
            return
        run.fail(
            "daily_loss",
            "daily_loss_breaker_open",
            f"Today's loss {breaker.last_value or 0:.2f}% reached the daily limit {breaker.threshold:g}%; "
            "new exposure waits for the next UTC day.",
            value=reading,
            limit=breaker.threshold,
        )

    async def _anomaly(self, run: _Run) -> None:
        req = run.req
        if run.reduces:
            run.done("anomaly", "skipped", "reduces exposure")
            return
        policy = self.policy.anomaly
        size = size_verdict(self.amounts.get((req.account, req.bot, req.symbol), ()), req.amount, policy)
        if size.anomalous:
            run.fail(
                "anomaly",
                "amount_anomaly",
                f"{req.amount:g} is {size.ratio:.1f}x the median of bot {req.bot}'s recent {req.symbol} "
                f"orders (limit {policy.amount_multiple:g}x).",
                value=size.ratio,
                limit=policy.amount_multiple,
            )
        if req.price is None or run.mark is None:
            status: CheckStatus = "pass" if size.ratio is not None else "skipped"
            run.done("anomaly", status, size.ratio, policy.amount_multiple)
            return
        venue = self.venues(req.exchange)
        assert venue is not None
        try:
            sigma = hourly_sigma(await venue.data.hourly_closes(req.symbol), policy.min_returns)
        except Exception as exc:
            run.error("anomaly", f"no price history for the limit-price check: {exc}")
            return
        price = price_verdict(req.price, run.mark, sigma, policy)
        if price.anomalous:
            run.fail(
                "anomaly",
                "price_anomaly",
                f"Limit price {req.price:g} is {price.sigmas:.1f} sigma from the mark {run.mark:g} "
                f"(1-sigma move over {policy.horizon_hours:g}h: {price.sigma_pct:.2f}%; limit "
                f"{policy.max_sigmas:g} sigma).",
                value=price.sigmas,
                limit=policy.max_sigmas,
            )
        run.done("anomaly", "pass", price.sigmas, policy.max_sigmas)

    def _market_guard(self, run: _Run) -> None:
        req = run.req
        if self.market_view is None or run.reduces:
            run.done("market_guard", "skipped", "reduces exposure" if run.reduces else "no market guard")
            return
        views = self.market_view(req.symbol)
        if not views:
            run.error("market_guard", "the market guard has no assessment yet")
            return
        stale = [v for v in views if v.get("stale")]
        if stale:
            ages = ", ".join(f"{v.get('pair') or 'market'} {v.get('data_age_s')} s" for v in stale)
            run.error("market_guard", f"market guard data is stale ({ages})")
            return
        unsafe = [v for v in views if not v.get("safe_to_trade")]
        if not unsafe:
            run.done("market_guard", "pass", True)
            return
        why = "; ".join(
            f"{v.get('pair') or 'market'}: {', '.join(v.get('blocked_by') or ()) or 'unsafe'}" for v in unsafe
        )
        policy = self.policy.account(req.account)
        reduce = policy.market_guard_action == "reduce"
        run.fail(
            "market_guard",
            "market_unsafe",
            f"The market guard says not safe to trade ({why}); "
            + (f"order cut to {policy.market_guard_fraction:g} of its size." if reduce else "order blocked."),
            value=False,
            amount=run.allowed * policy.market_guard_fraction if reduce else None,
        )

    async def _var(self, run: _Run, now: datetime) -> None:
        req = run.req
        policy = self.policy
        limit = policy.var_limits_pct[policy.account(req.account).risk_level]
        if run.reduces or run.price is None:
            run.done("var", "skipped", "reduces exposure" if run.reduces else "no price")
            return
        summary = run.risk.exposure.accounts.get(req.account) if run.risk else None
        if summary is None or summary.total_equity <= 0:
            run.error("var", f"no equity reported for account {req.account}: VaR % cannot be computed")
            return
        base = run.base or req.symbol
        try:
            pv = await self._account_var(run.risk, summary, base, now)
            before = pv.var_pct()
            if base in STABLECOINS:
                after = before
            else:
                sign = 1.0 if req.side == "buy" else -1.0
                after = pv.with_order(base, sign * run.allowed * run.price)
        except Exception as exc:
            run.error("var", f"VaR unavailable: {exc}")
            return
        run.var = VarReport(
            before_pct=before,
            after_pct=after,
            limit_pct=limit,
            confidence=policy.var_confidence,
            horizon_days=1,
            scenarios=len(pv.pnl),
        )
        if after > limit and after > before:
            run.fail(
                "var",
                "var_limit_exceeded",
                f"1-day {policy.var_confidence:.0%} VaR would rise from {before:.2f}% to {after:.2f}% of "
                "equity, "
                f"above the {policy.account(req.account).risk_level} limit of {limit:g}%.",
                value=after,
                limit=limit,
            )
        run.done("var", "pass", after, limit)

    async def _account_var(
        self, risk: AccountRisk, summary: Any, order_asset: str, now: datetime
    ) -> PortfolioVar:
        """The account's cached scenario P&L; rebuilt when its risk view (exposures) or the scenarios change.
        The cache holds the risk view itself, so identity means the same exposures."""
        wanted = (set(summary.assets) | {order_asset}) - STABLECOINS
        scenarios = await self._scenario_set(wanted, now)
        hit = self._portfolio_var.get(risk.account)
        if hit is not None and hit[0] is risk and hit[1].scenarios is scenarios:
            return hit[1]
        exposures = {a: e.net_notional for a, e in summary.assets.items() if a not in STABLECOINS}
        pv = PortfolioVar(scenarios, exposures, summary.total_equity, self.policy.var_confidence)
        if pv.missing:
            raise ValueError(f"no daily returns for {', '.join(pv.missing)}")
        self._portfolio_var[risk.account] = (risk, pv)
        return pv

    async def _scenario_set(self, assets: set[str], now: datetime) -> ScenarioSet:
        """Bootstrap scenarios covering `assets`, redrawn daily or when a new asset appears."""
        if self.var_data is None:
            raise ValueError("no exchange configured for VaR price history")
        cached = self._scenarios
        fresh = cached is not None and self.monotonic() - cached[0] < self.var_data.ttls.daily_s
        if cached is not None and fresh and assets <= set(cached[1].assets):
            return cached[1]
        wanted = assets | (set(cached[1].assets) if cached is not None else set())
        closes = await self.var_data.daily_closes(sorted(wanted))
        scenarios = bootstrap_scenarios(
            daily_returns(closes),
            n=self.policy.var_scenarios,
            lookback_days=self.policy.var_lookback_days,
            seed=0,
            as_of=now,
        )
        self._scenarios = (self.monotonic(), scenarios)
        return scenarios

    def _order_book(self, run: _Run) -> None:
        if run.reduces or run.book is None:
            run.done("order_book", "skipped", "reduces exposure" if run.reduces else "no order book")
            return
        try:
            verdict = book_gate(run.book, run.req.side, run.allowed, self.policy.book)
        except Exception as exc:
            run.error("order_book", f"order book unusable: {exc}")
            return
        if verdict.action == "allow":
            run.done("order_book", "pass", verdict.imbalance_ratio, self.policy.book.max_imbalance_ratio)
        elif verdict.action == "delay":
            cfg = self.policy.book
            by_imbalance = verdict.code == "book_imbalance"
            run.fail(
                "order_book",
                verdict.code,
                verdict.message,
                value=verdict.imbalance_ratio if by_imbalance else verdict.microprice_deviation_pct,
                limit=cfg.max_imbalance_ratio if by_imbalance else cfg.max_microprice_deviation_pct,
                delay_ms=verdict.retry_after_ms,
            )
        else:
            run.fail(
                "order_book",
                verdict.code,
                verdict.message,
                value=verdict.imbalance_ratio,
                limit=self.policy.book.max_imbalance_ratio,
                amount=run.allowed * verdict.allowed_fraction,
            )

    def _tradable(self, run: _Run) -> None:
        """A reduced amount must still be a valid order: on the amount step, above the minimums."""
        req = run.req
        if run.allowed >= req.amount or run.market is None:
            return
        venue = self.venues(req.exchange)
        assert venue is not None
        precise = venue.data.amount_to_precision(req.symbol, run.allowed)
        limits = run.market.get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min") or 0.0
        min_cost = (limits.get("cost") or {}).get("min") or 0.0
        price = run.price
        if precise <= 0 or precise < min_amount or (price is not None and precise * price < min_cost):
            run.blocked = True
            run.reasons.append(
                Reason(
                    code="reduced_below_minimum",
                    check="instrument",
                    message=f"The amount the checks allow ({run.allowed:g}) is below what {req.symbol} can "
                    f"trade (min amount {min_amount:g}, min notional {min_cost:g}): blocked, not reduced.",
                )
            )
            return
        run.allowed = precise

    # --- after the decision ----------------------------------------------------------------------------

    def _remember(self, req: OrderRequest, amount: float) -> None:
        history = self.amounts.get((req.account, req.bot, req.symbol))
        if history is None:
            history = deque(maxlen=self.policy.anomaly.history)
            self.amounts[(req.account, req.bot, req.symbol)] = history
        history.append(amount)

    def _audit(self, req: OrderRequest, decision: OrderDecision) -> None:
        if self.audit is None:
            return
        payload = {
            "order": req.model_dump(mode="json"),
            **decision.model_dump(mode="json", exclude={"evaluated_at"}),
        }
        try:
            self.audit.put(audit_types.ORDER_DECISION, req.account, payload, decision.evaluated_at)
        except Exception:
            log.exception("order decision for %s/%s not audited", req.account, req.bot)


def _mid(book: BookSnapshot) -> float:
    return (book.bids[0][0] + book.asks[0][0]) / 2.0
