"""An asyncio client for raft-kv: pipelined requests over one connection, exactly-once writes.

`KVClient(endpoints)` connects to one member (trying the others in turn), sends requests without
waiting for earlier answers, and matches answers by id. Writes carry `(client_id, seq,
ack_below)`; when a write fails with a retryable error or the connection drops, the client
retries the *same* seq on another member, so the write is applied at most once and the answer is
the first application's result.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import msgspec

from .kv import _LEN, MAX_FRAME_BYTES, KVRequest, KVResponse

_RETRYABLE = ("Retry", "Unavailable", "NotLeader", "ProposalDropped", "RpcError", "PeerUnreachable")


class KVError(Exception):
    pass


class _Conn:
    """One connection to one member, and the requests waiting for an answer on it.

    Requests made in the same turn of the event loop go out in one socket write (`send`), as
    the server coalesces its answers: one system call per request cost the client and the
    member more CPU than the request itself under load."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: dict[int, asyncio.Future] = {}
        self.retired = False  # new requests go elsewhere; close once nothing waits
        self._out: list[bytes] = []

    def send(self, frame: bytes) -> None:
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(frame)

    def _flush(self) -> None:
        data, self._out = b"".join(self._out), []
        if not self.writer.is_closing():
            self.writer.write(data)


class KVClient:
    def __init__(
        self, endpoints: list[tuple[str, int]], timeout_s: float = 10.0, client_id: int = 0
    ) -> None:
        if not endpoints:
            raise ValueError("need at least one endpoint")
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.client_id = client_id or (int.from_bytes(os.urandom(8), "big") >> 1) | 1
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._pending_seqs: set[int] = set()
        # Until a write succeeded, the state machine may not know this client: a failed write
        # stays in _pending_seqs, so ack_below stays 1 and the first write that gets through
        # opens the session (sessions.py refuses an unknown client whose ack_below > 1).
        self._session_open = False
        self._failed_before_open: set[int] = set()
        self._conn: _Conn | None = None
        self._readers: set[asyncio.Task] = set()
        self._ep = 0
        self._connect_lock = asyncio.Lock()
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(KVResponse)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.writer.close()
        for task in list(self._readers):
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def __aenter__(self) -> KVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect(self) -> _Conn:
        async with self._connect_lock:
            if self._conn is not None and not self._conn.writer.is_closing():
                return self._conn
            last: Exception | None = None
            for _ in range(len(self.endpoints)):
                host, port = self.endpoints[self._ep % len(self.endpoints)]
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port), timeout=2.0
                    )
                except (OSError, TimeoutError) as e:
                    last = e
                    self._ep += 1
                    continue
                conn = self._conn = _Conn(writer)
                task = asyncio.create_task(self._read(reader, conn))
                self._readers.add(task)
                task.add_done_callback(self._readers.discard)
                return conn
            raise KVError(f"no endpoint reachable: {last}")

    async def _read(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        """Answer the requests of one connection; when it ends, fail only *its* requests (a
        newer connection may already carry others)."""
        try:
            while True:
                (n,) = _LEN.unpack(await reader.readexactly(4))
                if n > MAX_FRAME_BYTES:
                    raise KVError("oversized answer")
                resp = self._dec.decode(await reader.readexactly(n))
                fut = conn.waiting.pop(resp.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(resp)
        except (asyncio.IncompleteReadError, ConnectionError, KVError, msgspec.DecodeError):
            pass
        finally:
            if self._conn is conn:
                self._conn = None
            conn.writer.close()
            for fut in conn.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost"))
            conn.waiting.clear()

    async def _call_once(self, conn: _Conn, req: KVRequest, timeout_s: float) -> KVResponse:
        fut = asyncio.get_running_loop().create_future()
        conn.waiting[req.id] = fut
        payload = self._enc.encode(req)
        conn.send(_LEN.pack(len(payload)) + payload)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        finally:
            conn.waiting.pop(req.id, None)
            if conn.retired and not conn.waiting:
                conn.writer.close()

    def _move_on(self, conn: _Conn) -> None:
        """`conn`'s member failed a request: send new requests to the next member (once, however
        many requests failed there), and close `conn` when its last request is answered."""
        if self._conn is conn:
            self._conn = None
            self._ep += 1
        conn.retired = True
        if not conn.waiting:
            conn.writer.close()

    async def _drop_connection(self) -> None:
        """Forget the current connection: the next request dials again (benchmarks use it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.retired = True
            if not conn.waiting:
                conn.writer.close()

    async def _call(self, **kw) -> Any:
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        is_write = kw.get("op") in ("put", "del", "cas")
        if is_write:
            seq = next(self._seq)
            self._pending_seqs.add(seq)
            kw.update(client_id=self.client_id, seq=seq)
        try:
            while True:
                if is_write:
                    kw["ack_below"] = min(self._pending_seqs)
                req = KVRequest(id=next(self._ids), **kw)
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise KVError(f"{kw.get('op')} timed out")
                conn = await self._connect()
                try:
                    resp = await self._call_once(conn, req, remaining)
                except (ConnectionError, OSError, TimeoutError):
                    self._move_on(conn)
                    continue
                if resp.ok:
                    if is_write and not self._session_open:
                        self._session_open = True
                        self._pending_seqs -= self._failed_before_open
                        self._failed_before_open.clear()
                    return resp.result
                if resp.error.split(":")[0] in _RETRYABLE:
                    # That member cannot serve it now (cut off from the leader, or it lost the
                    # leadership): retry on another one, as the module docstring promises.
                    self._move_on(conn)
                    await asyncio.sleep(0.05)
                    continue
                raise KVError(resp.error)
        finally:
            if is_write:
                if self._session_open:
                    self._pending_seqs.discard(kw["seq"])
                else:
                    self._failed_before_open.add(kw["seq"])

    async def put(self, key: bytes, value: bytes) -> int:
        return await self._call(op="put", key=key, value=value)

    async def get(self, key: bytes, stale: bool = False) -> bytes | None:
        return await self._call(op="get", key=key, stale=stale)

    async def delete(self, key: bytes) -> bool:
        return await self._call(op="del", key=key)

    async def cas(self, key: bytes, expected: bytes | None, value: bytes) -> tuple[bool, Any]:
        ok, cur = await self._call(op="cas", key=key, expected=expected, value=value)
        return ok, cur

    async def status(self) -> dict:
        return await self._call(op="status")

    async def member(self, action: str, node_id: int, address: str = "") -> dict:
        return await self._call(op="member", action=action, node_id=node_id, address=address)
