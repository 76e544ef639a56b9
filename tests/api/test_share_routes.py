"""The batch routes, `finish_batch` v1, thumbnails, temporary links, search and the v1 aliases
on files inside a mounted shared folder, through the official SDK against `raftbox up`: an
editor's writes land in the shared folder (the owner sees them), a viewer's writes are refused
with `no_write_permission` while its reads work, and results' paths are in the caller's tree
(`raftbox.api.spaces`)."""

from __future__ import annotations

import io

import pytest
import requests
from dropbox import exceptions, files, sharing
from PIL import Image

from .sdk import Account, Target


@pytest.fixture
def team(up_target: Target):
    """alice shares /Project (plan.txt, docs/, pic.png); bob (editor) mounts it as /Work,
    carol (viewer) as /Project; dave is a stranger."""
    alice, bob, carol, dave = (up_target.new_account(n) for n in ("alice", "bob", "carol", "dave"))
    a = alice.dbx()
    a.files_upload(b"plan v1", "/Project/plan.txt")
    a.files_create_folder_v2("/Project/docs")
    a.files_upload(png(), "/Project/pic.png")
    sfid = a.sharing_share_folder("/Project").get_complete().shared_folder_id
    members = [
        sharing.AddMember(
            sharing.MemberSelector.dropbox_id(bob.account_id), sharing.AccessLevel.editor
        ),
        sharing.AddMember(
            sharing.MemberSelector.dropbox_id(carol.account_id), sharing.AccessLevel.viewer
        ),
    ]
    a.sharing_add_folder_member(sfid, members)
    bob.dbx().sharing_mount_folder(sfid)
    bob.dbx().files_move_v2("/Project", "/Work")  # his mount point has another name
    carol.dbx().sharing_mount_folder(sfid)
    return sfid, alice, bob, carol, dave


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def names(acct: Account, folder: str) -> set[str]:
    return {e.name for e in acct.dbx().files_list_folder(folder).entries}


CHECKS = {
    "copy_batch": "files_copy_batch_check_v2",
    "move_batch": "files_move_batch_check_v2",
    "delete_batch": "files_delete_batch_check",
    "create_folder_batch": "files_create_folder_batch_check",
}


def check(dbx, route: str, launch):
    """The complete entries of a batch job launched by `route`."""
    if launch.is_complete():
        return launch.get_complete().entries
    status = getattr(dbx, CHECKS[route])(launch.get_async_job_id())
    assert status.is_complete()
    return status.get_complete().entries


def test_an_editors_folder_batch_lands_in_the_shared_folder(team) -> None:
    sfid, alice, bob, carol, dave = team
    b = bob.dbx()
    for force_async in (False, True):
        new = f"/Work/new-{force_async}"
        mine = f"/mine-{force_async}"
        launch = b.files_create_folder_batch([new, "/Work/docs", mine], force_async=force_async)
        got = check(b, "create_folder_batch", launch)
        assert got[0].get_success().metadata.path_display == new
        assert got[0].get_success().metadata.sharing_info.parent_shared_folder_id == sfid
        assert got[1].get_failure().get_path().is_conflict()
        assert got[2].get_success().metadata.path_display == mine
        assert got[2].get_success().metadata.sharing_info is None
        # in the shared namespace: every member sees it under its own mount point
        assert f"new-{force_async}" in names(alice, "/Project")
        assert f"new-{force_async}" in names(carol, "/Project")
    assert "mine-False" not in names(alice, "/Project") and "mine-False" in names(bob, "")
    # and not as a folder of bob's home namespace hidden under his mount point
    assert names(bob, "/Work") == names(alice, "/Project")


def test_an_editors_delete_move_and_copy_batches(team) -> None:
    sfid, alice, bob, carol, dave = team
    b = bob.dbx()
    b.files_upload(b"mine", "/mine.txt")
    b.files_upload(b"gone", "/Work/gone.txt")
    moves = [
        files.RelocationPath("/Work/plan.txt", "/Work/docs/plan.txt"),  # inside the folder
        files.RelocationPath("/mine.txt", "/Work/mine.txt"),  # home -> shared
        files.RelocationPath("/Work/docs", "/docs-out"),  # shared -> home, a folder
        files.RelocationPath("/Work/nothing", "/x"),
    ]
    got = check(b, "move_batch", b.files_move_batch_v2(moves))
    paths = [e.get_success().path_display if e.is_success() else None for e in got]
    assert paths == ["/Work/docs/plan.txt", "/Work/mine.txt", "/docs-out", None]
    assert got[1].get_success().sharing_info.parent_shared_folder_id == sfid
    assert got[3].get_failure().get_relocation_error().get_from_lookup().is_not_found()
    assert names(alice, "/Project") == {"mine.txt", "pic.png", "gone.txt"}
    assert names(bob, "/docs-out") == {"plan.txt"} and "mine.txt" not in names(bob, "")
    _, resp = alice.dbx().files_download("/Project/mine.txt")
    assert resp.content == b"mine"

    copies = [
        files.RelocationPath("/Work/mine.txt", "/copy.txt"),
        files.RelocationPath("/docs-out/plan.txt", "/Work/plan-again.txt"),
    ]
    got = check(b, "copy_batch", b.files_copy_batch_v2(copies))
    assert [e.get_success().path_display for e in got] == ["/copy.txt", "/Work/plan-again.txt"]
    assert "plan-again.txt" in names(carol, "/Project")

    launch = b.files_delete_batch(
        [files.DeleteArg("/Work/gone.txt"), files.DeleteArg("/Work/nope.txt")]
    )
    got = check(b, "delete_batch", launch)
    assert got[0].get_success().metadata.path_display == "/Work/gone.txt"
    assert got[1].get_failure().get_path_lookup().is_not_found()
    assert "gone.txt" not in names(alice, "/Project")


