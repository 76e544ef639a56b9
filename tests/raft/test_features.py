"""The core's features beyond the paper's basic algorithm, each test named after its claim:
pipelining and flow control, proposal batching, chunked InstallSnapshot, membership changes,
leadership transfer, ReadIndex, restart from storage, and the Ready ordering contract.
"""

from __future__ import annotations

import math

import pytest
from test_paper import SAFETY_CHECKS, RandomRun, elected, give_log, log_entries, of_type, respond

from raftbox.raft.core import Ready
from raftbox.raft.errors import NotLeader, ProposalDropped
from raftbox.raft.harness import Harness
from raftbox.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Message,
    MessageType,
    SnapshotMeta,
    StateRole,
)
from raftbox.raft.progress import ProgressState
from raftbox.raft.storage import entry_size

MT = MessageType
LEADER, FOLLOWER = StateRole.LEADER, StateRole.FOLLOWER
ADD_VOTER, ADD_LEARNER, REMOVE = (
    ConfChangeType.ADD_VOTER,
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.REMOVE,
)


def apps_with_entries(h: Harness, frm: int, to: int) -> list[str]:
    return [ln for ln in h.log if ln.startswith(f"{frm}->{to} APP ") and "[" in ln]


def change(h: Harness, kind: ConfChangeType, node: int, leader: int = 1) -> None:
    if kind != REMOVE and node not in h.members:
        h.add_member(node)
    h.node(leader).propose_conf_change(ConfChange(kind, node))
    h.stabilize()


# == Pipelining, flow control, batching ===========================================================
def test_leader_pipelines_appends_without_waiting_for_acks():
    h = elected(3)
    for k in range(3):
        h.node(1).propose(b"p%d" % k)
        h.process(1)  # one Ready per proposal, no acknowledgement in between
    apps = [m for m in h.queue if m.type == MT.APP and m.to == 2]
    assert [[e.index for e in m.entries] for m in apps] == [[3], [4], [5]]


def test_in_flight_window_bounds_appends_to_a_follower_that_never_acks():
    h = elected(3, max_inflight_msgs=4)
    assert h.node(1).status().progress[3].state == ProgressState.REPLICATE
    h.drop = lambda m: m.frm == 3 and m.type == MT.APP_RESP  # 3 receives but never answers
    h.log.clear()
    for k in range(20):
        h.propose(1, b"p%d" % k)  # each proposal in its own Ready, committed with 2
    assert len(apps_with_entries(h, 1, 3)) == 4
    assert len(apps_with_entries(h, 1, 2)) == 20
    assert h.node(1).log.committed == 22
    # When 3 answers again, the window opens and it catches up.
    h.drop = None
    h.tick(1)
    h.stabilize()
    assert h.node(3).log.committed == 22


def test_proposals_between_two_ready_calls_travel_in_one_append_per_follower():
    h = elected(3)
    for k in range(10):
        h.node(1).propose(b"p%d" % k)
    h.node(2).propose(b"forwarded")  # a follower's proposal, forwarded as one PROP
    h.process(2)
    h.deliver()
    rd = h.node(1).ready()
    apps = of_type(list(rd.messages), MT.APP)
    assert sorted(m.to for m in apps) == [2, 3]
    assert all([e.index for e in m.entries] == list(range(3, 14)) for m in apps)
    assert [e.index for e in rd.entries] == list(range(3, 14))


def test_slow_follower_is_fed_bounded_messages_within_the_window():
    h = elected(3, max_inflight_msgs=2, max_size_per_msg_bytes=100)
    h.isolate(3)
    payload = b"x" * 40  # 56 bytes with overhead: one entry per message
    for _ in range(30):
        h.propose(1, payload)
    h.heal()
    sent: list[int] = []  # last index of each APP with entries to 3
    acked = 0
    worst = 0
    for _ in range(500):
        if h.node(3).log.last_index() == h.node(1).log.last_index():
            break
        if not h.process_all() and not h.queue:
            h.tick(1)
            continue
        for m in h.queue:
            if m.type == MT.APP and m.to == 3 and m.entries:
                assert sum(entry_size(e) for e in m.entries) <= 100 or len(m.entries) == 1
                sent.append(m.entries[-1].index)
            if m.type == MT.APP_RESP and m.frm == 3:
                if m.reject:
                    sent.clear()  # a refused append is no longer in flight; probing restarts
                else:
                    acked = max(acked, m.index)
        worst = max(worst, len([x for x in sent if x > acked]))
        h.deliver()
    assert h.node(3).log.last_index() == 32
    assert worst <= 2  # never more than max_inflight_msgs unacknowledged appends


