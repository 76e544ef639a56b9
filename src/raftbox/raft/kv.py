"""raft-kv: a small replicated key-value store that exists to exercise the Raft runtime.

`raftbox raft-kv serve` runs one member: a `RaftNode` whose state machine is `KVStateMachine`,
plus a client port speaking a tiny protocol. It is what the runtime is benchmarked and tortured
with before the metadata service sits on it.

Client protocol: the same framing as the peer transport (u32 big-endian length + msgpack), one
`KVRequest` per frame, answered by one `KVResponse` with the same `id`; requests are pipelined,
answers may come out of order. Operations:

| op     | arguments                 | result                                             |
| ------ | ------------------------- | -------------------------------------------------- |
| put    | key, value                | revision (the raft index that wrote it)           |
| get    | key, stale                | value or null; linearizable unless `stale`         |
| delete | key                       | true if it existed                                 |
| cas    | key, expected, value      | [ok, current value]                                |
| status | —                         | the member's Raft status                           |
| member | action, node_id, address  | add / remove / transfer                            |

Writes carry `(client_id, seq, ack_below)` so a retried write is applied once (`sessions.py`).
Any member accepts any request; writes are forwarded to the leader by the runtime.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Callable
from typing import Any

import msgspec

from .errors import RaftError
from .messages import ConfChangeType, StateRole
from .node import NodeError, RaftNode
from .sessions import Command, SessionExpired, SessionTable
from .transport import RpcError

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_FRAME_BYTES = 8 << 20


class Put(msgspec.Struct, tag="put", array_like=True):
    key: bytes
    value: bytes


class Delete(msgspec.Struct, tag="del", array_like=True):
    key: bytes


class Cas(msgspec.Struct, tag="cas", array_like=True):
    key: bytes
    expected: bytes | None
    value: bytes


KVOp = Put | Delete | Cas


class KVRequest(msgspec.Struct, array_like=True, omit_defaults=True):
    id: int
    op: str  # put | get | del | cas | status | member
    key: bytes = b""
    value: bytes = b""
    expected: bytes | None = None
    stale: bool = False
    client_id: int = 0
    seq: int = 0
    ack_below: int = 0
    action: str = ""
    node_id: int = 0
    address: str = ""


class KVResponse(msgspec.Struct, array_like=True, omit_defaults=True):
    id: int
    ok: bool = True
    result: Any = None
    error: str = ""


class KVStateMachine:
    """A dict of bytes → bytes with exactly-once sessions. Lives in memory: after a restart it
    is rebuilt from the newest snapshot plus the log, so `applied_index()` starts at 0."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.sessions = SessionTable()
        self.applied = 0
        self._decoder = msgspec.msgpack.Decoder(KVOp)

    def applied_index(self) -> int:
        return self.applied

    def apply_noop(self, index: int) -> None:
        self.applied = index

    def apply(self, index: int, command: Command) -> Any:
        self.applied = index
        result = self.sessions.apply(command, lambda p: self._run(index, p))
        if isinstance(result, SessionExpired):
            return {"error": str(result)}
        return result

    def _run(self, index: int, payload: bytes) -> Any:
        op = self._decoder.decode(payload)
        if isinstance(op, Put):
            self.data[op.key] = op.value
            return index
        if isinstance(op, Delete):
            return self.data.pop(op.key, None) is not None
        cur = self.data.get(op.key)
        if cur == op.expected:
            self.data[op.key] = op.value
            return [True, op.value]
        return [False, cur]

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode([self.applied, self.data, self.sessions.dump()])

    def begin_snapshot(self) -> Callable[[], bytes]:
        """Pin the state now (a shallow copy: keys and values are immutable bytes, ~2 ms for
        60,000 keys) and return what encodes it later in the node's snapshot thread, to the same
        bytes as `snapshot()`. The map is encoded `_IMAGE_CHUNK_KEYS` keys at a time: one encode
        call holds the GIL throughout (~170 ms for 60 MiB), which would stall the event loop as
        surely as running it there."""
        applied, data, sessions = self.applied, dict(self.data), self.sessions.dump()
        return lambda: _encode_image(applied, data, sessions)

    def restore(self, data: bytes) -> None:
        self.applied, self.data, sessions = msgspec.msgpack.decode(
            data, type=tuple[int, dict[bytes, bytes], bytes]
        )
        self.sessions.load(sessions)


_IMAGE_CHUNK_KEYS = 1024


def _map_header(n: int) -> bytes:
    """The msgpack header of a map of `n` pairs, as msgspec writes it (smallest form)."""
    if n < 16:
        return bytes([0x80 | n])
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


