"""Fixtures of the client tests: a real `raftbox up` per module, and a fresh account per test.

`server` starts `raftbox up` on a free port (readiness: DIR/token and DIR/url written, waited for
with a deadline, never a sleep) and stops it at the end of the module. `account()` creates a new
account through the admin route, so tests never see each other's files.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import sys
from pathlib import Path

import pytest

from raftbox.admincli import user_add
from raftbox.client.config import Config
from raftbox.testing.procs import Proc, free_port, wait_for

RAFTBOX = str(Path(sys.executable).with_name("raftbox"))
_accounts = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("up")
    data = base / "data"
    port = free_port()
    proc = Proc("raftbox up", [RAFTBOX, "up", "--data", str(data), "--listen",
                               f"127.0.0.1:{port}"], base / "up.log")  # fmt: skip
    proc.start()
    try:

        def ready() -> bool:
            if not proc.alive:
                raise RuntimeError(f"raftbox up exited: {proc.output()[-2000:]}")
            return (data / "token").read_text().endswith("\n") and (data / "url").exists()

        wait_for(ready, 60.0, "raftbox up wrote DIR/token", poll_s=0.05)
        yield {
            "url": (data / "url").read_text().strip(),
            "token": (data / "token").read_text().strip(),
            "ca": str(data / "ca.pem"),
            "data": str(data),
        }
    finally:
        proc.stop(timeout_s=15)


def new_account(server: dict) -> Config:
    """A fresh account on `server`: its client configuration."""
    email = f"user{next(_accounts)}-{os.getpid()}@example.test"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # in-process: no interpreter start per account
        assert user_add(email, server["data"], None, None, None) == 0
    return Config(server=server["url"], token=out.getvalue().strip().splitlines()[-1],
                  ca=server["ca"])  # fmt: skip


@pytest.fixture
def account(server):
    """`account()` → the Config of a fresh account."""
    return lambda: new_account(server)
