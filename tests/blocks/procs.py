"""Processes the block tests need, started and stopped by the tests themselves: moto's
standalone S3 server and memcached, each on a free 127.0.0.1 port.

Both are found next to the interpreter (moto_server, from the test extras) or on PATH
(memcached, from the `memcached` Debian package CI installs). A missing binary fails the test
with the install command; it is never a skip. Readiness is a condition waited for with a
deadline, never a fixed sleep; both are tracked (`raftbox.testing.procs.track`), so neither
outlives the test run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from raftbox.testing.procs import HOST, free_port, track, untrack, wait_for


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        return True
    return False


def binary(name: str, hint: str) -> str:
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is required by tests/blocks and was not found: {hint}", pytrace=False)
    return found


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
    p.wait(timeout=10)
    untrack(p)


class Memcached:
    """`memcached -l 127.0.0.1 -p PORT`; `kill()` and `start()` again on the same port."""

    def __init__(self) -> None:
        self.exe = binary("memcached", "apt-get install -y memcached")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Memcached:
        argv = [self.exe, "-l", HOST, "-p", str(self.port), "-U", "0", "-m", "16", "-t", "1"]
        if os.geteuid() == 0:  # memcached refuses to run as root unless told which user
            argv += ["-u", "root"]
        self.proc = track(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        try:
            wait_for(lambda: port_open(self.port), 10, "memcached listening", proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.proc.kill()
            err = self.proc.communicate()[1].decode(errors="replace")
            untrack(self.proc)
            raise RuntimeError(f"{e}: {err}") from None
        return self

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc.stderr.close()
            self.proc = None


class MotoServer:
    """`moto_server -H 127.0.0.1 -p PORT`: an in-memory S3 for the conformance suite."""

    def __init__(self) -> None:
        self.exe = binary("moto_server", "pip install 'moto[server]' (in the test extras)")
        self.port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.proc = track(
            subprocess.Popen(
                [self.exe, "-H", HOST, "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for(self._ready, 30, "moto_server answering", proc=self.proc)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        stop(self.proc)
