"""The Raft consensus core: a pure, deterministic state machine (etcd-raft style).

Theory of operation
-------------------
`RawNode` owns no sockets, files, clocks, threads or global randomness. The application drives
it with four kinds of input and one output:

- `tick()` advances logical time by one tick (the application decides how long a tick is);
- `step(message)` delivers a message from another member;
- `propose(data)`, `propose_conf_change(cc)`, `read_index(ctx)`, `transfer_leadership(to)`,
  `campaign()` are the local requests;
- `ready()` returns a `Ready`: everything the application must now do, in the order the
  `Ready` docstring states; after doing it, the application calls `advance(ready)`.

Randomness (election timeouts) comes only from the `random.Random` in the `Config`, so a run
is a pure function of its inputs and a seed: the simulator replays any failure exactly.

Roles and transitions (Raft paper §5.2, plus pre-vote and check-quorum from the thesis §9.6):

| from           | event                                             | to             |
| -------------- | ------------------------------------------------- | -------------- |
| follower       | election timeout (randomized), pre-vote on        | pre-candidate  |
| follower       | election timeout, pre-vote off; or TIMEOUT_NOW    | candidate      |
| pre-candidate  | pre-votes from a majority                         | candidate      |
| candidate      | votes from a majority                             | leader         |
| (pre-)candidate| rejected by a majority; or hears a leader ≥ term  | follower       |
| any            | a message with a higher term (see `_step_term`)   | follower       |
| leader         | check-quorum round without a majority heard from  | follower       |
| leader         | its own removal from the membership is applied    | follower       |

Membership changes are one voter or learner at a time: a change takes effect on a member when
it is *applied* (on `advance()` after the application has applied the committed entry), and a
leader accepts a new change only once every earlier one is applied (`pending_conf_index`). A new
leader also sets `pending_conf_index` to its last index, so it commits an entry of its own term
before it changes membership — the fix for the single-server-change bug described on the
raft-dev list in 2015. Learners receive the log and never vote; the runtime promotes a learner
to voter once its `match` is close to the leader's last index.

Proposal batching: proposals are appended to the leader's log at once, but appends to followers
are sent when the application next calls `ready()`: every proposal since the last `ready()`
travels in one APP message per follower (within `max_size_per_msg_bytes` and the in-flight window).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

import msgspec

from .errors import NotLeader, ProposalDropped, RaftInvariantError
from .log import RaftLog
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
    ReadState,
    Snapshot,
    SnapshotMeta,
    SoftState,
    StateRole,
)
from .progress import ProgressState, ProgressTracker, VoteResult, vote_result
from .readonly import ReadOnly
from .storage import Compacted, LogStorage, SnapshotTemporarilyUnavailable, Unavailable

MT = MessageType
TRANSFER_CONTEXT = b"transfer"  # on VOTE: a leadership transfer, bypasses the leader lease


@dataclass
class Config:
    id: int
    storage: LogStorage
    rng: random.Random
    # Members to start with when the storage is empty (a fresh cluster). A member joining an
    # existing cluster starts with none and learns the membership from the leader's snapshot.
    peers: tuple[int, ...] = ()
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    applied: int = 0  # the state machine's applied index at start-up
    max_size_per_msg_bytes: int = 1 << 20
    max_inflight_msgs: int = 256
    max_committed_size_per_ready_bytes: int | None = 8 << 20
    snapshot_chunk_bytes: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("id must not be 0")
        if self.heartbeat_ticks <= 0:
            raise ValueError("heartbeat_ticks must be > 0")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be > heartbeat_ticks")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be > 0")
        if self.snapshot_chunk_bytes <= 0:
            raise ValueError("snapshot_chunk_bytes must be > 0")


@dataclass(frozen=True)
class Ready:
    """What the application must do now, in this order:

    1. **Persist** `snapshot` (if any), then `entries`, then `hard_state` (if not None) to
       stable storage, durably (fsync) when `must_sync`; then append them to the `LogStorage`
       the core reads.
    2. **Send** `messages` — only after step 1 is durable: a vote or an append acknowledgement
       promises that what it acknowledges is on disk. Exception (thesis §10.2.1): a leader may
       send its APP, HEARTBEAT and SNAP messages before its own write finishes, because the core
       counts the leader toward a commit quorum only after `advance()`.
    3. **Restore** the state machine from `snapshot` (if any), then **apply** `committed_entries`
       in order, and hand `read_states` to the readers waiting on them (a read for a context is
       linearizable once the state machine has applied `index`).
    4. Call `advance(ready)`.

    `soft_state` is not None when the leader or role changed; it needs no persisting.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False

    def is_empty(self) -> bool:
        return not (
            self.soft_state
            or self.hard_state
            or self.entries
            or self.snapshot
            or self.committed_entries
            or self.messages
            or self.read_states
        )


