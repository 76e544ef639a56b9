"""Helpers for tests that run real processes: ports, waiting for a condition, reading /proc.

`wait_for` is how a test waits: a condition polled until it holds or a deadline passes — never
a sleep standing in for "long enough".
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
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


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.02) -> Any:
    """Call `pred()` until it returns something truthy, and return that; TimeoutError after
    `timeout_s`. Exceptions from `pred` count as "not yet"; the last one is in the error."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            if result := pred():
                return result
        except Exception as e:  # noqa: BLE001 - "not yet"
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout_s}s: {what} (last error: {last!r})")
        time.sleep(poll_s)


def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status, e.g. VmRSS or VmHWM (the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
