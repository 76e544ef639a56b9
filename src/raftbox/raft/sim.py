"""Deterministic simulation of a raftbox Raft cluster (the TigerBeetle/FoundationDB way).

Theory of operation
-------------------
One seed is one run. A single `random.Random(seed)` draws the cluster (3..7 voters), the
configuration, the fault rates, and then every decision of a scheduler that plays the
application's part for every member, one small *step* at a time:

| step      | what happens                                                                  |
| --------- | ----------------------------------------------------------------------------- |
| tick      | every live member's logical clock ticks (each may skip: clock skew)           |
| deliver   | one in-flight message reaches its destination (random pick = reordering)      |
| ready     | one member handles its `Ready`: persist, send, apply, `advance()`             |
| propose   | a client proposes at a random member (followers forward it)                   |
| read      | a client asks a random member for a ReadIndex                                 |
| compact   | a member snapshots its state machine and compacts its log                     |
| conf      | the leader adds a learner, promotes one (mostly once caught up), removes one  |
| transfer  | the leader hands leadership to another voter                                  |
| crash     | a member stops: what it had not made durable is lost                          |
| restart   | a crashed member starts again from its disk                                   |
| net       | the network changes: partitions, asymmetric cuts, loss rate, reordering        |

Every `RawNode` gets its own `random.Random` derived from the seed, so a run is a pure function
of (seed, steps, variant): `--seeds 1 --seed S` replays it exactly.

The fault model
~~~~~~~~~~~~~~~
- **Network.** Each send may be lost, duplicated, and delayed by some steps; a delivery picks
  among the oldest `window` deliverable messages (window 1 is FIFO). Links may be cut in one
  direction only; partitions split the members in two; all of it changes over time. A message
  to a crashed member is lost.
- **Disk** (`Disk`). A member's `MemoryStorage` is what its operating system shows (the core
  reads it); a second one is what is on the platter. A write reaches the platter at the next
  sync (the Ready's `must_sync`, or an application snapshot). A crash keeps a random prefix of
  the unsynced writes (the last one possibly torn) and loses the rest.
- **Crashes inside a Ready.** A crash may strike while persisting (some writes lost), between
  persisting and sending (the messages lost, the synced state kept), or while applying.
- **Leader writes in flight** (Ready docstring, thesis §10.2.1). A leader may send its APP,
  HEARTBEAT and SNAP messages first and finish its write some steps later; meanwhile it keeps
  receiving messages and ticking (it is not asked for another Ready until the write is done).
- **Nemesis.** Now and then a leader crashes right after its commit index moved.
- **The state machine.** Per seed, either *durable* (like the SQLite FSM: its applied index
  survives a crash, and the node restarts with `Config(applied=...)`; if the disk holds a newer
  snapshot the FSM is restored from it first), or *volatile* (rebuilt from the disk's snapshot
  at restart, then the core re-delivers the committed entries). The FSM is a hash chain over the
  applied entries plus the membership; its snapshot carries the chain value and the index.

Invariants, checked after every step on the members the step touched
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
- *election safety*: at most one leader per term;
- *log matching*: an entry (index, term) has the same payload and the same previous term in
  every log that holds it, durable or not (by induction, equal logs up to it); all logs are
  also scanned in full every few hundred steps;
- *leader completeness*: an entry committed by term T is in the log of every leader of a term
  after T (checked when a leader appears and when a commit is seen);
- *commit safety*: no two members ever commit different entries at one index;
- *commit durability*: an entry a leader commits is on the platter of a majority of its voters;
- *durable before answer*: a granted vote and an acknowledged append are on the platter when
  they are sent (unless the member's durable term has moved past the message's);
- *state machine safety*: no two members apply different entries at one index; each applies
  gap-free and in order; a snapshot's content equals the applied state at its index; the FSM's
  membership equals the core's after every `advance()`;
- *commit monotonicity*: a member's commit index never decreases, and after a restart it is not
  below what its disk and FSM say it had;
- *durability*: every applied entry is still held by a majority of voters at the end;
- *no message storm*: with the clocks stopped, the cluster goes quiet;
- *ReadIndex*: a read's index is >= every entry applied anywhere before it was requested;
- any exception from the core (`RaftInvariantError` and the rest) is a failure.

Then the liveness phase: the network heals, crashed members restart, faults stop; a leader must
appear and a new entry must be applied on a majority of its voters within a bounded number of
ticks.

Broken variants (`--variant`) subclass `RawNode` with a deliberate bug; the simulator must catch
each within a bounded number of seeds (tests/sim/test_sim.py).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import copy
import dataclasses
import hashlib
import heapq
import itertools
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .core import Config, RawNode, Ready
from .errors import NotLeader, ProposalDropped
from .harness import describe
from .messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    StateRole,
)
from .storage import MemoryStorage

MT = MessageType
LEADER = StateRole.LEADER
EARLY_TYPES = frozenset((MT.APP, MT.HEARTBEAT, MT.SNAP))  # a leader may send before its write
DEFAULT_STEPS = 5000
TRACE_EVENTS = 40
FULL_SCAN_EVERY_STEPS = 512
LIVENESS_ELECTION_TIMEOUTS = 30  # the liveness bound, in election timeouts (ticks)
SETTLE_MAX_ITERATIONS = 20_000
MAX_MEMBERS = 7
MIN_VOTERS = 3
ZERO_DIGEST = bytes(8)


class SimFailure(Exception):
    """An invariant broke (or the cluster was not live). `invariant` names which."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"[{invariant}] {detail}")
        self.invariant = invariant
        self.detail = detail


# -- parameters ------------------------------------------------------------------------------------
@dataclass
class Params:
    """Everything a seed draws before the run: the cluster, its configuration, the fault rates."""

    n_voters: int
    election_ticks: int
    heartbeat_ticks: int
    pre_vote: bool
    check_quorum: bool
    max_inflight_msgs: int
    max_size_per_msg_bytes: int
    max_committed_size_per_ready_bytes: int | None
    snapshot_chunk_bytes: int
    durable_sm: bool
    loss: float  # per message
    dup: float  # per message
    delay_p: float  # probability a message is delayed
    max_delay_steps: int
    window: int  # delivery picks among the oldest `window` deliverable messages
    leader_async_write: float  # probability a leader's Ready is split (send now, write later)
    write_delay_steps: int  # a leader's write in flight takes up to this many steps
    crash_in_ready: float  # probability a crash strikes while a Ready is being handled
    crash_on_commit: float  # probability a leader crashes right after its commit index moves
    skew: float  # probability a member misses a tick
    w_tick: float
    w_deliver: float
    w_ready: float
    w_propose: float
    w_read: float
    w_compact: float
    w_conf: float
    w_transfer: float
    w_crash: float
    w_restart: float
    w_net: float


