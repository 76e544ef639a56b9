"""The scanner: local nodes from disk, links not followed, ignore rules, incremental rescans."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from raftbox.blocks.chunker import FIXED, chunk_bytes
from raftbox.client import scanner
from raftbox.client.index import Index
from raftbox.client.scanner import MemoryCache, scan
from raftbox.client.trees import Kind

OLD_NS = 1_600_000_000 * 10**9  # well outside the racily-clean window


def _write(p: Path, data: bytes, mtime_ns: int = OLD_NS) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file the scanner hashes (it reads file contents only through _read_file)."""
    seen: list[str] = []
    real = scanner._read_file

    def counting(path, chunking, old):
        seen.append(os.fspath(path))
        return real(path, chunking, old)

    monkeypatch.setattr(scanner, "_read_file", counting)
    return seen


def _tree_of(root: Path) -> None:
    _write(root / "a.txt", b"alpha")
    _write(root / "Docs" / "b.bin", os.urandom(3000))
    _write(root / "Docs" / "run.sh", b"#!/bin/sh\n")
    os.chmod(root / "Docs" / "run.sh", 0o755)
    (root / "empty").mkdir()
    os.symlink("Docs/b.bin", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")


def test_nodes(tmp_path: Path) -> None:
    _tree_of(tmp_path)
    res = scan(tmp_path, chunking=FIXED)
    t = res.tree
    assert sorted(n.path for n in t.values()) == [
        "/Docs", "/Docs/b.bin", "/Docs/run.sh", "/a.txt", "/dangling", "/empty", "/link"]  # fmt: skip
    a = t.at("/a.txt")
    assert a is not None and a.kind is Kind.FILE and a.size == 5 and a.mtime_ns == OLD_NS
    assert a.inode == os.lstat(tmp_path / "a.txt").st_ino and a.executable is False
    chunks = chunk_bytes(b"alpha", FIXED)
    assert res.blocklists["/a.txt"] == tuple((c.id, c.size) for c in chunks)
    # the Dropbox content hash: sha256 over the 4 MiB windows' digests
    assert a.content_hash == hashlib.sha256(hashlib.sha256(b"alpha").digest()).hexdigest()
    assert t.at("/Docs/run.sh").executable is True  # type: ignore[union-attr]
    link = t.at("/link")
    assert link is not None and link.kind is Kind.SYMLINK and link.link_target == "Docs/b.bin"
    assert t.at("/dangling").link_target == "/nonexistent/target"  # type: ignore[union-attr]
    assert t.at("/empty").kind is Kind.FOLDER  # type: ignore[union-attr]


def test_symlinked_folder_is_not_followed(tmp_path: Path, reads: list[str]) -> None:
    outside = tmp_path / "outside"
    _write(outside / "secret", b"s")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "out")
    res = scan(root)
    assert [n.path for n in res.tree.values()] == ["/out"]
    assert res.tree.at("/out").kind is Kind.SYMLINK  # type: ignore[union-attr]
    assert reads == []


def test_ignore_rules(tmp_path: Path) -> None:
    _write(tmp_path / "keep.txt", b"k")
    _write(tmp_path / "x.tmp", b"t")  # a default pattern
    _write(tmp_path / "build" / "out.o", b"o")
    _write(tmp_path / "logs" / "a.log", b"l")
    _write(tmp_path / "logs" / "keep.log", b"l")
    _write(tmp_path / ".raftboxignore", b"build/\n*.log\n!keep.log\n")
    Index(tmp_path).close()  # the state folder exists and is ignored by default
    got = sorted(n.path for n in scan(tmp_path).tree.values())
    assert got == ["/.raftboxignore", "/keep.txt", "/logs", "/logs/keep.log"]


def test_rescan_unchanged_reads_nothing(tmp_path: Path, reads: list[str]) -> None:
    root = tmp_path / "r"
    _tree_of(root)
    with Index(root) as ix:
        first = scan(root, ix)
        assert first.hashed == 3 and len(reads) == 3
        reads.clear()
        second = scan(root, ix)
        assert reads == [] and second.hashed == 0 and second.cached == 3
        assert second.tree == first.tree
        assert second.blocklists == first.blocklists
    # the cache survives a reopen of the index
    with Index(root) as ix:
        assert scan(root, ix).hashed == 0 and reads == []


