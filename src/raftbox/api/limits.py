"""Request-rate limiters of the public API: per account (`TokenBucket`) and failed
authentications per client address (`FailedAuthLimiter`).

Both are pure bookkeeping: no I/O, no task; `ApiServer.dispatch` asks them before a handler runs
and turns a wait into a 429 with `Retry-After` (`raftbox.api.http`, "Authentication failures").
Time comes from `clock` (seconds, `time.monotonic` unless a test gives its own), so tests drive
it without sleeping.

Memory is bounded whatever the number of keys: each tracks at most its `max_*` keys and forgets
the least recently used first. A forgotten key gets a fresh (full) bucket — the worst a flood of
new keys can do is lift one idle key's limit, never reset every client's at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """Per-key request rate limit: `burst` requests at once, refilled at `rate_per_s`.
    `take(key)` is 0 if the request may go (and counts it), else the seconds to wait. At most
    `max_keys` keys are tracked (the least recently used is forgotten first)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("need rate_per_s > 0, burst >= 1, max_keys >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at); LRU order

    def take(self, key: str) -> float:
        """0 if allowed, else seconds to wait."""
        now = self.clock()
        tokens, last = self.buckets.pop(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        while len(self.buckets) >= self.max_keys:
            del self.buckets[next(iter(self.buckets))]
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


class FailedAuthLimiter:
    """Failed authentications per client address: a bucket of `burst` failures refilled at
    `per_s`. `retry_after_s(addr)` is 0 while the address may still fail, else the seconds
    until it may again; `failed(addr)` takes one from its bucket. At most `max_addrs` addresses
    are tracked (the one that failed longest ago is forgotten first): memory stays bounded
    whatever the number of addresses, at worst a forgotten address gets a fresh bucket."""

    def __init__(
        self,
        per_s: float = 1.0,
        burst: int = 20,
        max_addrs: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if per_s <= 0 or burst < 1 or max_addrs < 1:
            raise ValueError("need per_s > 0, burst >= 1, max_addrs >= 1")
        self.per_s = per_s
        self.burst = burst
        self.max_addrs = max_addrs
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # addr -> (tokens, at); LRU order

    def _tokens(self, addr: str, now: float) -> float:
        tokens, at = self._buckets.get(addr, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.per_s)

    def retry_after_s(self, addr: str) -> float:
        if addr not in self._buckets:
            return 0.0
        tokens = self._tokens(addr, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.per_s

    def failed(self, addr: str) -> None:
        now = self.clock()
        tokens = max(0.0, self._tokens(addr, now) - 1)
        self._buckets.pop(addr, None)
        while len(self._buckets) >= self.max_addrs:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[addr] = (tokens, now)