# == Log compaction and chunked InstallSnapshot ===================================================
SNAP_DATA = bytes(range(100))


def behind_and_compacted(chunk: int = 16) -> Harness:
    """3 missed indices 3..7, which the leader has compacted into a 100-byte snapshot."""
    h = elected(3, snapshot_chunk_bytes=chunk)
    h.isolate(3)
    for k in range(5):
        h.propose(1, b"v%d" % k)
    h.compact(1, h.node(1).log.applied, SNAP_DATA)
    assert h.node(1).log.first_index() == 8
    h.heal()
    h.log.clear()
    return h


def snap_offsets(h: Harness) -> list[int]:
    return [int(ln.split("off=")[1].split()[0]) for ln in h.log if ln.startswith("1->3 SNAP ")]


def test_far_behind_follower_catches_up_from_a_snapshot_sent_in_chunks():
    h = behind_and_compacted(chunk=16)
    h.tick(1)
    h.stabilize()
    assert snap_offsets(h) == [0, 16, 32, 48, 64, 80, 96]
    assert len(snap_offsets(h)) == math.ceil(len(SNAP_DATA) / 16)
    assert h.members[3].snapshot_data == SNAP_DATA
    assert h.members[3].storage.snapshot().meta.index == 7
    assert h.node(3).log.committed == 7
    h.propose(1, b"after")  # and then ordinary appends again
    assert h.applied_data(3)[-1] == b"after"
    assert h.node(1).status().progress[3].state == ProgressState.REPLICATE


def test_lost_snapshot_chunk_is_retransmitted():
    h = behind_and_compacted(chunk=16)
    lost = []

    def drop_once(m: Message) -> bool:
        if m.type == MT.SNAP and m.offset == 32 and not lost:
            lost.append(m)
            return True
        return False

    h.drop = drop_once
    h.tick(1)
    h.stabilize()
    assert lost and h.node(3).log.committed < 7  # stalled: one chunk in flight at a time
    h.tick(1)  # the heartbeat's answer makes the leader resend from what 3 acknowledged
    h.stabilize()
    assert snap_offsets(h) == [0, 16, 32, 48, 64, 80, 96]  # 32 delivered once: on the resend
    assert h.members[3].snapshot_data == SNAP_DATA


def test_heartbeat_resends_during_a_transfer_do_not_start_extra_chunk_streams():
    h = behind_and_compacted(chunk=16)
    h.tick(1)
    for _ in range(3):  # heartbeats while the transfer runs: each resends the current chunk
        h.process_all()
        h.deliver()
        h.tick(1)
    h.stabilize()
    offsets = snap_offsets(h)
    assert h.members[3].snapshot_data == SNAP_DATA
    # Every chunk is delivered about once (a resend may duplicate the one then in flight),
    # never once per heartbeat that happened during the transfer.
    assert len(offsets) <= len(set(offsets)) + 3, offsets


def test_follower_restart_mid_transfer_restarts_it_from_offset_zero():
    h = behind_and_compacted(chunk=16)
    h.tick(1)
    for _ in range(40):  # until 3 has taken three chunks
        h.process_all()
        h.deliver()
        if len(snap_offsets(h)) == 3:
            break
    h.process(3)
    h.queue = [m for m in h.queue if m.to != 3 and m.frm != 3]
    h.restart(3)  # its partial snapshot was only in memory
    h.tick(1)  # the leader resends the unacknowledged chunk; 3 cannot use it
    h.stabilize()
    offsets = snap_offsets(h)
    assert offsets[:3] == [0, 16, 32]
    assert offsets[-7:] == [0, 16, 32, 48, 64, 80, 96]
    assert any(ln.startswith("3->1 SNAP_RESP") and "reject" in ln for ln in h.log)
    assert h.members[3].snapshot_data == SNAP_DATA


