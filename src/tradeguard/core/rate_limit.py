"""A token bucket: the rate limiter of API keys and of each bot's orders."""

from __future__ import annotations


class TokenBucket:
    """Allows `rate` requests per second on average and `burst` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), now

    def take(self, now: float) -> float:
        """0.0 when allowed, else the seconds until a request would be."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def give_back(self) -> None:
        """Return the token of a request that was taken but did not go ahead."""
        self.tokens = min(float(self.burst), self.tokens + 1.0)
