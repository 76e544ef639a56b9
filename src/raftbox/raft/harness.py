"""A synchronous in-process cluster of `RawNode`s for tests and scenario files.

Each member has a `MemoryStorage` standing for its disk and a list standing for its state
machine. `Harness.process(id)` plays the application's part of one Ready in the documented
order (persist, send, apply, advance); sent messages go to a shared queue that `deliver()`
drains, unless a link is cut (`isolate`, `cut`) or a filter drops them. Everything is
deterministic: the only randomness is each member's seeded `random.Random`.

This is the etcd `network` test helper; the randomized simulator lives in `sim/`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .core import Config, RawNode, Ready
from .messages import Entry, EntryType, Message, ReadState, Snapshot
from .storage import MemoryStorage


@dataclass
class Member:
    node: RawNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)  # the state machine: applied entries
    snapshot_data: bytes = b""  # what the state machine was restored from
    read_states: list[ReadState] = field(default_factory=list)


class Harness:
    def __init__(
        self,
        ids: list[int] | tuple[int, ...],
        seed: int = 0,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        **cfg_kw,
    ) -> None:
        self.seed = seed
        self.peers = tuple(ids)
        self.cfg_kw = dict(
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            **cfg_kw,
        )
        self.members: dict[int, Member] = {}
        self.queue: list[Message] = []
        self.cut_links: set[tuple[int, int]] = set()
        self.drop: Callable[[Message], bool] | None = None
        self.log: list[str] = []  # a transcript of delivered messages, for scenario tests
        for i in ids:
            self.add_member(i, self.peers)

    # -- members ------------------------------------------------------------------------------
    def add_member(self, i: int, peers: tuple[int, ...] = ()) -> Member:
        storage = MemoryStorage()
        node = RawNode(
            Config(
                id=i,
                storage=storage,
                rng=random.Random(self.seed * 1000 + i),
                peers=peers,
                **self.cfg_kw,
            )
        )
        m = Member(node, storage)
        self.members[i] = m
        self.process(i)
        return m

    def restart(self, i: int) -> None:
        """Crash and restart member i: volatile state is lost, its storage (disk) survives."""
        old = self.members[i]
        applied = old.applied
        node = RawNode(
            Config(
                id=i,
                storage=old.storage,
                rng=random.Random(self.seed * 1000 + i + 7919),
                applied=applied[-1].index if applied else old.storage.snapshot().meta.index,
                **self.cfg_kw,
            )
        )
        self.members[i] = Member(node, old.storage, applied, old.snapshot_data)

    def node(self, i: int) -> RawNode:
        return self.members[i].node

    # -- the application's loop -----------------------------------------------------------------
    def process(self, i: int) -> Ready | None:
        m = self.members[i]
        if not m.node.has_ready():
            return None
        rd = m.node.ready()
        if rd.snapshot is not None:
            m.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            m.storage.append(list(rd.entries))
        if rd.hard_state is not None:
            m.storage.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages)
        if rd.snapshot is not None:
            m.snapshot_data = rd.snapshot.data
            m.applied = [e for e in m.applied if e.index <= rd.snapshot.meta.index]
            m.applied.append(
                Entry(
                    rd.snapshot.meta.term, rd.snapshot.meta.index, EntryType.NORMAL, b"<snapshot>"
                )
            )
        m.applied.extend(rd.committed_entries)
        m.read_states.extend(rd.read_states)
        m.node.advance(rd)
        return rd

    def process_all(self) -> bool:
        any_ready = False
        for i in list(self.members):
            if self.process(i) is not None:
                any_ready = True
        return any_ready

    def deliver(self) -> int:
        """Deliver every queued message once; returns how many were delivered."""
        batch, self.queue = self.queue, []
        n = 0
        for msg in batch:
            if msg.to not in self.members:
                continue
            if (msg.frm, msg.to) in self.cut_links:
                continue
            if self.drop is not None and self.drop(msg):
                continue
            self.log.append(describe(msg))
            self.members[msg.to].node.step(msg)
            n += 1
        return n

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Process and deliver until nothing moves."""
        for _ in range(max_rounds):
            moved = self.process_all()
            moved = self.deliver() > 0 or moved
            if not moved:
                return
        raise RuntimeError("cluster did not stabilize")

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.members[i].node.tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for m in self.members.values():
                m.node.tick()
            self.stabilize()

    def campaign(self, i: int) -> None:
        self.node(i).campaign()
        self.stabilize()

    def propose(self, i: int, data: bytes) -> None:
        self.node(i).propose(data)
        self.stabilize()

    # -- faults --------------------------------------------------------------------------------
    def isolate(self, i: int) -> None:
        for j in self.members:
            if j != i:
                self.cut_links.add((i, j))
                self.cut_links.add((j, i))

    def cut(self, a: int, b: int) -> None:
        self.cut_links.add((a, b))
        self.cut_links.add((b, a))

    def heal(self) -> None:
        self.cut_links.clear()
        self.drop = None

    # -- inspection ----------------------------------------------------------------------------
    def leader(self) -> int | None:
        from .messages import StateRole

        leaders = [i for i, m in self.members.items() if m.node.role == StateRole.LEADER]
        if not leaders:
            return None
        return max(leaders, key=lambda i: self.members[i].node.term)

    def applied_data(self, i: int) -> list[bytes]:
        return [e.data for e in self.members[i].applied if e.type == EntryType.NORMAL and e.data]

    def compact(self, i: int, index: int, data: bytes = b"") -> Snapshot:
        """Member i snapshots its state at `index` (<= applied) and drops the log before it."""
        m = self.members[i]
        snap = m.storage.create_snapshot(index, m.node.conf_state, data)
        m.storage.compact(index)
        return snap


def describe(m: Message) -> str:
    """One line per message, for transcripts: `1->2 APP t1 i3/t1 c3 [t1/4 t1/5]`."""
    parts = [f"{m.frm}->{m.to}", m.type.name, f"t{m.term}"]
    if m.type in (m.type.APP, m.type.VOTE, m.type.PRE_VOTE):
        parts.append(f"i{m.index}/t{m.log_term}")
    elif m.index:
        parts.append(f"i{m.index}")
    if m.commit:
        parts.append(f"c{m.commit}")
    if m.entries:
        parts.append("[" + " ".join(f"t{e.term}/{e.index}" for e in m.entries) + "]")
    if m.reject:
        parts.append(f"reject hint={m.reject_hint}/t{m.log_term}")
    if m.context:
        parts.append(f"ctx={m.context.decode(errors='replace')}")
    if m.snapshot is not None:
        parts.append(
            f"snap=i{m.snapshot.index}/t{m.snapshot.term} off={m.offset}{' done' if m.done else ''}"
        )
    return " ".join(parts)