def draw_params(rng: random.Random) -> Params:
    def jitter(w: float) -> float:
        return w * rng.choice((0.0, 0.5, 1.0, 1.0, 2.0))

    return Params(
        n_voters=rng.randint(3, 7),
        election_ticks=rng.randint(8, 20),
        heartbeat_ticks=rng.randint(1, 3),
        pre_vote=rng.random() < 0.75,
        check_quorum=rng.random() < 0.75,
        max_inflight_msgs=rng.choice((1, 2, 4, 16, 256)),
        max_size_per_msg_bytes=rng.choice((1, 64, 256, 1 << 20)),
        max_committed_size_per_ready_bytes=rng.choice((None, 40, 256, 8 << 20)),
        snapshot_chunk_bytes=rng.choice((8, 24, 128, 1 << 20)),
        durable_sm=rng.random() < 0.5,
        loss=rng.choice((0.0, 0.01, 0.05, 0.15)),
        dup=rng.choice((0.0, 0.01, 0.05)),
        delay_p=rng.choice((0.0, 0.05, 0.2)),
        max_delay_steps=rng.choice((5, 20, 100)),
        window=rng.choice((1, 2, 4, 1000)),
        leader_async_write=rng.choice((0.0, 0.3, 0.8)),
        write_delay_steps=rng.choice((0, 5, 20)),
        crash_in_ready=rng.choice((0.0, 0.002, 0.01)),
        crash_on_commit=rng.choice((0.0, 0.0, 0.01)),
        skew=rng.choice((0.0, 0.1, 0.3)),
        w_tick=rng.choice((2.0, 3.0, 5.0, 8.0)),
        w_deliver=55.0,
        w_ready=rng.choice((10.0, 20.0, 30.0)),
        w_propose=4.0 * rng.choice((0.5, 1.0, 2.0)),
        w_read=jitter(1.5),
        w_compact=jitter(0.4),
        w_conf=jitter(0.4),
        w_transfer=jitter(0.15),
        w_crash=jitter(0.15),
        w_restart=1.0,
        w_net=jitter(0.4),
    )


# -- broken variants -------------------------------------------------------------------------------
class _CommitOldTerm(RawNode):
    """BUG: the leader commits by counting replicas of any term (no Figure 8 rule)."""

    def _maybe_commit(self) -> bool:
        mci = self.trk.committed()
        if mci <= self.log.committed:
            return False
        self.log.commit_to(mci)
        self._after_commit()
        return True


class _DoubleVote(RawNode):
    """BUG: a member forgets whom it voted for when another candidate of the same term asks."""

    def _handle_vote_request(self, m: Message) -> None:
        prev = self.vote
        self.vote = NONE
        super()._handle_vote_request(m)
        if self.vote == NONE:
            self.vote = prev


class _VoteNotPersisted(RawNode):
    """BUG: a change of term or vote alone does not ask for a sync, so a crash may lose it."""

    def ready(self) -> Ready:
        rd = super().ready()
        if rd.must_sync and not rd.entries and rd.snapshot is None:
            rd = dataclasses.replace(rd, must_sync=False)
        return rd


class _CommitOnUnpersisted(RawNode):
    """BUG: the leader counts itself toward a commit quorum as soon as it appends."""

    def _append_entries(self, ents: list[Entry]) -> None:
        super()._append_entries(ents)
        me = self.trk.progress.get(self.id)
        if self.role == LEADER and me is not None:
            me.maybe_update(self.log.last_index())


