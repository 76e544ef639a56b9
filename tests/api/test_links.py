"""Shared links with the official SDK against `raftbox up` and the 3-member cluster, and the
link URL fetched as a stranger would (plain HTTPS, no account): files, folders as zips,
password links, expiry, revocation — and on the cluster, a link revoked through one member is
gone on every member at once, also after its leader was killed."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile

import pytest
import requests
from dropbox import exceptions, sharing

from . import procs
from .sdk import Account, Target
from .test_cluster import wait_all_serve


def stranger(t: Target) -> requests.Session:
    s = requests.Session()
    s.verify = t.ca
    s.trust_env = False
    return s


def on(url: str, hostport: str) -> str:
    """The same link URL on another member."""
    return re.sub(r"^https://[^/]+", f"https://{hostport}", url)


def fetch(t: Target, url: str, **params) -> requests.Response:
    with stranger(t) as s:
        return s.get(url, params=params, timeout=30, allow_redirects=False)


def tok(url: str) -> str:
    """A link URL's token (the name after it is decoration: it follows renames)."""
    return url.split("/s/", 1)[1].split("/")[0]


def route_error(e: exceptions.ApiError):
    return e.error


def test_file_link_public_fetch_and_sdk_routes(acct: Account, target: Target):
    dbx = acct.dbx()
    dbx.files_upload(b"hello, stranger\n", "/Docs/Report <1>.txt")
    link = dbx.sharing_create_shared_link_with_settings("/Docs/Report <1>.txt")
    assert isinstance(link, sharing.FileLinkMetadata)
    assert link.name == "Report <1>.txt" and link.size == 16
    assert link.path_lower == "/docs/report <1>.txt"
    assert link.link_permissions.can_revoke and link.link_permissions.allow_download
    assert link.url.startswith(f"https://{target.hostports[target.default_member]}/s/")
    # a stranger, no account: the page, then the bytes
    page = fetch(target, link.url)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "Report &lt;1&gt;.txt" in page.text and "<1>" not in page.text
    assert "<script" not in page.text.lower()
    got = fetch(target, link.url, dl="1")
    assert got.status_code == 200 and got.content == b"hello, stranger\n"
    # the link follows a move
    dbx.files_move_v2("/Docs/Report <1>.txt", "/Moved/r.txt")
    assert fetch(target, link.url, dl="1").content == b"hello, stranger\n"
    # creating it again: shared_link_already_exists with the link's metadata
    with pytest.raises(exceptions.ApiError) as e:
        dbx.sharing_create_shared_link_with_settings("/Moved/r.txt")
    err = route_error(e.value)
    assert err.is_shared_link_already_exists()
    assert tok(err.get_shared_link_already_exists().get_metadata().url) == tok(link.url)
    # the same explicit settings: the link itself
    same = dbx.sharing_create_shared_link_with_settings(
        "/Moved/r.txt",
        sharing.SharedLinkSettings(requested_visibility=sharing.RequestedVisibility.public),
    )
    assert same.url.endswith(f"/s/{tok(link.url)}/r.txt")
    listed = dbx.sharing_list_shared_links()
    assert [tok(x.url) for x in listed.links] == [tok(link.url)] and not listed.has_more
    assert [
        tok(x.url) for x in dbx.sharing_list_shared_links("/Moved/r.txt", direct_only=True).links
    ] == [tok(link.url)]
    # another account: metadata without the owner's path; the file through the SDK
    other = target.new_account("other").dbx()
    seen = other.sharing_get_shared_link_metadata(link.url)
    assert seen.name == "r.txt" and seen.path_lower is None
    assert not seen.link_permissions.can_revoke
    meta, resp = other.sharing_get_shared_link_file(link.url)
    assert resp.content == b"hello, stranger\n" and meta.name == "r.txt"
    # revoked: gone for everyone at once, as if it never existed
    never = fetch(target, link.url.replace("/s/", "/s/A").replace("/r.txt", "x/r.txt"))
    dbx.sharing_revoke_shared_link(link.url)
    gone = fetch(target, link.url, dl="1")
    assert gone.status_code == 404 and gone.content == never.content
    with pytest.raises(exceptions.ApiError) as e:
        other.sharing_get_shared_link_metadata(link.url)
    assert route_error(e.value).is_shared_link_not_found()
    assert dbx.sharing_list_shared_links().links == []


