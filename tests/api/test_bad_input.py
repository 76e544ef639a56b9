"""Bad input gets the right error and changes nothing.

Every case checks the exact answer — HTTP status, and either a 400 plain-text message, a 401
JSON AuthError, or a 409 JSON body with the route's `error` union and its `error_summary` —
and then that the account is exactly as before: the same recursive listing, and no new change
after a cursor taken before the request (`util.assert_unchanged`). Requests the SDK would refuse
to send are made by hand (`Raw`); the rest go through the SDK, whose typed errors are checked.
"""

from __future__ import annotations

import base64
import json
import os

import msgspec
import pytest
from dropbox import exceptions, files

from .sdk import Account, Raw, Target
from .util import MiB, assert_unchanged, snapshot


def seed(acct: Account) -> Account:
    dbx = acct.dbx()
    dbx.files_upload(b"one", "/keep/one.txt")
    dbx.files_upload(b"two", "/keep/sub/two.txt")
    dbx.files_create_folder_v2("/empty")
    return acct


@pytest.fixture
def seeded(acct: Account) -> Account:
    return seed(acct)


@pytest.fixture
def raw(target: Target):
    r = target.http()
    yield r
    r.close()


def expect_400(r, route: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text.startswith(f'Error in call to API function "{route}"'), r.text


def expect_409(r, *tags: str) -> dict:
    """A route error whose union nests `tags` (a struct member's fields flattened)."""
    assert r.status_code == 409, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["error_summary"] == "/".join(tags) + "/..", body
    err = body["error"]
    for tag in tags[:-1]:
        assert err[".tag"] == tag, body
        err = err[tag]
    assert err[".tag"] == tags[-1], body
    return body


def expect_401(r) -> None:
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["error"] == {".tag": "invalid_access_token"}
    assert body["error_summary"].startswith("invalid_access_token/")


# -- unparseable and ill-typed arguments -> 400 text -------------------------------------------

RPC_CASES = [
    ("files/create_folder_v2", b'{"path": "/x"'),  # malformed JSON
    ("files/create_folder_v2", b"\xff\xfe not utf-8"),
    ("files/create_folder_v2", b"[1, 2]"),  # not an object
    ("files/create_folder_v2", b"{}"),  # missing a required field
    ("files/create_folder_v2", b'{"path": 5}'),
    ("files/create_folder_v2", b'{"path": "/x", "autorename": "yes"}'),
    ("files/create_folder_v2", b'{"path": "no-leading-slash"}'),
    ("files/get_metadata", b'{"path": "/keep", "include_deleted": 1}'),
    ("files/list_folder", b'{"path": "/"}'),  # the root is "", not "/"
    ("files/list_folder", b'{"path": "", "recursive": "true"}'),
    ("files/list_folder", b'{"path": "", "limit": 0}'),
    ("files/list_folder", b'{"path": "", "limit": 2001}'),
    ("files/list_folder", b'{"path": "", "limit": 1.5}'),
    ("files/list_folder/continue", b'{"cursor": 12}'),
    ("files/delete_v2", b'{"path": "/keep/one.txt", "parent_rev": "ABCDEF0123"}'),
    ("files/delete_v2", b'{"path": "/keep/one.txt", "parent_rev": "0123"}'),
    ("files/move_v2", b'{"from_path": "/keep", "to_path": ["/x"]}'),
    ("files/copy_v2", b'{"from_path": "/keep"}'),
    ("files/list_revisions", b'{"path": "/keep/one.txt", "limit": 0}'),
    ("files/list_revisions", b'{"path": "/keep/one.txt", "mode": "sideways"}'),
    ("files/restore", b'{"path": "/keep/one.txt", "rev": "xyz"}'),
    ("files/upload_session/finish_batch_v2", b'{"entries": {"a": 1}}'),
    (
        "files/upload_session/finish_batch_v2",
        b'{"entries": [{"cursor": {"session_id": "s", "offset": -1}, "commit": {"path": "/x"}}]}',
    ),
    (
        "files/upload_session/finish_batch_v2",  # over 1000 entries
        json.dumps(
            {
                "entries": [{"cursor": {"session_id": "s", "offset": 0}, "commit": {"path": "/x"}}]
                * 1001
            }
        ).encode(),
    ),
]


@pytest.mark.parametrize(
    "route,body", RPC_CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(RPC_CASES)]
)
def test_bad_rpc_arguments_get_400(seeded: Account, raw: Raw, route: str, body: bytes) -> None:
    dbx = seeded.dbx()
    before = snapshot(dbx)
    expect_400(raw.post(route, token=seeded.token, data=body), route)
    assert_unchanged(dbx, before)


