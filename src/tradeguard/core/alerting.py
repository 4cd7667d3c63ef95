"""Alerts for people, without alert fatigue (pure: the caller passes `now`; no clock, no network).

`alert_from_envelope` turns an audit record (a risk event the service emitted) into an `Alert`: a key
that names the condition (`alpha:breaker:drawdown`), a severity (info < warning < critical), a title,
the numbers, what the guard did and how to reset; or a *resolve* of the key when the condition clears
(a breaker half-open or closed, the kill switch released, the trading state back to ACTIVE). Keys follow
the account (`alpha:`):
- risk.breaker.transition `breaker:<id>`: open → critical for global_drawdown, liquidation_distance and
  rapid_loss, warning for the others, info for shadow breakers; half_open or closed → resolve.
- risk.kill_switch `kill_switch`: engaged → critical; released → resolve.
- risk.portfolio_check `trading_state`: HALTED → critical, REDUCING → warning, ACTIVE → resolve.
- risk.drawdown_alert `drawdown`: level warning → warning, critical and worse → critical.
- risk.liquidation_proximity `liquidation:<exchange>`: its status (warning, critical).
- risk.correlation_regime_change `correlation_regime`, risk.exchange_failure `exchange:<venue>`,
  risk.webhook_disabled `webhook:<id>`: warning.
- risk.breaker.action `action:<name>`: failed → warning, done → info. Other events: no alert.

`AlertRouter` decides what goes out where; it is a deterministic state machine fed in time order:
`offer(alert, now)` and `flush(now)` (call it every second or so) return the messages due, each an
`Outgoing` (one channel, one or more alerts). For every offered alert, in this order:

1. resolve: sent to exactly the channels its trigger went to, with the trigger's severity; a resolve
   whose trigger never went anywhere is dropped (counted as unrouted).
2. dedup: a trigger with the same key and severity as the last one passed, less than `dedup_window_s`
   ago and not resolved since, is dropped (counted). A change of severity or a resolve passes.
3. routing: the account's rules (else those of account "*", else `default_rules`), first match wins;
   no channel → unrouted (counted). Each rule matches event types (fnmatch) and severities.
4. quiet hours of the account (else of "*"): a non-critical alert is held until they end, then sent
   as one summary (`Outgoing.held`); critical alerts and their resolves always go out.
5. grouping and rate limit, per channel: an alert to an idle channel (nothing sent for
   `group_window_s`) goes out at once; later ones wait until the group window since the first of
   them ends and then go out together as one message. Each message takes a token of the channel's
   bucket (`rate_limit_per_min`, burst `rate_limit_burst`); without one the group keeps growing until
   a token is there (grouped, never dropped) — unless it holds a critical alert, which never waits
   for a token. So a critical alert goes out at most `group_window_s` after it is offered (given a
   flush by then), whatever the load, and every alert offered is sent, grouped into a sent message,
   deduplicated, unrouted, or held and sent when the quiet hours end: none is lost silently
   (`RouterStats` counts each way).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tradeguard.core import audit
from tradeguard.errors import InputError

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
FLEET = "*"  # the fleet's account name (kill switch for every account), and "any account" in settings


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing a person should know: `key` names the condition (dedup and resolve go by it)."""

    key: str
    account: str
    event_type: str
    severity: Severity
    title: str
    at: datetime
    details: tuple[str, ...] = ()  # what happened, with the numbers
    action: str = ""  # what the guard did
    reset: str = ""  # how to reset, or what clears it
    resolved: bool = False

    @property
    def headline(self) -> str:
        """`CRITICAL [alpha] drawdown breaker tripped` (RESOLVED for resolves)."""
        label = "RESOLVED" if self.resolved else self.severity.upper()
        return f"{label} [{self.account}] {self.title}"

    def lines(self) -> list[str]:
        """The body: details, then what the guard did and how to reset, then when."""
        out = list(self.details)
        if self.action:
            out.append(f"Guard: {self.action}")
        if self.reset:
            out.append(f"Reset: {self.reset}")
        out.append(f"At: {self.at.isoformat()}")
        return out


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send: a channel and its alerts (`held` of them were held by quiet hours)."""

    channel: str
    alerts: tuple[Alert, ...]
    held: int = 0

    @property
    def severity(self) -> Severity:
        return max((a.severity for a in self.alerts), key=RANK.__getitem__)


# --- configuration ------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RoutingRule(_Model):
    """Alerts of these event types (fnmatch patterns) and severities go to these channels."""

    event_types: tuple[str, ...] = Field(("*",), description='patterns, e.g. "risk.breaker.*"')
    min_severity: Severity | None = None
    severities: frozenset[Severity] | None = Field(None, description="exact severities (not with min)")
    channels: tuple[str, ...] = Field(description="channel names; [] to send matching alerts nowhere")

    @model_validator(mode="after")
    def _check(self) -> RoutingRule:
        if self.min_severity is not None and self.severities is not None:
            raise ValueError("give min_severity or severities, not both")
        return self

    def matches(self, alert: Alert) -> bool:
        if self.severities is not None and alert.severity not in self.severities:
            return False
        if self.min_severity is not None and RANK[alert.severity] < RANK[self.min_severity]:
            return False
        return any(fnmatch.fnmatchcase(alert.event_type, p) for p in self.event_types)


class QuietHours(_Model):
    """Local hours [start, end) in an IANA time zone (may span midnight) when only critical alerts go out."""

    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _check(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours need start != end")
        return self

    def active(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone)).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


class FatiguePolicy(_Model):
    """Dedup window, grouping window and per-channel rate limit (see the module docstring)."""

    dedup_window_s: float = Field(600.0, ge=0, description="same key and severity within this: dropped")
    group_window_s: float = Field(30.0, ge=0, description="alerts to a busy channel within this: one message")
    rate_limit_per_min: float = Field(6.0, gt=0, description="messages per minute per channel, sustained")
    rate_limit_burst: int = Field(6, ge=1, description="messages a channel may take at once")


def default_rules(channels: Iterable[str]) -> tuple[RoutingRule, ...]:
    """critical → pagerduty + telegram, warning → slack + email (each: those configured, else every
    configured channel but pagerduty for warnings); info → nowhere."""
    names = list(channels)
    paging = [c for c in names if c in ("pagerduty", "telegram")] or names
    chat = [c for c in names if c in ("slack", "email")] or [c for c in names if c != "pagerduty"]
    return (
        RoutingRule(severities=frozenset({"critical"}), channels=tuple(paging)),
        RoutingRule(severities=frozenset({"warning"}), channels=tuple(chat)),
    )


# --- the router ---------------------------------------------------------------------------------------


@dataclass
class RouterStats:
    """Where offered alerts went: offered = deduplicated + unrouted + routed; `copies` (alert × channel)
    end up in `sent` (some after being `deferred` by quiet hours) or still wait in `AlertRouter.waiting`."""

    offered: int = 0
    deduplicated: int = 0
    unrouted: int = 0
    routed: int = 0
    copies: int = 0
    deferred: int = 0
    sent: int = 0
    messages: int = 0


@dataclass
class _Lane:
    """One channel: its token bucket, the group being gathered and the alerts held by quiet hours."""

    tokens: float
    refilled: datetime | None = None
    last_sent: datetime | None = None
    due: datetime | None = None
    pending: list[tuple[Alert, bool]] = field(default_factory=list)  # (alert, was held)
    held: list[Alert] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Seen:
    severity: Severity
    resolved: bool
    at: datetime


class AlertRouter:
    """Routing, dedup, grouping, rate limits and quiet hours; feed it in time order (module docstring)."""

    def __init__(
        self,
        channels: Sequence[str],
        routes: Mapping[str, Sequence[RoutingRule]] | None = None,
        quiet_hours: Mapping[str, QuietHours] | None = None,
        policy: FatiguePolicy | None = None,
    ) -> None:
        self.channels = tuple(channels)
        self.routes = {account: tuple(rules) for account, rules in (routes or {}).items()}
        self.quiet_hours = dict(quiet_hours or {})
        self.policy = policy or FatiguePolicy()
        self.defaults = default_rules(self.channels)
        for account, rules in self.routes.items():
            unknown = {c for rule in rules for c in rule.channels} - set(self.channels)
            if unknown:
                raise InputError(
                    f"alert routes of {account!r} name unknown channels {sorted(unknown)}; "
                    f"configured: {list(self.channels)}"
                )
        self.stats = RouterStats()
        self._lanes = {name: _Lane(tokens=float(self.policy.rate_limit_burst)) for name in self.channels}
        self._seen: dict[str, _Seen] = {}
        self._incidents: dict[str, tuple[Severity, frozenset[str]]] = {}  # key -> (severity, channels)
        self._window = timedelta(seconds=self.policy.group_window_s)
        self._dedup = timedelta(seconds=self.policy.dedup_window_s)

    def channels_for(self, alert: Alert) -> tuple[str, ...]:
        """The channels of the first rule matching the alert (account's rules, else "*"'s, else defaults)."""
        rules = self.routes.get(alert.account, self.routes.get(FLEET, self.defaults))
        rule = next((r for r in rules if r.matches(alert)), None)
        return () if rule is None else tuple(c for c in self.channels if c in rule.channels)

    def quiet(self, account: str, now: datetime) -> bool:
        hours = self.quiet_hours.get(account, self.quiet_hours.get(FLEET))
        return hours is not None and hours.active(now)

    @property
    def waiting(self) -> int:
        """Alert copies gathered into groups or held by quiet hours, not sent yet."""
        return sum(len(lane.pending) + len(lane.held) for lane in self._lanes.values())

    def offer(self, alert: Alert, now: datetime) -> list[Outgoing]:
        """Take one alert; return the messages to send now."""
        self.stats.offered += 1
        routed = self._route(alert, now)
        if routed is None:
            return []
        alert, channels = routed
        self.stats.routed += 1
        self.stats.copies += len(channels)
        out: list[Outgoing] = []
        for name in channels:
            lane = self._lanes[name]
            if alert.severity != "critical" and self.quiet(alert.account, now):
                lane.held.append(alert)
                self.stats.deferred += 1
                continue
            lane.pending.append((alert, False))
            if lane.due is None:
                idle = lane.last_sent is None or now - lane.last_sent >= self._window
                lane.due = now if idle else now + self._window
            message = self._take(name, lane, now)
            if message is not None:
                out.append(message)
        return out

    def flush(self, now: datetime) -> list[Outgoing]:
        """The groups whose window is over (given a token or a critical alert) and what quiet hours held."""
        out: list[Outgoing] = []
        for name, lane in self._lanes.items():
            released = [a for a in lane.held if not self.quiet(a.account, now)]
            if released:
                lane.held = [a for a in lane.held if self.quiet(a.account, now)]
                lane.pending = [(a, True) for a in released] + lane.pending
                lane.due = now if lane.due is None else min(lane.due, now)
            message = self._take(name, lane, now)
            if message is not None:
                out.append(message)
        self._seen = {k: s for k, s in self._seen.items() if now - s.at < self._dedup}
        return out

    def _route(self, alert: Alert, now: datetime) -> tuple[Alert, tuple[str, ...]] | None:
        """The alert (a resolve takes its trigger's severity) and its channels; None if dropped."""
        if alert.resolved:
            incident = self._incidents.pop(alert.key, None)
            if incident is None:
                self.stats.unrouted += 1
                return None
            severity, channels = incident
            self._seen[alert.key] = _Seen(severity, True, now)
            return replace(alert, severity=severity), tuple(c for c in self.channels if c in channels)
        seen = self._seen.get(alert.key)
        if (
            seen is not None
            and not seen.resolved
            and seen.severity == alert.severity
            and now - seen.at < self._dedup
        ):
            self.stats.deduplicated += 1
            return None
        channels = self.channels_for(alert)
        if not channels:
            self.stats.unrouted += 1
            return None
        self._seen[alert.key] = _Seen(alert.severity, False, now)
        severity, before = self._incidents.get(alert.key, (alert.severity, frozenset()))
        worst = max(severity, alert.severity, key=RANK.__getitem__)
        self._incidents[alert.key] = (worst, before | set(channels))
        return alert, channels

    def _take(self, name: str, lane: _Lane, now: datetime) -> Outgoing | None:
        """The lane's group as a message if it is due and may go (quiet hours, token or critical)."""
        if not lane.pending or lane.due is None or now < lane.due:
            return None
        critical = any(a.severity == "critical" for a, _ in lane.pending)
        if not critical:  # quiet hours began while the group gathered: hold its alerts
            quiet = [a for a, _ in lane.pending if self.quiet(a.account, now)]
            if quiet:
                lane.held += quiet
                self.stats.deferred += len(quiet)
                lane.pending = [(a, h) for a, h in lane.pending if not self.quiet(a.account, now)]
                if not lane.pending:
                    lane.due = None
                    return None
        self._refill(lane, now)
        if lane.tokens < 1 and not critical:
            return None
        lane.tokens = max(0.0, lane.tokens - 1)
        message = Outgoing(name, tuple(a for a, _ in lane.pending), sum(h for _, h in lane.pending))
        lane.pending, lane.due, lane.last_sent = [], None, now
        self.stats.sent += len(message.alerts)
        self.stats.messages += 1
        return message

    def _refill(self, lane: _Lane, now: datetime) -> None:
        if lane.refilled is not None and now > lane.refilled:
            rate = self.policy.rate_limit_per_min / 60.0
            elapsed = (now - lane.refilled).total_seconds()
            lane.tokens = min(float(self.policy.rate_limit_burst), lane.tokens + elapsed * rate)
        if lane.refilled is None or now > lane.refilled:
            lane.refilled = now


# --- risk events to alerts ----------------------------------------------------------------------------

# An open enforced breaker: critical when it halts or money is at once at risk, else warning.
BREAKER_SEVERITY: dict[str, Severity] = {
    "global_drawdown": "critical",
    "liquidation_distance": "critical",
    "rapid_loss": "critical",
    "drawdown": "warning",
    "correlation": "warning",
    "daily_loss": "warning",
}
DRAWDOWN_SEVERITY: dict[str, Severity] = {
    "warning": "warning",
    "critical": "critical",
    "emergency": "critical",
    "circuit_breaker": "critical",
}


def alert_from_envelope(
    envelope: Mapping[str, Any] | audit.AuditRecord, service_url: str = ""
) -> Alert | None:
    """The alert a risk event calls for (None for events that are evidence only, e.g. snapshots).

    `envelope`: an audit record or its envelope dict. `service_url`: the service as people reach it,
    put in front of reset instructions (e.g. `https://guard.example.com`).
    """
    record = envelope.to_envelope() if isinstance(envelope, audit.AuditRecord) else envelope
    event_type = str(record.get("type", ""))
    build = _BUILDERS.get(event_type)
    if build is None:
        return None
    ts = record.get("ts")
    at = ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))
    account = record.get("account") or FLEET
    payload = record.get("payload") or {}
    return build(_Event(event_type, str(account), at, payload, service_url.rstrip("/")))


