"""The per-bot order rate limit shared through Redis (`[orders] redis_url`), composed as `serve` composes it
(kernel build_orders) against the local Redis on 127.0.0.1:6379 and a local fake Binance.

Two order guards ("replicas") on one Redis allow one bot its rate once, not once each; a token taken for an
order a later check blocks is given back. Fault injection makes Redis really fail: a port where nothing
listens, a server that accepts and never answers (the timeout), a Redis cut off mid-run and brought back.
Live orders are then blocked with `check_error:redis`; paper orders and exits go on with the error listed,
rate-limited in process. Each test uses its own key prefix and deletes its keys; when Redis is not reachable
the tests that need it skip locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests import test_order_guard
from tests.conftest import require
from tests.test_order_guard import order, reasons, run
from tradeguard.adapters.redis_rate_limit import RedisRateLimit
from tradeguard.guards.order import OrderGuard
from tradeguard.service.app import PortfolioParts, _close_orders

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
UNSAFE = [{"pair": "BTC/USDT", "safe_to_trade": False, "stale": False, "blocked_by": ["panic"]}]

fake = test_order_guard.fake  # the fixtures of the order guard's tests: a fake Binance, a free port
unused_port = test_order_guard.unused_port


@dataclass
class Keys:
    """This test's key prefix on the local Redis, and a client to look at its keys."""

    prefix: str
    client: redis.Redis

    def tokens(self, account: str, bot: str) -> float:
        return float(self.client.hget(f"{self.prefix}:{account}:{bot}", "tokens") or "nan")


