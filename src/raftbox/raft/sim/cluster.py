"""The simulated cluster and its scheduler: one seed, one run.

Theory of operation
-------------------
A single `random.Random(seed)` draws the cluster (3..7 voters), the configuration, the fault
rates (`params.py`), and then every decision of a scheduler that plays the application's part
for every member, one small *step* at a time:

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

Besides the disk and network faults (`faults.py`), the scheduler itself injects:
- **Crashes inside a Ready.** A crash may strike while persisting (some writes lost), between
  persisting and sending (the messages lost, the synced state kept), or while applying.
- **Leader writes in flight** (Ready docstring, thesis §10.2.1). A leader may send its APP,
  HEARTBEAT and SNAP messages first and finish its write some steps later; meanwhile it keeps
  receiving messages and ticking (it is not asked for another Ready until the write is done).
- **Nemesis.** Now and then a leader crashes right after its commit index moved.
- **The state machine** (`statemachine.py`). Per seed, either *durable* (like the SQLite FSM:
  its applied index survives a crash, and the node restarts with `Config(applied=...)`; if the
  disk holds a newer snapshot the FSM is restored from it first), or *volatile* (rebuilt from
  the disk's snapshot at restart, then the core re-delivers the committed entries).

After every step the invariants (`invariants.py`) are checked on the member the step touched,
and every log is scanned in full every `FULL_SCAN_EVERY_STEPS` steps.

Then the liveness phase: the network heals, crashed members restart, faults stop; a leader must
appear and a new entry must be applied on a majority of its voters within a bounded number of
ticks; and with the clocks stopped the cluster must go quiet (no message storm).
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import itertools
import random
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..core import Config, RawNode, Ready
from ..errors import NotLeader, ProposalDropped
from ..messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    StateRole,
)
from .faults import Disk, Network
from .invariants import Checker, Invariant, SimFailure
from .params import DEFAULT_STEPS, draw_params
from .statemachine import StateMachine, apply_conf, chain
from .trace import format_event, hs_str, replay_command
from .variants import VARIANTS

MT = MessageType
LEADER = StateRole.LEADER
EARLY_TYPES = frozenset((MT.APP, MT.HEARTBEAT, MT.SNAP))  # a leader may send before its write
TRACE_EVENTS = 40
FULL_SCAN_EVERY_STEPS = 512
LIVENESS_ELECTION_TIMEOUTS = 30  # the liveness bound, in election timeouts (ticks)
SETTLE_MAX_ITERATIONS = 20_000
MAX_MEMBERS = 7
MIN_VOTERS = 3


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
    invariant: str = ""  # an `Invariant` value when not ok
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
        self.net = Network(self.p, self.rng, self._event)
        self.inv = Checker(self.members, self._event)  # the ghost state and the invariants
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
            self.inv.applied_entries_survive(self._leader())
        except SimFailure as f:
            res.ok = False
            res.invariant = f.invariant.value
            res.report = self._report(f.invariant, f.detail)
        except Exception as e:  # noqa: BLE001 — any exception from the core is a failure
            res.ok = False
            res.invariant = Invariant.EXCEPTION.value
            tb = "".join(traceback.format_exception(e)[-6:])
            res.report = self._report(Invariant.EXCEPTION, f"{type(e).__name__}: {e}\n{tb}")
        inv = self.inv
        res.steps = self.now
        res.commits = inv.max_committed
        res.leaders = len(inv.seen_leaders)
        res.crashes = self.n_crashes
        res.applied = self.n_applied
        res.reads = self.n_reads
        res.installs = self.n_installs
        res.compactions = self.n_compactions
        res.conf_changes = self.n_conf
        h = hashlib.blake2b(digest_size=8)
        h.update(repr((res.steps, res.commits, res.leaders, res.applied)).encode())
        h.update(inv.chain.get(inv.max_applied, b""))
        res.fingerprint = h.hexdigest()
        return res

    def _report(self, invariant: Invariant, detail: str) -> str:
        lines = [
            f"FAIL seed={self.seed} variant={self.variant_name} phase={self.phase} "
            f"step={self.now}: [{invariant}] {detail.rstrip()}",
            f"  cluster: {self.p.describe()}",
            f"  last {len(self.trace)} events:",
        ]
        lines += ["    " + format_event(ev) for ev in self.trace]
        lines.append("  members:")
        for m in self.members.values():
            lines.append("    " + self._describe_member(m))
        lines.append(f"  replay: {replay_command(self.seed, self.steps, self.variant_name)} -v")
        return "\n".join(lines)

    def _describe_member(self, m: Member) -> str:
        st = m.disk.cache
        disk = (
            f"disk snap={st.snapshot().meta.index} log={st.first_index()}..{st.last_index()} "
            f"hs={hs_str(st.hard_state)} unsynced={len(m.disk.pending)}"
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
            self.echo(format_event(ev))

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
        self.net.release_delayed(self.now)
        self._retire_due()
        i = bisect.bisect_right(self.action_cum, self.rng.random() * self.action_cum[-1])
        self.actions[min(i, len(self.actions) - 1)]()

    def _check(self, m: Member) -> None:
        """The per-step invariants on member `m`; then the nemesis: a leader whose commit index
        just moved may be crashed at the next step."""
        moved = self.inv.after_step(m)
        if (
            moved
            and m.node.role == LEADER
            and self.phase == "faults"
            and self.p.crash_on_commit
            and self.rng.random() < self.p.crash_on_commit
        ):
            self.crash_next = m

    def _full_scan(self) -> None:
        """Log matching over every log (what the core reads, and the platter), then the
        per-step invariants on every live member."""
        for m in self._live():
            self.inv.logs_match(m)
            self._check(m)

    def _deliver_step(self) -> None:
        if self.net.queue:
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
            m.sm = self.inv.restore(m, snap)
        m.node = node = self._new_node(m, applied=m.sm.index)
        floor = max(st.hard_state.commit, snap.meta.index)
        if self.p.durable_sm:
            floor = max(floor, m.sm.index)
        self._event("restart", m.id, f"sm={m.sm.index}", hs_str(st.hard_state))
        self.inv.restart_keeps_commit(m, floor)
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
        self.net.send(msgs, self.now)

    def _deliver_one(self) -> None:
        msg = self.net.pick()
        m = self.members.get(msg.to)
        if m is None or m.node is None:
            return  # a message to a crashed (or retired) member is lost
        if self.net.is_cut(msg):
            self._event("cut", msg)
            sender = self.members.get(msg.frm)
            if sender is not None and sender.node is not None and self.rng.random() < 0.5:
                sender.node.report_unreachable(msg.to)
            return
        self._event("deliver", msg)
        m.node.step(msg)
        self._check(m)

    def _net_change(self) -> None:
        self.net.change(sorted(m.id for m in self.members.values() if not m.retired))

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
            disk.write_snapshot(rd.snapshot)
        if rd.entries:
            disk.write_entries(rd.entries)
        if rd.hard_state is not None:
            disk.write_hard_state(rd.hard_state)
        if crash == "persist":
            self._crash(m, "while persisting")
            return
        if rd.must_sync:
            disk.sync()
        # 2. Send.
        self.inv.durable_before_answer(m, rest)
        if crash == "send":
            self._send(rest[: rng.randint(0, len(rest))])
            self._crash(m, "while sending")
            return
        self._send(rest)
        # 3. Apply.
        if rd.snapshot is not None:
            m.sm = self.inv.restore(m, rd.snapshot)
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
            self._read_answered(m, rs.index, rs.context)
        # 4. Advance.
        m.node.advance(rd)
        self.inv.after_advance(m)
        self._check(m)

    def _apply_entry(self, m: Member, e: Entry) -> None:
        self.inv.before_apply(m, e)
        sm = m.sm
        sm.digest = chain(sm.digest, e)
        sm.index = e.index
        self.inv.after_apply(m, e.index)
        if e.type == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            sm.conf = apply_conf(sm.conf, cc)
            if cc.type == ConfChangeType.REMOVE:
                gone = self.members.get(cc.node_id)
                if gone is not None and gone.retire_at is None:
                    gone.retire_at = self.now + self.rng.randint(0, 60)
        elif e.data.startswith(b"live"):
            self.live_appliers.setdefault(e.data, set()).add(m.id)
        self.n_applied += 1

    def _read_answered(self, m: Member, index: int, ctx: bytes) -> None:
        self.inv.read_answered(m, index, ctx)
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
        floor = self.inv.read_asked(ctx)
        self._event("read", m.id, ctx, floor)
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

    # -- liveness --------------------------------------------------------------------------------
    def _liveness(self) -> None:
        self.phase = "liveness"
        self._event("heal")
        self.net.heal()
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
            Invariant.LIVENESS,
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
            while self.net.queue:
                self._deliver_one()
                moved = True
            if not moved:
                return
        raise SimFailure(
            Invariant.LIVENESS,
            f"message storm: still busy after {SETTLE_MAX_ITERATIONS} delivery rounds without "
            f"a tick (messages that only beget messages)",
        )
