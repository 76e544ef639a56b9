"""DiskLog: what it promises across a reopen, what it does with torn and damaged files, and when
it calls fsync. The reference for every read is MemoryStorage."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftbox.raft.disklog import (
    CorruptLogError,
    DiskLog,
    LogFailedError,
    LogLockedError,
    Persisted,
)
from raftbox.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from raftbox.raft.storage import Compacted, MemoryStorage, Unavailable

CONF = ConfState(voters=(1, 2, 3))


# -- helpers ---------------------------------------------------------------------------------------
def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    """Entries [lo, hi); the data depends only on the index, so equal (index, term) = equal entry."""
    return [Entry(term, i, data=bytes([i % 256]) * (i % 7)) for i in range(lo, hi)]


def persist(log: DiskLog, entries: Sequence[Entry] = (), hs: HardState | None = None) -> None:
    log.write(entries, hs)
    log.mark_stable(log.sync())


def segments(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.seg"))


def record_spans(buf: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record: u32 length, u32 crc, then `length` payload bytes."""
    spans, off = [], 0
    while off < len(buf):
        (length,) = struct.unpack_from("<I", buf, off)
        spans.append((off, off + 8 + length))
        off += 8 + length
    return spans


def flip_byte(path: Path, offset: int) -> None:
    buf = bytearray(path.read_bytes())
    buf[offset] ^= 0xFF
    path.write_bytes(bytes(buf))


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count fsync/fdatasync calls (and skip the real ones, for speed)."""
    calls: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(os, "fdatasync", lambda fd: calls.append("fdatasync"))
    return calls


def assert_reads_equal(log: DiskLog, ref: MemoryStorage) -> None:
    first, last = ref.first_index(), ref.last_index()
    assert (log.first_index(), log.last_index()) == (first, last)
    assert log.snapshot() == ref.snapshot()
    assert log.initial_state() == ref.initial_state()
    assert [log.term(i) for i in range(first - 1, last + 1)] == [
        ref.term(i) for i in range(first - 1, last + 1)
    ]
    for max_bytes in (None, 0, 40):
        assert log.entries(first, last + 1, max_bytes) == ref.entries(first, last + 1, max_bytes)
    if first > 1:
        with pytest.raises(Compacted):
            log.term(first - 2)
        with pytest.raises(Compacted):
            log.entries(first - 1, last + 1)
    with pytest.raises(Unavailable):
        log.term(last + 1)
    with pytest.raises(Unavailable):
        log.entries(first, last + 2)


def as_reopened(ref: MemoryStorage) -> MemoryStorage:
    """What a reopened log holds: the snapshot, the entries after it, commit >= snapshot index."""
    snap_index = ref.snapshot().meta.index
    out = MemoryStorage()
    out.apply_snapshot(ref.snapshot())
    out.append(
        ref.entries(snap_index + 1, ref.last_index() + 1) if ref.last_index() > snap_index else []
    )
    hs = ref.hard_state
    out.set_hard_state(HardState(hs.term, hs.vote, max(hs.commit, snap_index)))
    return out


# -- round trip ------------------------------------------------------------------------------------
def test_entries_hard_state_and_snapshot_survive_reopen(tmp_path: Path) -> None:  # real fsyncs
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11), HardState(term=2, vote=3, commit=7))
        snap = log.create_snapshot(5, CONF, b"state at 5")
        log.mark_stable(log.sync())
        assert log.snapshot() == snap == Snapshot(SnapshotMeta(5, 1, CONF), b"state at 5")
    with DiskLog.open(tmp_path) as log:
        assert log.initial_state() == (HardState(2, 3, 7), CONF)
        assert log.snapshot() == snap
        assert (log.first_index(), log.last_index()) == (6, 10)
        assert log.entries(6, 11) == ents(6, 11)


def test_an_empty_directory_is_an_empty_log(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path / "new") as log:
        assert_reads_equal(log, MemoryStorage())


def test_a_directory_is_open_in_one_disklog_at_a_time(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path):
        with pytest.raises(LogLockedError):
            DiskLog.open(tmp_path)
    DiskLog.open(tmp_path).close()


# -- reads identical to MemoryStorage, before and after reopen ---------------------------------------
OPS = st.lists(
    st.one_of(
        # (op, a, b, c, sync afterwards?)
        st.tuples(
            st.just("append"),
            st.integers(1, 6),
            st.integers(0, 5),
            st.integers(0, 1),
            st.booleans(),
        ),
        st.tuples(
            st.just("hard_state"),
            st.integers(0, 1),
            st.integers(0, 3),
            st.integers(0, 4),
            st.booleans(),
        ),
        st.tuples(
            st.just("create_snapshot"),
            st.integers(0, 9),
            st.integers(0, 3),
            st.just(0),
            st.booleans(),
        ),
        st.tuples(
            st.just("install_snapshot"),
            st.integers(0, 4),
            st.integers(0, 1),
            st.just(0),
            st.booleans(),
        ),
        st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0), st.just(True)),
    ),
    max_size=40,
)


@settings(max_examples=75, deadline=None)
@given(ops=OPS, segment_max_bytes=st.sampled_from([1, 120, 400, 1 << 20]))
def test_reads_match_memory_storage_before_and_after_reopen(
    ops: list[tuple], segment_max_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as d, mock.patch("os.fsync"), mock.patch("os.fdatasync"):
        log = DiskLog.open(d, segment_max_bytes=segment_max_bytes)
        ref = MemoryStorage()
        max_term = 1
        for op, a, b, c, sync in ops:
            hs, snap_index, last = ref.hard_state, ref.snapshot().meta.index, ref.last_index()
            match op:
                case (
                    "append"
                ):  # a entries, from up to b back (never below commit), term bumped by c
                    max_term += c
                    lo = max(last + 1 - b, hs.commit + 1, snap_index + 1)
                    new = ents(lo, lo + a, max_term)
                    log.write(new)
                    ref.append(new)
                case "hard_state":  # term bumped by a, vote b, commit advanced by c
                    new_hs = HardState(max(1, hs.term + a), b, min(last, hs.commit + c))
                    log.write([], new_hs)
                    ref.set_hard_state(new_hs)
                case "create_snapshot" if (
                    hs.commit > snap_index
                ):  # at a committed index, compact b below
                    index = snap_index + 1 + a % (hs.commit - snap_index)
                    made = log.create_snapshot(index, CONF, b"app %d" % index)
                    assert made == ref.create_snapshot(index, CONF, b"app %d" % index)
                    log.compact(max(0, index - b))
                    ref.compact(max(0, index - b))
                case "install_snapshot":  # a leader's snapshot a past our commit, term bumped by b
                    max_term += b
                    index = max(hs.commit, snap_index) + 1 + a
                    snap = Snapshot(SnapshotMeta(index, max_term, CONF), b"leader %d" % index)
                    log.save_snapshot(snap)
                    ref.apply_snapshot(snap)
                    new_hs = HardState(max(hs.term, max_term), hs.vote, index)
                    log.write([], new_hs)
                    ref.set_hard_state(new_hs)
            if sync:
                log.mark_stable(log.sync())
                assert_reads_equal(log, ref)
            if op == "reopen":
                log.close()
                log = DiskLog.open(d, segment_max_bytes=segment_max_bytes)
                ref = as_reopened(ref)
                assert_reads_equal(log, ref)
        log.mark_stable(log.sync())
        log.close()
        with DiskLog.open(d, segment_max_bytes=segment_max_bytes) as log:
            assert_reads_equal(log, as_reopened(ref))


# -- visibility: nothing is read before mark_stable ------------------------------------------------
def test_writes_are_invisible_to_reads_until_mark_stable(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        log.write(ents(1, 4), HardState(1, 1, 2))
        log.create_snapshot(2, CONF, b"s")
        persisted = log.sync()
        assert (log.last_index(), log.snapshot(), log.initial_state()[0]) == (
            0,
            Snapshot(),
            HardState(),
        )
        with pytest.raises(Unavailable):
            log.entries(1, 2)
        log.mark_stable(persisted)
        assert log.last_index() == 3 and log.snapshot().meta.index == 2
        assert log.initial_state()[0] == HardState(1, 1, 2)


def test_mark_stable_takes_each_sync_once_in_order(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        log.write(ents(1, 2))
        first = log.sync()
        log.write(ents(2, 3))
        second = log.sync()
        assert isinstance(second, Persisted)
        with pytest.raises(ValueError):
            log.mark_stable(second)
        log.mark_stable(first)
        with pytest.raises(ValueError):
            log.mark_stable(first)
        log.mark_stable(second)
        assert log.last_index() == 2


# -- conflicting suffixes --------------------------------------------------------------------------
def test_a_conflicting_suffix_is_truncated_and_stays_truncated(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11, term=1))
        persist(log, ents(6, 9, term=2))
        assert log.entries(1, 9) == ents(1, 6, 1) + ents(6, 9, 2)
        assert log.last_index() == 8
    with DiskLog.open(tmp_path) as log:
        assert log.entries(1, 9) == ents(1, 6, 1) + ents(6, 9, 2)
        assert log.last_index() == 8


def test_truncation_across_segments_deletes_the_later_ones(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    with DiskLog.open(tmp_path, segment_max_bytes=100) as log:
        persist(log, ents(1, 31, term=1))
        assert len(segments(tmp_path)) > 3
        persist(log, ents(4, 6, term=2))
        assert log.entries(1, 6) == ents(1, 4, 1) + ents(4, 6, 2)
    assert len(segments(tmp_path)) <= 2
    with DiskLog.open(tmp_path, segment_max_bytes=100) as log:
        assert log.last_index() == 5
        assert log.entries(1, 6) == ents(1, 4, 1) + ents(4, 6, 2)
        persist(log, ents(6, 8, term=2))
    with DiskLog.open(tmp_path) as log:
        assert log.entries(1, 8) == ents(1, 4, 1) + ents(4, 8, 2)


def test_entries_already_on_disk_are_not_rewritten(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11))
        size = segments(tmp_path)[0].stat().st_size
        ref = MemoryStorage()
        ref.append(ents(1, 11))
        ref.append(ents(3, 11))
        persist(log, ents(3, 11))
        assert segments(tmp_path)[0].stat().st_size == size
        assert_reads_equal(log, ref)


def test_a_gap_is_refused(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 3))
        with pytest.raises(Unavailable):
            log.write(ents(5, 6))
        with pytest.raises(ValueError):
            log.write([Entry(1, 3), Entry(1, 5)])


# -- segments, snapshots, compaction ---------------------------------------------------------------
def test_segments_roll_at_segment_max_bytes(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path, segment_max_bytes=120) as log:
        persist(log, ents(1, 41))
    files = segments(tmp_path)
    assert len(files) > 5
    assert all(f.stat().st_size <= 120 for f in files)
    names = [tuple(int(part, 16) for part in f.stem.split("-")) for f in files]
    assert [seq for seq, _ in names] == list(range(1, len(files) + 1))
    assert names[0][1] == 1
    with DiskLog.open(tmp_path, segment_max_bytes=120) as log:
        assert log.entries(1, 41) == ents(1, 41)


def test_compact_deletes_segments_at_or_below_the_snapshot(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    with DiskLog.open(tmp_path, segment_max_bytes=120) as log:
        persist(log, ents(1, 41), HardState(1, 1, 30))
        before = segments(tmp_path)
        log.create_snapshot(25, CONF, b"app")
        with pytest.raises(ValueError):
            log.compact(26)  # past the snapshot: would lose entries
        log.compact(25)
        log.mark_stable(log.sync())
        assert log.first_index() == 26
    after = segments(tmp_path)
    assert 0 < len(after) < len(before)
    assert after == before[-len(after) :]
    first_kept = int(after[0].stem.split("-")[1], 16)
    assert first_kept <= 26 < first_kept + 10  # the kept segment holds 26, the deleted ones did not
    with DiskLog.open(tmp_path, segment_max_bytes=120) as log:
        assert log.snapshot().meta == SnapshotMeta(25, 1, CONF)
        assert (log.first_index(), log.last_index()) == (26, 40)
        assert log.entries(26, 41) == ents(26, 41)


def test_compact_keeps_the_last_segment(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11), HardState(1, 1, 10))
        log.create_snapshot(10, CONF, b"app")
        log.compact(10)
        log.mark_stable(log.sync())
        persist(log, ents(11, 13))
    assert len(segments(tmp_path)) == 1
    with DiskLog.open(tmp_path) as log:
        assert (log.first_index(), log.last_index()) == (11, 12)


def test_an_installed_snapshot_replaces_the_log(tmp_path: Path, fsyncs: list[str]) -> None:
    snap = Snapshot(SnapshotMeta(100, 3, CONF), b"from the leader")
    with DiskLog.open(tmp_path, segment_max_bytes=100) as log:
        persist(log, ents(1, 21))
        log.save_snapshot(snap)
        assert segments(tmp_path) == []
        log.write(ents(101, 103, term=3), HardState(3, 0, 100))
        log.mark_stable(log.sync())
        assert (log.first_index(), log.last_index(), log.term(100)) == (101, 102, 3)
        log.save_snapshot(Snapshot(SnapshotMeta(50, 2)))  # older: ignored
    with DiskLog.open(tmp_path) as log:
        assert log.snapshot() == snap
        assert log.initial_state() == (HardState(3, 0, 100), CONF)
        assert log.entries(101, 103) == ents(101, 103, term=3)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("snap_meta", "kept"),
    [
        (SnapshotMeta(20, 2), False),  # the old log ends before the snapshot
        (SnapshotMeta(5, 2), False),  # the old log disagrees with the snapshot's term at 5
        (SnapshotMeta(5, 1), True),  # the old log agrees at 5: by log matching, it is the leader's
    ],
)
def test_a_log_left_by_a_crash_in_save_snapshot(
    tmp_path: Path, fsyncs: list[str], snap_meta: SnapshotMeta, kept: bool
) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11, term=1))
        old = {p.name: p.read_bytes() for p in segments(tmp_path)}
        log.save_snapshot(Snapshot(snap_meta, b"x"))
    for name, data in old.items():  # the unlinks never reached the disk
        (tmp_path / "wal" / name).write_bytes(data)
    with DiskLog.open(tmp_path) as log:
        assert log.snapshot().meta == snap_meta
        assert log.first_index() == snap_meta.index + 1
        assert log.last_index() == (10 if kept else snap_meta.index)
        assert log.initial_state()[0].commit == snap_meta.index
    assert bool(segments(tmp_path)) == kept


# -- hard state ------------------------------------------------------------------------------------
def test_a_commit_only_change_costs_no_fsync(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 6), HardState(1, 1, 0))
        fsyncs.clear()
        persist(log, [], HardState(1, 1, 3))
        assert fsyncs == []
        persist(log, ents(6, 8), HardState(1, 1, 4))
        assert fsyncs == ["fdatasync"]  # the batch, carrying both commit records with it
        fsyncs.clear()
        persist(log, ents(8, 9), HardState(2, 2, 5))
        assert fsyncs == ["fdatasync", "fsync", "fsync"]  # segment, then hardstate.tmp and the dir
        fsyncs.clear()
        persist(log, [], HardState(2, 2, 6))
        assert fsyncs == []
    with DiskLog.open(tmp_path) as log:
        assert log.initial_state()[0] == HardState(2, 2, 6)


def test_a_lost_commit_record_recovers_a_lower_commit(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 6), HardState(1, 1, 2))
        synced = segments(tmp_path)[0].stat().st_size
        persist(log, [], HardState(1, 1, 5))  # not fsynced: a crash may lose it
    os.truncate(segments(tmp_path)[0], synced)
    with DiskLog.open(tmp_path) as log:
        assert log.initial_state()[0] == HardState(1, 1, 2)


def test_a_leftover_temp_file_is_ignored(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 3), HardState(1, 1, 1))
        log.create_snapshot(1, CONF, b"s")
    (tmp_path / "hardstate.tmp").write_bytes(b"half a hard st")
    (tmp_path / "snapshot.tmp").write_bytes(b"\0" * 10)
    with DiskLog.open(tmp_path) as log:
        assert log.initial_state() == (HardState(1, 1, 1), CONF)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_hard_state_file_is_corruption(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 3), HardState(1, 1, 1))
    flip_byte(tmp_path / "hardstate", 9)
    with pytest.raises(CorruptLogError, match="hardstate"):
        DiskLog.open(tmp_path)


# -- torn tails ------------------------------------------------------------------------------------
def test_a_torn_last_record_is_truncated_at_every_cut(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 5))
        persist(log, [Entry(1, 5, data=b"the last one")])
    seg = segments(tmp_path)[0]
    whole = seg.read_bytes()
    start, end = record_spans(whole)[-1]
    for cut in range(start + 1, end):
        seg.write_bytes(whole[:cut])
        with DiskLog.open(tmp_path) as log:
            assert log.last_index() == 4
            assert log.entries(1, 5) == ents(1, 5)
        assert seg.stat().st_size == start
        with DiskLog.open(tmp_path) as log:  # and the log goes on from there
            persist(log, ents(5, 6))
        with DiskLog.open(tmp_path) as log:
            assert log.entries(1, 6) == ents(1, 6)


@pytest.mark.parametrize(
    "tail", [bytes(1), bytes(7), bytes(4096), b"\xde\xad\xbe\xef" * 9, b"\xff" * 8 + b"junk"]
)
def test_zeros_or_garbage_after_the_last_record_are_truncated(
    tmp_path: Path, fsyncs: list[str], tail: bytes
) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 6))
    seg = segments(tmp_path)[0]
    whole = seg.read_bytes()
    seg.write_bytes(whole + tail)
    with DiskLog.open(tmp_path) as log:
        assert log.entries(1, 6) == ents(1, 6)
    assert seg.read_bytes() == whole


def test_a_whole_last_record_with_an_unwritten_sector_is_a_torn_tail(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 3))
        persist(log, [Entry(1, 3, data=b"x" * 2000)])
    seg = segments(tmp_path)[0]
    buf = bytearray(seg.read_bytes())
    start, end = record_spans(bytes(buf))[-1]
    buf[1024:1536] = bytes(512)  # a sector in the middle of the record never made it
    seg.write_bytes(bytes(buf))
    with DiskLog.open(tmp_path) as log:
        assert log.last_index() == 2
    assert seg.stat().st_size == start


def test_a_length_over_record_max_bytes_is_not_allocated(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 4))
    seg = segments(tmp_path)[0]
    whole = seg.read_bytes()
    seg.write_bytes(whole + struct.pack("<II", 0xFFFFFFF0, 0) + b"partial")
    with DiskLog.open(tmp_path, record_max_bytes=1024) as log:
        assert log.last_index() == 3
    with DiskLog.open(tmp_path, record_max_bytes=1024) as log, pytest.raises(ValueError):
        log.write([Entry(1, 4, data=bytes(2000))])


# -- damage ----------------------------------------------------------------------------------------
def test_a_flipped_byte_before_valid_records_is_corruption(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11))
    seg = segments(tmp_path)[0]
    start, end = record_spans(seg.read_bytes())[3]
    flip_byte(seg, (start + end) // 2)
    with pytest.raises(CorruptLogError) as info:
        DiskLog.open(tmp_path)
    assert (info.value.path, info.value.offset) == (seg, start)
    assert str(seg) in str(info.value) and f"offset {start}" in str(info.value)


def test_a_bad_length_before_valid_records_is_corruption(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11))
    seg = segments(tmp_path)[0]
    start, _ = record_spans(seg.read_bytes())[3]
    flip_byte(seg, start + 3)  # the length's high byte: 0xFF......
    with pytest.raises(CorruptLogError) as info:
        DiskLog.open(tmp_path)
    assert info.value.offset == start


def test_a_flipped_byte_in_the_last_whole_record_is_corruption_not_a_torn_tail(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 6))
    seg = segments(tmp_path)[0]
    start, end = record_spans(seg.read_bytes())[-1]
    flip_byte(seg, end - 1)
    with pytest.raises(CorruptLogError) as info:
        DiskLog.open(tmp_path)
    assert info.value.offset == start


def test_a_bad_record_in_a_segment_before_the_last_is_corruption(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    with DiskLog.open(tmp_path, segment_max_bytes=100) as log:
        persist(log, ents(1, 21))
    seg = segments(tmp_path)[1]
    whole = seg.read_bytes()
    start, _ = record_spans(whole)[-1]
    seg.write_bytes(whole[:-1])  # a torn tail, but not in the last segment
    with pytest.raises(CorruptLogError) as info:
        DiskLog.open(tmp_path, segment_max_bytes=100)
    assert (info.value.path, info.value.offset) == (seg, start)


def test_a_missing_segment_is_corruption(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path, segment_max_bytes=100) as log:
        persist(log, ents(1, 21))
    segments(tmp_path)[2].unlink()
    with pytest.raises(CorruptLogError, match="missing"):
        DiskLog.open(tmp_path)


def test_a_gap_in_indexes_is_corruption(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path, segment_max_bytes=100) as log:
        persist(log, ents(1, 21))
    files = segments(tmp_path)
    for f in files[2:]:  # drop the entries of the third segment, keep its number
        f.rename(f.with_suffix(".old"))
    seq, first = files[3].stem.split("-")
    files[3].with_suffix(".old").rename(files[2].with_name(f"{int(seq, 16) - 1:016x}-{first}.seg"))
    with pytest.raises(CorruptLogError, match="previous one ends"):
        DiskLog.open(tmp_path)


# -- failures --------------------------------------------------------------------------------------
def test_a_failed_sync_fails_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = DiskLog.open(tmp_path)
    log.write(ents(1, 3))

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fdatasync", fail)
    with pytest.raises(LogFailedError):
        log.sync()
    monkeypatch.undo()
    with pytest.raises(LogFailedError):
        log.write(ents(3, 4))
    assert log.last_index() == 0
    log.close()
    with DiskLog.open(tmp_path) as log:
        assert log.last_index() == 2  # the page cache had it; after a real EIO it might not


def test_the_files_are_where_the_docstring_says(tmp_path: Path, fsyncs: list[str]) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 3), HardState(1, 1, 2))
        log.create_snapshot(1, CONF, b"s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LOCK", "hardstate", "snapshot", "wal"]
    assert [p.name for p in segments(tmp_path)] == ["0000000000000001-0000000000000001.seg"]
    shutil.rmtree(tmp_path / "wal")
    with pytest.raises(CorruptLogError, match="commit index 2"):  # entry 2 is gone
        DiskLog.open(tmp_path)


# -- a snapshot prepared off the writer's thread ----------------------------------------------------


def test_a_prepared_snapshot_is_renamed_in_and_survives_reopen(tmp_path: Path) -> None:
    data = b"state at 5"
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11), HardState(term=2, vote=3, commit=7))
        prepared = log.prepare_snapshot(5, 1, CONF, data)
        assert Path(prepared.tmp_path).parent == tmp_path
        assert not (tmp_path / "snapshot").exists()  # nothing visible before create_snapshot
        snap = log.create_snapshot(5, CONF, data, prepared)
        log.mark_stable(log.sync())
        assert log.snapshot() == snap == Snapshot(SnapshotMeta(5, 1, CONF), data)
        assert not Path(prepared.tmp_path).exists()
    with DiskLog.open(tmp_path) as log:
        assert log.snapshot() == snap
        assert (log.first_index(), log.last_index()) == (6, 10)
    assert list(tmp_path.glob("*.tmp")) == []


def test_a_prepared_snapshot_that_lost_to_a_newer_one_is_deleted(tmp_path: Path) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11), HardState(term=2, vote=3, commit=9))
        old = log.prepare_snapshot(5, 1, CONF, b"at 5")
        newer = log.create_snapshot(8, CONF, b"at 8")
        assert log.create_snapshot(5, CONF, b"at 5", old) == newer
        log.mark_stable(log.sync())
        assert list(tmp_path.glob("*.tmp")) == []
    with DiskLog.open(tmp_path) as log:
        assert log.snapshot() == newer


def test_a_prepared_snapshot_for_other_data_is_not_used(tmp_path: Path) -> None:
    """The file must hold exactly the snapshot recorded: a mismatch writes it afresh."""
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11), HardState(term=2, vote=3, commit=9))
        wrong = log.prepare_snapshot(5, 1, CONF, b"other bytes")
        snap = log.create_snapshot(5, CONF, b"at 5", wrong)
        log.mark_stable(log.sync())
        assert not Path(wrong.tmp_path).exists()
    with DiskLog.open(tmp_path) as log:
        assert log.snapshot() == snap == Snapshot(SnapshotMeta(5, 1, CONF), b"at 5")


def test_a_crash_between_prepare_and_create_keeps_the_old_snapshot(tmp_path: Path) -> None:
    with DiskLog.open(tmp_path) as log:
        persist(log, ents(1, 11), HardState(term=2, vote=3, commit=9))
        first = log.create_snapshot(3, CONF, b"at 3")
        log.mark_stable(log.sync())
        log.prepare_snapshot(8, 1, CONF, b"at 8")  # and the process dies here
    with DiskLog.open(tmp_path) as log:
        assert log.snapshot() == first
        assert log.last_index() == 10
    assert list(tmp_path.glob("*.tmp")) == []
