"""What a leader knows about each follower, and the quorum arithmetic over it.

A follower's `Progress` is in one of three states (etcd's `tracker`):

| state     | the leader...                                         | leaves it when                  |
| --------- | ----------------------------------------------------- | ------------------------------- |
| PROBE     | sends one append per heartbeat, waits for the answer  | an append is accepted → REPLICATE |
| REPLICATE | streams appends optimistically, at most               | an append is rejected or the    |
|           | `max_inflight_msgs` unacknowledged (flow control)     | peer is unreachable → PROBE     |
| SNAPSHOT  | streams InstallSnapshot chunks, sends no appends      | the snapshot is installed → PROBE |

`match` is the highest index known to be replicated on the follower; `next` the next index to
send. The leader tracks itself here too, with `match` = its last *durable* index, so it counts
itself toward a commit quorum only once its own write is on disk (thesis §10.2.1).
"""

from __future__ import annotations

import enum

from .messages import ConfState, SnapshotMeta


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A bounded FIFO of the last index of each append in flight to one follower."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buf: list[int] = []

    def add(self, last_index: int) -> None:
        if self.full():
            raise OverflowError("cannot add into a full inflights window")
        self.buf.append(last_index)

    def free_le(self, index: int) -> None:
        """Acknowledge every append whose last index is <= `index`."""
        i = 0
        while i < len(self.buf) and self.buf[i] <= index:
            i += 1
        if i:
            del self.buf[:i]

    def free_first_one(self) -> None:
        if self.buf:
            del self.buf[0]

    def full(self) -> bool:
        return len(self.buf) >= self.capacity

    def count(self) -> int:
        return len(self.buf)

    def reset(self) -> None:
        self.buf.clear()


class Progress:
    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: an append is out, wait for its answer or a heartbeat
        self.pending_snapshot = 0  # SNAPSHOT: the index of the snapshot being sent
        self.recent_active = False  # heard from since the last check-quorum round
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner
        # InstallSnapshot streaming (SNAPSHOT state): which snapshot, and bytes acknowledged.
        self.snap_meta: SnapshotMeta | None = None
        self.snap_acked_bytes = 0

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next}"
            f"{' learner' if self.is_learner else ''}"
            f"{' paused' if self.is_paused() else ''} inflight={self.inflights.count()})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snap_meta = None
        self.snap_acked_bytes = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, meta: SnapshotMeta) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = meta.index
        self.snap_meta = meta

    def maybe_update(self, n: int) -> bool:
        """An append up to `n` was accepted. False if the news is stale."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An append at prev index `rejected` was refused. False if the refusal is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        # Never below match + 1: a duplicated or reordered old refusal can pass the staleness
        # check above after `match` moved on; going below it would stream a snapshot the
        # follower already has, forever (the simulator's seed 535).
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: tuple[int, ...] | list[int], match: dict[int, int]) -> int:
    """The highest index replicated on a majority of `voters` (0 if there are none)."""
    if not voters:
        return 0
    srt = sorted((match.get(v, 0) for v in voters), reverse=True)
    return srt[majority(len(srt)) - 1]


class VoteResult(enum.Enum):
    PENDING = 0
    WON = 1
    LOST = 2


def vote_result(voters: tuple[int, ...] | list[int], votes: dict[int, bool]) -> VoteResult:
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    q = majority(len(voters))
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING


class ProgressTracker:
    """The membership (voters and learners) and each member's progress and vote."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: tuple[int, ...] = ()
        self.learners: tuple[int, ...] = ()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def conf_state(self) -> ConfState:
        return ConfState(voters=self.voters, learners=self.learners)

    def set_conf(self, cs: ConfState, next_index: int) -> None:
        self.voters = tuple(sorted(cs.voters))
        self.learners = tuple(sorted(cs.learners))
        members = set(self.voters) | set(self.learners)
        for pid in list(self.progress):
            if pid not in members:
                del self.progress[pid]
        for pid in members:
            pr = self.progress.get(pid)
            if pr is None:
                pr = Progress(next_index, self.max_inflight)
                self.progress[pid] = pr
            pr.is_learner = pid in self.learners

    def is_voter(self, pid: int) -> bool:
        return pid in self.voters

    def committed(self) -> int:
        return committed_index(self.voters, {p: pr.match for p, pr in self.progress.items()})

    def quorum_active(self) -> bool:
        votes = {p: pr.recent_active for p, pr in self.progress.items() if p in self.voters}
        return vote_result(self.voters, votes) == VoteResult.WON

    def record_vote(self, pid: int, granted: bool) -> None:
        self.votes.setdefault(pid, granted)

    def tally(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected, vote_result(self.voters, self.votes)

    def reset_votes(self) -> None:
        self.votes = {}