def test_wrong_content_type_gets_400(seeded: Account, raw: Raw) -> None:
    dbx = seeded.dbx()
    before = snapshot(dbx)
    r = raw.post(
        "files/create_folder_v2",
        token=seeded.token,
        data=b'{"path": "/ct"}',
        headers={"Content-Type": "application/xml"},
    )
    expect_400(r, "files/create_folder_v2")
    assert_unchanged(dbx, before)


UPLOAD_ARGS = [
    '{"path": "rev:0123456789abcdef"}',  # rev: is for reading only
    '{"path": "/up.txt"',  # malformed JSON
    '"just a string"',
    '{"mode": "add"}',  # no path
    '{"path": 7}',
    '{"path": "/up.txt", "mode": "sideways"}',
    '{"path": "/up.txt", "mode": {".tag": "update", "update": "nothex"}}',
    '{"path": "/up.txt", "autorename": "no"}',
    '{"path": "/up.txt", "client_modified": "2024-01-01T00:00:00.123Z"}',
    '{"path": "/up.txt", "client_modified": 1700000000}',
    '{"path": "/up.txt", "content_hash": "' + "z" * 64 + '"}',
]


@pytest.mark.parametrize("arg", UPLOAD_ARGS)
def test_bad_upload_arguments_get_400(seeded: Account, raw: Raw, arg: str) -> None:
    dbx = seeded.dbx()
    before = snapshot(dbx)
    expect_400(raw.post("files/upload", token=seeded.token, data=b"body", arg=arg), "files/upload")
    assert_unchanged(dbx, before)


def test_missing_api_arg_and_bad_session_args_get_400(seeded: Account, raw: Raw) -> None:
    dbx = seeded.dbx()
    sid = dbx.files_upload_session_start(b"abc").session_id
    before = snapshot(dbx)
    r = raw.post(
        "files/upload",
        token=seeded.token,
        data=b"x",
        headers={"Content-Type": "application/octet-stream"},
    )
    expect_400(r, "files/upload")
    route = "files/upload_session/append_v2"
    for arg in (
        json.dumps({"cursor": {"session_id": sid, "offset": "3"}}),
        json.dumps({"cursor": {"session_id": sid}}),
        json.dumps({"cursor": sid}),
        json.dumps({"cursor": {"session_id": sid, "offset": 3}, "close": "yes"}),
    ):
        expect_400(raw.post(route, token=seeded.token, data=b"def", arg=arg), route)
    expect_400(
        raw.post(
            "files/upload_session/start",
            token=seeded.token,
            data=b"",
            arg='{"session_type": "parallel"}',
        ),
        "files/upload_session/start",
    )
    expect_400(
        raw.post(
            "files/upload_session/finish",
            token=seeded.token,
            data=b"",
            arg=json.dumps({"cursor": {"session_id": sid, "offset": 3}}),
        ),
        "files/upload_session/finish",
    )
    # the session is untouched: it still expects offset 3
    dbx.files_upload_session_append_v2(b"def", files.UploadSessionCursor(sid, 3))
    assert_unchanged(dbx, before)


# -- malformed paths -> 409 malformed_path ----------------------------------------------------

