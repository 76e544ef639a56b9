"""Symlinks and the executable bit: stored per revision, carried by every command that makes a
revision out of another, kept by the Dropbox routes' writes, deterministic, migrated; and the
batch blocklist query (`file_blocks_many`)."""

import sqlite3

import msgspec
import pytest

from raftbox.meta.commands import (
    MAX_SYMLINK_TARGET_BYTES,
    BlockRef,
    CommitBatch,
    CommitFile,
    Copy,
    CreateAccount,
    CreateFolder,
    FileMeta,
    FinishBatch,
    MetaError,
    Move,
    Restore,
    SessionFinish,
    SessionStart,
    decode_command,
    decode_result,
    encode_command,
)
from raftbox.meta.fsm import MetaStore

from .helpers import Driver, block, content_dump, content_hash


@pytest.fixture
def d():
    return Driver()


@pytest.fixture
def ns(d):
    return d.setup()


def link(ns: int, path: str, target: str, **kw) -> CommitFile:
    """A symlink commit whose blocks are its target's bytes (one block)."""
    raw = target.encode()
    kw.setdefault("uploaded", True)
    return CommitFile(
        ns, path, [block(raw)], len(raw), content_hash(raw), symlink_target=target, **kw
    )


def attrs(m) -> tuple:
    return (m.symlink_target, m.executable)


def current(d: Driver, ns: int, path: str) -> FileMeta:
    m = d.store.get_metadata(ns, path)
    assert isinstance(m, FileMeta), m
    return m


# -- storing and showing the attributes -------------------------------------------------------


def test_a_symlink_and_an_executable_file_are_stored_and_shown_everywhere(d, ns):
    s = d.apply(link(ns, "/bin/python", "python3.11"))
    x = d.put(ns, "/bin/run.sh", b"#!/bin/sh\n", executable=True)
    p = d.put(ns, "/bin/plain", b"data")
    assert attrs(s) == ("python3.11", False) and s.size == len(b"python3.11")
    assert attrs(x) == (None, True) and attrs(p) == (None, False)
    for m in (s, x, p):
        assert current(d, ns, m.path_display) == m
        assert d.store.get_metadata(ns, m.id) == m
        meta, blocks = d.store.file_blocks(ns, m.path_display)
        assert meta == m
        assert attrs(d.store.file_blocks(ns, "rev:" + m.rev)[0]) == attrs(m)
        assert attrs(d.store.list_revisions(ns, m.path_display).entries[0]) == attrs(m)
    assert d.store.file_blocks(ns, "/bin/python")[1] == [block(b"python3.11")]
    listed = {e.path_display: attrs(e) for e in d.store.list_folder(ns, "/bin").entries}
    assert listed == {
        "/bin/python": ("python3.11", False),
        "/bin/run.sh": (None, True),
        "/bin/plain": (None, False),
    }
    cursor = d.store.get_latest_cursor(ns, "", recursive=True)
    d.apply(link(ns, "/bin/python", "python3.12", mode="overwrite"))
    changes = d.store.list_folder_continue(ns, cursor).entries
    assert [attrs(e) for e in changes] == [("python3.12", False)]


def test_a_multibyte_target_is_counted_in_utf8_bytes_and_4096_bytes_is_the_limit(d, ns):
    m = d.apply(link(ns, "/l", "caf\u00e9/\u20ac"))
    assert m.size == len("caf\u00e9/\u20ac".encode()) == 9
    longest = "a" * MAX_SYMLINK_TARGET_BYTES
    assert attrs(d.apply(link(ns, "/long", longest))) == (longest, False)


def test_a_symlink_may_be_cut_into_several_blocks_of_its_target(d, ns):
    raw = b"../some/where/else"
    blocks = [block(raw[:5]), block(raw[5:])]
    m = d.apply(
        CommitFile(
            ns,
            "/l",
            blocks,
            len(raw),
            content_hash(raw),
            uploaded=True,
            symlink_target=raw.decode(),
        )
    )
    assert attrs(m) == ("../some/where/else", False)


