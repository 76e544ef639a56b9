"""Space usage and quotas in the state machine (`raftbox.meta.quota`): the counter is right after
every kind of write, and a write past the quota is refused whole, whichever command makes it."""

import random

import pytest

from raftbox.meta import quota
from raftbox.meta.commands import (
    CommitBatch,
    CommitFile,
    Copy,
    CreateAccount,
    CreateFolder,
    Delete,
    FileMeta,
    FinishBatch,
    MetaError,
    Move,
    RemoveAccount,
    Restore,
    SessionAppend,
    SessionFinish,
    SessionStart,
    SetQuota,
    SpaceUsage,
)
from raftbox.meta.fsm import MetaStore

from .helpers import Driver, block, content_dump, content_hash


@pytest.fixture
def d():
    return Driver()


@pytest.fixture
def ns(d):
    return d.setup()


def account_id(d: Driver, ns: int) -> str:
    return d.store.db.execute("SELECT owner FROM namespaces WHERE ns = ?", (ns,)).fetchone()[0]


def used(d: Driver, ns: int) -> int:
    return d.store.space_usage(account_id(d, ns)).used


def recomputed(store: MetaStore, ns: int) -> int:
    """The reference: a full scan of the current files."""
    row = store.db.execute(
        "SELECT COALESCE(SUM(r.size), 0) FROM entries e JOIN revisions r "
        "ON r.ns = e.ns AND r.rev = e.rev WHERE e.ns = ? AND e.kind = 1",
        (ns,),
    ).fetchone()
    return row[0]


def commit(ns: int, path: str, data: bytes, **kw) -> CommitFile:
    kw.setdefault("uploaded", True)
    return CommitFile(ns, path, [block(data)] if data else [], len(data), content_hash(data), **kw)


# -- the counter ---------------------------------------------------------------------------------


def test_used_counts_current_files_across_every_kind_of_write(d, ns):
    assert used(d, ns) == 0
    d.put(ns, "/a.txt", b"x" * 10)
    assert used(d, ns) == 10
    first = d.put(ns, "/a.txt", b"y" * 25, mode="overwrite")
    assert used(d, ns) == 25  # an overwrite replaces, old revisions are free
    d.put(ns, "/a.txt", b"y" * 25, mode="overwrite")  # identical: nothing changes
    assert used(d, ns) == 25
    d.put(ns, "/d/b.bin", b"z" * 100)
    assert used(d, ns) == 125
    d.apply(Move(ns, "/d", "/e"))
    assert used(d, ns) == 125  # a move stores nothing more
    d.apply(Copy(ns, "/e", "/f"))
    assert used(d, ns) == 225  # a copy is a second file (Dropbox counts it)
    d.apply(Delete(ns, "/e"))
    assert used(d, ns) == 125  # a folder's delete takes its whole subtree off
    d.apply(Restore(ns, "/e/b.bin", d.store.list_revisions(ns, "/e/b.bin").entries[0].rev))
    assert used(d, ns) == 225
    old_rev = d.store.list_revisions(ns, "/a.txt").entries[-1].rev
    assert old_rev != first.rev
    d.apply(Restore(ns, "/a.txt", old_rev))  # back to the 10-byte version
    assert used(d, ns) == 210
    d.apply(Move(ns, "/a.txt", "/A.TXT"))  # case-only rename
    assert used(d, ns) == 210 == recomputed(d.store, ns)


def test_the_counter_matches_a_full_scan_after_random_writes(d, ns):
    rng = random.Random(15)
    names = [f"/{a}/{b}" for a in "pq" for b in ("x", "y", "z")] + ["/p", "/q", "/r"]
    for step in range(400):
        op = rng.choice(["put", "put", "over", "del", "move", "copy", "mkdir", "restore"])
        src, dst = rng.choice(names), rng.choice(names)
        data = bytes([step % 251]) * rng.randrange(0, 3000)
        if op == "put":
            d.apply(commit(ns, src, data, autorename=rng.random() < 0.3))
        elif op == "over":
            d.apply(commit(ns, src, data, mode="overwrite"))
        elif op == "del":
            d.apply(Delete(ns, src))
        elif op == "move":
            d.apply(Move(ns, src, dst, autorename=rng.random() < 0.5))
        elif op == "copy":
            d.apply(Copy(ns, src, dst, autorename=rng.random() < 0.5))
        elif op == "mkdir":
            d.apply(CreateFolder(ns, src))
        else:
            revs = d.store.list_revisions(ns, src)
            if not isinstance(revs, MetaError) and revs.entries:
                d.apply(Restore(ns, src, rng.choice(revs.entries).rev))
        assert used(d, ns) == recomputed(d.store, ns), f"step {step}: {op} {src} {dst}"


def test_an_older_store_gets_its_counters_when_opened(tmp_path):
    path = str(tmp_path / "meta.sqlite3")
    d = Driver(MetaStore(path))
    ns = d.setup()
    d.put(ns, "/a", b"a" * 7)
    d.put(ns, "/b/c", b"c" * 5)
    db = d.store.db
    # what a store made before quotas looks like: no usage table, no triggers
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE ns_usage")
    d.store.close()
    store = MetaStore(path)
    assert quota.account_used(store.db, account_id(Driver(store), ns)) == 12
    d2 = Driver(store, client_id=8)  # a new client (client 7 has used these seqs)
    d2.put(ns, "/d", b"d" * 3)
    assert used(d2, ns) == 15 == recomputed(store, ns)
    store.close()


