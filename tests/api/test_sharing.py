"""Shared folders through the official SDK (dropbox==12.2.4), against `raftbox up` and the
3-member cluster (whose leader is killed -9 in the middle of this module, then restarted):
owner, editor, viewer and stranger; invitations by email; mount and unmount; leave with and
without a copy; unshare; every refusal with the SDK's own error type."""

from __future__ import annotations

import concurrent.futures

import dropbox
import pytest
from dropbox import files, sharing

from .sdk import Target

KILL_AT, RESTART_AT = 3, 6
_chaos = {"n": 0, "killed": 0}


@pytest.fixture
def team(target: Target, request: pytest.FixtureRequest):
    """alice owns /Project (a file and a folder in it) and shares it; bob (editor, by account
    id) and carol (viewer, invited by email) mount it; dave is a stranger."""
    if target.name == "cluster":
        c = request.getfixturevalue("cluster")
        _chaos["n"] += 1
        if _chaos["n"] == KILL_AT:
            leader = c.leader()
            c.kill9(leader)
            _chaos["killed"] = leader
            target.default_member = next(i for i in c.members if i != leader) - 1
        elif _chaos["n"] == RESTART_AT and _chaos["killed"]:
            c.restart(_chaos["killed"])
            _chaos["killed"] = 0
    alice, bob, carol, dave = (target.new_account(n) for n in ("alice", "bob", "carol", "dave"))
    a = alice.dbx()
    a.files_upload(b"plan v1", "/Project/plan.txt")
    a.files_create_folder_v2("/Project/docs")
    launch = a.sharing_share_folder("/Project")
    assert launch.is_complete()
    sf = launch.get_complete()
    sfid = sf.shared_folder_id
    a.sharing_add_folder_member(
        sfid,
        [
            sharing.AddMember(
                sharing.MemberSelector.dropbox_id(bob.account_id), sharing.AccessLevel.editor
            ),
            sharing.AddMember(
                sharing.MemberSelector.email(carol.email), sharing.AccessLevel.viewer
            ),
        ],
    )
    bob.dbx().sharing_mount_folder(sfid)
    carol.dbx().sharing_mount_folder(sfid)
    return sfid, alice, bob, carol, dave


def api_error(exc: pytest.ExceptionInfo) -> object:
    assert isinstance(exc.value, dropbox.exceptions.ApiError), exc.value
    return exc.value.error


def test_share_metadata_and_sharing_info(team):
    sfid, alice, bob, carol, dave = team
    a = alice.dbx()
    md = a.sharing_get_folder_metadata(sfid)
    assert (md.name, md.path_lower, md.access_type.is_owner()) == ("Project", "/project", True)
    folder = a.files_get_metadata("/Project")
    assert isinstance(folder, files.FolderMetadata)
    assert folder.shared_folder_id == sfid and folder.sharing_info.shared_folder_id == sfid
    f = carol.dbx().files_get_metadata("/Project/plan.txt")
    assert f.sharing_info.read_only is True
    assert f.sharing_info.parent_shared_folder_id == sfid
    assert bob.dbx().files_get_metadata("/Project/plan.txt").sharing_info.read_only is False
    # the same file, the same id, for every member
    assert {m.dbx().files_get_metadata("/Project/plan.txt").id for m in (alice, bob, carol)} == {
        f.id
    }
    names = sorted(e.name for e in carol.dbx().files_list_folder("/Project").entries)
    assert names == ["docs", "plan.txt"]


def test_editor_writes_every_member_sees_it(team):
    sfid, alice, bob, carol, dave = team
    b = bob.dbx()
    up = b.files_upload(b"from bob", "/Project/docs/bob.txt")
    assert up.path_display == "/Project/docs/bob.txt"
    _, resp = carol.dbx().files_download("/Project/docs/bob.txt")
    assert resp.content == b"from bob"
    _, resp = alice.dbx().files_download(f"ns:{sfid}/docs/bob.txt")
    assert resp.content == b"from bob"
    b.files_move_v2("/Project/docs/bob.txt", "/Project/bob.txt")
    b.files_create_folder_v2("/Project/new")
    b.files_delete_v2("/Project/new")
    names = sorted(e.name for e in alice.dbx().files_list_folder("/Project").entries)
    assert names == ["bob.txt", "docs", "plan.txt"]
    # id: paths work for every member
    fid = b.files_get_metadata("/Project/bob.txt").id
    assert carol.dbx().files_get_metadata(fid).path_display == "/Project/bob.txt"