def _bad_links(ns: int) -> dict[str, CommitFile]:
    raw = b"target"
    ok = link(ns, "/bad", "target")
    r = msgspec.structs.replace
    return {
        "empty": r(ok, symlink_target="", blocks=[], size=0, content_hash=content_hash(b"")),
        "NUL": link(ns, "/bad", "a\x00b"),
        "too long": link(ns, "/bad", "a" * (MAX_SYMLINK_TARGET_BYTES + 1)),
        "blocks of other bytes": r(ok, blocks=[block(b"tarxet")]),
        "size and blocks of fewer bytes": r(ok, blocks=[block(raw[:3])], size=3),
        "blocks of more bytes": r(ok, blocks=[block(raw), BlockRef(block(b"x").id, 1)], size=7),
        "content_hash": r(ok, content_hash=content_hash(b"other")),
        "executable": r(ok, executable=True),
    }


@pytest.mark.parametrize("case", list(_bad_links(0)))
def test_a_bad_symlink_is_refused_and_changes_nothing(d, ns, case):
    d.put(ns, "/bad", b"was here")
    before = content_dump(d.store)
    r = d.apply(_bad_links(ns)[case])
    assert isinstance(r, MetaError) and r.tags == ["invalid_command"], r
    assert content_dump(d.store) == before
    # in a batch: that entry fails alone
    out = d.apply(CommitBatch([link(ns, "/good", "t"), _bad_links(ns)[case]]))
    assert isinstance(out[0], FileMeta) and out[1].tags == ["invalid_command"]


# -- which writes change what ------------------------------------------------------------------


def test_same_content_with_other_attributes_is_a_new_revision(d, ns):
    m1 = d.put(ns, "/f", b"#!/bin/sh\n")
    same = d.put(ns, "/f", b"#!/bin/sh\n", mode="overwrite")
    assert same == m1  # identical content and attributes: nothing written
    m2 = d.put(ns, "/f", b"#!/bin/sh\n", mode="overwrite", executable=True)  # chmod +x
    assert m2.rev != m1.rev and m2.id == m1.id and m2.executable
    m3 = d.put(ns, "/f", b"#!/bin/sh\n", mode="update", update_rev=m2.rev)
    assert m3.rev != m2.rev and not m3.executable  # a native write states the bit: chmod -x
    # the file's bytes as a symlink's target: the same content, another kind
    m4 = d.apply(link(ns, "/f", "#!/bin/sh\n", mode="overwrite"))
    assert m4.rev != m3.rev and m4.content_hash == m3.content_hash
    assert attrs(m4) == ("#!/bin/sh\n", False)


def test_update_with_a_stale_rev_conflicts_when_only_the_attributes_differ(d, ns):
    m1 = d.put(ns, "/f", b"x")
    d.put(ns, "/f", b"y", mode="overwrite")
    r = d.put(ns, "/f", b"y", mode="update", update_rev=m1.rev, executable=True)
    assert r == MetaError(["path", "conflict", "file"])
    assert not current(d, ns, "/f").executable


def test_keep_executable_keeps_the_bit_of_the_file_it_replaces(d, ns):
    x = d.put(ns, "/x.sh", b"v1", executable=True)
    # the Dropbox routes: overwrite and update keep the bit, identical content is a no-op
    assert d.put(ns, "/x.sh", b"v1", mode="overwrite", keep_executable=True) == x
    o = d.put(ns, "/x.sh", b"v2", mode="overwrite", keep_executable=True)
    assert o.rev != x.rev and o.executable and o.id == x.id
    u = d.put(ns, "/x.sh", b"v3", mode="update", update_rev=o.rev, keep_executable=True)
    assert u.executable
    # a conflict renamed away is a new file: nothing to keep
    c = d.put(
        ns, "/x.sh", b"v4", mode="update", update_rev=x.rev, autorename=True, keep_executable=True
    )
    assert c.path_display != "/x.sh" and not c.executable
    a = d.put(ns, "/x.sh", b"v5", autorename=True, keep_executable=True)  # add mode
    assert a.path_display == "/x (1).sh" and not a.executable
    # a plain file stays plain, a symlink is never inherited (nor is its "bit")
    assert not d.put(ns, "/p", b"1").executable
    assert not d.put(ns, "/p", b"2", mode="overwrite", keep_executable=True).executable
    d.apply(link(ns, "/l", "t"))
    w = d.put(ns, "/l", b"t", mode="overwrite", keep_executable=True)
    assert attrs(w) == (None, False)
    # a deleted file's bit is gone with it
    from raftbox.meta.commands import Delete

    d.apply(Delete(ns, "/x.sh"))
    assert not d.put(ns, "/x.sh", b"v6", keep_executable=True).executable