class _NoLogCheck(RawNode):
    """BUG: votes are granted without the candidate's log being at least as up to date."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.log.is_up_to_date = lambda index, term: True  # type: ignore[method-assign]


def _bias_commit_old_term(p: Params) -> None:
    # Figure 8: leaders that persist an entry and crash before sending it leave diverging
    # tails; an old entry acknowledged apart from the new leader's no-op (one entry per message,
    # one message in flight) is committed by count; the leader crashes at once; the member with
    # the newer conflicting tail wins the next election.
    p.n_voters = 3
    p.pre_vote = False
    p.check_quorum = False
    p.max_size_per_msg_bytes = 1
    p.max_inflight_msgs = 1
    p.crash_on_commit = 0.5
    p.crash_in_ready = 0.3
    p.loss = 0.0
    p.delay_p = 0.0
    p.w_net = 0.0
    p.w_crash = 0.5
    p.w_restart = 8.0
    p.w_conf = 0.0
    p.w_propose = 15.0


def _bias_votes(p: Params) -> None:
    # Two candidates in one term, and a voter that crashes right after answering one of them.
    p.n_voters = 3
    p.pre_vote = False
    p.check_quorum = False
    p.election_ticks = 4
    p.heartbeat_ticks = 1
    p.w_crash = 0.6
    p.crash_in_ready = 0.1
    p.w_restart = 5.0
    p.delay_p = 0.3
    p.max_delay_steps = 50
    p.w_conf = 0.0


def _bias_commit_on_unpersisted(p: Params) -> None:
    # The leader's write in flight, an acknowledgement before it lands, then a crash.
    p.n_voters = 3
    p.pre_vote = False
    p.check_quorum = False
    p.leader_async_write = 1.0
    p.write_delay_steps = 40
    p.crash_in_ready = 0.1
    p.loss = 0.2
    p.w_crash = 0.6
    p.w_restart = 3.0
    p.w_propose = 8.0
    p.w_conf = 0.0


def _bias_none(p: Params) -> None:
    pass


@dataclass(frozen=True)
class Variant:
    node_cls: type[RawNode]
    bias: Callable[[Params], None]
    doc: str


VARIANTS: dict[str, Variant] = {
    "correct": Variant(RawNode, _bias_none, "the core as it is"),
    "commit-old-term": Variant(
        _CommitOldTerm, _bias_commit_old_term, "leader commits entries of earlier terms by count"
    ),
    "double-vote": Variant(_DoubleVote, _bias_votes, "a member votes twice in one term"),
    "vote-not-persisted": Variant(
        _VoteNotPersisted, _bias_votes, "term/vote changes are not synced before answering"
    ),
    "commit-on-unpersisted": Variant(
        _CommitOnUnpersisted,
        _bias_commit_on_unpersisted,
        "leader counts its own entries before they are durable",
    ),
    "no-log-check": Variant(_NoLogCheck, _bias_votes, "votes ignore the up-to-date log check"),
}


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

    def write(self, op: int, arg) -> None:
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


# -- the state machine -----------------------------------------------------------------------------
@dataclass
class StateMachine:
    """A hash chain over the applied entries, and the membership they define."""

    index: int = 0
    digest: bytes = ZERO_DIGEST
    conf: ConfState = ConfState()

    def snapshot_data(self, pad: int) -> bytes:
        return self.index.to_bytes(8, "big") + self.digest + b"#" * pad


def _chain(digest: bytes, e: Entry) -> bytes:
    h = hashlib.blake2b(digest, digest_size=8)
    h.update(e.term.to_bytes(8, "big"))
    h.update(e.index.to_bytes(8, "big"))
    h.update(bytes((e.type,)))
    h.update(e.data)
    return h.digest()


def _apply_conf(conf: ConfState, cc: ConfChange) -> ConfState:
    """The membership after `cc`, by the same rule as the core."""
    voters, learners = set(conf.voters), set(conf.learners)
    if cc.type == ConfChangeType.ADD_VOTER:
        learners.discard(cc.node_id)
        voters.add(cc.node_id)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        voters.discard(cc.node_id)
        learners.add(cc.node_id)
    else:
        voters.discard(cc.node_id)
        learners.discard(cc.node_id)
    if not voters:
        return conf
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


# -- members ---------------------------------------------------------------------------------------
@dataclass
class Member:
    id: int
    boot_peers: tuple[int, ...]  # the Config.peers it starts with (empty for a joiner)
    disk: Disk
    node: RawNode | None = None  # None while crashed or retired
    sm: StateMachine | None = None  # None while crashed with a volatile state machine
    retired: bool = False  # removed from the membership and shut down for good
    retire_at: int | None = None
    commit_seen: int = 0  # the commit index last observed (never decreases while it runs)
    write: tuple[Ready, list[Message]] | None = None  # a leader's write in flight
    write_due: int = 0  # the step from which that write may complete


@dataclass
class Result:
    seed: int
    variant: str
    steps: int
    ok: bool
    commits: int = 0
    leaders: int = 0
    crashes: int = 0
    applied: int = 0
    reads: int = 0
    installs: int = 0
    compactions: int = 0
    conf_changes: int = 0
    invariant: str = ""
    report: str = ""
    fingerprint: str = ""


class Sim:
    def __init__(
        self,
        seed: int,
        steps: int = DEFAULT_STEPS,
        variant: str = "correct",
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.seed = seed
        self.steps = steps
        self.variant_name = variant
        self.variant = VARIANTS[variant]
        self.rng = random.Random(seed)
        self.p = draw_params(self.rng)
        self.variant.bias(self.p)
        self.echo = echo
        self.now = 0
        self.phase = "faults"
        self.trace: collections.deque = collections.deque(maxlen=TRACE_EVENTS)
        self.members: dict[int, Member] = {}
        self.next_id = 1
        # The network.
        self.queue: list[Message] = []  # deliverable now, oldest first
        self.delayed: list[tuple[int, int, Message]] = []  # (due step, seq, msg) heap
        self.seq = 0
        self.cut: set[tuple[int, int]] = set()
        self.loss = self.p.loss
        self.dup = self.p.dup
        self.window = self.p.window
        # Ghost state for the invariants.
        self.leader_of_term: dict[int, int] = {}
        self.seen_leaders: set[tuple[int, int]] = set()
        self.entry_of: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.committed: dict[int, tuple[int, int]] = {}  # index -> (entry term, commit term)
        self.max_committed = 0
        self.applied_entry: dict[int, Entry] = {}
        self.chain: dict[int, bytes] = {1: ZERO_DIGEST}
        self.max_applied = 0
        self.read_floor: dict[bytes, int] = {}
        self.live_appliers: dict[bytes, set[int]] = {}
        self.counter = 0
        self.crash_next: Member | None = None  # crash_on_commit: the leader to crash next step
        # The scheduler: one action per step, drawn by weight.
        p = self.p
        weighted = [
            (p.w_deliver, self._deliver_step),
            (p.w_ready, self._ready_step),
            (p.w_tick, self._tick_all),
            (p.w_propose, self._propose),
            (p.w_read, self._read),
            (p.w_compact, self._compact),
            (p.w_conf, self._conf_change),
            (p.w_transfer, self._transfer),
            (p.w_crash, self._crash_step),
            (p.w_restart, self._restart_step),
            (p.w_net, self._net_change),
        ]
        self.actions = [fn for w, fn in weighted if w > 0]
        self.action_cum = list(itertools.accumulate(w for w, _ in weighted if w > 0))
        # Statistics.
        self.n_crashes = 0
        self.n_applied = 0
        self.n_reads = 0
        self.n_installs = 0  # snapshots received from a leader and installed
        self.n_compactions = 0
        self.n_conf = 0

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> Result:
        res = Result(self.seed, self.variant_name, 0, True)
        try:
            peers = tuple(range(1, self.p.n_voters + 1))
            for _ in peers:
                self._add_member(peers)
            for step in range(self.steps):
                self.now = step
                self._step()
                if step % FULL_SCAN_EVERY_STEPS == 0:
                    self._full_scan()
            self.now = self.steps
            self._liveness()
            self._full_scan()
            self._check_durability()
        except SimFailure as f:
            res.ok = False
            res.invariant = f.invariant
            res.report = self._report(f.invariant, f.detail)
        except Exception as e:  # noqa: BLE001 — any exception from the core is a failure
            res.ok = False
            res.invariant = "exception"
            tb = "".join(traceback.format_exception(e)[-6:])
            res.report = self._report("exception", f"{type(e).__name__}: {e}\n{tb}")
        res.steps = self.now
        res.commits = self.max_committed
        res.leaders = len(self.seen_leaders)
        res.crashes = self.n_crashes
        res.applied = self.n_applied
        res.reads = self.n_reads
        res.installs = self.n_installs
        res.compactions = self.n_compactions
        res.conf_changes = self.n_conf
        h = hashlib.blake2b(digest_size=8)
        h.update(repr((res.steps, res.commits, res.leaders, res.applied)).encode())
        h.update(self.chain.get(self.max_applied, b""))
        res.fingerprint = h.hexdigest()
        return res

    def _report(self, invariant: str, detail: str) -> str:
        lines = [
            f"FAIL seed={self.seed} variant={self.variant_name} phase={self.phase} "
            f"step={self.now}: [{invariant}] {detail.rstrip()}",
            f"  cluster: {self._describe_params()}",
            f"  last {len(self.trace)} events:",
        ]
        lines += ["    " + _format_event(ev) for ev in self.trace]
        lines.append("  members:")
        for m in self.members.values():
            lines.append("    " + self._describe_member(m))
        lines.append(f"  replay: {replay_command(self.seed, self.steps, self.variant_name)} -v")
        return "\n".join(lines)

    def _describe_params(self) -> str:
        p = self.p
        return (
            f"voters={p.n_voters} election={p.election_ticks} heartbeat={p.heartbeat_ticks} "
            f"pre_vote={p.pre_vote} check_quorum={p.check_quorum} inflight={p.max_inflight_msgs} "
            f"durable_sm={p.durable_sm} loss={p.loss} dup={p.dup} delay={p.delay_p}/"
            f"{p.max_delay_steps} window={p.window} leader_async={p.leader_async_write}/"
            f"{p.write_delay_steps} "
            f"crash_in_ready={p.crash_in_ready} crash_on_commit={p.crash_on_commit}"
        )

    def _describe_member(self, m: Member) -> str:
        st = m.disk.cache
        disk = (
            f"disk snap={st.snapshot().meta.index} log={st.first_index()}..{st.last_index()} "
            f"hs={_hs_str(st.hard_state)} unsynced={len(m.disk.pending)}"
        )
        sm = f"sm={m.sm.index}" if m.sm else "sm=-"
        if m.retired:
            return f"{m.id}: retired {disk}"
        n = m.node
        if n is None:
            return f"{m.id}: crashed {sm} {disk}"
        return (
            f"{m.id}: {n.role.name} term={n.term} vote={n.vote} lead={n.lead} "
            f"commit={n.log.committed} applied={n.log.applied} last={n.log.last_index()} "
            f"conf={n.conf_state.voters}/{n.conf_state.learners} {sm} {disk}"
        )

    def _event(self, kind: str, *args) -> None:
        ev = (self.now, kind, args)
        self.trace.append(ev)
        if self.echo is not None:
            self.echo(_format_event(ev))

    def _live(self) -> Iterator[Member]:
        for m in self.members.values():
            if m.node is not None:
                yield m

    # -- one step --------------------------------------------------------------------------------
    def _step(self) -> None:
        if self.crash_next is not None:
            if self.crash_next.node is not None:
                self._crash(self.crash_next, "right after its commit moved")
            self.crash_next = None
            return
        self._release_delayed()
        self._retire_due()
        i = bisect.bisect_right(self.action_cum, self.rng.random() * self.action_cum[-1])
        self.actions[min(i, len(self.actions) - 1)]()

    def _deliver_step(self) -> None:
        if self.queue:
            self._deliver_one()
        else:
            self._ready_step()

    def _crash_step(self) -> None:
        live = list(self._live())
        if live:
            self._crash(self.rng.choice(live), "crash")

    def _restart_step(self) -> None:
        down = [m for m in self.members.values() if m.node is None and not m.retired]
        if down:
            self._restart(self.rng.choice(down))

    # -- members ---------------------------------------------------------------------------------
    def _add_member(self, peers: tuple[int, ...]) -> Member:
        mid = self.next_id
        self.next_id += 1
        m = Member(mid, peers, Disk())
        m.sm = StateMachine()
        self.members[mid] = m
        m.node = self._new_node(m, applied=0)
        self._event("start", mid, peers)
        self._check(m)
        return m

    def _new_node(self, m: Member, applied: int) -> RawNode:
        p = self.p
        cfg = Config(
            id=m.id,
            storage=m.disk.cache,
            rng=random.Random(self.rng.getrandbits(64)),
            peers=m.boot_peers,
            election_ticks=p.election_ticks,
            heartbeat_ticks=p.heartbeat_ticks,
            applied=applied,
            max_size_per_msg_bytes=p.max_size_per_msg_bytes,
            max_inflight_msgs=p.max_inflight_msgs,
            max_committed_size_per_ready_bytes=p.max_committed_size_per_ready_bytes,
            snapshot_chunk_bytes=p.snapshot_chunk_bytes,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
        )
        return self.variant.node_cls(cfg)

    def _crash(self, m: Member, why: str) -> None:
        self._event("crash", m.id, why)
        m.node = None
        m.write = None
        m.disk.crash(self.rng)
        if not self.p.durable_sm:
            m.sm = None
        self.n_crashes += 1

    def _restart(self, m: Member) -> None:
        st = m.disk.cache
        snap = st.snapshot()
        if m.sm is None or snap.meta.index > m.sm.index:
            m.sm = self._sm_from_snapshot(m, snap)
        m.node = node = self._new_node(m, applied=m.sm.index)
        floor = max(st.hard_state.commit, snap.meta.index)
        if self.p.durable_sm:
            floor = max(floor, m.sm.index)
        self._event("restart", m.id, f"sm={m.sm.index}", _hs_str(st.hard_state))
        if node.log.committed < floor:
            raise SimFailure(
                "commit monotonicity",
                f"member {m.id} restarted with commit {node.log.committed} below its durable "
                f"{floor}",
            )
        m.commit_seen = min(floor, node.log.committed)
        self._check(m)

    def _retire_due(self) -> None:
        for m in self.members.values():
            if m.retire_at is not None and m.retire_at <= self.now and not m.retired:
                self._event("retire", m.id)
                m.retired = True
                m.node = None
                m.write = None

    # -- the network -----------------------------------------------------------------------------
    def _send(self, msgs) -> None:
        rng = self.rng
        for msg in msgs:
            if self.loss and rng.random() < self.loss:
                self._event("lose", msg)
                continue
            copies = 2 if self.dup and rng.random() < self.dup else 1
            for _ in range(copies):
                if self.p.delay_p and rng.random() < self.p.delay_p:
                    self.seq += 1
                    due = self.now + rng.randint(1, self.p.max_delay_steps)
                    heapq.heappush(self.delayed, (due, self.seq, msg))
                else:
                    self.queue.append(msg)

    def _release_delayed(self) -> None:
        d = self.delayed
        while d and d[0][0] <= self.now:
            self.queue.append(heapq.heappop(d)[2])

    def _deliver_one(self) -> None:
        q = self.queue
        n = len(q)
        i = self.rng.randrange(n) if self.window >= n else self.rng.randrange(self.window)
        msg = q.pop(i)
        m = self.members.get(msg.to)
        if m is None or m.node is None:
            return
        if (msg.frm, msg.to) in self.cut:
            self._event("cut", msg)
            sender = self.members.get(msg.frm)
            if sender is not None and sender.node is not None and self.rng.random() < 0.5:
                sender.node.report_unreachable(msg.to)
            return
        self._event("deliver", msg)
        m.node.step(msg)
        self._check(m)

    def _net_change(self) -> None:
        rng = self.rng
        ids = sorted(m.id for m in self.members.values() if not m.retired)
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

    # -- the application's loop ------------------------------------------------------------------
    def _ready_step(self) -> None:
        now = self.now
        cands = [
            m
            for m in self._live()
            if (m.write is not None and m.write_due <= now)
            or (m.write is None and m.node.has_ready())
        ]
        if not cands:
            self._tick_all()
            return
        self._handle_ready(self.rng.choice(cands), faults=True)

    def _handle_ready(self, m: Member, faults: bool) -> None:
        """Play the application's part of one Ready, in the documented order."""
        rng = self.rng
        crash = None
        if faults and self.p.crash_in_ready and rng.random() < self.p.crash_in_ready:
            crash = rng.choice(("persist", "send", "apply"))
        if m.write is not None:
            rd, rest = m.write  # a leader's write in flight completes now
            m.write = None
            self._event("write-done", m.id)
        else:
            node = m.node
            rd = node.ready()
            self._event("ready", m.id, rd)
            rest = list(rd.messages)
            if node.role == LEADER and faults and rng.random() < self.p.leader_async_write:
                early = [x for x in rest if x.type in EARLY_TYPES]
                if early:
                    rest = [x for x in rest if x.type not in EARLY_TYPES]
                    self._send(early)
                    if rd.entries or rd.hard_state is not None or rd.snapshot is not None:
                        m.write = (rd, rest)  # the write finishes in a later step
                        m.write_due = self.now + rng.randint(0, self.p.write_delay_steps)
                        self._event("write-start", m.id)
                        return
        # 1. Persist.
        disk = m.disk
        if rd.snapshot is not None:
            disk.write(_SNAP, rd.snapshot)
        if rd.entries:
            disk.write(_ENTS, rd.entries)
        if rd.hard_state is not None:
            disk.write(_HS, rd.hard_state)
        if crash == "persist":
            self._crash(m, "while persisting")
            return
        if rd.must_sync:
            disk.sync()
        # 2. Send.
        self._check_durable_before_send(m, rest)
        if crash == "send":
            self._send(rest[: rng.randint(0, len(rest))])
            self._crash(m, "while sending")
            return
        self._send(rest)
        # 3. Apply.
        if rd.snapshot is not None:
            m.sm = self._sm_from_snapshot(m, rd.snapshot)
            if rd.snapshot.meta.index > 1:
                self.n_installs += 1
        stop = rng.randint(0, len(rd.committed_entries)) if crash == "apply" else -1
        for i, e in enumerate(rd.committed_entries):
            if i == stop:
                self._crash(m, f"while applying {e.index}")
                return
            self._apply_entry(m, e)
        if stop == len(rd.committed_entries):
            self._crash(m, "before advance")
            return
        for rs in rd.read_states:
            self._check_read(m, rs.index, rs.context)
        # 4. Advance.
        node = m.node
        node.advance(rd)
        if node.log.applied != m.sm.index:
            raise SimFailure(
                "state machine safety",
                f"member {m.id}: core applied {node.log.applied} but the state machine is at "
                f"{m.sm.index}",
            )
        if node.log.unstable.snapshot is None and node.conf_state != m.sm.conf:
            raise SimFailure(
                "state machine safety",
                f"member {m.id}: core membership {node.conf_state} differs from the state "
                f"machine's {m.sm.conf} at {m.sm.index}",
            )
        self._check(m)

    def _sm_from_snapshot(self, m: Member, snap: Snapshot) -> StateMachine:
        meta = snap.meta
        if meta.index == 0:
            return StateMachine()
        if not snap.data:
            if meta.index != 1:
                raise SimFailure("state machine safety", f"empty snapshot at {meta.index}")
            return StateMachine(1, ZERO_DIGEST, meta.conf_state)
        index = int.from_bytes(snap.data[:8], "big")
        digest = snap.data[8:16]
        if index != meta.index:
            raise SimFailure(
                "state machine safety",
                f"member {m.id}: snapshot meta index {meta.index} but content of {index}",
            )
        if m.sm is not None and m.sm.index > index and m.node is not None:
            raise SimFailure(
                "state machine safety",
                f"member {m.id}: snapshot at {index} would take its state machine back from "
                f"{m.sm.index}",
            )
        known = self.chain.get(index)
        if known is not None and known != digest:
            raise SimFailure(
                "state machine safety",
                f"member {m.id}: snapshot at {index} differs from the applied state there",
            )
        return StateMachine(index, digest, meta.conf_state)

    def _apply_entry(self, m: Member, e: Entry) -> None:
        sm = m.sm
        if e.index != sm.index + 1:
            raise SimFailure(
                "state machine safety",
                f"member {m.id} applied {e.index} right after {sm.index} (gap or reordering)",
            )
        prev = self.applied_entry.get(e.index)
        if prev is None:
            self.applied_entry[e.index] = e
        elif prev != e:
            raise SimFailure(
                "state machine safety",
                f"member {m.id} applied {_entry_str(e)} where another applied {_entry_str(prev)}",
            )
        sm.digest = _chain(sm.digest, e)
        sm.index = e.index
        known = self.chain.setdefault(e.index, sm.digest)
        if known != sm.digest:
            raise SimFailure(
                "state machine safety",
                f"member {m.id}: state after applying {e.index} differs from another member's",
            )
        if e.type == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            sm.conf = _apply_conf(sm.conf, cc)
            if cc.type == ConfChangeType.REMOVE:
                gone = self.members.get(cc.node_id)
                if gone is not None and gone.retire_at is None:
                    gone.retire_at = self.now + self.rng.randint(0, 60)
        elif e.data.startswith(b"live"):
            self.live_appliers.setdefault(e.data, set()).add(m.id)
        if e.index > self.max_applied:
            self.max_applied = e.index
        self.n_applied += 1

    def _check_durable_before_send(self, m: Member, msgs: list[Message]) -> None:
        """A granted vote or an acknowledged append promises that it is on disk (Figure 2).

        A vote for a term the member's durable term has already passed is moot (it can never
        vote in that term again). An append acknowledgement must hold whatever the term: the
        core withdraws unsent acks of entries replaced before they were persisted.
        """
        d = m.disk.durable
        term = d.hard_state.term
        for x in msgs:
            if x.reject:
                continue
            if x.type == MT.VOTE_RESP and x.term >= term:
                hs = d.hard_state
                if hs.term < x.term or hs.vote != x.to:
                    raise SimFailure(
                        "durable before answer",
                        f"member {m.id} grants its vote in term {x.term} to {x.to}, but its disk "
                        f"says term {hs.term} vote {hs.vote}",
                    )
            elif x.type == MT.APP_RESP and x.index > d.last_index():
                raise SimFailure(
                    "durable before answer",
                    f"member {m.id} acknowledges index {x.index}, but its disk ends at "
                    f"{d.last_index()}",
                )

    def _check_read(self, m: Member, index: int, ctx: bytes) -> None:
        floor = self.read_floor.get(ctx)
        if floor is None:
            raise SimFailure("ReadIndex", f"member {m.id} got an answer for unknown read {ctx!r}")
        if index < floor:
            raise SimFailure(
                "ReadIndex",
                f"member {m.id}: read {ctx!r} answered at index {index}, but entry {floor} was "
                f"applied before the read was asked",
            )
        self.n_reads += 1
        self._event("read-ok", m.id, ctx, index)

    # -- client and operator actions -------------------------------------------------------------
    def _tick_all(self) -> None:
        self._event("tick")
        skew = self.p.skew
        for m in list(self._live()):
            if skew and self.rng.random() < skew:
                continue
            m.node.tick()
            self._check(m)

    def _propose(self) -> None:
        live = list(self._live())
        if not live:
            return
        m = self.rng.choice(live)
        for _ in range(1 if self.rng.random() < 0.8 else self.rng.randint(2, 5)):
            self.counter += 1
            data = b"p%d" % self.counter
            try:
                m.node.propose(data)
                self._event("propose", m.id, data)
            except ProposalDropped as e:
                self._event("dropped", m.id, data, str(e))
                break
        self._check(m)

    def _read(self) -> None:
        live = list(self._live())
        if not live:
            return
        m = self.rng.choice(live)
        self.counter += 1
        ctx = b"r%d" % self.counter
        self.read_floor[ctx] = self.max_applied
        self._event("read", m.id, ctx, self.max_applied)
        m.node.read_index(ctx)
        self._check(m)

    def _leader(self) -> Member | None:
        best = None
        for m in self._live():
            if m.node.role == LEADER and (best is None or m.node.term > best.node.term):
                best = m
        return best

    def _compact(self) -> None:
        cands = [
            m
            for m in self._live()
            if m.write is None
            and m.node.log.unstable.snapshot is None
            and m.sm.index > m.disk.cache.snapshot().meta.index
            and m.node.log.applied == m.sm.index
        ]
        if not cands:
            return
        m = self.rng.choice(cands)
        sm = m.sm
        st = m.disk.cache
        compact_to = max(st.first_index() - 1, sm.index - self.rng.randint(0, 5))
        m.disk.save_snapshot(
            sm.index, sm.conf, sm.snapshot_data(self.rng.randint(0, 80)), compact_to
        )
        self._event("compact", m.id, sm.index, compact_to)
        self.n_compactions += 1
        self._check(m)

    def _conf_change(self) -> None:
        ld = self._leader()
        if ld is None:
            return
        node = ld.node
        cs = node.conf_state
        rng = self.rng
        prs = node.trk.progress
        # Promote learners once caught up, as the runtime does; now and then one that is not
        # (legal, only slower to commit until it catches up).
        caught_up = [
            lid
            for lid in cs.learners
            if lid in prs and prs[lid].match >= node.log.last_index() - 3 or rng.random() < 0.1
        ]
        n_members = sum(1 for m in self.members.values() if not m.retired and m.retire_at is None)
        options = []
        if caught_up:
            options.append("promote")
        if n_members < max(MAX_MEMBERS, self.p.n_voters):
            options.append("add")
        if len(cs.voters) > MIN_VOTERS:
            options.append("remove-voter")
        if cs.learners:
            options.append("remove-learner")
        if not options:
            return
        what = rng.choice(options)
        if what == "promote":
            cc = ConfChange(ConfChangeType.ADD_VOTER, rng.choice(caught_up))
        elif what == "add":
            cc = ConfChange(ConfChangeType.ADD_LEARNER, self.next_id)
        elif what == "remove-voter":
            target = ld.id if rng.random() < 0.3 else rng.choice(cs.voters)
            cc = ConfChange(ConfChangeType.REMOVE, target)
        else:
            cc = ConfChange(ConfChangeType.REMOVE, rng.choice(cs.learners))
        try:
            node.propose_conf_change(cc)
        except (ProposalDropped, NotLeader) as e:
            self._event("conf-dropped", ld.id, cc.type.name, cc.node_id, str(e))
            return
        self.n_conf += 1
        self._event("conf", ld.id, cc.type.name, cc.node_id)
        self._check(ld)
        if what == "add":
            self._add_member(())

    def _transfer(self) -> None:
        ld = self._leader()
        if ld is None:
            return
        others = [v for v in ld.node.conf_state.voters if v != ld.id]
        if not others:
            return
        to = self.rng.choice(others)
        try:
            ld.node.transfer_leadership(to)
            self._event("transfer", ld.id, to)
        except (ProposalDropped, NotLeader) as e:
            self._event("transfer-dropped", ld.id, to, str(e))
        self._check(ld)

    # -- invariants ------------------------------------------------------------------------------
    def _check(self, m: Member) -> None:
        """The per-step invariants, on member `m` (which the step touched)."""
        node = m.node
        if node is None:
            return
        log = node.log
        if node.role == LEADER:
            term = node.term
            other = self.leader_of_term.setdefault(term, m.id)
            if other != m.id:
                raise SimFailure(
                    "election safety", f"members {other} and {m.id} are both leaders of term {term}"
                )
            if (m.id, term) not in self.seen_leaders:
                self.seen_leaders.add((m.id, term))
                self._event("leader", m.id, term)
                self._check_completeness(m)
        c = log.committed
        if c != m.commit_seen:
            if c < m.commit_seen:
                raise SimFailure(
                    "commit monotonicity",
                    f"member {m.id}: commit index went from {m.commit_seen} back to {c}",
                )
            self._observe_commits(m, m.commit_seen + 1, c)
            m.commit_seen = c
            if (
                node.role == LEADER
                and self.phase == "faults"
                and self.p.crash_on_commit
                and self.rng.random() < self.p.crash_on_commit
            ):
                self.crash_next = m
        u = log.unstable
        if u.entries:
            prev = log.term(u.offset - 1)
            for e in u.entries:
                self._check_entry(m, e, prev)
                prev = e.term

    def _check_entry(self, m: Member, e: Entry, prev_term: int) -> None:
        val = (e.type, e.data, prev_term)
        got = self.entry_of.setdefault((e.index, e.term), val)
        if got is not val and got != val:
            raise SimFailure(
                "log matching",
                f"member {m.id} holds {_entry_str(e)} after term {prev_term}, but another log "
                f"holds (index {e.index}, term {e.term}) with data {got[1]!r} after term {got[2]}",
            )

    def _observe_commits(self, m: Member, lo: int, hi: int) -> None:
        node = m.node
        ct = node.term
        first = node.log.first_index() - 1
        for i in range(max(lo, first), hi + 1):
            t = node.log.term(i)
            got = self.committed.get(i)
            if got is None or ct < got[1]:
                if got is not None and got[0] != t:
                    raise SimFailure(
                        "commit safety",
                        f"member {m.id} committed index {i} with term {t}, another with {got[0]}",
                    )
                self.committed[i] = (t, ct)
                if node.role == LEADER:
                    self._check_commit_durable(m, i, t)
                for ldm in self._live():
                    ld = ldm.node
                    if ld.role == LEADER and ld.term > ct:
                        self._leader_has(ldm, i, t, ct)
            elif got[0] != t:
                raise SimFailure(
                    "commit safety",
                    f"member {m.id} committed index {i} with term {t}, another with {got[0]}",
                )
        if hi > self.max_committed:
            self.max_committed = hi

    def _check_commit_durable(self, m: Member, i: int, t: int) -> None:
        """An entry a leader commits is on the disks (not just in the memory) of a majority."""
        voters = m.node.trk.voters
        have = 0
        for v in voters:
            mm = self.members.get(v)
            if mm is None:
                continue
            d = mm.disk.durable
            if i < d.ents[0].index or (i <= d.last_index() and d.term(i) == t):
                have += 1
        if have < len(voters) // 2 + 1:
            raise SimFailure(
                "commit durability",
                f"leader {m.id} committed entry {i} (term {t}) but only {have} of its "
                f"{len(voters)} voters have it on disk",
            )

    def _check_completeness(self, m: Member) -> None:
        node = m.node
        first = node.log.first_index() - 1
        get = self.committed.get
        for i in range(max(first, 1), self.max_committed + 1):
            got = get(i)
            if got is not None and got[1] < node.term:
                self._leader_has(m, i, got[0], got[1])

    def _leader_has(self, m: Member, i: int, t: int, ct: int) -> None:
        log = m.node.log
        if i < log.first_index() - 1:
            return  # compacted: the snapshot holds it (checked against the applied state)
        if log.term_or_zero(i) != t:
            raise SimFailure(
                "leader completeness",
                f"leader {m.id} of term {m.node.term} lacks entry {i} (term {t}) committed by "
                f"term {ct}; it has term {log.term_or_zero(i)} there",
            )

    def _full_scan(self) -> None:
        """Log matching over every log: what the core reads, and what is on the platter."""
        for m in self._live():
            for st in (m.disk.cache, m.disk.durable):
                ents = st.ents
                for k in range(1, len(ents)):
                    self._check_entry(m, ents[k], ents[k - 1].term)
            self._check(m)

    def _check_durability(self) -> None:
        """Every applied entry is still held by a majority of the voters."""
        ld = self._leader()
        if ld is None:
            return
        voters = [self.members[v] for v in ld.node.conf_state.voters if v in self.members]
        need = len(ld.node.conf_state.voters) // 2 + 1
        for i, e in self.applied_entry.items():
            have = 0
            for v in voters:
                if v.node is None:
                    continue
                log = v.node.log
                if i < log.first_index() - 1 or log.term_or_zero(i) == e.term:
                    have += 1
            if have < need:
                raise SimFailure(
                    "durability",
                    f"applied {_entry_str(e)} is held by only {have} of {len(voters)} voters",
                )

    # -- liveness --------------------------------------------------------------------------------
    def _liveness(self) -> None:
        self.phase = "liveness"
        self._event("heal")
        self.cut.clear()
        self.loss = self.dup = 0.0
        self.window = 1
        while self.delayed:
            self.queue.append(heapq.heappop(self.delayed)[2])
        self.p.delay_p = 0.0
        for m in self.members.values():
            if m.node is None and not m.retired:
                self._restart(m)
        e = self.p.election_ticks
        proposed: dict[tuple[int, int], int] = {}
        last_prop = -(10**9)
        for t in range(LIVENESS_ELECTION_TIMEOUTS * e):
            self.now += 1
            self._retire_due()
            self._tick_all()
            self._settle()
            ld = self._leader()
            if ld is None:
                continue
            voters = ld.node.conf_state.voters
            need = len(voters) // 2 + 1
            for appliers in self.live_appliers.values():
                if sum(1 for v in voters if v in appliers) >= need:
                    self._event("live", ld.id, ld.node.term, t)
                    return
            key = (ld.id, ld.node.term)
            if key not in proposed or t - last_prop >= 2 * e:
                self.counter += 1
                data = b"live%d" % self.counter
                try:
                    ld.node.propose(data)
                    self._event("propose", ld.id, data)
                    proposed[key] = t
                    last_prop = t
                except ProposalDropped as ex:
                    self._event("dropped", ld.id, data, str(ex))
                self._check(ld)
        ld = self._leader()
        raise SimFailure(
            "liveness",
            f"no new entry applied on a majority within {LIVENESS_ELECTION_TIMEOUTS * e} ticks "
            f"after healing (leader: {ld.id if ld else 'none'})",
        )

    def _settle(self) -> None:
        """Handle every Ready and deliver every message until nothing moves."""
        for _ in range(SETTLE_MAX_ITERATIONS):
            moved = False
            for m in list(self._live()):
                if m.write is not None or m.node.has_ready():
                    self._handle_ready(m, faults=False)
                    moved = True
            while self.queue:
                self._deliver_one()
                moved = True
            if not moved:
                return
        raise SimFailure(
            "liveness",
            f"message storm: still busy after {SETTLE_MAX_ITERATIONS} delivery rounds without "
            f"a tick (messages that only beget messages)",
        )


