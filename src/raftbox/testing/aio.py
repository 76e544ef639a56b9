"""Run async tests on both event loops, with a deadline and a check that nothing leaked.

Import both names into a test module: `from raftbox.testing.aio import async_test,
event_loop_kind`. The autouse fixture runs every test of that module once on asyncio's loop and
once on uvloop's (they differ: uvloop raises on a write to a closed socket), and `async_test`
runs a coroutine test under a 10 s deadline and fails it if it left a task running.
"""

from __future__ import annotations

import asyncio
import functools

import pytest

try:
    import uvloop
except ImportError:  # not on every platform
    uvloop = None

_loop_factory = None  # set per test by `event_loop_kind`


@pytest.fixture(params=["asyncio", "uvloop"], autouse=True)
def event_loop_kind(request):
    """Every test runs on both loops."""
    global _loop_factory
    if request.param == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed")
    _loop_factory = uvloop.new_event_loop if request.param == "uvloop" else None
    yield
    _loop_factory = None


def async_test(fn):
    """Run an async test with a deadline, and check that it left no task behind."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        async def main():
            async with asyncio.timeout(10):
                await fn(*args, **kwargs)
            leaked = asyncio.all_tasks() - {asyncio.current_task()}
            assert not leaked, f"tasks left running: {leaked}"

        with asyncio.Runner(loop_factory=_loop_factory) as runner:
            runner.run(main())

    return wrapper