def test_viewer_cannot_write(team):
    sfid, alice, bob, carol, dave = team
    c = carol.dbx()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        c.files_upload(b"mine", "/Project/carol.txt")
    assert api_error(e).get_path().reason.is_no_write_permission()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        c.files_delete_v2("/Project/plan.txt")
    assert api_error(e).get_path_write().is_no_write_permission()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        c.files_create_folder_v2("/Project/x")
    assert api_error(e).get_path().is_no_write_permission()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        c.sharing_add_folder_member(
            sfid, [sharing.AddMember(sharing.MemberSelector.email(dave.email))]
        )
    assert api_error(e).is_no_permission()
    # its own space is its own
    c.files_upload(b"mine", "/carol.txt")


def test_stranger_sees_nothing(team):
    sfid, alice, bob, carol, dave = team
    d = dave.dbx()
    fid = alice.dbx().files_get_metadata("/Project/plan.txt").id
    for path in (fid, f"ns:{sfid}/plan.txt", f"ns:{sfid}"):
        with pytest.raises(dropbox.exceptions.ApiError) as e:
            d.files_get_metadata(path)
        assert api_error(e).get_path().is_not_found()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        d.sharing_get_folder_metadata(sfid)
    assert api_error(e).is_invalid_id()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        d.sharing_get_folder_metadata("999999999")
    assert api_error(e).is_invalid_id()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        d.sharing_mount_folder(sfid)
    assert api_error(e).get_access_error().is_invalid_id()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        d.users_get_account(alice.account_id)
    assert api_error(e).is_no_account()
    assert d.sharing_list_folders().entries == []
    assert d.sharing_list_mountable_folders().entries == []


def test_members_listing_and_accounts(team):
    sfid, alice, bob, carol, dave = team
    m = bob.dbx().sharing_list_folder_members(sfid)
    got = sorted((u.user.email, u.access_type._tag) for u in m.users)
    assert got == sorted([(alice.email, "owner"), (bob.email, "editor"), (carol.email, "viewer")])
    assert bob.dbx().users_get_account(alice.account_id).email == alice.email
    accts = carol.dbx().users_get_account_batch([alice.account_id, bob.account_id])
    assert [x.email for x in accts] == [alice.email, bob.email]
    page = bob.dbx().sharing_list_folder_members(sfid, limit=1)
    seen = [u.user.email for u in page.users]
    while page.cursor:
        page = bob.dbx().sharing_list_folder_members_continue(page.cursor)
        seen += [u.user.email for u in page.users]
    assert sorted(seen) == sorted([alice.email, bob.email, carol.email])


def test_update_and_remove_member(team):
    sfid, alice, bob, carol, dave = team
    a = alice.dbx()
    a.sharing_update_folder_member(
        sfid, sharing.MemberSelector.email(carol.email), sharing.AccessLevel.editor
    )
    carol.dbx().files_upload(b"now I can", "/Project/carol.txt")
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        bob.dbx().sharing_update_folder_member(
            sfid, sharing.MemberSelector.email(carol.email), sharing.AccessLevel.viewer
        )
    assert api_error(e).is_no_permission()
    job = a.sharing_remove_folder_member(
        sfid, sharing.MemberSelector.dropbox_id(bob.account_id), leave_a_copy=True
    )
    st = a.sharing_check_remove_member_job_status(job.get_async_job_id())
    assert st.is_complete()
    # bob keeps a copy of his own (new ids), and is out of the folder
    mine = bob.dbx().files_get_metadata("/Project/plan.txt")
    assert mine.sharing_info is None
    assert bob.dbx().sharing_list_folders().entries == []
    job = a.sharing_remove_folder_member(
        sfid, sharing.MemberSelector.dropbox_id(alice.account_id), leave_a_copy=False
    )
    st = a.sharing_check_remove_member_job_status(job.get_async_job_id())
    assert st.is_failed() and st.get_failed().is_folder_owner()


