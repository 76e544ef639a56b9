"""A shared link to the top of a shared folder (its mount point), with the official SDK against
`raftbox up`: it gives the folder's content to anyone holding it (metadata, `list_folder` with
`shared_link`, `get_shared_link_file` by `path`, the page and its zip), it keeps working when
members rename or move their mount points, every link route handles it, and it dies when its
owner leaves the folder or the folder is unshared — except the owner's own link, which then
names the folder the owner keeps. (On the old code, creating it answered `access_denied`.)"""

from __future__ import annotations

import io
import zipfile

import pytest
import requests
from dropbox import exceptions, files, sharing

from .sdk import Account, Target


@pytest.fixture
def team(up_target: Target):
    """alice shares /Team (a file, a sub-folder with a file); bob (editor) mounts it as /Work,
    carol (viewer) as /Team; dave is a stranger."""
    alice, bob, carol, dave = (up_target.new_account(n) for n in ("alice", "bob", "carol", "dave"))
    a = alice.dbx()
    a.files_upload(b"plan v1", "/Team/plan.txt")
    a.files_upload(b"deep", "/Team/sub/deep.txt")
    a.files_upload(b"alice's own", "/private.txt")
    sfid = a.sharing_share_folder("/Team").get_complete().shared_folder_id
    a.sharing_add_folder_member(
        sfid,
        [
            sharing.AddMember(
                sharing.MemberSelector.dropbox_id(bob.account_id), sharing.AccessLevel.editor
            ),
            sharing.AddMember(
                sharing.MemberSelector.dropbox_id(carol.account_id), sharing.AccessLevel.viewer
            ),
        ],
    )
    bob.dbx().sharing_mount_folder(sfid)
    bob.dbx().files_move_v2("/Team", "/Work")
    carol.dbx().sharing_mount_folder(sfid)
    return sfid, alice, bob, carol, dave


def get(t: Target, url: str, **params) -> requests.Response:
    with requests.Session() as s:
        s.verify, s.trust_env = t.ca, False
        return s.get(url, params=params, timeout=30, allow_redirects=False)


def tok(url: str) -> str:
    return url.split("/s/", 1)[1].split("/")[0]


