"""The asyncio member: a broken node stops cleanly instead of limping on."""

from __future__ import annotations

import asyncio

import pytest

from raftbox.raft.node import NodeConfig, RaftNode, Unavailable
from raftbox.raft.sessions import Command
from raftbox.testing.procs import free_port


class Exploding:
    """A state machine whose apply fails (a disk full, a bug): the node must not go on."""

    def __init__(self) -> None:
        self.applied = 0

    def applied_index(self) -> int:
        return self.applied

    def apply_noop(self, index: int) -> None:
        self.applied = index

    def apply(self, index: int, command: Command):
        raise OSError(28, "No space left on device")

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def test_a_node_whose_apply_fails_reports_it_refuses_work_and_stops(tmp_path):
    async def main():
        port = free_port()
        fatal: list[BaseException] = []
        node = RaftNode(
            NodeConfig(
                1, str(tmp_path), ("127.0.0.1", port), {1: ("127.0.0.1", port)}, tick_s=0.01
            ),
            Exploding(),
            on_fatal=fatal.append,
        )
        await node.start()
        try:
            async with asyncio.timeout(10):
                while node.role.name != "LEADER":
                    await asyncio.sleep(0.01)
                with pytest.raises(Unavailable):
                    await node.propose(node.new_command(b"x"), timeout_s=5)
                assert fatal and isinstance(fatal[0], OSError)
                assert node.failed is fatal[0]
                with pytest.raises(Unavailable):
                    node.submit(node.new_command(b"y"))
        finally:
            async with asyncio.timeout(10):
                await node.stop()  # returns: the broken loop does not make shutdown fail

    asyncio.run(main())
