"""Removed members on the asyncio member: once removed (and a grace period later), never dialed.

Member 3 is a fake: a listener that counts the connections made to it and hangs up. Before its
removal the leader dials it (heartbeats); after it, nothing may — not even the answers to a
removed member that keeps talking (a "ghost" sending stale pre-votes, which members answer).
"""

from __future__ import annotations

import asyncio

from nodecluster import HOST, LocalCluster, propose, run
from test_transport_retire import CountingListener

from raftbox.raft.messages import Message, MessageType
from raftbox.raft.transport import PeerTransport
from raftbox.testing import wait_until


def test_a_removed_member_is_no_longer_dialed(tmp_path):
    async def body():
        fake = CountingListener()
        fake_addr = await fake.start()
        ghost: PeerTransport | None = None
        try:
            async with LocalCluster(
                tmp_path,
                (1, 2),
                proxies=False,
                addresses={3: fake_addr},
                node_kw={"retire_grace_ticks": 5},
                transport_kw={"backoff_max_s": 0.02},
            ) as c:
                leader = await c.wait_leader()
                await propose(c.nodes[leader], b"x")  # this term's no-op is applied
                await wait_until(lambda: fake.accepts >= 1, 10, what="the leader dials member 3")
                await c.nodes[leader].remove_member(3)
                await wait_until(
                    lambda: not any(n.transport.has_peer(3) for n in c.nodes.values()),
                    10,
                    what="members 1 and 2 forget member 3",
                )

                # The removed member keeps talking: a pre-vote at a stale term is answered (a
                # rejection), and the answer is for member 3 — dropped, not dialed.
                ghost = PeerTransport(
                    3,
                    (HOST, 0),
                    {i: c.addr(i) for i in c.ids},
                    on_messages=lambda m: None,
                    tls=c.peer_tls(3),
                )
                await ghost.start()
                before = fake.accepts
                dropped = {i: n.transport.stats().dropped_unknown_msgs for i, n in c.nodes.items()}

                def pre_vote() -> None:
                    for i in c.ids:
                        ghost.send(Message(MessageType.PRE_VOTE, to=i, frm=3, term=1))

                def answered_and_dropped() -> bool:
                    return all(
                        n.transport.stats().dropped_unknown_msgs >= dropped[i] + 3
                        for i, n in c.nodes.items()
                    )

                await wait_until(answered_and_dropped, 10, each=pre_vote, poll_s=0.02)
                assert fake.accepts == before
                assert sorted(c.nodes[leader].status()["voters"]) == [1, 2]
        finally:
            if ghost is not None:
                await ghost.close()
            await fake.close()

    run(body)


def test_a_restarted_member_does_not_dial_a_member_removed_before(tmp_path):
    async def body():
        fake = CountingListener()
        fake_addr = await fake.start()
        try:
            async with LocalCluster(
                tmp_path,
                (1, 2),
                proxies=False,
                addresses={3: fake_addr},
                transport_kw={"backoff_max_s": 0.02},
            ) as c:
                leader = await c.wait_leader()
                await propose(c.nodes[leader], b"x")  # this term's no-op is applied
                await c.nodes[leader].remove_member(3)
                await wait_until(
                    lambda: all(3 not in n.status()["voters"] for n in c.nodes.values()), 10
                )
                sms = {i: n.sm for i, n in c.nodes.items()}  # they keep their applied index
                for i in c.ids:
                    await c.stop(i)
                for i in c.ids:
                    # With 3 still in its peers (an operator's unchanged --peers).
                    await c.start(i, sm=sms[i])
                    assert not c.nodes[i].transport.has_peer(3)
                await asyncio.wait_for(c.wait_leader(), 10)
        finally:
            await fake.close()

    run(body)
