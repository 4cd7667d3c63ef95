"""Health of one data source (an exchange stream, a sentiment API...) and its retry backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n)) seconds."""

    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: bool = True

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** max(attempt, 0))
        return (rng or random).uniform(0, ceiling) if self.jitter else ceiling


@dataclass
class SourceStatus:
    """Mutable health record of a source, owned by the component that polls or streams it."""

    name: str
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_errors: int = 0
    errors_total: int = 0

    def succeeded(self, now: datetime) -> None:
        self.last_success = now
        self.consecutive_errors = 0

    def failed(self, now: datetime, error: str) -> None:
        self.last_error = error
        self.last_error_at = now
        self.consecutive_errors += 1
        self.errors_total += 1

    @property
    def reachable(self) -> bool:
        """True after a success that no error has followed."""
        return self.last_success is not None and self.consecutive_errors == 0

    def age_s(self, now: datetime) -> float | None:
        """Seconds since the last success (None if never)."""
        return None if self.last_success is None else (now - self.last_success).total_seconds()

    def as_dict(self, now: datetime) -> dict[str, object]:
        return {
            "name": self.name,
            "reachable": self.reachable,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "age_s": self.age_s(now),
            "last_error": self.last_error,
            "consecutive_errors": self.consecutive_errors,
            "errors_total": self.errors_total,
        }
