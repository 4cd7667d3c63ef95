"""NATS JetStream intake throughput and latency: publish N events, consume them with NatsIntake into a store.

Usage: python bench/bench_nats_intake.py [--events 100000] [--rate 0] [--mode live|backlog]
       [--store sqlite|postgresql] [--batch 500] [--guard [--history-days 30]] [--no-uvloop] [--no-gc-tuning]

- live (default): a separate publisher process publishes while the intake consumes (as bots would), at
  `--rate` events/s (0 = as fast as JetStream acks them, with up to 4,000 publishes in flight). Each event's
  `ts` is its publish time, so publish->stored latency = the time the intake's on_events callback sees it
  (after the commit and the acks) minus `ts`, and "end to end" runs from the first publish to the last
  event handled (the publisher process's start-up excluded).
- backlog: publish everything first, then time the intake draining the stream (consumer-only throughput).
- --guard: on_events is the portfolio guard (its kill switches refreshed every second, as the service
  does), and latency runs to the breaker decision: the moment the guard's `on_events` call holding the
  event returns, i.e. its account re-evaluated, breakers moved, changes of state written, trading state
  derived. The intake hands the guard every event stored while its previous call ran in one call, so
  the figures include the wait for that call.
- --history-days N: each account's equity path starts with N days of observations 10 s apart (what a
  restart restores after a month), so the drawdown windows span real history rather than the run's seconds.

Needs NATS with JetStream on 127.0.0.1:4222 (and PostgreSQL on 127.0.0.1:5432 for --store postgresql).
Events are spread over 10 accounts x 5 bots, types equity/positions/balance/trade in turn. Each run uses
its own stream and a fresh temporary database, both deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import secrets
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import numpy as np
import psycopg
from psycopg import sql

from tradeguard.adapters.bus import NatsIntake, subject_for
from tradeguard.adapters.leverage_tiers import load_snapshot
from tradeguard.adapters.markets import BaseAssetResolver
from tradeguard.adapters.store.event_log import EventLog, StoreResult, equity_history, events
from tradeguard.adapters.store.guard_state import GuardState, breaker_states, kill_switches
from tradeguard.adapters.store.schema import metadata
from tradeguard.adapters.store.store import create_store_engine
from tradeguard.core.events import Event
from tradeguard.guards.portfolio import AccountBook, PortfolioGuard, PortfolioPolicy
from tradeguard.service.runtime import settle_gc

NATS_URL = "nats://127.0.0.1:4222"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
ACCOUNTS = [f"acct{i}" for i in range(10)]
TYPES = ("equity", "positions", "balance", "trade")


def envelope(i: int, ts: datetime) -> dict[str, Any]:
    kind = TYPES[i % len(TYPES)]
    payload: dict[str, Any] = {
        "equity": {"total_equity": 10_000.0 + i % 977, "currency": "USDT"},
        "positions": {
            "positions": [
                {"symbol": "BTC/USDT:USDT", "side": "long", "contracts": 0.01, "markPrice": 60_000.0},
                {"symbol": "ETH/USDT:USDT", "side": "short", "contracts": 0.2, "markPrice": 3_000.0},
            ]
        },
        "balance": {"total": {"USDT": 5_000.0 + i % 101, "BTC": 0.01}},
        "trade": {
            "symbol": "SOL/USDT",
            "side": "sell",
            "amount": 1.5,
            "price": 150.0,
            "realized_pnl": 2.5,
            "closed_at": ts.isoformat(),
        },
    }[kind]
    return {
        "id": f"ev-{i:09d}",
        "type": kind,
        "account": ACCOUNTS[i % len(ACCOUNTS)],
        "exchange": "binance" if i % 3 else "okx",
        "bot": f"bot{i % 5}",
        "ts": ts.isoformat(),
        "payload": payload,
    }


async def publish(n: int, subject: str, rate: float) -> tuple[float, float, float]:
    """Publish n events (with Nats-Msg-Id) and wait for every JetStream ack; (seconds, CPU seconds, the
    epoch time of the first publish)."""
    cpu = time.process_time()
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream(publish_async_max_pending=4000)
    start, started_at = time.perf_counter(), time.time()
    try:
        for i in range(n):
            if rate > 0:
                ahead = start + i / rate - time.perf_counter()
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
            item = envelope(i, datetime.now(UTC))
            await js.publish_async(
                subject_for(item["account"], subject),
                json.dumps(item).encode(),
                headers={"Nats-Msg-Id": f"{item['account']}|{item['id']}"},
            )
        await asyncio.wait_for(js.publish_async_completed(), 120)
        return time.perf_counter() - start, time.process_time() - cpu, started_at
    finally:
        await nc.close()


def publisher_process(n: int, subject: str, rate: float, uvloop: bool, result: Any) -> None:
    runner = _runner(uvloop)
    result.put(runner(publish(n, subject, rate)))


def _runner(uvloop: bool) -> Any:
    if uvloop:
        try:
            import uvloop as uv

            return uv.run
        except ImportError:
            pass
    return asyncio.run


def report_publish(n: int, result: tuple[float, float, float]) -> float:
    """Print the publisher's figures; the epoch time of its first publish."""
    seconds, cpu, started_at = result
    print(
        f"published {n:,} events in {seconds:.2f} s ({n / seconds:,.0f}/s); "
        f"publisher CPU {cpu / n * 1e6:.0f} us/event"
    )
    return started_at


