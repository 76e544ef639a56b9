"""One back-off for every retry loop: exponential, jittered, bounded, reset on success.

Contract
--------
`Backoff(rng, min_s, max_s)` hands out delays: the n-th consecutive failure waits a delay drawn
uniformly from `[d/2, d]` where `d = min(max_s, min_s * factor**n)`; so a delay never exceeds
`max_s` and never falls below `min_s / 2`. `reset()` after a success starts again from `min_s`.
`next_delay_s()` is pure arithmetic on the state and the passed `random.Random` (deterministic
under a seeded one, testable without a clock); `sleep()` is the same delay on the event loop.

Why
---
Retry loops used to be written by hand in each link (a delay doubled here, a `min()` there, a
jitter factor that could overshoot its cap). The jitter keeps many clients that lost the same
server at the same moment from coming back at the same moment; the cap bounds how long a
recovered server waits to be noticed; the reset makes a link that was up for a while retry at
once when it drops again.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """Delays for consecutive failures (see the module docstring)."""

    __slots__ = ("rng", "min_s", "max_s", "factor", "failures", "_next_s")

    def __init__(self, rng: random.Random, min_s: float, max_s: float, factor: float = 2.0) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"back-off needs 0 < min_s <= max_s (got {min_s}, {max_s})")
        if factor < 1:
            raise ValueError(f"back-off factor must be at least 1 (got {factor})")
        self.rng = rng
        self.min_s = min_s
        self.max_s = max_s
        self.factor = factor
        self.failures = 0  # consecutive, since the last reset
        self._next_s = min_s

    def next_delay_s(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        d = self._next_s
        self._next_s = min(self.max_s, d * self.factor)
        self.failures += 1
        return d * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        """A success: the next failure waits about `min_s` again."""
        self._next_s = self.min_s
        self.failures = 0

    async def sleep(self) -> None:
        """Wait `next_delay_s()` on the event loop."""
        await asyncio.sleep(self.next_delay_s())  # retry back-off


__all__ = ["Backoff"]