def test_a_viewers_batch_writes_are_refused_and_its_reads_work(team) -> None:
    sfid, alice, bob, carol, dave = team
    c = carol.dbx()
    c.files_upload(b"own", "/own.txt")
    before = names(alice, "/Project")
    got = check(c, "create_folder_batch", c.files_create_folder_batch(["/Project/x"]))
    assert got[0].get_failure().get_path().is_no_write_permission()
    got = check(c, "delete_batch", c.files_delete_batch([files.DeleteArg("/Project/plan.txt")]))
    assert got[0].get_failure().get_path_write().is_no_write_permission()
    moves = [
        files.RelocationPath("/Project/plan.txt", "/plan.txt"),
        files.RelocationPath("/own.txt", "/Project/own.txt"),
    ]
    got = check(c, "move_batch", c.files_move_batch_v2(moves))
    err = [e.get_failure().get_relocation_error() for e in got]
    assert err[0].get_from_write().is_no_write_permission()
    assert err[1].get_to().is_no_write_permission()
    copies = [
        files.RelocationPath("/Project/plan.txt", "/plan-copy.txt"),  # a read: allowed
        files.RelocationPath("/own.txt", "/Project/own.txt"),
    ]
    got = check(c, "copy_batch", c.files_copy_batch_v2(copies))
    assert got[0].get_success().path_display == "/plan-copy.txt"
    assert got[1].get_failure().get_relocation_error().get_to().is_no_write_permission()
    assert names(alice, "/Project") == before
    assert "own.txt" in names(carol, "")
    # the v1 aliases go through the same resolution
    with pytest.raises(exceptions.ApiError) as e:
        c.files_delete("/Project/plan.txt")
    assert e.value.error.get_path_write().is_no_write_permission()
    with pytest.raises(exceptions.ApiError) as e:
        c.files_create_folder("/Project/v1")
    assert e.value.error.get_path().is_no_write_permission()
    bob.dbx().files_create_folder("/Work/v1")
    assert "v1" in names(alice, "/Project")


def test_a_stranger_gets_not_found(team) -> None:
    sfid, alice, bob, carol, dave = team
    d = dave.dbx()
    plan = alice.dbx().files_get_metadata("/Project/plan.txt")
    for ref in (f"ns:{sfid}/plan.txt", plan.id, f"ns:{int(sfid) + 1000}/plan.txt"):
        got = check(d, "delete_batch", d.files_delete_batch([files.DeleteArg(ref)]))
        assert got[0].get_failure().get_path_lookup().is_not_found(), ref
        got = check(d, "copy_batch", d.files_copy_batch_v2([files.RelocationPath(ref, "/c")]))
        assert got[0].get_failure().get_relocation_error().get_from_lookup().is_not_found()
        with pytest.raises(exceptions.ApiError) as e:
            d.files_get_thumbnail_v2(files.PathOrLink.path(ref))
        assert e.value.error.get_path().is_not_found()
        with pytest.raises(exceptions.ApiError) as e:
            d.files_get_temporary_link(ref)
        assert e.value.error.get_path().is_not_found()
    for ns in (sfid, str(int(sfid) + 1000)):  # a folder or a namespace that is not his: alike
        got = check(d, "create_folder_batch", d.files_create_folder_batch([f"ns:{ns}/x"]))
        assert got[0].get_failure().get_path().is_no_write_permission()
        with pytest.raises(exceptions.ApiError) as e:
            d.files_search_v2("plan", files.SearchOptions(path=f"ns:{ns}"))
        assert e.value.error.get_path().is_not_found()
    assert d.files_search_v2("plan").matches == []
    assert names(alice, "/Project") == {"plan.txt", "docs", "pic.png"}


