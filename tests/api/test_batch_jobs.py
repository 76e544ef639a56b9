"""The batch routes as async jobs, through the official SDK (dropbox==12.2.4) against `raftbox up`:
`copy_batch_v2`, `move_batch_v2`, `delete_batch`, `create_folder_batch` and
`upload_session/finish_batch` (v1), each launched and then checked; per-entry failures in
Dropbox's shapes; and a `/check` answered by a member that is not the leader of the 3-member
cluster, also after the leader that ran the job is gone."""

from __future__ import annotations

import pytest
from dropbox import exceptions, files

from .sdk import Account, Target


@pytest.fixture
def acct(up_target: Target) -> Account:
    return up_target.new_account("batch")


def _paths(dbx, folder: str = "") -> set[str]:
    """Every path under `folder` (not the folder itself)."""
    r = dbx.files_list_folder(folder, recursive=True)
    out = {e.path_display for e in r.entries}
    while r.has_more:
        r = dbx.files_list_folder_continue(r.cursor)
        out |= {e.path_display for e in r.entries}
    return out - {folder}


def test_copy_batch_v2_launches_a_job_whose_check_has_each_entry_in_order(acct: Account) -> None:
    dbx = acct.dbx()
    dbx.files_upload(b"one", "/src/a.txt")
    dbx.files_upload(b"two", "/src/sub/b.txt")
    launch = dbx.files_copy_batch_v2(
        [
            files.RelocationPath("/src/a.txt", "/dst/a.txt"),
            files.RelocationPath("/src/sub", "/dst/sub"),
            files.RelocationPath("/src/missing", "/dst/missing"),
            files.RelocationPath("/src/a.txt", "/dst/a.txt"),  # the first entry made it: conflict
        ]
    )
    assert launch.is_async_job_id()
    status = dbx.files_copy_batch_check_v2(launch.get_async_job_id())
    assert status.is_complete()
    entries = status.get_complete().entries
    assert [e.is_success() for e in entries] == [True, True, False, False]
    assert entries[0].get_success().path_display == "/dst/a.txt"
    assert isinstance(entries[1].get_success(), files.FolderMetadata)
    err = entries[2].get_failure()
    assert err.is_relocation_error()
    assert err.get_relocation_error().get_from_lookup().is_not_found()
    conflict = entries[3].get_failure().get_relocation_error().get_to()
    assert conflict.is_conflict() and conflict.get_conflict().is_file()
    assert {"/dst/a.txt", "/dst/sub/b.txt", "/src/a.txt", "/src/sub/b.txt"} <= _paths(dbx)
    _, resp = dbx.files_download("/dst/sub/b.txt")
    assert resp.content == b"two"


def test_move_batch_v2_with_autorename_and_a_malformed_entry(acct: Account) -> None:
    dbx = acct.dbx()
    dbx.files_upload(b"x", "/m/x.txt")
    dbx.files_upload(b"y", "/m/y.txt")
    dbx.files_upload(b"taken", "/n/x.txt")
    launch = dbx.files_move_batch_v2(
        [
            files.RelocationPath("/m/x.txt", "/n/x.txt"),
            files.RelocationPath("/m/y.txt", "/n/bad/"),  # the pattern takes it, the rules don't
            files.RelocationPath("/m/y.txt", "/n/y.txt"),
        ],
        autorename=True,
        allow_ownership_transfer=True,
    )
    entries = dbx.files_move_batch_check_v2(launch.get_async_job_id()).get_complete().entries
    assert entries[0].get_success().path_display == "/n/x (1).txt"
    to = entries[1].get_failure().get_relocation_error().get_to()
    assert to.is_malformed_path()
    assert entries[2].get_success().path_display == "/n/y.txt"
    assert _paths(dbx, "/m") == set()
    assert _paths(dbx, "/n") == {"/n/x.txt", "/n/x (1).txt", "/n/y.txt"}


def test_delete_batch_reports_each_entry(acct: Account) -> None:
    dbx = acct.dbx()
    a = dbx.files_upload(b"a", "/d/a.txt")
    dbx.files_upload(b"b", "/d/b.txt")
    launch = dbx.files_delete_batch(
        [
            files.DeleteArg("/d/a.txt", parent_rev=a.rev),
            files.DeleteArg("/d/b.txt", parent_rev="0123456789abcdef"),
            files.DeleteArg("/d/none.txt"),
            files.DeleteArg("/d"),
        ]
    )
    assert launch.is_async_job_id()
    status = dbx.files_delete_batch_check(launch.get_async_job_id())
    entries = status.get_complete().entries
    assert entries[0].get_success().metadata.path_display == "/d/a.txt"
    assert entries[1].get_failure().get_path_write().is_conflict()
    assert entries[2].get_failure().get_path_lookup().is_not_found()
    assert isinstance(entries[3].get_success().metadata, files.FolderMetadata)
    with pytest.raises(exceptions.ApiError) as e:
        dbx.files_get_metadata("/d/b.txt")
    assert e.value.error.get_path().is_not_found()


