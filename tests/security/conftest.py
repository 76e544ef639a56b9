"""Fixtures shared by the security tests: a running single member (`member`, one per module) and
`clean`, which checks that a test changed no state and logged no error on its module's `srv`."""

from __future__ import annotations

import pytest

from .members import Member


@pytest.fixture(scope="module")
def member(tmp_path_factory, request):
    """One `raftbox serve --cluster` member (its bundle's peers are never started)."""
    m = Member(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    m.proc.start()
    try:
        m.proc.wait_output("raftbox member 1 serving", 60)
        yield m
    finally:
        m.proc.stop()


@pytest.fixture
def clean(srv):
    """State and log before the test; after it: nothing changed, nothing logged as an error."""
    before, mark = srv.snapshot(), srv.log_mark()
    yield
    srv.assert_unchanged(before)
    srv.assert_log_clean(mark)
