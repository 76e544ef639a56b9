"""Attacks on the routes of issue 15 (space usage and quotas, search, temporary links) against a
real `raftbox up`: no credentials, a user's token where the admin's is needed, another account's
ids, paths and cursors, garbled and oversize input, and forged, tampered or expired links. Each
is refused with a clear answer, changes nothing and logs no error."""

from __future__ import annotations

import base64
import sqlite3

import pytest

from api import procs
from raftbox.meta import templinks as links

from .badinput import Server, expect_400, expect_409


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("eco-routes"))
    try:
        s.start()
        s.upload("/keep/secret.txt", b"only mine")
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def other(srv: Server) -> str:
    """A second account on the same server, with a file of its own."""
    token = srv.new_account("other")
    srv.upload("/theirs/private.txt", b"not yours", token=token)
    return token


def cluster_secret(srv: Server) -> bytes:
    db = sqlite3.connect(f"file:{srv.up.data / 'meta.sqlite3'}?mode=ro", uri=True)
    try:
        return bytes(db.execute("SELECT v FROM kv WHERE k = 'secret'").fetchone()[0])
    finally:
        db.close()


def fetch(srv: Server, url_path: str, method: str = "GET", **kw):
    with srv.session() as s:
        return s.request(method, f"https://{srv.hostport}{url_path}", timeout=30, **kw)


USER_ROUTES = [
    ("users/get_space_usage", None),
    ("files/search_v2", {"query": "secret"}),
    ("files/search/continue_v2", {"cursor": "x"}),
    ("files/get_temporary_link", {"path": "/keep/secret.txt"}),
]


@pytest.mark.parametrize("route,arg", USER_ROUTES)
def test_user_routes_need_a_valid_token(srv: Server, clean, route: str, arg) -> None:
    for token in (None, "rbx_not-a-real-token"):
        r = srv.rpc(route, arg, token=token)
        assert r.status == 401, (route, r.status, r.text)
        assert r.json()["error"][".tag"] == "invalid_access_token"


def test_set_quota_needs_the_admin_token(srv: Server, clean) -> None:
    acct_email = "bad-1@example.test"
    for token in (None, srv.token, "rbxadmin_guess"):
        r = srv.rpc("raftbox/admin/set_quota", {"email": acct_email, "quota_bytes": 0},
                    token=token)  # fmt: skip
        assert r.status == 401, (r.status, r.text)
    usage = srv.ok("users/get_space_usage")
    assert usage["allocation"]["allocated"] == 2**50  # still no quota


def admin(srv: Server, obj, body: bytes | None = None):
    return srv.rpc("raftbox/admin/set_quota", obj, body=body, token=srv.up.admin_token)


def test_set_quota_refuses_garbled_values(srv: Server, clean) -> None:
    route = "raftbox/admin/set_quota"
    email = "bad-1@example.test"
    for obj in (
        {"email": email, "quota_bytes": -1},
        {"email": email, "quota_bytes": 2**70},
        {"email": email, "quota_bytes": "10G"},
        {"email": email, "quota_bytes": 1.5},
        {"email": email, "quota_bytes": True},
        {"email": email},
        {"quota_bytes": 5},
        {"email": "", "quota_bytes": 5},
        [email, 5],
    ):
        expect_400(admin(srv, obj), route)
    expect_400(admin(srv, None, body=b"{not json"), route)
    expect_409(admin(srv, {"email": "nobody@example.test", "quota_bytes": 5}), "account_not_found")
    assert srv.ok("users/get_space_usage")["allocation"]["allocated"] == 2**50


def test_search_refuses_garbled_arguments(srv: Server, clean) -> None:
    route = "files/search_v2"
    for obj in (
        {},
        {"query": 5},
        {"query": "x" * 1001},
        {"query": "x", "options": "nope"},
        {"query": "x", "options": {"max_results": 0}},
        {"query": "x", "options": {"max_results": 1001}},
        {"query": "x", "options": {"file_status": "gone"}},
        {"query": "x", "options": {"file_extensions": "txt"}},
        {"query": "x", "options": {"file_extensions": ["t"] * 101}},
        {"query": "x", "options": {"file_extensions": ["t" * 65]}},
        {"query": "x", "options": {"file_categories": ["secret_stuff"]}},
        {"query": "x", "options": {"path": "relative/path"}},
        {"query": "x", "options": {"order_by": {".tag": "size"}}},
        {"query": "\ud800"},
    ):
        expect_400(srv.rpc(route, obj), route)
    r = srv.rpc(route, None, body=b"x" * (5 * 1024 * 1024))  # over the rpc body limit
    expect_400(r, route)
    r = srv.rpc(route, {"query": "x", "options": {"path": "/a//../b"}})
    assert r.status in (400, 409), (r.status, r.text)


def test_another_accounts_files_cannot_be_searched_or_linked(
    srv: Server, other: str, clean
) -> None:
    theirs = srv.ok("files/get_metadata", {"path": "/theirs/private.txt"}, token=other)
    their_ns = srv.ok("users/get_current_account", None, token=other)["root_info"][
        "root_namespace_id"
    ]
    assert srv.ok("files/search_v2", {"query": "private"})["matches"] == []
    for path in ("/theirs/private.txt", theirs["id"], f"ns:{their_ns}/theirs/private.txt",
                 f"rev:{theirs['rev']}"):  # fmt: skip
        r = srv.rpc("files/get_temporary_link", {"path": path})
        assert r.status in (400, 409), (path, r.status, r.text)
        if r.status == 409:
            assert r.json()["error"]["path"][".tag"] in ("not_found", "malformed_path"), r.text
    for path in (theirs["id"], f"ns:{their_ns}/theirs"):
        r = srv.rpc("files/search_v2", {"query": "private", "options": {"path": path}})
        expect_409(r, "path", "not_found")


