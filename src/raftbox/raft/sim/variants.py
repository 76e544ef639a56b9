"""Deliberately broken cores: the checker that is itself checked.

Each variant subclasses `RawNode` with one bug that a real implementation could plausibly have,
and comes with a `bias` that edits the seed's drawn `Params` toward the schedules that expose
it (a variant is useless if the simulator needs a million seeds to catch it). `--variant NAME`
runs one; `correct` is the core as it is.

The contract, enforced by tests/sim/test_sim.py (`CAUGHT_WITHIN`): every broken variant is
caught within a bounded number of seeds from 0, and every variant has such a test. If one
survives, an invariant in `invariants.py` or a fault in `faults.py` has gone blind.

| variant               | the bug                                              | paper rule broken  |
| --------------------- | ---------------------------------------------------- | ------------------ |
| commit-old-term       | counts replicas of earlier terms to commit           | §5.4.2, Figure 8   |
| double-vote           | forgets its vote when a second candidate asks        | Figure 2, §5.2     |
| vote-not-persisted    | a term/vote change alone is not synced before answer | Figure 2 (persist) |
| commit-on-unpersisted | the leader counts itself before its write is durable | thesis §10.2.1     |
| no-log-check          | grants votes without the up-to-date log check        | §5.4.1             |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ..core import Config, RawNode, Ready
from ..messages import NONE, Entry, Message, StateRole
from .params import Params

LEADER = StateRole.LEADER


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