def test_leader_compacting_again_mid_transfer_sends_the_newer_snapshot():
    h = behind_and_compacted(chunk=16)
    h.tick(1)
    for _ in range(40):
        h.process_all()
        h.deliver()
        if len(snap_offsets(h)) == 2:
            break
    h.isolate(3)
    h.propose(1, b"more")
    h.compact(1, h.node(1).log.applied, b"newer state")
    h.heal()
    h.tick(1)
    h.stabilize()
    assert h.members[3].storage.snapshot().meta.index == 8
    assert h.members[3].snapshot_data == b"newer state"
    assert h.node(3).log.committed == h.node(1).log.committed


def test_follower_acknowledges_an_installed_snapshot_only_up_to_its_index():
    # Found by this suite. A follower whose log already holds the snapshot's last entry keeps
    # its log and only moves its commit index (etcd's restore() fast-forward); but the entries
    # after that point may be a deposed leader's, so its answer must not claim them: the
    # leader would count them as replicated. etcd answers with the commit index here.
    h = Harness([1, 2, 3])
    give_log(h, 2, [2, 2, 2, 2])  # indices 2..5 of term 2, from leader 3, uncommitted
    meta = SnapshotMeta(index=3, term=2, conf_state=ConfState((1, 2, 3)))
    snap = Message(MT.SNAP, frm=1, to=2, term=3, snapshot=meta, data=b"s", done=True)
    (ack,) = of_type(respond(h, 2, snap), MT.APP_RESP)
    assert h.node(2).log.committed == 3
    assert ack.index == 3 and not ack.reject


# == Membership changes ===========================================================================
def test_learner_receives_the_log_but_never_votes_and_is_not_counted_for_commit():
    h = elected(3, pre_vote=False)
    change(h, ADD_LEARNER, 4)
    assert h.node(1).conf_state.learners == (4,)
    assert [e.index for e in log_entries(h, 4)] == [e.index for e in log_entries(h, 1)]
    # Not counted: the leader and the learner are no majority of the voters {1, 2, 3}.
    h.cut(1, 2)
    h.cut(1, 3)
    h.propose(1, b"x")
    assert h.node(4).log.last_index() == h.node(1).log.last_index()
    assert h.node(1).log.committed < h.node(1).log.last_index()
    # Not asked for a vote, and never campaigns itself.
    h.heal()
    h.isolate(1)
    h.node(2).campaign()
    rd = h.process(2)
    assert sorted(m.to for m in of_type(list(rd.messages), MT.VOTE)) == [1, 3]
    h.tick(4, 100)
    assert h.node(4).role == FOLLOWER and h.process(4) is None


def test_promoted_learner_counts_for_commit_and_can_lead():
    h = elected(3)
    change(h, ADD_LEARNER, 4)
    change(h, ADD_VOTER, 4)
    assert h.node(1).conf_state.voters == (1, 2, 3, 4)
    h.cut(1, 3)
    h.cut(1, 2)
    h.propose(1, b"x")  # {1, 4} is 2 of 4 voters: no majority
    assert h.node(1).log.committed < h.node(1).log.last_index()
    h.heal()
    h.tick(1)
    h.stabilize()
    h.node(1).transfer_leadership(4)
    h.stabilize()
    assert h.leader() == 4


def test_removed_voter_no_longer_counts_for_commit():
    h = elected(5)
    change(h, REMOVE, 5)
    change(h, REMOVE, 4)
    assert h.node(1).conf_state.voters == (1, 2, 3)
    h.isolate(3)
    h.isolate(4)
    h.isolate(5)
    h.propose(1, b"x")  # 2 of 3 voters
    assert h.applied_data(1)[-1] == b"x"


