"""Causal rolling primitives: ranks, hysteresis, trailing flags."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tradeguard.core.rolling import rolling_pct_rank, rolling_std, run_lengths, trailing_any, with_min_dwell

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
# whole numbers: distinct values whose quantile interpolation cannot round onto a neighbour
whole = st.integers(-(10**6), 10**6).map(float)


@given(arrays(np.float64, st.integers(2, 80), elements=whole, unique=True), st.integers(2, 30))
def test_rank_above_q_matches_the_linear_quantile(x, window):
    rank = rolling_pct_rank(x, window, min_periods=2)
    for i in range(1, len(x)):
        w = x[max(0, i - window + 1) : i + 1]
        if len(w) < 2:
            continue
        assert (rank[i] > 0.9) == (x[i] > np.quantile(w, 0.9))
        assert rank[i] == np.sum(w < x[i]) / (len(w) - 1)


@given(arrays(np.float64, st.integers(1, 60), elements=finite), st.integers(2, 20), st.integers(0, 60))
def test_rank_from_start_equals_full_computation(x, window, start):
    full = rolling_pct_rank(x, window, min_periods=2)
    part = rolling_pct_rank(x, window, min_periods=2, start=start)
    np.testing.assert_array_equal(part[start:], full[start:])
    assert np.isnan(part[:start]).all()


def test_rank_needs_min_periods_and_ignores_nan():
    x = np.array([np.nan, np.nan, 1.0, 2.0, 3.0, 0.5])
    rank = rolling_pct_rank(x, window=10, min_periods=3)
    assert np.isnan(rank[:4]).all()
    assert rank[4] == 1.0 and rank[5] == 0.0


def test_rolling_std_is_sample_std_of_each_window():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    out = rolling_std(x, 3)
    assert np.isnan(out[:2]).all()
    np.testing.assert_allclose(out[2:], [np.std(x[i - 2 : i + 1], ddof=1) for i in range(2, 5)])


@given(arrays(np.bool_, st.integers(0, 50)), st.integers(1, 10))
def test_trailing_any_matches_a_loop(flags, window):
    expected = [flags[max(0, i - window + 1) : i + 1].any() for i in range(len(flags))]
    assert trailing_any(flags, window).tolist() == expected


@settings(max_examples=200)
@given(st.lists(st.sampled_from("ABC"), max_size=60), st.integers(0, 6))
def test_min_dwell_matches_a_state_machine(labels, dwell):
    raw = np.array(labels, dtype=object)
    state, run, expected, runs = (labels[0] if labels else None), 0, [], []
    for i, label in enumerate(labels):
        run = run + 1 if i and label == labels[i - 1] else 1
        runs.append(run)
        if run >= max(dwell, 1):
            state = label
        expected.append(state)
    assert with_min_dwell(raw, dwell).tolist() == expected
    assert run_lengths(raw).tolist() == runs


def test_min_dwell_suppresses_flapping():
    raw = np.array(list("AAAABABAABBBB"), dtype=object)
    assert "".join(with_min_dwell(raw, 3)) == "AAAAAAAAAAABB"
