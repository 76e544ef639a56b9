"""Replicated upload sessions: sequential offsets, concurrent pieces, finish, expiry."""

import hashlib

import pytest

from raftbox.meta.commands import (
    BLOCK_WINDOW_BYTES,
    BlockRef,
    CommitFile,
    FileMeta,
    FinishBatch,
    MetaError,
    SessionAppend,
    SessionFinish,
    SessionStart,
)
from raftbox.meta.fsm import DAY_MS

from .helpers import Driver, block, content_dump, content_hash

MiB4 = BLOCK_WINDOW_BYTES


def err(*tags, **extra):
    return MetaError(list(tags), extra)


def fake_blocks(length: int, tag: bytes) -> list[BlockRef]:
    """Stand-in blocks of the right total size (the FSM never sees the bytes)."""
    out, left, i = [], length, 0
    while left:
        n = min(left, MiB4)
        out.append(BlockRef(hashlib.sha256(tag + b"%d" % i).hexdigest(), n))
        left -= n
        i += 1
    return out


def commit(ns, path, size, **kw):
    return CommitFile(ns, path, [], size, "0" * 64, **kw)


@pytest.fixture
def d():
    return Driver()


@pytest.fixture
def ns(d):
    return d.setup()


def test_sequential_session(d, ns):
    assert d.apply(SessionStart("s1", ns, blocks=[block(b"ab")], length=2)) is None
    assert d.apply(SessionAppend("s1", ns, 2, [block(b"cde")], 3)) is None
    st = d.store.session("s1")
    assert st.length == 5 and not st.closed and not st.concurrent and st.total is None
    assert st.blocks == [block(b"ab"), block(b"cde")]
    assert st.expires_ms == st.started_ms + 7 * DAY_MS
    # a retry of an append that was applied: the SDK reads correct_offset and moves on
    assert d.apply(SessionAppend("s1", ns, 2, [block(b"cde")], 3)) == err(
        "incorrect_offset", correct_offset=5
    )
    m = d.apply(SessionFinish("s1", ns, 5, commit(ns, "/big.bin", 7), [block(b"fg")], 2))
    assert isinstance(m, FileMeta) and m.size == 7 and m.path_display == "/big.bin"
    assert d.store.file_blocks(ns, "/big.bin")[1] == [block(b"ab"), block(b"cde"), block(b"fg")]
    assert d.store.session("s1") is None  # consumed
    # the namespace now references the blocks: it may commit them without re-uploading
    again = CommitFile(ns, "/copy.bin", [block(b"ab")], 2, content_hash(b"ab"))
    assert isinstance(d.apply(again), FileMeta)


def test_sequential_errors(d, ns):
    d.apply(SessionStart("s", ns))
    assert d.apply(SessionAppend("nope", ns, 0, [], 0)) == err("not_found")
    assert d.apply(SessionAppend("s", ns + 1, 0, [], 0)) == err("not_found")  # other namespace
    assert d.apply(SessionAppend("s", ns, 3, [block(b"x")], 1)) == err(
        "incorrect_offset", correct_offset=0
    )
    assert d.apply(SessionAppend("s", ns, 0, [block(b"x")], 1, close=True)) is None
    assert d.store.session("s").closed and d.store.session("s").total == 1
    assert d.apply(SessionAppend("s", ns, 1, [block(b"y")], 1)) == err("closed")
    f = d.apply(SessionFinish("s", ns, 0, commit(ns, "/f", 1)))
    assert f == err("lookup_failed", "incorrect_offset", correct_offset=1)
    f = d.apply(SessionFinish("s", ns, 1, commit(ns, "/f", 2), [block(b"y")], 1))
    assert f == err("lookup_failed", "closed")
    assert d.apply(SessionFinish("x", ns, 0, commit(ns, "/f", 0))) == err(
        "lookup_failed", "not_found"
    )
    assert d.apply(SessionAppend("s", ns, 1, [block(b"y")], 2)).tags == ["invalid_command"]
    assert isinstance(d.apply(SessionFinish("s", ns, 1, commit(ns, "/f", 1))), FileMeta)
    assert d.apply(SessionFinish("s", ns, 1, commit(ns, "/f", 1))) == err(
        "lookup_failed", "not_found"
    )


def test_finish_with_a_path_conflict_keeps_the_session(d, ns):
    d.put(ns, "/taken", b"other")
    d.apply(SessionStart("s", ns, blocks=[block(b"a")], length=1))
    before = content_dump(d.store)
    f = d.apply(SessionFinish("s", ns, 1, commit(ns, "/taken", 2), [block(b"b")], 1))
    assert f == err("path", "conflict", "file")
    assert content_dump(d.store) == before  # the final piece was not kept either
    ok = d.apply(SessionFinish("s", ns, 1, commit(ns, "/free", 2), [block(b"b")], 1))
    assert ok.path_display == "/free"


def test_empty_session(d, ns):
    d.apply(SessionStart("s", ns, close=True))
    m = d.apply(SessionFinish("s", ns, 0, CommitFile(ns, "/e", [], 0, content_hash(b""))))
    assert m.size == 0


