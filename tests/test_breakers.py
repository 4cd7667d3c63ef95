"""Circuit breakers driven by an injected clock: lifecycle, doubling cooldown, manual reset, shadow mode."""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tradeguard.core.breakers import (
    BREAKER_KINDS,
    KIND_RULES,
    REASONS,
    BreakerConfig,
    BreakerState,
    Transition,
    evaluate,
    new_breaker,
    reset,
)
from tradeguard.core.drawdown import DrawdownConfig
from tradeguard.errors import InputError

T0 = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)


class FakeClock:
    """The injected clock: time moves only when the test says so."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def test_lifecycle_trip_cooldown_half_open_probe_closed():
    clock = FakeClock()
    b = new_breaker("acct1:dd24h", "drawdown")
    assert b.state == "closed" and b.threshold == 15.0

    b, events = evaluate(b, 10.0, clock.now)
    assert b.state == "closed" and events == [] and b.last_value == 10.0

    b, events = evaluate(b, 16.0, clock.advance(1))
    assert b.state == "open" and b.trips == 1
    assert b.opened_at == clock.now and b.cooldown_until == clock.now + timedelta(seconds=300)
    (trip,) = events
    assert (trip.from_state, trip.to_state, trip.reason) == ("closed", "open", "tripped")
    assert (trip.value, trip.threshold, trip.at, trip.enforced) == (16.0, 15.0, clock.now, True)

    b, events = evaluate(b, 10.0, clock.advance(299))  # healthy, but the cooldown is not over
    assert b.state == "open" and events == []

    b, events = evaluate(b, 10.0, clock.advance(1))  # cooldown over: half-open, the probe has yet to run
    assert b.state == "half_open" and [e.reason for e in events] == ["cooldown_elapsed"]
    assert "0.1 of normal size" in b.last_reason

    b, events = evaluate(b, 10.0, clock.advance(30))  # half-open for less than half_open_min_s
    assert b.state == "half_open" and events == []

    b, events = evaluate(b, 10.0, clock.advance(30))
    assert b.state == "closed" and [e.reason for e in events] == ["probe_healthy"]
    assert b.cooldown_until is None and b.closed_at == clock.now
    assert b.trips == 1  # kept for trip_memory_s so a quick re-trip doubles


def test_a_breach_when_the_cooldown_ends_reopens_with_a_doubled_cooldown():
    clock = FakeClock()
    b, _ = evaluate(new_breaker("b", "drawdown"), 16.0, clock.now)
    b, events = evaluate(b, 17.0, clock.advance(300))
    assert [(e.from_state, e.to_state, e.reason) for e in events] == [
        ("open", "half_open", "cooldown_elapsed"),
        ("half_open", "open", "probe_breached"),
    ]
    assert b.trips == 2 and b.cooldown_until == clock.now + timedelta(seconds=600)


def test_repeated_trips_double_the_cooldown_up_to_the_cap():
    clock = FakeClock()
    b = new_breaker("b", "rapid_loss")
    b, _ = evaluate(b, 9.0, clock.now)
    cooldowns = []
    for _ in range(7):
        cooldown = (b.cooldown_until - clock.now).total_seconds()
        cooldowns.append(cooldown)
        b, _ = evaluate(b, None, clock.advance(cooldown))
        assert b.state == "half_open"
        b, _ = evaluate(b, 9.0, clock.advance(10))  # the probe loses again
        assert b.state == "open"
    assert cooldowns == [300, 600, 1200, 2400, 3600, 3600, 3600]
    assert BreakerConfig().cooldown_s(10_000) == 3600


def test_trips_are_forgotten_after_staying_closed_for_trip_memory():
    config = BreakerConfig(half_open_min_s=0)
    clock = FakeClock()

    def trip_and_recover(b: BreakerState) -> tuple[BreakerState, float]:
        b, _ = evaluate(b, 20.0, clock.now, config)
        cooldown = (b.cooldown_until - clock.now).total_seconds()
        b, _ = evaluate(b, None, clock.advance(cooldown), config)
        b, _ = evaluate(b, 1.0, clock.advance(1), config)
        assert b.state == "closed"
        return b, cooldown

    b, first = trip_and_recover(new_breaker("b", "drawdown"))
    clock.advance(600)
    b, second = trip_and_recover(b)  # re-tripped 10 minutes after closing: doubled
    clock.advance(3600)
    b, _ = evaluate(b, 1.0, clock.now, config)
    assert b.trips == 0
    b, third = trip_and_recover(b)  # closed for an hour: back to the base cooldown
    assert (first, second, third) == (300, 600, 300)


def test_manual_reset_breakers_stay_open_until_reset():
    clock = FakeClock()
    g = new_breaker("acct1:global", "global_drawdown")
    assert g.manual_reset and g.threshold == 20.0
    g, events = evaluate(g, 21.0, clock.now)
    assert g.state == "open" and g.cooldown_until is None
    assert "manual reset" in events[0].message
    for _ in range(5):
        g, events = evaluate(g, 0.0, clock.advance(86_400))
        assert g.state == "open" and events == []
    g, events = reset(g, clock.advance(1), by="alice")
    assert g.state == "closed" and g.trips == 0 and g.closed_at == clock.now
    (event,) = events
    assert (event.reason, event.by, event.to_state) == ("manual_reset", "alice", "closed")


def test_global_drawdown_cannot_be_made_automatic():
    with pytest.raises(ValidationError):
        new_breaker("g", "global_drawdown", manual_reset=False)


def test_any_kind_can_be_manual_and_any_breaker_can_be_reset_by_an_operator():
    clock = FakeClock()
    b, _ = evaluate(new_breaker("b", "correlation", manual_reset=True), 0.95, clock.now)
    b, _ = evaluate(b, 0.1, clock.advance(10_000))
    assert b.state == "open"
    auto, _ = evaluate(new_breaker("a", "drawdown"), 30.0, clock.now)
    auto, events = reset(auto, clock.advance(1), by="ops")
    assert auto.state == "closed" and events[0].by == "ops"
    same, events = reset(auto, clock.advance(1), by="ops")  # already closed: nothing to record
    assert same.state == "closed" and events == []
    with pytest.raises(InputError):
        reset(auto, clock.now, by=" ")


def test_daily_loss_pauses_until_the_next_utc_day():
    clock = FakeClock(datetime(2024, 3, 15, 15, 0, tzinfo=UTC))
    b, _ = evaluate(new_breaker("acct1:daily", "daily_loss"), 6.0, clock.now)
    assert b.state == "open" and b.cooldown_until == datetime(2024, 3, 16, tzinfo=UTC)
    b, events = evaluate(b, 0.0, datetime(2024, 3, 15, 23, 59, 59, tzinfo=UTC))
    assert b.state == "open" and events == []
    b, events = evaluate(b, 0.0, datetime(2024, 3, 16, tzinfo=UTC))
    assert b.state == "closed" and [e.reason for e in events] == ["new_utc_day"]
    b, events = evaluate(b, 7.0, datetime(2024, 3, 16, 9, tzinfo=UTC))  # a new day's loss: paused again
    assert b.state == "open" and b.cooldown_until == datetime(2024, 3, 17, tzinfo=UTC)


def test_liquidation_distance_breaches_below_its_threshold():
    clock = FakeClock()
    b = new_breaker("liq", "liquidation_distance")
    b, _ = evaluate(b, math.inf, clock.now)  # no positions: infinitely far
    assert b.state == "closed" and b.last_value == math.inf
    b, _ = evaluate(b, 6.0, clock.now)
    assert b.state == "closed"
    b, _ = evaluate(b, 5.0, clock.now)
    assert b.state == "open"


def test_correlation_breaches_above_its_threshold():
    b, _ = evaluate(new_breaker("c", "correlation"), 0.89, T0)
    assert b.state == "closed"
    b, _ = evaluate(b, 0.95, T0)
    assert b.state == "open"


def test_shadow_breakers_record_transitions_but_are_never_enforced():
    clock = FakeClock()
    s = new_breaker("shadow:global", "global_drawdown", shadow=True)
    s, events = evaluate(s, 25.0, clock.now)
    assert s.state == "open" and not s.enforced
    assert events and all(not e.enforced for e in events)
    s, events = reset(s, clock.advance(1), by="bob")
    assert not events[0].enforced


def test_no_reading_moves_only_the_clock():
    clock = FakeClock()
    b, _ = evaluate(new_breaker("b", "drawdown"), 20.0, clock.now)
    b, events = evaluate(b, None, clock.advance(300))
    assert b.state == "half_open" and b.last_value == 20.0
    b, events = evaluate(b, None, clock.advance(3600))
    assert b.state == "half_open" and events == []


def test_bad_readings_and_clocks_are_refused():
    b = new_breaker("b", "drawdown")
    with pytest.raises(InputError):
        evaluate(b, math.nan, T0)
    with pytest.raises(InputError):
        evaluate(b, 1.0, T0.replace(tzinfo=None))
    with pytest.raises(InputError):
        new_breaker("b", "volatility")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BreakerConfig(base_cooldown_s=600, max_cooldown_s=300)
    with pytest.raises(ValidationError):
        BreakerConfig(cooldown=300)  # unknown field


def test_state_and_transitions_survive_a_json_round_trip():
    clock = FakeClock()
    b, events = evaluate(new_breaker("liq", "liquidation_distance"), 2.0, clock.now)
    b, _ = evaluate(b, math.inf, clock.now)
    data = b.to_dict()
    text = json.dumps(data, allow_nan=False)  # strict JSON: the store and RFC 8785 both need it
    restored = BreakerState.from_dict(json.loads(text))
    assert restored == b and restored.last_value == math.inf
    assert data["opened_at"].endswith("Z") or data["opened_at"].endswith("+00:00")
    assert Transition.from_dict(json.loads(json.dumps(events[0].to_dict()))) == events[0]


def test_breaker_defaults_agree_with_the_drawdown_config():
    config = DrawdownConfig()
    assert KIND_RULES["global_drawdown"].default_threshold == config.global_drawdown_pct
    assert KIND_RULES["daily_loss"].default_threshold == config.daily_loss_pct
    assert KIND_RULES["drawdown"].default_threshold == config.circuit_breaker_pct


# ---------------------------------------------------------------- properties

steps = st.lists(
    st.tuples(
        st.floats(0, 4000, allow_nan=False),  # seconds until the next evaluation
        st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False)),  # the reading
        st.booleans(),  # operator reset at this step
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200)
@given(st.sampled_from(BREAKER_KINDS), st.booleans(), st.booleans(), steps)
def test_a_breaker_never_leaves_open_before_its_cooldown(kind, manual, shadow, seq):
    config = BreakerConfig()
    manual = manual or KIND_RULES[kind].always_manual
    b = new_breaker("p", kind, manual_reset=manual, shadow=shadow)
    clock = FakeClock()
    allowed = {0, 300, 600, 1200, 2400, 3600}
    for gap, reading, by_hand in seq:
        before = b
        now = clock.advance(gap)
        if by_hand and reading is None:
            b, events = reset(b, now, by="prop")
            assert b.state == "closed"
            continue
        b, events = evaluate(b, reading, now, config)
        if (before.state == "open" and b.state != "open") or any(e.from_state == "open" for e in events):
            assert not manual
            assert before.cooldown_until is not None and now >= before.cooldown_until
        if b.state == "open" and not manual and not KIND_RULES[kind].until_next_utc_day:
            assert (b.cooldown_until - b.opened_at).total_seconds() in allowed
        for e in events:
            assert e.reason in REASONS and e.enforced is (not shadow) and e.from_state != e.to_state
        assert BreakerState.from_dict(json.loads(json.dumps(b.to_dict(), allow_nan=False))) == b