BAD_PATHS = [
    "/a/../b",
    "/..",
    "/a/./b",
    "//",  # slashes only: "/" once collapsed (raftbox.meta.paths.as_dropbox_parses)
    "/a//",  # a trailing slash once collapsed
    "/trailing/",
    "/ctl\x01char",
    "/new\nline",
    "/del\x7f",
    "/" + "n" * 256,  # a component over 255 bytes
    "/" + "/".join(["d" * 200] * 21),  # over 4096 bytes
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=range(len(BAD_PATHS)))
def test_malformed_paths(seeded: Account, path: str) -> None:
    dbx = seeded.dbx()
    before = snapshot(dbx)
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(b"x", path)
    assert ei.value.error.get_path().reason.is_malformed_path()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_create_folder_v2(path)
    assert ei.value.error.get_path().is_malformed_path()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_get_metadata(path)
    assert ei.value.error.get_path().is_malformed_path()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_move_v2("/keep/one.txt", path)
    assert ei.value.error.get_to().is_malformed_path()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_delete_v2(path)
    assert ei.value.error.get_path_lookup().is_malformed_path()
    assert_unchanged(dbx, before)


def test_malformed_path_raw_answer(seeded: Account, raw: Raw) -> None:
    """The exact JSON of a path error, as rclone reads it (error_summary substrings)."""
    dbx = seeded.dbx()
    before = snapshot(dbx)
    r = raw.post("files/create_folder_v2", token=seeded.token, json_body={"path": "/a/../b"})
    expect_409(r, "path", "malformed_path")
    r = raw.post("files/upload", token=seeded.token, data=b"x", arg='{"path": "/a/../b"}')
    assert r.status_code == 409 and r.headers["Content-Type"] == "application/json"
    body = r.json()  # UploadError.path is the struct UploadWriteFailed{reason, session id}
    assert body["error_summary"].startswith("path/malformed_path/")
    assert body["error"][".tag"] == "path"
    assert body["error"]["reason"] == {".tag": "malformed_path"}
    r = raw.post("files/get_metadata", token=seeded.token, json_body={"path": "/\ud800"})
    expect_409(r, "path", "malformed_path")
    assert_unchanged(dbx, before)


# -- authentication -------------------------------------------------------------------------------


def test_missing_or_wrong_token_gets_401(seeded: Account, raw: Raw, target: Target) -> None:
    dbx = seeded.dbx()
    before = snapshot(dbx)
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + seeded.token[:-1]},
        {"Authorization": "Bearer " + target.admin_token},
    ):
        r = raw.post(
            "files/create_folder_v2", token=None, json_body={"path": "/nope"}, headers=headers
        )
        expect_401(r)
        r = raw.post(
            "files/upload", token=None, data=b"x", arg='{"path": "/nope.txt"}', headers=headers
        )
        expect_401(r)
    bad = target.client("not-a-token")
    with pytest.raises(exceptions.AuthError) as ei:
        bad.files_upload(b"x", "/nope.txt")
    assert ei.value.error.is_invalid_access_token()
    with pytest.raises(exceptions.AuthError):
        bad.users_get_current_account()
    # the admin route takes no user token
    r = raw.post(
        "raftbox/admin/create_account",
        token=seeded.token,
        json_body={"email": "mallory@example.test"},
    )
    expect_401(r)
    assert_unchanged(dbx, before)


# -- other accounts' paths, ids and cursors ----------------------------------------------------


def test_another_accounts_ids_and_cursors(target: Target) -> None:
    alice, bob = target.new_account("alice"), target.new_account("bob")
    da, db = alice.dbx(), bob.dbx()
    f = da.files_upload(b"alice", "/a.txt")
    folder = da.files_create_folder_v2("/dir").metadata
    cursor = da.files_list_folder_get_latest_cursor("", recursive=True).cursor
    sid = da.files_upload_session_start(b"abc").session_id
    before_a, before_b = snapshot(da), snapshot(db)
    for call in (
        lambda: db.files_upload(b"bob", f.id, mode=files.WriteMode.overwrite),
        lambda: db.files_delete_v2(f.id),
        lambda: db.files_move_v2(f.id, "/mine.txt"),
        lambda: db.files_copy_v2(folder.id, "/mine"),
        lambda: db.files_restore("/a.txt", f.rev),
        lambda: db.files_list_folder_continue(cursor),
        lambda: db.files_upload_session_append_v2(b"x", files.UploadSessionCursor(sid, 3)),
        lambda: db.files_upload_session_finish(
            b"", files.UploadSessionCursor(sid, 3), files.CommitInfo("/s.txt")
        ),
    ):
        with pytest.raises(exceptions.ApiError):
            call()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_list_folder_continue(cursor)
    assert ei.value.error.is_reset()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_upload_session_append_v2(b"x", files.UploadSessionCursor(sid, 3))
    assert ei.value.error.is_not_found()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_delete_v2(f.id)
    assert ei.value.error.get_path_lookup().is_not_found()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_upload(b"bob", f.id, mode=files.WriteMode.overwrite)
    assert ei.value.error.is_path()  # UploadWriteFailed (WriteError has no not_found: other)
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_list_folder(f"ns:{da.users_get_current_account().root_info.root_namespace_id}")
    assert ei.value.error.get_path().is_not_found()
    assert_unchanged(da, before_a)
    assert_unchanged(db, before_b)
    # alice's session still works
    m = da.files_upload_session_finish(
        b"", files.UploadSessionCursor(sid, 3), files.CommitInfo("/s.txt")
    )
    assert m.size == 3


