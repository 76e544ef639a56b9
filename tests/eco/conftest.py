"""Fixtures for real Dropbox clients against raftbox (`tests/eco/host.py` says how).

- `dbhost` (session): `raftbox up` as api./content./notify.dropboxapi.com:443 in a private
  namespace; skipped, with the reason, where no namespace can be made (needs root).
- `token`: a new account's token (each test its own account, so tests share no files).

When a test fails, the tail of the server's log is printed with it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .host import DropboxHost, available


@pytest.fixture(scope="session")
def dbhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DropboxHost]:
    why = available()
    if why is not None:
        pytest.fail(f"real-client harness: {why}")
    host = DropboxHost(tmp_path_factory.mktemp("dropboxhost"))
    try:
        host.start()
        yield host
    finally:
        host.stop()


@pytest.fixture
def token(dbhost: DropboxHost) -> str:
    return dbhost.account()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    host = item.funcargs.get("dbhost") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(host, DropboxHost):
        report.sections.append(("raftbox up (as *.dropboxapi.com)", host.tail(25)))
