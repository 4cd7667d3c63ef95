"""Market-guard benchmarks: full history, one assessment from a 1000-candle window, 100 pairs.

Usage: python bench/bench_market.py [--data ../shared/data]
Prints figures only; never fails on timings. Falls back to synthetic candles when the shared data is absent.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tradeguard.adapters.candle_files import available_pairs
from tradeguard.core.assessment import assess, assess_history
from tradeguard.core.features import CandleArrays
from tradeguard.guards.market import load_market_data

WINDOW = 1000


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def synthetic(n: int, seed: int) -> CandleArrays:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    dates = pd.date_range("2018-01-01", periods=n, freq="1h", tz="UTC").as_unit("ns")
    df = pd.DataFrame(
        {
            "date": dates,
            "open": open_,
            "high": np.maximum(open_, close) * 1.003,
            "low": np.minimum(open_, close) * 0.997,
            "close": close,
            "volume": 1.0,
        }
    )
    return CandleArrays.from_frame(df, 3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    binance, external_dir = args.data / "binance", args.data / "external"
    markets: list[tuple[str, CandleArrays, dict]] = []
    if (binance / "BTC_USDT-1h.feather").is_file():
        spot = [p for p in available_pairs(binance, "1h") if ":" not in p]
        for pair in sorted(spot, key=lambda p: p != "BTC/USDT"):
            data = load_market_data(binance, pair, "1h", external_dir)
            markets.append((pair, data.candles, data.external.series))
        source = f"real Binance 1h candles from {args.data}"
    else:
        markets = [(f"SYN{i}/USDT", synthetic(73_000, i), {}) for i in range(10)]
        source = "synthetic candles (shared data absent)"
    print(f"market guard benchmarks on {source}")

    pair, candles, external = markets[0]
    runs = timed(lambda: assess_history(candles, external, timeframe="1h"), 5)
    print(
        f"history  {pair} 1h, {len(candles):,} candles: median {statistics.median(runs):.3f} s "
        f"(min {min(runs):.3f} s, 5 runs)"
    )

    window = candles.slice(len(candles) - WINDOW, len(candles))
    now = pd.Timestamp(int(window.close_ns[-1]), tz="UTC").to_pydatetime()
    runs = timed(lambda: assess(window, external, now, pair=pair, timeframe="1h"), 500)
    q = np.percentile(np.array(runs) * 1e3, [50, 99])
    print(
        f"assess   one pair, {WINDOW}-candle window, indicators included: median {q[0]:.3f} ms, "
        f"p99 {q[1]:.3f} ms (500 runs)"
    )

    windows: list[tuple[str, CandleArrays, dict, datetime]] = []
    for k in range(100):
        name, c, ext = markets[k % len(markets)]
        end = len(c) - 1 - (k // len(markets)) * 2000
        w = c.slice(end - WINDOW + 1, end + 1)
        windows.append((name, w, ext, pd.Timestamp(int(w.close_ns[-1]), tz="UTC").to_pydatetime()))

    def all_pairs() -> None:
        for name, w, ext, at in windows:
            assess(w, ext, at, pair=name, timeframe="1h")

    runs = timed(all_pairs, 20)
    print(
        f"assess   100 pairs x {WINDOW}-candle windows, sequential on one core: median "
        f"{statistics.median(runs) * 1e3:.1f} ms (min {min(runs) * 1e3:.1f} ms, 20 runs)"
    )


if __name__ == "__main__":
    main()