def test_rescan_rereads_only_changed(tmp_path: Path, reads: list[str]) -> None:
    _tree_of(tmp_path)
    cache = MemoryCache()
    first = scan(tmp_path, cache)
    reads.clear()
    _write(tmp_path / "a.txt", b"alpha2")  # size + mtime change
    _write(tmp_path / "Docs" / "b.bin", os.urandom(3000), mtime_ns=OLD_NS + 1)  # same size
    res = scan(tmp_path, cache)
    assert sorted(os.path.relpath(p, tmp_path) for p in reads) == ["Docs/b.bin", "a.txt"]
    assert res.tree.at("/a.txt").content_hash != first.tree.at("/a.txt").content_hash  # type: ignore[union-attr]
    # a deleted file's cache entry is dropped
    os.unlink(tmp_path / "a.txt")
    scan(tmp_path, cache)
    assert first.tree.at("/a.txt").inode not in cache.entries  # type: ignore[union-attr]


def test_recently_modified_files_are_not_cached(tmp_path: Path, reads: list[str]) -> None:
    (tmp_path / "fresh").write_bytes(b"just written")
    cache = MemoryCache()
    scan(tmp_path, cache)
    scan(tmp_path, cache)
    assert len(reads) == 2  # kept only as a hint of its blocks, never as a hit:
    assert [e.mtime_ns for e in cache.entries.values()] == [scanner.HINT_MTIME]


def test_case_twins_and_skips(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", b"1")
    _write(tmp_path / "A.txt", b"2")
    os.mkfifo(tmp_path / "fifo")
    res = scan(tmp_path)
    assert [n.path for n in res.tree.values()] == ["/A.txt"]
    assert [n.path for n in res.tree.twins] == ["/a.txt"]
    assert ("/fifo", "not a file, folder or symlink") in res.skipped


def test_a_changed_file_keeps_its_old_blocks_while_they_match(tmp_path: Path) -> None:
    """After an append, every old block is kept (not only the ones a fresh cut would find);
    after a change in the middle, the blocks before it are kept; the content hash is always
    the whole file's."""
    from raftbox.blocks.chunker import chunk_bytes
    from raftbox.blocks.hashing import content_hash

    # fixed data, so the block boundaries are fixed: the first block ends before the edit at 3 MiB
    base = random.Random(5).randbytes(6 * 1024 * 1024 + 777)
    p = tmp_path / "f.bin"
    _write(p, base)
    cache = MemoryCache()
    first = scan(tmp_path, cache).blocklists["/f.bin"]
    assert [b for b, _ in first] == [c.id for c in chunk_bytes(base)]
    _write(p, base + b"appended", OLD_NS + 10**9)
    after = scan(tmp_path, cache)
    blocks = after.blocklists["/f.bin"]
    assert blocks[: len(first)] == first and len(blocks) == len(first) + 1
    assert after.tree.at("/f.bin").content_hash == content_hash(base + b"appended")
    edited = bytearray(base + b"appended")
    edited[3 * 1024 * 1024] ^= 0xFF
    _write(p, bytes(edited), OLD_NS + 2 * 10**9)
    again = scan(tmp_path, cache)
    kept = [b for b in again.blocklists["/f.bin"] if b in blocks]
    assert kept and again.blocklists["/f.bin"][0] == first[0]
    assert again.tree.at("/f.bin").content_hash == content_hash(bytes(edited))
    assert sum(s for _, s in again.blocklists["/f.bin"]) == len(edited)


def test_folders_nested_too_deep_are_held_at_the_limit(tmp_path: Path) -> None:
    """The walk never goes below `DEPTH_MAX` folders: the folder at that depth, if it holds
    anything, is skipped and held (its state unknown: never read as deleted), like the
    server's entries that deep (`limits.held_entries`)."""
    from raftbox.client.limits import DEPTH_MAX

    deep = tmp_path / "deep"
    d = deep
    for _ in range(DEPTH_MAX + 2):
        d = d / "d"
    d.mkdir(parents=True)
    (d / "bottom.txt").write_text("too deep")
    (tmp_path / "fine.txt").write_text("fine")
    res = scan(tmp_path, MemoryCache())
    held = "/deep" + "/d" * (DEPTH_MAX - 1)
    assert res.unknown == [held]
    assert [why for rel, why in res.skipped if rel == held] == [
        f"holds folders nested deeper than {DEPTH_MAX} levels"
    ]
    assert "/fine.txt" in {n.path for n in res.tree.values()}
    assert max(n.depth for n in res.tree.values()) == DEPTH_MAX