def test_folder_link_zip_and_download_zip(acct: Account, target: Target):
    dbx = acct.dbx()
    tree = {"/Proj/a.txt": b"A" * 1000, "/Proj/sub/b.bin": bytes(range(256)) * 40, "/Proj/c": b""}
    for p, data in tree.items():
        dbx.files_upload(data, p)
    dbx.files_create_folder_v2("/Proj/empty")
    link = dbx.sharing_create_shared_link_with_settings("/Proj")
    assert isinstance(link, sharing.FolderLinkMetadata)
    page = fetch(target, link.url)
    assert page.status_code == 200 and "a.txt" in page.text and "sub/" in page.text
    z = fetch(target, link.url, dl="1")
    assert z.status_code == 200 and z.headers["Content-Type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(z.content))
    assert zf.testzip() is None
    want = {"Proj" + p[len("/Proj") :]: d for p, d in tree.items()}
    assert {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")} == want
    assert "Proj/empty/" in zf.namelist()
    # one file of the folder, as a stranger, and through the SDK
    assert fetch(target, link.url, path="/sub/b.bin", dl="1").content == tree["/Proj/sub/b.bin"]
    other = target.new_account("other").dbx()
    _, r = other.sharing_get_shared_link_file(link.url, path="/a.txt")
    assert r.content == tree["/Proj/a.txt"]
    with pytest.raises(exceptions.ApiError) as e:
        other.sharing_get_shared_link_file(link.url)
    assert route_error(e.value).is_shared_link_is_directory()
    # nothing outside the folder through the link
    dbx.files_upload(b"secret", "/secret.txt")
    assert fetch(target, link.url, path="/../secret.txt", dl="1").status_code == 404
    # files/download_zip for the owner
    res, resp = dbx.files_download_zip("/Proj")
    assert res.metadata.name == "Proj"
    zf2 = zipfile.ZipFile(io.BytesIO(resp.content))
    assert {n: zf2.read(n) for n in zf2.namelist() if not n.endswith("/")} == want
    with pytest.raises(exceptions.ApiError) as e:
        dbx.files_download_zip("/Proj/a.txt")
    assert e.value.error.is_path() and e.value.error.get_path().is_not_folder()


def test_password_link(acct: Account, target: Target):
    dbx = acct.dbx()
    dbx.files_upload(b"locked", "/locked.txt")
    settings = sharing.SharedLinkSettings(
        requested_visibility=sharing.RequestedVisibility.password, link_password="s3cret pw"
    )
    link = dbx.sharing_create_shared_link_with_settings("/locked.txt", settings)
    assert link.link_permissions.require_password
    assert link.link_permissions.resolved_visibility.is_password()
    with stranger(target) as s:
        form = s.get(link.url, params={"dl": "1"}, timeout=30)
        assert form.status_code == 200 and 'type="password"' in form.text
        assert form.content != b"locked"
        wrong = s.post(link.url, data={"password": "guess"}, timeout=30, allow_redirects=False)
        assert wrong.status_code == 403 and not wrong.cookies
        right = s.post(link.url, data={"password": "s3cret pw"}, timeout=30, allow_redirects=False)
        assert right.status_code == 303
        cookie = right.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie
        token = link.url.split("/s/")[1].split("/")[0]
        assert f"Path=/s/{token}" in cookie
        assert s.get(link.url, params={"dl": "1"}, timeout=30).content == b"locked"
    other = target.new_account("other").dbx()
    with pytest.raises(exceptions.ApiError) as e:
        other.sharing_get_shared_link_metadata(link.url)
    assert route_error(e.value).is_shared_link_access_denied()
    with pytest.raises(exceptions.ApiError):
        other.sharing_get_shared_link_metadata(link.url, link_password="nope")
    assert other.sharing_get_shared_link_metadata(link.url, link_password="s3cret pw").name == (
        "locked.txt"
    )
    # made public again: no form
    dbx.sharing_modify_shared_link_settings(
        link.url,
        sharing.SharedLinkSettings(requested_visibility=sharing.RequestedVisibility.public),
    )
    assert fetch(target, link.url, dl="1").content == b"locked"


def test_modify_expiry_and_downloads(acct: Account, target: Target):
    dbx = acct.dbx()
    dbx.files_upload(b"x", "/x.txt")
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) + dt.timedelta(days=2)
    link = dbx.sharing_create_shared_link_with_settings(
        "/x.txt", sharing.SharedLinkSettings(expires=later, allow_download=False)
    )
    assert link.expires == later and not link.link_permissions.allow_download
    assert fetch(target, link.url, dl="1").status_code == 403
    page = fetch(target, link.url)
    assert page.status_code == 200 and "?dl=1" not in page.text
    m = dbx.sharing_modify_shared_link_settings(
        link.url, sharing.SharedLinkSettings(allow_download=True), remove_expiration=True
    )
    assert m.expires is None and m.link_permissions.allow_download
    assert fetch(target, link.url, dl="1").content == b"x"
    past = dt.datetime(2001, 1, 1)
    with pytest.raises(exceptions.ApiError) as e:
        dbx.sharing_modify_shared_link_settings(link.url, sharing.SharedLinkSettings(expires=past))
    assert route_error(e.value).is_settings_error()
    # an expiry a few seconds ahead: once it passes, the link is gone like a revoked one
    soon = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) + dt.timedelta(seconds=2)
    dbx.sharing_modify_shared_link_settings(link.url, sharing.SharedLinkSettings(expires=soon))
    procs.wait_for(
        lambda: fetch(target, link.url, dl="1").status_code == 404 or None,
        30,
        "the expired link is gone",
        poll_s=0.2,
    )
    with pytest.raises(exceptions.ApiError) as e:
        dbx.sharing_get_shared_link_metadata(link.url)
    assert route_error(e.value).is_shared_link_not_found()
    assert dbx.sharing_list_shared_links().links == []
    # and a new link may be made for the file
    assert dbx.sharing_create_shared_link_with_settings("/x.txt").url != link.url


