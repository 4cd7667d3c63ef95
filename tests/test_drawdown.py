"""Drawdown per window (from the window's peak), escalation, shape, daily loss and the intraday monitor."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tradeguard.core.drawdown import (
    DrawdownConfig,
    DrawdownMemo,
    daily_loss,
    daily_pnl,
    drawdown_report,
    equity_arrays,
    escalation_level,
    global_drawdown,
    intraday_status,
    loss_pct,
    next_utc_midnight,
    window_drawdown,
    window_drawdowns,
)
from tradeguard.core.timeframe import timeframe_seconds
from tradeguard.errors import InputError

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
M = timedelta(minutes=1)


def path(points: list[tuple[timedelta, float]], now: datetime = NOW) -> tuple[np.ndarray, np.ndarray]:
    """(times_ns, equity) from (offset before `now`, equity) pairs, oldest first."""
    times = [pd.Timestamp(now - ago).value for ago, _ in points]
    return np.array(times, dtype=np.int64), np.array([v for _, v in points], dtype=np.float64)


# One peak per window: each window's drawdown is measured from its own peak, never from its start.
NESTED = path(
    [
        (35 * D, 100.0),
        (20 * D, 200.0),  # 30d peak
        (19 * D, 90.0),
        (3 * D, 150.0),  # 7d peak
        (3 * D - H, 90.0),
        (10 * H, 120.0),  # 24h peak
        (9 * H, 90.0),
        (2 * H, 110.0),  # 4h peak
        (90 * M, 90.0),
        (30 * M, 105.0),  # 1h peak
        (20 * M, 90.0),
        (0 * M, 100.0),
    ]
)


def test_each_window_measures_from_its_own_peak():
    by_window = {w.window: w for w in window_drawdowns(*NESTED, NOW)}
    expected = {  # window: (peak, current %, max %, level)
        "1h": (105.0, 5 / 105 * 100, 15 / 105 * 100, "none"),
        "4h": (110.0, 10 / 110 * 100, 20 / 110 * 100, "critical"),
        "24h": (120.0, 20 / 120 * 100, 30 / 120 * 100, "circuit_breaker"),
        "7d": (150.0, 50 / 150 * 100, 60 / 150 * 100, "circuit_breaker"),
        "30d": (200.0, 50.0, 55.0, "circuit_breaker"),
    }
    for window, (peak, current, worst, level) in expected.items():
        w = by_window[window]
        assert w.peak == peak, window
        assert w.current_pct == pytest.approx(current), window
        assert w.max_pct == pytest.approx(worst), window
        assert w.level == level, window
        assert w.equity == 100.0


def test_drawdown_is_from_the_peak_not_from_the_start():
    t, x = path([(50 * M, 100.0), (40 * M, 120.0), (0 * M, 108.0)])
    w = window_drawdown(t, x, NOW, "1h")
    assert w.current_pct == pytest.approx(10.0)  # 108 is +8 % from the start but -10 % from the peak
    assert w.peak == 120.0 and w.peak_at == NOW - 40 * M


def test_the_equity_in_effect_at_the_window_start_is_carried_in():
    t, x = path([(2 * H, 120.0), (30 * M, 100.0)])
    w = window_drawdown(t, x, NOW, "1h")
    assert w.peak == 120.0 and w.peak_at == NOW - H  # held since 2h ago, seen from the window start
    assert w.current_pct == pytest.approx(20 / 120 * 100)
    assert w.observations == 2


def test_observations_after_now_are_not_seen():
    t, x = path([(30 * M, 100.0), (-10 * M, 50.0)])
    assert window_drawdown(t, x, NOW, "1h").current_pct == 0.0


def test_report_escalates_on_the_deepest_current_drawdown():
    report = drawdown_report(*NESTED, NOW)
    assert report.level == "circuit_breaker" and report.level_window == "30d"
    assert report.equity == 100.0 and report.as_of == NOW
    assert report.global_drawdown.breached and report.global_drawdown.drawdown_pct == pytest.approx(50.0)
    assert len(report.reasons) == 4 and "30d" in report.reasons[0]


@pytest.mark.parametrize(
    ("pct", "level"),
    [
        (0.0, "none"),
        (4.99, "none"),
        (5.0, "warning"),
        (7.99, "warning"),
        (8.0, "critical"),
        (11.99, "critical"),
        (12.0, "emergency"),
        (14.99, "emergency"),
        (15.0, "circuit_breaker"),
        (100.0, "circuit_breaker"),
    ],
)
def test_escalation_levels_at_their_thresholds(pct, level):
    assert escalation_level(pct) == level


def test_escalation_thresholds_are_configurable_and_validated():
    config = DrawdownConfig(warning_pct=2, critical_pct=3, emergency_pct=4, circuit_breaker_pct=6)
    assert escalation_level(3.5, config) == "critical"
    with pytest.raises(ValidationError):
        DrawdownConfig(warning_pct=9)  # above critical
    with pytest.raises(ValidationError):
        DrawdownConfig(warning_percent=5)  # typo: unknown field
    with pytest.raises(ValidationError):
        DrawdownConfig(windows=("1h", "1 hour"))
    with pytest.raises(ValidationError):
        DrawdownConfig(intraday_warn_pct=10, intraday_crit_pct=10)


# ---------------------------------------------------------------- shape


def hourly(values: list[float], end: datetime = NOW) -> tuple[np.ndarray, np.ndarray]:
    n = len(values)
    return path([((n - 1 - i) * H, v) for i, v in enumerate(values)], end)


def test_a_quick_fall_is_fast():
    t, x = path([(5 * D, 100.0), (2 * D, 100.0), (2 * D - 30 * M, 85.0), (0 * M, 92.0)])
    w = window_drawdown(t, x, NOW, "30d")
    # the fall (peak → trough) took 30 minutes; the slow partial recovery since does not make it slow
    assert w.shape == "fast" and w.fall_s == 1800 and w.crossings == 0
    assert w.trough == 85.0 and w.trough_at == NOW - 2 * D + 30 * M


def test_a_steady_decline_is_slow():
    t, x = hourly(list(np.linspace(100, 90, 72)))
    w = window_drawdown(t, x, NOW, "7d")
    assert w.shape == "slow" and w.crossings == 0 and w.fall_s == 71 * 3600


def test_repeated_recoveries_above_mid_make_it_oscillating():
    # peak 100, trough 90, mid 95: back above 95 twice (90→97, 91→96)
    t, x = hourly([100, 94, 90, 97, 93, 91, 96, 93])
    w = window_drawdown(t, x, NOW, "24h")
    assert w.crossings == 2 and w.shape == "oscillating"
    one_crossing = window_drawdown(*hourly([100, 94, 90, 97, 93]), NOW, "24h")
    assert one_crossing.crossings == 1 and one_crossing.shape == "fast"


def test_noise_around_mid_is_not_oscillation():
    # trough 90, mid 95: wobbling 94 ↔ 96 never returns to the deep quarter (<= 92.5), so it is one recovery
    t, x = hourly([100, 95, 90, 96, 94, 96, 94, 96, 94, 96, 94])
    w = window_drawdown(t, x, NOW, "24h")
    assert w.crossings == 1 and w.shape == "fast"
    assert window_drawdown(t, x, NOW, "24h", DrawdownConfig(oscillation_crossings=1)).shape == "oscillating"


def test_shallow_or_no_drawdown_has_no_shape():
    assert window_drawdown(*hourly([100, 99.5]), NOW, "24h").shape == "none"  # 0.5 % < classify_min_pct
    assert window_drawdown(*hourly([90, 95, 100]), NOW, "24h").shape == "none"  # at a new high


def test_fast_within_is_configurable():
    t, x = hourly([100, 97, 94, 91, 88, 85])  # fall over 5 hours
    assert window_drawdown(t, x, NOW, "24h").shape == "slow"
    assert window_drawdown(t, x, NOW, "24h", DrawdownConfig(fast_within="6h")).shape == "fast"


# ---------------------------------------------------------------- global, daily, intraday, rapid


def test_global_drawdown_uses_the_trailing_30_day_peak_only():
    t, x = path([(40 * D, 500.0), (35 * D, 90.0), (29 * D, 100.0), (0 * D, 79.0)])
    g = global_drawdown(t, x, NOW)
    assert g.peak == 100.0 and g.drawdown_pct == pytest.approx(21.0) and g.breached  # 500 ended 35 days ago
    assert not global_drawdown(*path([(29 * D, 100.0), (0 * D, 81.0)]), NOW).breached


DAY = datetime(2024, 3, 15, tzinfo=UTC)


def test_daily_loss_pauses_until_the_next_utc_day():
    t, x = path([(13 * H, 1000.0), (5 * H, 1010.0), (0 * H, 940.0)])  # 23:00 yesterday → 12:00 today
    day = daily_pnl(t, x, NOW)
    assert day.day_start == DAY and day.start_equity == 1000.0 and day.pnl == -60.0
    loss = daily_loss(day.pnl, 1000.0, NOW)
    assert loss.breached and loss.pnl_pct == pytest.approx(-6.0) and loss.loss_pct == pytest.approx(6.0)
    assert loss.paused_until == datetime(2024, 3, 16, tzinfo=UTC)
    assert "paused until" in loss.reason
    ok = daily_loss(-40.0, 1000.0, NOW)
    assert not ok.breached and ok.paused_until is None
    assert daily_loss(-50.0, 1000.0, NOW).breached  # the threshold counts when reached


def test_daily_pnl_without_an_overnight_value_starts_at_the_first_of_the_day():
    t, x = path([(3 * H, 500.0), (0 * H, 480.0)])
    day = daily_pnl(t, x, NOW)
    assert day.start_equity == 500.0 and day.pnl == -20.0


def test_daily_loss_rule_takes_the_capital_it_is_given():
    t, x = path([(13 * H, 1000.0), (0 * H, 960.0)])
    assert not drawdown_report(t, x, NOW).daily.breached  # -4 % of the day-start equity
    assert drawdown_report(t, x, NOW, capital=500.0).daily.breached  # -8 % of 500
    with pytest.raises(InputError):
        daily_loss(-1.0, 0.0, NOW)


def test_next_utc_midnight():
    assert next_utc_midnight(DAY) == DAY + D
    assert next_utc_midnight(DAY + D - timedelta(microseconds=1)) == DAY + D
    assert next_utc_midnight(datetime(2024, 3, 15, 23, 30, tzinfo=UTC)) == DAY + D


@pytest.mark.parametrize(
    ("now_value", "state"), [(1050.0, "OK"), (1045.0, "WARN"), (1000.0, "WARN"), (990, "CRIT")]
)
def test_intraday_monitor_against_the_session_high(now_value, state):
    t, x = path([(13 * H, 1000.0), (2 * H, 1100.0), (0 * H, now_value)])
    status = intraday_status(t, x, NOW)
    assert status.session_high == 1100.0 and status.state == state
    assert status.session_start == DAY


def test_intraday_session_starts_at_utc_midnight():
    # yesterday's 1200 high does not count; the 1000 in effect at 00:00 does
    t, x = path([(16 * H, 1200.0), (13 * H, 1000.0), (0 * H, 950.0)])
    status = intraday_status(t, x, NOW)
    assert status.session_high == 1000.0 and status.drawdown_pct == pytest.approx(5.0)
    assert status.state == "WARN"


def test_rapid_loss_is_the_fall_within_its_window():
    t, x = path([(20 * M, 1000.0), (10 * M, 1020.0), (0 * M, 950.0)])
    assert loss_pct(t, x, NOW, "15m") == pytest.approx(5.0)  # from the 1000 in effect 15 min ago
    assert loss_pct(*path([(20 * M, 1000.0), (0 * M, 1010.0)]), NOW, "15m") == 0.0
    assert drawdown_report(t, x, NOW).rapid_loss_pct == pytest.approx(5.0)


# ---------------------------------------------------------------- inputs


def test_bad_inputs_are_refused():
    t, x = path([(H, 100.0), (0 * H, 90.0)])
    with pytest.raises(InputError):
        window_drawdown(t, np.array([100.0, np.nan]), NOW, "1h")
    with pytest.raises(InputError):
        window_drawdown(t, np.array([100.0, -1.0]), NOW, "1h")
    with pytest.raises(InputError):
        window_drawdown(t[::-1], x, NOW, "1h")
    with pytest.raises(InputError):
        window_drawdown(t, x[:1], NOW, "1h")
    with pytest.raises(InputError):
        window_drawdown(t, x, NOW - 2 * H, "1h")  # nothing observed yet
    with pytest.raises(InputError):
        window_drawdown(t, x, NOW.replace(tzinfo=None), "1h")


def test_pandas_series_input():
    index = pd.date_range("2024-03-15 10:00", periods=3, freq="h", tz="UTC")
    t, x = equity_arrays(pd.Series([100.0, 120.0, 90.0], index=index))
    assert window_drawdown(t, x, NOW, "24h").current_pct == pytest.approx(25.0)
    naive = equity_arrays(pd.Series([1.0], index=index[:1].tz_localize(None)))
    assert naive[0][0] == t[0]


def test_zero_equity_is_a_full_drawdown_and_a_zero_peak_is_none():
    assert window_drawdown(*hourly([100, 0]), NOW, "24h").current_pct == 100.0
    assert window_drawdown(*hourly([0, 0]), NOW, "24h").current_pct == 0.0


# ---------------------------------------------------------------- properties

positive = st.floats(0.0, 1e9, allow_nan=False, allow_infinity=False)
gaps_min = st.integers(0, 3 * 24 * 60)  # minutes between observations: up to 3 days


@st.composite
def equity_paths(draw, values=positive):
    n = draw(st.integers(1, 60))
    gaps = draw(st.lists(gaps_min, min_size=n, max_size=n))
    xs = draw(st.lists(values, min_size=n, max_size=n))
    offsets = np.cumsum(gaps[::-1])[::-1] - gaps[-1]  # minutes before now, oldest first, last at now
    ts = [pd.Timestamp(NOW - timedelta(minutes=int(m))).value for m in offsets]
    return np.array(ts, dtype=np.int64), np.array(xs, dtype=np.float64)


def reference(t: np.ndarray, x: np.ndarray, window_s: int) -> tuple[float, float]:
    """Loop version: (current, max) drawdown of the window, carrying in the value at its start."""
    now_ns, start_ns = pd.Timestamp(NOW).value, pd.Timestamp(NOW).value - window_s * 10**9
    before = [v for ti, v in zip(t, x, strict=True) if ti <= start_ns]
    seen = before[-1:] + [v for ti, v in zip(t, x, strict=True) if start_ns < ti <= now_ns]
    peak, worst = 0.0, 0.0
    for v in seen:
        peak = max(peak, v)
        worst = max(worst, (peak - v) / peak * 100 if peak > 0 else 0.0)
    return ((peak - seen[-1]) / peak * 100 if peak > 0 else 0.0), worst


@given(equity_paths())
def test_drawdowns_are_percentages_and_match_a_loop(p):
    t, x = p
    windows = window_drawdowns(t, x, NOW)
    for w in windows:
        assert 0.0 <= w.current_pct <= w.max_pct <= 100.0
        current, worst = reference(t, x, timeframe_seconds(w.window))
        assert w.current_pct == pytest.approx(current, abs=1e-9)
        assert w.max_pct == pytest.approx(worst, abs=1e-9)
    currents = [w.current_pct for w in windows]
    assert currents == sorted(currents)  # a longer window's peak is never lower


@given(equity_paths())
def test_the_report_shares_segment_work_without_changing_a_window(p):
    t, x = p
    assert drawdown_report(t, x, NOW, capital=1.0).windows == window_drawdowns(t, x, NOW)  # each on its own


# Operations on a growing equity path, as the portfolio guard sees it: append, re-report the last instant,
# insert a late observation, move the clock (windows start later), trim; a report after each.
path_ops = st.lists(
    st.tuples(
        st.sampled_from(["append", "append", "append", "replace", "late", "wait"]),
        st.floats(0.0, 2_000.0, allow_nan=False),  # equity (0 included)
        st.integers(1, 6 * 24 * 60),  # minutes: step between observations, or the clock's move
    ),
    min_size=1,
    max_size=80,
)


@given(path_ops, st.sampled_from([("1h", "4h", "24h", "7d", "30d"), ("1h", "4h")]))
def test_a_memo_carried_between_reports_gives_what_a_fresh_report_gives(ops, windows):
    config = DrawdownConfig(windows=windows, global_lookback=windows[-1])
    memo, generation = DrawdownMemo(), 0
    ts, xs = [NOW], [1_000.0]
    now = NOW
    for op, value, minutes in ops:
        step = timedelta(minutes=minutes)
        if op == "append":
            ts.append(ts[-1] + step)
            xs.append(value)
        elif op == "replace":
            xs[-1], generation = value, generation + 1
        elif op == "late" and len(ts) > 1:  # between the last two: an insertion, not an append
            ts.insert(-1, ts[-2] + (ts[-1] - ts[-2]) / 2)
            xs.insert(-1, value)
            generation += 1
        now = max(now + (step if op == "wait" else timedelta(0)), ts[-1])
        t = np.array([pd.Timestamp(v).value for v in ts], dtype=np.int64)
        x = np.array(xs)
        if len(set(ts)) != len(ts):
            continue
        fresh = drawdown_report(t, x, now, config, capital=1.0)
        assert drawdown_report(t, x, now, config, capital=1.0, memo=memo, generation=generation) == fresh


@given(equity_paths())
def test_a_non_decreasing_series_has_no_drawdown(p):
    t, x = p
    x = np.maximum.accumulate(x)
    for w in window_drawdowns(t, x, NOW):
        assert w.current_pct == 0.0 and w.max_pct == 0.0 and w.level == "none" and w.shape == "none"
    assert intraday_status(t, x, NOW).state == "OK"
