"""Scheduler refresh of 100 pairs: CPU time of one cycle that reassesses every tracked pair and the market.

Usage: python bench/bench_scheduler.py [--pairs 100]
Each pair holds the service's default 1,200 simulated 1h candles; external sources off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_targets import START, FrozenFeed

from tradeguard.adapters.feeds.simulator import simulate_candles
from tradeguard.service.engine import Engine
from tradeguard.service.metrics import Metrics
from tradeguard.service.settings import Settings


class NullStore:
    def save_assessment(self, *args: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    args = parser.parse_args()
    pairs = [f"C{i:03d}/USDT" for i in range(args.pairs)]
    settings = Settings.load(pairs=pairs, store_url="sqlite://", external={"enabled": False})
    engine = Engine(settings, FrozenFeed(), NullStore(), Metrics())
    for i, pair in enumerate(pairs):
        engine.states[pair].add(simulate_candles(pair, 1200, START, seed=i))
    engine.recompute_all()
    cpu, wall = [], []
    for _ in range(10):
        c0, w0 = time.process_time(), time.perf_counter()
        engine.recompute_all()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    print(
        f"scheduler refresh of {args.pairs} pairs x 1,200 candles (+ market-wide view): "
        f"median {statistics.median(cpu) * 1e3:.0f} ms CPU, {statistics.median(wall) * 1e3:.0f} ms wall "
        f"(10 cycles)"
    )


if __name__ == "__main__":
    main()
