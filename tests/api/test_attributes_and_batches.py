"""What the sync client needs of the server, against real processes (`raftbox up` and the
3-member cluster): symlinks and the executable bit through the native `commit_batch` and back
out through the Dropbox routes and the official SDK; the batch form of `blocks/list`; and
`upload_session/finish_batch_v2` as one proposal whose entries succeed or fail on their own."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from typing import Any

import pytest
from dropbox import files

from raftbox.blocks.native import NativeClient, NativeError

from .sdk import Account, Raw, Target
from .util import assert_unchanged, snapshot


def _client(t: Target, acct: Account) -> NativeClient:
    ctx = ssl.create_default_context(cafile=t.ca)
    return NativeClient(f"https://{t.hostports[t.default_member]}", acct.token, ssl_context=ctx)


def _bid(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def entry(path: str, body: bytes, **kw: Any) -> dict:
    """A native commit_batch entry of `body` as one block (the block must have been put)."""
    return {
        "path": path,
        "blocks": [[_bid(body), len(body)]] if body else [],
        "size": len(body),
        "mode": "overwrite",
        **kw,
    }


def link_entry(path: str, target: str, **kw: Any) -> dict:
    return entry(path, target.encode(), symlink_target=target, **kw)


def commit(t: Target, acct: Account, blocks: list[bytes], entries: list[dict]) -> list[dict]:
    async def main() -> list[dict]:
        async with _client(t, acct) as nc:
            await nc.put([(_bid(b), b) for b in blocks if b])
            return await nc.commit_batch(entries)

    return asyncio.run(main())


def raw_meta(raw: Raw, acct: Account, path: str) -> dict:
    r = raw.post("files/get_metadata", token=acct.token, json_body={"path": path})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def raw(target: Target):
    r = target.http()
    yield r
    r.close()


# -- symlinks and the executable bit -----------------------------------------------------------


def test_symlinks_and_executables_round_trip_through_every_route(
    acct: Account, target: Target, raw: Raw
) -> None:
    script, target_text = b"#!/bin/sh\necho hi\n", "../lib/libc.so.\u20ac"
    out = commit(
        target,
        acct,
        [script, target_text.encode(), b"plain"],
        [
            entry("/attrs/run.sh", script, executable=True),
            link_entry("/attrs/libc", target_text),
            entry("/attrs/plain.txt", b"plain", executable=False),
        ],
    )
    assert [e[".tag"] for e in out] == ["success"] * 3, out
    run, lnk, plain = out
    assert run["executable"] is True and "symlink_info" not in run
    assert lnk["symlink_info"] == {"target": target_text} and "executable" not in lnk
    assert lnk["size"] == len(target_text.encode())
    assert "executable" not in plain and "symlink_info" not in plain

    # the Dropbox JSON: the extension field only when true, symlink_info as Dropbox has it
    r = raw.post("files/list_folder", token=acct.token, json_body={"path": "/attrs"})
    listed = {e["name"]: e for e in r.json()["entries"]}
    assert listed["run.sh"]["executable"] is True and listed["run.sh"][".tag"] == "file"
    assert listed["libc"]["symlink_info"] == {"target": target_text}
    assert "executable" not in listed["plain.txt"] and "symlink_info" not in listed["plain.txt"]

    # the official SDK parses all of it (unknown fields ignored, symlink_info typed)
    dbx = acct.dbx()
    by_name = {e.name: e for e in dbx.files_list_folder("/attrs").entries}
    assert isinstance(by_name["libc"], files.FileMetadata)
    assert by_name["libc"].symlink_info.target == target_text
    assert by_name["run.sh"].symlink_info is None and by_name["run.sh"].size == len(script)
    assert dbx.files_get_metadata("/attrs/libc").symlink_info.target == target_text
    meta, resp = dbx.files_download("/attrs/libc")  # the metadata comes in a header here
    with resp:
        assert resp.content == target_text.encode()  # a symlink's content is its target
    assert meta.symlink_info.target == target_text
    revs = dbx.files_list_revisions("/attrs/libc").entries
    assert revs[0].symlink_info.target == target_text
    r = raw.post("files/download", token=acct.token, arg='{"path": "/attrs/run.sh"}')
    assert json.loads(r.headers["Dropbox-API-Result"])["executable"] is True

    # copy and move keep the attributes
    dbx.files_copy_v2("/attrs/run.sh", "/copied/run.sh")
    dbx.files_move_v2("/attrs/libc", "/moved/libc")
    assert raw_meta(raw, acct, "/copied/run.sh")["executable"] is True
    assert raw_meta(raw, acct, "/moved/libc")["symlink_info"] == {"target": target_text}


def test_dropbox_route_writes_keep_the_executable_bit_and_never_make_a_symlink(
    acct: Account, target: Target, raw: Raw
) -> None:
    commit(
        target,
        acct,
        [b"v1", b"t"],
        [entry("/x/run", b"v1", executable=True), link_entry("/x/link", "t")],
    )
    dbx = acct.dbx()
    m = dbx.files_upload(b"v2", "/x/run", mode=files.WriteMode.overwrite)
    assert raw_meta(raw, acct, "/x/run")["executable"] is True
    dbx.files_upload(b"v3", "/x/run", mode=files.WriteMode.update(m.rev))
    assert raw_meta(raw, acct, "/x/run")["executable"] is True
    sid = dbx.files_upload_session_start(b"v4").session_id
    dbx.files_upload_session_finish(
        b"",
        files.UploadSessionCursor(sid, 2),
        files.CommitInfo("/x/run", files.WriteMode.overwrite),
    )
    after = raw_meta(raw, acct, "/x/run")
    assert after["executable"] is True and after["size"] == 2
    _, resp = dbx.files_download("/x/run")
    assert resp.content == b"v4"
    # a conflict renamed away is a new file; a new file through the SDK is plain
    c = dbx.files_upload(b"v5", "/x/run", autorename=True)
    assert "executable" not in raw_meta(raw, acct, c.path_display)
    # an SDK write over a symlink makes a regular file of the bytes
    dbx.files_upload(b"t", "/x/link", mode=files.WriteMode.overwrite)
    assert dbx.files_get_metadata("/x/link").symlink_info is None
    # the native route states the bit in full: absent is off
    commit(target, acct, [b"v6"], [entry("/x/run", b"v6")])
    assert "executable" not in raw_meta(raw, acct, "/x/run")


BAD_ENTRIES = {
    "symlink_target not a string": link_entry("/bad/l", "t") | {"symlink_target": 5},
    "executable not a boolean": entry("/bad/x", b"x") | {"executable": "yes"},
    "empty target": entry("/bad/l", b"") | {"symlink_target": ""},
    "NUL in the target": link_entry("/bad/l", "a\x00b"),
    "target over 4096 bytes": link_entry("/bad/l", "a" * 4097),
    "blocks not the target's": entry("/bad/l", b"x", symlink_target="y"),
    "a target longer than the blocks": entry("/bad/l", b"x", symlink_target="xx"),
    "an executable symlink": link_entry("/bad/l", "t", executable=True),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_a_bad_attribute_fails_the_request_and_changes_nothing(
    acct: Account, target: Target, raw: Raw, case: str
) -> None:
    blocks = [b"ok", b"x", b"t", b"a\x00b", b"a" * 4097]
    commit(target, acct, blocks, [entry("/bad/ok", b"ok")])
    before = snapshot(acct.dbx())
    body = {"entries": [entry("/bad/new", b"ok"), BAD_ENTRIES[case]]}
    r = raw.post("raftbox/commit_batch", token=acct.token, json_body=body)
    assert r.status_code == 400, r.text
    assert r.text.startswith('Error in call to API function "raftbox/commit_batch"'), r.text
    assert_unchanged(acct.dbx(), before)


# -- blocks/list, batch form ----------------------------------------------------------------


def test_batch_blocks_list_answers_each_path_in_order_for_this_namespace_only(
    target: Target,
) -> None:
    a, b = target.new_account("bl-a"), target.new_account("bl-b")
    da, db = a.dbx(), b.dbx()
    one = da.files_upload(b"one", "/bl/one.txt")
    da.files_create_folder_v2("/bl/dir")
    commit(target, a, [b"one.txt"], [link_entry("/bl/link", "one.txt")])
    theirs = db.files_upload(b"theirs", "/theirs.txt")
    a_ns = da.users_get_current_account().root_info.home_namespace_id
    b_ns = db.users_get_current_account().root_info.home_namespace_id
    paths = [
        "/bl/one.txt",
        "/bl/missing",
        one.id,
        "/bl/dir",
        "rev:" + one.rev,
        f"ns:{b_ns}/theirs.txt",
        theirs.id,
        "rev:" + theirs.rev,
        f"ns:{a_ns}/bl/one.txt",
        "/bl/link",
    ]
    raw = target.http()
    try:
        r = raw.post("raftbox/blocks/list", token=a.token, json_body={"paths": paths})
        assert r.status_code == 200, r.text
        entries = r.json()["entries"]
        errors = {i: e["error"] for i, e in enumerate(entries) if "error" in e}
        nf = {".tag": "not_found"}
        assert errors == {1: nf, 3: {".tag": "not_file"}, 5: nf, 6: nf, 7: nf}
        for i in (0, 2, 4, 8):
            assert entries[i]["metadata"]["id"] == one.id
            assert entries[i]["blocks"] == [[_bid(b"one"), 3]]
        assert entries[9]["metadata"]["symlink_info"] == {"target": "one.txt"}
        # what the request may not be
        too_many = {"paths": ["/bl/one.txt"] * 1001}
        for bad in (
            too_many,
            {"paths": "/bl/one.txt"},
            {"paths": [1]},
            {"paths": ["bl/x"]},
            {"paths": ["/bl/one.txt"], "path": "/bl/one.txt"},
        ):
            r = raw.post("raftbox/blocks/list", token=a.token, json_body=bad)
            assert r.status_code == 400, (bad, r.text)
        r = raw.post("raftbox/blocks/list", token=a.token, json_body={"paths": []})
        assert r.status_code == 200 and r.json() == {"entries": []}
    finally:
        raw.close()

    async def main() -> None:
        async with _client(target, a) as nc:
            got = await nc.blocks_of_many(paths)
            assert [g is None for g in got] == ["error" in e for e in entries]
            assert got[0] == (entries[0]["metadata"], [(_bid(b"one"), 3)])
            # more than one request's worth, in order
            many = await nc.blocks_of_many(["/bl/one.txt", "/bl/missing"] * 600)
            assert len(many) == 1200 and many[::2] == [got[0]] * 600
            assert many[1::2] == [None] * 600
            assert await nc.blocks_of_many([]) == []
            assert await nc.blocks_of("/bl/one.txt") == got[0]  # the single form still works
            with pytest.raises(NativeError) as ei:
                await nc.blocks_of("/bl/missing")
            assert ei.value.status == 409

    asyncio.run(main())


# -- upload_session/finish_batch_v2 -----------------------------------------------------------


def _sessions(dbx, bodies: list[bytes]) -> list[str]:
    return [dbx.files_upload_session_start(b, close=True).session_id for b in bodies]


def _finish(sid: str, offset: int, path: str) -> files.UploadSessionFinishArg:
    return files.UploadSessionFinishArg(
        files.UploadSessionCursor(sid, offset), files.CommitInfo(path)
    )


def test_finish_batch_v2_is_one_proposal_whose_entries_fail_on_their_own(acct: Account) -> None:
    dbx = acct.dbx()
    dbx.files_upload(b"already here", "/fb/taken.txt")
    sa, staken, sbad, sc = _sessions(dbx, [b"aaa", b"other", b"four", b"cc"])
    r = dbx.files_upload_session_finish_batch_v2(
        [
            _finish(sa, 3, "/fb/a.txt"),
            _finish(staken, 5, "/fb/taken.txt"),  # add mode onto a file: conflict
            _finish(sbad, 1, "/fb/bad.txt"),  # the wrong offset
            _finish(sc, 2, "/fb/c.txt"),
        ]
    )
    a, taken, bad, c = r.entries
    assert a.is_success() and c.is_success()
    # one raft entry: revs are f"{raft index:012x}{position in the entry:04x}"
    ra, rc = a.get_success().rev, c.get_success().rev
    assert ra[:12] == rc[:12] and ra != rc
    assert taken.get_failure().get_path().get_conflict().is_file()
    assert bad.get_failure().get_lookup_failed().get_incorrect_offset().correct_offset == 4
    _, resp = dbx.files_download("/fb/taken.txt")
    assert resp.content == b"already here"
    # the failed entries changed nothing: their sessions finish now
    m = dbx.files_upload_session_finish(
        b"", files.UploadSessionCursor(sbad, 4), files.CommitInfo("/fb/bad.txt")
    )
    assert m.size == 4
    again = dbx.files_upload_session_finish_batch_v2([_finish(staken, 5, "/fb/other.txt")])
    assert again.entries[0].is_success()


def test_finish_batch_v2_with_a_malformed_entry_changes_nothing(acct: Account, raw: Raw) -> None:
    dbx = acct.dbx()
    sa, sb, sc = _sessions(dbx, [b"a", b"b", b"c"])
    before = snapshot(dbx)

    def arg(sid: str, path: str, **commit: Any) -> dict:
        return {"cursor": {"session_id": sid, "offset": 1}, "commit": {"path": path, **commit}}

    for middle in (
        {"cursor": {"session_id": sb, "offset": "one"}, "commit": {"path": "/m/b"}},
        arg(sb, "/m/b", mode="sideways"),
        arg(sb, "/m/b", client_modified="yesterday"),
        arg(sb, "m/b"),
        arg(sb, "/m/b", autorename="yes"),
        {"cursor": {"session_id": sb, "offset": 1}},
    ):
        body = {"entries": [arg(sa, "/m/a"), middle, arg(sc, "/m/c")]}
        r = raw.post("files/upload_session/finish_batch_v2", token=acct.token, json_body=body)
        assert r.status_code == 400, (middle, r.text)
        assert_unchanged(dbx, before)
    r = dbx.files_upload_session_finish_batch_v2(
        [_finish(sa, 1, "/m/a"), _finish(sb, 1, "/m/b"), _finish(sc, 1, "/m/c")]
    )
    assert all(e.is_success() for e in r.entries)
    assert len({e.get_success().rev[:12] for e in r.entries}) == 1
