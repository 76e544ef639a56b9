"""The state machine's half of block GC and upload records: RecordUpload, GcCondemn, GcRelease,
the `gc_gen` check on commands that record uploaded blocks — deterministic like every command."""

from __future__ import annotations

import sqlite3

from raftbox.meta.commands import (
    BlockRef,
    CommitFile,
    GcCondemn,
    GcRelease,
    GcResult,
    MetaError,
    RecordUpload,
    SessionAppend,
    SessionStart,
)
from raftbox.meta.fsm import MetaStore

from .helpers import Driver, block, content_dump, content_hash

A, B, C_ = b"a" * 1000, b"b" * 1000, b"c" * 1000


def setup() -> tuple[Driver, int]:
    d = Driver()
    return d, d.setup()


def test_record_upload_grants_the_right_to_commit() -> None:
    d, ns = setup()
    r = d.apply(CommitFile(ns, "/a", [block(A)], 1000, content_hash(A)))
    assert isinstance(r, MetaError) and r.tags == ["need_blocks"]
    assert d.apply(RecordUpload(ns, [block(A)], 0)) is None
    r = d.apply(CommitFile(ns, "/a", [block(A)], 1000, content_hash(A)))
    assert r.kind == "file"
    row = d.store.db.execute(
        "SELECT last_ms, last_idx FROM ns_blocks WHERE ns = ? AND block_id = ?", (ns, block(A).id)
    ).fetchone()
    assert row == (d.now_ms, d.index)  # touched by the commit that referenced it


def test_condemn_revokes_rights_and_refuses_blocks_touched_after_the_mark() -> None:
    d, ns = setup()
    d.apply(RecordUpload(ns, [block(A), block(B)], 0))
    mark = d.index
    d.apply(RecordUpload(ns, [block(B)], 0))  # B touched after the mark
    r = d.apply(GcCondemn("run1", mark, [block(A).id, block(B).id], 60_000))
    assert r == GcResult([block(A).id], [], 0)
    assert d.store.ns_has_blocks(ns, [block(A).id, block(B).id]) == {block(B).id}
    # while condemned: recording A as uploaded is refused, whatever the generation
    r = d.apply(RecordUpload(ns, [block(A)], 0))
    assert isinstance(r, MetaError) and r.tags == ["gc_retry"] and r.extra["ids"] == [block(A).id]
    r = d.put(ns, "/x", A, gc_gen=0)
    assert isinstance(r, MetaError) and r.tags == ["gc_retry"]
    # another run cannot take the lease while it is held
    r = d.apply(GcCondemn("run2", d.index, [], 60_000))
    assert isinstance(r, MetaError) and r.tags == ["gc_busy"]
    # released: generation 1; a command that read generation 0 is refused, one that read 1 is not
    assert d.apply(GcRelease("run1", [block(A).id], done=True)) == GcResult([], [], 1)
    assert d.store.gc_generation() == 1 and d.store.gc_state() == (None, {})
    r = d.apply(RecordUpload(ns, [block(A)], 0))
    assert isinstance(r, MetaError) and r.tags == ["gc_retry"]
    assert d.apply(RecordUpload(ns, [block(A)], 1)) is None
    assert d.put(ns, "/x", A, gc_gen=1).kind == "file"
    # a command with no generation (stored nothing itself) is not checked
    assert d.put(ns, "/y", A).kind == "file"


def test_an_expired_lease_is_taken_over_and_its_batch_adopted() -> None:
    d, ns = setup()
    d.apply(RecordUpload(ns, [block(A), block(B)], 0))
    mark = d.index
    assert d.apply(GcCondemn("old", mark, [block(A).id], 10_000)).condemned == [block(A).id]
    d.advance(20_000)  # the old run's lease is over
    r = d.apply(GcCondemn("new", mark, [block(B).id], 10_000))
    assert r == GcResult([block(B).id], [block(A).id], 0)
    assert d.apply(GcRelease("old", [block(A).id])) == GcResult([], [], 0)  # not its any more
    assert d.apply(GcRelease("new", [block(A).id, block(B).id], done=True)).gen == 1


def test_session_pieces_are_checked_and_recorded() -> None:
    d, ns = setup()
    d.apply(RecordUpload(ns, [block(A)], 0))
    d.apply(GcCondemn("r", d.index, [block(A).id], 60_000))
    assert d.apply(SessionStart("s1", ns)) is None
    r = d.apply(SessionAppend("s1", ns, 0, [block(A)], 1000, gc_gen=0))
    assert isinstance(r, MetaError) and r.tags == ["gc_retry"]
    assert d.apply(SessionAppend("s1", ns, 0, [block(C_)], 1000, gc_gen=0)) is None
    assert d.store.ns_has_blocks(ns, [block(C_).id]) == {block(C_).id}  # granted at append


def test_gc_commands_are_deterministic() -> None:
    d, ns = setup()
    d.apply(RecordUpload(ns, [block(A), block(B)], 0))
    d.put(ns, "/c", C_)
    d.apply(GcCondemn("r", d.index - 1, [block(A).id, block(B).id], 60_000))
    d.apply(GcRelease("r", [block(A).id]))
    d.apply(RecordUpload(ns, [block(A)], 1))
    d.apply(GcRelease("r", [block(B).id], done=True))
    other = MetaStore()
    for index, cmd in d.log:
        other.apply(index, cmd)
    assert content_dump(other) == content_dump(d.store)
    assert other.gc_generation() == d.store.gc_generation() == 2


def test_a_store_of_the_previous_schema_is_migrated(tmp_path) -> None:
    path = str(tmp_path / "old.sqlite3")
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE ns_blocks (ns INTEGER NOT NULL, block_id TEXT NOT NULL, "
        "size INTEGER NOT NULL, PRIMARY KEY (ns, block_id)) WITHOUT ROWID;"
        "INSERT INTO ns_blocks VALUES (1, 'x', 3);"
    )
    db.commit()
    db.close()
    s = MetaStore(path)
    assert s.db.execute("SELECT * FROM ns_blocks").fetchall() == [(1, "x", 3, 0, 0)]
    s.close()


def test_blockref_helper_matches() -> None:
    assert block(A) == BlockRef(block(A).id, 1000)