def test_a_search_cursor_is_only_good_for_its_account(srv: Server, other: str, clean) -> None:
    for i in range(3):
        srv.upload(f"/many-{i}.txt", b"x", token=other)
    page = srv.ok("files/search_v2", {"query": "many", "options": {"max_results": 1}}, other)
    assert page["has_more"]
    r = srv.rpc("files/search/continue_v2", {"cursor": page["cursor"]})  # my token, their cursor
    body = expect_409(r, "invalid_argument")
    assert "cursor" in body["error"]["invalid_argument"]
    # a list_folder cursor is not a search cursor, nor the other way round
    lf = srv.ok("files/list_folder", {"path": ""})["cursor"]
    expect_409(srv.rpc("files/search/continue_v2", {"cursor": lf}), "invalid_argument")
    r = srv.rpc("files/list_folder/continue", {"cursor": page["cursor"]}, token=other)
    expect_409(r, "reset")
    # a tampered cursor
    raw = bytearray(base64.urlsafe_b64decode(page["cursor"] + "=" * (-len(page["cursor"]) % 4)))
    raw[-1] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    r = srv.rpc("files/search/continue_v2", {"cursor": forged}, token=other)
    expect_409(r, "invalid_argument")
    expect_400(srv.rpc("files/search/continue_v2", {"cursor": "c" * 70_000}),
               "files/search/continue_v2")  # fmt: skip


def _link_path(srv: Server, path: str = "/keep/secret.txt") -> str:
    link = srv.ok("files/get_temporary_link", {"path": path})["link"]
    prefix = f"https://{srv.hostport}"
    assert link.startswith(prefix + "/tl/")
    return link[len(prefix) :]


def test_tampered_forged_and_expired_links_give_nothing(srv: Server, clean) -> None:
    good = _link_path(srv)
    assert fetch(srv, good).content == b"only mine"
    token = good.split("/")[2]
    procs.wait_for(lambda: "GET /tl/h:" in srv.log(), 10, "the fetch in the access log")
    assert token not in srv.log()  # the access log names a link by a prefix of its hash
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for at in (0, 20, len(raw) - 1):  # the signature, the namespace, the expiry
        t = bytearray(raw)
        t[at] ^= 0x40
        bad = base64.urlsafe_b64encode(bytes(t)).decode().rstrip("=")
        r = fetch(srv, f"/tl/{bad}/secret.txt")
        assert r.status_code == 404 and b"only mine" not in r.content, at
    # signed with another key (a guess), and a real signature on an expired body
    meta = srv.ok("files/get_metadata", {"path": "/keep/secret.txt"})
    ns = srv.ok("users/get_current_account")["root_info"]["root_namespace_id"]
    forged = links.make_token(b"x" * 32, int(ns), meta["id"], meta["rev"], 2**60)
    assert fetch(srv, f"/tl/{forged}/x").status_code == 404
    expired = links.make_token(cluster_secret(srv), int(ns), meta["id"], meta["rev"], 1)
    r = fetch(srv, f"/tl/{expired}/x")
    assert r.status_code == 410 and b"only mine" not in r.content
    # the name part is not checked; the token part must be there
    assert fetch(srv, good.rsplit("/", 1)[0] + "/other-name.exe").content == b"only mine"
    for path in ("/tl/", "/tl//x", f"/tl/{'A' * 2000}/x", "/tl/%00/x", "/tl/" + "é" * 50 + "/x"):
        r = fetch(srv, path)
        assert r.status_code == 404, (path[:40], r.status_code)
    r = fetch(srv, good, method="POST", data=b"x")
    assert r.status_code == 405
    head = fetch(srv, good, method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(b"only mine"))


def test_a_link_never_serves_html_as_a_page(srv: Server) -> None:
    srv.upload("/page.html", b"<script>alert(document.cookie)</script>")
    r = fetch(srv, _link_path(srv, "/page.html"))
    assert r.status_code == 200
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r.headers["Content-Security-Policy"]
    srv.ok("files/delete_v2", {"path": "/page.html"})


def test_garbled_ranges_on_a_link(srv: Server, clean) -> None:
    good = _link_path(srv)
    for rng in ("bytes=5-1", "bytes=100-", "bytes=0-1,3-4", "bits=0-1", "bytes=" + "9" * 400):
        r = fetch(srv, good, headers={"Range": rng})
        assert r.status_code == 416, (rng, r.status_code)


def test_forged_links_on_a_meta_member_cost_one_hmac_and_lock_nobody_out(
    srv: Server, clean
) -> None:
    """A meta member checks signatures itself: many forgeries from one address (which may be a
    balancer's, shared by every client) are all answered 404 and the address is not limited.
    (A blockserver, which must ask meta, does limit them: `api/test_blockservers.py`.)"""
    good = _link_path(srv)
    statuses = {fetch(srv, f"/tl/forged{i}/x").status_code for i in range(60)}
    assert statuses == {404}
    assert fetch(srv, good).content == b"only mine"