@pytest.fixture
def keys() -> Iterator[Keys]:
    """A fresh key prefix on the local Redis (skip when it is down, fail under CI); its keys deleted after."""
    client = redis.Redis(
        host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
        problem = None
    except redis.RedisError as exc:
        problem = str(exc)
    require(problem is None, f"Redis not reachable on {REDIS_HOST}:{REDIS_PORT}: {problem}")
    space = Keys(f"tradeguard-test:{secrets.token_hex(6)}:rate", client)
    try:
        yield space
    finally:
        stale = list(client.scan_iter(f"{space.prefix}:*"))
        if stale:
            client.delete(*stale)
        client.close()


def closing(body: Callable[[PortfolioParts], Awaitable[None]]) -> Callable[[PortfolioParts], Awaitable[None]]:
    """Run `body`, then shut the order parts down as the service does (which closes the Redis client)."""

    async def wrapped(parts: PortfolioParts) -> None:
        try:
            await body(parts)
        finally:
            await _close_orders(parts.orders)

    return wrapped


def replica(parts: PortfolioParts, url: str, prefix: str) -> tuple[OrderGuard, RedisRateLimit]:
    """Another replica's order guard: its own in-process state and Redis client, the same Redis."""
    first = parts.orders.guard
    policy = first.policy
    shared = RedisRateLimit.from_url(url, policy.rate_per_s, policy.rate_burst, timeout_s=1.0, prefix=prefix)
    guard = OrderGuard(
        policy,
        parts.guard,
        first.venues,
        var_data=first.var_data,
        market_view=first.market_view,
        shared_rate=shared,
        clock=first.clock,
    )
    return guard, shared


class Gate:
    """A port in front of the local Redis: `forward` (a working Redis), `hang` (accepts connections and never
    answers) or closed (nothing listens: connection refused; open connections are cut)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mode: Literal["forward", "hang"] = "forward"
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def open(self, mode: Literal["forward", "hang"]) -> None:
        await self.close()
        self.mode = mode
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ends = [writer]
        self.writers.add(writer)
        try:
            if self.mode == "hang":
                await reader.read()  # until the client gives up
                return
            up_reader, up_writer = await asyncio.open_connection(REDIS_HOST, REDIS_PORT)
            ends.append(up_writer)
            self.writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        finally:
            for end in ends:
                end.transport.abort()
                self.writers.discard(end)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    finally:
        dst.transport.abort()


@contextlib.asynccontextmanager
async def gate(port: int, mode: Literal["forward", "hang"] = "forward") -> AsyncIterator[Gate]:
    g = Gate(port)
    await g.open(mode)
    try:
        yield g
    finally:
        await g.close()


# --- one limit across replicas ----------------------------------------------------------------------------


def test_two_replicas_share_one_rate_limit_per_bot(tmp_path, fake, keys):
    @closing
    async def body(parts: PortfolioParts) -> None:
        a = parts.orders.guard
        b, shared = replica(parts, REDIS_URL, keys.prefix)
        try:
            allowed = [await guard.check(order(amount=0.001)) for guard in (a, b, a)]
            assert [d.decision for d in allowed] == ["allow"] * 3  # the burst of 3, between both
            assert all(d.checks["redis"].status == "pass" for d in allowed)
            for guard in (b, a):
                late = await guard.check(order(amount=0.001))
                assert late.decision == "delay" and reasons(late) == ["rate_limited"]
                assert 0 < late.retry_after_ms <= 2000 and late.checks["redis"].status == "pass"
            # other bots have their own buckets, on either replica
            assert (await b.check(order(amount=0.001, bot="b2"))).decision == "allow"
            assert (await a.check(order(amount=0.001, bot="b3"))).decision == "allow"
            assert a.buckets == {} and b.buckets == {}  # nothing was limited in process
            assert keys.tokens("acme", "b1") < 1.0 and keys.tokens("acme", "b2") == pytest.approx(2, abs=0.1)
            ttl_ms = keys.client.pttl(f"{keys.prefix}:acme:b1")
            assert 0 < ttl_ms <= 3 / 0.5 * 1000 + 1000  # gone once the bucket would be full again
        finally:
            await shared.close()

    orders = {"redis_url": REDIS_URL, "redis_key_prefix": keys.prefix, "redis_timeout_ms": 1000.0}
    run(tmp_path, fake, body, orders=orders | {"rate_limit_per_s": 0.5, "rate_limit_burst": 3})


def test_an_order_blocked_after_the_rate_limit_gives_its_redis_token_back(tmp_path, fake, keys):
    @closing
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        guard.market_view = lambda _symbol: UNSAFE
        for _ in range(5):  # blocked by the market guard, after the rate limit took a token
            blocked = await guard.check(order(amount=0.001))
            assert blocked.decision == "block" and reasons(blocked) == ["market_unsafe"]
            assert blocked.checks["rate_limit"].status == "pass"
        assert keys.tokens("acme", "b1") == pytest.approx(2.0, abs=0.1)
        keys.client.script_flush()  # Redis forgets the script (as after a restart): reloaded on NOSCRIPT
        guard.market_view = lambda _symbol: [UNSAFE[0] | {"safe_to_trade": True}]
        decisions = [(await guard.check(order(amount=0.001))).decision for _ in range(3)]
        assert decisions == ["allow", "allow", "delay"]

    orders = {"redis_url": REDIS_URL, "redis_key_prefix": keys.prefix, "redis_timeout_ms": 1000.0}
    run(tmp_path, fake, body, orders=orders | {"rate_limit_per_s": 0.5, "rate_limit_burst": 2})


def test_keys_are_per_account_and_bot(keys):
    async def go() -> None:
        shared = RedisRateLimit.from_url(REDIS_URL, 0.5, 1, timeout_s=1.0, prefix=keys.prefix)
        try:
            assert shared.key("acme", "b1") == f"{keys.prefix}:acme:b1"
            assert shared.key("a:b", "c") != shared.key("a", "b:c")
            assert await shared.take("a:b", "c") == 0.0
            assert await shared.take("a", "b:c") == 0.0  # not the same bucket
            assert await shared.take("a:b", "c") > 0.0
            await shared.give_back("a:b", "c")
            assert await shared.take("a:b", "c") == 0.0
        finally:
            await shared.close()

    asyncio.run(go())


# --- fault injection: Redis really fails --------------------------------------------------------------------


def test_redis_unreachable_blocks_live_orders_and_lets_paper_orders_and_exits_through(
    tmp_path, fake, unused_port
):
    @closing
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        live = await guard.check(order())
        assert live.decision == "block" and reasons(live) == ["check_error:redis"]
        assert live.checks["redis"].status == "error" and "connecting" in live.reasons[0].message
        assert live.checks["rate_limit"].status == "skipped"
        paper = await guard.check(order(mode="paper"))
        assert paper.decision == "allow" and reasons(paper) == ["check_error:redis"]
        assert paper.checks["redis"].status == "error" and paper.checks["rate_limit"].status == "pass"
        # an exit is never trapped by the outage: listed, rate-limited in process
        exit_ = await guard.check(order(side="sell", reduce_only=True))
        assert exit_.decision == "allow" and reasons(exit_) == ["check_error:redis"]
        # the in-process fallback still limits the bot (burst 2)
        third = await guard.check(order(mode="paper"))
        assert third.decision == "delay" and reasons(third) == ["check_error:redis", "rate_limited"]

    orders = {
        "redis_url": f"redis://127.0.0.1:{unused_port}/0",
        "rate_limit_per_s": 0.5,
        "rate_limit_burst": 2,
    }
    run(tmp_path, fake, body, orders=orders)


def test_a_hung_redis_costs_one_timeout_not_a_hung_check_and_recovery_follows(
    tmp_path, fake, keys, unused_port
):
    @closing
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        async with gate(unused_port, "hang") as g:
            live = await guard.check(order())
            assert live.decision == "block" and reasons(live) == ["check_error:redis"]
            assert "did not answer within 50 ms" in live.reasons[0].message
            assert 50 <= live.latency_ms < 1000
            again = await guard.check(order())  # fails at once: one timeout, not one per check
            assert again.decision == "block" and "not retried for now" in again.reasons[0].message
            assert again.latency_ms < 20
            paper = await guard.check(order(mode="paper"))
            assert paper.decision == "allow" and reasons(paper) == ["check_error:redis"]
            exit_ = await guard.check(order(side="sell", reduce_only=True))
            assert exit_.decision == "allow" and reasons(exit_) == ["check_error:redis"]
            await g.open("forward")  # Redis answers again
            await asyncio.sleep(0.35)  # past redis_down_for_ms
            back = await guard.check(order())
            assert back.decision == "allow" and back.checks["redis"].status == "pass", back.reasons

    orders = {
        "redis_url": f"redis://127.0.0.1:{unused_port}/0",
        "redis_key_prefix": keys.prefix,
        "redis_down_for_ms": 300.0,
    }
    run(tmp_path, fake, body, orders=orders)


def test_the_shared_limit_recovers_when_redis_comes_back(tmp_path, fake, keys, unused_port):
    @closing
    async def body(parts: PortfolioParts) -> None:
        guard = parts.orders.guard
        async with gate(unused_port) as g:
            assert [(await guard.check(order(amount=0.001))).decision for _ in range(2)] == ["allow"] * 2
            await g.close()  # Redis cut off: the pooled connection is cut, new ones are refused
            down = await guard.check(order(amount=0.001))
            assert down.decision == "block" and reasons(down) == ["check_error:redis"]
            await g.open("forward")
            await asyncio.sleep(0.35)  # past redis_down_for_ms
            # the bucket outlived the outage: one token of the burst of 3 is left
            back = await guard.check(order(amount=0.001))
            assert back.decision == "allow" and back.checks["redis"].status == "pass", back.reasons
            late = await guard.check(order(amount=0.001))
            assert late.decision == "delay" and reasons(late) == ["rate_limited"]

    orders = {
        "redis_url": f"redis://127.0.0.1:{unused_port}/0",
        "redis_key_prefix": keys.prefix,
        "redis_timeout_ms": 1000.0,
        "redis_down_for_ms": 300.0,
        "rate_limit_per_s": 0.5,
        "rate_limit_burst": 3,
    }
    run(tmp_path, fake, body, orders=orders)
