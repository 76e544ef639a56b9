"""Shared links under attack: a guessed, malformed, oversize, revoked or expired token gets the
very answer a never-issued one gets; the token and the password are never stored in clear;
another account can neither change nor revoke a link, nor link to what it cannot read; names
with markup are escaped on the pages; password guessing is rate-limited; the sharing routes
need a token and refuse garbled arguments without changing anything."""

from __future__ import annotations

import datetime as dt
import html
import os
import secrets
from pathlib import Path

import pytest

from .badinput import Server, expect_400, expect_409


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("links"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def create(srv: Server, path: str, settings: dict | None = None, token: str = "") -> dict:
    arg: dict = {"path": path}
    if settings is not None:
        arg["settings"] = settings
    return srv.ok("sharing/create_shared_link_with_settings", arg, token)


def tok(url: str) -> str:
    return url.split("/s/", 1)[1].split("/")[0]


def get(srv: Server, path: str, method: str = "GET", **kw):
    with srv.session() as s:
        return s.request(
            method, f"https://{srv.hostport}{path}", timeout=30, allow_redirects=False, **kw
        )


def same_answer(a, b) -> None:
    assert (a.status_code, a.headers["Content-Type"], a.content) == (
        b.status_code,
        b.headers["Content-Type"],
        b.content,
    )


def test_every_dead_token_answers_like_a_never_issued_one(srv: Server) -> None:
    srv.upload("/dead/revoked.txt", b"r")
    srv.upload("/dead/expired.txt", b"e")
    srv.upload("/dead/deleted.txt", b"d")
    revoked = create(srv, "/dead/revoked.txt")["url"]
    srv.ok("sharing/revoke_shared_link", {"url": revoked})
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expired = create(srv, "/dead/expired.txt", {"expires": soon})["url"]
    deleted = create(srv, "/dead/deleted.txt")["url"]
    srv.ok("files/delete_v2", {"path": "/dead/deleted.txt"})
    live = create(srv, "/dead/revoked.txt")["url"]  # a new link for the revoked file
    assert tok(live) != tok(revoked)
    never = get(srv, f"/s/{secrets.token_urlsafe(24)}/x.txt")
    assert never.status_code == 404
    from api.procs import wait_for

    wait_for(
        lambda: (
            get(srv, "/s/" + tok(expired) + "/x", params={"dl": "1"}).status_code == 404 or None
        ),
        30,
        "the link expires",
        poll_s=0.2,
    )
    for t in (
        tok(revoked),
        tok(expired),
        tok(deleted),
        tok(live)[:-1] + ("A" if tok(live)[-1] != "A" else "B"),  # one character off
        "a" * 10_000,  # oversize
        "%3Cscript%3E",
        "",
    ):
        for params in ({}, {"dl": "1"}):
            same_answer(get(srv, f"/s/{t}/x.txt", params=params), never)
        same_answer(get(srv, f"/s/{t}/x.txt", "POST", data={"password": "x"}), never)
    assert get(srv, "/s/" + tok(live) + "/x", params={"dl": "1"}).content == b"r"


def test_token_and_password_never_stored_in_clear(srv: Server) -> None:
    srv.upload("/clear/file.txt", b"c")
    password = "pw-" + secrets.token_hex(8)
    link = create(
        srv, "/clear/file.txt", {"requested_visibility": "password", "link_password": password}
    )
    token = tok(link["url"]).encode()
    data = Path(srv.up.data)
    blobs = [p.read_bytes() for p in data.rglob("*") if p.is_file()]
    assert blobs and sum(map(len, blobs)) > 0
    for b in blobs:
        assert token not in b and password.encode() not in b
    # nor in the server's log (the access log names a link by a prefix of the token's hash)
    assert get(srv, "/s/" + token.decode() + "/f", params={"dl": "1"}).status_code == 200
    log = srv.log()
    assert "/s/h:" in log and token.decode() not in log and password not in log
    # ...yet the owner can be shown the link's URL again
    listed = srv.ok("sharing/list_shared_links", {"path": "/clear/file.txt"})["links"]
    assert [tok(x["url"]) for x in listed] == [token.decode()]


def test_another_account_cannot_change_revoke_or_link_what_it_cannot_read(srv: Server) -> None:
    srv.upload("/mine/a.txt", b"mine")
    link = create(srv, "/mine/a.txt")
    file_id = link["id"]
    mallory = srv.new_account("mallory")
    r = srv.rpc("sharing/revoke_shared_link", {"url": link["url"]}, token=mallory)
    expect_409(r, "shared_link_access_denied")
    r = srv.rpc(
        "sharing/modify_shared_link_settings",
        {
            "url": link["url"],
            "settings": {"requested_visibility": "password", "link_password": "x"},
        },
        token=mallory,
    )
    expect_409(r, "shared_link_access_denied")
    r = srv.rpc(
        "sharing/modify_shared_link_settings",
        {"url": link["url"], "settings": {}, "remove_expiration": True},
        token=mallory,
    )
    expect_409(r, "shared_link_access_denied")
    for path in (file_id, "/mine/a.txt"):
        r = srv.rpc("sharing/create_shared_link_with_settings", {"path": path}, token=mallory)
        expect_409(r, "path", "not_found")
    assert srv.ok("sharing/list_shared_links", {}, mallory)["links"] == []
    assert get(srv, "/s/" + tok(link["url"]) + "/a", params={"dl": "1"}).content == b"mine"
    meta = srv.ok("sharing/get_shared_link_metadata", {"url": link["url"]}, mallory)
    assert "path_lower" not in meta and meta["link_permissions"]["can_revoke"] is False


@pytest.mark.parametrize(
    "name",
    ["<script>alert(1)<!--.txt", '"><img src=x onerror=alert(1)>.txt', "a&amp;b'.txt"],
)
def test_names_with_markup_are_escaped(srv: Server, name: str) -> None:
    folder = "/markup-" + secrets.token_hex(4)
    srv.upload(f"{folder}/{name}", b"m")
    srv.upload(f"{folder}/<b>sub<i>/inner.txt", b"i")
    file_url = create(srv, f"{folder}/{name}")["url"]
    url = create(srv, folder)["url"]
    for page, shown in ((file_url, name), (url, name), (url, "<b>sub<i>")):
        r = get(srv, "/s/" + tok(page) + "/x")
        assert r.status_code == 200
        assert shown not in r.text and html.escape(shown) in r.text
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    dl = get(srv, "/s/" + tok(url) + "/x", params={"path": "/" + name, "dl": "1"})
    assert dl.content == b"m"
    assert dl.headers["Content-Disposition"].startswith("attachment;")
    assert '"' not in dl.headers["Content-Disposition"].split('filename="', 1)[1].split('";')[0]


def test_password_guessing_is_rate_limited(srv: Server) -> None:
    srv.upload("/guess/g.txt", b"g")
    link = create(
        srv, "/guess/g.txt", {"requested_visibility": "password", "link_password": "right"}
    )
    path = "/s/" + tok(link["url"]) + "/g.txt"
    codes = [get(srv, path, "POST", data={"password": f"wrong{i}"}).status_code for i in range(25)]
    assert codes[0] == 403 and 429 in codes
    limited = get(srv, path, "POST", data={"password": "right"})
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    assert "rbx_link" not in limited.headers.get("Set-Cookie", "")


def test_form_oversize_and_garbage(srv: Server) -> None:
    srv.upload("/form/f.txt", b"f")
    link = create(srv, "/form/f.txt", {"requested_visibility": "password", "link_password": "pw"})
    path = "/s/" + tok(link["url"]) + "/f.txt"
    big = get(srv, path, "POST", data=b"password=" + b"x" * 100_000)
    assert big.status_code in (413, 429)
    junk = get(srv, path, "POST", data=os.urandom(200), headers={"Content-Type": "x/y"})
    assert junk.status_code in (403, 429)
    assert get(srv, path, params={"dl": "1"}).content != b"f"


def test_sharing_routes_need_a_token_and_refuse_garbage(srv: Server, clean: None) -> None:
    routes = (
        "sharing/create_shared_link_with_settings",
        "sharing/list_shared_links",
        "sharing/get_shared_link_metadata",
        "sharing/modify_shared_link_settings",
        "sharing/revoke_shared_link",
    )
    for route in routes:
        assert srv.rpc(route, {}, token=None).status == 401
        assert srv.rpc(route, {}, token="rbx_" + "x" * 43).status == 401
    assert srv.content("files/download_zip", {"path": "/"}, token=None).status == 401
    assert srv.content("sharing/get_shared_link_file", {"url": "x"}, token=None).status == 401
    create_r = "sharing/create_shared_link_with_settings"
    expect_400(srv.rpc(create_r, {"path": "/x", "settings": "public"}), create_r)
    expect_400(srv.rpc(create_r, {"path": 7}), create_r)
    expect_400(srv.rpc(create_r, {"path": "/x", "settings": {"expires": "tomorrow"}}), create_r)
    expect_400(srv.rpc(create_r, body=b"{not json"), create_r)
    r = srv.rpc(
        create_r,
        {
            "path": "/nothing",
            "settings": {"requested_visibility": "password", "link_password": "p" * 5000},
        },
    )
    expect_409(r, "settings_error", "invalid_settings")
    for url in ("", "x" * 100_000, "https://h/s/" + "A" * 5000 + "/n", "https://h/s/../n", 12):
        r = srv.rpc("sharing/get_shared_link_metadata", {"url": url})
        if isinstance(url, int):
            expect_400(r, "sharing/get_shared_link_metadata")
        else:
            expect_409(r, "shared_link_not_found")
    r = srv.rpc("sharing/list_shared_links", {"cursor": "forged"})
    expect_409(r, "reset")
    r = srv.content("files/download_zip", {"path": "/no/such"})
    expect_409(r, "path", "not_found")


def test_scanning_for_tokens_is_rate_limited_but_live_links_still_open(srv: Server) -> None:
    """(Last in this module: it spends this address's budget of misses.)"""
    srv.upload("/scan/s.txt", b"s")
    live = "/s/" + tok(create(srv, "/scan/s.txt")["url"]) + "/s.txt"
    with srv.session() as s:
        codes = [
            s.get(f"https://{srv.hostport}/s/{secrets.token_urlsafe(24)}/x", timeout=30).status_code
            for _ in range(300)
        ]
    assert codes[0] == 404 and codes[-1] == 429 and set(codes) == {404, 429}
    assert get(srv, live, params={"dl": "1"}).content == b"s"
