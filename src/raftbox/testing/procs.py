"""Helpers for tests that run real processes: ports, waiting for a condition, child processes
that never outlive the test run, reading /proc.

`wait_for` (and `await_for`, its twin for an async condition) is how a test waits: a condition
polled until it holds or a deadline passes — never a sleep standing in for "long enough".

Every child process a test starts is `track`ed (`Proc` does it): whoever started it kills it,
and `untrack`s it once reaped; should the test process end first, an `atexit` hook kills what
is still tracked, so no server is left listening after a crashed or interrupted run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def quiet_port() -> int:
    """A free port below the kernel's ephemeral range, so no outgoing connection takes it
    between now and the moment a server binds it (used where the port must be fixed early)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, low - 1))
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    return free_port()


def wait_for(
    pred: Callable[[], Any],
    timeout_s: float,
    what: str,
    poll_s: float = 0.02,
    proc: subprocess.Popen | None = None,
) -> Any:
    """Call `pred()` until it returns something truthy, and return that; TimeoutError after
    `timeout_s`. Exceptions from `pred` count as "not yet"; the last one is in the error. With
    `proc`, RuntimeError as soon as that process has exited (it will never come up)."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            if result := pred():
                return result
        except Exception as e:  # noqa: BLE001 - "not yet"
            last = e
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout_s}s: {what} (last error: {last!r})")
        time.sleep(poll_s)


async def await_for(
    pred: Callable[[], Awaitable[Any]],
    timeout_s: float,
    what: str,
    poll_s: float = 0.02,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Any:
    """`wait_for` for an async condition: await `pred()` until it returns something truthy,
    and return that; TimeoutError after `timeout_s`. Exceptions in `retry_on` count as "not
    yet" (the last one is in the error); any other one propagates at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            if result := await pred():
                return result
        except retry_on as e:
            last = e
        if loop.time() >= deadline:
            raise TimeoutError(f"not within {timeout_s}s: {what} (last error: {last!r})")
        await asyncio.sleep(poll_s)


_LIVE: set[subprocess.Popen] = set()


def track(popen: subprocess.Popen) -> subprocess.Popen:
    """Kill `popen` at exit if it is still tracked then (see the module docstring)."""
    _LIVE.add(popen)
    return popen


def untrack(popen: subprocess.Popen) -> None:
    """`popen` was stopped and reaped by its owner."""
    _LIVE.discard(popen)


@atexit.register
def kill_leftovers() -> None:
    """Kill and reap every process still tracked."""
    for popen in list(_LIVE):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            popen.kill()
            popen.wait(timeout=5)
        _LIVE.discard(popen)


class Proc:
    """One child process with a log file (stdout + stderr, appended across restarts);
    `start()` may be called again after it stopped. Tracked while it runs."""

    def __init__(self, name: str, args: list[str], log_path: Path, **popen_kw: Any) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.popen_kw = popen_kw
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = track(
                subprocess.Popen(
                    self.args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **self.popen_kw,
                )
            )

    def output(self) -> str:
        """What this run (since the last start) printed so far."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_output(self, needle: str, timeout_s: float) -> None:
        """Until this run printed `needle`; RuntimeError (with the log's tail) if it exits or
        does not print it within `timeout_s`."""

        def seen() -> bool:
            if needle in self.output():
                return True
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")  # type: ignore[union-attr]
            return False

        try:
            wait_for(seen, timeout_s, f"{self.name} printed {needle!r}", poll_s=0.05)
        except (TimeoutError, RuntimeError) as e:
            raise RuntimeError(f"{e}\n--- tail of {self.log_path} ---\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 30.0) -> None:
        """Send `sig` (default SIGKILL: no shutdown code runs) and reap the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout_s)
        if self.proc is not None:
            untrack(self.proc)

    def kill9(self) -> None:
        self.kill(signal.SIGKILL)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        untrack(self.proc)


def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status, e.g. VmRSS or VmHWM (the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