def test_create_folder_batch_complete_at_once_or_as_a_job_with_force_async(acct: Account) -> None:
    dbx = acct.dbx()
    dbx.files_create_folder_v2("/f/old")
    r = dbx.files_create_folder_batch(["/f/one", "/f/two", "/f/ONE", "/f/old"])
    assert r.is_complete()
    entries = r.get_complete().entries
    made = [e.get_success().metadata for e in entries[:3]]
    assert [m.path_display for m in made] == ["/f/one", "/f/two", "/f/one"]  # one, once
    assert made[0].id == made[2].id
    err = entries[3].get_failure().get_path()
    assert err.is_conflict() and err.get_conflict().is_folder()

    r = dbx.files_create_folder_batch(["/f/one", "/f/three"], autorename=True, force_async=True)
    assert r.is_async_job_id()
    status = dbx.files_create_folder_batch_check(r.get_async_job_id())
    names = [e.get_success().metadata.name for e in status.get_complete().entries]
    assert names == ["one (1)", "three"]
    assert _paths(dbx, "/f") == {"/f/old", "/f/one", "/f/two", "/f/one (1)", "/f/three"}


def test_finish_batch_v1_is_a_job_checked_with_finish_batch_check(acct: Account) -> None:
    dbx = acct.dbx()
    entries = []
    for i in range(3):
        body = b"part %d " % i * 1000
        s = dbx.files_upload_session_start(body)
        cursor = files.UploadSessionCursor(s.session_id, len(body))
        entries.append(files.UploadSessionFinishArg(cursor, files.CommitInfo(f"/up/{i}.bin")))
    gone = files.UploadSessionCursor("pid_upload_session:nope", 0)
    entries.append(files.UploadSessionFinishArg(gone, files.CommitInfo("/up/gone.bin")))
    launch = dbx.files_upload_session_finish_batch(entries)
    assert launch.is_async_job_id()
    status = dbx.files_upload_session_finish_batch_check(launch.get_async_job_id())
    assert status.is_complete()
    got = status.get_complete().entries
    assert [e.get_success().path_display for e in got[:3]] == [f"/up/{i}.bin" for i in range(3)]
    assert got[3].get_failure().get_lookup_failed().is_not_found()
    _, resp = dbx.files_download("/up/2.bin")
    assert resp.content == b"part 2 " * 1000


def test_a_job_id_of_another_account_or_route_is_invalid(up_target: Target) -> None:
    alice, bob = up_target.new_account("alice"), up_target.new_account("bob")
    a, b = alice.dbx(), bob.dbx()
    a.files_upload(b"secret", "/s.txt")
    jid = a.files_delete_batch([files.DeleteArg("/s.txt")]).get_async_job_id()
    for call in (
        lambda: b.files_delete_batch_check(jid),
        lambda: a.files_copy_batch_check_v2(jid),  # the right account, another route
        lambda: a.files_delete_batch_check("dbjid:" + "A" * 32),
        lambda: a.files_delete_batch_check("x" * 5000),
    ):
        with pytest.raises(exceptions.ApiError) as e:
            call()
        assert e.value.error.is_invalid_async_job_id()
    assert a.files_delete_batch_check(jid).is_complete()


def test_check_on_a_follower_and_after_the_leader_that_ran_it_is_gone(cluster) -> None:
    hostports = {i: m.hostport for i, m in cluster.members.items()}
    t = Target("cluster", list(hostports.values()), cluster.ca, cluster.admin_token)
    leader = cluster.leader()
    ids = list(hostports)
    follower = next(i for i in ids if i != leader)
    acct = t.new_account("jobs", member=ids.index(follower))
    on_leader = acct.dbx(ids.index(leader))
    on_leader.files_upload(b"k", "/k/a.txt")
    jid = on_leader.files_copy_batch_v2(
        [files.RelocationPath("/k/a.txt", "/k/b.txt")]
    ).get_async_job_id()
    status = acct.dbx(ids.index(follower)).files_copy_batch_check_v2(jid)
    assert status.get_complete().entries[0].get_success().path_display == "/k/b.txt"
    cluster.kill9(leader)
    try:
        status = acct.dbx(ids.index(follower)).files_copy_batch_check_v2(jid)
        assert status.get_complete().entries[0].get_success().path_display == "/k/b.txt"
    finally:
        cluster.restart(leader)
