"""Per-instance limits: concurrent sockets per client address and per token, and a dial rate.

They bound what one leaked token, one runaway tab or one buggy integration can take from the
others. Counted per instance (behind N instances the effective limit is up to N times larger,
which is still a bound); every refusal is counted in `callbridge_refusals_total`.
"""

from __future__ import annotations

import collections
import time

__all__ = ["ConnectionLimiter", "RateLimiter"]


class ConnectionLimiter:
    """Counts open sockets by key (an address or a token id); `acquire` says no past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: collections.Counter[str] = collections.Counter()

    def acquire(self, key: str) -> bool:
        if self.limit and self._open[key] >= self.limit:
            return False
        self._open[key] += 1
        return True

    def release(self, key: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]

    def open_count(self, key: str) -> int:
        return self._open[key]


class RateLimiter:
    """A token bucket per key: `per_minute` sustained, bursts up to `burst`."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 if allowed (and counted), else the seconds until the next call would be."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