@pytest.mark.parametrize("caught_up", [True, False], ids=["transferee-ready", "no-transferee"])
def test_leader_that_removes_itself_steps_down_and_the_cluster_elects_another(caught_up):
    h = elected(3)
    h.node(1).propose_conf_change(ConfChange(REMOVE, 1))
    if not caught_up:
        # Entries after the change that no follower has when the change applies: no voter is
        # up to date, so there is no TIMEOUT_NOW and the others elect a leader by timeout.
        h.process(1)
        h.node(1).propose(b"late")
    h.drop = lambda m: m.type == MT.APP and any(e.data == b"late" for e in m.entries)
    h.stabilize()
    h.drop = None
    assert h.node(1).role == FOLLOWER and h.node(1).conf_state.voters == (2, 3)
    timeout_now = [ln for ln in h.log if "TIMEOUT_NOW" in ln]
    assert bool(timeout_now) == caught_up
    for _ in range(60):
        if h.leader() in (2, 3):
            break
        h.tick_all()
    assert h.leader() in (2, 3)
    assert h.node(1).role == FOLLOWER  # a removed server never campaigns
    h.propose(h.leader(), b"after")
    assert h.applied_data(2)[-1] == h.applied_data(3)[-1] == b"after"


def test_conf_change_on_a_follower_is_refused_with_the_leader_hint():
    h = elected(3)
    with pytest.raises(NotLeader) as exc:
        h.node(2).propose_conf_change(ConfChange(REMOVE, 3))
    assert exc.value.leader == 1


def test_the_last_voter_cannot_be_removed():
    h = Harness([1])
    h.campaign(1)
    with pytest.raises(ProposalDropped):
        h.node(1).propose_conf_change(ConfChange(REMOVE, 1))


def test_restarted_member_remembers_membership_changes_made_since_its_snapshot():
    # Found by this suite: the core applies membership changes itself, so on restart it must
    # replay those among the entries the state machine already applied; the storage's conf
    # state is only the snapshot's.
    h = elected(3)
    change(h, ADD_LEARNER, 4)
    change(h, ADD_VOTER, 4)
    change(h, REMOVE, 3)
    for i in (1, 2, 4):
        h.restart(i)
        assert h.node(i).conf_state.voters == (1, 2, 4), i
    # Without the replay, 2 would count {1, 2, 3} and win an election 3 no longer votes in.
    h.isolate(4)
    h.isolate(1)
    for _ in range(5):
        h.node(2).campaign()
        h.stabilize()
    assert h.node(2).role != LEADER


class Churn(RandomRun):
    """RandomRun plus membership changes: learners added, promoted, voters removed."""

    def step(self) -> None:
        h, rng = self.h, self.rng
        leaders = [i for i in h.members if i not in self.down and h.node(i).role == LEADER]
        if leaders and rng.random() < 0.04:
            lead = h.node(max(leaders, key=lambda i: h.node(i).term))
            cs = lead.conf_state
            k = rng.random()
            try:
                if k < 0.35:
                    new = max(h.members) + 1
                    h.add_member(new)
                    lead.propose_conf_change(ConfChange(ADD_LEARNER, new))
                elif cs.learners and (k < 0.7 or len(cs.voters) <= 3):
                    lead.propose_conf_change(ConfChange(ADD_VOTER, rng.choice(cs.learners)))
                elif len(cs.voters) > 3:
                    lead.propose_conf_change(ConfChange(REMOVE, rng.choice(cs.voters)))
            except ProposalDropped:
                pass
        super().step()


@pytest.mark.parametrize("seed", range(4))
def test_membership_churn_with_crashes_keeps_every_safety_property_and_liveness(seed):
    run = Churn(seed, steps=1000)
    for check in SAFETY_CHECKS:
        check(run)
    h = run.h
    assert len(h.members) > 6  # members did come (and go)
    h.heal()
    for i in sorted(run.down):
        h.restart(i)
    for _ in range(100):
        h.tick_all()
    lead = h.leader()
    assert lead is not None
    cs = h.node(lead).conf_state
    for i in cs.voters + cs.learners:
        assert h.node(i).log.committed == h.node(lead).log.committed
        assert h.node(i).conf_state == cs


