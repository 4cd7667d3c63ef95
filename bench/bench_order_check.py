"""POST /v1/orders/check latency: one check of an order against a 20-position portfolio, VaR included.

1. In-process: `OrderGuard.check` called back to back (p50/p99 over --checks checks).
2. Over HTTP on loopback: the service (uvicorn, one process; its market guard fed from the fake) checked at
   a fixed --rate (default 500/s) by an open-loop client in another process (32 keep-alive connections, one
   send per request); latency is request sent → response read.

Both compose the guards as `serve` does (kernel.build_portfolio + build_orders) against a local fake Binance
(tests/fakes) listing 20 assets; the account holds one perpetual position in each. Order books come from the
order-book source's cache (refreshed by REST when older than its age limit, raised to 60 s here so the
figures show the check path a live watch stream gives, not REST round trips). Bots rotate (1,000 of them) so
the per-bot rate limit of 10/s is not what is measured. Every decision is audited (audit queue, SQLite).

With --redis URL the per-bot rate limit is the shared one in Redis (`[orders] redis_url`), and the in-process
run also reports the Redis call each check makes (p50/p99 of the rate-limit take: the latency Redis adds).

Usage: python bench/bench_order_check.py [--checks 5000] [--rate 500] [--seconds 20] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.fake_binance import DAY_MS, FakeBinance  # noqa: E402

from tradeguard.core.events import Event  # noqa: E402
from tradeguard.core.order_check import OrderRequest  # noqa: E402
from tradeguard.guards.order import SharedRateLimit  # noqa: E402

ASSETS = [
    "BTC",
    "ETH",
    "SOL",
    "XRP",
    "ADA",
    "DOGE",
    "DOT",
    "LINK",
    "LTC",
    "AVAX",
    "BNB",
    "TRX",
    "ATOM",
    "NEAR",
    "APT",
    "ARB",
    "OP",
    "FIL",
    "ETC",
    "UNI",
]
PRICES = {a: 10.0 * (i + 1) for i, a in enumerate(ASSETS)} | {"BTC": 30_000.0, "ETH": 2_000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_exchange() -> FakeBinance:
    now = int(time.time() * 1000)
    markets = {f"{a}USDT": (a, "USDT", PRICES[a]) for a in ASSETS}
    return FakeBinance(now_ms=now, start_ms=now - 200 * DAY_MS, markets=markets).start()


def settings_values(tmp: Path, fake_url: str, redis_url: str | None) -> dict[str, Any]:
    shared = {"redis_url": redis_url, "redis_key_prefix": f"tradeguard-bench:{secrets.token_hex(4)}:rate"}
    return {
        "store_url": f"sqlite:///{tmp / 'bench.db'}",
        "external": {"enabled": False},
        "audit": {"key_file": tmp / "audit.pem"},
        "auth": {"rate_limit_per_s": 100_000.0, "rate_limit_burst": 100_000},
        "orders": {
            "venues": {"binance": {"api_url": fake_url, "use_websocket": False}},
            "book_max_age_s": 60.0,
            "default_account": {"market_guard_action": "reduce"},
        }
        | (shared if redis_url else {}),
    }


def portfolio_events(account: str = "bench") -> list[Event]:
    now = datetime.now(UTC).isoformat()
    positions = [
        {
            "symbol": f"{a}/USDT:USDT",
            "side": "long" if i % 3 else "short",
            "contracts": 2_000.0 / PRICES[a],
            "markPrice": PRICES[a],
            "leverage": 2.0,
        }
        for i, a in enumerate(ASSETS)
    ]
    common = {"account": account, "exchange": "binance", "bot": "seed", "ts": now}
    return [
        Event.model_validate(
            common
            | {"id": "eq", "type": "equity", "payload": {"total_equity": 100_000.0, "currency": "USDT"}}
        ),
        Event.model_validate(
            common | {"id": "pos", "type": "positions", "payload": {"positions": positions}}
        ),
    ]


def order(i: int) -> dict[str, Any]:
    return {
        "account": "bench",
        "bot": f"bot{i % 1000}",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "side": "buy" if i % 2 else "sell",
        "amount": 0.001,
        "price": None,
        "type": "market",
        "mode": "live",
    }


def percentiles(ms: list[float]) -> str:
    a = np.array(ms)
    return (
        f"p50 {np.percentile(a, 50):.3f} ms  p90 {np.percentile(a, 90):.3f} ms  "
        f"p99 {np.percentile(a, 99):.3f} ms  max {a.max():.3f} ms"
    )


# --- in-process ---------------------------------------------------------------------------------------


class TimedRateLimit:
    """The guard's Redis rate limit, timing each take: the Redis round trip a check adds."""

    def __init__(self, inner: SharedRateLimit) -> None:
        self.inner = inner
        self.ms: list[float] = []

    async def take(self, account: str, bot: str) -> float:
        t = time.perf_counter()
        try:
            return await self.inner.take(account, bot)
        finally:
            self.ms.append((time.perf_counter() - t) * 1000)

    async def give_back(self, account: str, bot: str) -> None:
        await self.inner.give_back(account, bot)