def _entry_str(e: Entry) -> str:
    kind = "conf" if e.type == EntryType.CONF_CHANGE else "data"
    return f"entry {e.index} (term {e.term}, {kind} {e.data[:24]!r})"


def _hs_str(hs: HardState) -> str:
    return f"t{hs.term}/v{hs.vote}/c{hs.commit}"


def _format_event(ev: tuple) -> str:
    step, kind, args = ev
    if kind in ("deliver", "lose", "cut"):
        return f"{step:6d} {kind} {describe(args[0])}"
    if kind == "ready":
        mid, rd = args
        parts = []
        if rd.soft_state is not None:
            parts.append(f"soft={rd.soft_state.role.name}/lead{rd.soft_state.leader}")
        if rd.hard_state is not None:
            parts.append("hs=" + _hs_str(rd.hard_state))
        if rd.snapshot is not None:
            parts.append(f"snap=i{rd.snapshot.meta.index}/t{rd.snapshot.meta.term}")
        if rd.entries:
            parts.append("ents=" + ",".join(f"t{e.term}/{e.index}" for e in rd.entries))
        if rd.committed_entries:
            ce = rd.committed_entries
            parts.append(f"apply={ce[0].index}..{ce[-1].index}")
        if rd.messages:
            parts.append(f"msgs={len(rd.messages)}")
        if rd.read_states:
            parts.append(f"reads={len(rd.read_states)}")
        if rd.must_sync:
            parts.append("sync")
        return f"{step:6d} ready {mid}: " + " ".join(parts)
    return f"{step:6d} {kind} " + " ".join(
        a.decode() if isinstance(a, bytes) else str(a) for a in args
    )