def test_refusals(acct: Account, target: Target):
    dbx = acct.dbx()
    with pytest.raises(exceptions.ApiError) as e:
        dbx.sharing_create_shared_link_with_settings("/nope.txt")
    assert route_error(e.value).is_path() and route_error(e.value).get_path().is_not_found()
    dbx.files_upload(b"z", "/z.txt")
    for bad in (
        sharing.SharedLinkSettings(requested_visibility=sharing.RequestedVisibility.password),
        sharing.SharedLinkSettings(requested_visibility=sharing.RequestedVisibility.team_only),
    ):
        with pytest.raises(exceptions.ApiError) as e:
            dbx.sharing_create_shared_link_with_settings("/z.txt", bad)
        assert route_error(e.value).is_settings_error()
    link = dbx.sharing_create_shared_link_with_settings("/z.txt")
    other = target.new_account("other").dbx()
    with pytest.raises(exceptions.ApiError) as e:
        other.sharing_revoke_shared_link(link.url)
    assert route_error(e.value).is_shared_link_access_denied()
    with pytest.raises(exceptions.ApiError) as e:
        other.sharing_modify_shared_link_settings(
            link.url, sharing.SharedLinkSettings(allow_download=False)
        )
    assert route_error(e.value).is_shared_link_access_denied()
    with pytest.raises(exceptions.ApiError) as e:
        dbx.sharing_revoke_shared_link("https://example.test/nothing-here")
    assert route_error(e.value).is_shared_link_malformed()
    assert fetch(target, link.url, dl="1").content == b"z"


def test_revoked_on_one_member_gone_on_every_member(cluster: procs.ApiCluster, cluster_target):
    t = cluster_target
    acct = t.new_account("links")
    wait_all_serve(cluster, t, acct)
    dbx = acct.dbx(0)
    dbx.files_upload(b"cluster bytes", "/c.txt")
    link = dbx.sharing_create_shared_link_with_settings("/c.txt")
    for hp in t.hostports:
        assert fetch(t, on(link.url, hp), dl="1").content == b"cluster bytes"
    leader = cluster.leader()
    cluster.kill9(leader)
    try:
        live = [i for i in cluster.members if i != leader]
        survivor = acct.dbx(live[0] - 1, max_retries_on_error=8)
        procs.wait_for(
            lambda: survivor.sharing_revoke_shared_link(link.url) or True,
            60,
            "a member revokes the link with the leader dead",
            poll_s=0.2,
        )
        for i in live:  # at once: no waiting between the revoke and these fetches
            r = fetch(t, on(link.url, cluster.members[i].hostport), dl="1")
            assert r.status_code == 404, i
    finally:
        cluster.restart(leader)
    wait_all_serve(cluster, t, acct)
    r = fetch(t, on(link.url, cluster.members[leader].hostport), dl="1")
    assert r.status_code == 404


def test_link_url_origin_host_header_and_public_url():
    from aiohttp.test_utils import make_mocked_request

    from raftbox.api.links import LinkRoutes

    r = LinkRoutes.__new__(LinkRoutes)
    r.set_public_url(None)
    req = make_mocked_request("POST", "/2/x", headers={"Host": "files.example.test:8443"})
    assert r.origin(req) == "http://files.example.test:8443"  # a mocked request has no TLS
    evil = make_mocked_request("POST", "/2/x", headers={"Host": 'x"><script>/'})
    assert "<" not in r.origin(evil) and '"' not in r.origin(evil)
    r.set_public_url("https://share.example.test/")
    assert r.origin(req) == "https://share.example.test"
