"""The log storage the Raft core reads, and an in-memory implementation.

The core never writes to storage: it hands the application entries, hard state and snapshots in
a `Ready`, the application makes them durable and *then* appends them here, and the core reads
them back through this narrow interface (etcd's `Storage`). `MemoryStorage` is the reference
implementation, used by tests and the simulator; the durable log (`disklog.py`) keeps the same
contract on disk.

Index conventions. The storage holds a snapshot at `snapshot index` S (0 for none) and entries
S+1 .. last_index(). `first_index()` is S+1, `term(S)` is the snapshot's term; asking for
anything below S raises `Compacted`, above last_index() raises `Unavailable`.
"""

from __future__ import annotations

from typing import Protocol

from .messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class StorageError(Exception):
    """Base of the errors the core expects from storage."""


class Compacted(StorageError):
    """The index asked for lies below the last snapshot: only the snapshot has it now."""


class Unavailable(StorageError):
    """The index asked for lies above the last stored entry."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The application is still building a snapshot; the core retries later."""


class LogStorage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi); at least one if any is in range, then up to `max_bytes`."""
        ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


def entry_size(e: Entry) -> int:
    """The byte cost of an entry for size limits: its payload plus a small fixed overhead."""
    return len(e.data) + 16


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix within `max_bytes`, but never fewer than one entry."""
    if max_bytes is None or not ents:
        return ents
    total = entry_size(ents[0])
    n = 1
    while n < len(ents):
        total += entry_size(ents[n])
        if total > max_bytes:
            break
        n += 1
    return ents[:n]


class MemoryStorage:
    """`LogStorage` in memory. `ents[0]` is a dummy entry standing for the snapshot point."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self.ents: list[Entry] = [Entry(term=0, index=0)]

    # -- LogStorage ----------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.meta.conf_state

    def first_index(self) -> int:
        return self.ents[0].index + 1

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def term(self, index: int) -> int:
        offset = self.ents[0].index
        if index < offset:
            raise Compacted(index)
        if index - offset >= len(self.ents):
            raise Unavailable(index)
        return self.ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self.ents[0].index
        if lo <= offset:
            raise Compacted(lo)
        if hi > self.last_index() + 1:
            raise Unavailable(hi)
        return limit_size(self.ents[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes by the application -------------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace everything with `snap` (a follower installing what its leader sent)."""
        if snap.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snap
        self.ents = [Entry(term=snap.meta.term, index=snap.meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record the application's snapshot at `index` (≤ last_index)."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        if index > self.last_index():
            raise Unavailable(index)
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index` (keep it as the dummy entry)."""
        offset = self.ents[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise Unavailable(index)
        i = index - offset
        self.ents = [Entry(term=self.ents[i].term, index=index)] + self.ents[i + 1 :]

    def append(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        """Append entries, truncating any conflicting suffix first."""
        if not ents:
            return
        first = self.first_index()
        last = ents[0].index + len(ents) - 1
        if last < first:
            return  # all compacted already
        if first > ents[0].index:
            ents = ents[first - ents[0].index :]
        offset = ents[0].index - self.ents[0].index
        if offset > len(self.ents):
            raise Unavailable(
                f"missing log entry [last: {self.last_index()}, append at: {ents[0].index}]"
            )
        if offset == len(self.ents):
            self.ents.extend(ents)  # the common case: a plain append, no copy
        else:
            del self.ents[offset:]
            self.ents.extend(ents)
