"""A shared link to the top of a shared folder under attack: every read through it — the page's
`?path=`, `get_shared_link_file`/`_metadata`'s `path`, `files/list_folder` with `shared_link`
and its cursor — stays inside the shared folder's namespace (no `..`, `ns:`, `id:`, `rev:` or
encoded escape reaches the owner's home or another namespace, each such try answers like a
path that does not exist); a stranger cannot make one through `ns:` or the mount point's id;
the home root stays unlinkable; a listing cursor is its caller's and dies with the link."""

from __future__ import annotations

import secrets

import pytest

from .badinput import Server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("links-top")).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def world(srv: Server):
    """alice shares /Team (in.txt) and keeps /home.txt and /Other/o.txt at home; bob (viewer)
    mounts it and links its top; eve is a stranger."""
    alice, bob, eve = (srv.new_account(n) for n in ("alice", "bob", "eve"))
    srv.upload("/Team/in.txt", b"inside", token=alice)
    home = srv.upload("/home.txt", b"alice home secret", token=alice)
    srv.upload("/Other/o.txt", b"other secret", token=alice)
    bobs = srv.upload("/bob.txt", b"bob home secret", token=bob)
    sfid = srv.ok("sharing/share_folder", {"path": "/Team"}, alice)["shared_folder_id"]
    bob_id = srv.ok("users/get_current_account", None, bob)["account_id"]
    srv.ok(
        "sharing/add_folder_member",
        {
            "shared_folder_id": sfid,
            "members": [
                {
                    "member": {".tag": "dropbox_id", "dropbox_id": bob_id},
                    "access_level": {".tag": "viewer"},
                }
            ],
        },
        alice,
    )
    srv.ok("sharing/mount_folder", {"shared_folder_id": sfid}, bob)
    link = srv.ok("sharing/create_shared_link_with_settings", {"path": "/Team"}, bob)["url"]
    alice_home = srv.ok("files/get_metadata", {"path": "/home.txt"}, alice)
    return dict(
        alice=alice, bob=bob, eve=eve, sfid=sfid, url=link, home=home, bobs=bobs, ah=alice_home
    )


def escapes(w: dict) -> list[str]:
    return [
        "/../home.txt",
        "/../../home.txt",
        "/./../home.txt",
        "/%2e%2e/home.txt",
        "/..%2fhome.txt",
        "/../Other/o.txt",
        "//home.txt",
        "/in.txt/../../home.txt",
        "home.txt",
        "ns:1/home.txt",
        f"ns:{w['sfid']}/../home.txt",
        w["home"]["id"],
        w["bobs"]["id"],
        "rev:" + w["home"]["rev"],
        "/bob.txt",
        "/home.txt",
    ]


def page(srv: Server, url: str, **params):
    with srv.session() as s:
        return s.get(url, params=params, timeout=30, allow_redirects=False)


def test_the_page_and_its_zip_stay_inside(srv: Server, world) -> None:
    url = world["url"]
    assert page(srv, url, path="/in.txt", dl="1").content == b"inside"
    missing = page(srv, url, path="/nothing.txt", dl="1")
    assert missing.status_code == 404
    for p in escapes(world):
        r = page(srv, url, path=p, dl="1")
        assert (r.status_code, r.content) == (404, missing.content), p
        r = page(srv, url, path=p)
        assert r.status_code == 404 and b"secret" not in r.content, p
    z = page(srv, url, dl="1").content
    assert b"inside" in z and b"secret" not in z
    listing = page(srv, url).text
    assert "in.txt" in listing and "home.txt" not in listing and "bob.txt" not in listing


