"""The peer transport: Raft messages and internal RPCs between members, over asyncio TCP (+TLS).

Theory of operation
-------------------
Every member listens on one peer address and dials one outbound connection to each peer it
knows. A connection carries traffic one way for Raft: A's messages to B travel on the connection
A dialed, B's messages to A on the connection B dialed (etcd does the same). RPCs ride on the
caller's outbound connection; the answer comes back on that same connection.

`send(msg)` never waits: it appends to the peer's bounded queue and wakes the peer's writer.
The writer takes *everything* queued and writes it as one `RaftBatch` frame, then awaits
`drain()` once, so throughput is bought with batching instead of per-message awaits. A full queue
drops the message and counts it: Raft tolerates loss and resends, and a sender that blocks on a
slow peer would stall the whole node.

Outbound connection state, one per peer (`PeerState`)::

    IDLE --something to send--> CONNECTING --dialed--> CONNECTED
      ^                            |                       |
      |                      dial failed             EOF, error, bad frame
      |                            v                       v
      +------- delay over ------ BACKOFF <------------------+

Connections are dialed lazily (only when there is something to send). Entering BACKOFF drops
what is queued, fails the peer's pending RPCs with `PeerUnreachable` and calls
`on_unreachable(peer_id)` so the Raft core can probe that follower instead of pipelining to it.
While in BACKOFF, `send` drops and `call` fails at once. The delay grows exponentially from
`backoff_min_s` to `backoff_max_s` with jitter (from the `rng` passed in), and starts over once a
connection got as far as the peer's Hello. The address dialed is the *advertised* address from the
peers map, which may be a proxy in front of the peer's real listen address.

Forgetting a peer: `remove_peer` drops it at once (its queue, its pending calls, its connection).
`retire_peer` is the gentle way, for a member removed from the cluster: from then on nothing new
goes to it (sends are dropped and counted as unknown, new calls fail with `UnknownPeer`), but the
calls already in flight keep their connection — an answer travels back on the connection the call
went out on — and the peer is removed like `remove_peer` as soon as the last of them is answered,
fails or times out. Either way it is never dialed again unless `set_peer` adds it back (which also
cancels a retirement still waiting for its calls).

Authentication (`tls=PeerTLS`, see `raftbox.tls`): both ends run TLS 1.3 with certificates of the
cluster CA, and a member is who its certificate says. The listener refuses a connection without
a client certificate of the CA (the handshake fails), and one whose certificate does not name,
for this cluster, the member id its `Hello` claims: it is closed, logged once at warning, and
nothing after the Hello is decoded. The dialer checks that the listener's certificate names the
member it meant to dial before it sends anything. Host names are never checked: addresses may be
proxies that pass TLS through. Without `tls` (or with the bare `ssl_server`/`ssl_client`
contexts, which verify the CA but no member id) the transport trusts what the Hello says: that is
for in-process tests only — `RaftNode` does not open a peer listener without `PeerTLS`.
`listen=None` opens no listener at all (a node that only dials, or none of either).

Inbound connections are trusted with nothing: the first frame must be a valid `Hello` within
`hello_timeout_s`; a frame whose length prefix exceeds `max_frame_bytes` is refused before its body
is read (nothing is allocated from an unchecked length); an undecodable or unexpected frame closes
that connection with a logged warning. The server and other connections carry on.

Wire format
-----------
A connection is a sequence of frames, both directions::

    +-------------------------+-----------------------------+
    | length: u32 big-endian  | payload: `length` bytes     |
    +-------------------------+-----------------------------+

    0 <= length <= max_frame_bytes (of the receiver)

The payload is one msgpack-encoded envelope, an array whose first element is the tag:

    [1, node_id, cluster_id, version]          Hello        first frame, each way
    [2, [message, ...]]                        RaftBatch    raft messages (messages.Message)
    [3, id, method, payload]                   RpcRequest   dialer -> listener
    [4, id, ok, payload, error_type, error]    RpcResponse  listener -> dialer

The dialer writes its Hello and goes on writing without waiting; the listener answers with its
own Hello, which the dialer checks (right node id, same cluster) before it trusts any answer.

Contract
--------
* Per peer, messages arrive in the order they were sent; any may be lost, none is duplicated.
* A batch too big for one frame is split; a single message over `max_frame_bytes` is dropped.
  Members must agree on `max_frame_bytes`: a receiver closes a connection that exceeds its own.
* `on_messages(list[Message])` and `on_unreachable(peer_id)` are called on the event loop and must
  not block. An exception from them is a bug: it stops the transport (and `close()` re-raises it).
* `rpc_handler(method, payload) -> bytes` runs as a task per request; whatever it raises is sent
  back and raised by the caller as `RemoteRpcError`.
* Every task lives in the transport's TaskGroup; `close()` cancels and waits for all of them and
  closes every socket.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import random
import socket
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from ..tls import PeerTLS
from .messages import Message

log = logging.getLogger(__name__)

WIRE_VERSION = 1
_LEN = struct.Struct(">I")
_READ_BUFFER_BYTES = 256 * 1024  # StreamReader pauses the socket above twice this
_OVERLOADED = "raftbox.Overloaded"  # error_type of an RpcResponse refused for load

Address = tuple[str, int]
OnMessages = Callable[[list[Message]], None]
OnUnreachable = Callable[[int], None]
RpcHandler = Callable[[str, bytes], Awaitable[bytes]]


# --- the envelope -------------------------------------------------------------------------------


class Hello(msgspec.Struct, frozen=True, array_like=True, tag=1):
    """Who is at this end of the connection; the first frame each way."""

    node_id: int
    cluster_id: str = ""
    version: int = WIRE_VERSION


class RaftBatch(msgspec.Struct, frozen=True, array_like=True, tag=2):
    messages: list[Message]


class RpcRequest(msgspec.Struct, frozen=True, array_like=True, tag=3):
    id: int
    method: str
    payload: bytes


class RpcResponse(msgspec.Struct, frozen=True, array_like=True, tag=4):
    id: int
    ok: bool
    payload: bytes = b""
    error_type: str = ""
    error: str = ""


Envelope = Hello | RaftBatch | RpcRequest | RpcResponse


# --- errors -------------------------------------------------------------------------------------


class TransportError(Exception):
    """Base of everything the transport raises."""


class TransportClosed(TransportError):
    """The local transport is closed (or was never started); retrying will not help."""


class RpcError(TransportError):
    """A `call` failed."""


class UnknownPeer(RpcError):
    """Local fault: the peer id is not in the peers map. Retry after `set_peer`."""


class PeerUnreachable(RpcError):
    """Could not connect, or the connection dropped before the answer; the request may or may
    not have run. Retrying later may help."""


class RpcTimeout(RpcError, TimeoutError):
    """No answer within the timeout; the request may or may not have run."""


class RpcOverloaded(RpcError):
    """Too many calls in flight (locally, or at the remote). Retry later."""


class RpcTooLarge(RpcError):
    """Local fault: the request does not fit in one frame (`max_frame_bytes`)."""


class RemoteRpcError(RpcError):
    """The remote handler raised; `error_type` is its exception's class name."""

    def __init__(self, method: str, error_type: str, error: str) -> None:
        super().__init__(f"rpc {method!r} failed remotely: {error_type}: {error}")
        self.method = method
        self.error_type = error_type
        self.error = error


