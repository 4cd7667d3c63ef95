"""Causal rolling primitives. Each output at i depends only on inputs at or before i, and is computed by
the same operations whatever the array's length, so a prefix of the data gives a prefix of the result."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_CHUNK = 4096


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Sample standard deviation (ddof=1) of each trailing window; NaN until a full window exists.

    Each window is reduced on its own (no running sums), so values do not depend on where the array starts.
    """
    out = np.full(len(x), np.nan)
    if len(x) >= window:
        out[window - 1 :] = np.std(sliding_window_view(x, window), axis=1, ddof=1)
    return out


def rolling_pct_rank(x: np.ndarray, window: int, min_periods: int, start: int = 0) -> np.ndarray:
    """Percentile rank of x[i] among the finite values of its trailing window (x[i] included).

    rank = (# values strictly below x[i]) / (# finite values - 1), in 0..1. With n values,
    `rank > q` holds exactly when x[i] exceeds the q-quantile of the window (linear interpolation), ties
    counting as not exceeding. Rows before `start`, with a NaN x[i], or with fewer than `min_periods`
    finite values are NaN. Work is done only for rows >= start.
    """
    n = len(x)
    out = np.full(n, np.nan)
    start = max(start, 0)
    if start >= n:
        return out
    padded = np.concatenate([np.full(window - 1, np.nan), x])
    windows = sliding_window_view(padded, window)
    for lo in range(start, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        w = windows[lo:hi]
        cur = x[lo:hi, None]
        below = (w < cur).sum(axis=1)
        valid = np.isfinite(w).sum(axis=1)
        ok = (valid >= max(min_periods, 2)) & np.isfinite(x[lo:hi])
        out[lo:hi] = np.where(ok, below / np.maximum(valid - 1, 1), np.nan)
    return out


def trailing_any(flags: np.ndarray, window: int) -> np.ndarray:
    """True where any of the last `window` flags (current included) is True."""
    counts = np.concatenate([[0], np.cumsum(flags.astype(np.int64))])
    idx = np.arange(1, len(flags) + 1)
    return (counts[idx] - counts[np.maximum(idx - window, 0)]) > 0


def run_lengths(labels: np.ndarray) -> np.ndarray:
    """Length so far of the run of equal labels ending at each position (1 at a change)."""
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.ones(n, dtype=bool)
    change[1:] = labels[1:] != labels[:-1]
    run_start = np.maximum.accumulate(np.where(change, np.arange(n), 0))
    return np.arange(n) - run_start + 1


def with_min_dwell(labels: np.ndarray, min_dwell: int) -> np.ndarray:
    """Hysteresis: a new label takes over only once it has held for `min_dwell` consecutive bars.

    A state machine that starts in the first label and switches only to a label whose current run has
    lasted `min_dwell` bars, i.e. the label of the latest run that has lasted that long (the first label
    until one has). `min_dwell` <= 1 returns the labels unchanged.
    """
    if min_dwell <= 1 or len(labels) == 0:
        return labels
    confirmed = run_lengths(labels) >= min_dwell
    idx = np.where(confirmed, np.arange(len(labels)), -1)
    last = np.maximum.accumulate(idx)
    return np.where(last >= 0, labels[np.maximum(last, 0)], labels[0])