@dataclass(frozen=True, slots=True)
class _Event:
    type: str
    account: str
    at: datetime
    payload: Mapping[str, Any]
    base: str

    def alert(self, key: str, severity: Severity, title: str, **fields: Any) -> Alert:
        return Alert(f"{self.account}:{key}", self.account, self.type, severity, title, self.at, **fields)

    def reset_breaker(self, breaker_id: str) -> str:
        path = f"/v1/breakers/{quote(breaker_id, safe='')}/reset?account={quote(self.account, safe='')}"
        return f"POST {self.base}{path} (operator key)"

    def release_kill_switch(self) -> str:
        scope = "admin key" if self.account == FLEET else "operator key"
        body = f'{{"engaged": false, "account": "{self.account}"}}'
        return f"POST {self.base}/v1/kill-switch {body} ({scope})"

    def see(self, path: str) -> str:
        return f"GET {self.base}{path}?account={quote(self.account, safe='')}"


def _num(value: Any) -> str:
    """A number for people: 16.23, 0.9123, 26,316.89; "n/a" when missing."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a" if value is None else str(value)
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def _breaker(e: _Event) -> Alert:
    p = e.payload
    bid, kind, to_state = str(p.get("breaker_id")), str(p.get("kind")), p.get("to_state")
    key = f"breaker:{bid}"
    numbers = f"{kind}: value {_num(p.get('value'))}, threshold {_num(p.get('threshold'))}"
    if to_state != "open":
        reason = p.get("reason")
        what = "half-open: probing at reduced size" if to_state == "half_open" else f"closed ({reason})"
        if reason == "manual_reset":
            what = f"reset by {p.get('by')}"
        action = (
            "new exposure allowed again at probe size"
            if to_state == "half_open"
            else "this breaker no longer limits trading"
        )
        return e.alert(
            key,
            "info",
            f"{kind} breaker {what}",
            details=(str(p.get("message", "")),),
            action=action,
            resolved=True,
        )
    until = p.get("cooldown_until")
    trips = p.get("trips")
    details = (str(p.get("message", "")), f"{numbers}, trip {trips}")
    if not p.get("enforced", True):
        return e.alert(
            key,
            "info",
            f"{kind} breaker would have tripped (shadow)",
            details=details,
            action="nothing: shadow breakers only record",
            reset=e.reset_breaker(bid),
        )
    verb = "tripped" if p.get("reason") == "tripped" else "re-opened (probe breached)"
    if until is None:
        action = "trading HALTED for the account: no order passes until a person resets this breaker"
        reset = f"manual reset needed: {e.reset_breaker(bid)}"
    else:
        action = "new exposure blocked (REDUCING), exits still allowed; the account's trip actions run"
        after = "closes at the next UTC day" if kind == "daily_loss" else "half-open"
        reset = f"{after} at {until} by itself; to close it now: {e.reset_breaker(bid)}"
    return e.alert(
        key,
        BREAKER_SEVERITY.get(kind, "warning"),
        f"{kind} breaker {verb}",
        details=details,
        action=action,
        reset=reset,
    )


def _kill_switch(e: _Event) -> Alert:
    p = e.payload
    who = "the whole fleet" if e.account == FLEET else "the account"
    if not p.get("engaged"):
        return e.alert(
            "kill_switch",
            "info",
            "kill switch released",
            details=(f"By: {p.get('by')}",),
            action=f"trading allowed again for {who} (breakers permitting)",
            resolved=True,
        )
    return e.alert(
        "kill_switch",
        "critical",
        "kill switch engaged",
        details=(f"Reason: {p.get('reason') or 'none given'}", f"By: {p.get('by')}"),
        action=f"trading HALTED for {who}: no order passes the guard",
        reset=e.release_kill_switch(),
    )


def _trading_state(e: _Event) -> Alert:
    p = e.payload
    state = str(p.get("trading_state"))
    readings = p.get("readings") or {}
    numbers = ", ".join(f"{k} {_num(v)}" for k, v in readings.items() if v is not None)
    details = tuple(str(r) for r in p.get("reasons") or ()) + ((f"Readings: {numbers}",) if numbers else ())
    if state == "ACTIVE":
        return e.alert(
            "trading_state",
            "info",
            "trading ACTIVE again",
            details=details,
            action="orders pass the guard again",
            resolved=True,
        )
    deciders = [str(d) for d in p.get("decided_by") or ()]
    reset = "; ".join(e.release_kill_switch() if d == "kill_switch" else e.reset_breaker(d) for d in deciders)
    if state == "HALTED":
        severity: Severity = "critical"
        action = "no order passes the guard"
    else:
        severity, action = "warning", "only exposure-reducing orders pass the guard; new entries are blocked"
    return e.alert(
        "trading_state",
        severity,
        f"trading {state} ({', '.join(deciders) or 'no decider'})",
        details=details,
        action=action,
        reset=reset,
    )


def _drawdown(e: _Event) -> Alert | None:
    p = e.payload
    severity = DRAWDOWN_SEVERITY.get(str(p.get("level")))
    if severity is None:
        return None
    return e.alert(
        "drawdown",
        severity,
        f"drawdown {p.get('level')} ({p.get('window')} window, {p.get('shape')})",
        details=tuple(str(r) for r in p.get("reasons") or ()),
        action="reported; the drawdown breakers act at their own thresholds",
        reset=f"clears as equity recovers; see {e.see('/v1/portfolio/drawdown')}",
    )


def _liquidation(e: _Event) -> Alert | None:
    p = e.payload
    status = p.get("status")
    if status not in ("warning", "critical"):
        return None
    return e.alert(
        f"liquidation:{p.get('exchange')}",
        status,
        f"{p.get('closest')} on {p.get('exchange')} {_num(p.get('min_distance_pct'))}% from liquidation",
        details=(f"Closest position: {p.get('closest')}, distance {_num(p.get('min_distance_pct'))}%",),
        action="reported; the liquidation_distance breaker trips at its threshold",
        reset=f"add margin or reduce the position; see {e.see('/v1/portfolio/liquidation')}",
    )


def _correlation(e: _Event) -> Alert:
    return e.alert(
        "correlation_regime",
        "warning",
        "correlation regime change between strategies",
        details=(f"Mean absolute change of the correlation matrix: {_num(e.payload.get('score'))}",),
        action="reported; the correlation breaker acts at its threshold",
        reset=f"see {e.see('/v1/portfolio/correlation')}",
    )


def _exchange_failure(e: _Event) -> Alert:
    venue = e.payload.get("venue")
    return e.alert(
        f"exchange:{venue}",
        "warning",
        f"venue {venue} is {e.payload.get('reason')}",
        details=(f"No report from {venue} within the stale limit",),
        action="its exposure is left out of the aggregate (unless portfolio.conservative)",
        reset="clears when the venue reports again",
    )


def _action(e: _Event) -> Alert:
    p = e.payload
    name = p.get("action")
    if p.get("ok"):
        return e.alert(
            f"action:{name}",
            "info",
            f"trip action {name} done",
            details=(str(p.get("detail", "")),),
            action=f"{name} succeeded after {p.get('attempts')} attempt(s)",
        )
    return e.alert(
        f"action:{name}",
        "warning",
        f"trip action {name} failed after {p.get('attempts')} attempt(s)",
        details=(f"Error: {p.get('error')}",),
        action="the breaker stays open, but this action did not complete",
        reset="check the bot or exchange and do it by hand",
    )


def _webhook_disabled(e: _Event) -> Alert:
    p = e.payload
    hook = str(p.get("webhook_id"))
    scope = "admin key" if e.account == FLEET else "operator key"
    return e.alert(
        f"webhook:{hook}",
        "warning",
        f"webhook {hook} disabled ({p.get('description') or 'no description'})",
        details=(f"Reason: {p.get('reason')}", f"Failing since: {p.get('failing_since')}"),
        action="no more deliveries to it; its events stay queued",
        reset=f'PATCH {e.base}/v1/webhooks/{quote(hook, safe="")} {{"enabled": true}} ({scope})',
    )


_BUILDERS: dict[str, Callable[[_Event], Alert | None]] = {
    audit.BREAKER_TRANSITION: _breaker,
    audit.KILL_SWITCH: _kill_switch,
    audit.PORTFOLIO_CHECK: _trading_state,
    audit.DRAWDOWN_ALERT: _drawdown,
    audit.LIQUIDATION_PROXIMITY: _liquidation,
    audit.CORRELATION_REGIME_CHANGE: _correlation,
    audit.EXCHANGE_FAILURE: _exchange_failure,
    audit.BREAKER_ACTION: _action,
    audit.WEBHOOK_DISABLED: _webhook_disabled,
}
ALERT_EVENT_TYPES: frozenset[str] = frozenset(_BUILDERS)
"""The audit event types that can call for an alert (`alert_from_envelope` ignores the others)."""