def test_forged_cursors_are_reset(seeded: Account, raw: Raw) -> None:
    dbx = seeded.dbx()
    good = dbx.files_list_folder_get_latest_cursor("", recursive=True).cursor
    me = dbx.users_get_current_account()
    ns = int(me.root_info.root_namespace_id)
    body = msgspec.msgpack.encode([me.account_id, ns, ["", True, True, 0, None]])
    forged = base64.urlsafe_b64encode(os.urandom(16) + body).decode().rstrip("=")
    raw_good = base64.urlsafe_b64decode(good + "=" * (-len(good) % 4))
    resigned = base64.urlsafe_b64encode(raw_good[:16] + body).decode().rstrip("=")
    before = snapshot(dbx)
    for cur in (forged, resigned, good[:20], "x", good + "AAAA", "%%%%"):
        r = raw.post("files/list_folder/continue", token=seeded.token, json_body={"cursor": cur})
        expect_409(r, "reset")
    assert_unchanged(dbx, before)


# -- content: hashes and sizes ------------------------------------------------------------------


def test_content_hash_mismatch_changes_nothing(seeded: Account) -> None:
    dbx = seeded.dbx()
    sid = dbx.files_upload_session_start(b"abc").session_id
    before = snapshot(dbx)
    wrong = "0" * 64
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(
            b"new content", "/keep/one.txt", mode=files.WriteMode.overwrite, content_hash=wrong
        )
    assert ei.value.error.is_content_hash_mismatch()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(b"new file", "/new.txt", content_hash=wrong)
    assert ei.value.error.is_content_hash_mismatch()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_start(b"xyz", content_hash=wrong)
    assert ei.value.error.is_content_hash_mismatch()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_append_v2(
            b"def", files.UploadSessionCursor(sid, 3), content_hash=wrong
        )
    assert ei.value.error.is_content_hash_mismatch()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_finish(
            b"def",
            files.UploadSessionCursor(sid, 3),
            files.CommitInfo("/sess.txt"),
            content_hash=wrong,
        )
    assert ei.value.error.is_content_hash_mismatch()
    assert_unchanged(dbx, before)
    # the session did not take the rejected bytes: it still expects offset 3
    m = dbx.files_upload_session_finish(
        b"def", files.UploadSessionCursor(sid, 3), files.CommitInfo("/sess.txt")
    )
    assert m.size == 6


def test_body_over_the_limit(up_target: Target) -> None:
    """An upload body over 150 MiB is refused with payload_too_large; an RPC body over the
    server's limit is refused as bad input (400), not as a server error the SDK would retry.
    (On `raftbox up` only: one target is enough for 150 MiB of traffic.)"""
    seeded = seed(up_target.new_account())
    raw = up_target.http()
    dbx = seeded.dbx()
    before = snapshot(dbx)
    big = bytes(150 * MiB + 1)
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(big, "/huge.bin")
    assert ei.value.error.is_payload_too_large()
    del big
    huge_json = json.dumps({"path": "/x", "pad": "p" * (5 * MiB)}).encode()
    r = raw.post("files/create_folder_v2", token=seeded.token, data=huge_json)
    raw.close()
    expect_400(r, "files/create_folder_v2")
    assert_unchanged(dbx, before)
