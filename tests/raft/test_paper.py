"""One test per rule of the Raft paper that matters, each named after the claim it checks.

References: the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable Consensus
Algorithm", extended version), Figure 2 and §5.1-§5.5, Figure 8, §6; and Ongaro's thesis for
pre-vote and check-quorum (§9.6) and the leader lease against disruptive servers (§4.2.3).

Conventions of this core worth knowing when reading the numbers: a fresh cluster starts from a
bootstrap snapshot at index 1, term 1, so the first election is for term 2 and the first
leader's no-op is index 2.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from raftbox.raft.core import Config, RawNode
from raftbox.raft.errors import ProposalDropped
from raftbox.raft.harness import Harness
from raftbox.raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    StateRole,
)
from raftbox.raft.sim import Invariant
from raftbox.raft.storage import MemoryStorage

MT = MessageType
FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = (
    StateRole.FOLLOWER,
    StateRole.PRE_CANDIDATE,
    StateRole.CANDIDATE,
    StateRole.LEADER,
)


# -- helpers ---------------------------------------------------------------------------------------
def elected(n: int = 3, leader: int = 1, **kw) -> Harness:
    """A cluster of n members in which `leader` won the first election (term 2)."""
    h = Harness(list(range(1, n + 1)), **kw)
    h.campaign(leader)
    assert h.node(leader).role == LEADER
    return h


def respond(h: Harness, i: int, m: Message) -> list[Message]:
    """Step `m` into member i, let it handle its Ready; returns what it sent (not delivered)."""
    h.node(i).step(m)
    rd = h.process(i)
    h.queue.clear()
    return list(rd.messages) if rd is not None else []


def give_log(h: Harness, i: int, terms: list[int], frm: int = 3) -> None:
    """Member i's log becomes the bootstrap entry then one entry per term in `terms` (indices
    2, 3, ...), received from a leader `frm` of term max(terms); nothing beyond 1 is committed."""
    ents = tuple(Entry(t, 2 + k, data=f"e{2 + k}".encode()) for k, t in enumerate(terms))
    respond(
        h, i, Message(MT.APP, to=i, frm=frm, term=max(terms), index=1, log_term=1, entries=ents)
    )
    assert [e.term for e in log_entries(h, i)] == terms


def log_entries(h: Harness, i: int) -> list[Entry]:
    lg = h.node(i).log
    return lg.entries_from(lg.first_index(), None)


def of_type(msgs: list[Message], kind: MessageType) -> list[Message]:
    return [m for m in msgs if m.type == kind]


def vote_request(frm: int, to: int, term: int, last_index: int, last_term: int) -> Message:
    return Message(MT.VOTE, frm=frm, to=to, term=term, index=last_index, log_term=last_term)


def granted(msgs: list[Message]) -> bool:
    (resp,) = of_type(msgs, MT.VOTE_RESP)
    return not resp.reject


# == Figure 2, "Rules for Servers: All Servers" ===================================================
@pytest.mark.parametrize("role", [LEADER, CANDIDATE, FOLLOWER])
def test_any_message_with_a_higher_term_turns_a_node_into_follower(role):
    h = Harness([1, 2, 3], pre_vote=False)
    if role == LEADER:
        h.campaign(1)
    elif role == CANDIDATE:
        h.node(1).campaign()
        h.process(1)
        h.queue.clear()
    assert h.node(1).role == role
    term = h.node(1).term
    respond(h, 1, Message(MT.HEARTBEAT_RESP, frm=3, to=1, term=term + 5))
    assert h.node(1).role == FOLLOWER
    assert h.node(1).term == term + 5
    assert h.members[1].storage.hard_state.term == term + 5  # and the new term is durable


def test_append_from_a_stale_term_is_refused_and_tells_the_stale_leader_the_newer_term():
    # AppendEntries receiver rule 1: reply false if term < currentTerm.
    h = elected(3)
    h.isolate(1)
    h.tick(3, 10)  # 3 is out of its leader lease
    h.tick(2, h.node(2).randomized_election_timeout)
    h.stabilize()
    assert h.node(2).role == LEADER and h.node(2).term == 3
    before = [(e.index, e.term) for e in log_entries(h, 3)]
    stale = Message(MT.APP, frm=1, to=3, term=2, index=2, log_term=2, entries=(Entry(2, 3),))
    out = respond(h, 3, stale)
    assert [(e.index, e.term) for e in log_entries(h, 3)] == before  # nothing appended
    (resp,) = out
    assert resp.type == MT.APP_RESP and resp.term == 3  # "currentTerm, for leader to update"
    h.node(1).step(resp)
    assert h.node(1).role == FOLLOWER and h.node(1).term == 3


def test_vote_is_refused_to_a_candidate_of_a_stale_term():
    # RequestVote receiver rule 1: reply false if term < currentTerm.
    h = elected(3, pre_vote=False)
    out = respond(h, 3, vote_request(2, 3, term=1, last_index=9, last_term=9))
    assert out == [] or not granted(out)
    assert h.node(3).vote == 1


def test_committed_entries_are_applied_in_log_order_exactly_once():
    h = elected(3)
    for k in range(5):
        h.node(1).propose(b"p%d" % k)
        if k % 2:
            h.stabilize()
    h.stabilize()
    for i in (1, 2, 3):
        idx = [e.index for e in h.members[i].applied]
        assert idx == list(range(1, len(idx) + 1))  # 1 is the bootstrap snapshot
        assert h.applied_data(i)[1:] == [b"p0", b"p1", b"p2", b"p3", b"p4"]


# == §5.2 Leader election =========================================================================
def test_follower_that_hears_nothing_for_an_election_timeout_starts_an_election():
    h = Harness([1, 2, 3], pre_vote=False)
    n = h.node(2)
    timeout = n.randomized_election_timeout
    h.tick(2, timeout - 1)
    assert n.role == FOLLOWER and n.term == 1
    h.tick(2)
    assert n.role == CANDIDATE and n.term == 2


def test_candidate_increments_its_term_votes_for_itself_and_asks_every_voter():
    h = Harness([1, 2, 3], pre_vote=False)
    h.node(1).campaign()
    rd = h.process(1)
    assert rd.hard_state.term == 2 and rd.hard_state.vote == 1
    assert rd.must_sync  # the vote is durable before anyone hears of it
    votes = of_type(list(rd.messages), MT.VOTE)
    assert sorted(m.to for m in votes) == [2, 3]
    assert all((m.term, m.index, m.log_term) == (2, 1, 1) for m in votes)


def test_candidate_with_votes_from_a_majority_becomes_leader():
    h = Harness([1, 2, 3, 4, 5], pre_vote=False)
    h.node(1).campaign()
    h.process(1)
    h.queue.clear()
    h.node(1).step(Message(MT.VOTE_RESP, frm=2, to=1, term=2))
    assert h.node(1).role == CANDIDATE  # 2 of 5
    h.node(1).step(Message(MT.VOTE_RESP, frm=3, to=1, term=2, reject=True))
    assert h.node(1).role == CANDIDATE  # still 2 of 5
    h.node(1).step(Message(MT.VOTE_RESP, frm=4, to=1, term=2))
    assert h.node(1).role == LEADER  # 3 of 5


def test_candidate_rejected_by_a_majority_returns_to_follower():
    h = Harness([1, 2, 3], pre_vote=False)
    h.node(1).campaign()
    h.node(1).step(Message(MT.VOTE_RESP, frm=2, to=1, term=2, reject=True))
    h.node(1).step(Message(MT.VOTE_RESP, frm=3, to=1, term=2, reject=True))
    assert h.node(1).role == FOLLOWER and h.node(1).term == 2


def test_a_server_grants_at_most_one_vote_per_term():
    h = Harness([1, 2, 3], pre_vote=False)
    assert granted(respond(h, 3, vote_request(1, 3, term=2, last_index=1, last_term=1)))
    assert not granted(respond(h, 3, vote_request(2, 3, term=2, last_index=1, last_term=1)))
    # The same candidate asking again (a retransmission) gets the same answer.
    assert granted(respond(h, 3, vote_request(1, 3, term=2, last_index=1, last_term=1)))
    # The vote survives a crash: it was persisted before the answer was sent.
    h.restart(3)
    assert not granted(respond(h, 3, vote_request(2, 3, term=2, last_index=1, last_term=1)))
    # A new term brings a new vote.
    assert granted(respond(h, 3, vote_request(2, 3, term=3, last_index=1, last_term=1)))


@pytest.mark.parametrize("leader_term_offset", [0, 1])
def test_candidate_that_hears_append_from_leader_of_at_least_its_term_steps_down(
    leader_term_offset,
):
    h = Harness([1, 2, 3], pre_vote=False)
    h.node(1).campaign()
    h.process(1)
    h.queue.clear()
    term = h.node(1).term + leader_term_offset
    out = respond(h, 1, Message(MT.APP, frm=2, to=1, term=term, index=1, log_term=1, commit=1))
    assert h.node(1).role == FOLLOWER
    assert (h.node(1).term, h.node(1).lead) == (term, 2)
    assert of_type(out, MT.APP_RESP) and not out[0].reject  # and it accepted the append


def test_candidate_ignores_append_from_a_leader_of_an_older_term():
    h = Harness([1, 2, 3], pre_vote=False)
    h.node(1).campaign()
    h.node(1).campaign()  # term 3
    h.process(1)
    h.queue.clear()
    respond(h, 1, Message(MT.APP, frm=2, to=1, term=2, index=1, log_term=1, commit=1))
    assert h.node(1).role == CANDIDATE and h.node(1).term == 3


def test_election_timeouts_are_randomized_per_follower():
    h = Harness(list(range(1, 8)), election_ticks=10)
    first = {i: h.node(i).randomized_election_timeout for i in h.members}
    assert all(10 <= t < 20 for t in first.values())
    assert len(set(first.values())) > 1  # not all equal: followers time out at different ticks
    # ... and each new term draws a new timeout.
    h = Harness([1, 2, 3], pre_vote=False, election_ticks=10)
    seen = set()
    for _ in range(20):
        h.node(1).campaign()  # term + 1, each time
        seen.add(h.node(1).randomized_election_timeout)
    assert len(seen) > 1 and all(10 <= t < 20 for t in seen)


def test_split_vote_is_resolved_by_new_randomized_timeouts():
    # Four voters; 1 and 2 campaign at once and split the vote 2-2: both lose, go back to
    # follower with fresh random timeouts, and whoever times out first wins the next term.
    h = Harness([1, 2, 3, 4], pre_vote=False, check_quorum=False)
    h.node(1).campaign()
    h.node(2).campaign()
    h.process(1)
    h.process(2)
    first = {1: 3, 2: 4}  # whose VOTE reaches whom first
    q, h.queue = h.queue, []
    q.sort(key=lambda m: 0 if first.get(m.frm) == m.to else 1)
    h.queue = q
    h.stabilize()
    assert h.node(1).role == FOLLOWER and h.node(2).role == FOLLOWER
    assert h.node(3).vote == 1 and h.node(4).vote == 2
    assert h.leader() is None and h.node(1).term == 2
    # Time passes for everyone; the split does not repeat.
    for _ in range(40):
        h.tick_all()
        if h.leader() is not None:
            break
    lead = h.leader()
    assert lead is not None and h.node(lead).term == 3
    assert sum(1 for i in h.members if h.node(i).role == LEADER) == 1


def test_leader_heartbeats_keep_followers_from_starting_elections():
    h = elected(3)
    for _ in range(100):
        h.tick_all()
    assert h.leader() == 1 and all(h.node(i).term == 2 for i in h.members)


def test_granting_a_vote_restarts_the_election_timer():
    # Figure 2, followers: convert to candidate only if the timeout elapses "without receiving
    # AppendEntries RPC from current leader or granting vote to candidate".
    h = Harness([1, 2, 3], pre_vote=False)
    n = h.node(3)
    h.tick(3, n.randomized_election_timeout - 1)
    assert granted(respond(h, 3, vote_request(1, 3, term=2, last_index=1, last_term=1)))
    h.tick(3, 2)
    assert n.role == FOLLOWER and n.term == 2


# == §5.3 Log replication =========================================================================
def test_leader_appends_noop_at_start_of_term():
    h = Harness([1, 2, 3])
    h.campaign(1)
    (noop,) = log_entries(h, 1)
    assert (noop.index, noop.term, noop.type, noop.data) == (2, 2, EntryType.NORMAL, b"")
    assert h.node(1).log.committed == 2


def test_entry_committed_once_replicated_on_majority():
    h = elected(5)
    leader = h.node(1)
    acks = []
    h.drop = lambda m: m.type == MT.APP_RESP and m.frm not in acks
    h.propose(1, b"x")
    assert leader.log.committed == 2  # only the leader has index 3
    acks.append(2)
    h.tick(1)  # a heartbeat makes the followers ask again; only 2's answer gets through
    h.stabilize()
    assert leader.log.committed == 2  # 2 of 5
    acks.append(3)
    h.tick(1)
    h.stabilize()
    assert leader.log.committed == 3  # 3 of 5: a majority
    assert h.applied_data(1)[-1] == b"x"


def test_leader_counts_itself_toward_commit_only_once_its_entries_are_durable():
    # Thesis §10.2.1: the leader may send before its own write finishes, but until it has
    # persisted the entry its own copy does not count.
    h = elected(3)
    leader = h.node(1)
    leader.propose(b"x")
    rd = leader.ready()  # the leader has NOT persisted yet, but its APPs go out ...
    (to2,) = [m for m in rd.messages if m.to == 2]
    h.node(2).step(to2)
    h.process(2)  # ... and 2 persists and acknowledges
    (ack,) = h.queue
    h.queue.clear()
    leader.step(ack)
    # 2's durable copy plus the leader's copy in memory: only one durable copy of three.
    assert leader.log.committed == 2
    h.members[1].storage.append(list(rd.entries))
    leader.advance(rd)
    assert leader.log.committed == 3


def test_follower_rejects_append_when_prev_log_does_not_match():
    h = Harness([1, 2, 3])
    give_log(h, 2, [2, 2])  # indices 2, 3 of term 2
    # prev index 3 exists but has term 2, not 3.
    (resp,) = respond(h, 2, Message(MT.APP, frm=1, to=2, term=3, index=3, log_term=3))
    assert resp.reject and resp.index == 3
    # prev index 7 does not exist at all.
    (resp,) = respond(h, 2, Message(MT.APP, frm=1, to=2, term=3, index=7, log_term=3))
    assert resp.reject
    assert [e.term for e in log_entries(h, 2)] == [2, 2]  # nothing changed


def test_conflicting_entries_are_truncated():
    # AppendEntries receiver rule 3: if an existing entry conflicts with a new one (same index,
    # different terms), delete the existing entry and all that follow it.
    h = Harness([1, 2, 3])
    give_log(h, 2, [2, 2, 2, 2])  # indices 2..5, term 2 (uncommitted)
    app = Message(
        MT.APP, frm=1, to=2, term=3, index=3, log_term=2, entries=(Entry(3, 4, data=b"n"),)
    )
    (resp,) = respond(h, 2, app)
    assert not resp.reject and resp.index == 4
    assert [(e.index, e.term) for e in log_entries(h, 2)] == [(2, 2), (3, 2), (4, 3)]
    assert [(e.index, e.term) for e in h.members[2].storage.ents[1:]] == [(2, 2), (3, 2), (4, 3)]


def test_append_of_entries_already_present_keeps_the_entries_after_them():
    # Rule 3 applies only to a *conflict*: an old or duplicate APP must not truncate.
    h = Harness([1, 2, 3])
    give_log(h, 2, [2, 2, 2])
    app = Message(
        MT.APP, frm=3, to=2, term=2, index=1, log_term=1, entries=(Entry(2, 2, data=b"e2"),)
    )
    (resp,) = respond(h, 2, app)
    assert not resp.reject
    assert [e.index for e in log_entries(h, 2)] == [2, 3, 4]


def test_duplicate_appends_are_harmless():
    h = elected(3)
    h.node(1).propose(b"x")
    h.process(1)
    apps = [m for m in h.queue if m.to == 2]
    for _ in range(3):
        for m in apps:
            h.node(2).step(m)
    h.stabilize()
    assert [e.index for e in log_entries(h, 2)] == [2, 3]
    assert h.applied_data(2)[1:] == [b"x"]


def test_follower_commit_index_is_min_of_leader_commit_and_last_new_entry():
    # AppendEntries receiver rule 5.
    h = Harness([1, 2, 3])
    app = Message(
        MT.APP, frm=1, to=2, term=2, index=1, log_term=1, commit=9,
        entries=(Entry(2, 2), Entry(2, 3, data=b"x")),
    )  # fmt: skip
    respond(h, 2, app)
    assert h.node(2).log.committed == 3
    assert h.applied_data(2)[-1] == b"x"


def test_leader_retries_with_an_earlier_next_index_until_the_logs_match():
    # A follower that missed entries while cut off: the leader's probe is refused, it backs up
    # nextIndex and resends, until the follower's log matches and then it streams.
    h = elected(3)
    h.isolate(3)
    for k in range(4):
        h.propose(1, b"p%d" % k)
    h.heal()
    h.log.clear()
    h.tick(1)
    h.stabilize()
    to3 = [ln for ln in h.log if ln.startswith("1->3 APP") or ln.startswith("3->1 APP_RESP")]
    assert any("reject" in ln for ln in to3)
    assert [e.index for e in log_entries(h, 3)] == [2, 3, 4, 5, 6]
    assert h.node(1).status().progress[3].match == 6


def test_fast_backoff_skips_a_whole_conflicting_term():
    # §5.3, "the follower can include the term of the conflicting entry and the first index it
    # stores for that term": the leader skips the conflicting term in one round trip instead
    # of one per entry. Here 1 holds six uncommitted entries of term 2 (indices 6..11) where
    # the new leader, 3, has five entries of term 3 and its own no-op of term 4.
    h = elected(3)
    for k in range(3):
        h.propose(1, b"c%d" % k)  # indices 3..5, committed everywhere
    h.isolate(1)
    for k in range(6):
        h.node(1).propose(b"stale%d" % k)
    h.stabilize()  # indices 6..11 of term 2, on 1 only
    h.tick(3, 10)
    h.tick(2, h.node(2).randomized_election_timeout)
    h.stabilize()
    assert h.node(2).role == LEADER and h.node(2).term == 3
    for k in range(4):
        h.node(2).propose(b"new%d" % k)
    h.stabilize()  # indices 6..10 of term 3 (the no-op, then 4 entries) on 2 and 3
    h.node(2).transfer_leadership(3)
    h.stabilize()
    assert h.node(3).role == LEADER and h.node(3).term == 4  # its no-op is index 11
    h.heal()
    h.log.clear()
    h.tick(3)
    h.stabilize()
    # 3 probes at index 10 (term 3); 1 has term 2 there and answers "my entries up to index 10
    # are of term <= 2"; the leader's last entry of term <= 2 is index 5, so it resends from 6.
    rejections = [ln for ln in h.log if ln.startswith("1->3 APP_RESP") and "reject" in ln]
    assert rejections == ["1->3 APP_RESP t4 i10 reject hint=10/t2"], h.log
    assert "3->1 APP t4 i5/t2 c11 [t3/6 t3/7 t3/8 t3/9 t3/10 t4/11]" in h.log
    assert [(e.index, e.term) for e in log_entries(h, 1)][4:] == [(i, 3) for i in range(6, 11)] + [
        (11, 4)
    ]


# == §5.4 Safety ==================================================================================
@pytest.mark.parametrize(
    "cand_last_index, cand_last_term",
    [(9, 2), (3, 3)],  # an older last term, however long; the same last term, but shorter
    ids=["older-last-term", "same-term-shorter"],
)
def test_vote_is_refused_to_a_candidate_whose_log_is_less_up_to_date(
    cand_last_index, cand_last_term
):
    h = Harness([1, 2, 3], pre_vote=False)
    give_log(h, 3, [2, 3, 3])  # last entry: index 4, term 3
    h.node(3).lead = 0  # forget the fake leader: only the log decides here
    out = respond(h, 3, vote_request(1, 3, 4, cand_last_index, cand_last_term))
    assert not granted(out)
    assert h.node(3).vote == 0


def test_vote_is_granted_to_a_candidate_whose_log_is_at_least_as_up_to_date():
    h = Harness([1, 2, 3], pre_vote=False)
    give_log(h, 3, [2, 3, 3])
    h.node(3).lead = 0
    # A higher last term wins even with a shorter log.
    assert granted(respond(h, 3, vote_request(1, 3, 4, 2, 4)))


def test_a_server_missing_a_committed_entry_cannot_be_elected():
    # Leader completeness via the election restriction: the entry committed on {1, 2} is on
    # every majority, so 3 cannot collect a majority of votes without it.
    h = elected(3, pre_vote=False, check_quorum=False)
    h.isolate(3)
    h.propose(1, b"committed")
    assert h.node(1).log.committed == 3
    h.heal()
    h.isolate(1)  # the leader is gone; 3 campaigns against 2
    for _ in range(5):
        h.node(3).campaign()
        h.stabilize()
        assert h.node(3).role != LEADER
    h.node(2).campaign()
    h.stabilize()
    assert h.node(2).role == LEADER
    assert b"committed" in [e.data for e in log_entries(h, 2)]


def _figure8_c() -> Harness:
    """Figure 8 (a)-(c) with five servers; returns the cluster at (c), S1 leading term 4."""
    h = Harness([1, 2, 3, 4, 5], pre_vote=False, check_quorum=False, max_size_per_msg_bytes=1)
    h.campaign(1)  # term 2; index 2 (no-op) everywhere
    # (a) S1 replicates index 3 (term 2) to S2 only.
    for a in (1, 2):
        for b in (3, 4, 5):
            h.cut(a, b)
    h.propose(1, b"a")
    assert h.node(2).log.last_index() == 3 and h.node(1).log.committed == 2
    # (b) S1 is gone; S5 wins term 3 with S3, S4 and appends index 3 (term 3: its no-op)
    # locally only.
    h.isolate(1)
    h.drop = lambda m: m.frm == 5 and m.type == MT.APP
    h.node(5).campaign()
    h.stabilize()
    assert h.node(5).role == LEADER and h.node(5).term == 3
    assert [e.term for e in log_entries(h, 5)] == [2, 3]
    assert [e.term for e in log_entries(h, 3)] == [2]
    # (c) S1 restarts and wins term 4 with S2 and S3 (two tries: S3, S4 voted for S5 in 3).
    h.heal()
    h.restart(1)
    h.isolate(4)
    h.isolate(5)
    h.node(1).campaign()
    h.stabilize()
    h.node(1).campaign()
    # Elect, let index 3 (term 2) reach S3, but keep index 4 (term 4) from S3.
    h.drop = lambda m: (
        m.frm == 1
        and m.to == 3
        and any(e.index >= 4 for e in m.entries)
        and h.node(3).log.last_index() >= 3
    )
    h.stabilize()
    assert h.node(1).role == LEADER and h.node(1).term == 4
    return h


def test_leader_does_not_commit_entries_of_previous_terms_by_counting():
    h = _figure8_c()
    s1 = h.node(1)
    prs = s1.status().progress
    assert (prs[1].match, prs[2].match, prs[3].match) == (4, 4, 3)
    # Index 3 is on S1, S2, S3 -- a majority -- and the leader knows it ...
    assert all(h.node(i).log.term(3) == 2 for i in (1, 2, 3))
    # ... but it is of term 2, not 4: counting replicas must not commit it.
    assert s1.log.committed == 2
    # (d) Indeed: S1 crashes, S5 restarts, and S5 (last term 3) is elected by S3 and S4 and
    # overwrites it.
    h.heal()
    h.isolate(1)
    h.restart(5)
    h.node(5).campaign()
    h.stabilize()
    h.node(5).campaign()
    h.stabilize()
    assert h.node(5).role == LEADER
    assert all(h.node(i).log.term(3) == 3 for i in (2, 3, 4, 5))


def test_entries_of_previous_terms_commit_once_an_entry_of_the_current_term_commits():
    # Figure 8 (e): had S1 replicated its term-4 entry to a majority first, index 4 commits,
    # and index 3 with it (Log Matching); S5 can then never be elected.
    h = _figure8_c()
    h.drop = None
    h.tick(1)
    h.stabilize()
    s1 = h.node(1)
    assert s1.log.committed == 4
    assert [e.data for e in h.members[1].applied][2:] == [b"a", b""]
    h.heal()
    h.isolate(1)
    h.restart(5)
    for _ in range(3):
        h.node(5).campaign()
        h.stabilize()
        assert h.node(5).role != LEADER


# == The safety properties (§5.4.3), checked on seeded random runs ==================================
@dataclass(frozen=True)
class Violation:
    """What a random run saw go wrong: which property (named as the simulator names it), and
    the details for a person. Checks match on `invariant`, never on the wording of `detail`."""

    invariant: Invariant
    detail: str


class RandomRun:
    """A 5-member cluster under random ticks, proposals, message loss and reordering,
    partitions and crashes; records what the safety properties talk about."""

    def __init__(self, seed: int, steps: int = 800, harness: type[Harness] = Harness) -> None:
        self.rng = random.Random(seed)
        self.h = harness([1, 2, 3, 4, 5], seed=seed, election_ticks=6)
        self.down: set[int] = set()
        self.leaders: dict[int, int] = {}  # term -> leader
        self.committed_in: dict[int, tuple[int, int]] = {}  # index -> (entry term, commit term)
        self.leader_logs: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self.violations: list[Violation] = []
        self.proposed = 0
        for _ in range(steps):
            self.step()
            self.observe()

    def step(self) -> None:
        h, rng = self.h, self.rng
        r = rng.random()
        up = [i for i in h.members if i not in self.down]
        if r < 0.45:
            for i in up:
                h.tick(i)
        elif r < 0.6:
            lead = [i for i in up if h.node(i).role == LEADER]
            if lead:
                self.proposed += 1
                h.node(rng.choice(lead)).propose(b"v%d" % self.proposed)
        elif r < 0.63:
            h.heal()
            a = rng.sample(sorted(h.members), 2)
            for x in a:
                for y in h.members:
                    if y not in a:
                        h.cut(x, y)
        elif r < 0.68:
            h.heal()
        elif r < 0.71 and len(self.down) < 2:
            self.down.add(rng.choice(up))
        elif r < 0.74 and self.down:
            i = self.down.pop()
            h.restart(i)
        elif r < 0.76:
            i = rng.choice(up)
            applied = h.node(i).log.applied
            if applied > h.node(i).log.first_index() + 3:
                h.compact(i, applied, b"state@%d" % applied)
        for i in up:
            if i not in self.down:
                h.process(i)
        batch, h.queue = h.queue, []
        rng.shuffle(batch)
        for m in batch:
            if m.to in self.down or m.frm in self.down or (m.frm, m.to) in h.cut_links:
                continue
            if rng.random() < 0.1:
                continue
            if rng.random() < 0.1:
                h.queue.append(m)  # delayed to the next round
                continue
            h.node(m.to).step(m)

    def observe(self) -> None:
        h = self.h
        for i, mem in h.members.items():
            n = mem.node
            if n.role == LEADER:
                if self.leaders.setdefault(n.term, i) != i:
                    self.violations.append(
                        Violation(Invariant.ELECTION_SAFETY, f"two leaders in term {n.term}")
                    )
                log = [(e.index, e.term) for e in log_entries(h, i)]
                prev = self.leader_logs.get((i, n.term))
                if prev is not None:
                    first = n.log.first_index()  # compaction may drop a prefix, nothing else
                    kept = [(x, t) for x, t in prev if x >= first]
                    if log[: len(kept)] != kept:
                        self.violations.append(
                            Violation(
                                Invariant.LEADER_APPEND_ONLY,
                                f"leader {i} of term {n.term} rewrote its log",
                            )
                        )
                self.leader_logs[(i, n.term)] = log
                for idx in range(n.log.first_index(), n.log.committed + 1):
                    self.committed_in.setdefault(idx, (n.log.term(idx), n.term))

    # -- the properties ------------------------------------------------------------------------
    def logs(self) -> dict[int, dict[int, int]]:
        return {i: {e.index: e.term for e in log_entries(self.h, i)} for i in self.h.members}

    def violations_of(self, invariant: Invariant) -> list[Violation]:
        return [v for v in self.violations if v.invariant is invariant]


def check_no_violation_of_any_kind(run: RandomRun) -> None:
    assert run.violations == []


def check_election_safety(run: RandomRun) -> None:
    assert run.violations_of(Invariant.ELECTION_SAFETY) == []


def check_leader_append_only(run: RandomRun) -> None:
    assert run.violations_of(Invariant.LEADER_APPEND_ONLY) == []


def check_log_matching(run: RandomRun) -> None:
    logs = run.logs()
    for a in logs:
        for b in logs:
            common = [i for i in logs[a] if logs[b].get(i) == logs[a][i]]
            for i in common:
                for j in range(2, i):
                    if j in logs[a] and j in logs[b]:
                        assert logs[a][j] == logs[b][j], (a, b, i, j)


def check_leader_completeness(run: RandomRun) -> None:
    for (lead, term), log in run.leader_logs.items():
        have = dict(log)
        for idx, (eterm, cterm) in run.committed_in.items():
            if cterm < term and idx in have:
                assert have[idx] == eterm, (lead, term, idx)
            elif cterm < term:
                assert idx < min(have, default=idx + 1), (lead, term, idx)


def check_state_machine_safety(run: RandomRun) -> None:
    seen: dict[int, tuple[int, bytes]] = {}
    for mem in run.h.members.values():
        for e in mem.applied:
            if e.data == b"<snapshot>":
                continue  # the harness's marker for "restored from a snapshot here"
            if seen.setdefault(e.index, (e.term, e.data)) != (e.term, e.data):
                raise AssertionError(f"index {e.index}: {seen[e.index]} vs {(e.term, e.data)}")


SAFETY_CHECKS = (
    check_no_violation_of_any_kind,
    check_election_safety,
    check_leader_append_only,
    check_log_matching,
    check_leader_completeness,
    check_state_machine_safety,
)

SEEDS = range(8)


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def run(request) -> RandomRun:
    return RandomRun(request.param)


def test_random_runs_elect_leaders_and_commit(run):
    # Not a property of the paper, but the runs must exercise something.
    assert len(run.leaders) >= 3 and len(run.committed_in) >= 30, (run.leaders, run.committed_in)


def test_random_runs_see_no_violation_of_any_kind(run):
    check_no_violation_of_any_kind(run)


def test_election_safety_at_most_one_leader_per_term(run):
    check_election_safety(run)


def test_leader_append_only_a_leader_never_overwrites_or_deletes_its_entries(run):
    check_leader_append_only(run)


def test_log_matching_same_index_and_term_means_identical_prefixes(run):
    check_log_matching(run)


def test_leader_completeness_committed_entries_are_in_every_later_leaders_log(run):
    check_leader_completeness(run)


def test_state_machine_safety_no_two_servers_apply_different_entries_at_an_index(run):
    check_state_machine_safety(run)


def test_the_random_run_observer_names_each_violation_it_sees():
    # The checks above can fail: the observer records two leaders of one term, and a leader
    # whose log lost an entry it held, each under its own invariant.
    run = RandomRun(0, steps=0)
    run.h.campaign(1)
    run.observe()
    assert run.violations == [] and run.leaders == {2: 1}
    run.leaders[2] = 5  # as if member 5 had led term 2 before
    run.observe()
    assert [v.invariant for v in run.violations] == [Invariant.ELECTION_SAFETY]
    with pytest.raises(AssertionError):
        check_election_safety(run)
    check_leader_append_only(run)  # a different property: not this check's business
    with pytest.raises(AssertionError):
        check_no_violation_of_any_kind(run)

    run = RandomRun(0, steps=0)
    run.h.campaign(1)
    run.observe()
    run.leader_logs[(1, 2)].append((99, 2))  # as if it had held entry 99 of term 2
    run.observe()
    assert [v.invariant for v in run.violations] == [Invariant.LEADER_APPEND_ONLY]
    with pytest.raises(AssertionError):
        check_leader_append_only(run)
    check_election_safety(run)


# == §6 Cluster membership changes =================================================================
def test_membership_change_takes_effect_when_applied_not_when_appended():
    h = elected(3)
    h.add_member(4)
    h.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    h.process(1)  # appended (and sent), not committed
    assert h.node(1).conf_state.voters == (1, 2, 3)
    h.stabilize()
    assert all(h.node(i).conf_state.voters == (1, 2, 3, 4) for i in (1, 2, 3, 4))


def test_only_one_membership_change_may_be_pending():
    h = elected(3)
    h.add_member(4)
    h.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ProposalDropped):
        h.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3))
    h.stabilize()
    h.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3))  # now it may


def test_new_leader_changes_membership_only_after_committing_an_entry_of_its_term():
    # The fix for the single-server change bug (raft-dev, 2015): a leader must not append a
    # configuration entry until an entry of its own term has committed.
    h = Harness([1, 2, 3])
    h.node(1).campaign()
    for _ in range(4):  # pre-vote, vote: elected, the no-op sent but not yet acknowledged
        h.process_all()
        h.deliver()
    n = h.node(1)
    assert n.role == LEADER and n.log.committed < n.log.last_index()
    with pytest.raises(ProposalDropped):
        n.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3))
    h.stabilize()
    n.propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3))


def test_removed_server_does_not_campaign():
    h = elected(3)
    h.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3))
    h.stabilize()
    assert h.node(3).conf_state.voters == (1, 2)
    h.isolate(3)
    h.tick(3, 100)
    assert h.node(3).role == FOLLOWER and h.node(3).term == 2


# == Thesis §9.6 and §4.2.3: pre-vote, check-quorum, disruptive servers ============================
def test_pre_vote_partitioned_node_does_not_bump_terms_or_disrupt():
    h = elected(3)
    h.isolate(3)
    for _ in range(10):
        h.tick(3, h.node(3).randomized_election_timeout)
        h.stabilize()
    assert h.node(3).term == 2  # asked for pre-votes over and over; never bumped its term
    h.heal()
    for _ in range(30):
        h.tick_all()
    assert h.leader() == 1
    assert all(h.node(i).term == 2 for i in h.members)
    assert h.node(3).lead == 1


def test_without_pre_vote_a_returning_partitioned_node_forces_an_election():
    # The problem pre-vote solves: the isolated node bumps its term on every timeout, and its
    # higher term deposes a healthy leader when it returns.
    h = elected(3, pre_vote=False, check_quorum=False)
    h.isolate(3)
    for _ in range(3):
        h.tick(3, h.node(3).randomized_election_timeout)
        h.stabilize()
    assert h.node(3).term == 5
    h.heal()
    h.tick(3, h.node(3).randomized_election_timeout)
    h.stabilize()
    assert h.node(1).term == h.node(2).term == 6  # the whole cluster was dragged into term 6
    assert h.leader() != 1


def test_check_quorum_leader_steps_down_without_majority():
    h = elected(5)
    h.cut(1, 3)
    h.cut(1, 4)
    h.cut(1, 5)  # the leader hears from 2 only: with itself, 2 of 5
    for _ in range(2 * h.node(1).cfg.election_ticks):
        h.tick(1)
        h.stabilize()
    assert h.node(1).role == FOLLOWER and h.node(1).term == 2


def test_check_quorum_leader_with_a_majority_keeps_leading():
    h = elected(5)
    h.isolate(5)
    h.cut(1, 4)  # the leader hears from 2 and 3: with itself, 3 of 5
    for _ in range(5 * h.node(1).cfg.election_ticks):
        h.tick_all()
    assert h.node(1).role == LEADER and h.node(1).term == 2


def test_followers_that_hear_from_a_leader_ignore_vote_requests_from_a_disruptive_server():
    # §4.2.3: within the minimum election timeout of hearing from a leader, a server neither
    # updates its term nor grants its vote -- e.g. to a removed server that still campaigns.
    h = elected(3, pre_vote=False)
    out = respond(h, 2, vote_request(3, 2, term=9, last_index=99, last_term=9))
    assert out == []
    assert h.node(2).term == 2 and h.node(2).lead == 1
    out = respond(h, 1, vote_request(3, 1, term=9, last_index=99, last_term=9))
    assert out == [] and h.node(1).role == LEADER and h.node(1).term == 2


def test_a_single_voter_elects_itself_and_commits_alone():
    storage = MemoryStorage()
    n = RawNode(Config(id=1, storage=storage, rng=random.Random(0), peers=(1,)))
    rd = n.ready()  # the bootstrap snapshot must be durable before it may campaign
    storage.apply_snapshot(rd.snapshot)
    storage.set_hard_state(rd.hard_state)
    n.advance(rd)
    n.campaign()
    assert n.role == LEADER and n.term == 2
    n.propose(b"x")
    rd = n.ready()
    assert n.log.committed == 1  # not before its own write is durable
    storage.append(list(rd.entries))
    n.advance(rd)
    assert n.log.committed == 3
    assert [e.data for e in n.ready().committed_entries] == [b"", b"x"]
