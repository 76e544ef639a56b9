"""The durable Raft log: checksummed, segmented, group-committed files (DESIGN.md §4).

`DiskLog` is the `LogStorage` the Raft core reads, kept on disk so that a restarted member comes
back with the term, vote, log and snapshot it promised to keep. Reads are served from memory by
a `MemoryStorage` (the reference semantics, used here as the in-memory view); the files are only
ever read by `DiskLog.open`.

Files
-----
    DIR/LOCK          flock'ed while open: one DiskLog per directory
    DIR/hardstate     one HARD_STATE record (term, vote, commit), replaced atomically
    DIR/snapshot      one SNAPSHOT record, replaced atomically (so only the newest exists)
    DIR/wal/SSSSSSSSSSSSSSSS-IIIIIIIIIIIIIIII.seg
                      segment number S (16 hex digits, consecutive) whose first entry is index I

"Replaced atomically" means `raftbox.atomic.replace`: write `NAME.<random>.tmp`, fsync it, rename it
over NAME, fsync DIR. The old file stays in use until the new one is durable; a `.tmp` left by a
crash is deleted at open.

A snapshot the application made can be written in two halves so that the writer never waits for
a large image to reach the disk: `prepare_snapshot` (any thread, concurrently with the writer: it
touches only a new `snapshot.<random>.tmp`) writes and fsyncs the record; `create_snapshot(...,
prepared=)` (the writer) then only renames it over `snapshot` and fsyncs DIR. A prepared file
that is not used (a newer snapshot won meanwhile) is deleted; one left by a crash, at open.

Record layout (integers little-endian)
--------------------------------------
    offset  size   field
    0       4      n, the payload length: 1 <= n <= record_max_bytes (segments)
    4       4      CRC32C (Castagnoli) of the n payload bytes
    8       1      kind: 1 ENTRY, 2 COMMIT, 3 HARD_STATE, 4 SNAPSHOT   } the payload
    9       n - 1  msgpack of an Entry | a commit index | a HardState | a Snapshot }

A segment is records back to back with no header: ENTRY records with consecutive indexes, with
COMMIT records in between. A new segment is started ("rolled") before an entry that would take
the segment past `segment_max_bytes`; its name carries the index of its first entry.

Writing: group commit
---------------------
`write(entries, hard_state)` appends records with os.write (page cache only, no fsync) and
`sync()` makes everything written since the last sync durable with one fdatasync, so one
fsync covers a whole batch of proposals. Within `sync()` the segment is synced before the hard
state file is replaced, so the hard state never names a commit index whose entry is not durable.

- A term or vote change replaces `hardstate` (in `sync()`): a vote must never be forgotten.
- A commit-only change costs no fsync: it is a COMMIT record appended after the entries it
  covers, and becomes durable with the next sync that has real work. Recovery returns the
  highest durable commit (from `hardstate`, COMMIT records, and the snapshot index), which may
  be lower than the last one written (safe; the core re-learns it) but never higher.
- Entries that conflict with the log (first new index <= last index) truncate it: later
  segments are unlinked newest first, then the segment holding the first conflicting entry is
  truncated at that entry's record, each step fsynced before the next (it is rare). A crash at
  any point therefore leaves a prefix of the old log, never a log with a hole in it.
- Rolling fdatasyncs the finished segment and fsyncs `wal/` before the next segment exists, so
  only the last segment can ever have a torn tail.
- Every unlink is followed by an fsync of `wal/`, oldest first for compaction and newest first
  for truncation or snapshot install, so the segments on disk are always one run of
  consecutive numbers and indexes (recovery checks both).

Thread-safety contract
----------------------
Two threads share a DiskLog, and never the same state:

- *The writer* (e.g. one worker thread the runtime hands each Ready to, one call at a time):
  `write`, `save_snapshot`, `create_snapshot`, `compact`, `sync`, `close`. These touch the files
  and the writer's own index of them, never the in-memory view. They must not run concurrently
  with each other.
- *The reader* (the event loop thread): the `LogStorage` reads (`initial_state`, `entries`,
  `term`, `first_index`, `last_index`, `snapshot`) and `mark_stable`. These touch only the view
  and never block on the disk.

The only hand-off is the immutable `Persisted` value `sync()` returns: what became durable, in
order. The reader passes it to `mark_stable()` (each one once, in the order they were
returned), which replays it on the view. So nothing is visible to reads before it is durable,
and the view changes only on the reader's thread. The runtime's loop is:

    persisted = await asyncio.to_thread(persist, ready)  # save_snapshot?, write, sync
    log.mark_stable(persisted)                           # then send, apply, advance

Recovery (`DiskLog.open`)
-------------------------
Read `snapshot` and `hardstate` (a bad record in either is corruption), then every segment in
order, verifying each record's length and CRC and that entry indexes are consecutive across
segments. A bad record in the last segment with no valid record anywhere after it is a torn
tail (a crash mid-write, maybe followed by zeros): it is truncated away and logged, unless it is
a complete record whose checksum fails with no all-zero sector in it, which no torn write can
produce. Any other bad record, a missing segment or a gap in indexes raises `CorruptLogError`
naming the file and byte offset: data is never skipped silently.

Entries at or below the snapshot index are ignored, so a reopened log starts right after its
snapshot. A log that ends before the snapshot, or disagrees with its term at its index, is what
a crash in the middle of `save_snapshot` leaves behind: it is deleted.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import os
import re
import secrets
import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import crc32c
import msgspec

from raftbox import atomic

from .messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from .storage import MemoryStorage, Unavailable

__all__ = [
    "RECORD_MAX_BYTES",
    "SEGMENT_MAX_BYTES",
    "CorruptLogError",
    "DiskLog",
    "DiskLogError",
    "LogFailedError",
    "LogLockedError",
    "Persisted",
    "PreparedSnapshot",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

SEGMENT_MAX_BYTES = 64 * 1024 * 1024
RECORD_MAX_BYTES = 16 * 1024 * 1024
_SECTOR_BYTES = 512  # the unit a torn write leaves unwritten (as zeros)

_HEADER = struct.Struct("<II")  # payload length, CRC32C of the payload
_LENGTH_MAX = 2**32 - 1
_SEGMENT_NAME = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})\.seg")
_SEGMENT_KIND_BYTE = re.compile(rb"[\x01\x02]")  # where a segment record's kind byte may be


# -- errors ----------------------------------------------------------------------------------------
class DiskLogError(Exception):
    """Base of the durable log's own errors (the core's Compacted/Unavailable are in storage)."""


class CorruptLogError(DiskLogError):
    """What is on disk fails verification: damaged media, or a bug. Retrying cannot help: the
    member must be repaired or replaced (e.g. wiped, to catch up from a snapshot)."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class LogFailedError(DiskLogError):
    """An earlier write or fsync failed, so what reached the disk is unknown; the log refuses
    all further writes. Restart the process: recovery finds out what survived."""


