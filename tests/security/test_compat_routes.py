"""Issue 15: the routes added for other Dropbox clients, attacked (`raftbox.api.compat`, the
unknown-route answer, and paths with empty components).

- `check/user` and the v1 aliases `files/copy|move|delete|create_folder` without a token, or
  with a bad one: 401, nothing changed;
- another account's files through the aliases (by `id:`, by `ns:`, by path): not found, nothing
  changed on either account;
- garbled and oversize arguments: a 400 naming the route called, nothing changed;
- a route nobody serves, with or without a token, with a huge name: a short 400, no error logged;
- paths whose empty components collapse into something Dropbox refuses ("//", "/a//", "//..",
  "ns:N//../x", an `id:` with slashes) are still `malformed_path`.
"""

from __future__ import annotations

import pytest

from .badinput import Server, expect_400, expect_409

ALIASES = {
    "files/copy": {"from_path": "/keep/one.txt", "to_path": "/copied.txt"},
    "files/move": {"from_path": "/keep/one.txt", "to_path": "/moved.txt"},
    "files/delete": {"path": "/keep/one.txt"},
    "files/create_folder": {"path": "/new-folder"},
    "check/user": {"query": "ping"},
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("compat-routes"))
    try:
        s.start()
        s.upload("/keep/one.txt", b"one")
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("route", sorted(ALIASES))
@pytest.mark.parametrize("token", [None, "rbx_not_a_token", "x" * 5000])
def test_no_token_or_a_bad_one_is_refused(srv: Server, clean: None, route: str, token) -> None:
    r = srv.rpc(route, ALIASES[route], token=token)
    assert r.status in (400, 401), (r.status, r.text)
    if r.status == 401:
        assert r.json()["error"][".tag"] == "invalid_access_token", r.text


def test_another_accounts_files_are_out_of_reach(srv: Server, clean: None) -> None:
    meta = srv.ok("files/get_metadata", {"path": "/keep/one.txt"})
    ns = srv.ok("users/get_current_account")["root_info"]["root_namespace_id"]
    other = srv.new_account("intruder")
    before_other = srv.snapshot(other)
    for ref in (meta["id"], f"ns:{ns}/keep/one.txt", f"ns:{ns}//keep//one.txt"):
        r = srv.rpc("files/delete", {"path": ref}, token=other)
        expect_409(r, "path_lookup", "not_found")
        r = srv.rpc("files/copy", {"from_path": ref, "to_path": "/stolen.txt"}, token=other)
        expect_409(r, "from_lookup", "not_found")
        r = srv.rpc("files/move", {"from_path": ref, "to_path": "/stolen.txt"}, token=other)
        expect_409(r, "from_lookup", "not_found")
    r = srv.rpc("files/create_folder", {"path": f"ns:{ns}/planted"}, token=other)
    expect_409(r, "path", "not_found")
    r = srv.rpc("files/delete", {"path": "//keep/one.txt"}, token=other)  # its own namespace
    expect_409(r, "path_lookup", "not_found")
    srv.assert_unchanged(before_other, other)


@pytest.mark.parametrize(
    "route,body",
    [
        ("check/user", b'{"query": '),
        ("check/user", b'{"query": 5}'),
        ("check/user", ('{"query": "%s"}' % ("q" * 501)).encode()),
        ("check/user", b'{"query": "\\ud800"}'),
        ("files/copy", b"not json"),
        ("files/copy", b'{"from_path": "/keep/one.txt"}'),
        ("files/move", b'{"from_path": 1, "to_path": "/x"}'),
        ("files/delete", b"[]"),
        ("files/delete", b'{"path": "/keep/one.txt", "parent_rev": "zz"}'),
        ("files/create_folder", b'{"path": "/a", "autorename": "yes"}'),
        ("files/create_folder", b'{"path": "relative"}'),
    ],
)
def test_garbled_arguments_are_a_400_naming_the_route(
    srv: Server, clean: None, route: str, body: bytes
) -> None:
    expect_400(srv.rpc(route, body=body), route)


@pytest.mark.parametrize(
    "path", ["//", "///", "/a//", "//..", "//a/../b", "/a//./b", "ns:1//../x", "id:ab//c"]
)
def test_collapsed_paths_dropbox_refuses_stay_malformed(
    srv: Server, clean: None, path: str
) -> None:
    r = srv.rpc("files/create_folder", {"path": path})
    assert r.status in (400, 409), (r.status, r.text)
    if r.status == 409:
        assert r.json()["error"]["path"][".tag"] in ("malformed_path", "not_found"), r.text
    r = srv.rpc("files/delete", {"path": path})
    assert r.status in (400, 409), (r.status, r.text)
    r = srv.rpc("files/get_metadata", {"path": path})
    assert r.status in (400, 409), (r.status, r.text)


@pytest.mark.parametrize("token", ["", None])
def test_unknown_routes_get_a_short_400(srv: Server, clean: None, token) -> None:
    for route in ("no/such", "files/list_folder_v9", "x" * 7000, "raftbox/admin/../x"):
        r = srv.rpc(route, {}, token=token)
        assert r.status == 400, (route[:40], r.status, r.text[:200])
        assert len(r.body) < 3000, len(r.body)  # the name is quoted, cut
        assert "Unknown API function" in r.text, r.text[:300]
    r = srv.rpc("x" * 20_000, {}, token=token)  # past the request line's bound
    assert r.status == 400 and len(r.body) < 3000, (r.status, r.text[:200])
