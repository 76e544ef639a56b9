"""A Ready's entries are persisted in the disk thread, and no member acknowledges an entry before
it is durable there (node.py, the Ready loop, steps 2 and 3)."""

from __future__ import annotations

import asyncio
import threading

from nodecluster import LocalCluster, propose, run

from raftbox.raft.disklog import DiskLog
from raftbox.raft.messages import MessageType
from raftbox.raft.transport import PeerTransport


class Syncs:
    """Records the thread of every `DiskLog.sync()` that had entries to make durable, and checks
    that no member of `nodes` acknowledges an entry (APP_RESP) before a sync made it durable
    there."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.acks: list[int] = []
        self.nodes: dict[int, object] = {}


def record_syncs(monkeypatch) -> Syncs:
    rec = Syncs()
    threads, acks, sending_node = rec.threads, rec.acks, rec.nodes
    durable: dict[str, int] = {}  # log directory -> highest index synced
    real_sync, real_send = DiskLog.sync, PeerTransport.send

    def sync(self):
        persisted = real_sync(self)
        appended = [op for op in persisted.ops if type(op).__name__ == "_Append"]
        if appended:
            threads.append(threading.current_thread().name)
            key = str(self._writer.directory)
            durable[key] = max(durable.get(key, 0), appended[-1].entries[-1].index)
        return persisted

    def send(self, msg):
        if msg.type == MessageType.APP_RESP and not msg.reject and msg.index:
            node = sending_node[self.node_id]
            assert msg.index <= durable.get(str(node.disk._writer.directory), 0), (
                f"node {self.node_id} acknowledged {msg.index} before it was durable"
            )
            acks.append(msg.index)
        return real_send(self, msg)

    monkeypatch.setattr(DiskLog, "sync", sync)
    monkeypatch.setattr(PeerTransport, "send", send)
    return rec


def test_no_member_acknowledges_an_entry_before_it_is_durable(tmp_path, monkeypatch):
    rec = record_syncs(monkeypatch)

    async def body():
        async with LocalCluster(tmp_path, proxies=False) as c:
            rec.nodes.update(c.nodes)
            leader = await c.wait_leader()
            for k in range(5):  # one at a time: small Readies
                await propose(c.nodes[leader], b"v%d" % k)
            # 64 proposals in one turn of the loop: one large Ready on the leader.
            await asyncio.gather(*(propose(c.nodes[leader], b"w%d" % k) for k in range(64)))
            assert rec.acks  # the check in send() ran
            assert rec.threads and all(t.startswith("raft-disk") for t in rec.threads)

    run(body)