class LogLockedError(DiskLogError):
    """Another DiskLog, in this process or another, has the directory open."""


# -- records ---------------------------------------------------------------------------------------
class _Kind(enum.IntEnum):
    ENTRY = 1
    COMMIT = 2
    HARD_STATE = 3
    SNAPSHOT = 4


_DECODERS: dict[int, msgspec.msgpack.Decoder] = {
    _Kind.ENTRY: msgspec.msgpack.Decoder(Entry),
    _Kind.COMMIT: msgspec.msgpack.Decoder(int),
    _Kind.HARD_STATE: msgspec.msgpack.Decoder(HardState),
    _Kind.SNAPSHOT: msgspec.msgpack.Decoder(Snapshot),
}
_encoder = msgspec.msgpack.Encoder()


def _record(kind: _Kind, value: object) -> bytearray:
    buf = bytearray(_HEADER.size + 1)
    buf[_HEADER.size] = kind
    _encoder.encode_into(value, buf, -1)
    length = len(buf) - _HEADER.size
    if length > _LENGTH_MAX:
        raise ValueError(f"a {kind.name} record of {length} bytes does not fit the format")
    _HEADER.pack_into(buf, 0, length, crc32c.crc32c(memoryview(buf)[_HEADER.size :]))
    return buf


class _Bad(enum.Enum):
    """Why there is no valid record at an offset."""

    SHORT_HEADER = "truncated record header"
    BAD_LENGTH = "record length out of bounds"
    SHORT_PAYLOAD = "truncated record payload"
    CHECKSUM = "record checksum mismatch"


