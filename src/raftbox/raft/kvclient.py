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
import struct
from typing import Any

import msgspec

from .kv import _LEN, MAX_FRAME_BYTES, KVRequest, KVResponse

_RETRYABLE = ("Retry", "Unavailable", "NotLeader", "ProposalDropped", "RpcError", "PeerUnreachable")


class KVError(Exception):
    pass


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
        self._waiting: dict[int, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._ep = 0
        self._connect_lock = asyncio.Lock()
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(KVResponse)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except (asyncio.CancelledError, Exception):
                pass
        self._writer = None

    async def __aenter__(self) -> KVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._connect_lock:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
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
                self._writer = writer
                self._reader_task = asyncio.create_task(self._read(reader))
                return writer
            raise KVError(f"no endpoint reachable: {last}")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (n,) = _LEN.unpack(await reader.readexactly(4))
                if n > MAX_FRAME_BYTES:
                    raise KVError("oversized answer")
                resp = self._dec.decode(await reader.readexactly(n))
                fut = self._waiting.pop(resp.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(resp)
        except (asyncio.IncompleteReadError, ConnectionError, KVError, struct.error):
            pass
        finally:
            self._writer = None
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost"))
            self._waiting.clear()

    async def _call_once(self, req: KVRequest, timeout_s: float) -> KVResponse:
        writer = await self._connect()
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req.id] = fut
        payload = self._enc.encode(req)
        writer.write(_LEN.pack(len(payload)) + payload)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        finally:
            self._waiting.pop(req.id, None)

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
                try:
                    resp = await self._call_once(req, remaining)
                except (ConnectionError, OSError, TimeoutError):
                    self._ep += 1
                    await self._drop_connection()
                    continue
                if resp.ok:
                    return resp.result
                if resp.error.split(":")[0] in _RETRYABLE:
                    await asyncio.sleep(0.05)
                    continue
                raise KVError(resp.error)
        finally:
            if is_write:
                self._pending_seqs.discard(kw["seq"])

    async def _drop_connection(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w.close()

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