def test_concurrent_session(d, ns):
    assert d.apply(SessionStart("c", ns, concurrent=True)) is None
    p0, p1, last = fake_blocks(2 * MiB4, b"a"), fake_blocks(2 * MiB4, b"b"), fake_blocks(5, b"c")
    # pieces arrive out of order; the closing one may be short
    assert d.apply(SessionAppend("c", ns, 2 * MiB4, p1, 2 * MiB4)) is None
    assert d.apply(SessionAppend("c", ns, 2 * MiB4, p1, 2 * MiB4)) is None  # same piece: idempotent
    assert d.apply(SessionFinish("c", ns, 0, commit(ns, "/c", 4 * MiB4 + 5))) == err(
        "concurrent_session_not_closed"
    )
    assert d.apply(SessionAppend("c", ns, 4 * MiB4, last, 5, close=True)) is None
    st = d.store.session("c")
    assert st.closed and st.total == 4 * MiB4 + 5 and not st.contiguous()
    assert d.apply(SessionFinish("c", ns, st.total, commit(ns, "/c", st.total))) == err(
        "concurrent_session_missing_data"
    )
    assert d.apply(SessionAppend("c", ns, 0, p0, 2 * MiB4)) is None  # still accepted after close
    assert d.apply(SessionFinish("c", ns, 0, commit(ns, "/c", st.total), [block(b"x")], 1)) == err(
        "concurrent_session_data_not_allowed"
    )
    m = d.apply(SessionFinish("c", ns, st.total, commit(ns, "/c", st.total)))
    assert m.size == 4 * MiB4 + 5
    assert d.store.file_blocks(ns, "/c")[1] == p0 + p1 + last


def test_concurrent_errors(d, ns):
    assert d.apply(SessionStart("c", ns, concurrent=True, blocks=[block(b"x")], length=1)) == err(
        "concurrent_session_data_not_allowed"
    )
    assert d.apply(SessionStart("c", ns, concurrent=True, close=True)) == err(
        "concurrent_session_close_not_allowed"
    )
    d.apply(SessionStart("c", ns, concurrent=True))
    assert d.apply(SessionStart("c", ns)) == err("session_exists")
    assert d.apply(SessionAppend("c", ns, 5, fake_blocks(MiB4, b"a"), MiB4)) == err(
        "concurrent_session_invalid_offset"
    )
    assert d.apply(SessionAppend("c", ns, 0, fake_blocks(5, b"a"), 5)) == err(
        "concurrent_session_invalid_data_size"
    )
    assert d.apply(SessionAppend("c", ns, 0, fake_blocks(2 * MiB4, b"a"), 2 * MiB4)) is None
    # overlaps the first piece with different data
    assert d.apply(SessionAppend("c", ns, MiB4, fake_blocks(MiB4, b"b"), MiB4)) == err(
        "concurrent_session_invalid_offset"
    )
    # a close that would cut off data already received
    assert d.apply(SessionAppend("c", ns, 0, fake_blocks(5, b"c"), 5, close=True)) == err(
        "concurrent_session_invalid_offset"
    )
    assert d.apply(SessionAppend("c", ns, 2 * MiB4, [], 0, close=True)) is None
    assert d.apply(SessionAppend("c", ns, 2 * MiB4, [], 0, close=True)) == err("closed")
    assert d.apply(SessionAppend("c", ns, 4 * MiB4, fake_blocks(MiB4, b"d"), MiB4)) == err("closed")


def test_window_digests(d, ns):
    dg = [hashlib.sha256(b"%d" % i).digest() for i in range(3)]
    d.apply(SessionStart("s", ns))
    d.apply(SessionAppend("s", ns, 0, fake_blocks(2 * MiB4, b"a"), 2 * MiB4, window_digests=dg[:2]))
    d.apply(SessionAppend("s", ns, 2 * MiB4, fake_blocks(7, b"b"), 7, window_digests=dg[2:]))
    assert d.store.session("s").window_digests() == dg
    d.apply(SessionAppend("s", ns, 2 * MiB4 + 7, fake_blocks(1, b"c"), 1, window_digests=None))
    assert d.store.session("s").window_digests() is None
    bad = SessionAppend("s", ns, 2 * MiB4 + 8, fake_blocks(1, b"c"), 1, window_digests=dg)
    assert d.apply(bad).tags == ["invalid_command"]
    d.apply(SessionStart("t", ns))
    d.apply(SessionAppend("t", ns, 0, fake_blocks(7, b"a"), 7, window_digests=dg[:1]))
    d.apply(SessionAppend("t", ns, 7, fake_blocks(7, b"b"), 7, window_digests=dg[1:2]))
    assert d.store.session("t").window_digests() is None  # the windows would straddle pieces


def test_sessions_expire_by_stamped_time(d, ns):
    d.apply(SessionStart("old", ns, blocks=[block(b"a")], length=1))
    d.advance(7 * DAY_MS)
    assert d.apply(SessionAppend("old", ns, 1, [block(b"b")], 1)) == err("not_found")
    assert d.apply(SessionFinish("old", ns, 1, commit(ns, "/x", 1))) == err(
        "lookup_failed", "not_found"
    )
    assert d.store.session("old") is not None  # lingers until a start sweeps it
    d.apply(SessionStart("new", ns))
    assert d.store.session("old") is None and d.store.session("new") is not None


def test_finish_batch(d, ns):
    d.apply(SessionStart("a", ns, blocks=[block(b"a")], length=1, close=True))
    d.apply(SessionStart("b", ns, blocks=[block(b"b")], length=1, close=True))
    out = d.apply(
        FinishBatch(
            [
                SessionFinish("a", ns, 1, commit(ns, "/a", 1)),
                SessionFinish("zz", ns, 0, commit(ns, "/z", 0)),
                SessionFinish("b", ns, 1, commit(ns, "/b", 1)),
            ]
        )
    )
    assert out[1] == err("lookup_failed", "not_found")
    assert [m.path_display for m in (out[0], out[2])] == ["/a", "/b"]
    assert out[0].rev != out[2].rev and out[0].rev[:12] == out[2].rev[:12]