def test_thumbnails_and_temporary_links_in_a_shared_folder(team) -> None:
    sfid, alice, bob, carol, dave = team
    for who, path in ((bob, "/Work/pic.png"), (carol, "/Project/pic.png")):
        dbx = who.dbx()
        md, resp = dbx.files_get_thumbnail_v2(files.PathOrLink.path(path))
        assert md.file_metadata.path_display == path
        assert md.file_metadata.sharing_info.parent_shared_folder_id == sfid
        assert Image.open(io.BytesIO(resp.content)).size[0] > 0
        batch = dbx.files_get_thumbnail_batch([files.ThumbnailArg(path)])
        assert batch.entries[0].get_success().metadata.path_display == path
        link = dbx.files_get_temporary_link(path.replace("pic.png", "plan.txt"))
        assert link.metadata.path_display == path.replace("pic.png", "plan.txt")
        r = requests.get(link.link, verify=who.target.ca, timeout=30)
        assert (r.status_code, r.content) == (200, b"plan v1")


def test_search_sees_mounted_folders_with_paths_in_the_callers_tree(team) -> None:
    sfid, alice, bob, carol, dave = team
    b = bob.dbx()
    b.files_upload(b"home", "/plan-home.txt")
    found = b.files_search_v2("plan").matches
    paths = {m.metadata.get_metadata().path_display for m in found}
    assert paths == {"/plan-home.txt", "/Work/plan.txt"}
    shared = [m.metadata.get_metadata() for m in found]
    shared = [m for m in shared if m.path_display.startswith("/Work/")]
    assert shared[0].sharing_info.parent_shared_folder_id == sfid
    inside = b.files_search_v2("plan", files.SearchOptions(path="/Work")).matches
    assert [m.metadata.get_metadata().path_display for m in inside] == ["/Work/plan.txt"]
    assert carol.dbx().files_search_v2("plan").matches[0].metadata.get_metadata().path_display == (
        "/Project/plan.txt"
    )
    # one result a page: the pages go on from the home namespace into the mounted folder
    seen = []
    page = b.files_search_v2("plan", files.SearchOptions(max_results=1))
    seen += [m.metadata.get_metadata().path_display for m in page.matches]
    while page.has_more:
        page = b.files_search_continue_v2(page.cursor)
        seen += [m.metadata.get_metadata().path_display for m in page.matches]
    assert sorted(seen) == ["/Work/plan.txt", "/plan-home.txt"]


def test_finish_batch_v1_into_a_shared_folder(team) -> None:
    sfid, alice, bob, carol, dave = team
    entries = []
    for who, path in ((bob, "/Work/up.bin"), (bob, "/home.bin"), (carol, "/Project/no.bin")):
        dbx = who.dbx()
        s = dbx.files_upload_session_start(b"data")
        cursor = files.UploadSessionCursor(s.session_id, 4)
        arg = files.UploadSessionFinishArg(cursor, files.CommitInfo(path))
        if who is carol:
            launch = dbx.files_upload_session_finish_batch([arg])
            got = dbx.files_upload_session_finish_batch_check(launch.get_async_job_id())
            failure = got.get_complete().entries[0].get_failure()
            assert failure.get_path().is_no_write_permission()
            continue
        entries.append(arg)
    b = bob.dbx()
    launch = b.files_upload_session_finish_batch(entries)
    got = b.files_upload_session_finish_batch_check(launch.get_async_job_id()).get_complete()
    done = [e.get_success() for e in got.entries]
    assert [m.path_display for m in done] == ["/Work/up.bin", "/home.bin"]
    assert done[0].sharing_info.parent_shared_folder_id == sfid
    assert "up.bin" in names(alice, "/Project") and "no.bin" not in names(alice, "/Project")


def test_batches_on_mount_points(team) -> None:
    """A mount point moves with files/move_v2 only; deleting it (or a folder above it) in a
    delete_batch unmounts it, as files/delete_v2 does: the folder stays shared."""
    sfid, alice, bob, carol, dave = team
    b = bob.dbx()
    moves = [files.RelocationPath("/Work", "/Elsewhere")]
    got = check(b, "move_batch", b.files_move_batch_v2(moves))
    assert got[0].get_failure().get_relocation_error().is_cant_move_shared_folder()
    got = check(b, "copy_batch", b.files_copy_batch_v2(moves))
    assert got[0].get_failure().get_relocation_error().is_cant_copy_shared_folder()
    assert "Work" in names(bob, "")
    c = carol.dbx()
    c.files_move_v2("/Project", "/Outer/Project")
    got = check(b, "delete_batch", b.files_delete_batch([files.DeleteArg("/Work")]))
    assert got[0].get_success().metadata.path_display == "/Work"
    got = check(c, "delete_batch", c.files_delete_batch([files.DeleteArg("/Outer")]))
    assert got[0].get_success().metadata.path_display == "/Outer"
    assert names(bob, "") == set() and names(carol, "") == set()
    assert names(alice, "/Project") == {"plan.txt", "docs", "pic.png"}
    bob.dbx().sharing_mount_folder(sfid)  # still a member: mounts it again
    assert names(bob, "/Project") == {"plan.txt", "docs", "pic.png"}
