"""The SQLite index: the synced tree and the scan cache survive a reopen; batches are atomic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from raftbox.client.index import DB_FILE, STATE_DIR, CacheEntry, Index
from raftbox.client.trees import Kind, Node, Tree


def _tree() -> Tree:
    nodes = [
        Node(path="/Docs", kind=Kind.FOLDER, inode=5, remote_id="id:d", rev=None),
        Node(
            path="/Docs/A.txt",
            kind=Kind.FILE,
            content_hash="h1",
            size=3,
            mtime_ns=7,
            inode=6,
            executable=True,
            remote_id="id:a",
            rev="0000000000010000",
        ),  # fmt: skip
        Node(path="/Docs/sub", kind=Kind.FOLDER),
        Node(path="/Docs/sub/x", kind=Kind.FILE, content_hash="h2", size=1),
        Node(path="/link", kind=Kind.SYMLINK, link_target="Docs/A.txt"),
    ]
    return Tree({n.key: n for n in nodes})


def test_wal_and_location(tmp_path: Path) -> None:
    with Index(tmp_path) as ix:
        mode = ix.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert (tmp_path / STATE_DIR / DB_FILE).exists()


def test_synced_tree_roundtrip_and_reopen(tmp_path: Path) -> None:
    t = _tree()
    with Index(tmp_path) as ix:
        assert ix.load_synced() == Tree()
        ix.save_synced(t)
        assert ix.load_synced() == t
    with Index(tmp_path) as ix:
        got = ix.load_synced()
        assert got == t
        assert got.at("/docs/a.TXT").executable is True  # type: ignore[union-attr]
        assert got.at("/Docs/sub/x").executable is None  # type: ignore[union-attr]


def test_apply_deletes_subtrees_only(tmp_path: Path) -> None:
    with Index(tmp_path) as ix:
        ix.save_synced(_tree())
        extra = Node(path="/Docsx", kind=Kind.FOLDER)
        ix.apply(put=[extra], delete=["/docs/sub"])
        assert sorted(ix.load_synced()) == ["/docs", "/docs/a.txt", "/docsx", "/link"]
        ix.apply(delete=["/docs"])
        assert sorted(ix.load_synced()) == ["/docsx", "/link"]


def test_batch_is_one_transaction(tmp_path: Path) -> None:
    with Index(tmp_path) as ix:
        ix.save_synced(_tree())
        with pytest.raises(RuntimeError):
            with ix.batch():
                ix.apply(delete=["/docs"])
                ix.set_state("cursor", "c1")
                raise RuntimeError("crash in the middle")
        assert ix.load_synced() == _tree()
        assert ix.get_state("cursor") is None
        with ix.batch():
            ix.set_state("cursor", "c2")
        # another connection sees the committed batch
        other = sqlite3.connect(tmp_path / STATE_DIR / DB_FILE)
        assert other.execute("SELECT v FROM state WHERE k='cursor'").fetchone() == ("c2",)
        other.close()


def test_scan_cache(tmp_path: Path) -> None:
    e = CacheEntry(
        inode=9, size=10, mtime_ns=11, content_hash="h", blocklist=(("b1", 4), ("b2", 6))
    )
    with Index(tmp_path) as ix:
        ix.cache_put_many([e, CacheEntry(10, 0, 1, "e", ())])
    with Index(tmp_path) as ix:
        assert ix.cache_get(9, 10, 11) == e
        assert ix.cache_get(9, 10, 12) is None  # mtime changed
        assert ix.cache_get(9, 11, 11) is None  # size changed
        assert ix.cache_retain([9]) == 1
        assert ix.cache_get(10, 0, 1) is None
        assert ix.cache_get(9, 10, 11) == e


def test_integers_out_of_sqlite_range_are_stored_never_raised(tmp_path: Path) -> None:
    """A file dated 9999 on the server, or past 2262 on this disk, or an inode above 2**63:
    the index clamps the dates (and never takes a clamped stat for a cache hit) and keeps the
    inode exactly (issue 11: the OverflowError that stopped every sync)."""
    from raftbox.client.limits import MTIME_MAX_NS, MTIME_MIN_NS

    far, past, big_ino = 253402300799 * 10**9, -62135596800 * 10**9, 2**64 - 5
    future = Node(path="/future", kind=Kind.FILE, content_hash="h", size=1, mtime_ns=far,
                  inode=big_ino, remote_id="id:f", rev="0000000000010000")  # fmt: skip
    old = Node(path="/past", kind=Kind.FILE, content_hash="h", size=1, mtime_ns=past)
    with Index(tmp_path) as ix:
        ix.apply(put=[future, old])
        ix.apply_remote(put=[future, old], reset=True)
        ix.pending_put("download", [(None, future)])
        ix.cache_put_many([CacheEntry(big_ino, 1, far, "h", (("b", 1),))])
    with Index(tmp_path) as ix:
        for got in (ix.load_synced(), ix.load_remote()):
            assert got["/future"].mtime_ns == MTIME_MAX_NS and got["/future"].inode == big_ino
            assert got["/past"].mtime_ns == MTIME_MIN_NS
        assert ix.pending_all()[0][2].inode == big_ino
        assert ix.cache_get(big_ino, 1, far) is None  # 9999 and 2300 would both read as 2262
        assert list(ix.cache_load_all()) == [big_ino]
        assert ix.cache_retain([big_ino]) == 0


def test_held_entries_follow_the_listing(tmp_path: Path) -> None:
    with Index(tmp_path) as ix:
        assert not ix.held_any()
        ix.held_reset([("/a/bad\x00", "/a/bad\x00", "why", False), ("/b", "/B", "why", True)])
        ix.held_put("/a/c\udcff", "/a/C\udcff", "why", False)  # stored escaped
        assert ix.held_all() == [("/a/bad\x00", "why", False), ("/a/C\\udcff", "why", False),
                                 ("/B", "why", True)]  # fmt: skip
        ix.held_forget("/a/c\udcff", subtree=False)
        assert len(ix.held_all()) == 2
        ix.held_forget("/a", subtree=True)
        ix.held_forget("/b", subtree=False)
        assert not ix.held_any()


def test_a_row_whose_parent_is_missing_is_dropped_with_its_subtree(tmp_path: Path) -> None:
    """A damaged index (a folder's row gone, its children left) loads as the tree without
    them: never synced, so the planner uploads or downloads them, never deletes."""
    with Index(tmp_path) as ix:
        ix.save_synced(_tree())
        whole = ix.load_synced()
        folder = next(n for n in whole.nodes() if n.is_folder and any(
            k.startswith(n.key + "/") for k in whole))  # fmt: skip
        ix.db.execute("DELETE FROM synced WHERE key = ?", (folder.key,))
        loaded = ix.load_synced()
    assert set(loaded) == {k for k in whole if k != folder.key and
                           not k.startswith(folder.key + "/")}  # fmt: skip


def test_the_trees_agreed_mark_is_forgotten_by_any_write_to_either_tree(tmp_path: Path) -> None:
    t = _tree()
    with Index(tmp_path) as ix:
        ix.save_synced(t)
        ix.apply_remote(t.values(), reset=True)
        writes = [
            lambda: ix.apply(put=[t.at("/Docs/A.txt")]),
            lambda: ix.apply(delete=["/link"]),
            lambda: ix.move("/docs/sub", "/Docs/sub2"),
            lambda: ix.save_synced(t),
            lambda: ix.apply_remote(put=[t.at("/Docs/A.txt")]),
            lambda: ix.apply_remote(delete=["/docs"]),
            lambda: ix.apply_remote(reset=True),
            # as a client that knows nothing of the mark would write (triggers catch it)
            lambda: ix.db.execute(
                "INSERT INTO remote (key, path, kind, size) VALUES ('/z', '/z', 'folder', 0)"
            ),
            lambda: ix.db.execute("UPDATE synced SET rev = 'x'"),
        ]
        for write in writes:
            ix.set_agreed()
            assert ix.agreed()
            write()
            assert not ix.agreed()
        ix.set_agreed()
        ix.apply_remote(put=[], delete=[])  # an empty listing page writes nothing
        ix.apply()
        assert ix.agreed()