class _FrameError(Exception):
    """The remote broke the wire protocol; the connection is closed."""


# --- state and stats ----------------------------------------------------------------------------


class PeerState(enum.Enum):
    IDLE = "idle"  # no connection, nothing to send
    CONNECTING = "connecting"  # dialing (TCP + TLS handshake); sends queue up
    CONNECTED = "connected"  # the writer drains the queue
    BACKOFF = "backoff"  # the last dial or connection failed; sends drop until the delay ends


@dataclass(frozen=True, slots=True)
class PeerStats:
    addr: Address
    state: PeerState
    queued_msgs: int
    sent_msgs: int
    sent_frames: int
    dropped_msgs: int  # queue full, in BACKOFF, lost with a connection, or larger than a frame
    connects: int
    dial_failures: int
    pending_calls: int
    retiring: bool = False  # retire_peer was called: removed once its calls in flight end


@dataclass(frozen=True, slots=True)
class TransportStats:
    peers: dict[int, PeerStats]
    inbound_conns: int
    inbound_rejected: int  # inbound connections closed for breaking the protocol
    dropped_unknown_msgs: int  # sent to a peer not in the peers map, or after close()


class Transport(Protocol):
    """What the Raft runtime needs from a transport (an in-memory one can stand in)."""

    def send(self, msg: Message) -> bool: ...

    def set_peer(self, peer_id: int, addr: Address) -> None: ...

    def remove_peer(self, peer_id: int) -> None: ...

    def retire_peer(self, peer_id: int) -> None: ...

    async def call(self, peer_id: int, method: str, payload: bytes, timeout_s: float) -> bytes: ...


