"""Each bot's order rate limit as a token bucket in Redis, so every replica of the service enforces one limit.

The bucket is a hash `<prefix>:<account>:<bot>` (`tokens`, `stamp` in µs) updated by one Lua script, so a
take is atomic across replicas; the time is the Redis server's, so replicas' clocks do not matter. Semantics
are those of `core.rate_limit.TokenBucket`: `rate` tokens/s, at most `burst` held, a take answers 0 or the
seconds until a token is free, a give-back returns one token. An idle key expires once its bucket would be
full again (absent = full). The script runs by EVALSHA; redis-py loads it on NOSCRIPT (first use, or after a
Redis restart flushed the script cache).

Every call is bounded by `timeout_s` (a check must answer in milliseconds): a slow, hung or unreachable Redis
raises instead of holding the check. A broken connection (a pooled one a Redis restart closed) is retried once
at once; a call past its deadline is cancelled, not retried (the script may have run: a retry could take a
second token). After a failure, calls fail at once for `down_for_s` (naming the failure) rather than each
waiting out the timeout again: a dead Redis costs one timeout, not one per check.
"""

from __future__ import annotations

import asyncio
import math
import time

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# KEYS[1]: the bucket; ARGV: rate (tokens/s), burst, TTL (ms), cost (1: take, -1: give back).
# Returns the seconds until a token is free ("0": taken) as a string (a Lua number would be truncated).
BUCKET_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local ttl, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(held[1]) or burst
local stamp = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate / 1000000)
local wait = 0
if tokens >= cost then
  tokens = math.min(burst, tokens - cost)
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return string.format('%.17g', wait)
"""


class RedisRateLimit:
    """Per-bot token buckets in Redis (`rate` orders/s, `burst` at once), shared by every replica."""

    def __init__(
        self,
        client: Redis,
        rate: float,
        burst: int,
        *,
        timeout_s: float,
        prefix: str = "tradeguard:rate",
        down_for_s: float = 1.0,
    ) -> None:
        self.client = client
        self.rate, self.burst, self.timeout_s, self.prefix = rate, burst, timeout_s, prefix
        self.down_for_s = down_for_s
        self.ttl_ms = math.ceil(burst / rate * 1000.0) + 1000  # refilled to full, plus a margin
        self._script = client.register_script(BUCKET_SCRIPT)
        self._failed: tuple[float, str] | None = None  # (time.monotonic(), why) of the last failure

    @classmethod
    def from_url(
        cls,
        url: str,
        rate: float,
        burst: int,
        *,
        timeout_s: float,
        prefix: str = "tradeguard:rate",
        down_for_s: float = 1.0,
    ) -> RedisRateLimit:
        """A limiter on its own connection pool (connected on first use: Redis may start later)."""
        client = Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=None, retry=Retry(NoBackoff(), 1)
        )
        return cls(client, rate, burst, timeout_s=timeout_s, prefix=prefix, down_for_s=down_for_s)

    def key(self, account: str, bot: str) -> str:
        """The bucket's key; a ':' in the account is escaped so that no two (account, bot) pairs share one."""
        return f"{self.prefix}:{account.replace(':', '%3A')}:{bot}"

    async def take(self, account: str, bot: str) -> float:
        """0.0 when the bot may send an order (a token is taken), else the seconds until it may."""
        return await self._call(account, bot, 1)

    async def give_back(self, account: str, bot: str) -> None:
        """Return the token of an order that did not go out."""
        await self._call(account, bot, -1)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def _call(self, account: str, bot: str, cost: int) -> float:
        if self._failed is not None:
            ago = time.monotonic() - self._failed[0]
            if ago < self.down_for_s:
                raise ConnectionError(f"{self._failed[1]} ({ago * 1000:.0f} ms ago; not retried for now)")
        try:
            async with asyncio.timeout(self.timeout_s):
                wait = await self._script(
                    keys=[self.key(account, bot)], args=[self.rate, self.burst, self.ttl_ms, cost]
                )
        except TimeoutError:
            self._failed = (time.monotonic(), f"Redis did not answer within {self.timeout_s * 1000:g} ms")
            raise TimeoutError(self._failed[1]) from None
        except Exception as exc:
            self._failed = (time.monotonic(), f"{type(exc).__name__}: {exc}")
            raise
        self._failed = None
        return float(wait)
