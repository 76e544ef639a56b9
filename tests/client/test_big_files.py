"""Big files (issue 16): downloads built from the file they replace (`plan_rebuild`,
`copy_range`), uploads that trust the scan's hashes while the stat holds; sync passes against a
real `raftbox up` where a big file changes a little, or changes while it is transferred.

What must hold: the new version is right byte for byte; only the blocks the old version lacks
cross the wire; the old version's bytes are copied by the kernel only while its stat is still
the scan's (a file edited after the scan is never a copy source: its edit is kept as a
conflicted copy, and the download is right anyway); an upload whose file is written to while
it is read is cut again, never sent as the scan saw it.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from raftbox.client import localfs
from raftbox.client.config import Config
from raftbox.client.engine import Options, Summary, SyncEngine
from raftbox.client.executor import Executor
from raftbox.client.executor import downloads as D
from raftbox.client.executor import uploads as U
from raftbox.client.executor.downloads import plan_rebuild

MiB = 1024 * 1024


# -- pure: the rebuild plan ------------------------------------------------------------------------


def test_plan_rebuild_append_copies_the_kept_prefix_in_one_range() -> None:
    old = [("a", 10), ("b", 20), ("c", 5)]
    new = [("a", 10), ("b", 20), ("d", 7), ("e", 3)]
    copies, rest = plan_rebuild(new, old)
    assert copies == [(0, 0, 30)]
    assert rest == [("d", 30, 7), ("e", 37, 3)]


def test_plan_rebuild_insertion_shifts_the_tail() -> None:
    old = [("a", 10), ("b", 20), ("c", 5)]
    new = [("a", 10), ("x", 21), ("c", 5)]  # b replaced by a longer x: c moves by one byte
    copies, rest = plan_rebuild(new, old)
    assert copies == [(0, 0, 10), (30, 31, 5)]
    assert rest == [("x", 10, 21)]


def test_plan_rebuild_repeated_and_reordered_blocks() -> None:
    old = [("a", 4), ("b", 4)]
    new = [("b", 4), ("a", 4), ("a", 4), ("n", 1)]
    copies, rest = plan_rebuild(new, old)
    assert copies == [(4, 0, 4), (0, 4, 4), (0, 8, 4)]
    assert rest == [("n", 12, 1)]
    assert plan_rebuild(new, []) == ([], [("b", 0, 4), ("a", 4, 4), ("a", 8, 4), ("n", 12, 1)])


def test_plan_rebuild_never_copies_a_block_of_another_size() -> None:
    assert plan_rebuild([("a", 5)], [("a", 4)]) == ([], [("a", 0, 5)])


# -- copy_range ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [True, False])
def test_copy_range_copies_at_offsets(tmp_path: Path, monkeypatch, kernel: bool) -> None:
    if not kernel:
        monkeypatch.setattr(localfs, "_copy_file_range_ok", False)
    src_bytes = os.urandom(3 * MiB + 5)
    (tmp_path / "src").write_bytes(src_bytes)
    (tmp_path / "dst").write_bytes(b"\0" * 100)
    with open(tmp_path / "src", "rb") as s, open(tmp_path / "dst", "r+b") as d:
        localfs.copy_range(s.fileno(), d.fileno(), 7, 50, 3 * MiB - 2)
        with pytest.raises(EOFError):  # the source is shorter than asked: it changed
            localfs.copy_range(s.fileno(), d.fileno(), 3 * MiB, 0, 10)
    got = (tmp_path / "dst").read_bytes()
    assert got[50:] == src_bytes[7 : 7 + 3 * MiB - 2]


# -- sync passes -----------------------------------------------------------------------------------


def run_sync(root: Path, cfg: Config) -> Summary:
    async def go() -> Summary:
        async with SyncEngine(root, cfg, Options()) as e:
            return await e.sync()

    return asyncio.run(go())


def plan_change_execute(root: Path, cfg: Config, change):
    """Plan a pass (with the scan's start time, as the engine runs it), call `change()`, then
    execute the plan made before it."""

    async def go():
        async with SyncEngine(root, cfg, Options()) as e:
            p, scan = await e.plan_pass()
            await asyncio.to_thread(change)
            ex = Executor(e.root, e.index, e.remote, host=e.opt.host, today="2026-01-02",
                          chunking=e.chunking, blocklists=scan.blocklists,
                          scan_started_ns=e.scan_started_ns)  # fmt: skip
            out = await ex.run(p.ops)
            return p, out, ex.c

    return asyncio.run(go())


def write_old(p: Path, data: bytes, age_s: int) -> None:
    """Write `data` with an mtime `age_s` in the past (not racily clean at any later scan)."""
    p.write_bytes(data)
    t = time.time_ns() - age_s * 1_000_000_000
    os.utime(p, ns=(t, t))


@pytest.fixture
def pair(account, tmp_path: Path):
    cfg = account()
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    return a, b, cfg


@pytest.fixture
def copies(monkeypatch) -> list[int]:
    """The sizes `copy_range` copied (the kernel copies from the replaced file)."""
    seen: list[int] = []
    real = localfs.copy_range

    def spy(src: int, dst: int, s_off: int, d_off: int, n: int) -> None:
        seen.append(n)
        real(src, dst, s_off, d_off, n)

    monkeypatch.setattr(localfs, "copy_range", spy)
    return seen


def versions(seed: int) -> tuple[bytes, bytes]:
    """A 12 MiB file and the same with 100 bytes inserted at 3 MiB (fixed data: fixed cuts)."""
    rng = random.Random(seed)
    base = rng.randbytes(12 * MiB)
    return base, base[: 3 * MiB] + rng.randbytes(100) + base[3 * MiB :]


def edited_upstream(a: Path, b: Path, cfg: Config, seed: int) -> tuple[bytes, bytes]:
    """`big.bin` synced on both sides as `versions(seed)[0]`, then A's insertion uploaded (B
    not synced since); returns both versions."""
    v1, v2 = versions(seed)
    write_old(a / "big.bin", v1, 3600)
    run_sync(a, cfg)
    run_sync(b, cfg)
    write_old(a / "big.bin", v2, 1800)
    run_sync(a, cfg)
    return v1, v2


def test_insertion_in_a_big_file_fetches_only_the_new_blocks(pair, copies) -> None:
    a, b, cfg = pair
    v1, v2 = edited_upstream(a, b, cfg, 16)
    s = run_sync(b, cfg)
    assert s.ok and s.counters.downloaded_files == 1
    assert (b / "big.bin").read_bytes() == v2
    # Only the one or two ~1 MiB blocks around the insertion come over the wire (before, a
    # missing block made the next 256 be fetched too, local or not: ~9 MiB here).
    assert s.bytes_received < 4 * MiB
    assert s.counters.reused_bytes > 9 * MiB
    assert sum(copies) == s.counters.reused_bytes  # all of it copied in the kernel
    # Installed as the server's version: nothing to do next time, on either side.
    for root in (a, b):
        s = run_sync(root, cfg)
        assert s.ok and s.counters.downloaded_files == 0 and s.counters.uploaded_files == 0


def test_a_big_file_edited_after_the_scan_is_no_copy_source(pair, copies) -> None:
    a, b, cfg = pair
    v1, v2 = edited_upstream(a, b, cfg, 17)
    edited = bytearray(v1)
    edited[5 * MiB : 5 * MiB + 8] = b"B edits"[:8].ljust(8, b"!")

    def edit() -> None:  # same size, new mtime: after the scan that planned the download
        with open(b / "big.bin", "r+b") as f:
            f.seek(5 * MiB)
            f.write(bytes(edited[5 * MiB : 5 * MiB + 8]))

    p, _out, c = plan_change_execute(b, cfg, edit)
    assert [op.kind.value for op in p.ops] == ["download"]
    assert copies == []
    assert (b / "big.bin").read_bytes() == v2
    assert c.conflicts == 1
    kept = [n for n in os.listdir(b) if "conflicted copy" in n]
    assert len(kept) == 1 and (b / kept[0]).read_bytes() == bytes(edited)


def test_a_copy_source_changed_while_copied_skips_the_download(pair, monkeypatch) -> None:
    """The stat is checked again on the file opened for the copy: a change between the plan's
    check and the copy (staged here inside that check) is caught and nothing is installed from
    it; the sync's next pass sees the edit and keeps it as a conflicted copy."""
    a, b, cfg = pair
    v1, v2 = edited_upstream(a, b, cfg, 18)
    edited = v1[:100] + b"changed!" + v1[108:]
    real_old_blocks = D.Downloads._old_blocks
    staged: list[bool] = []

    def stale_old_blocks(self, op):  # as if the edit landed just after this check
        got = real_old_blocks(self, op)
        if not staged:
            staged.append(bool(got))
            with open(b / "big.bin", "r+b") as f:
                f.seek(100)
                f.write(b"changed!")
        return got

    monkeypatch.setattr(D.Downloads, "_old_blocks", stale_old_blocks)
    s = run_sync(b, cfg)
    assert staged == [True]  # it was a copy source when checked
    assert s.ok and s.counters.skipped >= 1 and s.counters.conflicts == 1
    assert (b / "big.bin").read_bytes() == v2
    kept = [n for n in os.listdir(b) if "conflicted copy" in n]
    assert len(kept) == 1 and (b / kept[0]).read_bytes() == edited
    assert not os.listdir(b / ".raftbox" / "tmp")


def test_a_big_file_written_to_during_its_upload_is_cut_again(pair, monkeypatch) -> None:
    """The upload reads the blocks the scan hashed without hashing them again: the stat,
    checked around each piece, must catch a write made while the upload runs (staged at the
    first send, while later pieces are still to be read)."""
    a, b, cfg = pair
    rng = random.Random(19)
    write_old(a / "big.bin", rng.randbytes(12 * MiB), 3600)
    monkeypatch.setattr(U, "STREAM_BYTES", 2 * MiB)
    real = U.Uploads._send_missing_known
    staged: list[bool] = []

    async def write_then_send(self, blocks, bases=None):
        if not staged:
            staged.append(True)
            with open(a / "big.bin", "r+b") as f:  # same size, in place: only the stat tells
                f.seek(10 * MiB)
                f.write(b"written during the upload")
        await real(self, blocks, bases)

    monkeypatch.setattr(U.Uploads, "_send_missing_known", write_then_send)
    s = run_sync(a, cfg)
    assert staged and s.ok and not s.counters.errors
    s = run_sync(b, cfg)
    assert s.ok and (b / "big.bin").read_bytes() == (a / "big.bin").read_bytes()
