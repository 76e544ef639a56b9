"""Test helpers shared by unit and end-to-end tests: a fault-injecting TCP proxy, a throwaway CA,
`wait_until` for waiting on a condition instead of sleeping, `run` for an async test body under
a deadline, and (`raftbox.testing.procs`) ports, child processes and waiting for them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .faultproxy import Direction, FaultProxy
from .tlsutil import IssuedCert, ThrowawayCA

__all__ = ["Direction", "FaultProxy", "IssuedCert", "ThrowawayCA", "run", "wait_until"]


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


def run(coro_fn: Callable[[], Awaitable[Any]], timeout_s: float = 60.0) -> Any:
    """Run an async test body in a new event loop under a hard deadline; return its result."""

    async def main() -> Any:
        async with asyncio.timeout(timeout_s):
            return await coro_fn()

    return asyncio.run(main())
