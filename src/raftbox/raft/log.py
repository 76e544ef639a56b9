"""The Raft log as the core sees it: stable entries in storage, unstable ones in memory.

```
  snapshot   stable (LogStorage)            unstable (not yet durable)
  ...S] [S+1 ............ stable_last] [offset ................ last]
                 applied <= committed <= last
```

New entries (proposed by a leader or received from one) go to `Unstable` first; the application
persists them from a `Ready`, appends them to its `LogStorage`, and calls `advance()`, which moves
the boundary (`stable_to`). A snapshot received from a leader sits in `Unstable.snapshot` until it
is persisted the same way. Reads (`term`, `slice`) look in unstable first, then in storage.

Invariants (asserted; a violation is a bug in the core and stops it): `applied <= committed`,
`committed <= last_index()`, and a committed entry is never truncated.
"""

from __future__ import annotations

from .errors import RaftInvariantError
from .messages import Entry, Snapshot
from .storage import Compacted, LogStorage, Unavailable, limit_size


class Unstable:
    """Entries and a snapshot not yet durable. `entries[i].index == offset + i`."""

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        return self.snapshot.meta.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == i:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to (i, t) are durable now; forget them unless they were replaced since."""
        gt = self.maybe_term(i)
        if gt is None or gt != t or i < self.offset:
            return
        self.entries = self.entries[i + 1 - self.offset :]
        self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace everything unstable; storage keeps the prefix before `after`.
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[: after - self.offset] + list(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    def __init__(self, storage: LogStorage, max_applying_bytes: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_applying_bytes = max_applying_bytes
        self.truncated_at = 0  # lowest index replaced by a conflicting append (0: none)

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # -- reading -------------------------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int:
        """The term of entry `i`; raises Compacted/Unavailable when the log can't tell."""
        dummy = self.first_index() - 1
        if i < dummy:
            raise Compacted(i)
        if i > self.last_index():
            raise Unavailable(i)
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except (Compacted, Unavailable):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi) from storage and unstable together, limited to `max_bytes`."""
        if lo > hi:
            raise RaftInvariantError(f"invalid slice {lo} > {hi}")
        first = self.first_index()
        if lo < first:
            raise Compacted(lo)
        if hi > self.last_index() + 1:
            raise Unavailable(f"slice [{lo},{hi}) out of bound [{first},{self.last_index()}]")
        if lo == hi:
            return []
        ents: list[Entry] = []
        if lo < self.unstable.offset:
            stored = self.storage.entries(lo, min(hi, self.unstable.offset), max_bytes)
            if len(stored) < min(hi, self.unstable.offset) - lo:
                return stored  # hit the size limit inside storage
            ents = list(stored)
        if hi > self.unstable.offset:
            ents.extend(self.unstable.slice(max(lo, self.unstable.offset), hi))
        return limit_size(ents, max_bytes)

    def entries_from(self, i: int, max_bytes: int | None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_bytes)

    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry that is new or conflicts with ours; 0 if all match."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term(i)) with i <= index and term(i) <= term: fast back-off hint.

        Any entry above it has a term greater than `term`, so it cannot match a log whose entry
        at `index` has `term`; the leader can skip them all at once.
        """
        while index > 0:
            try:
                t = self.term(index)
            except (Compacted, Unavailable):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- changing ------------------------------------------------------------------------------
    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """AppendEntries receiver (Figure 2): None when prev (index, log_term) does not match,
        else the index of the last new entry."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise RaftInvariantError(
                    f"entry {ci} conflicts with committed entry (committed {self.committed})"
                )
            self.append(list(ents[ci - (index + 1) :]))
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RaftInvariantError(f"after {after} is out of range [committed {self.committed}]")
        if ents[0].index <= self.last_index():
            # A conflicting suffix is replaced: remember where, so the core can withdraw
            # acknowledgements of the replaced entries that have not been sent yet.
            self.truncated_at = min(self.truncated_at or ents[0].index, ents[0].index)
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def commit_to(self, to_commit: int) -> None:
        """Never decreases the commit index."""
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise RaftInvariantError(
                    f"commit {to_commit} out of range [last index {self.last_index()}]"
                )
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Figure 8: commit by counting only an entry of the current term."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise RaftInvariantError(
                f"applied {i} out of range [prev applied {self.applied}, committed {self.committed}]"
            )
        self.applied = i

    def has_next_committed_ents(self) -> bool:
        if self.unstable.snapshot is not None:
            return False  # the snapshot must be installed first
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed_ents(self) -> list[Entry]:
        if not self.has_next_committed_ents():
            return []
        lo = max(self.applied + 1, self.first_index())
        return self.slice(lo, self.committed + 1, self.max_applying_bytes)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.meta.index
        self.unstable.restore(snap)

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)