def test_invitation_by_email_mount_unmount(team, target: Target):
    sfid, alice, bob, carol, dave = team
    a = alice.dbx()
    a.sharing_add_folder_member(sfid, [sharing.AddMember(sharing.MemberSelector.email(dave.email))])
    d = dave.dbx()
    assert [f.shared_folder_id for f in d.sharing_list_mountable_folders().entries] == [sfid]
    md = d.sharing_mount_folder(sfid)
    assert md.path_lower == "/project" and md.access_type.is_viewer()
    assert [f.shared_folder_id for f in d.sharing_list_folders().entries] == [sfid]
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        d.sharing_mount_folder(sfid)
    assert api_error(e).is_already_mounted()
    d.sharing_unmount_folder(sfid)
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        d.files_get_metadata("/Project")
    assert api_error(e).get_path().is_not_found()
    assert [f.shared_folder_id for f in d.sharing_list_mountable_folders().entries] == [sfid]
    # a mount point moves like a folder, and the folder follows
    d.sharing_mount_folder(sfid)
    d.files_move_v2("/Project", "/Shared/P")
    _, resp = d.files_download("/Shared/P/plan.txt")
    assert resp.content == b"plan v1"


def test_cursor_on_shared_folder_sees_changes(team):
    sfid, alice, bob, carol, dave = team
    c = carol.dbx()
    cur = c.files_list_folder_get_latest_cursor("/Project", recursive=True).cursor
    bob.dbx().files_upload(b"news", "/Project/news.txt")
    r = c.files_list_folder_continue(cur)
    assert [e.path_display for e in r.entries] == ["/Project/news.txt"]


def test_relinquish_and_unshare(team):
    sfid, alice, bob, carol, dave = team
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        alice.dbx().sharing_relinquish_folder_membership(sfid)
    assert api_error(e).is_folder_owner()
    carol.dbx().sharing_relinquish_folder_membership(sfid, leave_a_copy=False)
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        carol.dbx().files_get_metadata("/Project")
    assert api_error(e).get_path().is_not_found()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        bob.dbx().sharing_unshare_folder(sfid)
    assert api_error(e).is_no_permission()
    pid = alice.dbx().files_get_metadata("/Project/plan.txt").id
    job = alice.dbx().sharing_unshare_folder(sfid, leave_a_copy=True)
    assert alice.dbx().sharing_check_job_status(job.get_async_job_id()).is_complete()
    # the owner keeps the files with their ids; bob keeps a copy; the folder is gone
    assert alice.dbx().files_get_metadata("/Project/plan.txt").id == pid
    _, resp = bob.dbx().files_download("/Project/plan.txt")
    assert resp.content == b"plan v1"
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        bob.dbx().sharing_get_folder_metadata(sfid)
    assert api_error(e).is_invalid_id()


def test_share_refusals_and_async(target: Target):
    alice = target.new_account("alice")
    a = alice.dbx()
    a.files_upload(b"x", "/f.txt")
    a.files_create_folder_v2("/Outer/Inner")
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        a.sharing_share_folder("/f.txt")
    assert api_error(e).get_bad_path().is_is_file()
    launch = a.sharing_share_folder("/Outer/Inner", force_async=True)
    st = a.sharing_check_share_job_status(launch.get_async_job_id())
    assert st.is_complete() and st.get_complete().name == "Inner"
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        a.sharing_share_folder("/Outer")
    assert api_error(e).get_bad_path().is_contains_shared_folder()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        a.sharing_share_folder("/Outer/Inner")
    assert api_error(e).get_bad_path().is_already_shared()
    a.files_create_folder_v2("/Outer/Inner/deeper")
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        a.sharing_share_folder("/Outer/Inner/deeper")
    assert api_error(e).get_bad_path().is_inside_shared_folder()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        a.sharing_check_share_job_status("dbjid:nope")
    assert api_error(e).is_invalid_async_job_id()


