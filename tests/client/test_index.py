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
