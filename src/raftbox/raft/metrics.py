"""Prometheus metrics of one Raft member (`raftbox_raft_*`).

Counters and histograms are observed by the asyncio driver (`raft/node.py`) at its edges —
after a Ready is persisted, when a proposal is taken, when a snapshot chunk goes out — never
inside the pure core. Gauges (term, commit, applied, role) are read from the node when the
registry is scraped, so they cost nothing between scrapes.

A member without a registry (tests, raft-kv) keeps `RaftNode.metrics = None` and pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

__all__ = ["MetricsListener", "RaftMetrics"]

_FSYNC_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class RaftMetrics:
    def __init__(self, registry: CollectorRegistry, status: Callable[[], dict]) -> None:
        self.leader_changes = Counter(
            "raftbox_raft_leader_changes",
            "Times this member learned of a new leader (itself included)",
            registry=registry,
        )
        self.proposals = Counter(
            "raftbox_raft_proposals", "Commands proposed through this member", registry=registry
        )
        self.fsync_seconds = Histogram(
            "raftbox_raft_fsync_seconds",
            "Time to persist one Ready (entries and hard state) durably",
            buckets=_FSYNC_BUCKETS_S,
            registry=registry,
        )
        self.append_entries = Histogram(
            "raftbox_raft_append_entries",
            "Entries persisted per Ready (the group-commit batch size)",
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.messages_sent = Counter(
            "raftbox_raft_messages_sent", "Raft messages sent to peers", registry=registry
        )
        self.snapshot_sends = Counter(
            "raftbox_raft_snapshot_chunks_sent",
            "Snapshot chunks sent to followers that fell behind the log",
            registry=registry,
        )
        self.committed_entries = Counter(
            "raftbox_raft_applied_entries", "Committed entries applied here", registry=registry
        )
        registry.register(_StatusCollector(status))


class _StatusCollector:
    def __init__(self, status: Callable[[], dict]) -> None:
        self.status = status

    def collect(self):
        st = self.status()
        for name, key, doc in (
            ("raftbox_raft_term", "term", "The member's current term"),
            ("raftbox_raft_commit_index", "commit", "Highest log index known committed"),
            ("raftbox_raft_applied_index", "applied", "Highest log index applied"),
            ("raftbox_raft_last_index", "last_index", "Last index in this member's log"),
            ("raftbox_raft_leader_id", "leader", "The leader this member knows (0: none)"),
        ):
            yield GaugeMetricFamily(name, doc, value=st[key])
        g = GaugeMetricFamily(
            "raftbox_raft_role", "1 for this member's current role", labels=["role"]
        )
        for role in ("follower", "pre_candidate", "candidate", "leader"):
            g.add_metric([role], 1.0 if st["role"] == role else 0.0)
        yield g


class MetricsListener:
    """`/metrics` alone, unauthenticated, plain HTTP, on its own address (`--metrics-listen` of
    `raftbox serve`/`up` and of `raft-kv serve`): for a Prometheus on a private network."""

    def __init__(self, registry: CollectorRegistry, listen: tuple[str, int]) -> None:
        self.registry = registry
        self.listen = listen
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen[0], self.listen[1])
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/metrics"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