def _parse(buf: bytes, off: int, max_bytes: int) -> tuple[int, memoryview, int] | _Bad:
    """The record at `off` as (kind, body, end offset), or why there is none."""
    if len(buf) - off < _HEADER.size:
        return _Bad.SHORT_HEADER
    length, crc = _HEADER.unpack_from(buf, off)
    if not 1 <= length <= max_bytes:
        return _Bad.BAD_LENGTH
    end = off + _HEADER.size + length
    if end > len(buf):
        return _Bad.SHORT_PAYLOAD
    payload = memoryview(buf)[off + _HEADER.size : end]
    if crc32c.crc32c(payload) != crc:
        return _Bad.CHECKSUM
    return payload[0], payload[1:], end


def _decode(path: Path, off: int, kind: int, body: memoryview, expected: set[_Kind]) -> object:
    if kind not in expected:
        raise CorruptLogError(path, off, f"unexpected record kind {kind}")
    try:
        return _DECODERS[kind].decode(body)
    except msgspec.MsgspecError as e:
        raise CorruptLogError(path, off, f"undecodable {_Kind(kind).name} record: {e}") from e


def _is_torn_tail(buf: bytes, off: int, bad: _Bad, record_max_bytes: int) -> bool:
    """Whether the bad record at `off` (in the last segment) is an interrupted write."""
    if bad is _Bad.CHECKSUM:
        # Complete but wrong: torn only if some sector of it never reached the disk.
        end = off + _HEADER.size + _HEADER.unpack_from(buf, off)[0]
        if not _has_zero_sector(buf, off, end):
            return False
    # A valid record after it means the bad one was once written whole: damage, not a crash.
    for m in _SEGMENT_KIND_BYTE.finditer(buf, off + 1 + _HEADER.size):
        if not isinstance(_parse(buf, m.start() - _HEADER.size, record_max_bytes), _Bad):
            return False
    return True


