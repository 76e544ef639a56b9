"""What other Dropbox clients send, answered as Dropbox answers it (issue 15).

- Paths with empty components: rclone sends `"//dir"` for every folder of a root remote (its
  backend builds `"/" + "/" + dir`); Dropbox drops the empty components, and so does raftbox
  (`raftbox.meta.paths.as_dropbox_parses`) on every route, while what Dropbox refuses (`"//"`,
  a trailing slash) is still `malformed_path` (tests/api/test_bad_input.py).
- A route this server does not serve: 400 text, which every SDK reads (the Python SDKs raise
  `BadInputError`; a 404 is parsed as a JSON route error, a JSONDecodeError on text).
- `check/user` and the v1 aliases `files/copy|move|delete|create_folder` (`raftbox.api.compat`).
"""

from __future__ import annotations

import pytest
from dropbox import exceptions, files

from .sdk import Account, Target
from .util import assert_unchanged, list_all, snapshot


def test_root_remote_paths_name_what_dropbox_names(acct: Account) -> None:
    dbx = acct.dbx()
    m = dbx.files_create_folder_v2("//photos").metadata
    assert m.path_display == "/photos"
    m = dbx.files_upload(b"jpeg", "//photos//a.jpg")
    assert m.path_display == "/photos/a.jpg"
    r = dbx.files_list_folder("//photos")
    assert [e.path_display for e in r.entries] == ["/photos/a.jpg"]
    assert dbx.files_get_metadata("//photos/a.jpg").id == m.id
    assert dbx.files_download(f"ns:{_ns(dbx)}//photos/a.jpg")[1].content == b"jpeg"
    dbx.files_copy_v2("//photos/a.jpg", "//photos//b.jpg")
    dbx.files_move_v2("/photos//b.jpg", "//photos/c.jpg")
    sid = dbx.files_upload_session_start(b"sess").session_id
    dbx.files_upload_session_finish(
        b"", files.UploadSessionCursor(sid, 4), files.CommitInfo("//photos//d.jpg")
    )
    dbx.files_delete_v2("//photos/a.jpg")
    assert sorted(e.path_display for e in list_all(dbx, "", recursive=True)) == [
        "/photos",
        "/photos/c.jpg",
        "/photos/d.jpg",
    ]


def _ns(dbx) -> str:
    return dbx.users_get_current_account().root_info.root_namespace_id


def test_unknown_route_is_a_400_every_sdk_reads(acct: Account, target: Target) -> None:
    dbx = acct.dbx()
    with pytest.raises(exceptions.BadInputError) as ei:
        dbx.file_requests_count()  # a route raftbox does not serve
    assert "Unknown API function: /2/file_requests/count" in ei.value.message
    raw = target.http()
    try:
        for token in (acct.token, None):
            r = raw.post("no/such/route", token=token, json_body={})
            assert r.status_code == 400, (r.status_code, r.text)
            assert r.headers["Content-Type"].startswith("text/plain")
            assert r.text == (
                'Error in call to API function "no/such/route": '
                "Unknown API function: /2/no/such/route"
            )
        r = raw.post("x" * 100_000, token=acct.token, json_body={})  # quoted, not echoed whole
        assert r.status_code in (400, 414) and len(r.content) < 5000, (
            r.status_code,
            len(r.content),
        )
    finally:
        raw.s.close()


def test_check_user_echoes_the_query(acct: Account) -> None:
    dbx = acct.dbx()
    assert dbx.check_user("ping").result == "ping"
    assert dbx.check_user().result == ""


def test_v1_file_routes_answer_the_metadata_itself(acct: Account) -> None:
    dbx = acct.dbx()
    folder = dbx.files_create_folder("/v1")
    assert isinstance(folder, files.FolderMetadata) and folder.path_display == "/v1"
    dbx.files_upload(b"one", "/v1/a.txt")
    m = dbx.files_copy("/v1/a.txt", "/v1/b.txt")
    assert isinstance(m, files.FileMetadata) and m.path_display == "/v1/b.txt"
    m = dbx.files_move("/v1/b.txt", "/v1/c.txt", autorename=True)
    assert isinstance(m, files.FileMetadata) and m.path_display == "/v1/c.txt"
    m = dbx.files_delete("/v1/c.txt")
    assert isinstance(m, files.FileMetadata) and m.path_display == "/v1/c.txt"
    gone = dbx.files_delete("/v1")
    assert isinstance(gone, files.FolderMetadata)
    assert list_all(dbx, "") == []


def test_v1_file_routes_keep_the_v2_errors(acct: Account) -> None:
    dbx = acct.dbx()
    dbx.files_upload(b"one", "/taken.txt")
    before = snapshot(dbx)
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_create_folder("/taken.txt")
    assert ei.value.error.get_path().get_conflict().is_file()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_copy("/missing", "/x")
    assert ei.value.error.get_from_lookup().is_not_found()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_move("/taken.txt", "/taken.txt/x")
    assert ei.value.error.is_to(), ei.value.error
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_delete("/missing")
    assert ei.value.error.get_path_lookup().is_not_found()
    assert_unchanged(dbx, before)
