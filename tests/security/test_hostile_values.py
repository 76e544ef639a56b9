"""Issue 11, attack 2 (server side): values no client can represent are refused where the API
parses them, and by the state machine, and nothing is stored.

The ranges and their reasons are in `raftbox.meta.values`. Dates: far-future (2263, past
int64 nanoseconds; 9999), far-past (1969, year 1) through `files/upload`, the upload sessions
(`finish`, `finish_batch_v2`) and the native `commit_batch`; the bounds themselves are stored.
Names: NUL and control characters, a lone surrogate, a component over 255 UTF-8 bytes, a path
over 4096 bytes or deeper than `PATH_MAX_DEPTH` → `malformed_path`. Account text: control
characters and lone surrogates in emails and display names → 400.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from raftbox.meta import values
from raftbox.meta.commands import CommitBatch, CommitFile, CreateAccount
from raftbox.meta.paths import PATH_MAX_DEPTH

from .badinput import Server, expect_400, expect_409, expect_malformed_upload

BAD_DATES = [
    "2263-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
]
GOOD_DATES = ["1970-01-01T00:00:00Z", "2199-12-31T23:59:59Z", "2038-01-19T03:14:08Z"]
DEEP = "/" + "/".join(["d"] * (PATH_MAX_DEPTH + 1))
BAD_NAMES = [
    "/nul\x00.txt",
    "/tab\there",
    "/esc\x1b",
    "/del\x7f",
    "/\ud800.txt",
    "/" + "é" * 128,  # 256 UTF-8 bytes in one component
    "/" + "/".join(["d" * 250] * 17),  # over 4096 bytes
    DEEP,
]


# -- pure: the ranges, and the state machine's own check ---------------------------------------


def test_timestamp_range() -> None:
    for s in GOOD_DATES:
        assert values.timestamp_problem(s) is None, s
    for s in [*BAD_DATES, "2024-02-30T00:00:00Z", "2024-01-01T00:00:00.5Z", 1700000000]:
        assert values.timestamp_problem(s) is not None, s
    assert values.clamp_mtime_s(-5) == 0
    assert values.clamp_mtime_s(2**40) == values.CLIENT_MODIFIED_MAX_S


def test_state_machine_refuses_out_of_range_values() -> None:
    from meta.helpers import Driver, block, content_dump, content_hash

    d = Driver()
    ns = d.setup()
    before = content_dump(d.store)
    data = b"abc"

    def commit(path: str, when: str | None = None) -> CommitFile:
        return CommitFile(
            ns, path, [block(data)], 3, content_hash(data), client_modified=when, uploaded=True
        )

    for when in BAD_DATES:
        assert d.apply(commit("/a.txt", when)).tags == ["invalid_command"], when
        r = d.apply(CommitBatch([commit("/b.txt", when)]))
        assert r[0].tags == ["invalid_command"], when
    r = d.apply(commit(DEEP))
    assert r.tags == ["path", "malformed_path"]
    for email, name in (("x\x00@example.test", "X"), ("y@example.test", "Y\x07"), ("z@e", "\x85")):
        assert d.apply(CreateAccount(email, name)).tags == ["invalid_command"]
    assert content_dump(d.store) == before
    for i, when in enumerate(GOOD_DATES):
        assert d.apply(commit(f"/ok{i}.txt", when)).client_modified == when
    ok = "/" + "/".join(["d"] * PATH_MAX_DEPTH)
    assert d.apply(commit(ok)).path_display == ok


# -- through the API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("hostile-values"))
    try:
        s.start()
        s.upload("/keep/one.txt", b"one")
        yield s
    finally:
        s.stop()


def _session(srv: Server, data: bytes = b"abc") -> str:
    r = srv.content("files/upload_session/start", {}, data)
    assert r.status == 200, r.text
    return r.json()["session_id"]


def _blocks_of(srv: Server, path: str) -> list:
    return srv.ok("raftbox/blocks/list", {"path": path})["blocks"]


@pytest.mark.parametrize("when", BAD_DATES)
def test_dates_out_of_range_are_refused(srv: Server, clean: None, when: str) -> None:
    r = srv.content("files/upload", {"path": "/d.txt", "client_modified": when}, b"d")
    expect_400(r, "files/upload")
    sid = _session(srv)
    commit = {"path": "/s.txt", "client_modified": when}
    r = srv.content(
        "files/upload_session/finish",
        {"cursor": {"session_id": sid, "offset": 3}, "commit": commit},
        b"def",
    )
    expect_400(r, "files/upload_session/finish")
    entry = {"cursor": {"session_id": sid, "offset": 3}, "commit": commit}
    r = srv.rpc("files/upload_session/finish_batch_v2", {"entries": [entry]})
    expect_400(r, "files/upload_session/finish_batch_v2")
    blocks = _blocks_of(srv, "/keep/one.txt")
    r = srv.rpc(
        "raftbox/commit_batch",
        {"entries": [{"path": "/c.txt", "blocks": blocks, "client_modified": when}]},
    )
    expect_400(r, "raftbox/commit_batch")
    # the session was not touched: it still ends at offset 3
    r = srv.rpc(
        "files/upload_session/finish_batch_v2",
        {"entries": [{"cursor": {"session_id": sid, "offset": 4}, "commit": {"path": "/s"}}]},
    )
    failure = r.json()["entries"][0]["failure"]
    assert failure["lookup_failed"]["correct_offset"] == 3, r.text


def test_dates_out_of_range_through_the_sdk(srv: Server, clean: None) -> None:
    import datetime as dt

    from dropbox import exceptions, files

    dbx = srv.sdk()
    for when in (dt.datetime(2263, 1, 1), dt.datetime(9999, 12, 31), dt.datetime(1, 1, 1)):
        with pytest.raises(exceptions.BadInputError):
            dbx.files_upload(b"x", "/far.txt", client_modified=when)
        sid = dbx.files_upload_session_start(b"abc").session_id
        with pytest.raises(exceptions.BadInputError):
            dbx.files_upload_session_finish(
                b"",
                files.UploadSessionCursor(sid, 3),
                files.CommitInfo("/s.txt", client_modified=when),
            )


def test_dates_at_the_bounds_are_stored(srv: Server) -> None:
    for i, when in enumerate(GOOD_DATES):
        m = srv.upload(f"/bounds/{i}.txt", b"b", client_modified=when)
        assert m["client_modified"] == when
    sid = _session(srv)
    r = srv.content(
        "files/upload_session/finish",
        {
            "cursor": {"session_id": sid, "offset": 3},
            "commit": {"path": "/bounds/s.txt", "client_modified": GOOD_DATES[1]},
        },
    )
    assert r.status == 200 and r.json()["client_modified"] == GOOD_DATES[1], r.text


@pytest.mark.parametrize("path", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_odd_names_are_malformed_paths(srv: Server, clean: None, path: str) -> None:
    expect_malformed_upload(srv.content("files/upload", {"path": path}, b"x"))
    expect_409(srv.rpc("files/create_folder_v2", {"path": path}), "path", "malformed_path")
    sid = _session(srv)
    r = srv.content(
        "files/upload_session/finish",
        {"cursor": {"session_id": sid, "offset": 3}, "commit": {"path": path}},
        b"def",  # not appended: the path is checked first
    )
    expect_409(r, "path", "malformed_path")
    entry = {"cursor": {"session_id": sid, "offset": 3}, "commit": {"path": path}}
    r = srv.rpc("files/upload_session/finish_batch_v2", {"entries": [entry]})
    assert r.status == 200, r.text
    assert r.json()["entries"][0]["failure"] == {
        ".tag": "path",
        "path": {".tag": "malformed_path"},
    }, r.text
    blocks = _blocks_of(srv, "/keep/one.txt")
    r = srv.rpc("raftbox/commit_batch", {"entries": [{"path": path, "blocks": blocks}]})
    expect_409(r, "path", "malformed_path")
    r = srv.rpc("files/move_v2", {"from_path": "/keep/one.txt", "to_path": path})
    expect_409(r, "to", "malformed_path")


def test_odd_names_through_the_sdk(srv: Server, clean: None) -> None:
    from dropbox import exceptions, files

    dbx = srv.sdk()
    for path in ("/nul\x00.txt", "/\ud800", DEEP):
        with pytest.raises(exceptions.ApiError) as ei:
            dbx.files_upload(b"x", path)
        assert ei.value.error.get_path().reason.is_malformed_path()
        sid = dbx.files_upload_session_start(b"abc").session_id
        with pytest.raises(exceptions.ApiError) as ei:
            dbx.files_upload_session_finish(
                b"", files.UploadSessionCursor(sid, 3), files.CommitInfo(path)
            )
        assert ei.value.error.get_path().is_malformed_path()


BAD_ACCOUNTS = [
    {"email": "ctl\x01@example.test"},
    {"email": "sur\ud800@example.test"},
    {"email": " spaced@example.test"},
    {"email": "a" * 250 + "@example.test"},
    {"email": "no-at-sign"},
    {"email": "ok-1@example.test", "display_name": "bell\x07"},
    {"email": "ok-2@example.test", "display_name": "c1\x85"},
    {"email": "ok-3@example.test", "display_name": "\udfff"},
    {"email": "ok-4@example.test", "display_name": "n" * 1001},
    {"email": "ok-5@example.test", "display_name": 5},
]


@pytest.mark.parametrize("arg", BAD_ACCOUNTS, ids=range(len(BAD_ACCOUNTS)))
def test_odd_account_text_is_refused(srv: Server, arg: dict) -> None:
    mark = srv.log_mark()
    route = "raftbox/admin/create_account"
    r = srv.rpc(route, body=json.dumps(arg).encode(), token=srv.up.admin_token)
    expect_400(r, route)
    email = arg["email"]
    if email.startswith("ok-"):  # the refused request took nothing: the email is still free
        r = srv.rpc(route, {"email": email}, token=srv.up.admin_token)
        assert r.status == 200, r.text
    srv.assert_log_clean(mark)


def test_commit_batch_sizes_and_ints(srv: Server, clean: None) -> None:
    """Native commit_batch: sizes and other integers past any file are a 400."""
    blocks = _blocks_of(srv, "/keep/one.txt")
    for entry in (
        {"path": "/n.txt", "blocks": blocks, "size": 2**64},
        {"path": "/n.txt", "blocks": [[blocks[0][0], 2**70]]},
        {"path": "/n.txt", "blocks": [[blocks[0][0], -1]]},
        {"path": "/n.txt", "blocks": blocks, "content_hash": hashlib.sha256(b"").hexdigest()[:63]},
    ):
        expect_400(srv.rpc("raftbox/commit_batch", {"entries": [entry]}), "raftbox/commit_batch")


def test_a_move_or_copy_cannot_carry_a_subtree_past_the_bounds() -> None:
    """Every entry of a moved or copied folder gets a new path: each within the bounds."""
    from meta.helpers import Driver, content_dump
    from raftbox.meta.commands import Copy, CreateFolder, Move

    d = Driver()
    ns = d.setup()
    deep = "/x" + "/d" * (PATH_MAX_DEPTH - 1)  # PATH_MAX_DEPTH components: the most allowed
    assert d.apply(CreateFolder(ns, deep)).path_display == deep
    assert d.apply(CreateFolder(ns, "/a/b")).path_display == "/a/b"
    long_name = "/y/" + "n" * 255
    for _ in range(14):
        long_name += "/" + "n" * 255
    long_name += "/" + "m" * 150
    assert d.apply(CreateFolder(ns, long_name)).path_display == long_name  # 3,993 bytes
    before = content_dump(d.store)
    for cmd in (
        Move(ns, "/x", "/a/b/x"),
        Copy(ns, "/x", "/a/x"),
        Move(ns, "/y", "/a/" + "z" * 250),
        Copy(ns, "/y", "/a/b/" + "z" * 250),
    ):
        assert d.apply(cmd).tags == ["to", "malformed_path"], cmd
    assert content_dump(d.store) == before
    # moving up (no growth) is fine
    assert d.apply(Move(ns, "/x/d", "/d")).path_display == "/d"