def in_process(checks: int, redis_url: str | None) -> None:
    from tests.service_kit import ScriptedFeed, make_frames

    from tradeguard.adapters.store import Store
    from tradeguard.service.engine import Engine
    from tradeguard.service.kernel import build_orders, build_portfolio
    from tradeguard.service.metrics import Metrics
    from tradeguard.service.settings import Settings

    fake = fake_exchange()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(**settings_values(Path(tmp), fake.url, redis_url))
        store = Store.open(settings.store_url)
        engine = Engine(settings, ScriptedFeed(make_frames()), store, Metrics())
        parts = build_portfolio(settings, store)
        orders = parts.orders = build_orders(settings, parts, engine)
        orders.guard.market_view = lambda _s: [{"pair": "BTC/USDT", "safe_to_trade": True, "stale": False}]
        timed = None
        if orders.guard.shared_rate is not None:
            timed = orders.guard.shared_rate = TimedRateLimit(orders.guard.shared_rate)

        async def go() -> None:
            writer = asyncio.create_task(orders.audit_queue.run())
            await parts.apply(portfolio_events())
            requests = [OrderRequest.model_validate(order(i)) for i in range(checks)]
            first = await orders.guard.check(requests[0])  # warm-up: metadata, history, scenarios, book
            assert first.var.after_pct is not None, first.reasons
            if timed is not None:
                assert first.checks["redis"].status == "pass", first.reasons
                timed.ms.clear()  # the first take also loaded the script
            decisions: dict[str, int] = {}
            ms = []
            for req in requests[1:]:
                t = time.perf_counter()
                d = await orders.guard.check(req)
                ms.append((time.perf_counter() - t) * 1000)
                decisions[d.decision] = decisions.get(d.decision, 0) + 1
                if len(ms) % 50 == 0:
                    await asyncio.sleep(0)  # let the audit writer run, as between requests in the service
            await orders.audit_queue.flush()
            writer.cancel()
            await orders.venues.close()
            if orders.redis is not None:
                await orders.redis.close()
            limiter = "Redis" if timed is not None else "in-process"
            print(
                f"in-process check, {len(ASSETS)} positions, VaR {first.var.scenarios} scenarios, "
                f"{limiter} rate limit:"
            )
            print(f"  {len(ms)} checks  {percentiles(ms)}  decisions {decisions}")
            print(f"  audited: {orders.audit_queue.written} decisions")
            if timed is not None:
                print(f"  Redis rate-limit take per check  {percentiles(timed.ms)}")

        asyncio.run(go())
        store.close()
    fake.stop()


# --- over HTTP ----------------------------------------------------------------------------------------


def serve(port: int, redis_url: str | None) -> None:
    """Child process: the service on `port` with the bench portfolio; prints the admin key when ready."""
    import uvicorn
    import uvloop

    from tradeguard.service.kernel import build_service, ensure_admin_key
    from tradeguard.service.runtime import settle_gc
    from tradeguard.service.settings import Settings

    fake = fake_exchange()
    tmp = Path(tempfile.mkdtemp())
    values = settings_values(tmp, fake.url, redis_url) | {
        "feed": {"mode": "live", "api_url": fake.url, "use_websocket": False, "poll_interval_s": 60.0},
        "pairs": ["BTC/USDT"],
        "port": port,
    }
    service = build_service(Settings.load(**values))
    settle_gc()  # as `tradeguard serve` does
    key = ensure_admin_key(service.store)
    assert key is not None
    config = uvicorn.Config(service.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        await service.app.state.on_events(portfolio_events())
        print(json.dumps({"token": key.token}), flush=True)
        await task

    uvloop.run(main())  # the loop `tradeguard serve` runs on (uvicorn's loop="auto")


class Connection:
    """One keep-alive HTTP/1.1 connection that writes each request in a single send (an HTTP client that
    writes headers and body separately meets Nagle + delayed ACK on loopback: ~18 ms per POST with httpx)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, head: bytes, body: bytes) -> dict[str, Any]:
        self.writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
        status = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        data = await self.reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"{status!r} {data[:200]!r}")
        return json.loads(data)


async def load(port: int, token: str, rate: float, seconds: float) -> None:
    head = (
        f"POST /v1/orders/check HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(32):
        idle.put_nowait(Connection(*await asyncio.open_connection("127.0.0.1", port)))
    ms: list[float] = []
    server_ms: list[float] = []
    decisions: dict[str, int] = {}

    async def one(i: int) -> None:
        conn = await idle.get()
        t = time.perf_counter()
        body = await conn.post(head, json.dumps(order(i)).encode())
        ms.append((time.perf_counter() - t) * 1000)
        idle.put_nowait(conn)
        decisions[body["decision"]] = decisions.get(body["decision"], 0) + 1
        server_ms.append(body["latency_ms"])

    for i in range(20):  # warm-up
        await one(i)
    ms.clear(), server_ms.clear(), decisions.clear()
    n = int(rate * seconds)
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    print(f"HTTP POST /v1/orders/check at {rate:.0f}/s for {seconds:.0f} s (achieved {n / elapsed:.0f}/s):")
    print(f"  client-measured  {percentiles(ms)}  decisions {decisions}")
    print(f"  guard-measured   {percentiles(server_ms)}")


def over_http(rate: float, seconds: float, redis_url: str | None) -> None:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), *(["--redis", redis_url] if redis_url else [])],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    try:
        assert child.stdout is not None
        token = json.loads(child.stdout.readline())["token"]
        asyncio.run(load(port, token, rate, seconds))
    finally:
        child.terminate()
        child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--redis", metavar="URL", help="share the per-bot rate limit in this Redis")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.redis)
        return
    in_process(args.checks, args.redis)
    over_http(args.rate, args.seconds, args.redis)


if __name__ == "__main__":
    main()
