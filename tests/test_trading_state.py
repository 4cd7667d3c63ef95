"""ACTIVE / REDUCING / HALTED from breakers and the kill switch, and which orders each state lets through."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradeguard.core.breakers import BREAKER_KINDS, BreakerState, evaluate, new_breaker, reset
from tradeguard.core.trading_state import (
    DEFAULT_REDUCING_KINDS,
    TradingState,
    TradingStateDecision,
    order_allowed,
    trading_state,
)
from tradeguard.errors import InputError

T0 = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)


def opened(id_: str, kind: str, value: float = 1e6, **kwargs) -> BreakerState:
    b = new_breaker(id_, kind, **kwargs)  # type: ignore[arg-type]
    if b.rule.breaches_below:
        value = -value
    b, _ = evaluate(b, value, T0)
    assert b.state == "open"
    return b


def half_open(id_: str, kind: str) -> BreakerState:
    b = opened(id_, kind)
    b, _ = evaluate(b, None, b.cooldown_until)
    assert b.state == "half_open"
    return b


def test_all_closed_is_active_at_full_size():
    d = trading_state([new_breaker(k, k) for k in BREAKER_KINDS], kill_switch_engaged=False)
    assert d.state is TradingState.ACTIVE and d.max_size_fraction == 1.0
    assert d.decided_by == () and d.reason_codes == ("all_clear",)


def test_the_kill_switch_halts_everything():
    d = trading_state([], kill_switch_engaged=True)
    assert d.state is TradingState.HALTED and d.decided_by == ("kill_switch",) and d.max_size_fraction == 0
    assert not order_allowed(d, reduces_exposure=True)
    assert not order_allowed(d, reduces_exposure=False)


@pytest.mark.parametrize("kind", sorted(DEFAULT_REDUCING_KINDS))
def test_an_open_automatic_breaker_lets_only_reducing_orders_through(kind):
    d = trading_state([opened("b1", kind), new_breaker("b2", "correlation")], kill_switch_engaged=False)
    assert d.state is TradingState.REDUCING and d.decided_by == ("b1",)
    assert d.reason_codes == (f"{kind}_open",) and d.reasons[0].startswith(kind)
    assert order_allowed(d, reduces_exposure=True)
    assert not order_allowed(d, reduces_exposure=False)


def test_an_open_global_or_manual_breaker_halts_and_outranks_reducing():
    d = trading_state([opened("dd", "drawdown"), opened("g", "global_drawdown")], kill_switch_engaged=False)
    assert d.state is TradingState.HALTED and d.decided_by == ("g",)
    assert d.reason_codes == ("global_drawdown_manual_reset",)
    manual = trading_state([opened("m", "rapid_loss", manual_reset=True)], kill_switch_engaged=False)
    assert manual.state is TradingState.HALTED


def test_a_kind_left_out_of_reducing_kinds_halts():
    d = trading_state([opened("r", "rapid_loss")], False, reducing_kinds={"drawdown", "correlation"})
    assert d.state is TradingState.HALTED and d.reason_codes == ("rapid_loss_open",)
    with pytest.raises(InputError):
        trading_state([], False, reducing_kinds={"drawdwon"})


def test_half_open_is_active_with_the_probe_size():
    d = trading_state([half_open("h", "drawdown")], kill_switch_engaged=False)
    assert d.state is TradingState.ACTIVE and d.max_size_fraction == pytest.approx(0.1)
    assert d.probing == ("h",) and d.decided_by == ("h",)
    assert order_allowed(d, reduces_exposure=False)
    both = trading_state([half_open("h", "drawdown"), opened("c", "correlation")], kill_switch_engaged=False)
    assert both.state is TradingState.REDUCING and both.max_size_fraction == 0.0 and both.probing == ("h",)


def test_shadow_breakers_are_listed_but_never_act():
    shadow = opened("s", "global_drawdown", shadow=True)
    d = trading_state([shadow], kill_switch_engaged=False)
    assert d.state is TradingState.ACTIVE and d.max_size_fraction == 1.0 and d.shadow == ("s",)


@pytest.mark.parametrize(
    ("state", "reduces", "allowed"),
    [
        (TradingState.ACTIVE, False, True),
        (TradingState.ACTIVE, True, True),
        (TradingState.REDUCING, False, False),
        (TradingState.REDUCING, True, True),
        (TradingState.HALTED, False, False),
        (TradingState.HALTED, True, False),
    ],
)
def test_order_allowed(state, reduces, allowed):
    assert order_allowed(state, reduces) is allowed
    assert order_allowed(state.value, reduces) is allowed  # type: ignore[arg-type]


def test_a_breaker_lifecycle_seen_as_trading_states():
    b = new_breaker("acct1:dd", "drawdown")
    states = []
    for seconds, reading in [(0, 5.0), (10, 16.0), (300, 16.0), (310, 5.0), (400, 5.0)]:
        b, _ = evaluate(b, reading, T0 + timedelta(seconds=seconds))
        d = trading_state([b], kill_switch_engaged=False)
        states.append((d.state.value, d.max_size_fraction))
    # tripped at 10 s; cooldown over at 310 s -> probe at 0.1; healthy 90 s later -> closed
    assert states == [("ACTIVE", 1.0), ("REDUCING", 0.0), ("REDUCING", 0.0), ("ACTIVE", 0.1), ("ACTIVE", 1.0)]
    g, _ = evaluate(new_breaker("acct1:global", "global_drawdown"), 25.0, T0)
    assert trading_state([b, g], False).state is TradingState.HALTED
    g, _ = reset(g, T0 + timedelta(hours=1), by="alice")
    assert trading_state([b, g], False).state is TradingState.ACTIVE


@given(st.lists(st.sampled_from(BREAKER_KINDS), max_size=6), st.lists(st.booleans(), min_size=6, max_size=6))
def test_the_kill_switch_always_halts_and_shadow_never_matters(kinds, flags):
    breakers = [opened(f"b{i}", k, shadow=flags[i]) for i, k in enumerate(kinds)]
    assert trading_state(breakers, kill_switch_engaged=True).state is TradingState.HALTED
    enforced_only = [b for b in breakers if not b.shadow]
    with_shadow = trading_state(breakers, kill_switch_engaged=False)
    without = trading_state(enforced_only, kill_switch_engaged=False)
    assert isinstance(with_shadow, TradingStateDecision)
    assert (with_shadow.state, with_shadow.decided_by) == (without.state, without.decided_by)