def _drain(dbx: dropbox.Dropbox, res) -> tuple[list, str]:
    entries = list(res.entries)
    while res.has_more:
        res = dbx.files_list_folder_continue(res.cursor)
        entries += res.entries
    return entries, res.cursor


def test_root_cursor_covers_mounts_and_stays_valid(team):
    sfid, alice, bob, carol, dave = team
    b = bob.dbx()
    entries, cur = _drain(b, b.files_list_folder("", recursive=True))
    live = {e.path_display for e in entries if not isinstance(e, files.DeletedMetadata)}
    assert {"/Project", "/Project/plan.txt", "/Project/docs"} <= live
    # a change in the shared folder shows in the root cursor, under the mount point
    alice.dbx().files_upload(b"new", "/Project/docs/new.txt")
    entries, cur = _drain(b, b.files_list_folder_continue(cur))
    assert [e.path_display for e in entries] == ["/Project/docs/new.txt"]
    # unmounted: the folder disappears; mounted again: it comes back with its content
    b.sharing_unmount_folder(sfid)
    entries, cur = _drain(b, b.files_list_folder_continue(cur))
    assert [(type(e).__name__, e.path_display) for e in entries] == [
        ("DeletedMetadata", "/Project")
    ]
    b.sharing_mount_folder(sfid)
    entries, cur = _drain(b, b.files_list_folder_continue(cur))
    live = {e.path_display for e in entries if not isinstance(e, files.DeletedMetadata)}
    assert {"/Project", "/Project/plan.txt", "/Project/docs/new.txt"} <= live


