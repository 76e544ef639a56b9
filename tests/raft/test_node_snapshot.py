"""Snapshots on the asyncio member (raftbox.raft.node, "Snapshots"): the image is made in a
thread while the node goes on applying, and the snapshot holds exactly the index it claims."""

from __future__ import annotations

import threading

import msgspec
from nodecluster import LocalCluster, Recorder, propose, run

from raftbox.raft.node import _Envelope
from raftbox.testing import wait_until


class SlowImages(Recorder):
    """`begin_snapshot` pins a copy of the state; its image is only made once the test says so
    (think: a multi-GB SQLite file being copied)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.begun: list[int] = []  # pinned indexes
        self.reading = threading.Event()

    def begin_snapshot(self):
        pinned = (self.applied, list(self.data))
        self.begun.append(self.applied)

        def read_image() -> bytes:
            self.reading.set()
            assert self.go.wait(30), "the test never let the image be made"
            return msgspec.msgpack.encode(list(pinned))

        return read_image


def test_apply_goes_on_while_an_image_is_made_and_the_snapshot_is_of_the_pinned_index(tmp_path):
    async def body():
        sm = SlowImages()
        async with LocalCluster(
            tmp_path,
            (1,),
            proxies=False,
            sm=lambda i: sm,
            node_kw={"snapshot_entries": 20, "snapshot_keep_entries": 0},
        ) as c:
            node = c.nodes[1]
            await c.wait_leader()
            for i in range(25):
                await propose(node, b"a%d" % i)
            await wait_until(sm.reading.is_set, 10, what="an image being made")
            (pinned,) = sm.begun
            # The image is not done, yet the node goes on committing and applying.
            for i in range(30):
                await propose(node, b"b%d" % i)
            assert sm.applied >= pinned + 30
            assert node.disk.snapshot().meta.index < pinned

            sm.go.set()
            await wait_until(lambda: node.disk.snapshot().meta.index == pinned, 10)
            snap = node.disk.snapshot()
            applied, data = msgspec.msgpack.decode(
                msgspec.msgpack.decode(snap.data, type=_Envelope).sm
            )
            assert applied == pinned  # exactly the state at the index the snapshot claims
            assert data == sm.data[: len(data)] and data[-1] == b"a%d" % (len(data) - 1)
            assert node.core.log.first_index() > 1  # the log was compacted behind it

            # A member restarted without its state machine comes back through the snapshot.
            await c.stop(1)
            fresh = Recorder()
            node = await c.start(1, sm=fresh)
            await c.wait_leader()
            await node.read_index(timeout_s=10)
            assert fresh.data == sm.data

    run(body)
