"""The Raft metrics (raftbox.raft.metrics) move when the node does things: proposals, fsyncs and
their batch sizes, applied entries, leader changes, and snapshot chunks sent to a follower that
fell behind the leader's compacted log."""

from __future__ import annotations

from nodecluster import LocalCluster, propose, run
from prometheus_client import CollectorRegistry

from raftbox.testing import wait_until


def value(reg: CollectorRegistry, name: str, **labels) -> float:
    return reg.get_sample_value(name, labels) or 0.0


def test_a_follower_behind_a_compacted_log_is_sent_a_snapshot_and_it_is_counted(tmp_path):
    async def body():
        kw = {"snapshot_entries": 40, "snapshot_keep_entries": 5}
        async with LocalCluster(tmp_path, proxies=False, node_kw=kw) as c:
            leader = await c.wait_leader()
            regs = {}
            for i, n in c.nodes.items():
                regs[i] = CollectorRegistry()
                n.attach_metrics(regs[i])
            reg = regs[leader]
            assert value(reg, "raftbox_raft_leader_changes_total") >= 1
            assert value(reg, "raftbox_raft_role", role="leader") == 1
            behind = next(i for i in c.ids if i != leader)
            await c.stop(behind)
            for k in range(120):
                await propose(c.nodes[leader], b"v%d" % k)
            assert value(reg, "raftbox_raft_proposals_total") >= 120
            assert value(reg, "raftbox_raft_fsync_seconds_count") >= 1
            assert value(reg, "raftbox_raft_append_entries_sum") >= 120
            assert value(reg, "raftbox_raft_applied_entries_total") >= 120
            assert value(reg, "raftbox_raft_snapshot_chunks_sent_total") == 0
            await wait_until(
                lambda: c.nodes[leader].disk.first_index() > 10,
                10,
                what="the leader compacted its log",
            )
            await c.start(behind)
            await wait_until(
                lambda: value(reg, "raftbox_raft_snapshot_chunks_sent_total") >= 1,
                20,
                what="a snapshot chunk sent to the member that fell behind",
            )
            commit = c.nodes[leader].core.log.committed
            await wait_until(
                lambda: c.nodes[behind].core.log.applied >= commit, 20, what="caught up"
            )
            assert value(reg, "raftbox_raft_commit_index") >= commit

    run(body)