class CountingLog(EventLog):
    """The event log, counting the store transactions (a commit each) and the events they held."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.transactions = 0
        self.events = 0

    def store_batch(self, batch: Sequence[Event], received_at: datetime) -> StoreResult:
        self.transactions += 1
        self.events += len(batch)
        return super().store_batch(batch, received_at)


class Recorder:
    """on_events: when each event became durable and acknowledged, as latency from its `ts`."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.latencies: list[float] = []
        self.first: float | None = None
        self.last: float | None = None
        self.last_wall = 0.0
        self.done = asyncio.Event()

    async def __call__(self, stored: list[Event]) -> None:
        now = time.time()
        mono = time.perf_counter()
        self.first = self.first or mono
        self.last, self.last_wall = mono, now
        self.latencies.extend(now - e.ts.timestamp() for e in stored)
        if len(self.latencies) >= self.n:
            self.done.set()


class GuardedRecorder(Recorder):
    """on_events through the portfolio guard: latency runs to the breaker decision of the batch."""

    def __init__(self, n: int, guard: PortfolioGuard) -> None:
        super().__init__(n)
        self.guard = guard
        self.calls = 0

    async def __call__(self, stored: list[Event]) -> None:
        await self.guard.on_events(stored)
        self.calls += 1
        await super().__call__(stored)

    async def refresh_kill_switches(self) -> None:
        """What the service does beside the guard: reload the kill switches every second."""
        while True:
            await asyncio.sleep(1.0)
            await self.guard.refresh_kill_switches()


def preload(guard: PortfolioGuard, days: float, every_s: int = 10) -> None:
    """Each account's equity path: `days` of a random walk around 21,000 (where the run's equity events put
    the account total, so the run may sit below the history's peak), one observation every `every_s`;
    accounts report independently: their observations are spread over the interval, not simultaneous."""
    end = time.time_ns() - 60 * 10**9
    n = int(days * 86_400 / every_s)
    times = end - np.arange(n)[::-1] * every_s * 10**9
    rng = np.random.default_rng(1)
    for k, account in enumerate(ACCOUNTS):
        values = np.maximum(21_000.0 + np.cumsum(rng.normal(0.0, 2.0, n)), 1.0)
        path = guard.books.setdefault(account, AccountBook()).equity
        phase = k * every_s * 10**9 // len(ACCOUNTS)
        for t, x in zip((times - phase).tolist(), values.tolist(), strict=True):
            path.set(t, x)
    print(f"preloaded {len(ACCOUNTS)} accounts x {n:,} equity points ({days:g} days, {every_s} s apart)")


