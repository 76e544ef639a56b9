"""list_folder, continue, get_latest_cursor: paging, changes, subtree cursors."""

import msgspec
import pytest

from raftbox.meta.commands import (
    CommitBatch,
    CommitFile,
    CreateFolder,
    CursorState,
    Delete,
    DeletedMeta,
    FileMeta,
    FolderMeta,
    MetaError,
    Move,
)
from raftbox.meta.fsm import ListPage
from raftbox.meta.paths import make_key

from .helpers import Driver, SqliteWork, content_hash


def err(*tags, **extra):
    return MetaError(list(tags), extra)


@pytest.fixture
def d():
    return Driver()


@pytest.fixture
def ns(d):
    return d.setup()


def wire(state: CursorState) -> list:
    """A cursor state as it comes back out of a signed cursor: msgpack, decoded untyped."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(state))


def drain(store, ns, page: ListPage, limit=None):
    """Follow a cursor until has_more is false; return all entries and the last page."""
    out = list(page.entries)
    while page.has_more:
        page = store.list_folder_continue(ns, wire(page.cursor_state), limit)
        assert isinstance(page, ListPage), page
        out += page.entries
    return out, page


def apply_changes(tree: dict, entries) -> None:
    """What a client does with list_folder entries: by key, deletions remove subtrees."""
    for e in entries:
        k = make_key(e.path_display)
        if isinstance(e, DeletedMeta):
            for x in [x for x in tree if x == k or x.startswith(k + "/")]:
                del tree[x]
        else:
            tree[k] = e


def batch(ns, paths):
    return CommitBatch([CommitFile(ns, p, [], 0, content_hash(b""), uploaded=True) for p in paths])


def test_errors(d, ns):
    d.put(ns, "/file")
    assert d.store.list_folder(ns, "/nope") == err("path", "not_found")
    assert d.store.list_folder(ns, "/file") == err("path", "not_folder")
    assert d.store.list_folder(ns, "/bad/") == err("path", "malformed_path")
    assert d.store.get_latest_cursor(ns, "/file") == err("path", "not_folder")
    assert d.store.list_folder_continue(ns, "/nope", False, False, 0) == err("path", "not_found")
    assert d.store.list_folder_continue(ns, "", False, False, 10**9) == err("reset")
    assert d.store.list_folder_continue(ns, ["garbage"]) == err("reset")
    assert d.store.list_folder_continue(ns, CursorState("", True, False, -1)) == err("reset")


def test_first_listing_stable_order_and_paging(d, ns):
    d.apply(batch(ns, [f"/d/{i:03}" for i in range(25)] + ["/d/sub/x", "/top"]))
    full = d.store.list_folder(ns, "/d")
    assert [e.name for e in full.entries] == [f"{i:03}" for i in range(25)] + ["sub"]
    assert not full.has_more and full.resume is None
    paged, _ = drain(d.store, ns, d.store.list_folder(ns, "/d", limit=4), limit=4)
    assert paged == full.entries
    rec = d.store.list_folder(ns, "/D", recursive=True)
    assert rec.entries[0] == d.store.get_metadata(ns, "/d")  # the folder itself comes first
    assert [e.path_lower for e in rec.entries][-2:] == ["/d/sub", "/d/sub/x"]
    rec_paged, _ = drain(
        d.store, ns, d.store.list_folder(ns, "/d", recursive=True, limit=3), limit=3
    )
    assert rec_paged == rec.entries
    root = d.store.list_folder(ns, "")
    assert [e.path_display for e in root.entries] == ["/d", "/top"]
    by_id = d.store.list_folder(ns, d.store.get_metadata(ns, "/d").id)
    assert by_id.entries == full.entries


def test_parent_sorts_before_children():
    d = Driver()
    ns = d.setup()
    d.apply(batch(ns, ["/a b", "/a/x", "/a!", "/a-b/y"]))
    keys = [e.path_lower for e in d.store.list_folder(ns, "", recursive=True).entries]
    for i, k in enumerate(keys):
        parent = k.rsplit("/", 1)[0]
        assert not parent or parent in keys[:i]


def test_continue_after_adds_deletes_moves(d, ns):
    d.put(ns, "/a/1")
    d.put(ns, "/a/2")
    d.put(ns, "/b/3")
    first = d.store.list_folder(ns, "", recursive=True)
    tree: dict = {}
    apply_changes(tree, first.entries)
    d.put(ns, "/c/4")
    d.apply(Delete(ns, "/a/1"))
    d.apply(Move(ns, "/b", "/a/b2"))
    d.put(ns, "/a/2", b"new", mode="overwrite")
    changes, last = drain(
        d.store, ns, d.store.list_folder_continue(ns, "", True, False, first.state)
    )
    kinds = {(type(e).__name__, e.path_lower) for e in changes}
    assert ("DeletedMeta", "/a/1") in kinds and ("DeletedMeta", "/b") in kinds
    assert ("FileMeta", "/a/b2/3") in kinds and ("FileMeta", "/c/4") in kinds
    apply_changes(tree, changes)
    now = d.store.list_folder(ns, "", recursive=True).entries
    assert tree == {make_key(e.path_display): e for e in now}
    # nothing new: an empty page at the same position
    again = d.store.list_folder_continue(ns, "", True, False, last.state)
    assert again.entries == [] and not again.has_more and again.position == last.position


def test_changes_made_while_paging_are_replayed(d, ns):
    d.apply(batch(ns, [f"/f{i:02}" for i in range(10)]))
    page = d.store.list_folder(ns, "", limit=3)
    seen = list(page.entries)
    d.apply(Delete(ns, "/f08"))  # not yet listed
    d.apply(Delete(ns, "/f00"))  # already listed
    d.put(ns, "/f00b")  # lands in the part already listed
    rest, last = drain(d.store, ns, page, limit=3)
    tree: dict = {}
    apply_changes(tree, seen + rest)
    assert sorted(tree) == sorted(
        make_key(e.path_display) for e in d.store.list_folder(ns, "").entries
    )


def test_subfolder_cursor_sees_only_its_subtree(d, ns):
    d.put(ns, "/docs/a")
    d.put(ns, "/other/b")
    cur = d.store.get_latest_cursor(ns, "/Docs", recursive=True)
    assert cur == CursorState("/docs", True, False, d.store.journal_position(ns))
    d.put(ns, "/other/c")
    d.put(ns, "/docs2/x")  # a sibling whose name starts like the folder's
    d.put(ns, "/docs/sub/d")
    d.apply(Move(ns, "/other/b", "/docs/b"))
    changes, _ = drain(d.store, ns, d.store.list_folder_continue(ns, wire(cur)))
    assert [e.path_lower for e in changes] == ["/docs/sub", "/docs/sub/d", "/docs/b"]
    flat = d.store.get_latest_cursor(ns, "/docs", recursive=False)
    d.put(ns, "/docs/sub/deeper")
    d.put(ns, "/docs/direct")
    changes, _ = drain(d.store, ns, d.store.list_folder_continue(ns, flat))
    assert [e.path_lower for e in changes] == ["/docs/direct"]
    d.apply(Delete(ns, "/docs"))
    assert d.store.list_folder_continue(ns, wire(cur)) == err("path", "not_found")


def test_deleted_folder_reported_alone(d, ns):
    d.put(ns, "/d/x/1")
    cur = d.store.get_latest_cursor(ns, "", recursive=True)
    d.apply(Delete(ns, "/d"))
    page = d.store.list_folder_continue(ns, cur)
    assert page.entries == [DeletedMeta("d", "/d", "/d")]


def test_include_deleted_listing(d, ns):
    d.put(ns, "/a")
    d.put(ns, "/b")
    d.apply(Delete(ns, "/a"))
    plain = d.store.list_folder(ns, "")
    assert [e.name for e in plain.entries] == ["b"]
    withd = d.store.list_folder(ns, "", include_deleted=True)
    assert [type(e) for e in withd.entries] == [DeletedMeta, FileMeta]


def test_replaced_path_reports_its_current_state(d, ns):
    d.put(ns, "/x")
    cur = d.store.get_latest_cursor(ns, "", recursive=True)
    d.apply(Delete(ns, "/x"))
    d.apply(CreateFolder(ns, "/X"))
    page = d.store.list_folder_continue(ns, cur)
    assert [type(e) for e in page.entries] == [FolderMeta]
    assert page.entries[0].path_display == "/X"


def test_busy_namespace_subtree_cursor_pages_with_bounded_scans(d, ns):
    d.apply(CreateFolder(ns, "/quiet"))
    cur = d.store.get_latest_cursor(ns, "/quiet", recursive=True)
    d.apply(batch(ns, [f"/busy/{i:05}" for i in range(6000)]))
    d.put(ns, "/quiet/q")
    page = d.store.list_folder_continue(ns, cur, 10)
    assert page.entries == [] and page.has_more  # scanned a window, found nothing yet
    rest, _ = drain(d.store, ns, page, limit=10)
    assert [e.path_lower for e in rest] == ["/quiet/q"]


def paging_work(n: int) -> tuple[list[int], list[int]]:
    """A folder of n files listed in pages of 100, flat and from the journal (a recursive
    cursor from position 0); returns the SQLite work of each page, in order."""
    d = Driver()
    ns = d.setup()
    for start in range(0, n, 2000):
        d.apply(batch(ns, [f"/big/{i:05}" for i in range(start, min(n, start + 2000))]))
    store = d.store
    flat: list[int] = []
    with SqliteWork(store) as work:
        page = store.list_folder(ns, "/big", limit=100)
        flat.append(work.delta())
        listed = len(page.entries)
        while page.has_more:
            page = store.list_folder_continue(ns, "/big", False, False, page.state, 100)
            flat.append(work.delta())
            listed += len(page.entries)
    assert listed == n
    journal: list[int] = []
    with SqliteWork(store) as work:
        page = store.list_folder_continue(ns, "", True, False, 0, 100)
        journal.append(work.delta())
        listed = len(page.entries)
        while page.has_more:
            page = store.list_folder_continue(ns, wire(page.cursor_state), 100)
            assert isinstance(page, ListPage), page
            journal.append(work.delta())
            listed += len(page.entries)
    assert listed == n + 1  # and /big itself
    return flat, journal


def test_ten_thousand_entries_page_linearly():
    # Linear means a page costs the same wherever it is: no page re-reads the ones before it
    # (an OFFSET would). Counted in SQLite work at n and 2n, not in seconds.
    flat_n, journal_n = paging_work(5_000)
    flat_2n, journal_2n = paging_work(10_000)
    assert len(flat_2n) == 2 * len(flat_n) and len(journal_2n) >= 2 * len(journal_n) - 1
    for at_n, at_2n in ((flat_n, flat_2n), (journal_n, journal_2n)):
        assert max(at_2n) <= 1.5 * max(at_n), (max(at_n), max(at_2n))
        assert sum(at_2n) <= 2.3 * sum(at_n), (sum(at_n), sum(at_2n))
