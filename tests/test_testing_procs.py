"""`raftbox.testing.procs`: the process helpers every suite uses wait for conditions, see a child
that died, and leave no child behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raftbox.testing import procs, run
from raftbox.testing.procs import Proc, await_for, wait_for

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]


def test_wait_for_returns_the_first_truthy_value_and_treats_errors_as_not_yet() -> None:
    calls = iter([ValueError("no"), 0, "yes"])

    def pred():
        c = next(calls)
        if isinstance(c, Exception):
            raise c
        return c

    assert wait_for(pred, 10, "a value", poll_s=0) == "yes"
    with pytest.raises(TimeoutError, match="never.*ValueError"):
        wait_for(lambda: int("x"), 0.05, "never")


def test_wait_for_gives_up_at_once_when_the_process_exited() -> None:
    p = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    p.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_for(lambda: False, 600, "a dead server", proc=p)


def test_await_for_retries_only_what_it_is_told_to() -> None:
    async def body() -> None:
        n = 0

        async def flaky() -> int:
            nonlocal n
            n += 1
            if n < 3:
                raise OSError("not yet")
            return n

        assert await await_for(flaky, 10, "three calls", poll_s=0, retry_on=(OSError,)) == 3

        async def broken() -> None:
            raise AssertionError("member exited")

        with pytest.raises(AssertionError, match="member exited"):
            await await_for(broken, 600, "never", retry_on=(OSError,))

    run(body, 30)


def test_a_proc_is_tracked_while_it_runs_and_its_output_is_per_run(tmp_path: Path) -> None:
    p = Proc("sleeper", SLEEPER, tmp_path / "sleeper.log")
    p.start()
    try:
        assert p.proc in procs._LIVE
        p.wait_output("up", 30)
        p.stop()
        assert not p.alive and p.proc not in procs._LIVE
        p.start()
        p.wait_output("up", 30)
        assert p.output().count("up") == 1  # this run's output only
        assert p.tail().count("up") == 2  # the log keeps every run
    finally:
        p.kill()
    assert not p.alive and p.proc not in procs._LIVE


def test_leftovers_are_killed(tmp_path: Path) -> None:
    p = Proc("leftover", SLEEPER, tmp_path / "leftover.log")
    p.start()
    popen = p.proc
    assert popen is not None
    procs.kill_leftovers()  # what the atexit hook does
    assert popen.poll() is not None and popen not in procs._LIVE
