"""The faults the simulator injects: a disk that loses unsynced writes, and a hostile network.

Both draw every decision from the run's single `random.Random` (passed in by the cluster), so a
run stays a pure function of its seed. Neither knows about Raft beyond the types it carries.

The disk (`Disk`)
~~~~~~~~~~~~~~~~~
A member's `MemoryStorage` is what its operating system shows (`cache`, which the core reads); a
second one is what is on the platter (`durable`). A write reaches the platter at the next
`sync()` (the Ready's `must_sync`, or an application snapshot). A crash keeps a random prefix
of the unsynced writes (the last one possibly torn: a prefix of its entries) and loses the
rest; the cache becomes a copy of the platter.

The network (`Network`)
~~~~~~~~~~~~~~~~~~~~~~~
Each send may be lost, duplicated, and delayed by some steps; a delivery picks among the oldest
`window` deliverable messages (window 1 is FIFO). Links may be cut in one direction only;
partitions split the members in two; all of it changes over time (`change`). A message to a
crashed member is lost (the cluster drops it on delivery). `heal` ends every network fault
for the liveness phase.

Crashes themselves (inside a Ready, right after a leader's commit moved) are decisions of the
scheduler in `cluster.py`, which owns the members.
"""

from __future__ import annotations

import copy
import heapq
import random
from collections.abc import Callable, Iterable

from ..messages import ConfState, Entry, HardState, Message, Snapshot
from ..storage import MemoryStorage
from .params import Params

# -- the disk --------------------------------------------------------------------------------------
_SNAP, _ENTS, _HS = 0, 1, 2


def _apply_write(st: MemoryStorage, op: int, arg) -> None:
    if op == _SNAP:
        st.apply_snapshot(arg)
    elif op == _ENTS:
        st.append(arg)
    else:
        st.set_hard_state(arg)


def _clone(st: MemoryStorage) -> MemoryStorage:
    c = copy.copy(st)  # hard state and snapshot are immutable values
    c.ents = list(st.ents)
    return c


class Disk:
    """One member's disk: `cache` is what reads see, `durable` what survives a crash."""

    def __init__(self) -> None:
        self.cache = MemoryStorage()
        self.durable = MemoryStorage()
        self.pending: list[tuple[int, object]] = []  # written, not yet synced

    def write_snapshot(self, snap: Snapshot) -> None:
        self._write(_SNAP, snap)

    def write_entries(self, ents: list[Entry]) -> None:
        self._write(_ENTS, ents)

    def write_hard_state(self, hs: HardState) -> None:
        self._write(_HS, hs)

    def _write(self, op: int, arg) -> None:
        _apply_write(self.cache, op, arg)
        self.pending.append((op, arg))

    def sync(self) -> None:
        for op, arg in self.pending:
            _apply_write(self.durable, op, arg)
        self.pending.clear()

    def crash(self, rng: random.Random) -> None:
        """Lose a random suffix of the unsynced writes (the last kept one may be torn)."""
        if self.pending:
            keep = rng.randint(0, len(self.pending))
            for op, arg in self.pending[:keep]:
                _apply_write(self.durable, op, arg)
            if keep < len(self.pending):
                op, arg = self.pending[keep]
                if op == _ENTS and len(arg) > 1:
                    _apply_write(self.durable, op, arg[: rng.randrange(len(arg))])
            self.pending.clear()
        self.cache = _clone(self.durable)

    def save_snapshot(self, index: int, conf: ConfState, data: bytes, compact_to: int) -> None:
        """The application's own snapshot: written and synced at once, then the log compacted."""
        self.sync()
        for st in (self.cache, self.durable):
            st.create_snapshot(index, conf, data)
            st.compact(compact_to)


# -- the network -----------------------------------------------------------------------------------
class Network:
    """Messages in flight between members, and the faults on their way.

    `event(kind, *args)` records what happened for the trace. The loss and delay rates start
    from the seed's `Params` and change with `change()`; `heal()` stops them (and sets the
    params' delay to 0, which the failure report then shows).
    """

    def __init__(self, p: Params, rng: random.Random, event: Callable[..., None]) -> None:
        self.p = p
        self.rng = rng
        self._event = event
        self.queue: list[Message] = []  # deliverable now, oldest first
        self.delayed: list[tuple[int, int, Message]] = []  # (due step, seq, msg) heap
        self.seq = 0
        self.cut: set[tuple[int, int]] = set()  # (from, to) links that drop what they carry
        self.loss = p.loss
        self.dup = p.dup
        self.window = p.window

    def send(self, msgs: Iterable[Message], now: int) -> None:
        rng = self.rng
        for msg in msgs:
            if self.loss and rng.random() < self.loss:
                self._event("lose", msg)
                continue
            copies = 2 if self.dup and rng.random() < self.dup else 1
            for _ in range(copies):
                if self.p.delay_p and rng.random() < self.p.delay_p:
                    self.seq += 1
                    due = now + rng.randint(1, self.p.max_delay_steps)
                    heapq.heappush(self.delayed, (due, self.seq, msg))
                else:
                    self.queue.append(msg)

    def release_delayed(self, now: int) -> None:
        d = self.delayed
        while d and d[0][0] <= now:
            self.queue.append(heapq.heappop(d)[2])

    def pick(self) -> Message:
        """Take one deliverable message (the queue must not be empty): reordering happens here."""
        q = self.queue
        n = len(q)
        i = self.rng.randrange(n) if self.window >= n else self.rng.randrange(self.window)
        return q.pop(i)

    def is_cut(self, msg: Message) -> bool:
        return (msg.frm, msg.to) in self.cut

    def change(self, ids: list[int]) -> None:
        """One change of the network among the members `ids` (sorted)."""
        rng = self.rng
        k = rng.randrange(7)
        if k == 0:
            self.cut.clear()
            self.loss = self.p.loss
            self._event("net", "heal")
        elif k == 1 and len(ids) > 1:
            side = set(rng.sample(ids, rng.randint(1, len(ids) - 1)))
            self.cut |= {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            self._event("net", f"partition {sorted(side)} | {sorted(set(ids) - side)}")
        elif k == 2 and ids:
            x = rng.choice(ids)
            self.cut |= {(a, b) for a in ids for b in ids if a != b and x in (a, b)}
            self._event("net", f"isolate {x}")
        elif k == 3 and len(ids) > 1:
            a, b = rng.sample(ids, 2)
            self.cut.add((a, b))
            self._event("net", f"cut {a}->{b}")
        elif k == 4 and self.cut:
            link = rng.choice(sorted(self.cut))
            self.cut.discard(link)
            self._event("net", f"restore {link[0]}->{link[1]}")
        elif k == 5:
            self.loss = rng.choice((0.0, 0.01, 0.1, 0.3))
            self._event("net", f"loss {self.loss}")
        else:
            self.window = rng.choice((1, 2, 4, 1000))
            self._event("net", f"reorder window {self.window}")

    def heal(self) -> None:
        """No more network faults: every link up, no loss, FIFO, the delayed messages released."""
        self.cut.clear()
        self.loss = self.dup = 0.0
        self.window = 1
        while self.delayed:
            self.queue.append(heapq.heappop(self.delayed)[2])
        self.p.delay_p = 0.0
