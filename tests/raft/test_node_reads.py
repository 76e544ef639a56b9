"""ReadIndex on the asyncio member: a deposed leader's read is asked again, not failed.

The claim (raftbox.raft.node, "Linearizable reads"): a linearizable read fails only when no
majority can confirm an index before its deadline. A leader deposed while a read waits for its
heartbeat round asks the new leader once it knows it, and the index it returns covers every
write the new leader made meanwhile.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from nodecluster import LocalCluster, propose, run

from raftbox.raft.messages import StateRole
from raftbox.raft.node import Unavailable
from raftbox.testing import wait_until


def test_a_read_on_a_deposed_leader_is_answered_through_the_new_leader(tmp_path):
    async def body():
        async with LocalCluster(tmp_path) as c:
            old = await c.wait_leader()
            await propose(c.nodes[old], b"before")
            c.isolate(old)
            # The heartbeat round of this read can no longer reach a majority.
            read = asyncio.create_task(c.nodes[old].read_index(timeout_s=30))
            rest = [i for i in c.ids if i != old]
            new = await c.wait_leader(rest)
            await wait_until(
                lambda: c.nodes[old].role != StateRole.LEADER, 10, what="check-quorum step-down"
            )
            written = await propose(c.nodes[new], b"while the old leader was cut off")
            c.heal()
            index = await read
            assert index >= written  # the new leader's write is covered: linearizable
            assert b"while the old leader was cut off" in c.nodes[old].sm.data
            assert c.nodes[old].read_retries >= 1

    run(body)


def test_a_read_without_a_majority_fails_unavailable_at_its_deadline_not_before(tmp_path):
    async def body():
        async with LocalCluster(tmp_path) as c:
            old = await c.wait_leader()
            await propose(c.nodes[old], b"x")
            c.isolate(old)
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                await c.nodes[old].read_index(timeout_s=1.0)
            # Not failed when it was deposed (an election timeout in): it kept asking.
            assert time.monotonic() - t0 >= 0.9
            assert c.nodes[old].role != StateRole.LEADER

    run(body)


def test_reads_on_followers_survive_a_leader_change(tmp_path):
    async def body():
        async with LocalCluster(tmp_path) as c:
            old = await c.wait_leader()
            follower = next(i for i in c.ids if i != old)
            await propose(c.nodes[old], b"x")
            c.isolate(old)
            read = asyncio.create_task(c.nodes[follower].read_index(timeout_s=30))
            rest = [i for i in c.ids if i != old]
            new = await c.wait_leader(rest)
            written = await propose(c.nodes[new], b"y")
            assert await read >= 0
            assert await c.nodes[follower].read_index(timeout_s=10) >= written
            c.heal()

    run(body)