def test_sessions_keep_the_bit_too(d, ns):
    d.put(ns, "/s.sh", b"old", executable=True)
    d.apply(SessionStart("a", ns, blocks=[block(b"new")], length=3, close=True))
    d.apply(SessionStart("b", ns, blocks=[block(b"two")], length=3, close=True))
    commit = CommitFile(
        ns, "/s.sh", [], 3, content_hash(b"new"), mode="overwrite", keep_executable=True
    )
    out = d.apply(
        FinishBatch(
            [
                SessionFinish("a", ns, 3, commit),
                SessionFinish(
                    "b",
                    ns,
                    3,
                    msgspec.structs.replace(
                        commit, path="/t.sh", content_hash=content_hash(b"two")
                    ),
                ),
            ]
        )
    )
    assert [attrs(m) for m in out] == [(None, True), (None, False)]
    assert d.store.file_blocks(ns, "/s.sh")[1] == [block(b"new")]


def test_copy_move_and_restore_carry_the_attributes(d, ns):
    d.apply(link(ns, "/dir/l", "../t"))
    x1 = d.put(ns, "/dir/x", b"v1", executable=True)
    x2 = d.put(ns, "/dir/x", b"v2", mode="overwrite")  # chmod -x and an edit
    assert not x2.executable
    c = d.apply(Copy(ns, "/dir", "/copy"))
    assert c.kind == "folder"
    assert attrs(current(d, ns, "/copy/l")) == ("../t", False)
    assert current(d, ns, "/copy/l").id != current(d, ns, "/dir/l").id
    one = d.apply(Copy(ns, "/dir/l", "/one-link"))
    assert attrs(one) == ("../t", False)
    d.apply(Move(ns, "/dir", "/moved"))
    moved = current(d, ns, "/moved/l")
    assert attrs(moved) == ("../t", False) and d.store.file_blocks(ns, moved.id)[1] == [
        block(b"../t")
    ]
    # restore the executable first version: the bit comes back with its bytes
    r = d.apply(Restore(ns, "/moved/x", x1.rev))
    assert r.rev not in (x1.rev, x2.rev) and attrs(r) == (None, True)
    assert d.store.file_blocks(ns, "/moved/x")[1] == [block(b"v1")]
    revs = d.store.list_revisions(ns, "/moved/x", mode="id").entries
    assert [m.executable for m in revs][:3] == [True, False, False]  # restored, moved, v2


def test_commit_batch_entries_carry_their_own_attributes(d, ns):
    out = d.apply(
        CommitBatch(
            [
                link(ns, "/b/l", "x"),
                CommitFile(
                    ns, "/b/x", [block(b"x")], 1, content_hash(b"x"), uploaded=True, executable=True
                ),
                CommitFile(ns, "/b/p", [block(b"p")], 1, content_hash(b"p"), uploaded=True),
            ]
        )
    )
    assert [attrs(m) for m in out] == [("x", False), (None, True), (None, False)]


# -- compatibility, determinism, snapshots, migration ------------------------------------------


def test_commands_and_results_encoded_before_the_attributes_still_decode(d, ns):
    full = CommitFile(ns, "/old", [block(b"o")], 1, content_hash(b"o"), uploaded=True)
    fields = msgspec.msgpack.decode(encode_command(full))
    old = msgspec.msgpack.encode(fields[:-3])  # the 13-field array of the previous version
    cmd = decode_command(old)
    assert cmd == full and (cmd.symlink_target, cmd.executable, cmd.keep_executable) == (
        None,
        False,
        False,
    )
    m = d.apply(cmd)
    as_dict = msgspec.to_builtins(m)
    del as_dict["symlink_target"], as_dict["executable"]
    assert decode_result(as_dict) == m  # a result remembered by the exactly-once table


def _workload(d: Driver) -> int:
    ns = d.setup()
    d.apply(link(ns, "/a/l", "../x"))
    d.put(ns, "/a/x", b"1", executable=True)
    d.put(ns, "/a/x", b"2", mode="overwrite", keep_executable=True)
    d.apply(Copy(ns, "/a", "/c"))
    d.apply(Move(ns, "/c/l", "/l2"))
    d.apply(CommitBatch([link(ns, f"/many/{i}", f"t{i}") for i in range(5)]))
    d.apply(Restore(ns, "/a/x", current(d, ns, "/a/x").rev))
    return ns


