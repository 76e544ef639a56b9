"""The Raft record (raftbox.raft.record) as the node's driver feeds it, on real members.

Claims: after a leader is stopped, the member that wins the next election has recorded its
randomized timeout firing (drawn and elapsed time), the (pre-)votes it asked for and got, the
term bump and its win with how long the cluster had no leader; a follower records the new
leader; and a sampled entry is recorded as appended, acknowledged member by member, and
committed once a majority has it. The ring stays bounded, and `since` returns only newer events.
The cluster view (raftbox.ops.cluster) gathers every member's row and events over the peer port
and marks a stopped member unreachable.
"""

from __future__ import annotations

from nodecluster import LocalCluster, propose, run

from raftbox.ops.cluster import ClusterView, parse_since
from raftbox.ops.processes import ProcessTable
from raftbox.raft.messages import StateRole
from raftbox.raft.record import RaftRecord
from raftbox.testing import wait_until


def kinds(node, **match):
    return [e for e in node.record.events if all(e.get(k) == v for k, v in match.items())]


def test_an_election_after_the_leader_stops_is_recorded_step_by_step(tmp_path):
    async def body():
        async with LocalCluster(tmp_path, proxies=False) as c:
            old = await c.wait_leader()
            old_term = c.nodes[old].core.term
            await c.stop(old)
            rest = [i for i in c.ids if i != old]
            new = await c.wait_leader(rest)
            term = c.nodes[new].core.term
            assert term > old_term
            rec = c.nodes[new]
            fired = kinds(rec, kind="timeout")
            assert fired, list(rec.record.events)
            last = fired[-1]
            assert last["drawn_ms"] >= 10 * 10  # election_ticks * tick (10 ms) at least
            assert last["elapsed_ms"] >= last["drawn_ms"]
            asked = kinds(rec, kind="campaign", pre_vote=False, term=term)
            assert asked and sorted(asked[-1]["asked"]) == sorted(i for i in c.ids if i != new)
            got = kinds(rec, kind="vote", pre_vote=False, term=term, granted=True)
            other = next(i for i in rest if i != new)
            assert [v["frm"] for v in got] == [other]
            assert kinds(rec, kind="term", term=term)
            won = kinds(rec, kind="leader", term=term, leader=new)
            assert won and won[-1]["won"] is True
            assert sorted(won[-1]["votes_from"]) == sorted([new, other])
            assert won[-1]["leaderless_ms"] is not None
            assert won[-1]["leaderless_ms"] >= last["elapsed_ms"] - 20
            follower = c.nodes[other]
            seen = kinds(follower, kind="leader", term=term, leader=new)
            assert seen and seen[-1]["won"] is False
            assert kinds(follower, kind="granted", to=new, term=term)

    run(body)


def test_a_sampled_entry_is_acked_member_by_member_then_committed(tmp_path):
    async def body():
        async with LocalCluster(tmp_path, proxies=False) as c:
            leader = await c.wait_leader()
            node = c.nodes[leader]
            node.record.sample_interval_ms = 0
            node.record._sample = None
            index = await propose(node, b"x")
            await wait_until(
                lambda: any(
                    e["kind"] == "replicate" and e["phase"] == "committed" and e["index"] >= index
                    for e in node.record.events
                ),
                10,
                what="a committed sample",
            )
            done = [
                e
                for e in node.record.events
                if e["kind"] == "replicate" and e["phase"] == "committed"
            ][-1]
            steps = [
                e
                for e in node.record.events
                if e["kind"] == "replicate" and e["index"] == done["index"]
            ]
            assert steps[0]["phase"] == "appended"
            acks = [e["frm"] for e in steps if e["phase"] == "acked"]
            assert len(acks) >= 2 and len(set(acks)) == len(acks)
            assert done["quorum"] == 2 and len(done["acks"]) >= 2

    run(body)


def test_the_ring_is_bounded_and_since_returns_only_newer_events():
    r = RaftRecord(1, tick_ms=50, capacity=5)
    for i in range(12):
        r.after_input(i, StateRole.FOLLOWER, i + 1, 2 + i % 2, 3)
    assert len(r.events) == 5
    assert [e["seq"] for e in r.since(r.seq - 2)] == [r.seq - 1, r.seq]
    assert r.since(r.seq) == []


def test_the_cluster_view_gathers_members_and_marks_a_stopped_one_unreachable(tmp_path):
    async def body():
        async with LocalCluster(tmp_path, proxies=False) as c:
            leader = await c.wait_leader()
            views = {
                i: ClusterView(n, lambda: "", dict, ProcessTable(), peer_timeout_s=0.5)
                for i, n in c.nodes.items()
            }
            await propose(c.nodes[leader], b"x")
            via = next(i for i in c.ids if i != leader)
            st = await views[via].status()
            assert st["leader"] == leader
            assert [m["id"] for m in st["members"]] == c.ids
            assert all(m["reachable"] for m in st["members"])
            assert {m["role"] for m in st["members"]} == {"leader", "follower"}
            assert any(e["member"] == leader for e in st["events"])
            # Only newer events when the caller says what it has.
            again = await views[via].status({int(k): v for k, v in st["seqs"].items()})
            assert all(e["seq"] > st["seqs"][str(e["member"])] for e in again["events"])
            # A caller that holds seqs past this member's (it restarted) gets all it has.
            ahead = await views[via].status({via: 10**9})
            assert any(e["member"] == via for e in ahead["events"])
            await c.stop(leader)
            st = await views[via].status()
            gone = next(m for m in st["members"] if m["id"] == leader)
            assert gone["reachable"] is False and gone["role"] == "unreachable"

    run(body)


def test_parse_since_refuses_garbage():
    assert parse_since("1:5,2:7") == {1: 5, 2: 7}
    assert parse_since({"3": 1}) == {3: 1}
    for bad in ("x", "1:-1", "0:1", "1:a", ["1"], {"a": 1}):
        try:
            parse_since(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