async def consume(args: argparse.Namespace, url: str, tag: str) -> None:
    stream, subject = f"BENCH_{tag}", f"bench.{tag}.events.>"
    engine = create_store_engine(url)
    metadata.create_all(engine, tables=[events, equity_history, breaker_states, kill_switches])
    recorder = Recorder(args.events)
    refresher: asyncio.Task[None] | None = None
    if args.guard:
        resolver = BaseAssetResolver()
        guard = PortfolioGuard(
            PortfolioPolicy(),
            GuardState(engine),
            lambda: datetime.now(UTC),
            base_asset=resolver,
            settle_currency=resolver.settle_currency,
            tiers=load_snapshot().tiers,
        )
        if args.history_days > 0:
            preload(guard, args.history_days)
            await guard.evaluate_many(ACCOUNTS)  # as the service's restore does before its intake starts
        recorder = GuardedRecorder(args.events, guard)
        refresher = asyncio.create_task(recorder.refresh_kill_switches())
    event_log = CountingLog(engine)
    intake = NatsIntake(
        NATS_URL,
        event_log,
        recorder,
        stream=stream,
        subject=subject,
        durable="bench",
        batch=args.batch,
    )
    if args.gc_tuning:  # as `tradeguard serve` does once built (tradeguard.service.runtime)
        settle_gc()
    ctx = multiprocessing.get_context("spawn")
    result = ctx.Queue()
    publisher = ctx.Process(
        target=publisher_process, args=(args.events, subject, args.rate, args.uvloop, result), daemon=True
    )
    try:
        if args.mode == "backlog":
            nc = await nats.connect(NATS_URL)
            await intake.ensure_stream(nc.jetstream())
            await nc.close()
            publisher.start()
            report_publish(args.events, await asyncio.to_thread(result.get))
            start, cpu = time.perf_counter(), time.process_time()
            await intake.start()
        else:
            await intake.start()
            await asyncio.wait_for(intake.ready.wait(), 10)
            start, cpu = time.perf_counter(), time.process_time()
            publisher.start()
        await asyncio.wait_for(recorder.done.wait(), 600)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if args.mode == "live":  # from the first publish (not the publisher process's start) to the last
            elapsed = recorder.last_wall - report_publish(args.events, await asyncio.to_thread(result.get))
        c = intake.counters
        stored_span = (recorder.last or 0) - (recorder.first or 0)
        print(
            f"stored {c.stored:,} events (received {c.received:,}, duplicates {c.duplicates}, rejected "
            f"{c.rejected}, store failures {c.store_failures}) in {elapsed:.2f} s: {c.stored / elapsed:,.0f} "
            f"events/s end to end; {c.stored / stored_span:,.0f} events/s between the first and last commit"
        )
        print(
            f"intake process CPU: {cpu:.2f} s = {cpu / c.stored * 1e6:.0f} us/event "
            f"(one core's worth: {c.stored / cpu:,.0f} events/s)"
        )
        print(
            f"store: {event_log.transactions:,} transactions, "
            f"{event_log.events / max(event_log.transactions, 1):,.0f} events each"
        )
        if args.mode == "live":
            lat = sorted(recorder.latencies)
            p50 = statistics.median(lat) * 1e3
            p99 = lat[int(0.99 * (len(lat) - 1))] * 1e3
            what = "breaker decision" if args.guard else "stored"
            print(f"publish->{what} latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1e3:.1f} ms")
        if isinstance(recorder, GuardedRecorder):
            print(f"guard: {recorder.calls:,} on_events calls, {c.stored / recorder.calls:,.0f} events each")
    finally:
        if refresher is not None:
            refresher.cancel()
        await intake.stop()
        publisher.join(timeout=10)
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="publish rate, events/s (0: as fast as acked)"
    )
    parser.add_argument("--mode", choices=("live", "backlog"), default="live")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--history-days", type=float, default=0.0, help="with --guard: days of equity history per account"
    )
    parser.add_argument(
        "--guard", action="store_true", help="feed the portfolio guard: latency to its decision"
    )
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    parser.add_argument(
        "--no-gc-tuning",
        dest="gc_tuning",
        action="store_false",
        help="leave the garbage collector as CPython sets it (the service freezes start-up objects: full "
        "collections walking them paused it for ~150 ms, the p99)",
    )
    args = parser.parse_args()
    tag = secrets.token_hex(4)
    print(
        f"{args.events:,} events, mode {args.mode}, store {args.store}, fetch batch {args.batch}, "
        f"rate {'max' if not args.rate else f'{args.rate:,.0f}/s'}, uvloop {args.uvloop}, "
        f"GC tuned {args.gc_tuning}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.store == "sqlite":
            _runner(args.uvloop)(consume(args, f"sqlite:///{Path(tmp) / 'bench.db'}", tag))
            return
        name = f"tradeguard_bench_{tag}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            _runner(args.uvloop)(consume(args, f"postgresql://postgres@127.0.0.1:5432/{name}", tag))
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
