"""The asyncio Raft member: the pure core driven by a clock, a durable log and a transport.

Theory of operation
-------------------
`RaftNode` owns one `RawNode` and runs three tasks in one TaskGroup:

- the **ticker** calls `tick()` every `tick_s` seconds;
- the **Ready loop** does, for each `Ready`, exactly what its docstring says, in that order:
  1. as leader, send APP/HEARTBEAT/SNAP at once (thesis §10.2.1: the leader's own write may
     run in parallel, the core counts the leader only after advance);
  2. persist snapshot, entries and hard state in a worker thread — one fsync covers every entry
     that arrived since the last one (group commit: while a sync runs, new proposals pile up in
     the core and go out together in the next Ready);
  3. send the other messages (votes and acknowledgements promise durable state);
  4. restore the state machine from the snapshot, apply committed entries, resolve the
     proposal futures and ReadIndex waiters;
  5. `advance()`, then start a snapshot if `snapshot_entries` were applied since the last one;
  and between two Readies, write a snapshot image that is ready and compact the log;
- the **transport** delivers peer messages into `step()` and serves internal RPCs.

Messages arriving while a Ready is being persisted are stepped at once (the core allows steps
between `ready()` and `advance()`), so a slow disk never stops the node from hearing its peers.

Snapshots
---------
A snapshot must hold exactly the state at the applied index it claims, and making the image of
a large state machine takes long: it must neither stop the loop nor stop apply. So it is taken
in three steps, one snapshot at a time:

1. on the loop, right after `advance()` (so nothing is half-applied): note the applied index,
   the membership and the peer addresses, and call the state machine's `begin_snapshot()`, which
   pins its state as it is now and returns a function that makes the image of exactly that
   state later, from any one thread (`MetaStore`: a read transaction on a second SQLite
   connection; apply goes on in the first);
2. in the snapshot thread: call that function, encode the envelope, and write it durably to a
   temp file (`DiskLog.prepare_snapshot`); the Ready loop goes on applying meanwhile;
3. back in the Ready loop, between two Readies (the only place that uses the log's writer side):
   `create_snapshot` at the noted index, compact, sync — in the disk thread, as every write.
   The image is already on disk, so this is a rename and two directory fsyncs: writing a large
   image here stalled every proposal for its whole write and fsync (hundreds of ms for 60 MiB).

A state machine without `begin_snapshot` is asked for `snapshot()` on the loop in step 1 (the
in-memory ones of tests and raft-kv, where that is cheap).

Removed members
---------------
A member removed from the membership is not dropped from the transport at once: an RPC may be
in flight to it (a follower forwarded `remove` to the leader that removes itself: the answer
comes back on the follower's connection to it, and the follower may apply the removal before
the answer arrives). It is retired `retire_grace_ticks` after the removal was applied
(`PeerTransport.retire_peer`: nothing new goes to it, the calls in flight finish, then it is
forgotten and never redialed). A restarted node only dials current members.

The peer port
-------------
A node opens its peer listener only with `NodeConfig.peer_tls` (mutual TLS with member
certificates of the cluster CA, `raftbox.tls.PeerTLS`; a bundle from `raftbox cluster init`).
A group whose only member is this node and that is not joining needs no listener and opens none
without `peer_tls` (`raftbox up`); such a node refuses to add members. A node with other members
(or joining) and no `peer_tls` refuses to start, naming `raftbox cluster init`.
`insecure_plaintext_peers` is the one way around it — plain TCP, anyone who connects is trusted —
for benchmarks against systems run the same way; it is refused unless every address involved is
a loopback address.

Commands and results
--------------------
A command is a `sessions.Command` `(client_id, seq, ack_below, stamp_ms, payload)`. `propose()`
sends it to the leader (locally or by the `propose` RPC); the leader stamps it with its clock and
proposes it; the future resolves when the entry is applied with the state machine's result. The
state machine applies each (client_id, seq) once (`SessionTable`), so a client that retries after
a timeout or a leader change gets the first result. If this node loses leadership while
proposals wait, they fail with `Retry`: the client retries with the same seq. A proposal
forwarded to the leader is abandoned as soon as this node learns of another leader (or of none)
and forwarded again: a leader that froze (SIGSTOP) keeps its connections open and answers
nothing, and waiting for its answer would hold the write until its deadline although the others
elected a new leader within an election timeout.

Linearizable reads use ReadIndex: `read_index()` returns an index such that a read served after
the local state machine applied it is linearizable. `stale` reads skip it. A ReadIndex request
can be lost or orphaned (this leader is deposed while it waits for the heartbeat round; a
follower's leader changes): `read_index()` asks again — the new leader, once one is known —
until its deadline, and only then fails with `Unavailable` (no majority reachable in time).
Asking again is safe: any index confirmed after the call began serves a linearizable read.

The state machine interface (`StateMachine`): `apply(index, command) -> result`, `snapshot() ->
bytes`, `restore(data)`, `applied_index()`, and optionally `begin_snapshot() -> (() -> bytes)`
(see Snapshots). Restart restores from the newest snapshot only if the state machine's own
applied index is older, then the core replays what is missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from ..tls import PeerTLS
from .core import Config, RawNode, Ready
from .errors import NotLeader, ProposalDropped
from .messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    EntryType,
    Message,
    MessageType,
    StateRole,
)
from .record import RaftRecord
from .sessions import Command
from .transport import PeerTransport, RemoteRpcError, RpcError

log = logging.getLogger(__name__)

Address = tuple[str, int]


class StateMachine(Protocol):
    def apply(self, index: int, command: Command) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    def applied_index(self) -> int: ...

    # Optional (see "Snapshots" in the module docstring):
    # def begin_snapshot(self) -> Callable[[], bytes | bytearray]: ...


class NodeError(Exception):
    """Base of the runtime's errors."""


