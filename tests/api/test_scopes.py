"""The scope table (raftbox.api.scopes): every user route a real server registers has an entry, a
route without one cannot be registered, and the table names only Dropbox's scopes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from raftbox import server
from raftbox.api import scopes
from raftbox.api.http import ApiServer
from raftbox.testing.procs import free_port


def test_every_user_route_of_a_running_member_has_a_scope(tmp_path, monkeypatch):
    """Start a whole `raftbox up` configuration in this process and look at every route its
    API server registered (the server's own modules and `server.py`'s additions)."""
    made: list[ApiServer] = []

    class Recording(ApiServer):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(server, "ApiServer", Recording)
    cfg = server.up_config(str(tmp_path), ("127.0.0.1", free_port()), access_log="off")

    async def run() -> None:
        srv = server.Server(cfg)
        await srv.start()
        try:
            [api] = made
            user_routes = [r for r, (auth, _) in api.routes.items() if auth == "user"]
            assert len(user_routes) > 15
            unmapped = [r for r in user_routes if r not in scopes.ROUTE_SCOPES]
            assert unmapped == []
        finally:
            await asyncio.sleep(0)  # let the GC task start (stopping it unstarted warns)
            await srv.stop()

    asyncio.run(asyncio.wait_for(run(), 60))


def test_a_user_route_without_a_scope_cannot_be_registered():
    api = ApiServer(SimpleNamespace(), SimpleNamespace(), "admin", metaclient=SimpleNamespace())
    with pytest.raises(scopes.UnmappedRoute, match="files/made_up"):
        api.add_route("files/made_up", "user", lambda request, who: None)
    api.add_route("raftbox/admin/made_up", "admin", lambda request, who: None)  # admin: no scope


def test_the_table_names_only_dropbox_scopes():
    assert {s for s in scopes.ROUTE_SCOPES.values() if s is not None} <= set(scopes.SCOPES)


@pytest.mark.parametrize(
    "route, granted, missing",
    [
        ("files/list_folder", ["files.metadata.read"], None),
        (
            "files/list_folder",
            ["files.metadata.write", "files.content.write"],
            "files.metadata.read",
        ),
        ("files/upload", ["files.content.read"], "files.content.write"),
        ("files/download", ["files.content.write"], "files.content.read"),  # write implies nothing
        ("users/get_current_account", [], "account_info.read"),
        ("auth/token/revoke", [], None),
        ("files/upload", None, None),  # an account token: full access
        ("not/a/route", ["files.content.write"], scopes.UNMAPPED),  # fail closed
    ],
)
def test_missing_scope(route, granted, missing):
    assert scopes.missing_scope(route, granted) == missing