@dataclass(frozen=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool


@dataclass(frozen=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    last_index: int
    role: StateRole
    leader: int
    conf_state: ConfState
    lead_transferee: int
    progress: dict[int, ProgressStatus] = field(default_factory=dict)


class RawNode:
    """One Raft member as a pure state machine. See the module docstring."""

    def __init__(self, cfg: Config) -> None:
        cfg.validate()
        self.id = cfg.id
        self.cfg = cfg
        self.rng = cfg.rng
        self.log = RaftLog(cfg.storage, cfg.max_committed_size_per_ready_bytes)
        self.trk = ProgressTracker(cfg.max_inflight_msgs)
        self.read_only = ReadOnly()
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = StateRole.FOLLOWER
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = cfg.election_ticks
        self._bcast_pending = False  # leader: appends to flush at the next ready()
        self._pending_read_index: list[Message] = []  # before the leader commits in its term
        # Follower: InstallSnapshot chunks received so far.
        self._snap_in_meta: SnapshotMeta | None = None
        self._snap_in_buf = bytearray()

        hs, cs = cfg.storage.initial_state()
        if cfg.storage.last_index() == 0 and cfg.peers:
            # A fresh cluster: the membership is a bootstrap snapshot at index 1, term 1,
            # handed to the application in the first Ready like any snapshot.
            boot = Snapshot(SnapshotMeta(index=1, term=1, conf_state=ConfState(tuple(cfg.peers))))
            self.log.restore(boot)
            cs = boot.meta.conf_state
            hs = HardState(term=max(hs.term, 1), vote=hs.vote, commit=max(hs.commit, 1))
        self.trk.set_conf(cs, self.log.last_index() + 1)
        if hs != HardState():
            self._load_hard_state(hs)
        if cfg.applied > self.log.applied:
            # The state machine applied these, so they were committed (even if the hard state
            # recorded an older commit index, which is allowed: commit needs no fsync).
            replay_from = self.log.applied + 1
            self.log.commit_to(max(self.log.committed, cfg.applied))
            self.log.applied_to(cfg.applied)
            # The core applied the membership changes among them itself (in advance()), and
            # the storage's conf state is only the snapshot's: replay them, or a restarted
            # member would forget every change made since its last snapshot.
            for e in self.log.slice(replay_from, cfg.applied + 1):
                if e.type == EntryType.CONF_CHANGE:
                    self._apply_conf_change(ConfChange.decode(e.data))
        self._become_follower(self.term, NONE)
        self._prev_soft = SoftState(self.lead, self.role)
        self._prev_hard = HardState() if self.log.unstable.snapshot else self._hard_state()

    # -- state ---------------------------------------------------------------------------------
    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def _load_hard_state(self, hs: HardState) -> None:
        if hs.commit > self.log.last_index():
            raise RaftInvariantError(
                f"hard state commit {hs.commit} is past the last index {self.log.last_index()}"
            )
        self.log.committed = max(self.log.committed, hs.commit)
        self.term = hs.term
        self.vote = hs.vote

    @property
    def conf_state(self) -> ConfState:
        return self.trk.conf_state()

    def promotable(self) -> bool:
        return self.trk.is_voter(self.id) and self.log.unstable.snapshot is None

    def status(self) -> Status:
        prs = {}
        if self.role == StateRole.LEADER:
            prs = {
                pid: ProgressStatus(pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active)
                for pid, pr in self.trk.progress.items()
            }
        return Status(
            id=self.id,
            term=self.term,
            vote=self.vote,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            role=self.role,
            leader=self.lead,
            conf_state=self.conf_state,
            lead_transferee=self.lead_transferee,
            progress=prs,
        )

    # -- transitions ---------------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.cfg.election_ticks + self.rng.randrange(
            self.cfg.election_ticks
        )
        self.lead_transferee = NONE
        self.trk.reset_votes()
        last = self.log.last_index()
        for pid, pr in self.trk.progress.items():
            learner = pr.is_learner
            pr.__init__(last + 1, self.trk.max_inflight, learner)  # type: ignore[misc]
            if pid == self.id:
                pr.match = self._stable_last_index()
        self.pending_conf_index = 0
        self._bcast_pending = False
        self.read_only.reset()
        self._pending_read_index.clear()

    def _stable_last_index(self) -> int:
        """The last index durable on this node (the leader counts itself only up to here)."""
        u = self.log.unstable
        if u.snapshot is not None:
            return 0
        return u.offset - 1

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = StateRole.FOLLOWER

    def _become_pre_candidate(self) -> None:
        if self.role == StateRole.LEADER:
            raise RaftInvariantError("leader cannot become pre-candidate")
        # Pre-vote changes nothing durable: no term bump, no vote.
        self.trk.reset_votes()
        self.lead = NONE
        self.role = StateRole.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        if self.role == StateRole.LEADER:
            raise RaftInvariantError("leader cannot become candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = StateRole.CANDIDATE

    def _become_leader(self) -> None:
        if self.role == StateRole.FOLLOWER:
            raise RaftInvariantError("follower cannot become leader")
        self._reset(self.term)
        self.lead = self.id
        self.role = StateRole.LEADER
        me = self.trk.progress.get(self.id)
        if me is not None:
            me.become_replicate()
            me.match = self._stable_last_index()
            me.recent_active = True
        # The no-op of the new term: committing it commits every earlier entry (Figure 8).
        self._append_entries([Entry(term=0, index=0)])
        # No membership change until everything in the log so far (the previous leader's
        # possibly pending change included) and our own no-op are applied: see the module
        # docstring. (Set after the no-op, so a change waits for an entry of our term.)
        self.pending_conf_index = self.log.last_index()
        self._bcast_pending = True

    # -- inputs --------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.role == StateRole.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                if not self.trk.quorum_active():
                    # Cannot hear from a majority: another leader may exist; stop serving.
                    self._become_follower(self.term, NONE)
                    return
                for pid, pr in self.trk.progress.items():
                    pr.recent_active = pid == self.id
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE  # transfer timed out
        if self.role != StateRole.LEADER:
            return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_only.last_pending_ctx())

    def campaign(self) -> None:
        """Start an election now (as if the election timer fired)."""
        self._hup(transfer=False)

    def _hup(self, transfer: bool) -> None:
        if self.role == StateRole.LEADER:
            return
        if not self.promotable():
            return
        # Do not campaign while there are committed-but-unapplied membership changes: our view
        # of who votes may be about to change.
        if self.log.applied < self.log.committed:
            try:
                unapplied = self.log.slice(self.log.applied + 1, self.log.committed + 1)
            except (Compacted, Unavailable):
                return
            if any(e.type == EntryType.CONF_CHANGE for e in unapplied):
                return
        if self.cfg.pre_vote and not transfer:
            self._campaign(MT.PRE_VOTE, transfer)
        else:
            self._campaign(MT.VOTE, transfer)

    def _campaign(self, kind: MessageType, transfer: bool) -> None:
        if kind == MT.PRE_VOTE:
            self._become_pre_candidate()
            term = self.term + 1  # the term we would campaign in; ours is unchanged
        else:
            self._become_candidate()
            term = self.term
        self.trk.record_vote(self.id, True)
        if self.trk.tally()[2] == VoteResult.WON:
            # A single-voter cluster wins at once.
            if kind == MT.PRE_VOTE:
                self._campaign(MT.VOTE, transfer)
            else:
                self._become_leader()
            return
        for pid in self.trk.voters:
            if pid == self.id:
                continue
            self._send(
                Message(
                    type=kind,
                    to=pid,
                    term=term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    context=TRANSFER_CONTEXT if transfer else b"",
                )
            )

    def propose(self, data: bytes) -> None:
        """Propose application data. Raises ProposalDropped if it cannot be taken now."""
        self._propose(Entry(term=0, index=0, type=EntryType.NORMAL, data=data))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose one membership change. Only the leader accepts it (NotLeader otherwise)."""
        if self.role != StateRole.LEADER:
            raise NotLeader(self.lead)
        self._propose(Entry(term=0, index=0, type=EntryType.CONF_CHANGE, data=cc.encode()))

    def _propose(self, e: Entry) -> None:
        if self.role == StateRole.LEADER:
            self._leader_append_proposals([e])
        elif self.lead == NONE:
            raise ProposalDropped("no leader")
        else:
            if e.type == EntryType.CONF_CHANGE:
                raise NotLeader(self.lead)
            self._send(Message(type=MT.PROP, to=self.lead, entries=(e,)))

    def _leader_append_proposals(self, ents: list[Entry]) -> None:
        if self.trk.progress.get(self.id) is None:
            raise ProposalDropped("this leader was removed from the membership")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")
        for i, e in enumerate(ents):
            if e.type == EntryType.CONF_CHANGE:
                if self.pending_conf_index > self.log.applied:
                    raise ProposalDropped("a membership change is already pending")
                self._check_conf_change(ConfChange.decode(e.data))
                self.pending_conf_index = self.log.last_index() + i + 1
        self._append_entries(ents)
        self._bcast_pending = True

    def _check_conf_change(self, cc: ConfChange) -> None:
        voters = set(self.trk.voters)
        if cc.type == ConfChangeType.REMOVE and cc.node_id in voters and len(voters) == 1:
            raise ProposalDropped("cannot remove the last voter")
        if cc.node_id == NONE:
            raise ProposalDropped("node id 0 is reserved")

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read index; the answer is a ReadState with this context."""
        if not ctx:
            raise ValueError("read_index needs a non-empty context")
        self.step(Message(type=MT.READ_INDEX, frm=self.id, context=ctx))

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to member `to` (leader only): catch it up, then TIMEOUT_NOW it."""
        if self.role != StateRole.LEADER:
            raise NotLeader(self.lead)
        pr = self.trk.progress.get(to)
        if pr is None or pr.is_learner:
            raise ProposalDropped(f"{to} is not a voter")
        if to == self.id or to == self.lead_transferee:
            return
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        if pr.match == self.log.last_index():
            self._send(Message(type=MT.TIMEOUT_NOW, to=to))
        else:
            self._send_append(to)

    def report_unreachable(self, pid: int) -> None:
        """The transport could not deliver to `pid`: stop streaming to it optimistically."""
        if self.role != StateRole.LEADER:
            return
        pr = self.trk.progress.get(pid)
        if pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    # -- step ----------------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Deliver message `m` (from a peer, or a local READ_INDEX/PROP with term 0)."""
        if m.term != 0 and not self._step_term(m):
            return
        t = m.type
        if t in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
            return
        if self.role == StateRole.LEADER:
            self._step_leader(m)
        elif self.role == StateRole.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _in_lease(self) -> bool:
        """check-quorum leader lease: we heard from a live leader within an election timeout."""
        return (
            self.cfg.check_quorum
            and self.lead != NONE
            and self.election_elapsed < self.cfg.election_ticks
        )

    def _step_term(self, m: Message) -> bool:
        """Compare terms (Figure 2, 'all servers'). Returns False if `m` is fully handled."""
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == TRANSFER_CONTEXT
                if not force and self._in_lease():
                    # A leader is alive: this candidate is disruptive (e.g. back from a
                    # partition). Ignore it without bumping our term (thesis §4.2.3).
                    return False
            if m.type == MT.PRE_VOTE:
                return True  # a pre-vote never changes our term
            if m.type == MT.PRE_VOTE_RESP and not m.reject:
                return True  # the future term we asked about; we bump it when we campaign
            if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
            return True
        if m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader (e.g. healed partition) must learn our term and step down;
                # without this, pre-vote could leave it and us deadlocked.
                self._send(Message(type=MT.APP_RESP, to=m.frm))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(type=MT.PRE_VOTE_RESP, to=m.frm, term=self.term, reject=True))
            return False
        return True

    def _handle_vote_request(self, m: Message) -> None:
        # At most one vote per term (Figure 2, RequestVote receiver 1-2); a pre-vote for a
        # future term may be granted freely since it binds nothing.
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp_type = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(type=resp_type, to=m.frm, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(type=resp_type, to=m.frm, term=self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            if self.lead == NONE:
                return  # dropped: no leader to forward to
            self._send(Message(type=MT.PROP, to=self.lead, entries=m.entries))
        elif t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot_chunk(m)
        elif t == MT.TIMEOUT_NOW:
            # Leadership transfer: campaign at once, skipping pre-vote and the lease check.
            self._hup(transfer=True)
        elif t == MT.READ_INDEX:
            if self.lead == NONE:
                return
            self._send(Message(type=MT.READ_INDEX, to=self.lead, context=m.context))
        elif t == MT.READ_INDEX_RESP:
            if not m.reject:
                self.read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESP if self.role == StateRole.PRE_CANDIDATE else MT.VOTE_RESP
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            # A leader of a term >= ours exists (lower terms were filtered): step down.
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif t == my_resp:
            self.trk.record_vote(m.frm, not m.reject)
            _, _, res = self.trk.tally()
            if res == VoteResult.WON:
                if self.role == StateRole.PRE_CANDIDATE:
                    self._campaign(MT.VOTE, transfer=False)
                else:
                    self._become_leader()
            elif res == VoteResult.LOST:
                # Back to follower; a new randomized timeout makes another split unlikely.
                self._become_follower(self.term, NONE)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            try:
                self._leader_append_proposals(list(m.entries))
            except ProposalDropped:
                pass
            return
        if t == MT.READ_INDEX:
            self._leader_read_index(m)
            return
        pr = self.trk.progress.get(m.frm)
        if pr is None:
            return
        if t == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.state == ProgressState.SNAPSHOT:
                self._send_snapshot_chunk(m.frm, pr)  # resend: chunks may have been lost
            elif pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._handle_read_ack(m)
        elif t == MT.SNAP_RESP:
            pr.recent_active = True
            if pr.state != ProgressState.SNAPSHOT or m.snapshot != pr.snap_meta:
                return
            if m.reject:
                pr.snap_acked_bytes = 0
            elif m.index > pr.snap_acked_bytes:
                pr.snap_acked_bytes = m.index
            else:
                return  # an answer to a resent chunk: the stream already moved on (one in flight)
            self._send_snapshot_chunk(m.frm, pr)

    # -- follower side of replication -----------------------------------------------------------
    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(type=MT.APP_RESP, to=m.frm, index=self.log.committed))
            return
        self.log.truncated_at = 0
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if self.log.truncated_at:
            self._withdraw_acks_from(self.log.truncated_at)
        if last_new is not None:
            self._send(Message(type=MT.APP_RESP, to=m.frm, index=last_new))
            return
        # Mismatch: reject with a hint so the leader can skip a whole term at once.
        hint_index = min(m.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            Message(
                type=MT.APP_RESP,
                to=m.frm,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _withdraw_acks_from(self, index: int) -> None:
        """Entries from `index` on were just replaced before ever being made durable, so an
        unsent acknowledgement of them would be a lie (an ack promises the entry is on disk):
        drop it. Raft's quorum-overlap argument makes such an ack harmless to a stale leader in
        most histories; not sending it makes the promise hold in all of them."""
        self.msgs = [
            x
            for x in self.msgs
            if not (x.type == MT.APP_RESP and not x.reject and x.index >= index)
        ]

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self._send(Message(type=MT.HEARTBEAT_RESP, to=m.frm, context=m.context))

    def _handle_snapshot_chunk(self, m: Message) -> None:
        meta = m.snapshot
        if meta is None:
            return
        if meta.index <= self.log.committed:
            # Already have everything it covers: tell the leader where we are.
            self._snap_in_meta = None
            self._snap_in_buf = bytearray()
            self._send(Message(type=MT.SNAP_RESP, to=m.frm, snapshot=meta, index=m.offset))
            self._send(Message(type=MT.APP_RESP, to=m.frm, index=self.log.committed))
            return
        if m.offset == 0:
            self._snap_in_meta = meta
            self._snap_in_buf = bytearray()
        if self._snap_in_meta != meta or m.offset > len(self._snap_in_buf):
            self._send(Message(type=MT.SNAP_RESP, to=m.frm, snapshot=meta, reject=True))
            return
        if m.offset == len(self._snap_in_buf):
            self._snap_in_buf += m.data
            if m.done:
                snap = Snapshot(meta, bytes(self._snap_in_buf))
                self._snap_in_meta = None
                self._snap_in_buf = bytearray()
                self._install_snapshot(snap)
                # Only up to the snapshot is known to match the leader (committed == its
                # index now): entries we kept after it may be a deposed leader's (etcd too).
                self._send(Message(type=MT.APP_RESP, to=m.frm, index=self.log.committed))
                return
        self._send(
            Message(type=MT.SNAP_RESP, to=m.frm, snapshot=meta, index=len(self._snap_in_buf))
        )

    def _install_snapshot(self, snap: Snapshot) -> None:
        meta = snap.meta
        if meta.index <= self.log.committed:
            return
        if self.log.match_term(meta.index, meta.term):
            # Our log already has the snapshot's last entry: just fast-forward the commit.
            self.log.commit_to(meta.index)
            return
        self.log.restore(snap)
        self._withdraw_acks_from(meta.index + 1)
        self.trk.set_conf(meta.conf_state, self.log.last_index() + 1)

    # -- leader side of replication ------------------------------------------------------------
    def _append_entries(self, ents: list[Entry]) -> None:
        li = self.log.last_index()
        stamped = [Entry(self.term, li + 1 + i, e.type, e.data) for i, e in enumerate(ents)]
        self.log.append(stamped)
        # The leader's own progress advances in advance(), once the entries are durable.

    def _flush_appends(self) -> None:
        if not self._bcast_pending:
            return
        self._bcast_pending = False
        if self.role != StateRole.LEADER:
            return
        for pid in self.trk.progress:
            if pid != self.id:
                self._send_append(pid)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            ents = self.log.entries_from(pr.next, self.cfg.max_size_per_msg_bytes)
        except Compacted:
            return self._start_snapshot(to, pr)
        except Unavailable:
            # A follower can never be ahead of the log we have; reset it to probe.
            pr.become_probe()
            return False
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                type=MT.APP,
                to=to,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        if ents:
            last = ents[-1].index
            if pr.state == ProgressState.REPLICATE:
                pr.optimistic_update(last)
                pr.inflights.add(last)
            elif pr.state == ProgressState.PROBE:
                pr.probe_sent = True
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _start_snapshot(self, to: int, pr) -> bool:
        if not pr.recent_active:
            return False  # don't stream a snapshot to a member we haven't heard from
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty():
            raise RaftInvariantError("need a non-empty snapshot to catch up a follower")
        pr.become_snapshot(snap.meta)
        self._send_snapshot_chunk(to, pr)
        return True

    def _send_snapshot_chunk(self, to: int, pr) -> None:
        """Send the next InstallSnapshot chunk (one chunk in flight at a time)."""
        snap = self.log.snapshot()
        if pr.snap_meta is None or snap.meta != pr.snap_meta:
            # The snapshot moved on (compaction): start over with the newest one.
            pr.become_probe()
            self._send_append(to)
            return
        off = pr.snap_acked_bytes
        chunk = snap.data[off : off + self.cfg.snapshot_chunk_bytes]
        done = off + len(chunk) >= len(snap.data)
        self._send(
            Message(type=MT.SNAP, to=to, snapshot=snap.meta, offset=off, data=chunk, done=done)
        )

    def _handle_append_response(self, m: Message, pr) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._bcast_pending = True
        elif old_paused or pr.next <= self.log.last_index():
            # Flow control: the window opened, or more is waiting; keep streaming.
            while self._send_append(m.frm, send_if_empty=False):
                pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(type=MT.TIMEOUT_NOW, to=m.frm))

    def _maybe_commit(self) -> bool:
        if not self.log.maybe_commit(self.trk.committed(), self.term):
            return False
        self._after_commit()
        return True

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        for pid, pr in self.trk.progress.items():
            if pid == self.id:
                continue
            # Never tell a follower to commit past what it is known to have.
            commit = min(pr.match, self.log.committed)
            self._send(Message(type=MT.HEARTBEAT, to=pid, commit=commit, context=ctx))

    # -- ReadIndex -----------------------------------------------------------------------------
    def _leader_read_index(self, m: Message) -> None:
        if self.log.term_or_zero(self.log.committed) != self.term:
            # We don't know the true commit index until our term's no-op commits (§6.4 step 1).
            self._pending_read_index.append(m)
            return
        self._answer_or_queue_read(m)

    def _answer_or_queue_read(self, m: Message) -> None:
        if len(self.trk.voters) == 1 and self.trk.is_voter(self.id):
            self._release_read(m, self.log.committed)
            return
        self.read_only.add_request(self.log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self._bcast_heartbeat(m.context)

    def _handle_read_ack(self, m: Message) -> None:
        acks = self.read_only.recv_ack(m.frm, m.context)
        if acks is None:
            return
        votes = {v: True for v in acks}
        if vote_result(self.trk.voters, votes) != VoteResult.WON:
            return
        for rs in self.read_only.advance(m.context):
            self._release_read(rs.req, rs.index)

    def _release_read(self, req: Message, index: int) -> None:
        if req.frm in (NONE, self.id):
            self.read_states.append(ReadState(index, req.context))
        else:
            self._send(
                Message(type=MT.READ_INDEX_RESP, to=req.frm, index=index, context=req.context)
            )

    # -- output --------------------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        if m.type in (MT.PROP, MT.READ_INDEX) and m.to != NONE:
            m = Message(
                type=m.type, to=m.to, frm=self.id, term=0, entries=m.entries, context=m.context
            )
        elif m.term == 0:
            m = _with(m, frm=self.id, term=self.term)
        else:
            m = _with(m, frm=self.id)
        self.msgs.append(m)

    def has_ready(self) -> bool:
        if self._bcast_pending and self.role == StateRole.LEADER:
            return True
        if self.msgs or self.read_states:
            return True
        if self.log.unstable.entries or self.log.unstable.snapshot is not None:
            return True
        if self.log.has_next_committed_ents():
            return True
        if self._soft_state() != self._prev_soft:
            return True
        return self._hard_state() != self._prev_hard

    def ready(self) -> Ready:
        """Collect what the application must do now. Call `advance()` when it is done."""
        self._flush_appends()
        ss = self._soft_state()
        hs = self._hard_state()
        unstable = self.log.unstable
        rd = Ready(
            soft_state=ss if ss != self._prev_soft else None,
            hard_state=hs if hs != self._prev_hard else None,
            entries=tuple(unstable.entries),
            snapshot=unstable.snapshot,
            committed_entries=tuple(self.log.next_committed_ents()),
            messages=tuple(self.msgs),
            read_states=tuple(self.read_states),
        )
        must_sync = bool(rd.entries) or rd.snapshot is not None
        if rd.hard_state is not None and (
            rd.hard_state.term != self._prev_hard.term or rd.hard_state.vote != self._prev_hard.vote
        ):
            must_sync = True
        if must_sync:
            rd = _with_ready(rd, must_sync=True)
        self.msgs = []
        self.read_states = []
        if rd.soft_state is not None:
            self._prev_soft = ss
        return rd

    def advance(self, rd: Ready) -> None:
        """The application has persisted, sent and applied everything in `rd`."""
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            self.log.stable_snap_to(rd.snapshot.meta.index)
            if self.log.applied < rd.snapshot.meta.index:
                self.log.applied = rd.snapshot.meta.index
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    self._apply_conf_change(ConfChange.decode(e.data))
            self.log.applied_to(rd.committed_entries[-1].index)
        if self.role == StateRole.LEADER:
            me = self.trk.progress.get(self.id)
            if me is not None and me.maybe_update(self._stable_last_index()):
                if self._maybe_commit():
                    self._bcast_pending = True

    def _after_commit(self) -> None:
        """Leader: answer reads that waited for this term's first commit."""
        if self._pending_read_index and self.log.term_or_zero(self.log.committed) == self.term:
            pending, self._pending_read_index = self._pending_read_index, []
            for m in pending:
                self._answer_or_queue_read(m)

    # -- membership ----------------------------------------------------------------------------
    def _apply_conf_change(self, cc: ConfChange) -> None:
        voters = set(self.trk.voters)
        learners = set(self.trk.learners)
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
            return  # refused at proposal time; ignore defensively
        new_ids = (voters | learners) - set(self.trk.progress)
        self.trk.set_conf(
            ConfState(tuple(sorted(voters)), tuple(sorted(learners))), self.log.last_index() + 1
        )
        if self.role != StateRole.LEADER:
            return
        for pid in new_ids:
            self.trk.progress[pid].recent_active = True  # give it a chance before check-quorum
            self._bcast_pending = True
        if self.id not in voters:
            # We removed (or demoted) ourselves: hand over to the most caught-up voter, stop.
            best = max(voters, key=lambda v: self.trk.progress[v].match)
            if self.trk.progress[best].match == self.log.last_index():
                self._send(Message(type=MT.TIMEOUT_NOW, to=best))
            self._become_follower(self.term, NONE)
            return
        # A smaller quorum may commit more now.
        if self._maybe_commit():
            self._bcast_pending = True
        if self.lead_transferee not in voters:
            self.lead_transferee = NONE


def _with(m: Message, **kw) -> Message:
    return msgspec.structs.replace(m, **kw)


def _with_ready(rd: Ready, **kw) -> Ready:
    return dataclasses.replace(rd, **kw)