class Retry(NodeError):
    """The request may not have been applied; retry it with the same (client_id, seq)."""


class Unavailable(NodeError):
    """No leader could be reached within the deadline (no majority, or an election running)."""


_LEADER_SEND = (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP)


@dataclass
class NodeConfig:
    node_id: int
    data_dir: str
    peer_listen: Address
    peers: dict[int, Address]  # advertised peer addresses, including this node's own
    join: bool = False  # joining an existing cluster: start with no membership
    tick_s: float = 0.05
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    snapshot_entries: int = 20_000  # snapshot after this many applied entries
    snapshot_keep_entries: int = 5_000  # entries kept behind a snapshot for slow followers
    retire_grace_ticks: int = 20  # a removed member is forgotten this long after the change
    max_inflight_msgs: int = 512
    max_size_per_msg_bytes: int = 1 << 20
    seed: int | None = None
    peer_tls: PeerTLS | None = None  # mutual TLS on the peer port (see "The peer port")
    insecure_plaintext_peers: bool = False  # loopback benchmarks only (see "The peer port")


def _now_ms() -> int:
    return int(time.time() * 1000)


class PeerPortRefused(ValueError):
    """The node would open a peer port it cannot authenticate."""


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _peer_listen(cfg: NodeConfig, members: set[int]) -> Address | None:
    """Where the node listens for peers, or None (no listener); PeerPortRefused if insecure."""
    others = (members or set(cfg.peers)) - {cfg.node_id}
    if cfg.peer_tls is not None:
        return cfg.peer_listen
    if cfg.insecure_plaintext_peers:
        hosts = [cfg.peer_listen[0], *(a[0] for a in cfg.peers.values())]
        if not all(_is_loopback(h) for h in hosts):
            raise PeerPortRefused(
                "insecure plaintext peers are refused on a non-loopback address "
                f"({', '.join(h for h in hosts if not _is_loopback(h))})"
            )
        log.warning(
            "node %d: PLAINTEXT PEER PORT, NO AUTHENTICATION (benchmarks only)", cfg.node_id
        )
        return cfg.peer_listen
    if cfg.join or others:
        raise PeerPortRefused(
            f"node {cfg.node_id} has peers ({', '.join(map(str, sorted(others))) or 'joining'}) "
            "but no peer TLS: make a cluster bundle with `raftbox cluster init` and start each "
            "member with its bundle (`raftbox serve --cluster DIR/member-N`)"
        )
    return None  # a single-member group: nobody to talk to, nothing to listen for


class _Envelope(msgspec.Struct, array_like=True):
    """The node's snapshot: peer addresses and the state machine's own snapshot."""

    addresses: dict[int, tuple[str, int]]
    sm: bytes


