"""The sharing calls the web page makes, attacked through a browser session over plain HTTP
(issue 14): without the CSRF token they change nothing; another account's shared folder or
link cannot be read or changed through a session; `/web/download` of a file in a folder shared
with the session's account works, and of a path outside it is not found.
One `raftbox up` for the module (`WebUp`); every outcome checked with the SDK (bearer tokens).
"""

from __future__ import annotations

import io
import json
import zipfile

import dropbox
import pytest

from .webup import WebUp


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    srv = WebUp(tmp_path_factory.mktemp("webshare"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _account(up: WebUp, tag: str):
    email, pw = f"{tag}@example.test", f"{tag}-password-1"
    return email, pw, up.dbx(up.add_user(email, pw))


def _summary(r) -> str:
    return r.json().get("error_summary", "")


def test_sharing_without_csrf_changes_nothing(up):
    email, pw, dbx = _account(up, "nocsrf")
    dbx.files_create_folder_v2("/Mine")
    s, csrf = up.login(email, pw)
    for forged in (None, "0" * 64):
        r = up.rpc(s, "sharing/share_folder", {"path": "/Mine"}, csrf=forged)
        assert r.status_code == 403
        r = up.rpc(s, "sharing/create_shared_link_with_settings", {"path": "/Mine"}, csrf=forged)
        assert r.status_code == 403
    assert dbx.files_get_metadata("/Mine").shared_folder_id is None
    assert dbx.sharing_list_shared_links().links == []
    r = up.rpc(s, "sharing/share_folder", {"path": "/Mine"}, csrf=csrf)  # the page's own call
    assert r.status_code == 200 and r.json()[".tag"] == "complete"


def test_another_accounts_folder_and_link_through_a_session(up):
    _, _, owner = _account(up, "victim")
    owner.files_upload(b"private", "/Vault/secret.txt")
    sfid = owner.sharing_share_folder("/Vault").get_complete().shared_folder_id
    link = owner.sharing_create_shared_link_with_settings("/Vault/secret.txt").url
    email, pw, _ = _account(up, "intruder")
    s, csrf = up.login(email, pw)
    for route, arg in (
        ("sharing/list_folder_members", {"shared_folder_id": sfid}),
        ("sharing/get_folder_metadata", {"shared_folder_id": sfid}),
        ("sharing/mount_folder", {"shared_folder_id": sfid}),
        (
            "sharing/add_folder_member",
            {
                "shared_folder_id": sfid,
                "members": [{"member": {".tag": "email", "email": email}}],
            },
        ),
        ("sharing/unshare_folder", {"shared_folder_id": sfid}),
    ):
        r = up.rpc(s, route, arg, csrf=csrf)
        assert r.status_code == 409 and "invalid_id" in _summary(r), (route, r.text)
    r = up.rpc(s, "sharing/revoke_shared_link", {"url": link}, csrf=csrf)
    assert r.status_code == 409 and "shared_link_access_denied" in _summary(r)
    r = up.rpc(s, "sharing/list_shared_links", {}, csrf=csrf)
    assert r.json()["links"] == []
    members = owner.sharing_list_folder_members(sfid)
    assert [u.user.email for u in members.users] == ["victim@example.test"] and not members.invitees
    assert [lk.url for lk in owner.sharing_list_shared_links(path="/Vault/secret.txt").links] == [
        link
    ]


def test_web_download_across_a_mount_and_not_outside(up):
    b_email, b_pw, bob = _account(up, "reader")
    _, _, alice = _account(up, "sharer")
    alice.files_upload(b"shared bytes", "/Pub/doc.txt")
    alice.files_upload(b"not shared", "/Priv/doc.txt")
    sfid = alice.sharing_share_folder("/Pub").get_complete().shared_folder_id
    member = dropbox.sharing.AddMember(
        dropbox.sharing.MemberSelector.email(b_email), dropbox.sharing.AccessLevel.viewer
    )
    alice.sharing_add_folder_member(sfid, [member])
    bob.sharing_mount_folder(sfid)
    s, _ = up.login(b_email, b_pw)

    def get(path: str):
        arg = json.dumps({"path": path})
        return s.get(up.url + "/web/download", params={"arg": arg}, timeout=30)

    r = get("/Pub/doc.txt")
    assert r.status_code == 200 and r.content == b"shared bytes"
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert get("/Priv/doc.txt").status_code == 409  # bob's own tree has no /Priv


def test_web_download_zip_of_a_shared_folder_root(up):
    """A shared folder's top (its mount point) zips like any folder, for the page and the SDK."""
    email, pw, dbx = _account(up, "zipowner")
    dbx.files_upload(b"in it", "/Shared/a.txt")
    dbx.files_upload(b"deeper", "/Shared/sub/b.txt")
    dbx.sharing_share_folder("/Shared")
    s, _ = up.login(email, pw)
    r = s.get(up.url + "/web/download_zip", params={"arg": json.dumps({"path": "/Shared"})})
    assert r.status_code == 200 and r.content[:2] == b"PK"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        got = {n: z.read(n) for n in z.namelist()}
    assert got == {"Shared/a.txt": b"in it", "Shared/sub/b.txt": b"deeper"}
    md, resp = dbx.files_download_zip("/Shared")
    assert md.metadata.path_display == "/Shared"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as z:
        assert {n: z.read(n) for n in z.namelist()} == got


def test_my_links_include_those_inside_a_shared_folder(up):
    _, _, dbx = _account(up, "linklister")
    dbx.files_upload(b"x", "/Team/a.txt")
    dbx.sharing_share_folder("/Team")
    url = dbx.sharing_create_shared_link_with_settings("/Team/a.txt").url
    (lk,) = dbx.sharing_list_shared_links().links  # what the page's "Shared links" shows
    assert lk.url == url and lk.path_lower == "/team/a.txt"