def test_the_sdk_routes_stay_inside(srv: Server, world) -> None:
    url, eve = world["url"], world["eve"]
    ok = srv.content("sharing/get_shared_link_file", {"url": url, "path": "/in.txt"}, token=eve)
    assert ok.status == 200 and ok.body == b"inside"
    none = srv.content("sharing/get_shared_link_file", {"url": url, "path": "/no.txt"}, token=eve)
    nmeta = srv.rpc("sharing/get_shared_link_metadata", {"url": url, "path": "/no"}, token=eve)
    nlist = srv.rpc("files/list_folder", {"path": "/no", "shared_link": {"url": url}}, token=eve)
    assert none.status == nmeta.status == nlist.status == 409
    for p in escapes(world):
        r = srv.content("sharing/get_shared_link_file", {"url": url, "path": p}, token=eve)
        assert r.status in (400, 409) and b"secret" not in r.body, p
        if r.status == 409:
            assert r.body == none.body, p
        r = srv.rpc("sharing/get_shared_link_metadata", {"url": url, "path": p}, token=eve)
        assert r.status in (400, 409) and "home" not in r.text and "bob" not in r.text, p
        if r.status == 409:
            assert r.body == nmeta.body, p
        r = srv.rpc("files/list_folder", {"path": p, "shared_link": {"url": url}}, token=eve)
        assert r.status in (400, 409) and "secret" not in r.text, p
        if r.status == 409:
            assert r.body == nlist.body, p
    listed = srv.ok("files/list_folder", {"path": "", "shared_link": {"url": url}}, eve)
    assert [e["name"] for e in listed["entries"]] == ["in.txt"]
    assert all("path_lower" not in e for e in listed["entries"])


def test_listing_cursor_is_the_callers_and_dies_with_the_link(srv: Server, world) -> None:
    alice, bob, eve = world["alice"], world["bob"], world["eve"]
    srv.upload("/Team/c/1.txt", b"1", token=alice)
    srv.upload("/Team/c/2.txt", b"2", token=alice)
    url = srv.ok("sharing/create_shared_link_with_settings", {"path": "/Team"}, alice)["url"]
    first = srv.ok(
        "files/list_folder", {"path": "/c", "limit": 1, "shared_link": {"url": url}}, eve
    )
    assert first["has_more"] and len(first["entries"]) == 1
    cur = first["cursor"]
    stolen = srv.rpc("files/list_folder/continue", {"cursor": cur}, token=bob)
    assert stolen.status == 409 and "reset" in stolen.text
    more = srv.ok("files/list_folder/continue", {"cursor": cur}, eve)
    names = {e["name"] for e in first["entries"] + more["entries"]}
    assert names == {"1.txt", "2.txt"}
    srv.ok("sharing/revoke_shared_link", {"url": url}, alice)
    dead = srv.rpc("files/list_folder/continue", {"cursor": more["cursor"]}, token=eve)
    assert dead.status == 409 and "reset" in dead.text


def test_who_may_link_the_top(srv: Server, world) -> None:
    alice, eve, sfid = world["alice"], world["eve"], world["sfid"]
    route = "sharing/create_shared_link_with_settings"
    mount_id = srv.ok("files/get_metadata", {"path": "/Team"}, alice)["id"]
    # a stranger naming the share's namespace or its mount point's id: as for nothing at all
    for real, fake in [(f"ns:{sfid}", "ns:999999999"), (mount_id, "id:" + "A" * 22)]:
        a, b = srv.rpc(route, {"path": real}, token=eve), srv.rpc(route, {"path": fake}, token=eve)
        assert (a.status, a.body) == (b.status, b.body) and a.status == 409, real
    # the home root: access_denied, whoever asks, however named
    eve_ns = srv.ok("users/get_current_account", None, eve)["root_info"]["root_namespace_id"]
    for p in ("", f"ns:{eve_ns}"):
        r = srv.rpc(route, {"path": p}, token=eve)
        assert r.status in (400, 409), p
        if r.status == 409:
            assert r.json()["error"][".tag"] == "access_denied", p
    # a dead or guessed link lists nothing
    fake_url = world["url"].split("/s/")[0] + "/s/" + secrets.token_urlsafe(24) + "/x"
    r = srv.rpc("files/list_folder", {"path": "", "shared_link": {"url": fake_url}}, token=eve)
    assert r.status == 409 and r.json()["error"]["path"][".tag"] == "not_found"