def test_longpoll_wakes_every_member(team):
    sfid, alice, bob, carol, dave = team
    curs = {
        m.email: m.dbx().files_list_folder_get_latest_cursor("", recursive=True).cursor
        for m in (bob, carol)
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # waiting (or not yet) when it comes
        polls = [
            pool.submit(m.dbx().files_list_folder_longpoll, curs[m.email], timeout=30)
            for m in (bob, carol)
        ]
        alice.dbx().files_upload(b"wake", "/Project/wake.txt")
        assert all(p.result(timeout=60).changes for p in polls)
    # a cursor on the shared folder itself wakes too, for a member that is not its owner
    c = carol.dbx()
    cur = c.files_list_folder_get_latest_cursor("/Project").cursor
    bob.dbx().files_upload(b"again", "/Project/again.txt")
    assert c.files_list_folder_longpoll(cur, timeout=30).changes


def test_moves_and_copies_across_the_mount_point(team):
    sfid, alice, bob, carol, dave = team
    b = bob.dbx()
    b.files_upload(b"bob's own", "/mine.txt")
    moved = b.files_move_v2("/mine.txt", "/Project/mine.txt").metadata
    assert moved.path_display == "/Project/mine.txt"
    assert moved.sharing_info.parent_shared_folder_id == sfid
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        b.files_get_metadata("/mine.txt")
    assert api_error(e).get_path().is_not_found()
    _, resp = alice.dbx().files_download("/Project/mine.txt")
    assert resp.content == b"bob's own"
    # a copy out of the shared folder is bob's own file
    b.files_copy_v2("/Project/docs", "/backup/docs")
    b.files_copy_v2("/Project/plan.txt", "/backup/plan.txt")
    mine = b.files_get_metadata("/backup/plan.txt")
    assert mine.sharing_info is None
    _, resp = b.files_download("/backup/plan.txt")
    assert resp.content == b"plan v1"
    # the viewer can copy out, not in; and a mount point is not copied
    c = carol.dbx()
    c.files_copy_v2("/Project/plan.txt", "/plan-copy.txt")
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        c.files_move_v2("/plan-copy.txt", "/Project/plan-copy.txt")
    assert api_error(e).get_to().is_no_write_permission()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        c.files_copy_v2("/Project", "/Project-copy")
    assert api_error(e).is_cant_copy_shared_folder()


def test_upload_session_into_a_shared_folder(team):
    sfid, alice, bob, carol, dave = team
    b = bob.dbx()
    part1, part2 = b"a" * 1000, b"b" * 500
    start = b.files_upload_session_start(part1)
    cur = files.UploadSessionCursor(start.session_id, len(part1))
    md = b.files_upload_session_finish(part2, cur, files.CommitInfo("/Project/big.bin"))
    assert md.path_display == "/Project/big.bin" and md.sharing_info is not None
    _, resp = alice.dbx().files_download("/Project/big.bin")
    assert resp.content == part1 + part2
    c = carol.dbx()  # a viewer's session ends refused, and nothing is written
    start = c.files_upload_session_start(part1)
    cur = files.UploadSessionCursor(start.session_id, len(part1))
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        c.files_upload_session_finish(b"", cur, files.CommitInfo("/Project/carol.bin"))
    assert api_error(e).get_path().is_no_write_permission()


def test_a_link_to_a_file_in_a_shared_folder(team, target: Target):
    """alice's link to a file of the shared folder gives it to anyone, and revoking it stops
    that at once; a member's own link works too; a folder link zips the folder's content."""
    import requests

    sfid, alice, bob, carol, dave = team
    link = alice.dbx().sharing_create_shared_link_with_settings("/Project/plan.txt")
    s = requests.Session()
    s.verify, s.trust_env = target.ca, False
    r = s.get(link.url, params={"dl": "1"}, timeout=30)
    assert r.status_code == 200 and r.content == b"plan v1"
    listed = alice.dbx().sharing_list_shared_links(path="/Project/plan.txt").links
    assert [x.url for x in listed] == [link.url]
    alice.dbx().sharing_revoke_shared_link(link.url)
    assert s.get(link.url, params={"dl": "1"}, timeout=30).status_code == 404
    mine = bob.dbx().sharing_create_shared_link_with_settings("/Project/docs")
    assert s.get(mine.url, params={"dl": "1"}, timeout=30).status_code == 200
    bob.dbx().files_upload(b"zipped", "/Project/docs/z.txt")
    _, resp = carol.dbx().files_download_zip("/Project/docs")
    assert resp.status_code == 200 and resp.content[:2] == b"PK" and b"z.txt" in resp.content


def test_links_follow_sharing_and_die_with_membership(target: Target):
    """A link made before its folder is shared keeps working once the folder is shared (its item
    moved into the share's namespace with its id); a member's link into the share dies when the
    member is removed, the same answer as a link never made; an owner who unshares keeping the
    content keeps its links."""
    import requests

    alice, bob = (target.new_account(n) for n in ("lalice", "lbob"))
    a, b = alice.dbx(), bob.dbx()
    a.files_upload(b"before", "/Box/early.txt")
    early = a.sharing_create_shared_link_with_settings("/Box/early.txt").url
    sfid = a.sharing_share_folder("/Box").get_complete().shared_folder_id
    a.sharing_add_folder_member(
        sfid,
        [
            sharing.AddMember(
                sharing.MemberSelector.dropbox_id(bob.account_id), sharing.AccessLevel.editor
            )
        ],
    )
    b.sharing_mount_folder(sfid)
    b.files_upload(b"bob's", "/Box/bobs.txt")
    bobs = b.sharing_create_shared_link_with_settings("/Box/bobs.txt").url

    def get(url: str) -> requests.Response:
        return requests.get(url, params={"dl": "1"}, verify=target.ca, timeout=30)

    assert get(early).content == b"before"
    assert get(bobs).content == b"bob's"
    never = get(bobs.replace("/s/", "/s/x"))
    job = a.sharing_remove_folder_member(
        sfid, sharing.MemberSelector.dropbox_id(bob.account_id), leave_a_copy=False
    )
    if job.is_async_job_id():
        a.sharing_check_remove_member_job_status(job.get_async_job_id())
    gone = get(bobs)
    assert (gone.status_code, gone.content) == (never.status_code, never.content)
    assert get(early).content == b"before"  # the owner is still a member
    launch = a.sharing_unshare_folder(sfid, leave_a_copy=True)
    if launch.is_async_job_id():
        assert a.sharing_check_job_status(launch.get_async_job_id()).is_complete()
    assert get(early).content == b"before"
