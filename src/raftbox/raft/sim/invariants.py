"""The claims the simulator checks, each next to the rule of the Raft paper it comes from.

References: the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable Consensus
Algorithm", extended version): Figure 2 (the rules), Figure 3 (the properties), §5.2-§5.4;
and Ongaro's thesis ("Consensus: Bridging Theory and Practice", 2014) for persistence (§3.8),
ReadIndex (§6.4) and a leader's write in parallel with its sends (§10.2.1).

How they are checked
--------------------
The `Checker` keeps *ghost state*: what the whole cluster has done, which no member could know
(every leader of every term, every entry ever seen at each (index, term), what was committed
and applied where). The cluster calls it after every step on the member the step touched, and
scans every log in full now and then, so a violation is reported at the step that caused it.
A violation raises `SimFailure(invariant, detail)`; the run stops and the report names the
`Invariant` (its value is what the report prints between brackets).

| invariant             | claim                                                            |
| --------------------- | ---------------------------------------------------------------- |
| election safety       | at most one leader per term                                      |
| log matching          | (index, term) identifies an entry and its whole prefix           |
| leader completeness   | a committed entry is in the log of every later leader            |
| commit safety         | no two members commit different entries at one index             |
| commit durability     | a committed entry is on the platter of a majority                |
| durable before answer | a vote or an append ack is on the platter when it is sent        |
| state machine safety  | no two members apply different entries at one index, in order    |
| commit monotonicity   | a member's commit index never goes back, not even over a restart |
| durability            | every applied entry is still held by a majority at the end       |
| ReadIndex             | a read's index covers everything applied before it was asked     |
| liveness              | after healing, a leader appears and commits (cluster.py); with   |
|                       | the clocks stopped, the cluster goes quiet (no message storm)    |

`Invariant.LEADER_APPEND_ONLY` (Figure 3) has no check of its own here: a leader that rewrote an
entry of its term breaks log matching, but one that only dropped entries would go unseen until
it broke another claim; tests/raft/test_paper.py checks it directly on its random runs.

Any exception from the core (`RaftInvariantError`, an assertion, anything else) is a failure
too, reported as `exception`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..messages import Entry, Message, MessageType, Snapshot, StateRole
from .statemachine import ZERO_DIGEST, StateMachine, snapshot_content
from .trace import entry_str

if TYPE_CHECKING:
    from .cluster import Member

MT = MessageType
LEADER = StateRole.LEADER


class Invariant(enum.StrEnum):
    """The name of a claim; the value is how reports and `Result.invariant` spell it."""

    ELECTION_SAFETY = "election safety"  # Figure 3; §5.2
    LEADER_APPEND_ONLY = "leader append-only"  # Figure 3; §5.3 (tests/raft/test_paper.py)
    LOG_MATCHING = "log matching"  # Figure 3; §5.3
    LEADER_COMPLETENESS = "leader completeness"  # Figure 3; §5.4, §5.4.3
    COMMIT_SAFETY = "commit safety"  # §5.4.2, Figure 8
    COMMIT_DURABILITY = "commit durability"  # §5.3 "replicated it on a majority"; thesis §3.8
    DURABLE_BEFORE_ANSWER = "durable before answer"  # Figure 2 "persistent state"; thesis §3.8
    STATE_MACHINE_SAFETY = "state machine safety"  # Figure 3; §5.4.3
    COMMIT_MONOTONICITY = "commit monotonicity"  # Figure 2 "commitIndex ... increases"
    DURABILITY = "durability"  # Figure 3 leader completeness, at the end of a run
    READ_INDEX = "ReadIndex"  # thesis §6.4
    LIVENESS = "liveness"  # §5.6 "timing and availability"
    EXCEPTION = "exception"  # the core raised (its own assertions included)


class SimFailure(Exception):
    """An invariant broke (or the cluster was not live). `invariant` names which."""

    def __init__(self, invariant: Invariant, detail: str) -> None:
        super().__init__(f"[{invariant}] {detail}")
        self.invariant = invariant
        self.detail = detail


class Checker:
    """The ghost state of one run and the checks over it.

    `members` is the cluster's own map (read, never changed here, except each member's
    `commit_seen`, the commit index last observed); `event(kind, *args)` adds to the trace.
    """

    def __init__(self, members: Mapping[int, Member], event: Callable[..., None]) -> None:
        self.members = members
        self._event = event
        self.leader_of_term: dict[int, int] = {}
        self.seen_leaders: set[tuple[int, int]] = set()
        self.entry_of: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.committed: dict[int, tuple[int, int]] = {}  # index -> (entry term, commit term)
        self.max_committed = 0
        self.applied_entry: dict[int, Entry] = {}
        self.chain: dict[int, bytes] = {1: ZERO_DIGEST}  # index -> state after applying it
        self.max_applied = 0
        self.read_floor: dict[bytes, int] = {}  # read context -> max applied when asked

    # -- after every step --------------------------------------------------------------------------
    def after_step(self, m: Member) -> bool:
        """The per-step invariants on member `m` (which the step touched).

        Returns whether its commit index moved forward (the scheduler's nemesis may then crash
        it, if it leads).
        """
        node = m.node
        if node is None:
            return False
        if node.role == LEADER:
            self.one_leader_per_term(m)
        moved = self.commit_never_goes_back(m)
        log = node.log
        u = log.unstable
        if u.entries:
            prev = log.term(u.offset - 1)
            for e in u.entries:
                self.log_matching(m, e, prev)
                prev = e.term
        return moved

    # -- election safety -----------------------------------------------------------------------------
    def one_leader_per_term(self, m: Member) -> None:
        """Election safety: at most one leader can be elected in a given term.

        Raft paper, Figure 3 and §5.2 (a candidate needs the votes of a majority, and each
        server votes at most once per term, its vote persisted before it answers). A new leader
        is also checked for leader completeness at once.
        """
        term = m.node.term
        other = self.leader_of_term.setdefault(term, m.id)
        if other != m.id:
            raise SimFailure(
                Invariant.ELECTION_SAFETY,
                f"members {other} and {m.id} are both leaders of term {term}",
            )
        if (m.id, term) not in self.seen_leaders:
            self.seen_leaders.add((m.id, term))
            self._event("leader", m.id, term)
            self.new_leader_is_complete(m)

    # -- log matching ----------------------------------------------------------------------------------
    def log_matching(self, m: Member, e: Entry, prev_term: int) -> None:
        """Log matching: if two logs contain an entry with the same index and term, the logs are
        identical in all entries up through that index.

        Raft paper, Figure 3 and §5.3. Checked by induction: every entry (index, term) has the
        same payload and the same previous term in every log that holds it, durable or not.
        A leader that rewrote one of its own entries (Figure 3, leader append-only) breaks it
        too.
        """
        val = (e.type, e.data, prev_term)
        got = self.entry_of.setdefault((e.index, e.term), val)
        if got is not val and got != val:
            raise SimFailure(
                Invariant.LOG_MATCHING,
                f"member {m.id} holds {entry_str(e)} after term {prev_term}, but another log "
                f"holds (index {e.index}, term {e.term}) with data {got[1]!r} after term {got[2]}",
            )

    def logs_match(self, m: Member) -> None:
        """Log matching over the whole of `m`'s logs: what the core reads, and the platter."""
        for st in (m.disk.cache, m.disk.durable):
            ents = st.ents
            for k in range(1, len(ents)):
                self.log_matching(m, ents[k], ents[k - 1].term)

    # -- commitment --------------------------------------------------------------------------------------
    def commit_never_goes_back(self, m: Member) -> bool:
        """Commit monotonicity: a member's commit index never decreases.

        Raft paper, Figure 2 ("commitIndex: ... increases monotonically"). What it newly
        commits is checked for commit safety, commit durability and leader completeness.
        Returns whether it moved.
        """
        c = m.node.log.committed
        if c == m.commit_seen:
            return False
        if c < m.commit_seen:
            raise SimFailure(
                Invariant.COMMIT_MONOTONICITY,
                f"member {m.id}: commit index went from {m.commit_seen} back to {c}",
            )
        self._observe_commits(m, m.commit_seen + 1, c)
        m.commit_seen = c
        return True

    def restart_keeps_commit(self, m: Member, floor: int) -> None:
        """Commit monotonicity across a crash: a member restarts with a commit index at least
        what its disk (hard state, snapshot) and, if durable, its state machine say it had."""
        if m.node.log.committed < floor:
            raise SimFailure(
                Invariant.COMMIT_MONOTONICITY,
                f"member {m.id} restarted with commit {m.node.log.committed} below its durable "
                f"{floor}",
            )

    def _observe_commits(self, m: Member, lo: int, hi: int) -> None:
        """Commit safety: no two members ever commit different entries at one index.

        Raft paper §5.4.2 and Figure 8: a leader commits entries of earlier terms only by
        committing one of its own term. For each newly committed index: the same entry as
        everyone else's; on the platter of a majority if a leader committed it; in the log of
        every live leader of a later term.
        """
        node = m.node
        ct = node.term
        first = node.log.first_index() - 1
        for i in range(max(lo, first), hi + 1):
            t = node.log.term(i)
            got = self.committed.get(i)
            if got is None or ct < got[1]:
                if got is not None and got[0] != t:
                    raise SimFailure(
                        Invariant.COMMIT_SAFETY,
                        f"member {m.id} committed index {i} with term {t}, another with {got[0]}",
                    )
                self.committed[i] = (t, ct)
                if node.role == LEADER:
                    self.commit_is_durable(m, i, t)
                for ldm in self.members.values():
                    ld = ldm.node
                    if ld is not None and ld.role == LEADER and ld.term > ct:
                        self._leader_has(ldm, i, t, ct)
            elif got[0] != t:
                raise SimFailure(
                    Invariant.COMMIT_SAFETY,
                    f"member {m.id} committed index {i} with term {t}, another with {got[0]}",
                )
        if hi > self.max_committed:
            self.max_committed = hi

    def commit_is_durable(self, m: Member, i: int, t: int) -> None:
        """Commit durability: an entry a leader commits is on the disks (not just in the memory)
        of a majority of its voters.

        Raft paper §5.3 (committed once "replicated it on a majority of the servers") with
        Figure 2's "updated on stable storage before responding to RPCs"; the leader counts
        itself only once its own write is durable (thesis §10.2.1).
        """
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
                Invariant.COMMIT_DURABILITY,
                f"leader {m.id} committed entry {i} (term {t}) but only {have} of its "
                f"{len(voters)} voters have it on disk",
            )

    # -- leader completeness ---------------------------------------------------------------------------
    def new_leader_is_complete(self, m: Member) -> None:
        """Leader completeness: if an entry is committed in a given term, it is present in the
        logs of the leaders of all higher terms.

        Raft paper, Figure 3 and §5.4 (the election restriction, §5.4.1, and the proof, §5.4.3).
        Checked when a leader appears (here) and when a commit is seen (`_observe_commits`).
        """
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
                Invariant.LEADER_COMPLETENESS,
                f"leader {m.id} of term {m.node.term} lacks entry {i} (term {t}) committed by "
                f"term {ct}; it has term {log.term_or_zero(i)} there",
            )

    # -- durable before answer -----------------------------------------------------------------------
    def durable_before_answer(self, m: Member, msgs: list[Message]) -> None:
        """A granted vote or an acknowledged append promises that it is on disk.

        Raft paper, Figure 2 ("persistent state on all servers, updated on stable storage before
        responding to RPCs"); thesis §3.8. A vote for a term the member's durable term has
        already passed is moot (it can never vote in that term again). An append
        acknowledgement must hold whatever the term: the core withdraws unsent acks of entries
        replaced before they were persisted.
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
                        Invariant.DURABLE_BEFORE_ANSWER,
                        f"member {m.id} grants its vote in term {x.term} to {x.to}, but its disk "
                        f"says term {hs.term} vote {hs.vote}",
                    )
            elif x.type == MT.APP_RESP and x.index > d.last_index():
                raise SimFailure(
                    Invariant.DURABLE_BEFORE_ANSWER,
                    f"member {m.id} acknowledges index {x.index}, but its disk ends at "
                    f"{d.last_index()}",
                )

    # -- state machine safety --------------------------------------------------------------------------
    def before_apply(self, m: Member, e: Entry) -> None:
        """State machine safety: if a server has applied a log entry at a given index to its
        state machine, no other server will ever apply a different log entry for that index.

        Raft paper, Figure 3 and §5.4.3. Also: each member applies gap-free and in order.
        """
        sm = m.sm
        if e.index != sm.index + 1:
            raise SimFailure(
                Invariant.STATE_MACHINE_SAFETY,
                f"member {m.id} applied {e.index} right after {sm.index} (gap or reordering)",
            )
        prev = self.applied_entry.get(e.index)
        if prev is None:
            self.applied_entry[e.index] = e
        elif prev != e:
            raise SimFailure(
                Invariant.STATE_MACHINE_SAFETY,
                f"member {m.id} applied {entry_str(e)} where another applied {entry_str(prev)}",
            )

    def after_apply(self, m: Member, index: int) -> None:
        """State machine safety on the state itself: after applying `index`, every member's
        state machine holds the same state (the hash chain over everything applied)."""
        known = self.chain.setdefault(index, m.sm.digest)
        if known != m.sm.digest:
            raise SimFailure(
                Invariant.STATE_MACHINE_SAFETY,
                f"member {m.id}: state after applying {index} differs from another member's",
            )
        if index > self.max_applied:
            self.max_applied = index

    def restore(self, m: Member, snap: Snapshot) -> StateMachine:
        """The state machine a snapshot restores, once checked: a snapshot's content equals the
        applied state at its index, and never takes a running state machine back.

        Raft paper §7 (log compaction: the snapshot is the state machine's state at its last
        included index) with state machine safety (Figure 3).
        """
        meta = snap.meta
        if meta.index == 0:
            return StateMachine()
        if not snap.data:
            if meta.index != 1:
                raise SimFailure(Invariant.STATE_MACHINE_SAFETY, f"empty snapshot at {meta.index}")
            return StateMachine(1, ZERO_DIGEST, meta.conf_state)
        index, digest = snapshot_content(snap.data)
        if index != meta.index:
            raise SimFailure(
                Invariant.STATE_MACHINE_SAFETY,
                f"member {m.id}: snapshot meta index {meta.index} but content of {index}",
            )
        if m.sm is not None and m.sm.index > index and m.node is not None:
            raise SimFailure(
                Invariant.STATE_MACHINE_SAFETY,
                f"member {m.id}: snapshot at {index} would take its state machine back from "
                f"{m.sm.index}",
            )
        known = self.chain.get(index)
        if known is not None and known != digest:
            raise SimFailure(
                Invariant.STATE_MACHINE_SAFETY,
                f"member {m.id}: snapshot at {index} differs from the applied state there",
            )
        return StateMachine(index, digest, meta.conf_state)

    def after_advance(self, m: Member) -> None:
        """The core and the state machine agree after `advance()`: on the applied index, and on
        the membership (Raft paper §6: a configuration takes effect as it is applied here)."""
        node = m.node
        if node.log.applied != m.sm.index:
            raise SimFailure(
                Invariant.STATE_MACHINE_SAFETY,
                f"member {m.id}: core applied {node.log.applied} but the state machine is at "
                f"{m.sm.index}",
            )
        if node.log.unstable.snapshot is None and node.conf_state != m.sm.conf:
            raise SimFailure(
                Invariant.STATE_MACHINE_SAFETY,
                f"member {m.id}: core membership {node.conf_state} differs from the state "
                f"machine's {m.sm.conf} at {m.sm.index}",
            )

    # -- ReadIndex -------------------------------------------------------------------------------------
    def read_asked(self, ctx: bytes) -> int:
        """Remember what was applied anywhere when read `ctx` was asked; returns that index."""
        self.read_floor[ctx] = self.max_applied
        return self.max_applied

    def read_answered(self, m: Member, index: int, ctx: bytes) -> None:
        """ReadIndex: a read's index is at least every entry applied anywhere before the read
        was requested, so serving it at that index is linearizable.

        Thesis §6.4 (ReadIndex) and Raft paper §8 (read-only operations).
        """
        floor = self.read_floor.get(ctx)
        if floor is None:
            raise SimFailure(
                Invariant.READ_INDEX, f"member {m.id} got an answer for unknown read {ctx!r}"
            )
        if index < floor:
            raise SimFailure(
                Invariant.READ_INDEX,
                f"member {m.id}: read {ctx!r} answered at index {index}, but entry {floor} was "
                f"applied before the read was asked",
            )

    # -- at the end --------------------------------------------------------------------------------------
    def applied_entries_survive(self, leader: Member | None) -> None:
        """Durability: every applied entry is still held by a majority of the voters.

        What leader completeness (Figure 3) buys the application: an entry once applied is
        never lost, through crashes, torn writes, compaction and membership changes.
        """
        if leader is None:
            return
        conf = leader.node.conf_state
        voters = [self.members[v] for v in conf.voters if v in self.members]
        need = len(conf.voters) // 2 + 1
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
                    Invariant.DURABILITY,
                    f"applied {entry_str(e)} is held by only {have} of {len(voters)} voters",
                )
