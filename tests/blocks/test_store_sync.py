"""LocalStore's batched durability (`put` without fsync, `sync()` = one shared flush) and
`GroupSync`'s group commit: a caller's flush starts after its call, concurrent callers share."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

import pytest

from raftbox import atomic
from raftbox.blocks.stack import build_store
from raftbox.blocks.store import GroupSync, LocalStore


def bid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def fsyncs(monkeypatch):
    """Every os.fsync and syncfs call, in order: ("fsync", fd) / ("syncfs", path)."""
    calls: list[tuple[str, object]] = []
    real_fsync = os.fsync

    def fsync(fd):
        calls.append(("fsync", fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(atomic, "syncfs", lambda path: calls.append(("syncfs", str(path))))
    return calls


def test_batched_put_does_not_fsync_and_sync_flushes_once(tmp_path, fsyncs):
    s = LocalStore(str(tmp_path), sync_each_block=False)
    blocks = [b"block %d" % i for i in range(20)]

    async def go():
        for b in blocks:
            assert await s.put(bid(b), b) is True
        assert fsyncs == []  # readable, not yet durable
        for b in blocks:
            assert await s.get(bid(b)) == b
        await s.sync()

    run(go())
    assert fsyncs == [("syncfs", s.root)]
    assert s.flushes == 1


def test_sync_each_block_is_the_old_per_block_durability(tmp_path, fsyncs):
    s = LocalStore(str(tmp_path), sync_each_block=True)

    async def go():
        await s.put(bid(b"x"), b"x")
        n = len(fsyncs)
        await s.sync()
        return n

    assert run(go()) == 2  # the file, then its directory
    assert [c[0] for c in fsyncs] == ["fsync", "fsync"]  # sync() added nothing


def test_concurrent_syncs_share_flushes(tmp_path, fsyncs):
    """32 callers at once: the first runs a flush, the 31 that arrived while it ran share the
    next one (their puts may have come after the first had started)."""
    s = LocalStore(str(tmp_path), sync_each_block=False)

    async def go():
        for i in range(32):
            b = b"concurrent %d" % i
            await s.put(bid(b), b)
        await asyncio.gather(*(s.sync() for _ in range(32)))

    run(go())
    assert s.flushes == 2


def test_a_caller_arriving_during_a_flush_waits_for_the_next_one():
    """The flush running when a caller arrives may have started before its put: the caller
    must not be answered by it."""
    started = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def flush() -> None:
        order.append("flush start")
        started.set()
        release.wait(10)
        order.append("flush end")

    g = GroupSync(flush)

    async def go():
        first = asyncio.create_task(g.sync())
        await asyncio.to_thread(started.wait, 10)
        late = asyncio.create_task(g.sync())  # arrives while the first flush runs
        await asyncio.sleep(0)
        release.set()
        await first
        assert not late.done() or g.flushes == 2
        await late
        order.append("late answered")

    run(go())
    assert g.flushes == 2
    assert order == ["flush start", "flush end", "flush start", "flush end", "late answered"]


def test_a_failed_flush_raises_and_the_next_caller_flushes_again():
    calls = {"n": 0}

    def flush() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "EIO")

    g = GroupSync(flush)

    async def go():
        with pytest.raises(OSError):
            await g.sync()
        await g.sync()

    run(go())
    assert calls["n"] == 2 and g.flushes == 1


@pytest.mark.parametrize("stack", [False, True])
@pytest.mark.parametrize("leftover", [b"", b"\0" * 4096, b"not the block"])
def test_a_name_left_without_its_bytes_is_not_the_block(tmp_path, leftover, stack):
    """A machine crash between put and sync can leave a block's name with lost content; `has`
    must not report it and a later put must write it again (a commit would else reference bad
    bytes) — through the standard stack too (compression asks `has` before it puts)."""
    local = LocalStore(str(tmp_path), sync_each_block=False)
    s = build_store("file://" + str(tmp_path)) if stack else local
    data = os.urandom(4096)
    i = bid(data)
    path = local.path_of(i)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(leftover)

    async def go():
        assert not await s.has(i)
        assert await s.put(i, data) is True
        assert await s.get(i) == data
        assert await s.has(i)
        assert await s.put(i, data) is False  # now whole: no second write

    run(go())


def test_a_whole_block_from_before_a_restart_is_checked_once(tmp_path):
    data = os.urandom(4096)
    i = bid(data)
    run(LocalStore(str(tmp_path), sync_each_block=False).put(i, data))
    s = LocalStore(str(tmp_path), sync_each_block=False)  # a new process: nothing known
    reads = []
    real = s._whole

    def whole(block_id, path):
        reads.append(block_id)
        return real(block_id, path)

    s._whole = whole

    async def go():
        assert await s.has(i) and await s.has(i)
        assert await s.put(i, data) is False

    run(go())
    assert len(reads) == 2  # the first has reads the file; the put asks again, answered by the set


def test_syncfs_really_flushes(tmp_path):
    if not atomic.HAVE_SYNCFS:
        pytest.skip("no syncfs on this system: LocalStore syncs each block")
    s = LocalStore(str(tmp_path))
    assert s.sync_each_block is False

    async def go():
        await s.put(bid(b"y"), b"y")
        await s.sync()

    run(go())
    assert s.flushes == 1