# == Leadership transfer ==========================================================================
def test_transfer_to_an_up_to_date_member_sends_timeout_now_at_once():
    h = elected(3)  # check-quorum on: the transferee's VOTE must get past the leader lease
    h.node(1).transfer_leadership(2)
    rd = h.process(1)
    assert [(m.type, m.to) for m in rd.messages] == [(MT.TIMEOUT_NOW, 2)]
    h.stabilize()
    assert h.leader() == 2 and h.node(2).term == 3


def test_transfer_to_a_lagging_member_catches_it_up_before_timeout_now():
    h = elected(3)
    h.isolate(3)
    for k in range(3):
        h.propose(1, b"p%d" % k)
    h.heal()
    h.log.clear()
    h.node(1).transfer_leadership(3)
    h.stabilize()
    first_timeout = next(k for k, ln in enumerate(h.log) if "TIMEOUT_NOW" in ln)
    acks = [k for k, ln in enumerate(h.log) if ln.startswith("3->1 APP_RESP t2 i5")]
    assert acks and acks[0] < first_timeout  # caught up first
    assert h.leader() == 3
    assert h.applied_data(3)[-3:] == [b"p0", b"p1", b"p2"]


def test_proposals_are_refused_during_a_transfer_and_accepted_after_it_times_out():
    h = elected(3)
    h.isolate(3)
    h.node(1).transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        h.node(1).propose(b"x")
    h.tick(1, h.node(1).cfg.election_ticks)
    h.stabilize()
    assert h.node(1).status().lead_transferee == 0
    h.node(1).propose(b"x")  # accepted again
    h.stabilize()
    assert h.applied_data(1)[-1] == b"x"


def test_transfer_to_a_learner_or_from_a_follower_is_refused():
    h = elected(3)
    change(h, ADD_LEARNER, 4)
    with pytest.raises(ProposalDropped):
        h.node(1).transfer_leadership(4)
    with pytest.raises(NotLeader):
        h.node(2).transfer_leadership(3)


# == ReadIndex ====================================================================================
def test_read_index_on_leader_is_answered_only_after_a_heartbeat_quorum():
    h = elected(5)
    h.node(1).read_index(b"r1")
    h.process(1)
    heartbeats = [m for m in h.queue if m.type == MT.HEARTBEAT and m.context == b"r1"]
    assert len(heartbeats) == 4
    h.queue.clear()
    for m in heartbeats[:2]:
        h.node(m.to).step(m)
        h.process(m.to)
    h.deliver()  # two acks + the leader: 3 of 5
    rd = h.process(1)
    assert [(r.context, r.index) for r in rd.read_states] == [(b"r1", 2)]


def test_read_index_waits_while_only_a_minority_acknowledges():
    h = elected(5)
    h.isolate(4)
    h.isolate(5)
    h.cut(1, 3)
    h.node(1).read_index(b"r1")
    h.stabilize()
    assert h.members[1].read_states == []  # 1 and 2: no majority


def test_read_index_is_the_commit_index_when_the_read_arrived():
    h = elected(3)
    h.node(1).read_index(b"r1")
    h.process(1)
    h.node(1).propose(b"later")
    h.stabilize()
    assert [(r.context, r.index) for r in h.members[1].read_states] == [(b"r1", 2)]


def test_read_index_on_follower_is_forwarded_and_answered():
    h = elected(3)
    h.propose(1, b"x")
    h.node(2).read_index(b"r2")
    rd = h.process(2)
    assert [(m.type, m.to) for m in rd.messages] == [(MT.READ_INDEX, 1)]
    h.stabilize()
    assert [(r.context, r.index) for r in h.members[2].read_states] == [(b"r2", 3)]
    assert h.members[1].read_states == []


