"""A leader frozen (SIGSTOP), not dead: a write forwarded to it goes to the next leader.

A frozen process keeps its sockets open: the kernel still accepts what is sent to it, nothing
is ever answered, no connection breaks. So a follower's propose RPC to a leader that froze is
neither answered nor failed by the transport, and waited out its whole deadline (the meta
role's write timeout, 10 s) although the two live members had elected a new leader within an
election timeout: every write that was forwarded just before the freeze failed with
`Unavailable` (a 503). The claim (raftbox.raft.node, "Commands and results"): a forwarded
proposal is abandoned as soon as this node learns of another leader, and sent again — same
(client_id, seq), so it is applied once — to the new one.

Freezing is modelled with the links' `FaultProxy`: every byte to and from the leader is
swallowed on connections that stay open (what SIGSTOP does to TCP peers), and new connections
to it are accepted and never answered.
"""

from __future__ import annotations

import asyncio

from nodecluster import LocalCluster, propose, run

from raftbox.testing import wait_until
from raftbox.testing.faultproxy import Direction


def freeze(c: LocalCluster, i: int) -> None:
    for (a, b), proxy in c.links.items():
        if i in (a, b):
            proxy.block(Direction.UP)
            proxy.block(Direction.DOWN)


def record_calls(node) -> list[tuple[int, str]]:
    """(peer, method) of every RPC `node` makes from now on."""
    calls: list[tuple[int, str]] = []
    call = node.transport.call

    def recording(peer_id: int, method: str, *args, **kw):
        calls.append((peer_id, method))
        return call(peer_id, method, *args, **kw)

    node.transport.call = recording
    return calls


def test_a_write_forwarded_to_a_frozen_leader_is_applied_by_the_next_leader(tmp_path):
    async def body():
        async with LocalCluster(tmp_path) as c:
            old = await c.wait_leader()
            via = next(i for i in c.ids if i != old)
            await propose(c.nodes[via], b"before")  # every connection is open
            freeze(c, old)
            assert c.nodes[via].leader == old  # it does not know yet: the write goes to `old`
            calls = record_calls(c.nodes[via])
            # The deadline is far above an election timeout (0.1 s here) and far below what a
            # forwarded call waited before (its whole deadline): it must be met.
            write = asyncio.create_task(propose(c.nodes[via], b"during", timeout_s=20))
            await wait_until(
                lambda: (old, "propose") in calls, 10, what="the write is forwarded to `old`"
            )
            rest = [i for i in c.ids if i != old]
            new = await c.wait_leader(rest, timeout_s=10)
            index = await write
            assert c.nodes[new].sm.data.count(b"during") == 1
            await wait_until(
                lambda: c.nodes[via].sm.applied >= index, 10, what="applied where it was asked"
            )
            assert c.nodes[via].transport.stats().peers[old].pending_calls == 0  # abandoned

    run(body)