def _has_zero_sector(buf: bytes, start: int, end: int) -> bool:
    """Whether buf[start:end], cut at file sector boundaries, has an all-zero piece."""
    while start < end:
        stop = min(end, (start // _SECTOR_BYTES + 1) * _SECTOR_BYTES)
        if buf.count(0, start, stop) == stop - start:
            return True
        start = stop
    return False


# -- files -----------------------------------------------------------------------------------------
def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fdatasync(fd: int) -> None:
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # macOS
        os.fsync(fd)


def _read_file(path: Path, kind: _Kind, default: _T) -> _T:
    """The single record in an atomically replaced file, or `default` if there is no file."""
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        return default
    parsed = _parse(buf, 0, len(buf))
    if isinstance(parsed, _Bad):
        raise CorruptLogError(path, 0, parsed.value)
    got, body, end = parsed
    if end != len(buf):
        raise CorruptLogError(path, end, "bytes after the record")
    value = _decode(path, 0, got, body, {kind})
    assert isinstance(value, type(default))
    return value


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogLockedError(f"{path.parent} is open in another DiskLog") from None
    return fd


# -- segments --------------------------------------------------------------------------------------
@dataclass
class _Segment:
    """One segment file and the writer's index of it."""

    seq: int
    first_index: int
    path: Path
    size: int = 0  # bytes of whole records
    offsets: array[int] = field(default_factory=lambda: array("Q"))  # of entry first_index + k
    terms: array[int] = field(default_factory=lambda: array("Q"))

    @property
    def next_index(self) -> int:
        return self.first_index + len(self.offsets)


def _list_segments(wal: Path) -> list[_Segment]:
    segments = sorted(
        (
            _Segment(int(m[1], 16), int(m[2], 16), p)
            for p in wal.iterdir()
            if (m := _SEGMENT_NAME.fullmatch(p.name))
        ),
        key=lambda s: s.seq,
    )
    for a, b in pairwise(segments):
        if b.seq != a.seq + 1:
            raise CorruptLogError(b.path, 0, f"segment number {a.seq + 1:016x} is missing")
    return segments


def _scan_segment(seg: _Segment, is_last: bool, record_max_bytes: int) -> tuple[list[Entry], int]:
    """Index `seg` from its file; return its entries and its highest COMMIT record."""
    buf = seg.path.read_bytes()
    entries: list[Entry] = []
    commit = 0
    off = 0
    while off < len(buf):
        parsed = _parse(buf, off, record_max_bytes)
        if isinstance(parsed, _Bad):
            if not (is_last and _is_torn_tail(buf, off, parsed, record_max_bytes)):
                raise CorruptLogError(seg.path, off, parsed.value)
            _log.warning(
                "%s: torn tail (%s) at byte offset %d: truncating %d bytes",
                seg.path,
                parsed.value,
                off,
                len(buf) - off,
            )
            fd = os.open(seg.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, off)
                os.fsync(fd)
            finally:
                os.close(fd)
            break
        kind, body, end = parsed
        value = _decode(seg.path, off, kind, body, {_Kind.ENTRY, _Kind.COMMIT})
        if isinstance(value, Entry):
            if value.index != seg.next_index:
                raise CorruptLogError(
                    seg.path, off, f"entry index {value.index}, expected {seg.next_index}"
                )
            seg.offsets.append(off)
            seg.terms.append(value.term)
            entries.append(value)
        else:
            assert isinstance(value, int)
            commit = max(commit, value)
        off = end
    seg.size = off
    return entries, commit


def _unlink_each(segments: Iterable[_Segment], wal: Path) -> None:
    """Unlink in the order given, each durably, so a crash leaves a run without holes."""
    for seg in segments:
        seg.path.unlink()
        atomic.fsync_dir(wal)


def _term_at(segments: Sequence[_Segment], index: int) -> int | None:
    for seg in reversed(segments):
        if seg.first_index <= index < seg.next_index:
            return seg.terms[index - seg.first_index]
    return None


# -- the hand-off from writer to reader ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Append:
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class _SetHardState:
    hard_state: HardState


@dataclass(frozen=True, slots=True)
class _InstallSnapshot:
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class _CreateSnapshot:
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class _Compact:
    index: int


_Op = _Append | _SetHardState | _InstallSnapshot | _CreateSnapshot | _Compact


@dataclass(frozen=True, slots=True)
class Persisted:
    """What one `sync()` made durable, for `mark_stable()` on the reading thread. Opaque."""

    seq: int
    ops: tuple[_Op, ...]


@dataclass(frozen=True, slots=True)
class PreparedSnapshot:
    """A SNAPSHOT record of `snapshot`, written and fsynced at `tmp_path` by `prepare_snapshot`:
    hand it to `create_snapshot(..., prepared=)`, which renames it in or deletes it."""

    snapshot: Snapshot
    tmp_path: str


# -- the writer ------------------------------------------------------------------------------------
class _Writer:
    """The files and the writer's index of them; owned by the writing thread."""

    def __init__(
        self,
        directory: Path,
        segments: list[_Segment],
        last_seq: int,
        snapshot: Snapshot,
        hard_state: HardState,
        segment_max_bytes: int,
        record_max_bytes: int,
        lock_fd: int,
    ) -> None:
        self._dir = directory
        self.directory = directory  # read-only: where `prepare_snapshot` writes
        self._wal = directory / "wal"
        self._segments = segments
        self._last_seq = last_seq  # the highest segment number ever used here
        self._snapshot = snapshot
        self._hs = hard_state  # the latest hard state written (durable or not)
        self._segment_max_bytes = segment_max_bytes
        self._record_max_bytes = record_max_bytes
        self._lock_fd: int | None = lock_fd
        self._fd: int | None = None  # open on the last segment once it is written to
        self._unsynced = False  # bytes written to _fd since its last fdatasync
        self._dir_dirty = False  # a segment was created since wal/ was last fsynced
        self._must_sync = False  # the next sync() has durable work to do
        self._pending_hs: HardState | None = None  # term/vote change for the next sync()
        self._ops: list[_Op] = []
        self._sync_seq = 0
        self._failed: BaseException | None = None

    # -- reads of the writer's own index --
    def last_index(self) -> int:
        return max(
            self._snapshot.meta.index, self._segments[-1].next_index - 1 if self._segments else 0
        )

    def term(self, index: int) -> int:
        if index == self._snapshot.meta.index:
            return self._snapshot.meta.term
        term = _term_at(self._segments, index)
        if term is None:
            raise Unavailable(index)
        return term

    # -- the operations --
    def write(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        ents = [e for e in entries if e.index > self._snapshot.meta.index]
        records = self._entry_records(ents)
        # Entries already on disk (same index and term, hence the same entry) are skipped, so
        # only a real conflict truncates; the log then ends with the last entry given.
        skip = 0
        while skip < len(ents) and self._holds(ents[skip]):
            skip += 1
        new = ents[skip:]
        if new and new[0].index > self.last_index() + 1:
            last = self.last_index()
            raise Unavailable(f"missing log entry [last: {last}, append at: {new[0].index}]")
        with self._io():
            if ents:
                cut = new[0].index if new else ents[-1].index + 1
                if cut <= self.last_index():
                    self._truncate(cut)
                self._append(new, records[skip:])
                self._ops.append(_Append(tuple(ents)))
            if hard_state is not None and hard_state not in (self._hs, HardState()):
                self._set_hard_state(hard_state)

    def sync(self) -> Persisted:
        with self._io():
            if self._must_sync:
                if self._unsynced:
                    assert self._fd is not None
                    _fdatasync(self._fd)
                    self._unsynced = False
                if self._dir_dirty:
                    atomic.fsync_dir(self._wal)
                    self._dir_dirty = False
                if self._pending_hs is not None:  # after the entries its commit may name
                    atomic.replace(
                        self._dir / "hardstate", _record(_Kind.HARD_STATE, self._pending_hs)
                    )
                    self._pending_hs = None
                self._must_sync = False
        self._sync_seq += 1
        persisted = Persisted(self._sync_seq, tuple(self._ops))
        self._ops.clear()
        return persisted

    def save_snapshot(self, snap: Snapshot) -> None:
        if snap.meta.index <= self._snapshot.meta.index:
            return
        with self._io():
            atomic.replace(self._dir / "snapshot", _record(_Kind.SNAPSHOT, snap))
            self._close_fd()
            self._delete(reversed(self._segments))
            self._segments = []
            self._snapshot = snap
            self._unsynced = False
            self._ops.append(_InstallSnapshot(snap))

    def create_snapshot(
        self,
        index: int,
        conf_state: ConfState,
        data: bytes,
        prepared: PreparedSnapshot | None = None,
    ) -> Snapshot:
        try:
            if index <= self._snapshot.meta.index:
                return self._snapshot
            if index > self.last_index():
                raise Unavailable(index)
            snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
            with self._io():
                if (
                    prepared is not None
                    and prepared.snapshot.meta == snap.meta
                    and prepared.snapshot.data is data
                ):
                    os.replace(prepared.tmp_path, self._dir / "snapshot")
                    prepared = None
                    atomic.fsync_dir(self._dir)
                else:
                    atomic.replace(self._dir / "snapshot", _record(_Kind.SNAPSHOT, snap))
            self._snapshot = snap
            self._ops.append(_CreateSnapshot(snap))
            return snap
        finally:
            if prepared is not None:  # not used: a newer snapshot won, or it did not match
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(prepared.tmp_path)

    def compact(self, index: int) -> None:
        if index > self._snapshot.meta.index:
            raise ValueError(
                f"compact({index}) is past the snapshot at {self._snapshot.meta.index}"
            )
        doomed = [s for s in self._segments[:-1] if s.next_index - 1 <= index]
        with self._io():
            self._delete(doomed)
            self._segments = self._segments[len(doomed) :]
        self._ops.append(_Compact(index))

    def close(self) -> None:
        self._close_fd()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- helpers --
    def _entry_records(self, ents: list[Entry]) -> list[bytearray]:
        for a, b in pairwise(ents):
            if b.index != a.index + 1:
                raise ValueError(f"entries are not consecutive: {a.index} then {b.index}")
        records = [_record(_Kind.ENTRY, e) for e in ents]
        for e, rec in zip(ents, records, strict=True):
            if len(rec) - _HEADER.size > self._record_max_bytes:
                raise ValueError(
                    f"entry {e.index} is over record_max_bytes={self._record_max_bytes}"
                )
        return records

    def _holds(self, e: Entry) -> bool:
        return e.index <= self.last_index() and self.term(e.index) == e.term

    def _set_hard_state(self, hs: HardState) -> None:
        if self._pending_hs is not None or (hs.term, hs.vote) != (self._hs.term, self._hs.vote):
            self._pending_hs = hs  # sync() replaces the hardstate file
            self._must_sync = True
        else:  # commit only: a record that rides along with the next sync
            self._write_records(self._active(), _record(_Kind.COMMIT, hs.commit))
        self._hs = hs
        self._ops.append(_SetHardState(hs))

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        if self._failed is not None:
            raise LogFailedError(
                f"{self._dir}: an earlier write failed; restart to recover"
            ) from self._failed
        try:
            yield
        except OSError as e:
            self._failed = e
            raise LogFailedError(f"{self._dir}: write failed: {e}") from e

    def _active(self) -> _Segment:
        if self._fd is None:
            if not self._segments:
                self._create_segment(self.last_index() + 1)
            else:
                self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)
        return self._segments[-1]

    def _create_segment(self, first_index: int) -> None:
        self._last_seq += 1
        seg = _Segment(
            self._last_seq, first_index, self._wal / f"{self._last_seq:016x}-{first_index:016x}.seg"
        )
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._segments.append(seg)
        self._dir_dirty = True

    def _roll(self) -> _Segment:
        """Finish the last segment durably, then start the next one."""
        assert self._fd is not None
        _fdatasync(self._fd)
        self._unsynced = False
        self._close_fd()
        atomic.fsync_dir(self._wal)
        self._create_segment(self.last_index() + 1)
        return self._segments[-1]

    def _append(self, ents: list[Entry], records: list[bytearray]) -> None:
        if not ents:
            return
        seg = self._active()
        batch = bytearray()
        for e, rec in zip(ents, records, strict=True):
            if (
                seg.size + len(batch) > 0
                and seg.size + len(batch) + len(rec) > self._segment_max_bytes
            ):
                self._write_records(seg, batch)
                batch = bytearray()
                seg = self._roll()
            seg.offsets.append(seg.size + len(batch))
            seg.terms.append(e.term)
            batch += rec
        self._write_records(seg, batch)
        self._must_sync = True

    def _write_records(self, seg: _Segment, data: bytearray) -> None:
        assert self._fd is not None and seg is self._segments[-1]
        _write_all(self._fd, data)
        seg.size += len(data)
        self._unsynced = True

    def _truncate(self, index: int) -> None:
        """Durably drop entries >= index: later segments first, then the one holding it."""
        k = next(i for i, s in enumerate(self._segments) if s.first_index <= index < s.next_index)
        self._close_fd()
        self._delete(reversed(self._segments[k + 1 :]))
        del self._segments[k + 1 :]
        seg = self._segments[k]
        self._last_seq = seg.seq  # the numbers after it are free again: keep the run unbroken
        n = index - seg.first_index
        seg.size = seg.offsets[n]
        del seg.offsets[n:], seg.terms[n:]
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
        os.ftruncate(self._fd, seg.size)
        _fdatasync(self._fd)
        self._unsynced = False
        if self._hs.commit:  # a COMMIT record may have been cut off; say it again
            self._write_records(seg, _record(_Kind.COMMIT, min(self._hs.commit, index - 1)))

    def _delete(self, segments: Iterable[_Segment]) -> None:
        _unlink_each(segments, self._wal)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- the log ---------------------------------------------------------------------------------------
class DiskLog:
    """`LogStorage` on disk. Build it with `DiskLog.open`; see the module docstring for the
    thread-safety contract (writer methods vs. reader methods) and the on-disk format."""

    def __init__(self, writer: _Writer, view: MemoryStorage) -> None:
        self._writer = writer
        self._view = view  # reader-owned; changed only by mark_stable
        self._stable_seq = 0

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        segment_max_bytes: int = SEGMENT_MAX_BYTES,
        record_max_bytes: int = RECORD_MAX_BYTES,
    ) -> DiskLog:
        """Open (creating if needed) the log in directory `path` and recover it."""
        if segment_max_bytes < 1 or not 1 <= record_max_bytes <= _LENGTH_MAX:
            raise ValueError(
                "segment_max_bytes and record_max_bytes must be positive (and the latter < 4 GiB)"
            )
        directory = Path(path)
        wal = directory / "wal"
        wal.mkdir(parents=True, exist_ok=True)
        atomic.fsync_dir(directory)
        atomic.fsync_dir(directory.parent)
        lock_fd = _lock(directory / "LOCK")
        try:
            for tmp in directory.glob("*.tmp"):
                _log.warning("%s: deleting what a crash left behind", tmp)
                tmp.unlink()
            snapshot = _read_file(directory / "snapshot", _Kind.SNAPSHOT, Snapshot())
            hard_state = _read_file(directory / "hardstate", _Kind.HARD_STATE, HardState())
            segments, entries, commit, last_seq = _recover_wal(wal, snapshot, record_max_bytes)
            last = entries[-1].index if entries else snapshot.meta.index
            commit = max(hard_state.commit, commit, snapshot.meta.index)
            if commit > last:
                raise CorruptLogError(
                    directory / "hardstate",
                    0,
                    f"commit index {commit} is past the last entry {last}: durable entries are missing",
                )
            hard_state = HardState(hard_state.term, hard_state.vote, commit)
        except BaseException:
            os.close(lock_fd)
            raise
        view = MemoryStorage()
        view.apply_snapshot(snapshot)
        view.append(entries)
        view.set_hard_state(hard_state)
        writer = _Writer(
            directory,
            segments,
            last_seq,
            snapshot,
            hard_state,
            segment_max_bytes,
            record_max_bytes,
            lock_fd,
        )
        return cls(writer, view)

    # -- LogStorage: the reader's thread -------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._view.initial_state()

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self._view.entries(lo, hi, max_bytes)

    def term(self, index: int) -> int:
        return self._view.term(index)

    def first_index(self) -> int:
        return self._view.first_index()

    def last_index(self) -> int:
        return self._view.last_index()

    def snapshot(self) -> Snapshot:
        return self._view.snapshot()

    def mark_stable(self, persisted: Persisted) -> None:
        """Show reads what `persisted` (from `sync()`) made durable. Each once, in order."""
        if persisted.seq != self._stable_seq + 1:
            raise ValueError(
                f"mark_stable got sync #{persisted.seq}, expected #{self._stable_seq + 1}"
            )
        self._stable_seq = persisted.seq
        for op in persisted.ops:
            match op:
                case _Append(entries):
                    self._view.append(entries)
                case _SetHardState(hard_state):
                    self._view.set_hard_state(hard_state)
                case _InstallSnapshot(snapshot):
                    self._view.apply_snapshot(snapshot)
                case _CreateSnapshot(snapshot):
                    meta = snapshot.meta
                    made = self._view.create_snapshot(meta.index, meta.conf_state, snapshot.data)
                    assert made == snapshot, "the view and the disk disagree"
                case _Compact(index):
                    self._view.compact(index)

    # -- writes: the writer's thread -----------------------------------------------------------
    def write(self, entries: Sequence[Entry], hard_state: HardState | None = None) -> None:
        """Append `entries` (truncating a conflicting suffix, durably) and record `hard_state`
        (None or empty: unchanged), without fsync: `sync()` makes it durable."""
        self._writer.write(entries, hard_state)

    def sync(self) -> Persisted:
        """Make everything written since the last sync durable (one fdatasync; a commit-only
        change alone costs none) and return it for `mark_stable`."""
        return self._writer.sync()

    def save_snapshot(self, snap: Snapshot) -> None:
        """Install a leader's snapshot, durably now; the log restarts after it. Older: ignored."""
        self._writer.save_snapshot(snap)

    def create_snapshot(
        self,
        index: int,
        conf_state: ConfState,
        data: bytes,
        prepared: PreparedSnapshot | None = None,
    ) -> Snapshot:
        """Durably record the application's snapshot at applied `index` (<= last written).
        With `prepared` (from `prepare_snapshot` for the same index, term, membership and
        `data` object) only a rename and a directory fsync remain to do; it is consumed
        either way."""
        return self._writer.create_snapshot(index, conf_state, data, prepared)

    def prepare_snapshot(
        self, index: int, term: int, conf_state: ConfState, data: bytes
    ) -> PreparedSnapshot:
        """Write and fsync the SNAPSHOT record of (index, term, conf_state, data) to a new temp
        file beside `snapshot`, for `create_snapshot(..., prepared=)`. Any thread, also while
        the writer runs: it touches nothing but the new file."""
        snap = Snapshot(SnapshotMeta(index, term, conf_state), data)
        record = _record(_Kind.SNAPSHOT, snap)
        tmp = str(self._writer.directory / f"snapshot.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, record)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return PreparedSnapshot(snap, tmp)

    def compact(self, index: int) -> None:
        """Drop entries <= `index` (<= the snapshot index): whole segments on disk, and from
        memory at the next `mark_stable`."""
        self._writer.compact(index)

    def close(self) -> None:
        """Close the files and release the directory. Does not sync."""
        self._writer.close()

    def __enter__(self) -> DiskLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recover_wal(
    wal: Path, snapshot: Snapshot, record_max_bytes: int
) -> tuple[list[_Segment], list[Entry], int, int]:
    """(segments, entries after the snapshot, highest COMMIT record, highest segment number)."""
    segments = _list_segments(wal)
    last_seq = segments[-1].seq if segments else 0
    snap_index = snapshot.meta.index
    entries: list[Entry] = []
    commit = 0
    for i, seg in enumerate(segments):
        if i and seg.first_index != segments[i - 1].next_index:
            prev = segments[i - 1].next_index - 1
            raise CorruptLogError(
                seg.path,
                0,
                f"segment starts at index {seg.first_index}, the previous one ends at {prev}",
            )
        ents, seg_commit = _scan_segment(seg, i == len(segments) - 1, record_max_bytes)
        entries.extend(e for e in ents if e.index > snap_index)
        commit = max(commit, seg_commit)
    if not segments:
        return [], [], 0, last_seq
    first, last = segments[0].first_index, segments[-1].next_index - 1
    if first > snap_index + 1:
        raise CorruptLogError(
            segments[0].path, 0, f"log starts at index {first}, the snapshot ends at {snap_index}"
        )
    if last < snap_index or (
        first <= snap_index and _term_at(segments, snap_index) != snapshot.meta.term
    ):
        # What a crash in save_snapshot leaves: the log it was replacing.
        _log.warning(
            "%s: discarding entries %d..%d, left over from before the snapshot at %d",
            wal,
            first,
            last,
            snap_index,
        )
        _unlink_each(reversed(segments), wal)
        return [], [], 0, last_seq
    return segments, entries, commit, last_seq