class _Peer:
    __slots__ = (
        "id",
        "addr",
        "state",
        "queue",
        "rpc_out",
        "pending",
        "wake",
        "task",
        "hello_ok",
        "sent_msgs",
        "sent_frames",
        "dropped_msgs",
        "connects",
        "dial_failures",
        "writer",
        "draining",
        "retiring",
    )

    def __init__(self, peer_id: int, addr: Address) -> None:
        self.id = peer_id
        self.addr = addr
        self.state = PeerState.IDLE
        self.queue: deque[Message] = deque()
        self.rpc_out: deque[tuple[int, bytearray]] = deque()  # (rpc id, encoded frame)
        self.pending: dict[int, tuple[str, asyncio.Future[bytes]]] = {}  # id -> (method, answer)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.hello_ok = False  # the current connection has seen the peer's Hello
        self.writer: asyncio.StreamWriter | None = None  # set while CONNECTED
        self.draining = False  # the writer task is waiting for the socket buffer to drain
        self.retiring = False  # retire_peer: nothing new; removed when `pending` is empty
        self.sent_msgs = 0
        self.sent_frames = 0
        self.dropped_msgs = 0
        self.connects = 0
        self.dial_failures = 0

    def has_work(self) -> bool:
        return bool(self.queue or self.rpc_out)

    def fail_calls(self, exc: TransportError) -> None:
        for _, fut in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pending.clear()
        self.rpc_out.clear()


_CONN_ERRORS = (OSError, EOFError, TimeoutError, _FrameError)  # EOFError: IncompleteReadError


# --- the transport ------------------------------------------------------------------------------