def test_a_snapshot_carries_the_counters_and_quotas(d, ns):
    d.apply(SetQuota("a@example.com", 1000))
    d.put(ns, "/a", b"a" * 40)
    other = MetaStore()
    other.restore(d.store.snapshot())
    u = other.space_usage(account_id(d, ns))
    assert (u.used, u.quota) == (40, 1000)


def test_removing_an_account_removes_its_usage_and_quota(d, ns):
    d.apply(SetQuota("a@example.com", 1000))
    d.put(ns, "/a", b"a" * 40)
    acct = account_id(d, ns)
    d.apply(RemoveAccount("a@example.com"))
    db = d.store.db
    assert db.execute("SELECT COUNT(*) FROM ns_usage WHERE ns = ?", (ns,)).fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM account_quota").fetchone()[0] == 0
    assert d.store.space_usage(acct) is None


# -- setting quotas ------------------------------------------------------------------------------


def test_set_quota_and_clear_it(d, ns):
    d.put(ns, "/a", b"a" * 40)
    r = d.apply(SetQuota("A@Example.com", 100))  # emails match case-insensitively
    assert r == SpaceUsage(account_id(d, ns), "a@example.com", 40, 100)
    assert d.apply(SetQuota("a@example.com", None)).quota is None
    assert d.apply(SetQuota("nobody@example.com", 5)) == MetaError(["account_not_found"])
    for bad in (-1, 2**63):
        r = d.apply(SetQuota("a@example.com", bad))
        assert r.tags == ["invalid_command"]
    assert d.store.space_usage(account_id(d, ns)).quota is None


def test_an_account_can_be_created_with_its_quota(d, ns):
    acct = d.apply(CreateAccount("b@example.com", "Bob", b"tok-b", 500))
    assert d.store.space_usage(acct.account_id).quota == 500
    assert d.apply(CreateAccount("c@example.com", "C", b"tok-c", -5)).tags == ["invalid_command"]


# -- the guard -----------------------------------------------------------------------------------


def test_a_commit_past_the_quota_is_refused_and_changes_nothing(d, ns):
    d.apply(SetQuota("a@example.com", 100))
    d.put(ns, "/a", b"a" * 60)
    before = content_dump(d.store)
    r = d.put(ns, "/dir/b", b"b" * 41)  # 101 > 100; its parent folder is not made either
    assert r == MetaError(["path", "insufficient_space"])
    after = content_dump(d.store)
    # the GC bookkeeping of an uploaded block is rolled back too: nothing at all changed
    assert before == after
    assert isinstance(d.put(ns, "/dir/b", b"b" * 40), FileMeta)  # exactly at the quota
    assert used(d, ns) == 100
    assert d.put(ns, "/c", b"c").tags == ["path", "insufficient_space"]
    assert isinstance(d.put(ns, "/empty", b""), FileMeta)  # an empty file takes no space


def test_an_account_over_its_quota_can_still_clean_up(d, ns):
    d.put(ns, "/a", b"a" * 60)
    d.put(ns, "/b", b"b" * 60)
    d.apply(SetQuota("a@example.com", 50))  # the operator lowered it below what is stored
    assert isinstance(d.apply(Move(ns, "/a", "/moved")), FileMeta)
    assert isinstance(d.put(ns, "/moved", b"s" * 10, mode="overwrite"), FileMeta)  # smaller
    assert d.put(ns, "/moved", b"s" * 20, mode="overwrite").tags == ["path", "insufficient_space"]
    assert not isinstance(d.apply(Delete(ns, "/b")), MetaError)
    assert used(d, ns) == 10


def test_copy_and_restore_past_the_quota_are_refused(d, ns):
    d.put(ns, "/f/a", b"a" * 30)
    d.put(ns, "/f/b", b"b" * 30)
    d.apply(SetQuota("a@example.com", 100))
    before = content_dump(d.store)
    assert d.apply(Copy(ns, "/f", "/g")) == MetaError(["insufficient_quota"])
    assert content_dump(d.store) == before  # not one file of the folder was copied
    rev = d.store.list_revisions(ns, "/f/a").entries[0].rev
    d.apply(Delete(ns, "/f/a"))
    d.put(ns, "/big", b"x" * 60)
    assert d.apply(Restore(ns, "/f/a", rev)) == MetaError(["path_write", "insufficient_space"])
    assert used(d, ns) == 90


def test_a_batch_fills_up_to_the_quota_item_by_item(d, ns):
    d.apply(SetQuota("a@example.com", 100))
    r = d.apply(CommitBatch([commit(ns, f"/{i}", bytes([i]) * 30) for i in range(4)]))
    assert [isinstance(x, FileMeta) for x in r] == [True, True, True, False]
    assert r[3] == MetaError(["path", "insufficient_space"])
    assert used(d, ns) == 90


def test_upload_session_finishes_respect_the_quota(d, ns):
    d.apply(SetQuota("a@example.com", 100))
    data = b"s" * 70
    for sid in ("s1", "s2"):
        assert d.apply(SessionStart(sid, ns)) is None
        d.apply(SessionAppend(sid, ns, 0, [block(data)], len(data)))
    fin = [SessionFinish(sid, ns, 70, commit(ns, f"/{sid}", data)) for sid in ("s1", "s2")]
    r = d.apply(FinishBatch(fin))
    assert isinstance(r[0], FileMeta)
    assert r[1] == MetaError(["path", "insufficient_space"])
    # the refused session is still there: the user can free space and finish it
    assert d.store.session("s2") is not None
    d.apply(Delete(ns, "/s1"))
    assert isinstance(d.apply(fin[1]), FileMeta)