def test_leader_that_has_not_committed_in_its_term_defers_the_read():
    h = elected(3)
    h.node(1).transfer_leadership(2)
    for _ in range(3):  # TIMEOUT_NOW, VOTE, VOTE_RESP: 2 leads term 3, no-op not committed
        h.process_all()
        h.deliver()
    n = h.node(2)
    assert n.role == LEADER and n.log.committed == 2 and n.log.last_index() == 3
    n.read_index(b"r")
    rd = h.process(2)
    assert not [m for m in rd.messages if m.context == b"r"]  # no heartbeat round yet
    h.stabilize()
    assert [(r.context, r.index) for r in h.members[2].read_states] == [(b"r", 3)]


def test_deposed_leader_never_answers_a_pending_read():
    h = elected(3)
    h.isolate(1)
    h.node(1).read_index(b"stale")
    h.stabilize()
    h.tick(3, 10)
    h.tick(2, h.node(2).randomized_election_timeout)
    h.stabilize()
    assert h.node(2).role == LEADER
    h.propose(2, b"newer")
    h.heal()
    for _ in range(5):
        h.tick(1)
        h.stabilize()
    assert h.node(1).role == FOLLOWER
    assert h.members[1].read_states == []


def test_single_voter_leader_answers_reads_at_once():
    h = Harness([1])
    h.campaign(1)
    h.node(1).read_index(b"r")
    rd = h.process(1)
    assert [(r.context, r.index) for r in rd.read_states] == [(b"r", 2)]


# == Restart from storage =========================================================================
def test_restart_from_storage_keeps_term_vote_and_log():
    h = elected(3)
    h.propose(1, b"x")
    for i in (1, 2, 3):
        before = (h.node(i).term, h.node(i).vote, [(e.index, e.term) for e in log_entries(h, i)])
        h.restart(i)
        n = h.node(i)
        assert (n.term, n.vote, [(e.index, e.term) for e in log_entries(h, i)]) == before
        assert n.role == FOLLOWER and n.log.committed == 3
    h.tick_all(30)
    assert h.leader() is not None
    h.propose(h.leader(), b"y")
    assert h.applied_data(3)[-2:] == [b"x", b"y"]


def test_what_was_not_persisted_before_a_crash_was_never_acknowledged():
    h = elected(3)
    h.node(1).propose(b"x")
    h.process(1)
    h.deliver()  # 2 and 3 have the APP in memory only
    h.restart(2)  # 2 crashes before handling its Ready
    assert h.node(2).log.last_index() == 2
    h.process(3)
    h.deliver()
    assert h.node(1).log.committed == 3  # 1 and 3 persisted it: a majority
    h.tick(1)
    h.stabilize()
    assert h.node(2).log.committed == 3


# == The Ready contract ===========================================================================
class CheckedHarness(Harness):
    """Asserts after every Ready that what a message acknowledges is durable (Ready step 2)."""

    def process(self, i: int) -> Ready | None:
        rd = super().process(i)
        if rd is None:
            return None
        st = self.members[i].storage
        for m in rd.messages:
            if m.type == MT.APP_RESP and not m.reject and m.index:
                assert st.last_index() >= m.index, (i, m)
            if m.type == MT.VOTE_RESP and not m.reject:
                assert (st.hard_state.term, st.hard_state.vote) == (m.term, m.to), (i, m)
        if rd.entries or rd.snapshot is not None:
            assert rd.must_sync
        return rd


@pytest.mark.parametrize("seed", range(3))
def test_ready_acknowledgements_travel_only_with_what_they_acknowledge(seed):
    run = RandomRun(seed, steps=600, harness=CheckedHarness)
    assert len(run.committed_in) > 10


def test_ready_needs_no_sync_when_only_the_commit_index_changed():
    h = elected(3)
    h.node(1).propose(b"x")
    h.process(1)
    h.deliver()
    rd2 = h.process(2)
    assert rd2.must_sync  # new entries
    h.deliver()
    h.process(1)
    h.deliver()  # the commit reaches 2
    rd2 = h.process(2)
    assert rd2.hard_state is not None and rd2.hard_state.commit == 3
    assert not rd2.must_sync
