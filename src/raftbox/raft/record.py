"""What Raft did, as a person would tell it: a bounded record of elections and replication.

Theory of operation
-------------------
`RaftRecord` is pure logic fed by the asyncio driver (`raft/node.py`) at its edges, never from
inside the core: before a tick it is shown the election timer (`before_tick`), after every input
the role, term and leader (`after_input`), and the messages going out and coming in
(`outgoing`, `incoming`). It compares what it sees with what it saw last and writes an *event*
when something a reader cares about happened. It costs a few comparisons per input, and
nothing per entry: replication is *sampled* (one entry at a time, at most one per
`sample_interval_ms`).

Events (every one a plain dict: `seq`, `at_ms` wall time, `member`, `kind`, fields):

| kind             | when                                       | fields                                    |
| ---------------- | ------------------------------------------ | ----------------------------------------- |
| `timeout`        | this member's randomized election timer fired | `drawn_ms`, `elapsed_ms`, `term`, `pre_vote` |
| `campaign`       | it asks for (pre-)votes                    | `term`, `pre_vote`, `asked` (member ids)  |
| `vote`           | an answer to its campaign                  | `term`, `pre_vote`, `frm`, `granted`      |
| `granted`        | it gave its vote to another member         | `term`, `to`, `pre_vote`                  |
| `term`           | its term went up                           | `term`, `was`                             |
| `leader`         | it learned who leads (itself included)     | `term`, `leader`, `leaderless_ms`, `won`, `votes_from` |
| `stepped_down`   | it stopped being leader                    | `term`                                    |
| `replicate`      | a sampled entry: started, acked, committed | `index`, `term`, `phase`, `frm`, `acks`, `quorum`, `ms` |

`leaderless_ms` is measured from the last moment this member heard from a leader (or was one)
to the moment it knows the new leader: the time the cluster had no leader as this member saw it.
The ring keeps `capacity` events; `since(seq)` returns the newer ones, so a reader polls with the
last seq it has and never misses one that is still in the ring.

Time comes from outside: every method takes `now_ms` (a monotonic-ish wall clock in ms).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .messages import NONE, Message, MessageType, StateRole

MT = MessageType
_VOTE_TYPES = frozenset({MT.VOTE, MT.PRE_VOTE, MT.VOTE_RESP, MT.PRE_VOTE_RESP})
_VOTE_RESPS = frozenset({MT.VOTE_RESP, MT.PRE_VOTE_RESP})
_FROM_LEADER = frozenset({MT.APP, MT.HEARTBEAT, MT.SNAP})

__all__ = ["RaftRecord", "ReplicationSample"]


@dataclass
class ReplicationSample:
    index: int
    term: int
    started_ms: int
    acks: list[int] = field(default_factory=list)


class RaftRecord:
    """The bounded event record of one member. See the module docstring."""

    def __init__(
        self,
        member: int,
        tick_ms: float,
        capacity: int = 512,
        sample_interval_ms: int = 1000,
    ) -> None:
        self.member = member
        self.tick_ms = tick_ms
        self.sample_interval_ms = sample_interval_ms
        self.events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.seq = 0
        self.elections = 0  # leaders this member learned of (a counter for metrics)
        self._role = StateRole.FOLLOWER
        self._term = 0
        self._leader = NONE
        self._timer: tuple[int, int] | None = None  # (elapsed, drawn) ticks before the last tick
        self._alive_ms: int | None = None  # last moment the known leader was heard from
        self._votes_from: list[int] = []
        self._campaign_term = 0
        self._sample: ReplicationSample | None = None
        self._last_sample_ms = -(10**12)
        self._quorum = 1
        self.listener: Callable[[], None] | None = None  # called after each new event

    # -- the ring ------------------------------------------------------------------------------
    def _emit(self, now_ms: int, kind: str, **fields: Any) -> None:
        self.seq += 1
        self.events.append(
            {"seq": self.seq, "at_ms": now_ms, "member": self.member, "kind": kind, **fields}
        )
        if self.listener is not None:
            self.listener()

    def since(self, seq: int, limit: int = 200) -> list[dict[str, Any]]:
        """Events with a seq above `seq`, oldest first, at most `limit` (the newest ones)."""
        out = [e for e in self.events if e["seq"] > seq]
        return out[-limit:]

    # -- observations --------------------------------------------------------------------------
    def before_tick(self, role: StateRole, elapsed_ticks: int, drawn_ticks: int) -> None:
        """The election timer as it stands just before `tick()` (followers and candidates)."""
        self._timer = None if role == StateRole.LEADER else (elapsed_ticks, drawn_ticks)

    def after_input(
        self,
        now_ms: int,
        role: StateRole,
        term: int,
        leader: int,
        voters: int,
        ticked: bool = False,
    ) -> None:
        """Role, term and leader after a tick (`ticked`) or a step: write what changed."""
        self._quorum = voters // 2 + 1
        was_role, was_term, was_leader = self._role, self._term, self._leader
        if (
            ticked
            and self._timer is not None
            and was_role != StateRole.LEADER
            and role in (StateRole.PRE_CANDIDATE, StateRole.CANDIDATE)
            and (role != was_role or term != was_term)
        ):
            elapsed, drawn = self._timer
            self._emit(
                now_ms,
                "timeout",
                drawn_ms=round(drawn * self.tick_ms),
                elapsed_ms=round((elapsed + 1) * self.tick_ms),
                term=term,
                pre_vote=role == StateRole.PRE_CANDIDATE,
            )
        if term > was_term and was_term:
            self._emit(now_ms, "term", term=term, was=was_term)
        if role in (StateRole.PRE_CANDIDATE, StateRole.CANDIDATE) and (
            role != was_role or term != was_term
        ):
            self._votes_from = []
            self._campaign_term = term
        if was_role == StateRole.LEADER and role != StateRole.LEADER:
            self._emit(now_ms, "stepped_down", term=term)
            self._sample = None
        if leader != NONE and (leader != was_leader or term != was_term):
            won = leader == self.member
            last = self._alive_ms
            self.elections += 1
            self._emit(
                now_ms,
                "leader",
                term=term,
                leader=leader,
                won=won,
                votes_from=sorted(set(self._votes_from)) if won else [],
                leaderless_ms=None if last is None else max(0, now_ms - last),
            )
        if leader != NONE and (leader == self.member or leader != was_leader):
            self._alive_ms = now_ms
        self._role, self._term, self._leader = role, term, leader

    def outgoing(self, now_ms: int, msgs: tuple[Message, ...] | list[Message]) -> None:
        votes = [m for m in msgs if m.type in _VOTE_TYPES]  # the rest costs one set look-up
        if not votes:
            return
        asked: dict[tuple[bool, int], list[int]] = {}
        for m in votes:
            t = m.type
            if t in (MT.VOTE, MT.PRE_VOTE):
                asked.setdefault((t == MT.PRE_VOTE, m.term), []).append(m.to)
            elif t in (MT.VOTE_RESP, MT.PRE_VOTE_RESP) and not m.reject:
                self._emit(now_ms, "granted", term=m.term, to=m.to, pre_vote=t == MT.PRE_VOTE_RESP)
        for (pre, term), to in asked.items():
            self._votes_from = [self.member]
            self._emit(now_ms, "campaign", term=term, pre_vote=pre, asked=sorted(to))

    def incoming(self, now_ms: int, m: Message) -> None:
        t = m.type
        if t is MT.APP_RESP:  # the leader's hot path: one comparison when nothing is sampled
            if self._sample is not None and not m.reject:
                self._ack(now_ms, m.frm, m.index)
        elif t in _VOTE_RESPS:
            if self._role not in (StateRole.PRE_CANDIDATE, StateRole.CANDIDATE):
                return
            pre = t == MT.PRE_VOTE_RESP
            if pre != (self._role == StateRole.PRE_CANDIDATE):
                return
            if not m.reject and t == MT.VOTE_RESP:
                self._votes_from.append(m.frm)
            self._emit(now_ms, "vote", term=m.term, pre_vote=pre, frm=m.frm, granted=not m.reject)
        elif t in _FROM_LEADER:
            if m.frm == self._leader and m.frm != NONE:
                self._alive_ms = now_ms  # the leader we know is alive (not a new one yet)

    # -- replication samples (leader) ----------------------------------------------------------
    def appended(self, now_ms: int, index: int, term: int) -> None:
        """The leader appended entries up to `index`: maybe start following this one."""
        if self._role != StateRole.LEADER or self._sample is not None:
            return
        if now_ms - self._last_sample_ms < self.sample_interval_ms:
            return
        self._last_sample_ms = now_ms
        self._sample = ReplicationSample(index, term, now_ms)
        self._emit(
            now_ms, "replicate", index=index, term=term, phase="appended", quorum=self._quorum
        )

    def persisted(self, now_ms: int, index: int) -> None:
        """This member's own log is durable up to `index` (the leader counts itself then)."""
        self._ack(now_ms, self.member, index)

    def _ack(self, now_ms: int, frm: int, index: int) -> None:
        s = self._sample
        if s is None or index < s.index or frm in s.acks:
            return
        s.acks.append(frm)
        self._emit(
            now_ms,
            "replicate",
            index=s.index,
            term=s.term,
            phase="acked",
            frm=frm,
            acks=list(s.acks),
            quorum=self._quorum,
            ms=now_ms - s.started_ms,
        )

    def committed(self, now_ms: int, commit: int) -> None:
        s = self._sample
        if s is None or commit < s.index:
            return
        self._sample = None
        self._emit(
            now_ms,
            "replicate",
            index=s.index,
            term=s.term,
            phase="committed",
            acks=list(s.acks),
            quorum=self._quorum,
            ms=now_ms - s.started_ms,
        )