class RaftNode:
    def __init__(
        self,
        cfg: NodeConfig,
        sm: StateMachine,
        on_fatal: Callable[[BaseException], None] | None = None,
        **transport_kw,
    ) -> None:
        """`on_fatal(exc)` is called once if the node breaks (an invariant of the core, a disk
        error): the node then refuses everything with `Unavailable`; a process should stop
        (STYLE: a broken invariant stops the process instead of writing bad data)."""
        from .disklog import DiskLog

        self.cfg = cfg
        self.on_fatal = on_fatal
        self.failed: BaseException | None = None
        # One thread does every disk write, in order: the DiskLog's one-writer rule, and Raft's
        # fsyncs never wait behind other work (block hashing, uploads) in a shared pool.
        self._disk_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raft-disk")
        self.sm = sm
        self.id = cfg.node_id
        self.rng = random.Random(cfg.seed if cfg.seed is not None else os.urandom(8))
        os.makedirs(cfg.data_dir, exist_ok=True)
        self.disk = DiskLog.open(os.path.join(cfg.data_dir, "raft"))
        self.addresses: dict[int, Address] = dict(cfg.peers)
        snap = self.disk.snapshot()
        if not snap.is_empty() and snap.data:
            env = msgspec.msgpack.decode(snap.data, type=_Envelope)
            self._learn_addresses(env.addresses)
            if sm.applied_index() < snap.meta.index:
                sm.restore(env.sm)
        self._replay_addresses()
        self.core = RawNode(
            Config(
                id=self.id,
                storage=self.disk,
                rng=self.rng,
                peers=() if cfg.join else tuple(sorted(cfg.peers)),
                election_ticks=cfg.election_ticks,
                heartbeat_ticks=cfg.heartbeat_ticks,
                applied=max(sm.applied_index(), 0),
                max_inflight_msgs=cfg.max_inflight_msgs,
                max_size_per_msg_bytes=cfg.max_size_per_msg_bytes,
            )
        )
        members = self._members()
        try:
            listen = _peer_listen(cfg, members)
        except PeerPortRefused:
            self.disk.close()
            raise
        self.has_peer_port = listen is not None
        self.transport = PeerTransport(
            self.id,
            listen,
            {
                p: a
                for p, a in self.addresses.items()
                if p != self.id and (p in members or not members)
            },
            on_messages=self._on_messages,
            on_unreachable=self._on_unreachable,
            rpc_handler=self._on_rpc,
            rng=self.rng,
            tls=cfg.peer_tls,
            **transport_kw,
        )
        self.client_id = self.rng.getrandbits(63) | 1
        self._seq = itertools.count(1)
        # Seqs of this node's own commands from new_command() until propose() returns for
        # them: a retry may still carry them, so no later command may ack past them.
        self._inflight_seqs: set[int] = set()
        self._wake = asyncio.Event()
        self._applied_cond = asyncio.Condition()
        self._waiters: dict[tuple[int, int], asyncio.Future] = {}
        self._deadlines: list[tuple[float, tuple[int, int], asyncio.Future]] = []  # a heap
        self._encoder = msgspec.msgpack.Encoder()
        self._cmd_decoder = msgspec.msgpack.Decoder(Command)
        self._loop = asyncio.get_event_loop()
        self._reads: dict[bytes, asyncio.Future] = {}
        self._read_ids = itertools.count(1)
        self._runner: asyncio.Task | None = None
        self.leader = NONE
        self.role = StateRole.FOLLOWER
        self._last_snapshot_index = snap.meta.index
        self._leader_changed = asyncio.Event()
        self._conf_applied = False  # a membership change was applied in this Ready
        self._tg: asyncio.TaskGroup | None = None
        self._ticks = 0
        self._retiring: dict[int, int] = {}  # removed member -> tick at which it is retired
        # Snapshot images are made here, not in the disk thread: the log's fsyncs never wait
        # behind serializing a large state machine.
        self._snap_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raft-snap")
        self._snap_task: asyncio.Task | None = None
        # (index, conf state, envelope, its file written by DiskLog.prepare_snapshot)
        self._snap_ready: tuple[int, Any, bytes, Any] | None = None
        self.read_retries = 0  # ReadIndex requests asked again (deposed leader, lost message)
        self._stopping = False
        # What Raft did, for operators (raft/record.py); metrics once a registry is attached.
        self.record = RaftRecord(self.id, cfg.tick_s * 1000)
        self._record_changed = asyncio.Event()
        self.record.listener = self._on_record
        self.metrics: Any = None  # a raft.metrics.RaftMetrics: `attach_metrics`
        # Extra peer RPCs (method -> async handler(payload) -> bytes), e.g. the cluster view's.
        self.rpc_handlers: dict[str, Callable[[bytes], Any]] = {}

    def _on_record(self) -> None:
        self._record_changed.set()
        self._record_changed = asyncio.Event()

    def record_event(self) -> asyncio.Event:
        """Set when the record (`self.record`) gets its next event. Take it before looking at
        the record, then wait on it: no event can slip in between."""
        return self._record_changed

    def attach_metrics(self, registry) -> None:
        """Count into `registry` (prometheus): see `raft/metrics.py`."""
        from .metrics import RaftMetrics

        self.metrics = RaftMetrics(registry, self.status)
        self.metrics.leader_changes.inc(self.record.elections)  # those before the attach

    def _observe(self, ticked: bool = False) -> None:
        """Show the record what the core's role, term and leader are now (cheap when unchanged)."""
        c, r = self.core, self.record
        if ticked or c.role is not r._role or c.term != r._term or c.lead != r._leader:
            before = r.elections
            r.after_input(_now_ms(), c.role, c.term, c.lead, len(c.trk.voters), ticked)
            if self.metrics is not None and r.elections != before:
                self.metrics.leader_changes.inc()

    def _learn_addresses(self, learned: dict) -> None:
        """Addresses from a snapshot, except where `--peers` says otherwise: an operator who
        moved a member tells every node its new address, and that must win."""
        for k, v in learned.items():
            if k not in self.cfg.peers:
                self.addresses[k] = tuple(v)

    def _replay_addresses(self) -> None:
        """Addresses of members added after the snapshot are in the conf-change entries."""
        first, last = self.disk.first_index(), self.disk.last_index()
        if last < first:
            return
        for e in self.disk.entries(first, last + 1):
            if e.type == EntryType.CONF_CHANGE:
                self._note_conf_change(ConfChange.decode(e.data))

    def _note_conf_change(self, cc: ConfChange) -> None:
        if cc.type == ConfChangeType.REMOVE:
            return  # keep the address: a removed member may still need to hear it was removed
        if cc.context and cc.node_id not in self.cfg.peers:
            host, port = msgspec.msgpack.decode(cc.context, type=tuple[str, int])
            self.addresses[cc.node_id] = (host, port)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transport.start()
        started = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._main(started))
        await started

    @property
    def peer_addr(self) -> Address:
        return self.transport.listen_addr

    async def _main(self, started: asyncio.Future) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._ticker())
                tg.create_task(self._ready_loop())
                started.set_result(None)
        except Exception as e:  # noqa: BLE001 - the node is broken: say so, don't limp on
            while isinstance(e, ExceptionGroup) and len(e.exceptions) == 1:
                e = e.exceptions[0]  # the task that failed, not the TaskGroup's wrapper
            self._fatal(e)
        finally:
            if not started.done():
                started.set_result(None)

    def _fatal(self, exc: BaseException) -> None:
        if self.failed is not None:
            return
        self.failed = exc
        log.critical("raft node %d stopped by an error: %r", self.id, exc, exc_info=exc)
        self._fail_all(Unavailable(f"raft node failed: {exc!r}"))
        if self.on_fatal is not None:
            self.on_fatal(exc)

    async def stop(self) -> None:
        """Graceful shutdown: stop the loops, let a disk write in progress finish, fail the
        waiters, close the transport and then the log."""
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except BaseException:  # noqa: BLE001 - cancelled, or already reported by _fatal
                pass
        # A write the loop was awaiting runs on in its thread: wait for it before closing (and
        # for an image being made, which reads the state machine).
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._disk_pool.shutdown, True)
        await loop.run_in_executor(None, self._snap_pool.shutdown, True)
        self._fail_all(Retry("node stopped"))
        await self.transport.close()
        self.disk.close()

    # -- tasks ---------------------------------------------------------------------------------
    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.tick_s)
            self._ticks += 1
            c = self.core
            self.record.before_tick(c.role, c.election_elapsed, c.randomized_election_timeout)
            c.tick()
            self._observe(ticked=True)
            self._sweep_deadlines()
            if self._retiring:
                self._retire_due()
            self._wake.set()

    async def _ready_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                # Between two Readies (also under a steady stream of them: the log must not
                # grow without end while writes keep coming).
                if self._snap_ready is not None:
                    await self._write_snapshot()
                if not self.core.has_ready():
                    break
                await self._handle_ready(self.core.ready())

    async def _handle_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        leader = self.core.role == StateRole.LEADER
        rec, metrics = self.record, self.metrics
        if not leader:
            rec.outgoing(_now_ms(), rd.messages)
        elif rd.entries:
            rec.appended(_now_ms(), rd.entries[-1].index, rd.entries[-1].term)
        if metrics is not None and rd.messages:
            metrics.messages_sent.inc(len(rd.messages))
            snaps = sum(1 for m in rd.messages if m.type == MessageType.SNAP)
            if snaps:
                metrics.snapshot_sends.inc(snaps)
        later: list[Message] = []
        for m in rd.messages:
            if leader and m.type in _LEADER_SEND:
                self.transport.send(m)
            else:
                later.append(m)
        if len(later) < len(rd.messages):
            self.transport.flush()
        if rd.snapshot is not None or rd.entries or rd.hard_state is not None:
            if rd.must_sync:
                t0 = time.perf_counter()
                persisted = await self._on_disk(self._persist, rd)
                if metrics is not None:
                    metrics.fsync_seconds.observe(time.perf_counter() - t0)
                    metrics.append_entries.observe(len(rd.entries))
            else:
                persisted = self._persist(rd)  # a commit-only change: no fsync, no thread
            self.disk.mark_stable(persisted)
            if leader and rd.entries:
                rec.persisted(_now_ms(), rd.entries[-1].index)
        for m in later:
            self.transport.send(m)
        if later:
            self.transport.flush()
        if rd.snapshot is not None and rd.snapshot.data:
            env = msgspec.msgpack.decode(rd.snapshot.data, type=_Envelope)
            self._learn_addresses(env.addresses)
            self.sm.restore(env.sm)
            meta = rd.snapshot.meta
            log.info(
                "installed snapshot at index %d (term %d) from the leader", meta.index, meta.term
            )
            self._sync_transport_peers()
        for e in rd.committed_entries:
            self._apply(e)
        for rs in rd.read_states:
            fut = self._reads.pop(rs.context, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        self.core.advance(rd)
        if metrics is not None and rd.committed_entries:
            metrics.committed_entries.inc(len(rd.committed_entries))
        if rec._sample is not None:
            rec.committed(_now_ms(), self.core.log.committed)
        if self._conf_applied:
            # The core applies a membership change in advance(): only now does its conf
            # state name a new member, so only now can the transport learn where it lives.
            self._conf_applied = False
            self._sync_transport_peers()
        if rd.committed_entries or rd.snapshot is not None:
            async with self._applied_cond:
                self._applied_cond.notify_all()
            self._maybe_begin_snapshot()

    def _on_disk(self, fn, *args) -> asyncio.Future:
        return self._loop.run_in_executor(self._disk_pool, fn, *args)

    def _persist(self, rd: Ready):
        """Runs in the worker thread (the DiskLog's writer side); see disklog.py."""
        if rd.snapshot is not None:
            self.disk.save_snapshot(rd.snapshot)
        self.disk.write(list(rd.entries), rd.hard_state)
        return self.disk.sync()

    def _apply(self, e) -> None:
        if e.type == EntryType.CONF_CHANGE:
            self._note_conf_change(ConfChange.decode(e.data))
            self._conf_applied = True  # sync the transport once the core applied it too
            self.sm_apply_noop(e.index)
            return
        if not e.data:
            self.sm_apply_noop(e.index)
            return
        cmd = self._cmd_decoder.decode(e.data)
        result = self.sm.apply(e.index, cmd)
        fut = self._waiters.pop((cmd.client_id, cmd.seq), None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def sm_apply_noop(self, index: int) -> None:
        apply_noop = getattr(self.sm, "apply_noop", None)
        if apply_noop is not None:
            apply_noop(index)

    def _members(self) -> set[int]:
        cs = self.core.conf_state
        return set(cs.voters) | set(cs.learners)

    def _sync_transport_peers(self) -> None:
        """Dial the members; retire the peers that no longer are, after a grace period."""
        members = self._members()
        for pid, addr in self.addresses.items():
            if pid == self.id:
                continue
            if pid in members or not members:
                self._retiring.pop(pid, None)
                self.transport.set_peer(pid, addr)
            elif pid not in self._retiring and self.transport.has_peer(pid):
                self._retiring[pid] = self._ticks + self.cfg.retire_grace_ticks

    def _retire_due(self) -> None:
        for pid, at in list(self._retiring.items()):
            if self._ticks >= at:
                del self._retiring[pid]
                log.info("node %d: member %d was removed: no longer dialing it", self.id, pid)
                self.transport.retire_peer(pid)

    def _maybe_begin_snapshot(self) -> None:
        """Step 1 of a snapshot (module docstring): on the loop, right after advance()."""
        applied = self.core.log.applied
        if applied - self._last_snapshot_index < self.cfg.snapshot_entries:
            return
        if self._snap_task is not None or self._snap_ready is not None or self._tg is None:
            return  # one at a time
        begin = getattr(self.sm, "begin_snapshot", None)
        if begin is not None:
            read_image = begin()
        else:
            image = self.sm.snapshot()

            def read_image() -> bytes:
                return image

        addresses = dict(self.addresses)
        conf_state = self.core.conf_state
        term = self.core.log.term(applied)
        self._snap_task = self._tg.create_task(
            self._make_snapshot(applied, term, conf_state, addresses, read_image)
        )

    async def _make_snapshot(
        self, index: int, term: int, conf_state, addresses, read_image
    ) -> None:
        """Step 2: the image, its envelope and its file, in the snapshot thread."""

        def make():
            data = msgspec.msgpack.encode(_Envelope(addresses, read_image()))
            return data, self.disk.prepare_snapshot(index, term, conf_state, data)

        try:
            data, prepared = await self._loop.run_in_executor(self._snap_pool, make)
        finally:
            self._snap_task = None
        self._snap_ready = (index, conf_state, data, prepared)
        self._wake.set()

    async def _write_snapshot(self) -> None:
        """Step 3: in the Ready loop, between two Readies (the writer side of the log)."""
        assert self._snap_ready is not None
        index, conf_state, data, prepared = self._snap_ready
        self._snap_ready = None
        keep = index - self.cfg.snapshot_keep_entries

        def write_snapshot():
            # A newer snapshot installed from the leader meanwhile wins: create_snapshot
            # ignores an older index (and deletes the prepared file), and `keep` is below either.
            self.disk.create_snapshot(index, conf_state, data, prepared)
            if keep > 0:
                self.disk.compact(keep)
            return self.disk.sync()

        self.disk.mark_stable(await self._on_disk(write_snapshot))
        self._last_snapshot_index = max(self._last_snapshot_index, index)

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        was_leader = self.role == StateRole.LEADER
        self.leader, self.role = leader, role
        self._leader_changed.set()
        self._leader_changed = asyncio.Event()
        if was_leader and role != StateRole.LEADER:
            self._fail_all(Retry("leadership lost"))

    def _fail_all(self, exc: Exception) -> None:
        for fut in list(self._waiters.values()) + list(self._reads.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()
        self._reads.clear()

    # -- transport callbacks -------------------------------------------------------------------
    def _on_messages(self, msgs: list[Message]) -> None:
        if self.failed is not None:
            return
        rec = self.record
        try:
            for m in msgs:
                rec.incoming(_now_ms(), m)
                self.core.step(m)
                self._observe()
        except Exception as e:  # noqa: BLE001 - a core invariant broke: stop this node only
            self._fatal(e)
            if self._runner is not None:
                self._runner.cancel()
            return
        self._wake.set()

    def _on_unreachable(self, peer_id: int) -> None:
        self.core.report_unreachable(peer_id)

    async def _on_rpc(self, method: str, payload: bytes) -> bytes:
        if method == "propose":
            cmd = msgspec.msgpack.decode(payload, type=Command)
            result = await self._propose_here(cmd, timeout_s=5.0)
            return msgspec.msgpack.encode(result)
        if method == "conf":
            kind, node_id, addr = msgspec.msgpack.decode(payload, type=tuple[int, int, Any])
            await self.change_member(ConfChangeType(kind), node_id, tuple(addr) if addr else None)
            return b""
        if method == "add_member":
            node_id, addr, timeout_s = msgspec.msgpack.decode(
                payload, type=tuple[int, tuple[str, int], float]
            )
            await self.add_member(node_id, addr, timeout_s)
            return b""
        if method == "transfer":
            await self.transfer_leadership(msgspec.msgpack.decode(payload, type=int))
            return b""
        if method == "read_index":
            return msgspec.msgpack.encode(await self.read_index())
        extra = self.rpc_handlers.get(method)
        if extra is not None:
            return await extra(payload)
        raise NodeError(f"unknown method {method!r}")

    # -- requests ------------------------------------------------------------------------------
    def new_command(self, payload: bytes) -> Command:
        """A command in this node's own client session; hand it to `propose()`."""
        seq = next(self._seq)
        cmd = Command(self.client_id, seq, self._ack_below(seq), 0, payload)
        self._inflight_seqs.add(seq)
        return cmd

    def _ack_below(self, seq: int) -> int:
        # Not only the proposals waiting here as leader (`_waiters`): one forwarded to the
        # leader, or being retried after a leadership change, is in flight too, and acking
        # past it would make the state machine refuse its retry as "already answered".
        return min(self._inflight_seqs, default=seq)

    async def propose(self, cmd: Command, timeout_s: float = 5.0) -> Any:
        """Replicate `cmd` and return the state machine's result (forwarded to the leader)."""
        try:
            return await self._propose(cmd, timeout_s)
        finally:
            if cmd.client_id == self.client_id:
                self._inflight_seqs.discard(cmd.seq)

    async def _propose(self, cmd: Command, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable("no leader accepted the proposal in time")
            try:
                if self.role == StateRole.LEADER:
                    return await self._propose_here(cmd, remaining)
                leader = await self._wait_leader(remaining)
                raw = await self._forward(leader, cmd, remaining)
                return msgspec.msgpack.decode(raw)
            except (Retry, NotLeader, ProposalDropped, RpcError, RemoteRpcError) as e:
                log.debug("propose retry: %s", e)
                await asyncio.sleep(min(self.cfg.tick_s, max(0.0, deadline - time.monotonic())))

    async def _forward(self, leader: int, cmd: Command, timeout_s: float) -> bytes:
        """The propose RPC to `leader`; `Retry` as soon as this node learns of another leader.

        A leader that froze (SIGSTOP, a stalled VM) keeps its connections open and answers
        nothing, so the transport neither answers nor fails the call: without this, the write
        would wait out its whole deadline although a new leader was elected within an election
        timeout. Abandoning the call is safe: the retry carries the same (client_id, seq), so
        the state machine applies the command once, whichever leader got it first.
        """
        call = asyncio.ensure_future(
            self.transport.call(leader, "propose", msgspec.msgpack.encode(cmd), timeout_s)
        )
        try:
            while not call.done():
                if self.leader != leader:
                    raise Retry(f"leader changed from node {leader} while the proposal waited")
                changed = asyncio.ensure_future(self._leader_changed.wait())
                try:
                    await asyncio.wait({call, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
            return call.result()
        finally:
            if not call.done():
                call.cancel()
                await asyncio.wait({call})

    async def _propose_here(self, cmd: Command, timeout_s: float) -> Any:
        return await self.submit(cmd, timeout_s)

    def submit(self, cmd: Command, timeout_s: float = 5.0) -> asyncio.Future:
        """Leader only: propose `cmd` now and return the future of its result.

        The future fails with `Retry` if the entry is not applied within `timeout_s` (the
        ticker sweeps deadlines: no timer per proposal) or if this node loses leadership.
        A second submit of the same (client_id, seq) while the first waits shares its future.
        """
        if self.failed is not None:
            raise Unavailable(f"raft node failed: {self.failed!r}")
        if self.role != StateRole.LEADER:
            raise NotLeader(self.leader)
        key = (cmd.client_id, cmd.seq)
        fut = self._waiters.get(key)
        if fut is None:
            stamped = msgspec.structs.replace(cmd, stamp_ms=int(time.time() * 1000))
            self.core.propose(self._encoder.encode(stamped))
            if self.metrics is not None:
                self.metrics.proposals.inc()
            fut = self._loop.create_future()
            self._waiters[key] = fut
            heapq.heappush(self._deadlines, (time.monotonic() + timeout_s, key, fut))
            self._wake.set()
        return fut

    def _sweep_deadlines(self) -> None:
        now = time.monotonic()
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            _, key, fut = heapq.heappop(dl)
            if self._waiters.get(key) is fut:  # not a newer proposal of the same (client, seq)
                del self._waiters[key]
            if not fut.done():
                fut.set_exception(Retry("proposal not applied in time"))

    async def _wait_leader(self, timeout_s: float) -> int:
        try:
            async with asyncio.timeout(timeout_s):
                while self.leader == NONE:
                    await self._leader_changed.wait()
        except TimeoutError:
            raise Unavailable("no leader") from None
        return self.leader

    async def read_index(self, timeout_s: float = 5.0) -> int:
        """An index after which a local read is linearizable (waits until it is applied).

        The request or its answer can be lost (a follower that knows no leader drops it, a
        transport backing off from a restarted peer drops it, a new leader never saw it), so
        it is asked again every election timeout until answered; the leader dedups a context
        it still holds, and an answer for a context already released is ignored. If this node
        was the leader and is deposed while the request waits, it is asked again under a new
        context — of the new leader once one is known. `Unavailable` only at the deadline
        (or if the node broke)."""
        retry_s = max(0.05, self.cfg.tick_s * self.cfg.election_ticks)
        deadline = time.monotonic() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    try:
                        index = await self._read_index_once(retry_s, deadline)
                    except Retry as e:  # deposed while it waited: ask again
                        self.read_retries += 1
                        log.debug("read index asked again: %s", e)
                        continue
                    await self.wait_applied(index)
                    return index
        except TimeoutError:
            raise Unavailable("read index not confirmed in time") from None

    async def _read_index_once(self, retry_s: float, deadline: float) -> int:
        """One ReadIndex context, asked every `retry_s` until answered; `Retry` if this
        node stops being the leader meanwhile (`_fail_all` drops every context it held)."""
        if self.failed is not None:
            raise Unavailable(f"raft node failed: {self.failed!r}")
        if self._stopping:
            raise Unavailable("raft node stopped")
        ctx = b"%d:%d" % (self.client_id, next(self._read_ids))
        fut = asyncio.get_running_loop().create_future()
        self._reads[ctx] = fut
        try:
            asked = False
            while not fut.done():
                if self.leader == NONE:
                    await self._wait_leader(max(0.0, deadline - time.monotonic()))
                if asked:
                    self.read_retries += 1
                self.core.read_index(ctx)
                asked = True
                self._wake.set()
                await asyncio.wait({fut}, timeout=retry_s)
            return fut.result()
        finally:
            self._reads.pop(ctx, None)

    async def wait_applied(self, index: int) -> None:
        async with self._applied_cond:
            await self._applied_cond.wait_for(lambda: self.core.log.applied >= index)

    async def wait_for(self, pred: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            async with self._applied_cond:
                await self._applied_cond.wait_for(pred)

    # -- membership and leadership -------------------------------------------------------------
    async def change_member(
        self, kind: ConfChangeType, node_id: int, addr: Address | None, timeout_s: float = 10.0
    ) -> None:
        """Add a learner, promote to voter, or remove a member (forwarded to the leader)."""
        if kind != ConfChangeType.REMOVE:
            self._check_can_add()
        if self.role != StateRole.LEADER:
            leader = await self._wait_leader(timeout_s)
            payload = msgspec.msgpack.encode((int(kind), node_id, addr))
            await self.transport.call(leader, "conf", payload, timeout_s)
            return
        ctx = msgspec.msgpack.encode(addr) if addr else b""
        if addr:
            self.addresses[node_id] = addr
        self.core.propose_conf_change(ConfChange(kind, node_id, ctx))
        self._wake.set()

        def applied() -> bool:
            cs = self.core.conf_state
            if kind == ConfChangeType.ADD_VOTER:
                return node_id in cs.voters
            if kind == ConfChangeType.ADD_LEARNER:
                return node_id in cs.learners
            return node_id not in cs.voters and node_id not in cs.learners

        await self.wait_for(applied, timeout_s)

    async def add_member(self, node_id: int, addr: Address, timeout_s: float = 30.0) -> None:
        """Add a member as a learner, wait until it caught up, then promote it to voter."""
        self._check_can_add()
        if self.role != StateRole.LEADER:
            # Only the leader knows how far the learner got: it runs both steps.
            leader = await self._wait_leader(timeout_s)
            payload = msgspec.msgpack.encode((node_id, addr, timeout_s))
            await self.transport.call(leader, "add_member", payload, timeout_s + 1.0)
            return
        deadline = time.monotonic() + timeout_s
        cs = self.core.conf_state
        if node_id in cs.voters:
            return  # already done (a retried call must not demote it to a learner)
        if node_id not in cs.learners:
            await self.change_member(ConfChangeType.ADD_LEARNER, node_id, addr, timeout_s)
        while True:
            if self.role == StateRole.LEADER:
                pr = self.core.status().progress.get(node_id)
                if pr is not None and pr.match + 100 >= self.core.log.last_index():
                    break
            if time.monotonic() > deadline:
                raise Unavailable(f"member {node_id} did not catch up in time")
            await asyncio.sleep(self.cfg.tick_s)
        await self.change_member(
            ConfChangeType.ADD_VOTER, node_id, addr, max(1.0, deadline - time.monotonic())
        )

    def _check_can_add(self) -> None:
        if not self.has_peer_port:
            raise NodeError(
                f"node {self.id} has no peer port (no peer TLS): it cannot add members; "
                "start it with a cluster bundle (`raftbox cluster init`)"
            )

    async def remove_member(self, node_id: int, timeout_s: float = 10.0) -> None:
        await self.change_member(ConfChangeType.REMOVE, node_id, None, timeout_s)

    async def transfer_leadership(self, to: int, timeout_s: float = 5.0) -> None:
        if self.role != StateRole.LEADER:
            leader = await self._wait_leader(timeout_s)
            await self.transport.call(leader, "transfer", msgspec.msgpack.encode(to), timeout_s)
            return
        self.core.transfer_leadership(to)
        self._wake.set()
        async with asyncio.timeout(timeout_s):
            while self.leader != to:
                await self._leader_changed.wait()

    def status(self) -> dict:
        st = self.core.status()
        return {
            "id": st.id,
            "term": st.term,
            "role": st.role.name.lower(),
            "leader": st.leader,
            "commit": st.commit,
            "applied": st.applied,
            "last_index": st.last_index,
            "voters": list(st.conf_state.voters),
            "learners": list(st.conf_state.learners),
        }