# -- the command line ------------------------------------------------------------------------------
def replay_command(seed: int, steps: int, variant: str) -> str:
    cmd = f"python -m raftbox.raft.sim --seeds 1 --seed {seed}"
    if steps != DEFAULT_STEPS:
        cmd += f" --steps {steps}"
    if variant != "correct":
        cmd += f" --variant {variant}"
    return cmd


def run_seed(seed: int, steps: int = DEFAULT_STEPS, variant: str = "correct") -> Result:
    return Sim(seed, steps, variant).run()


def _run_job(args: tuple[int, int, str]) -> Result:
    return run_seed(*args)


def run_seeds(seeds: range, steps: int, variant: str, jobs: int = 1) -> Iterator[Result]:
    work = [(s, steps, variant) for s in seeds]
    if jobs <= 1:
        for w in work:
            yield _run_job(w)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool:
        yield from pool.imap(_run_job, work, chunksize=4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m raftbox.raft.sim",
        description="Deterministic simulation of a raftbox Raft cluster under faults.",
    )
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="fault-phase steps per seed")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="correct")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    ap.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: a line per seed; -vv: every event"
    )
    ap.add_argument(
        "--max-failures", type=int, default=5, help="stop after this many failing seeds (0: never)"
    )
    args = ap.parse_args(argv)
    seeds = range(args.seed, args.seed + args.seeds)
    t0 = time.monotonic()
    n = fails = steps = commits = 0
    if args.verbose >= 2 or (args.verbose and args.seeds == 1):
        results: Iterator[Result] = iter(
            [Sim(s, args.steps, args.variant, echo=print).run() for s in seeds]
        )
    else:
        results = run_seeds(seeds, args.steps, args.variant, args.jobs)
    for res in results:
        n += 1
        steps += res.steps
        commits += res.commits
        if args.verbose:
            print(
                f"seed {res.seed}: {'ok' if res.ok else 'FAIL ' + res.invariant} steps={res.steps} "
                f"commit={res.commits} leaders={res.leaders} applied={res.applied} "
                f"crashes={res.crashes} reads={res.reads} compactions={res.compactions} "
                f"installs={res.installs} "
                f"conf={res.conf_changes} fp={res.fingerprint}"
            )
        if not res.ok:
            fails += 1
            print(res.report, flush=True)
            if args.max_failures and fails >= args.max_failures:
                print(f"stopping after {fails} failing seeds (--max-failures)")
                break
    dt = time.monotonic() - t0
    print(
        f"sim: {n} seeds from {args.seed} variant={args.variant}: {fails} violations, "
        f"{steps} steps, {commits} commits, {dt:.1f}s"
    )
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