def test_replicas_applying_the_same_log_are_identical(tmp_path):
    a = Driver(MetaStore())
    _workload(a)
    b = MetaStore(str(tmp_path / "b.db"))
    for index, c in a.log:
        b.apply(index, c)
    assert a.store.dump() == b.dump()
    rows = a.store.dump(["revisions"])["revisions"]
    assert {(r[-2], r[-1]) for r in rows} >= {("../x", 0), (None, 1), ("t3", 0)}
    c = MetaStore()
    for index, cmd in a.log:
        c.apply(index, cmd)
    assert c.snapshot() == a.store.snapshot()


def test_a_snapshot_carries_the_attributes(tmp_path):
    a = Driver(MetaStore(str(tmp_path / "src.db")))
    ns = _workload(a)
    for target in (MetaStore(), MetaStore(str(tmp_path / "dst.db"))):
        target.restore(a.store.snapshot())
        assert target.dump() == a.store.dump()
        assert attrs(target.get_metadata(ns, "/l2")) == ("../x", False)
        assert attrs(target.get_metadata(ns, "/a/x")) == (None, True)


def _drop_attribute_columns(path: str) -> None:
    """Turn a store into one of the previous schema (no attribute columns)."""
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE revisions DROP COLUMN symlink")
    db.execute("ALTER TABLE revisions DROP COLUMN executable")
    db.commit()
    db.close()


def test_a_store_without_the_attribute_columns_opens_and_continues_like_a_fresh_one(tmp_path):
    path = str(tmp_path / "old.db")
    old = Driver(MetaStore(path))
    ns = old.setup()
    f = old.put(ns, "/f", b"old file")
    old.store.close()
    _drop_attribute_columns(path)
    src = sqlite3.connect(path)
    cols = {r[1] for r in src.execute("PRAGMA table_info(revisions)")}
    assert "symlink" not in cols and "executable" not in cols
    old_snapshot = bytearray(src.serialize())
    old_snapshot[18] = old_snapshot[19] = 1  # as `MetaStore.snapshot` sends a WAL image
    src.close()

    migrated = Driver(MetaStore(path))
    migrated.log, migrated.seq, migrated.now_ms = old.log, old.seq, old.now_ms
    assert attrs(current(migrated, ns, "/f")) == (None, False)
    # a snapshot of the old schema (from a leader that has not upgraded) is migrated too
    restored = MetaStore()
    restored.restore(bytes(old_snapshot))
    assert restored.dump() == migrated.store.dump()
    assert current(migrated, ns, "/f").rev == f.rev
    migrated.apply(link(ns, "/l", "f"))
    migrated.put(ns, "/x", b"x", executable=True)
    migrated.apply(Copy(ns, "/x", "/y"))
    fresh = MetaStore()
    for index, c in migrated.log:
        fresh.apply(index, c)
    assert fresh.dump() == migrated.store.dump()


# -- the batch blocklist query -----------------------------------------------------------------


def test_file_blocks_many_answers_each_path_in_order_from_one_namespace(d, ns):
    a = d.put(ns, "/a", b"aaa")
    s = d.apply(link(ns, "/s", "a"))
    d.apply(CreateFolder(ns, "/folder"))
    other = d.apply(CreateAccount("b@example.com", "Bob", b"tok-b")).home_ns
    theirs = d.put(other, "/theirs", b"secret")
    asked = [
        "/a",
        "/missing",
        "id:" + a.id[3:],
        "/folder",
        "rev:" + a.rev,
        f"ns:{other}/theirs",
        theirs.id,
        "rev:" + theirs.rev,
        "/s",
        "not a path",
    ]
    out = d.store.file_blocks_many(ns, asked)
    assert len(out) == len(asked)
    assert out[0] == (a, [block(b"aaa")]) and out[2] == out[0]
    assert out[4][1] == [block(b"aaa")] and out[4][0].rev == a.rev
    assert out[8] == (s, [block(b"a")])
    tags = {i: r.tags for i, r in enumerate(out) if isinstance(r, MetaError)}
    assert tags == {
        1: ["path", "not_found"],
        3: ["path", "not_file"],
        5: ["path", "not_found"],  # another namespace's files are not found, never shown
        6: ["path", "not_found"],
        7: ["path", "not_found"],
        9: ["path", "malformed_path"],
    }
    assert [d.store.file_blocks(ns, p) for p in asked] == out
    assert d.store.file_blocks_many(ns, []) == []
