"""`CommitBatch` shares what its items read (`context.BatchMemo`) and writes their journal rows
at the end (`writes.commit_batch`). The contract: the rows written and the answers are exactly
those of committing the items one after the other with nothing shared. The reference here is
that plain loop, run on a second store fed the same entries; every case an item can meet in a
batch (failures that roll back a folder it made, rights granted by an earlier item, quota,
shared folders, two namespaces, identical commits) is in one batch."""

from __future__ import annotations

import pytest

from raftbox.meta import writes
from raftbox.meta.commands import (
    CommitBatch,
    CommitFile,
    CreateAccount,
    FileMeta,
    MetaError,
    RecordUpload,
    SetQuota,
)
from raftbox.meta.context import atomic

from .helpers import Driver, block, content_dump, content_hash


def plain_commit_batch(ctx, c):
    """The reference: each item alone, under its own savepoint, nothing shared."""
    return [atomic(ctx, lambda e=e: writes.commit(ctx, e)) for e in c.entries]


def cf(ns: int, path: str, data: bytes, **kw) -> CommitFile:
    return CommitFile(ns, path, [block(data)], len(data), content_hash(data), **kw)


def history(d: Driver) -> tuple[int, int]:
    """A store with two accounts, some files, block rights and a quota; (ns, other ns)."""
    ns = d.setup()
    other = d.apply(CreateAccount("b@example.com", "Bob", b"tok-b")).home_ns
    d.put(ns, "/a/old.txt", b"old")
    d.put(ns, "/a/file", b"f")
    d.put(ns, "/same", b"same")
    d.put(other, "/theirs", b"theirs")
    d.apply(RecordUpload(ns, [block(b"held%d" % i) for i in range(5)]))
    d.apply(RecordUpload(other, [block(b"other-held")]))
    d.apply(SetQuota("b@example.com", 40))
    return ns, other


def the_batch(ns: int, other: int) -> CommitBatch:
    ref = dict(uploaded=False)
    return CommitBatch(
        [
            cf(ns, "/n/d1/x", b"held0", **ref),  # new folders, rights held before the batch
            cf(ns, "/n/d1/y", b"held1", **ref),  # the folders read back
            cf(ns, "/new/z", b"missing", **ref),  # need_blocks
            cf(ns, "/new/w", b"held2", **ref),
            cf(ns, "/a/old.txt", b"held3", **ref),  # add mode, exists: conflict, rolled back
            cf(ns, "/a/old.txt", b"held3", autorename=True, **ref),  # "old (1).txt"
            cf(ns, "/a/file/under", b"held4", **ref),  # file_ancestor
            cf(ns, "/same", b"same", **ref),  # identical: changes nothing, no journal row
            cf(ns, "/up/u", b"fresh", uploaded=True),  # grants "fresh" ...
            cf(ns, "/up/v", b"fresh", **ref),  # ... which a later item may then reference
            cf(ns, "/shared", b"other-held", **ref),  # not ns's: need_blocks
            cf(ns, "/shared", b"other-held", readable_ns=[ns, other], **ref),  # readable: ok
            cf(other, "/b/big", b"x" * 30, uploaded=True),  # other's quota is 40 bytes
            cf(other, "/c/too-big", b"y" * 30, uploaded=True),  # insufficient_space: its
            cf(other, "/c/small", b"z", uploaded=True),  # folder rolls back, this one makes it
            cf(ns, "/n/d1/x", b"held1", mode="overwrite", **ref),  # a new rev, same id
            cf(12345, "/nowhere", b"held0", **ref),  # unknown namespace
            cf(ns, "/n/d1/last", b"held0", **ref),
            cf(other, "/c/again", b"y" * 30, **ref),  # the failed item's grant is gone
            cf(other, "/c/more", b"x" * 30, mode="overwrite", **ref),  # /b/big's is not
        ]
    )


def test_a_batch_writes_what_its_items_one_by_one_would(monkeypatch) -> None:
    memo, plain = Driver(), Driver()
    ns, other = history(memo)
    assert history(plain) == (ns, other)
    batch = the_batch(ns, other)
    got = memo.apply(batch)
    monkeypatch.setitem(writes_handlers(), CommitBatch, plain_commit_batch)
    want = plain.apply(batch)
    assert got == want
    assert content_dump(memo.store) == content_dump(plain.store)
    # the batch met what it was made to meet
    tags = [r.tags if isinstance(r, MetaError) else None for r in got]
    assert tags[2] == tags[10] == tags[18] == ["need_blocks"]
    assert tags[4] == ["path", "conflict", "file"]
    assert tags[6] == ["path", "conflict", "file_ancestor"]
    assert tags[13] == ["path", "insufficient_space"]
    assert tags[16] == ["invalid_command"]
    assert tags[19] == ["path", "insufficient_space"]  # rights ok, but 60 bytes > 40
    assert sum(isinstance(r, FileMeta) for r in got) == 12
    assert got[5].path_display == "/a/old (1).txt"
    assert got[15].id == got[0].id and got[15].rev != got[0].rev


def writes_handlers() -> dict:
    from raftbox.meta import fsm

    return fsm.HANDLERS


@pytest.mark.parametrize("n", [1, 7])
def test_journal_positions_follow_on_from_before_the_batch(n: int) -> None:
    d = Driver()
    ns = d.setup()
    d.put(ns, "/before", b"b")
    (end,) = d.store.db.execute("SELECT journal_end FROM namespaces WHERE ns = ?", (ns,)).fetchone()
    d.apply(CommitBatch([cf(ns, f"/j/{i}", b"%d" % i, uploaded=True) for i in range(n)]))
    rows = d.store.db.execute(
        "SELECT pos, display, idx FROM journal WHERE ns = ? AND pos > ? ORDER BY pos", (ns, end)
    ).fetchall()
    assert rows == [(end + 1, "/j", d.index)] + [
        (end + 2 + i, f"/j/{i}", d.index) for i in range(n)
    ]
    (now,) = d.store.db.execute("SELECT journal_end FROM namespaces WHERE ns = ?", (ns,)).fetchone()
    assert now == end + 1 + n