class PeerTransport:
    """Raft messages and RPCs to and from the peers of one node. See the module docstring."""

    def __init__(
        self,
        node_id: int,
        listen: Address | None,
        peers: dict[int, Address] | None = None,
        *,
        on_messages: OnMessages,
        on_unreachable: OnUnreachable | None = None,
        rpc_handler: RpcHandler | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        tls: PeerTLS | None = None,
        cluster_id: str = "",
        max_frame_bytes: int = 16 * 1024 * 1024,
        send_queue_max_msgs: int = 4096,
        rpc_max_inflight_calls: int = 1024,
        rpc_max_serving_calls: int = 256,
        max_inbound_conns: int = 256,
        connect_timeout_s: float = 2.0,
        hello_timeout_s: float = 5.0,
        close_timeout_s: float = 1.0,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 2.0,
        frame_body_timeout_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")
        if max_frame_bytes < 1024 or send_queue_max_msgs < 1:
            raise ValueError("max_frame_bytes must be >= 1024 and send_queue_max_msgs >= 1")
        self.node_id = node_id
        self._listen = listen
        self._on_messages = on_messages
        self._on_unreachable = on_unreachable
        self._rpc_handler = rpc_handler
        if tls is not None:
            if (
                ssl_server is not None
                or ssl_client is not None
                or cluster_id not in ("", tls.cluster_id)
            ):
                raise ValueError(
                    "give tls=PeerTLS, or bare ssl contexts and a cluster id, not both"
                )
            ssl_server, ssl_client, cluster_id = tls.server, tls.client, tls.cluster_id
        self._tls = tls
        self._ssl_server = ssl_server
        self._ssl_client = ssl_client
        self._cluster_id = cluster_id
        self._max_frame_bytes = max_frame_bytes
        self._send_queue_max_msgs = send_queue_max_msgs
        self._rpc_max_inflight_calls = rpc_max_inflight_calls
        self._rpc_max_serving_calls = rpc_max_serving_calls
        self._max_inbound_conns = max_inbound_conns
        self._connect_timeout_s = connect_timeout_s
        self._hello_timeout_s = hello_timeout_s
        self._close_timeout_s = close_timeout_s
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._frame_body_timeout_s = frame_body_timeout_s
        self._rng = rng or random.Random()

        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Envelope)
        self._hello_frame = self._frame(Hello(node_id, cluster_id))
        self._rpc_ids = itertools.count(1)
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._listen_addr: Address | None = None
        self._closing = False
        self._inbound_conns = 0
        self._inbound_rejected = 0
        self._dropped_unknown_msgs = 0
        self._peers: dict[int, _Peer] = {}
        for pid, addr in (peers or {}).items():
            self.set_peer(pid, addr)

    # -- lifecycle

    async def start(self) -> None:
        """Bind the listen address and start serving; raises OSError if the bind fails."""
        if self._runner is not None:
            raise RuntimeError("PeerTransport.start() called twice")
        started = self._started = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(started), name=f"transport-{self.node_id}")
        self._runner.add_done_callback(self._runner_done)
        try:
            await started
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop: fail pending calls, cancel every task, close every socket, and wait for it."""
        self._closing = True
        for peer in self._peers.values():
            peer.fail_calls(TransportClosed(f"transport of node {self.node_id} closed"))
        runner = self._runner
        if runner is None:
            return
        runner.cancel()
        await asyncio.wait([runner])
        if self._started is not None and not self._started.done():  # cancelled before it ran
            self._started.set_exception(TransportClosed("closed while starting"))
        if not runner.cancelled() and runner.exception() is not None:
            raise runner.exception()  # type: ignore[misc]

    def _runner_done(self, runner: asyncio.Task[None]) -> None:
        if not runner.cancelled() and runner.exception() is not None:
            log.error(
                "node %d: transport stopped by a bug", self.node_id, exc_info=runner.exception()
            )

    async def __aenter__(self) -> PeerTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def listen_addr(self) -> Address:
        """The bound (host, port); with port 0 asked for, the port the OS chose."""
        if self._listen_addr is None:
            raise TransportClosed("not started" if self._listen else "not listening (listen=None)")
        return self._listen_addr

    async def _run(self, started: asyncio.Future[None]) -> None:
        try:
            if self._listen is None:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    for peer in self._peers.values():
                        self._start_peer(peer)
                    started.set_result(None)
                    await asyncio.Future()  # until close() cancels us
                return
            try:
                server = await asyncio.start_server(
                    self._accept,
                    self._listen[0],
                    self._listen[1],
                    ssl=self._ssl_server,
                    ssl_handshake_timeout=self._connect_timeout_s if self._ssl_server else None,
                    limit=_READ_BUFFER_BYTES,
                    start_serving=False,  # not before the TaskGroup exists
                )
            except OSError as e:
                started.set_exception(e)
                return
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    await server.start_serving()
                    self._listen_addr = server.sockets[0].getsockname()[:2]
                    for peer in self._peers.values():
                        self._start_peer(peer)
                    started.set_result(None)
                    await asyncio.Future()  # until close() cancels us
            finally:
                server.close()
        finally:
            if not started.done():  # closed while starting
                started.set_exception(TransportClosed("closed while starting"))

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """A task in the transport's TaskGroup, or None once it is shutting down."""
        if self._tg is None or self._closing:
            coro.close()
            return None
        try:
            return self._tg.create_task(coro, name=name)
        except RuntimeError:  # the group is shutting down
            coro.close()
            return None

    # -- membership

    def set_peer(self, peer_id: int, addr: Address) -> None:
        """Add a peer, or change its advertised address (the current connection is redialed)."""
        if peer_id == self.node_id:
            raise ValueError(f"node {peer_id} cannot be its own peer")
        addr = (addr[0], int(addr[1]))
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = _Peer(peer_id, addr)
            self._start_peer(peer)
            return
        peer.retiring = False
        if peer.addr != addr:
            peer.addr = addr
            self._stop_peer(peer, f"address of node {peer_id} changed to {addr}")
            peer.state = PeerState.IDLE
            self._start_peer(peer)

    def remove_peer(self, peer_id: int) -> None:
        """Forget a peer: its queue is dropped, its pending calls fail, its connection closes."""
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            self._stop_peer(peer, f"node {peer_id} was removed")

    def retire_peer(self, peer_id: int) -> None:
        """Forget a peer once the calls in flight to it have ended (see the module docstring):
        sends to it are dropped from now on and new calls fail with `UnknownPeer`."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return
        peer.retiring = True
        peer.dropped_msgs += len(peer.queue)
        peer.queue.clear()
        self._remove_if_retired(peer)

    def has_peer(self, peer_id: int) -> bool:
        """Whether `peer_id` is a peer (a retiring one still is, until its calls end)."""
        return peer_id in self._peers

    def _remove_if_retired(self, peer: _Peer) -> None:
        if peer.retiring and not peer.pending and self._peers.get(peer.id) is peer:
            self.remove_peer(peer.id)

    def _start_peer(self, peer: _Peer) -> None:
        peer.task = self._spawn(self._run_peer(peer), name=f"peer-{self.node_id}->{peer.id}")

    def _stop_peer(self, peer: _Peer, reason: str) -> None:
        if peer.task is not None:
            peer.task.cancel()
            peer.task = None
        peer.fail_calls(PeerUnreachable(reason))

    # -- sending

    def send(self, msg: Message) -> bool:
        """Queue `msg` for `msg.to` without waiting; False if it was dropped (and counted)."""
        peer = self._peers.get(msg.to)
        if peer is None or peer.retiring or self._closing:
            self._dropped_unknown_msgs += 1
            return False
        if peer.state is PeerState.BACKOFF or len(peer.queue) >= self._send_queue_max_msgs:
            peer.dropped_msgs += 1
            return False
        peer.queue.append(msg)
        peer.wake.set()
        return True

    def flush(self) -> None:
        """Write what is queued now, on this turn of the loop, to every connected peer whose
        socket is not backed up (the writer task handles the rest). A caller that has just
        sent a Ready's messages saves a loop iteration per peer: latency, not throughput."""
        for peer in self._peers.values():
            w = peer.writer
            if not peer.queue or w is None or peer.draining or w.is_closing():
                continue
            msgs = list(peer.queue)
            peer.queue.clear()
            frames: list[bytearray] = []
            self._batch_frames(peer, msgs, frames)
            try:
                for frame in frames:
                    _write(w, frame)
            except ConnectionError:
                peer.wake.set()  # the writer task sees the broken connection and backs off
                continue
            peer.sent_frames += len(frames)
            if w.transport.get_write_buffer_size() > 0:
                peer.wake.set()  # let the writer task drain it

    async def call(self, peer_id: int, method: str, payload: bytes, timeout_s: float) -> bytes:
        """Run `method` on the peer's rpc_handler and return its answer.

        Raises UnknownPeer, PeerUnreachable, RpcTimeout, RpcOverloaded, RpcTooLarge,
        RemoteRpcError or TransportClosed.
        """
        if self._closing or self._runner is None:
            raise TransportClosed(f"transport of node {self.node_id} is not running")
        peer = self._peers.get(peer_id)
        if peer is None or peer.retiring:
            raise UnknownPeer(f"node {peer_id} is not a peer of node {self.node_id}")
        if peer.state is PeerState.BACKOFF:
            raise PeerUnreachable(f"node {peer_id} at {peer.addr} is unreachable (backing off)")
        if len(peer.pending) >= self._rpc_max_inflight_calls:
            raise RpcOverloaded(f"{len(peer.pending)} calls in flight to node {peer_id}")
        rid = next(self._rpc_ids)
        frame = self._frame(RpcRequest(rid, method, payload))
        if len(frame) - 4 > self._max_frame_bytes:
            raise RpcTooLarge(f"rpc {method!r} of {len(frame) - 4} bytes > max_frame_bytes")
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        peer.pending[rid] = (method, fut)
        peer.rpc_out.append((rid, frame))
        peer.wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            raise RpcTimeout(
                f"rpc {method!r} to node {peer_id}: no answer in {timeout_s}s"
            ) from None
        finally:
            if peer.pending.pop(rid, None) is not None:
                for i, (queued_id, _) in enumerate(peer.rpc_out):
                    if queued_id == rid:  # never written: it will not run
                        del peer.rpc_out[i]
                        break
            self._remove_if_retired(peer)

    # -- stats

    def stats(self) -> TransportStats:
        peers = {
            p.id: PeerStats(
                addr=p.addr,
                state=p.state,
                queued_msgs=len(p.queue),
                sent_msgs=p.sent_msgs,
                sent_frames=p.sent_frames,
                dropped_msgs=p.dropped_msgs,
                connects=p.connects,
                dial_failures=p.dial_failures,
                pending_calls=len(p.pending),
                retiring=p.retiring,
            )
            for p in self._peers.values()
        }
        return TransportStats(
            peers, self._inbound_conns, self._inbound_rejected, self._dropped_unknown_msgs
        )

    # -- framing

    def _frame(self, env: Envelope) -> bytearray:
        buf = bytearray(4)
        self._encoder.encode_into(env, buf, 4)
        _LEN.pack_into(buf, 0, len(buf) - 4)
        return buf

    def _batch_frames(self, peer: _Peer, msgs: list[Message], out: list[bytearray]) -> None:
        """Append frames carrying `msgs`, in order, to `out`: one frame if it fits.

        Otherwise the batch is cut by an estimate of each message's size into parts of about
        half `max_frame_bytes` (estimating costs as much as encoding, so only then); a message
        alone over `max_frame_bytes` is dropped.
        """
        frame = self._frame(RaftBatch(msgs))
        if len(frame) - 4 <= self._max_frame_bytes:
            out.append(frame)
            peer.sent_msgs += len(msgs)
            return
        part_bytes = self._max_frame_bytes // 2
        start, est = 0, 0
        for i, m in enumerate(msgs):
            size = _size_estimate(m)
            if est + size > part_bytes and i > start:
                self._encode_batch(peer, msgs[start:i], out)
                start, est = i, 0
            est += size
        self._encode_batch(peer, msgs[start:], out)

    def _encode_batch(self, peer: _Peer, msgs: list[Message], out: list[bytearray]) -> None:
        frame = self._frame(RaftBatch(msgs))
        if len(frame) - 4 <= self._max_frame_bytes:
            out.append(frame)
            peer.sent_msgs += len(msgs)
        elif len(msgs) == 1:
            peer.dropped_msgs += 1
            log.warning(
                "node %d: dropped a %s to node %d of %d bytes > max_frame_bytes=%d",
                self.node_id,
                msgs[0].type.name,
                peer.id,
                len(frame) - 4,
                self._max_frame_bytes,
            )
        else:  # the estimate was off: halve
            mid = len(msgs) // 2
            self._encode_batch(peer, msgs[:mid], out)
            self._encode_batch(peer, msgs[mid:], out)

    async def _read_envelope(self, reader: asyncio.StreamReader) -> Envelope:
        (length,) = _LEN.unpack(await reader.readexactly(4))
        if length > self._max_frame_bytes:
            raise _FrameError(f"frame length {length} > max_frame_bytes={self._max_frame_bytes}")
        try:
            # Once a frame has started, its body must follow promptly: a peer that sends half
            # a frame and stops must not hold a connection slot forever.
            async with asyncio.timeout(self._frame_body_timeout_s):
                body = await reader.readexactly(length)
        except TimeoutError:
            raise _FrameError(
                f"frame body of {length} bytes not received within {self._frame_body_timeout_s}s"
            ) from None
        try:
            return self._decoder.decode(body)
        except msgspec.DecodeError as e:
            raise _FrameError(f"undecodable frame of {length} bytes: {e}") from None

    def _check_hello(self, env: Envelope, expect_node: int | None) -> Hello:
        if type(env) is not Hello:
            raise _FrameError(f"expected Hello first, got {type(env).__name__}")
        if env.version != WIRE_VERSION:
            raise _FrameError(f"wire version {env.version}, we speak {WIRE_VERSION}")
        if self._cluster_id and env.cluster_id != self._cluster_id:
            raise _FrameError(f"cluster {env.cluster_id!r}, we are {self._cluster_id!r}")
        if expect_node is not None and env.node_id != expect_node:
            raise _FrameError(f"expected node {expect_node}, found node {env.node_id}")
        return env

    # -- outbound

    def _backoff_s(self, failures: int) -> float:
        base = min(self._backoff_max_s, self._backoff_min_s * 2 ** min(failures, 30))
        return base * (0.5 + 0.5 * self._rng.random())

    async def _run_peer(self, peer: _Peer) -> None:
        failures = 0
        while True:
            peer.state = PeerState.IDLE
            while not peer.has_work():
                peer.wake.clear()
                await peer.wake.wait()
            peer.state = PeerState.CONNECTING
            addr = peer.addr
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        addr[0],
                        addr[1],
                        ssl=self._ssl_client,
                        ssl_handshake_timeout=self._connect_timeout_s if self._ssl_client else None,
                        limit=_READ_BUFFER_BYTES,
                    )
            except (OSError, TimeoutError) as e:
                peer.dial_failures += 1
                self._lost(
                    peer, f"dial {addr} failed: {e!r}", logging.DEBUG if failures else logging.INFO
                )
                failures += 1
            else:
                peer.connects += 1
                peer.hello_ok = False
                peer.state = PeerState.CONNECTED
                try:
                    reason = await self._run_connection(peer, reader, writer)
                finally:
                    await self._close_writer(writer)
                failures = 0 if peer.hello_ok else failures + 1
                level = logging.WARNING if isinstance(reason, _FrameError) else logging.INFO
                self._lost(peer, f"connection to {addr} lost: {reason!r}", level)
            await asyncio.sleep(self._backoff_s(failures))

    def _lost(self, peer: _Peer, reason: str, level: int) -> None:
        """Enter BACKOFF: drop the queue, fail pending calls, tell the Raft core."""
        peer.state = PeerState.BACKOFF
        peer.dropped_msgs += len(peer.queue)
        peer.queue.clear()
        peer.fail_calls(PeerUnreachable(f"node {peer.id}: {reason}"))
        log.log(level, "node %d -> node %d: %s", self.node_id, peer.id, reason)
        if self._on_unreachable is not None:
            self._on_unreachable(peer.id)

    async def _run_connection(
        self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> BaseException:
        """Run the writer and the reader of one outbound connection until either ends."""
        if self._tls is not None:
            named = self._tls.member_of(writer.get_extra_info("ssl_object"))
            if named != peer.id:
                return _FrameError(f"its certificate names member {named}, not node {peer.id}")
        _set_nodelay(writer)
        _write(writer, self._hello_frame)
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(_ended_by(self._write_outbound(peer, writer))),
                tg.create_task(_ended_by(self._read_outbound(peer, reader))),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
        return next(iter(done)).result()

    async def _write_outbound(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        queue, rpc_out, wake = peer.queue, peer.rpc_out, peer.wake
        frames: list[bytearray] = []
        peer.writer = writer
        try:
            await self._write_loop(peer, writer, queue, rpc_out, wake, frames)
        finally:
            peer.writer = None
            peer.draining = False

    async def _write_loop(self, peer, writer, queue, rpc_out, wake, frames) -> None:
        while True:
            if not queue and not rpc_out:
                wake.clear()
                await wake.wait()
                continue
            while rpc_out:
                _write(writer, rpc_out.popleft()[1])
            if queue:
                msgs = list(queue)
                queue.clear()
                self._batch_frames(peer, msgs, frames)
                for frame in frames:
                    _write(writer, frame)
                peer.sent_frames += len(frames)
                frames.clear()
            peer.draining = True
            await writer.drain()
            peer.draining = False

    async def _read_outbound(self, peer: _Peer, reader: asyncio.StreamReader) -> None:
        self._check_hello(await self._read_envelope(reader), peer.id)
        peer.hello_ok = True
        while True:
            env = await self._read_envelope(reader)
            if type(env) is not RpcResponse:
                raise _FrameError(f"unexpected {type(env).__name__} from the listener")
            call = peer.pending.pop(env.id, None)
            if call is None or call[1].done():
                continue  # the caller timed out or went away
            method, fut = call
            if env.ok:
                fut.set_result(env.payload)
            elif env.error_type == _OVERLOADED:
                fut.set_exception(RpcOverloaded(f"node {peer.id}: {env.error}"))
            else:
                fut.set_exception(RemoteRpcError(method, env.error_type, env.error))

    # -- inbound

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine, so that the connection's task is ours.
        if self._inbound_conns >= self._max_inbound_conns:
            log.warning(
                "node %d: refusing %s: max_inbound_conns=%d reached",
                self.node_id,
                writer.get_extra_info("peername"),
                self._max_inbound_conns,
            )
            writer.transport.abort()
            return
        self._inbound_conns += 1
        if self._spawn(self._serve_inbound(reader, writer), name="inbound") is None:
            self._inbound_conns -= 1
            writer.transport.abort()

    async def _serve_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        who = writer.get_extra_info("peername")
        handlers: set[asyncio.Task[None]] = set()
        try:
            _set_nodelay(writer)
            async with asyncio.timeout(self._hello_timeout_s):
                hello = self._check_hello(await self._read_envelope(reader), None)
            if self._tls is not None:
                named = self._tls.member_of(writer.get_extra_info("ssl_object"))
                if named != hello.node_id:
                    raise _FrameError(
                        f"Hello claims node {hello.node_id}, its certificate names member {named}"
                    )
            who = f"node {hello.node_id} at {who}"
            _write(writer, self._hello_frame)
            while True:
                env = await self._read_envelope(reader)
                if type(env) is RaftBatch:
                    if env.messages:
                        self._on_messages(env.messages)
                elif type(env) is RpcRequest:
                    if len(handlers) >= self._rpc_max_serving_calls:
                        msg = f"{len(handlers)} calls running"
                        _write(
                            writer, self._frame(RpcResponse(env.id, False, b"", _OVERLOADED, msg))
                        )
                        continue
                    task = self._spawn(self._answer(writer, env), name=f"rpc-{env.method}")
                    if task is not None:
                        handlers.add(task)
                        task.add_done_callback(handlers.discard)
                else:
                    raise _FrameError(f"unexpected {type(env).__name__} from the dialer")
        except _FrameError as e:
            self._inbound_rejected += 1
            log.warning("node %d: closing inbound connection from %s: %s", self.node_id, who, e)
        except TimeoutError:
            self._inbound_rejected += 1
            log.warning("node %d: closing inbound connection from %s: no Hello", self.node_id, who)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                self._inbound_rejected += 1
                log.warning(
                    "node %d: closing inbound connection from %s: truncated frame (%d of %s bytes)",
                    self.node_id,
                    who,
                    len(e.partial),
                    e.expected,
                )
            else:
                log.debug("node %d: inbound connection from %s closed", self.node_id, who)
        except OSError as e:
            log.info("node %d: inbound connection from %s failed: %r", self.node_id, who, e)
        finally:
            for task in handlers:
                task.cancel()
            self._inbound_conns -= 1
            await self._close_writer(writer)

    async def _answer(self, writer: asyncio.StreamWriter, req: RpcRequest) -> None:
        try:
            if self._rpc_handler is None:
                raise LookupError(f"node {self.node_id} serves no rpcs")
            result = await self._rpc_handler(req.method, req.payload)
            if not isinstance(result, bytes | bytearray | memoryview):
                raise TypeError(f"rpc handler returned {type(result).__name__}, not bytes")
            frame = self._frame(RpcResponse(req.id, True, bytes(result)))
            if len(frame) - 4 > self._max_frame_bytes:
                raise ValueError(f"answer of {len(frame) - 4} bytes > max_frame_bytes")
        except Exception as e:  # the caller gets it as RemoteRpcError
            log.debug("node %d: rpc %r failed: %r", self.node_id, req.method, e)
            frame = self._frame(RpcResponse(req.id, False, b"", type(e).__name__, str(e)))
        try:
            _write(writer, frame)
            await writer.drain()
        except OSError:
            pass  # the reader sees the same failure and closes the connection

    async def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            writer.transport.abort()


async def _ended_by(coro: Coroutine[Any, Any, None]) -> BaseException:
    """Run a connection loop, which only ends by raising; return what ended it."""
    try:
        await coro
    except _CONN_ERRORS as e:
        return e
    raise AssertionError("a connection loop returned")


def _size_estimate(m: Message) -> int:
    """About the encoded size of `m`, in bytes, without encoding it."""
    size = 48 + len(m.data) + len(m.context)
    for e in m.entries:
        size += 24 + len(e.data)
    return size


def _write(writer: asyncio.StreamWriter, data: bytes | bytearray) -> None:
    """Write, or raise ConnectionResetError if the connection is already gone.

    asyncio ignores a write to a closed transport but uvloop raises RuntimeError, and a transport
    can close between two writes (a send error closes it at once); both become a connection error.
    """
    if writer.transport.is_closing():
        raise ConnectionResetError("connection closed")
    try:
        writer.write(data)
    except RuntimeError as e:  # uvloop: "unable to perform operation ... the handler is closed"
        raise ConnectionResetError(str(e)) from e


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
