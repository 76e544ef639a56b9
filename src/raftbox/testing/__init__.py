"""Test helpers shared by unit and end-to-end tests: a fault-injecting TCP proxy, a throwaway CA,
and `wait_until` for waiting on a condition instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .faultproxy import Direction, FaultProxy
from .tlsutil import IssuedCert, ThrowawayCA

__all__ = ["Direction", "FaultProxy", "IssuedCert", "ThrowawayCA", "wait_until"]


async def wait_until(
    predicate: Callable[[], object],
    timeout_s: float = 5.0,
    *,
    poll_s: float = 0.002,
    what: str = "",
    each: Callable[[], object] | None = None,
) -> None:
    """Return as soon as `predicate()` is true; raise TimeoutError after `timeout_s`.

    `each` runs before every check (e.g. to resend something that may have been dropped).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if each is not None:
            each()
        if predicate():
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s: {what or predicate}")
        await asyncio.sleep(poll_s)
