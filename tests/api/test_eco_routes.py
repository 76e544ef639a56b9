"""The official SDK on the ecosystem routes of issue 15 (against `raftbox up` and the 3-member
cluster): `users/get_space_usage` with per-account quotas and `insufficient_space` on every
write route that can grow an account, `files/search_v2` + `continue_v2`, and
`files/get_temporary_link` with the link fetched by anyone, from any member."""

from __future__ import annotations

import io
import json
from typing import Any

import dropbox
import pytest
import requests
from dropbox import files

from raftbox.meta.quota import UNLIMITED_ALLOCATION_BYTES

from . import procs
from .sdk import Account, Target
from .test_attributes_and_batches import _bid, commit


def set_quota(t: Target, email: str, quota_bytes: int | None, member: int | None = None) -> dict:
    hp = t.hostports[t.default_member if member is None else member]
    r = requests.post(
        f"https://{hp}/2/raftbox/admin/set_quota",
        data=json.dumps({"email": email, "quota_bytes": quota_bytes}),
        headers={"Authorization": f"Bearer {t.admin_token}", "Content-Type": "application/json"},
        verify=t.ca,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def route_error(exc: pytest.ExceptionInfo) -> Any:
    assert isinstance(exc.value, dropbox.exceptions.ApiError), exc.value
    return exc.value.error


def get(url: str, ca: str, **kw: Any) -> requests.Response:
    s = requests.Session()
    s.trust_env = False
    with s:
        return s.get(url, verify=ca, timeout=30, **kw)


# -- space usage and quotas ----------------------------------------------------------------------


def test_space_usage_and_quota_on_every_write_route(target: Target, acct: Account) -> None:
    dbx = acct.dbx()
    u = dbx.users_get_space_usage()
    assert u.used == 0
    assert u.allocation.is_individual()
    assert u.allocation.get_individual().allocated == UNLIMITED_ALLOCATION_BYTES
    dbx.files_upload(b"a" * 1000, "/f/a.bin")
    dbx.files_upload(b"b" * 200, "/f/b.bin")
    assert dbx.users_get_space_usage().used == 1200

    out = set_quota(target, acct.email, 1500)
    assert out == {"email": acct.email, "account_id": acct.account_id, "used": 1200,
                   "quota_bytes": 1500}  # fmt: skip
    u = dbx.users_get_space_usage()
    assert (u.used, u.allocation.get_individual().allocated) == (1200, 1500)

    # files/upload: UploadError.path (UploadWriteFailed) reason insufficient_space
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_upload(b"c" * 301, "/c.bin")
    err = route_error(e)
    assert err.is_path() and err.get_path().reason.is_insufficient_space()
    # upload session finish: UploadSessionFinishError.path (WriteError)
    s = dbx.files_upload_session_start(b"d" * 301)
    cursor = files.UploadSessionCursor(s.session_id, 301)
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_upload_session_finish(b"", cursor, files.CommitInfo("/d.bin"))
    err = route_error(e)
    assert err.is_path() and err.get_path().is_insufficient_space()
    # finish_batch_v2: the entry fails, on its own
    r = dbx.files_upload_session_finish_batch_v2(
        [files.UploadSessionFinishArg(cursor, files.CommitInfo("/d.bin"))]
    )
    (entry,) = r.entries
    assert entry.is_failure() and entry.get_failure().get_path().is_insufficient_space()
    # copy_v2: RelocationError.insufficient_quota (Dropbox's member for move or copy)
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_copy_v2("/f", "/g")
    assert route_error(e).is_insufficient_quota()
    # restore: RestoreError.path_write (WriteError) insufficient_space
    old = dbx.files_upload(b"e" * 295, "/e.bin")
    dbx.files_upload(b"e" * 10, "/e.bin", mode=files.WriteMode.overwrite)
    dbx.files_upload(b"f" * 250, "/filler.bin")  # 1460 used: the old 295 bytes no longer fit
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_restore("/e.bin", old.rev)
    err = route_error(e)
    assert err.is_path_write() and err.get_path_write().is_insufficient_space()
    dbx.files_delete_v2("/filler.bin")
    # the native commit_batch (the sync client's): the entry fails, nothing else
    body = b"n" * 400
    (res,) = commit(target, acct, [body], [{"path": "/n.bin", "blocks": [[_bid(body), 400]],
                                             "size": 400, "mode": "overwrite"}])  # fmt: skip
    assert res[".tag"] == "failure"
    assert res["failure"] == {".tag": "path", "path": {".tag": "insufficient_space"}}
    # nothing of any refused write is there; what shrinks or moves still works
    assert dbx.users_get_space_usage().used == 1210
    names = {m.name for m in dbx.files_list_folder("", recursive=True).entries}
    assert names == {"f", "a.bin", "b.bin", "e.bin"}
    dbx.files_move_v2("/f", "/moved")
    dbx.files_upload(b"x" * 300, "/e.bin", mode=files.WriteMode.overwrite)  # exactly 1500
    assert dbx.users_get_space_usage().used == 1500
    dbx.files_delete_v2("/moved/a.bin")
    assert dbx.users_get_space_usage().used == 500
    dbx.files_copy_v2("/moved", "/copy")  # fits again
    assert dbx.users_get_space_usage().used == 700
    assert set_quota(target, acct.email, None)["quota_bytes"] is None
    u = dbx.users_get_space_usage()
    assert u.allocation.get_individual().allocated == UNLIMITED_ALLOCATION_BYTES


def test_quota_cli_and_default_quota(up: procs.UpServer, up_target: Target) -> None:
    import subprocess

    acct = up_target.new_account()
    run = subprocess.run(
        [procs.RAFTBOX, "user", "quota", acct.email, "2K", "--data", str(up.data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "quota 2048 bytes" in run.stdout
    assert acct.dbx().users_get_space_usage().allocation.get_individual().allocated == 2048
    bad = subprocess.run(
        [procs.RAFTBOX, "user", "quota", acct.email, "lots", "--data", str(up.data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "a size like" in bad.stderr
    gone = subprocess.run(
        [procs.RAFTBOX, "user", "quota", "nobody@example.test", "1G", "--data", str(up.data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gone.returncode == 1 and "account_not_found" in gone.stderr


def test_quota_on_a_follower_of_the_cluster(
    cluster: procs.ApiCluster, cluster_target: Target
) -> None:
    leader = cluster.leader()
    follower = next(i for i in cluster.members if i != leader) - 1
    acct = cluster_target.new_account("quota", member=follower)
    set_quota(cluster_target, acct.email, 100, member=follower)
    dbx = acct.dbx(follower)
    dbx.files_upload(b"a" * 100, "/a")
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_upload(b"b", "/b")
    assert route_error(e).get_path().reason.is_insufficient_space()
    for i in range(len(cluster.members)):  # every member reads the same replicated counter
        assert acct.dbx(i).users_get_space_usage().used == 100


# -- search ----------------------------------------------------------------------------------


def _names(r: files.SearchV2Result) -> list[str]:
    return [m.metadata.get_metadata().path_display for m in r.matches]


def test_search_v2_by_name_path_status_and_kind(acct: Account) -> None:
    dbx = acct.dbx()
    for p in ("/Docs/Annual Report 2024.pdf", "/Docs/report-2023.txt", "/Photos/report.jpg",
              "/Photos/beach.JPG", "/Reports/notes.md"):  # fmt: skip
        dbx.files_upload(p.encode(), p)
    r = dbx.files_search_v2("REPORT")
    assert _names(r) == [
        "/Docs/Annual Report 2024.pdf",
        "/Docs/report-2023.txt",
        "/Photos/report.jpg",
        "/Reports",
    ]
    assert not r.has_more and r.cursor is None
    m = r.matches[0]
    assert m.match_type.is_filename()
    md = m.metadata.get_metadata()
    assert isinstance(md, files.FileMetadata) and md.size == len(b"/Docs/Annual Report 2024.pdf")
    assert _names(dbx.files_search_v2("report 2024")) == ["/Docs/Annual Report 2024.pdf"]
    opts = files.SearchOptions(path="/docs")
    assert _names(dbx.files_search_v2("report", opts)) == [
        "/Docs/Annual Report 2024.pdf",
        "/Docs/report-2023.txt",
    ]
    opts = files.SearchOptions(file_extensions=["jpg"])
    assert _names(dbx.files_search_v2("e", opts)) == ["/Photos/beach.JPG", "/Photos/report.jpg"]
    opts = files.SearchOptions(file_categories=[files.FileCategory.folder])
    assert _names(dbx.files_search_v2("o", opts)) == ["/Docs", "/Photos", "/Reports"]
    opts = files.SearchOptions(file_categories=[files.FileCategory.pdf,
                                                files.FileCategory.image])  # fmt: skip
    assert _names(dbx.files_search_v2("e", opts)) == [
        "/Docs/Annual Report 2024.pdf",
        "/Photos/beach.JPG",
        "/Photos/report.jpg",
    ]
    dbx.files_delete_v2("/Photos/report.jpg")
    assert "/Photos/report.jpg" not in _names(dbx.files_search_v2("report"))
    opts = files.SearchOptions(file_status=files.FileStatus.deleted)
    r = dbx.files_search_v2("report", opts)
    (m,) = r.matches
    assert isinstance(m.metadata.get_metadata(), files.DeletedMetadata)
    assert m.metadata.get_metadata().path_display == "/Photos/report.jpg"


def test_search_v2_pages_with_a_cursor(acct: Account) -> None:
    dbx = acct.dbx()
    want = []
    for i in range(7):
        p = f"/many/file-{i:02d}.txt"
        dbx.files_upload(b"x", p)
        want.append(p)
    r = dbx.files_search_v2("file", files.SearchOptions(max_results=3))
    got = _names(r)
    pages = 1
    while r.has_more:
        assert len(r.matches) <= 3
        r = dbx.files_search_continue_v2(r.cursor)
        got += _names(r)
        pages += 1
    assert got == want and pages == 3


def test_search_v2_errors(acct: Account, target: Target) -> None:
    dbx = acct.dbx()
    dbx.files_upload(b"x", "/only/file.txt")
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_search_v2("x", files.SearchOptions(path="/missing"))
    err = route_error(e)
    assert err.is_path() and err.get_path().is_not_found()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_search_v2("x", files.SearchOptions(path="/only/file.txt"))
    assert route_error(e).get_path().is_not_folder()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_search_v2("   ")
    assert route_error(e).is_invalid_argument()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_search_continue_v2("bm90IGEgY3Vyc29y")
    assert route_error(e).is_invalid_argument()


# -- temporary links -------------------------------------------------------------------------


def test_temporary_link_streams_with_ranges_and_follows_the_file(
    acct: Account, target: Target
) -> None:
    dbx = acct.dbx()
    body = bytes(range(256)) * 40
    dbx.files_upload(body, "/dir/clip.mp4")
    r = dbx.files_get_temporary_link("/dir/clip.mp4")
    assert r.metadata.path_display == "/dir/clip.mp4" and r.metadata.size == len(body)
    hp = target.hostports[target.default_member]
    assert r.link.startswith(f"https://{hp}/tl/") and r.link.endswith("/clip.mp4")
    got = get(r.link, target.ca)  # no Authorization header: the link is the credential
    assert got.status_code == 200 and got.content == body
    assert got.headers["Content-Type"] == "video/mp4"
    assert got.headers["Content-Disposition"].startswith("attachment")
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "Dropbox-API-Result" not in got.headers  # not the file's full path
    part = get(r.link, target.ca, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == body[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    assert get(r.link, target.ca, headers={"Range": "bytes=999999-"}).status_code == 416
    # a rename keeps the link (same file, same content); an edit ends it
    dbx.files_move_v2("/dir/clip.mp4", "/dir/renamed.mp4")
    assert get(r.link, target.ca).content == body
    dbx.files_upload(b"new", "/dir/renamed.mp4", mode=files.WriteMode.overwrite)
    assert get(r.link, target.ca).status_code == 404
    # a "rev:" path links that revision, whatever becomes of the file
    pinned = dbx.files_get_temporary_link(f"rev:{r.metadata.rev}")
    assert pinned.metadata.rev == r.metadata.rev
    assert get(pinned.link, target.ca).content == body
    # deleted: gone
    r2 = dbx.files_get_temporary_link("/dir/renamed.mp4")
    assert get(r2.link, target.ca).content == b"new"
    dbx.files_delete_v2("/dir/renamed.mp4")
    assert get(r2.link, target.ca).status_code == 404
    # a folder is not a file; a missing path is not found
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_get_temporary_link("/dir")
    assert route_error(e).get_path().is_not_file()
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_get_temporary_link("/nothing")
    assert route_error(e).get_path().is_not_found()


def test_temporary_link_made_on_a_follower_works_on_every_member(
    cluster: procs.ApiCluster, cluster_target: Target
) -> None:
    leader = cluster.leader()
    follower = next(i for i in cluster.members if i != leader) - 1
    acct = cluster_target.new_account("link", member=follower)
    dbx = acct.dbx(follower)
    body = b"linked " * 1000
    dbx.files_upload(body, "/l.txt", autorename=False)
    link = dbx.files_get_temporary_link("/l.txt").link
    for hp in cluster_target.hostports:
        other = link.replace(cluster_target.hostports[follower], hp)
        got = get(other, cluster_target.ca)
        assert got.status_code == 200 and got.content == body, hp
    dbx.files_upload(io.BytesIO(b"changed").read(), "/l.txt", mode=files.WriteMode.overwrite)
    for hp in cluster_target.hostports:  # every member refuses it at once (ReadIndex)
        other = link.replace(cluster_target.hostports[follower], hp)
        assert get(other, cluster_target.ca).status_code == 404, hp