def _encode_image(applied: int, data: dict[bytes, bytes], sessions: bytes) -> bytes:
    """msgpack of `[applied, data, sessions]`, byte for byte, encoded a chunk of keys at a time
    so that other threads get the GIL in between (see `KVStateMachine.begin_snapshot`)."""
    enc = msgspec.msgpack.encode
    parts = [b"\x93", enc(applied), _map_header(len(data))]
    items = iter(data.items())
    while chunk := dict(itertools.islice(items, _IMAGE_CHUNK_KEYS)):
        body = enc(chunk)
        parts.append(body[len(_map_header(len(chunk))) :])
    parts.append(enc(sessions))
    return b"".join(parts)


class KVServer:
    """The client port of one raft-kv member."""

    def __init__(self, node: RaftNode, sm: KVStateMachine, listen: tuple[str, int]) -> None:
        self.node = node
        self.sm = sm
        self.listen = listen
        self._server: asyncio.base_events.Server | None = None
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(KVRequest)
        self._conns: set[asyncio.Task] = set()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, *self.listen)
        return self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        inflight: set[asyncio.Task] = set()
        out = _Output(writer)
        try:
            while True:
                head = await reader.readexactly(4)
                (n,) = _LEN.unpack(head)
                if n > MAX_FRAME_BYTES:
                    log.warning("client frame of %d bytes refused", n)
                    return
                req = self._dec.decode(await reader.readexactly(n))
                if self._fast_write(req, out):
                    continue
                t = asyncio.create_task(self._answer(req, out))
                inflight.add(t)
                t.add_done_callback(inflight.discard)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the server is closing
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("bad client frame, closing the connection: %s", e)
        finally:
            for t in inflight:
                t.cancel()
            writer.close()
            self._conns.discard(task)

    def _fast_write(self, req: KVRequest, out: _Output) -> bool:
        """On the leader, a write needs no task: propose now, answer from the future's callback."""
        if req.op != "put" or not req.client_id or self.node.role != StateRole.LEADER:
            return False
        cmd = Command(
            req.client_id, req.seq, req.ack_below, 0, self._enc.encode(Put(req.key, req.value))
        )
        try:
            fut = self.node.submit(cmd)
        except (NodeError, RaftError):
            return False

        def done(f: asyncio.Future) -> None:
            if f.cancelled():
                return
            e = f.exception()
            if e is None:
                resp = _result_response(req.id, f.result())
            else:
                resp = KVResponse(req.id, ok=False, error=f"{type(e).__name__}: {e}")
            out.send(self._enc.encode(resp))

        fut.add_done_callback(done)
        return True

    async def _answer(self, req: KVRequest, out: _Output) -> None:
        try:
            resp = _result_response(req.id, await self._execute(req))
        except (NodeError, RaftError, RpcError, TimeoutError, ValueError) as e:
            resp = KVResponse(req.id, ok=False, error=f"{type(e).__name__}: {e}")
        out.send(self._enc.encode(resp))

    async def _execute(self, req: KVRequest) -> Any:
        node = self.node
        if req.op == "get":
            if not req.stale:
                await node.read_index()
            return self.sm.data.get(req.key)
        if req.op in ("put", "del", "cas"):
            if req.op == "put":
                op: KVOp = Put(req.key, req.value)
            elif req.op == "del":
                op = Delete(req.key)
            else:
                op = Cas(req.key, req.expected, req.value)
            payload = msgspec.msgpack.encode(op)
            if req.client_id:
                cmd = Command(req.client_id, req.seq, req.ack_below, 0, payload)
            else:
                cmd = node.new_command(payload)
            return await node.propose(cmd)
        if req.op == "status":
            return node.status()
        if req.op == "member":
            if req.action == "add":
                host, _, port = req.address.rpartition(":")
                await node.add_member(req.node_id, (host, int(port)))
            elif req.action == "remove":
                await node.remove_member(req.node_id)
            elif req.action == "transfer":
                await node.transfer_leadership(req.node_id)
            elif req.action == "learner":
                host, _, port = req.address.rpartition(":")
                await node.change_member(ConfChangeType.ADD_LEARNER, req.node_id, (host, int(port)))
            else:
                raise ValueError(f"unknown member action {req.action!r}")
            return node.status()
        raise ValueError(f"unknown op {req.op!r}")


def _result_response(req_id: int, result: Any) -> KVResponse:
    """A write the session table refused (`KVStateMachine.apply` returns `{"error": ...}`) was
    not applied: answer it as an error, never as a successful write."""
    if isinstance(result, dict) and "error" in result:
        return KVResponse(req_id, ok=False, error=f"SessionExpired: {result['error']}")
    return KVResponse(req_id, result=result)


class _Output:
    """Answers for one connection, coalesced into one socket write per loop iteration."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.buf: list[bytes] = []

    def send(self, payload: bytes) -> None:
        if not self.buf:
            asyncio.get_running_loop().call_soon(self._flush)
        self.buf.append(_LEN.pack(len(payload)))
        self.buf.append(payload)

    def _flush(self) -> None:
        data, self.buf = b"".join(self.buf), []
        if not self.writer.is_closing():
            self.writer.write(data)
