"""Real `RaftNode`s in the test's own event loop, each peer link through its own `FaultProxy`.

The in-process sibling of tests/e2e/cluster.py: every member is a `RaftNode` with a durable log
in its own directory and a `Recorder` state machine; with `proxies=True` (the default) member i
is told that member j lives at the proxy of the link i -> j, so `isolate(i)` and `heal()` cut
and restore what i can say and hear. The members talk mutual TLS with bundles made by
`raftbox cluster init`'s own code (`peer_tls(i)`; the external ids get bundles too). Waiting is
always for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from raftbox import cluster
from raftbox.raft.messages import StateRole
from raftbox.raft.node import NodeConfig, RaftNode
from raftbox.raft.sessions import Command
from raftbox.testing import FaultProxy, wait_until
from raftbox.testing.procs import free_port

HOST = "127.0.0.1"
# Quick redials after a heal (the default backoff grows to 2 s).
FAST_TRANSPORT = dict(backoff_min_s=0.01, backoff_max_s=0.1, connect_timeout_s=1.0)


class Recorder:
    """A state machine that keeps every payload it applied, in order."""

    def __init__(self) -> None:
        self.applied = 0
        self.data: list[bytes] = []

    def applied_index(self) -> int:
        return self.applied

    def apply_noop(self, index: int) -> None:
        self.applied = index

    def apply(self, index: int, command: Command) -> int:
        self.applied = index
        self.data.append(command.payload)
        return index

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode([self.applied, self.data])

    def restore(self, data: bytes) -> None:
        self.applied, self.data = msgspec.msgpack.decode(data, type=tuple[int, list[bytes]])


def run(body: Callable[[], Any], timeout_s: float = 60.0) -> None:
    async def main() -> None:
        async with asyncio.timeout(timeout_s):
            await body()

    asyncio.run(main())


class LocalCluster:
    def __init__(
        self,
        base: Path,
        ids: tuple[int, ...] = (1, 2, 3),
        *,
        proxies: bool = True,
        addresses: dict[int, tuple[str, int]] | None = None,
        tick_s: float = 0.01,
        election_ticks: int = 10,
        sm: Callable[[int], Any] = lambda i: Recorder(),
        node_kw: dict | None = None,
        transport_kw: dict | None = None,
    ) -> None:
        """`addresses`: members that are not started here (a fake, or a process), by id."""
        self.base = Path(base)
        self.ids = list(ids)
        self.tick_s = tick_s
        self.election_ticks = election_ticks
        self.make_sm = sm
        self.node_kw = node_kw or {}
        self.transport_kw = {**FAST_TRANSPORT, **(transport_kw or {})}
        self.use_proxies = proxies
        self.ports = {i: free_port() for i in self.ids}
        self.external = dict(addresses or {})
        self.links: dict[tuple[int, int], FaultProxy] = {}
        self.nodes: dict[int, RaftNode] = {}
        bundles = self.base / "bundles"
        cluster.init(str(bundles), {j: self.addr(j) for j in [*self.ids, *self.external]})
        self._tls = {
            j: cluster.load_bundle(str(bundles / f"member-{j}")).peer_tls()
            for j in [*self.ids, *self.external]
        }

    def peer_tls(self, i: int):
        """Member i's `PeerTLS` (for a stand-in transport that must pass for member i)."""
        return self._tls[i]

    def addr(self, i: int) -> tuple[str, int]:
        return self.external[i] if i in self.external else (HOST, self.ports[i])

    def peers_of(self, i: int) -> dict[int, tuple[str, int]]:
        out = {}
        for j in [*self.ids, *self.external]:
            out[j] = self.links[i, j].address if (i, j) in self.links else self.addr(j)
        return out

    async def __aenter__(self) -> LocalCluster:
        try:
            if self.use_proxies:
                for i in self.ids:
                    for j in self.ids:
                        if i != j:
                            proxy = FaultProxy((HOST, 0), self.addr(j))
                            await proxy.start()
                            self.links[i, j] = proxy
            for i in self.ids:
                await self.start(i)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def config(self, i: int) -> NodeConfig:
        return NodeConfig(
            node_id=i,
            data_dir=str(self.base / f"n{i}"),
            peer_listen=(HOST, self.ports[i]),
            peers=self.peers_of(i),
            tick_s=self.tick_s,
            election_ticks=self.election_ticks,
            seed=i,
            peer_tls=self._tls[i],
            **self.node_kw,
        )

    async def start(self, i: int, sm: Any = None) -> RaftNode:
        node = RaftNode(
            self.config(i), sm if sm is not None else self.make_sm(i), **self.transport_kw
        )
        await node.start()
        self.nodes[i] = node
        return node

    async def stop(self, i: int) -> None:
        node = self.nodes.pop(i, None)
        if node is not None:
            await node.stop()

    async def close(self) -> None:
        for i in list(self.nodes):
            await self.stop(i)
        for proxy in self.links.values():
            await proxy.close()

    # -- faults --------------------------------------------------------------------------------
    def isolate(self, i: int) -> None:
        for (a, b), proxy in self.links.items():
            if i in (a, b):
                proxy.partition()

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.heal()

    # -- waiting -------------------------------------------------------------------------------
    async def wait_leader(self, ids: list[int] | None = None, timeout_s: float = 10.0) -> int:
        """Wait until one of `ids` leads and every one of them follows it; return its id."""
        ids = list(ids or self.nodes)
        found: list[int] = []

        def agreed() -> bool:
            leaders = [i for i in ids if self.nodes[i].role == StateRole.LEADER]
            if len(leaders) != 1 or any(self.nodes[i].leader != leaders[0] for i in ids):
                return False
            found[:] = leaders
            return True

        await wait_until(agreed, timeout_s, poll_s=0.005, what=f"one leader among {ids}")
        return found[0]


async def propose(node: RaftNode, payload: bytes, timeout_s: float = 10.0) -> int:
    """Write `payload` through `node`; returns the index it was applied at."""
    return await node.propose(node.new_command(payload), timeout_s=timeout_s)


def elapsed_since(t0: float) -> float:
    return time.monotonic() - t0