def test_a_link_to_a_shared_folders_top(team, up_target: Target):
    sfid, alice, bob, carol, dave = team
    link = bob.dbx().sharing_create_shared_link_with_settings("/Work")
    assert isinstance(link, sharing.FolderLinkMetadata)
    assert link.name == "Work" and link.path_lower == "/work"
    # the same link by its namespace path and by the mount point's id: already exists
    for ref in (f"ns:{sfid}", bob.dbx().files_get_metadata("/Work").id):
        with pytest.raises(exceptions.ApiError) as e:
            bob.dbx().sharing_create_shared_link_with_settings(ref)
        err = e.value.error
        assert err.is_shared_link_already_exists(), (ref, err)
        assert tok(err.get_shared_link_already_exists().get_metadata().url) == tok(link.url)
    # a stranger through the SDK: metadata, the listing, a file inside by path
    d = dave.dbx()
    seen = d.sharing_get_shared_link_metadata(link.url)
    assert isinstance(seen, sharing.FolderLinkMetadata) and seen.path_lower is None
    listed = d.files_list_folder("", shared_link=files.SharedLink(link.url))
    assert {e.name for e in listed.entries} == {"plan.txt", "sub"}
    sub = d.files_list_folder("/sub", shared_link=files.SharedLink(link.url))
    assert [e.name for e in sub.entries] == ["deep.txt"]
    meta, r = d.sharing_get_shared_link_file(link.url, path="/sub/deep.txt")
    assert r.content == b"deep" and meta.name == "deep.txt"
    inner = d.sharing_get_shared_link_metadata(link.url, path="/plan.txt")
    assert isinstance(inner, sharing.FileLinkMetadata) and inner.size == 7
    with pytest.raises(exceptions.ApiError) as e:
        d.sharing_get_shared_link_file(link.url)
    assert e.value.error.is_shared_link_is_directory()
    # no account: the page and its zip (named after the folder, everything under it)
    page = get(up_target, link.url)
    assert page.status_code == 200 and "plan.txt" in page.text and "sub/" in page.text
    assert "private.txt" not in page.text
    z = get(up_target, link.url, dl="1")
    assert z.status_code == 200 and z.headers["Content-Type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(z.content))
    assert {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")} == {
        "Work/plan.txt": b"plan v1",
        "Work/sub/deep.txt": b"deep",
    }
    assert get(up_target, link.url, path="/sub/deep.txt", dl="1").content == b"deep"
    # members rename and move their mount points: the link still shows the folder
    bob.dbx().files_move_v2("/Work", "/Elsewhere/Work2")
    alice.dbx().files_move_v2("/Team", "/Team renamed")
    alice.dbx().files_upload(b"new", "/Team renamed/new.txt")
    assert get(up_target, link.url, path="/new.txt", dl="1").content == b"new"
    # list_shared_links: in bob's tree, at the mount point and everywhere
    b = bob.dbx()
    assert [tok(x.url) for x in b.sharing_list_shared_links().links] == [tok(link.url)]
    mine = b.sharing_list_shared_links("/Elsewhere/Work2", direct_only=True).links
    assert [(tok(x.url), x.path_lower) for x in mine] == [(tok(link.url), "/elsewhere/work2")]
    assert b.sharing_get_shared_link_metadata(link.url).path_lower == "/elsewhere/work2"
    # modify: a password, then no downloads; a stranger needs the password
    b.sharing_modify_shared_link_settings(
        link.url,
        sharing.SharedLinkSettings(
            requested_visibility=sharing.RequestedVisibility.password, link_password="hunter22"
        ),
    )
    with pytest.raises(exceptions.ApiError) as e:
        d.sharing_get_shared_link_metadata(link.url)
    assert e.value.error.is_shared_link_access_denied()
    _, r = d.sharing_get_shared_link_file(link.url, path="/plan.txt", link_password="hunter22")
    assert r.content == b"plan v1"
    changed = b.sharing_modify_shared_link_settings(
        link.url, sharing.SharedLinkSettings(allow_download=False)
    )
    assert not changed.link_permissions.allow_download
    # another member cannot change or revoke it
    with pytest.raises(exceptions.ApiError) as e:
        alice.dbx().sharing_revoke_shared_link(link.url)
    assert e.value.error.is_shared_link_access_denied()
    # revoked: gone at once, like a link never made
    never = get(up_target, link.url.replace("/s/", "/s/x"))
    b.sharing_revoke_shared_link(link.url)
    gone = get(up_target, link.url)
    assert (gone.status_code, gone.content) == (404, never.content)
    assert b.sharing_list_shared_links().links == []


def test_viewers_link_the_top_and_links_die_with_membership_or_unshare(team, up_target: Target):
    sfid, alice, bob, carol, dave = team
    # a viewer may link the top (links are view-only)
    carols = carol.dbx().sharing_create_shared_link_with_settings("/Team").url
    assert get(up_target, carols, path="/plan.txt", dl="1").content == b"plan v1"
    bobs = bob.dbx().sharing_create_shared_link_with_settings("/Work").url
    alices = alice.dbx().sharing_create_shared_link_with_settings("/Team").url
    # carol leaves: her link dies; bob's and alice's live on
    carol.dbx().sharing_relinquish_folder_membership(sfid)
    assert get(up_target, carols).status_code == 404
    assert get(up_target, bobs, path="/plan.txt", dl="1").content == b"plan v1"
    # unshared: bob's link dies; alice's names the folder she keeps (same content), and never
    # her home root
    launch = alice.dbx().sharing_unshare_folder(sfid, leave_a_copy=True)
    if launch.is_async_job_id():
        assert alice.dbx().sharing_check_job_status(launch.get_async_job_id()).is_complete()
    assert get(up_target, bobs).status_code == 404
    assert get(up_target, alices, path="/plan.txt", dl="1").content == b"plan v1"
    assert get(up_target, alices, path="/private.txt", dl="1").status_code == 404
    z = zipfile.ZipFile(io.BytesIO(get(up_target, alices, dl="1").content))
    assert sorted(n for n in z.namelist() if not n.endswith("/")) == [
        "Team/plan.txt",
        "Team/sub/deep.txt",
    ]
    listed = alice.dbx().sharing_list_shared_links("/Team", direct_only=True).links
    assert [(tok(x.url), x.path_lower) for x in listed] == [(tok(alices), "/team")]


def test_a_folder_link_made_before_sharing_shows_the_share(up_target: Target):
    """The owner's link to a folder it then shares keeps showing the folder's content (it
    becomes a link to the share's top), not the empty mount point left in its home."""
    alice: Account = up_target.new_account("early")
    a = alice.dbx()
    a.files_upload(b"x", "/Box/x.txt")
    url = a.sharing_create_shared_link_with_settings("/Box").url
    a.sharing_share_folder("/Box")
    a.files_upload(b"y", "/Box/y.txt")
    assert get(up_target, url, path="/y.txt", dl="1").content == b"y"
    assert [tok(x.url) for x in a.sharing_list_shared_links("/Box", direct_only=True).links] == [
        tok(url)
    ]
