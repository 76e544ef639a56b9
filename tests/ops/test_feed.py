"""The cluster view's long-poll (`ClusterView.wait_changed`): it answers as soon as this member
records a Raft event past the caller's seq, not at the end of its wait; at once when the caller
is behind; and after its wait, bounded by `wait_max_s`, when nothing happens."""

from __future__ import annotations

import asyncio

from raftbox.ops.cluster import ClusterView
from raftbox.ops.processes import ProcessTable
from raftbox.raft.messages import StateRole
from raftbox.raft.record import RaftRecord


class FakeNode:
    id = 1

    def __init__(self) -> None:
        self.rpc_handlers: dict = {}
        self.record = RaftRecord(1, tick_ms=50)
        self._changed = asyncio.Event()
        self.record.listener = self._on_record

    def _on_record(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def record_event(self) -> asyncio.Event:
        return self._changed


def test_the_feed_answers_when_an_event_is_recorded_not_at_the_end_of_its_wait():
    async def main():
        node = FakeNode()
        view = ClusterView(node, lambda: "", dict, ProcessTable(), wait_max_s=3600)
        assert "ops_status" in node.rpc_handlers
        seq = node.record.seq
        waiting = asyncio.ensure_future(view.wait_changed(seq, 3600))
        await asyncio.sleep(0)
        assert not waiting.done()
        node.record.after_input(1, StateRole.FOLLOWER, 2, 3, 3)  # a leader learned: an event
        async with asyncio.timeout(30):  # a deadline for the test, far below the wait
            await waiting
        assert node.record.seq > seq
        async with asyncio.timeout(30):
            await view.wait_changed(0, 3600)  # behind: at once
        short = ClusterView(FakeNode(), lambda: "", dict, ProcessTable(), wait_max_s=0.01)
        async with asyncio.timeout(30):
            await short.wait_changed(0, 3600)  # nothing happens: bounded by wait_max_s

    asyncio.run(main())
