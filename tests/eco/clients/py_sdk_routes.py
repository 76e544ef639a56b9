"""Every route of the official Python SDK that raftbox serves (or is to serve), one check each.

Run by tests/eco/test_python_sdks.py inside the harness's namespace (api./content./
notify.dropboxapi.com are raftbox) with whichever `dropbox` version is under test (12.x, 11.x):

    python py_sdk_routes.py TOKEN SPARE_TOKEN CA_FILE

Prints one JSON line per check: {"check", "routes", "ok", "error"}. A check calls its routes
the way an application does and asserts what they answer; it never stops the run (the test
decides which checks must pass: those whose routes raftbox serves). SPARE_TOKEN is revoked by
the last check. Written for both SDK generations: only calls present in both (or guarded).
"""

from __future__ import annotations

import json
import sys
import time
import traceback

import dropbox
from dropbox import exceptions, files

CHECKS = []


def check(*routes):
    def register(fn):
        CHECKS.append((fn.__name__, list(routes), fn))
        return fn

    return register


def wait_job(poll, job_id, timeout_s=60.0):
    """Poll an async job's /check until it is no longer in progress."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = poll(job_id)
        if not r.is_in_progress():
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still in progress after {timeout_s} s")
        time.sleep(0.1)


@check("users/get_current_account")
def current_account(dbx, ctx):
    a = dbx.users_get_current_account()
    assert a.account_id.startswith("dbid:"), a.account_id
    assert a.email.endswith("@example.test"), a.email


@check("check/user")
def check_user(dbx, ctx):
    assert dbx.check_user("ping").result == "ping"


@check("files/create_folder_v2", "files/create_folder")
def create_folder(dbx, ctx):
    m = dbx.files_create_folder_v2("/py/dir").metadata
    assert m.path_display == "/py/dir"
    m = dbx.files_create_folder("/py/dir1")  # v1: the FolderMetadata itself
    assert isinstance(m, files.FolderMetadata) and m.path_lower == "/py/dir1", m


@check("files/upload", "files/get_metadata", "files/download")
def upload_download(dbx, ctx):
    m = dbx.files_upload(b"hello raftbox", "/py/a.txt", mode=files.WriteMode.overwrite)
    assert m.size == 13
    got = dbx.files_get_metadata("/py/a.txt")
    assert isinstance(got, files.FileMetadata) and got.rev == m.rev
    md, resp = dbx.files_download("/py/a.txt")
    assert resp.content == b"hello raftbox" and md.content_hash == m.content_hash


@check("files/get_metadata")
def root_remote_paths(dbx, ctx):
    """What rclone sends on a root remote: "//dir" names "/dir"."""
    dbx.files_upload(b"x", "/py/slashes.txt")
    m = dbx.files_get_metadata("//py//slashes.txt")
    assert m.path_display == "/py/slashes.txt", m


@check("files/list_folder", "files/list_folder/continue", "files/list_folder/get_latest_cursor")
def list_folder(dbx, ctx):
    for i in range(3):
        dbx.files_upload(b"%d" % i, f"/py/list/{i}.txt")
    r = dbx.files_list_folder("/py/list", limit=1)
    names = [e.name for e in r.entries]
    while r.has_more:
        r = dbx.files_list_folder_continue(r.cursor)
        names += [e.name for e in r.entries]
    assert sorted(names) == ["0.txt", "1.txt", "2.txt"], names
    cursor = dbx.files_list_folder_get_latest_cursor("/py/list").cursor
    dbx.files_upload(b"3", "/py/list/3.txt")
    r = dbx.files_list_folder_continue(cursor)
    assert [e.name for e in r.entries] == ["3.txt"], r.entries
    ctx["cursor"] = dbx.files_list_folder_get_latest_cursor("/py/list").cursor


@check("files/list_folder/longpoll")
def longpoll(dbx, ctx):
    cursor = dbx.files_list_folder_get_latest_cursor("/py").cursor
    dbx.files_upload(b"poke", "/py/poke.txt")
    r = dbx.files_list_folder_longpoll(cursor, timeout=30)
    assert r.changes is True


@check(
    "files/upload_session/start", "files/upload_session/append_v2", "files/upload_session/finish"
)
def upload_session(dbx, ctx):
    sid = dbx.files_upload_session_start(b"abc").session_id
    dbx.files_upload_session_append_v2(b"def", files.UploadSessionCursor(sid, 3))
    m = dbx.files_upload_session_finish(
        b"gh", files.UploadSessionCursor(sid, 6), files.CommitInfo("/py/session.txt")
    )
    assert m.size == 8
    assert dbx.files_download("/py/session.txt")[1].content == b"abcdefgh"


def _closed_sessions(dbx, bodies):
    entries = []
    for path, body in bodies.items():
        sid = dbx.files_upload_session_start(body, close=True).session_id
        entries.append(
            files.UploadSessionFinishArg(
                files.UploadSessionCursor(sid, len(body)), files.CommitInfo(path)
            )
        )
    return entries


@check("files/upload_session/finish_batch_v2")
def finish_batch_v2(dbx, ctx):
    if not hasattr(dbx, "files_upload_session_finish_batch_v2"):
        return "not in this SDK"
    entries = _closed_sessions(dbx, {"/py/fb2/a": b"a", "/py/fb2/b": b"bb"})
    r = dbx.files_upload_session_finish_batch_v2(entries)
    assert [e.get_success().size for e in r.entries] == [1, 2], r


@check("files/upload_session/finish_batch", "files/upload_session/finish_batch/check")
def finish_batch_v1(dbx, ctx):
    entries = _closed_sessions(dbx, {"/py/fb1/a": b"a", "/py/fb1/b": b"bb"})
    launch = dbx.files_upload_session_finish_batch(entries)
    if launch.is_async_job_id():
        r = wait_job(dbx.files_upload_session_finish_batch_check, launch.get_async_job_id())
        r = r.get_complete()
    else:
        r = launch.get_complete()
    assert [e.get_success().size for e in r.entries] == [1, 2], r


@check("files/copy_v2", "files/move_v2", "files/delete_v2")
def relocate_v2(dbx, ctx):
    dbx.files_upload(b"rel", "/py/rel/a.txt")
    m = dbx.files_copy_v2("/py/rel/a.txt", "/py/rel/b.txt").metadata
    assert m.path_display == "/py/rel/b.txt"
    m = dbx.files_move_v2("/py/rel/b.txt", "/py/rel/c.txt").metadata
    assert m.path_display == "/py/rel/c.txt"
    m = dbx.files_delete_v2("/py/rel/c.txt").metadata
    assert m.path_display == "/py/rel/c.txt"


@check("files/copy", "files/move", "files/delete")
def relocate_v1(dbx, ctx):
    dbx.files_upload(b"v1", "/py/v1/a.txt")
    m = dbx.files_copy("/py/v1/a.txt", "/py/v1/b.txt")  # v1: the Metadata itself
    assert isinstance(m, files.FileMetadata) and m.path_display == "/py/v1/b.txt", m
    m = dbx.files_move("/py/v1/b.txt", "/py/v1/c.txt")
    assert isinstance(m, files.FileMetadata) and m.path_display == "/py/v1/c.txt", m
    m = dbx.files_delete("/py/v1/c.txt")
    assert isinstance(m, files.FileMetadata) and m.path_display == "/py/v1/c.txt", m
    try:
        dbx.files_delete("/py/v1/c.txt")
    except exceptions.ApiError as e:  # the v2 error union, unchanged
        assert e.error.get_path_lookup().is_not_found(), e.error
    else:
        raise AssertionError("deleting a deleted file succeeded")


@check("files/list_revisions", "files/restore")
def revisions(dbx, ctx):
    first = dbx.files_upload(b"one", "/py/rev.txt")
    dbx.files_upload(b"two", "/py/rev.txt", mode=files.WriteMode.overwrite)
    r = dbx.files_list_revisions("/py/rev.txt")
    assert len(r.entries) == 2, r
    dbx.files_restore("/py/rev.txt", first.rev)
    assert dbx.files_download("/py/rev.txt")[1].content == b"one"


@check("users/get_space_usage")
def space_usage(dbx, ctx):
    u = dbx.users_get_space_usage()
    assert u.used >= 0, u


@check("files/search_v2", "files/search/continue_v2")
def search(dbx, ctx):
    for i in range(3):
        dbx.files_upload(b"s", f"/py/search/needle{i}.txt")
    opts = files.SearchOptions(path="/py/search", max_results=2)
    r = dbx.files_search_v2("needle", options=opts)
    found = [m.metadata.get_metadata().name for m in r.matches]
    while r.has_more:
        r = dbx.files_search_continue_v2(r.cursor)
        found += [m.metadata.get_metadata().name for m in r.matches]
    assert sorted(found) == ["needle0.txt", "needle1.txt", "needle2.txt"], found


@check("files/get_temporary_link")
def temporary_link(dbx, ctx):
    import requests

    dbx.files_upload(b"linked", "/py/link.txt")
    r = dbx.files_get_temporary_link("/py/link.txt")
    got = requests.get(r.link, timeout=30)
    assert got.status_code == 200 and got.content == b"linked", (got.status_code, r.link)


@check("files/copy_batch_v2", "files/copy_batch/check_v2", "files/move_batch_v2",
       "files/move_batch/check_v2")  # fmt: skip
def relocation_batches(dbx, ctx):
    dbx.files_upload(b"c", "/py/cb/a.txt")
    arg = [files.RelocationPath("/py/cb/a.txt", "/py/cb/b.txt")]
    launch = dbx.files_copy_batch_v2(arg)
    if launch.is_async_job_id():
        launch = wait_job(dbx.files_copy_batch_check_v2, launch.get_async_job_id())
    assert launch.get_complete().entries[0].is_success(), launch
    launch = dbx.files_move_batch_v2([files.RelocationPath("/py/cb/b.txt", "/py/cb/c.txt")])
    if launch.is_async_job_id():
        launch = wait_job(dbx.files_move_batch_check_v2, launch.get_async_job_id())
    assert launch.get_complete().entries[0].is_success(), launch
    dbx.files_get_metadata("/py/cb/c.txt")


@check("files/delete_batch", "files/delete_batch/check")
def delete_batch(dbx, ctx):
    dbx.files_upload(b"d", "/py/db/a.txt")
    launch = dbx.files_delete_batch([files.DeleteArg("/py/db/a.txt")])
    if launch.is_async_job_id():
        launch = wait_job(dbx.files_delete_batch_check, launch.get_async_job_id())
    assert launch.get_complete().entries[0].is_success(), launch


@check("files/create_folder_batch", "files/create_folder_batch/check")
def create_folder_batch(dbx, ctx):
    launch = dbx.files_create_folder_batch(["/py/cfb/a", "/py/cfb/b"], force_async=True)
    if launch.is_async_job_id():
        launch = wait_job(dbx.files_create_folder_batch_check, launch.get_async_job_id())
    assert [e.is_success() for e in launch.get_complete().entries] == [True, True], launch


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG, grey, made without Pillow (the old SDK's venv has none)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@check("files/get_thumbnail_v2", "files/get_thumbnail_batch")
def thumbnails(dbx, ctx):
    dbx.files_upload(png(300, 200), "/py/pic.png")
    md, resp = dbx.files_get_thumbnail_v2(files.PathOrLink.path("/py/pic.png"))
    assert resp.content[:4] in (b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"\x89PNG"), resp.content[
        :8
    ]
    r = dbx.files_get_thumbnail_batch([files.ThumbnailArg("/py/pic.png")])
    assert r.entries[0].is_success(), r


@check("unknown route")
def unknown_route(dbx, ctx):
    """A route raftbox does not serve: an error the SDK can read (not a JSONDecodeError)."""
    try:
        dbx.file_requests_count()
    except exceptions.BadInputError as e:
        assert "Unknown API function" in str(e.message), e.message
    else:
        raise AssertionError("file_requests/count answered")


@check("auth/token/revoke")
def revoke(dbx, ctx):
    spare = dropbox.Dropbox(ctx["spare_token"], ca_certs=ctx["ca"])
    spare.users_get_current_account()
    spare.auth_token_revoke()
    try:
        spare.users_get_current_account()
    except exceptions.AuthError as e:
        assert e.error.is_invalid_access_token(), e.error
    else:
        raise AssertionError("a revoked token still works")


def main() -> int:
    token, spare, ca = sys.argv[1:4]
    dbx = dropbox.Dropbox(token, ca_certs=ca, max_retries_on_error=0)
    ctx = {"spare_token": spare, "ca": ca}
    for name, routes, fn in CHECKS:
        out = {"check": name, "routes": routes, "ok": True, "error": None}
        try:
            note = fn(dbx, ctx)
            if note:
                out["note"] = note
        except Exception as e:  # report, go on
            out["ok"] = False
            out["error"] = f"{type(e).__name__}: {str(e)[:500]}"
            out["trace"] = traceback.format_exc()[-1500:]
        print(json.dumps(out), flush=True)
    print(json.dumps({"sdk": dropbox.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
