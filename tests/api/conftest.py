"""Fixtures for the API suite: the official SDK against `raftbox up` and a 3-member cluster.

The SDK reads its host names from the environment when `dropbox.session` is first imported, so
this file picks the `raftbox up` port *now* (below the ephemeral range, so nothing else grabs it
before the server binds it), exports it in DROPBOX_API_HOST / _CONTENT_HOST / _NOTIFY_HOST, and
only then lets anything import `dropbox`.

- `up` (session): `raftbox up` as a process on that port;
- `cluster` (session): three `raftbox serve` members sharing a CA and an admin token;
- `target`: parametrized over both; each test makes its own account (`acct`), so tests share no
  files. Cluster tests talk to member 2 unless they say otherwise; in the middle of the SDK
  suite the cluster's leader is killed -9 (and restarted a few tests later).

When a test fails, the tail of every server log is printed with it. Big-file tests beyond the
default size are marked `slow` and run only with `-m slow` (or RAFTBOX_SLOW=1).
"""

from __future__ import annotations

import os
import sys

from . import procs

UP_PORT = procs.quiet_port()
UP_HOSTPORT = f"{procs.HOST}:{UP_PORT}"
for _var in ("DROPBOX_API_HOST", "DROPBOX_API_CONTENT_HOST", "DROPBOX_API_NOTIFY_HOST"):
    os.environ[_var] = UP_HOSTPORT
assert "dropbox.session" not in sys.modules, "dropbox was imported before tests/api/conftest.py"

import pytest  # noqa: E402

from .sdk import Account, Target  # noqa: E402  (imports dropbox: after the environment is set)

_RUNNING: list[object] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running (big files); run with -m slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.getoption("-m") or "") or os.environ.get("RAFTBOX_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or RAFTBOX_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for srv in _RUNNING:
            if isinstance(srv, procs.UpServer):
                print(f"--- tail of {srv.proc.log_path} ---\n{srv.proc.tail()}")
            elif isinstance(srv, procs.ApiCluster):
                print(srv.tails())


@pytest.fixture(scope="session")
def up(tmp_path_factory: pytest.TempPathFactory):
    srv = procs.UpServer(tmp_path_factory.mktemp("up"), UP_PORT)
    try:
        srv.start()
        _RUNNING.append(srv)
        yield srv
    finally:
        srv.stop()
        if srv in _RUNNING:
            _RUNNING.remove(srv)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = procs.ApiCluster(tmp_path_factory.mktemp("cluster"), n=3)
    try:
        c.start()
        _RUNNING.append(c)
        yield c
    finally:
        c.stop()
        if c in _RUNNING:
            _RUNNING.remove(c)


@pytest.fixture(scope="session")
def up_target(up: procs.UpServer) -> Target:
    return Target("up", [up.hostport], up.ca, up.admin_token)


@pytest.fixture(scope="session")
def cluster_target(cluster: procs.ApiCluster) -> Target:
    hostports = [m.hostport for m in cluster.members.values()]
    return Target("cluster", hostports, cluster.ca, cluster.admin_token, default_member=1)


# The SDK suite on the cluster runs with its leader killed -9 in the middle: before the
# KILL_AT-th cluster test of test_sdk.py the current leader is killed (the tests move to a live
# member), and before the RESTART_AT-th it is started again (it rejoins and catches up while the
# suite goes on).
KILL_AT, RESTART_AT = 6, 12
_chaos = {"n": 0, "killed": 0}


def _leader_killed_mid_suite(c: procs.ApiCluster, t: Target) -> None:
    _chaos["n"] += 1
    if _chaos["n"] == KILL_AT:
        leader = c.leader()
        c.kill9(leader)
        print(f"\n[cluster] killed the leader, member {leader}, with SIGKILL")
        _chaos["killed"] = leader
        t.default_member = next(i for i in c.members if i != leader) - 1
    elif _chaos["n"] == RESTART_AT and _chaos["killed"]:
        c.restart(_chaos["killed"])
        print(f"\n[cluster] restarted member {_chaos['killed']}")
        _chaos["killed"] = 0


@pytest.fixture(params=["up", "cluster"])
def target(request: pytest.FixtureRequest) -> Target:
    t = request.getfixturevalue(f"{request.param}_target")
    if request.param == "cluster" and request.module.__name__.endswith(".test_sdk"):
        _leader_killed_mid_suite(request.getfixturevalue("cluster"), t)
    return t


@pytest.fixture
def acct(target: Target) -> Account:
    return target.new_account()
