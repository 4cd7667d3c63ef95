"""Alerts from risk events, and the router against alert fatigue: routing rules, dedup, grouping, rate
limits, resolves that follow their triggers, quiet hours in a time zone; with properties over random load."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tradeguard.adapters.signing_key import AuditKey
from tradeguard.core import audit
from tradeguard.core import breakers as brk
from tradeguard.core.alerting import (
    RANK,
    Alert,
    AlertRouter,
    FatiguePolicy,
    Outgoing,
    QuietHours,
    RoutingRule,
    alert_from_envelope,
    default_rules,
)
from tradeguard.errors import InputError

T0 = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
KEY = AuditKey.generate()
ALL = ("pagerduty", "telegram", "slack", "email")
_ids = count(1)


def record(
    event_type: str, payload: dict[str, Any], account: str | None = "alpha", ts: datetime = T0
) -> audit.AuditRecord:
    """A real sealed audit record, as the service emits it."""
    return audit.seal(
        None,
        record_id=f"r{next(_ids)}",
        event_type=event_type,
        account=account,
        ts=ts,
        payload=payload,
        signer=KEY,
    )


def tripped(kind: brk.BreakerKind, value: float, **options: Any) -> brk.Transition:
    (transition,) = brk.evaluate(brk.new_breaker(kind, kind, **options), value, T0)[1]
    return transition


def alert(
    key: str = "k",
    severity: str = "warning",
    *,
    account: str = "alpha",
    event_type: str = "risk.drawdown_alert",
    resolved: bool = False,
    title: str = "t",
    at: datetime = T0,
) -> Alert:
    return Alert(f"{account}:{key}", account, event_type, severity, title, at, resolved=resolved)  # type: ignore[arg-type]


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def titles(messages: list[Outgoing]) -> list[tuple[str, list[str]]]:
    return [(m.channel, [a.title for a in m.alerts]) for m in messages]


# --- risk events to alerts ----------------------------------------------------------------------------


def test_a_tripped_breaker_says_what_happened_with_numbers_what_the_guard_did_and_how_to_reset():
    a = alert_from_envelope(record(audit.BREAKER_TRANSITION, tripped("drawdown", 16.25).to_dict()))
    assert a is not None
    assert (a.key, a.severity, a.resolved, a.at) == ("alpha:breaker:drawdown", "warning", False, T0)
    assert a.title == "drawdown breaker tripped"
    text = "\n".join([a.headline, *a.lines()])
    assert "16.25" in text and "threshold 15" in text
    assert "REDUCING" in a.action and "exits still allowed" in a.action
    assert "half-open at 2024-01-15T12:05:00" in a.reset  # 300 s cooldown
    assert "POST /v1/breakers/drawdown/reset?account=alpha (operator key)" in a.reset
    assert a.headline == "WARNING [alpha] drawdown breaker tripped"


def test_a_manual_reset_breaker_is_critical_and_says_a_person_must_reset_it():
    a = alert_from_envelope(record(audit.BREAKER_TRANSITION, tripped("global_drawdown", 21.5).to_dict()))
    assert a is not None and a.severity == "critical"
    assert "HALTED" in a.action
    assert a.reset.startswith("manual reset needed: POST /v1/breakers/global_drawdown/reset?account=alpha")


def test_the_service_url_prefixes_reset_instructions_and_ids_are_quoted():
    transition = tripped("liquidation_distance", 2.5).model_copy(update={"breaker_id": "liq/1"})
    envelope = record(audit.BREAKER_TRANSITION, transition.to_dict(), account="team a")
    a = alert_from_envelope(envelope, "https://guard.example.com/")
    assert a is not None and a.severity == "critical" and a.key == "team a:breaker:liq/1"
    assert "POST https://guard.example.com/v1/breakers/liq%2F1/reset?account=team%20a" in a.reset


def test_a_shadow_breaker_is_only_information():
    a = alert_from_envelope(
        record(audit.BREAKER_TRANSITION, tripped("rapid_loss", 9.0, shadow=True).to_dict())
    )
    assert a is not None and a.severity == "info" and "shadow" in a.title


def test_half_open_and_closed_breakers_resolve_the_key_of_their_trip():
    b = brk.new_breaker("drawdown", "drawdown")
    b, _ = brk.evaluate(b, 16.0, T0)
    half, (t_half,) = brk.evaluate(b, 10.0, T0 + timedelta(seconds=301))
    _, (t_reset,) = brk.reset(half, T0 + timedelta(seconds=400), by="ops-key")
    a_half = alert_from_envelope(record(audit.BREAKER_TRANSITION, t_half.to_dict()))
    a_reset = alert_from_envelope(record(audit.BREAKER_TRANSITION, t_reset.to_dict()))
    assert a_half is not None and a_reset is not None
    assert a_half.resolved and a_half.key == "alpha:breaker:drawdown" and "half-open" in a_half.title
    assert a_reset.resolved and "reset by ops-key" in a_reset.title


def test_kill_switch_engaged_is_critical_and_released_resolves():
    on = alert_from_envelope(
        record(audit.KILL_SWITCH, {"engaged": True, "reason": "exchange hack", "by": "k1"})
    )
    off = alert_from_envelope(record(audit.KILL_SWITCH, {"engaged": False, "reason": None, "by": "k1"}))
    fleet = alert_from_envelope(record(audit.KILL_SWITCH, {"engaged": True, "reason": None, "by": "k1"}, "*"))
    assert on is not None and off is not None and fleet is not None
    assert (on.severity, on.key, off.resolved, off.key) == ("critical", "alpha:kill_switch", True, on.key)
    assert "Reason: exchange hack" in on.details
    assert on.reset == 'POST /v1/kill-switch {"engaged": false, "account": "alpha"} (operator key)'
    assert "whole fleet" in fleet.action and "(admin key)" in fleet.reset


def test_trading_state_halted_is_critical_reducing_warning_and_active_resolves():
    def check(state: str, decided_by: list[str]) -> Alert:
        payload = {
            "trading_state": state,
            "decided_by": decided_by,
            "reasons": ["drawdown breaker drawdown: drawdown_pct 16.2 (trips at >= 15)"],
            "readings": {"drawdown": 16.2, "liquidation_distance": None, "daily_loss": 1.5},
        }
        a = alert_from_envelope(record(audit.PORTFOLIO_CHECK, payload))
        assert a is not None and a.key == "alpha:trading_state"
        return a

    halted = check("HALTED", ["kill_switch", "global_drawdown"])
    assert halted.severity == "critical" and "no order passes" in halted.action
    assert "/v1/kill-switch" in halted.reset and "/v1/breakers/global_drawdown/reset" in halted.reset
    assert "Readings: daily_loss 1.5, drawdown 16.2" in halted.details  # canonical JSON: sorted
    reducing = check("REDUCING", ["drawdown"])
    assert reducing.severity == "warning" and "exposure-reducing" in reducing.action
    assert check("ACTIVE", []).resolved


ACTION = {"attempts": 3, "detail": "", "error": None, "errors": []}
MAPPED = [
    (audit.DRAWDOWN_ALERT, {"level": "warning", "window": "24h", "shape": "fast", "reasons": ["6.10% down"]},
     "warning", "drawdown", "6.10%"),
    (audit.DRAWDOWN_ALERT, {"level": "emergency", "window": "7d", "shape": "slow", "reasons": ["12.5% down"]},
     "critical", "drawdown", "12.5%"),
    (audit.LIQUIDATION_PROXIMITY,
     {"exchange": "binance", "status": "critical", "min_distance_pct": 2.345, "closest": "BTC/USDT:USDT"},
     "critical", "liquidation:binance", "2.345%"),
    (audit.LIQUIDATION_PROXIMITY,
     {"exchange": "bybit", "status": "warning", "min_distance_pct": 8.0, "closest": "ETH/USDT:USDT"},
     "warning", "liquidation:bybit", "8%"),
    (audit.CORRELATION_REGIME_CHANGE, {"score": 0.4213, "current": {}},
     "warning", "correlation_regime", "0.4213"),
    (audit.EXCHANGE_FAILURE, {"venue": "alpha:okx", "reason": "stale"},
     "warning", "exchange:alpha:okx", "okx"),
    (audit.BREAKER_ACTION, {**ACTION, "action": "freqtrade:ft1", "ok": False, "error": "HTTP 502"},
     "warning", "action:freqtrade:ft1", "HTTP 502"),
    (audit.BREAKER_ACTION, {**ACTION, "action": "cancel_orders", "ok": True, "detail": "2 cancelled"},
     "info", "action:cancel_orders", "2 cancelled"),
    (audit.WEBHOOK_DISABLED, {"webhook_id": "wh_1", "description": "ops", "reason": "HTTP 410 for 3 days",
                              "failing_since": "2024-01-12T12:00:00Z"},
     "warning", "webhook:wh_1", 'PATCH /v1/webhooks/wh_1 {"enabled": true}'),
]  # fmt: skip


@pytest.mark.parametrize(("event_type", "payload", "severity", "key", "numbers"), MAPPED)
def test_risk_events_map_to_a_severity_a_key_and_text_with_their_numbers(
    event_type: str, payload: dict[str, Any], severity: str, key: str, numbers: str
):
    a = alert_from_envelope(record(event_type, payload))
    assert a is not None
    assert (a.severity, a.key, a.resolved) == (severity, f"alpha:{key}", False)
    assert numbers in "\n".join([a.title, *a.lines()])


def test_evidence_only_events_and_envelope_dicts():
    assert alert_from_envelope(record(audit.AGGREGATE_SNAPSHOT, {"exposure": None})) is None
    assert alert_from_envelope(record(audit.ORDER_DECISION, {"allowed": True})) is None
    assert alert_from_envelope(record(audit.DRAWDOWN_ALERT, {"level": "none"})) is None
    envelope = record(audit.KILL_SWITCH, {"engaged": True, "reason": None, "by": "k"}).to_envelope()
    a = alert_from_envelope(envelope)  # the API's JSON form works the same
    assert a is not None and a.at == T0 and a.severity == "critical"


# --- routing ------------------------------------------------------------------------------------------


def test_default_rules_page_critical_post_warnings_and_drop_info():
    router = AlertRouter(ALL)
    assert router.channels_for(alert(severity="critical")) == ("pagerduty", "telegram")
    assert router.channels_for(alert(severity="warning")) == ("slack", "email")
    assert router.channels_for(alert(severity="info")) == ()
    only_telegram = default_rules(["telegram"])
    assert [r.channels for r in only_telegram] == [("telegram",), ("telegram",)]
    assert [r.channels for r in default_rules(["pagerduty", "email"])] == [("pagerduty",), ("email",)]


def test_routes_per_account_match_event_types_and_severities_first_match_wins():
    routes = {
        "alpha": [
            RoutingRule(event_types=("risk.exchange_failure",), channels=()),  # muted for alpha
            RoutingRule(event_types=("risk.breaker.*",), min_severity="warning", channels=("telegram",)),
            RoutingRule(severities=frozenset({"critical"}), channels=("pagerduty", "slack")),
        ],
        "*": [RoutingRule(channels=("email",))],
    }
    router = AlertRouter(ALL, routes)
    assert router.channels_for(alert(event_type="risk.exchange_failure", severity="critical")) == ()
    assert router.channels_for(alert(event_type="risk.breaker.transition", severity="critical")) == (
        "telegram",
    )
    assert router.channels_for(alert(event_type="risk.breaker.transition", severity="info")) == ()
    assert router.channels_for(alert(event_type="risk.kill_switch", severity="critical")) == (
        "pagerduty",
        "slack",
    )
    assert router.channels_for(alert(account="beta", severity="info")) == ("email",)
    with pytest.raises(InputError, match="unknown channels"):
        AlertRouter(["slack"], {"alpha": [RoutingRule(channels=("sms",))]})
    with pytest.raises(ValidationError, match="not both"):
        RoutingRule(min_severity="warning", severities=frozenset({"critical"}), channels=("slack",))


# --- dedup, resolves ----------------------------------------------------------------------------------


def test_dedup_by_key_within_the_window_but_a_severity_change_or_resolve_passes():
    router = AlertRouter(["slack"], policy=FatiguePolicy(group_window_s=0))
    assert titles(router.offer(alert(title="w1"), s(0))) == [("slack", ["w1"])]
    assert router.offer(alert(title="w2"), s(60)) == []  # same key, same severity
    assert router.stats.deduplicated == 1
    assert titles(router.offer(alert(title="c", severity="critical"), s(61))) == [("slack", ["c"])]
    assert titles(router.offer(alert(title="w3"), s(62))) == [("slack", ["w3"])]  # severity changed back
    assert titles(router.offer(alert(title="w4"), s(62 + 599))) == []  # still within 600 s of w3
    assert titles(router.offer(alert(title="w5"), s(62 + 600))) == [("slack", ["w5"])]  # window over
    assert titles(router.offer(alert(title="r", resolved=True), s(700))) == [("slack", ["r"])]
    assert titles(router.offer(alert(title="w6"), s(701))) == [("slack", ["w6"])]  # new after resolve
    assert router.stats.deduplicated == 2


def test_a_resolve_goes_where_its_trigger_went_with_its_severity_and_only_once():
    router = AlertRouter(ALL, policy=FatiguePolicy(group_window_s=0))
    assert router.offer(alert(title="nothing to resolve", resolved=True), s(0)) == []
    assert router.stats.unrouted == 1
    router.offer(alert(title="warn"), s(1))
    router.offer(alert(title="crit", severity="critical"), s(2))
    resolved = router.offer(alert(title="clear", severity="info", resolved=True), s(3))
    assert titles(resolved) == [(c, ["clear"]) for c in ALL]
    assert all(m.alerts[0].severity == "critical" and m.alerts[0].resolved for m in resolved)
    assert router.offer(alert(title="again", resolved=True), s(4)) == []
    assert router.stats.unrouted == 2


def test_no_resolve_when_the_trigger_went_nowhere():
    router = AlertRouter(ALL)
    assert router.offer(alert(title="info only", severity="info"), s(0)) == []
    assert router.offer(alert(title="clear", resolved=True), s(1)) == []
    assert (router.stats.unrouted, router.stats.sent) == (2, 0)


# --- grouping and rate limits -------------------------------------------------------------------------


def test_a_burst_goes_out_as_the_first_alert_then_one_message_listing_the_rest():
    router = AlertRouter(["slack"])
    assert titles(router.offer(alert("a", title="a"), s(0))) == [("slack", ["a"])]
    for i, key in enumerate("bcd", 1):
        assert router.offer(alert(key, title=key), s(i)) == []
    assert router.flush(s(30)) == []  # the group window runs from its first alert (t=1)
    assert titles(router.flush(s(31))) == [("slack", ["b", "c", "d"])]
    assert router.flush(s(100)) == [] and router.waiting == 0
    assert titles(router.offer(alert("e", title="e"), s(100))) == [("slack", ["e"])]  # idle again


def test_the_rate_limit_groups_the_overflow_instead_of_dropping_it():
    policy = FatiguePolicy(group_window_s=0, rate_limit_per_min=1, rate_limit_burst=2)
    router = AlertRouter(["slack"], policy=policy)
    sent = [m for i in range(10) for m in router.offer(alert(f"k{i}", title=f"k{i}"), s(i))]
    assert titles(sent) == [("slack", ["k0"]), ("slack", ["k1"])]  # the burst
    assert router.flush(s(10)) == []  # no token yet (one per minute)
    assert titles(router.flush(s(61))) == [("slack", [f"k{i}" for i in range(2, 10)])]
    assert router.stats.sent == router.stats.copies == 10


def test_a_critical_alert_does_not_wait_for_a_token():
    policy = FatiguePolicy(group_window_s=30, rate_limit_per_min=1, rate_limit_burst=1)
    router = AlertRouter(["telegram"], policy=policy)
    router.offer(alert("a", "critical", title="a"), s(0))  # takes the only token
    router.offer(alert("b", "warning", title="b"), s(1))
    assert router.offer(alert("c", "critical", title="c"), s(5)) == []  # grouped with b
    assert titles(router.flush(s(31))) == [("telegram", ["b", "c"])]  # due; critical: no token needed


# --- quiet hours --------------------------------------------------------------------------------------

BERLIN_NIGHTS = QuietHours(start=time(22), end=time(7), timezone="Europe/Berlin")


def test_quiet_hours_follow_the_local_clock_of_their_time_zone():
    winter, summer = datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 7, 15, tzinfo=UTC)
    assert BERLIN_NIGHTS.active(winter.replace(hour=21, minute=30))  # 22:30 CET
    assert not BERLIN_NIGHTS.active(winter.replace(hour=20, minute=30))  # 21:30 CET
    assert BERLIN_NIGHTS.active(summer.replace(hour=20, minute=30))  # 22:30 CEST
    assert BERLIN_NIGHTS.active(summer.replace(hour=4, minute=59))  # 06:59 CEST
    assert not BERLIN_NIGHTS.active(summer.replace(hour=5))  # 07:00 CEST
    lunch = QuietHours(start=time(12), end=time(13, 30))
    assert lunch.active(winter.replace(hour=12)) and not lunch.active(winter.replace(hour=13, minute=30))
    with pytest.raises(ValidationError, match="unknown IANA time zone"):
        QuietHours(start=time(22), end=time(7), timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="start != end"):
        QuietHours(start=time(7), end=time(7))


def test_quiet_hours_hold_non_critical_alerts_and_send_them_as_one_summary_when_they_end():
    router = AlertRouter(["telegram", "slack"], quiet_hours={"alpha": BERLIN_NIGHTS})
    night = datetime(2024, 1, 15, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    assert router.offer(alert("dd", title="warn"), night) == []
    crit = router.offer(alert("ks", "critical", title="crit"), night + timedelta(minutes=1))
    assert titles(crit) == [("telegram", ["crit"])]  # critical goes out at once
    assert router.offer(alert("dd", title="cleared", resolved=True), night + timedelta(hours=1)) == []
    assert titles(router.offer(alert("x", account="beta", title="beta"), night)) == [("slack", ["beta"])]
    assert router.flush(night + timedelta(hours=7, minutes=59)) == []  # 06:59 in Berlin
    (summary,) = router.flush(night + timedelta(hours=8))  # 07:00 in Berlin
    assert (summary.channel, [a.title for a in summary.alerts], summary.held) == (
        "slack",
        ["warn", "cleared"],
        2,
    )
    assert router.waiting == 0 and router.stats.deferred == 2


def test_a_critical_resolve_goes_out_during_quiet_hours():
    router = AlertRouter(["pagerduty"], quiet_hours={"*": BERLIN_NIGHTS})
    night = datetime(2024, 1, 15, 23, 0, tzinfo=UTC)
    assert len(router.offer(alert("ks", "critical"), night)) == 1
    (resolve,) = router.offer(alert("ks", "info", resolved=True), night + timedelta(minutes=40))
    assert resolve.alerts[0].resolved and resolve.alerts[0].severity == "critical"


def test_a_group_still_gathering_when_quiet_hours_begin_is_held():
    router = AlertRouter(["slack"], quiet_hours={"alpha": BERLIN_NIGHTS})
    evening = datetime(2024, 1, 15, 20, 59, 50, tzinfo=UTC)  # 21:59:50 in Berlin
    router.offer(alert("a", title="a"), evening)
    assert router.offer(alert("b", title="b"), evening + timedelta(seconds=1)) == []
    assert router.flush(evening + timedelta(seconds=31)) == []  # due at 22:00:21: held instead
    (summary,) = router.flush(evening + timedelta(hours=10))
    assert [a.title for a in summary.alerts] == ["b"] and summary.held == 1


# --- properties ---------------------------------------------------------------------------------------

START = datetime(2024, 1, 15, 23, 55, tzinfo=UTC)
QUIET_B = QuietHours(start=time(0, 0), end=time(0, 10))  # account b, 00:00–00:10 UTC, inside the run

steps = st.lists(
    st.tuples(
        st.integers(0, 40),  # seconds since the previous alert
        st.sampled_from(["k1", "k2", "k3"]),
        st.sampled_from(["info", "warning", "critical"]),
        st.booleans(),  # resolve
        st.sampled_from(["a", "b"]),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    steps=steps,
    window=st.integers(0, 30),
    per_min=st.sampled_from([0.5, 2.0, 6.0]),
    burst=st.integers(1, 3),
    dedup=st.sampled_from([0, 30, 600]),
)
def test_under_any_load_criticals_are_prompt_and_no_alert_is_lost(steps, window, per_min, burst, dedup):
    policy = FatiguePolicy(
        dedup_window_s=dedup, group_window_s=window, rate_limit_per_min=per_min, rate_limit_burst=burst
    )
    router = AlertRouter(ALL, quiet_hours={"b": QUIET_B}, policy=policy)
    offered_at: dict[str, datetime] = {}
    sent: list[tuple[str, Alert, datetime, Outgoing]] = []
    now = START

    def flush_until(end: datetime) -> None:
        nonlocal now
        while now < end:
            now += timedelta(seconds=1)
            sent.extend((m.channel, a, now, m) for m in router.flush(now) for a in m.alerts)

    for i, (gap, key, severity, resolved, account) in enumerate(steps):
        flush_until(now + timedelta(seconds=gap))
        a = replace(alert(key, severity, account=account, resolved=resolved, title=f"#{i}"), at=now)
        offered_at[a.title] = now
        sent.extend((m.channel, x, now, m) for m in router.offer(a, now) for x in m.alerts)
    flush_until(now + timedelta(seconds=window + 1))
    later = now + timedelta(days=1, hours=1)  # past the quiet hours, every bucket full
    sent.extend((m.channel, a, later, m) for m in router.flush(later) for a in m.alerts)

    stats = router.stats
    assert stats.offered == len(steps) == stats.deduplicated + stats.unrouted + stats.routed
    pairs = [(channel, a.title) for channel, a, _, _ in sent]
    assert len(pairs) == len(set(pairs)) == stats.copies == stats.sent  # each copy sent exactly once
    assert router.waiting == 0
    for channel, a, at, message in sent:
        if a.severity == "critical":  # whatever the load: within the group window
            assert at - offered_at[a.title] <= timedelta(seconds=window), (channel, a)
        elif a.account == "b" and QUIET_B.active(at):  # quiet hours: only alongside a critical alert
            assert RANK[message.severity] == RANK["critical"]
