"""The front of a notify-only process: a lean HTTP/1.1 server for `files/list_folder/longpoll`.

Why not aiohttp for this one route: an idle long-poll is the whole point of a notify process,
and aiohttp spends about 12 KiB of Python objects on each waiting request (a task, a request, a
parser, a payload stream); this front keeps one slotted object per connection (about 1.7 KiB
with the transport, measured by benchmarks/notify_connections.py), no task and no timer: the hub
holds a waiting request's deadline, and one sweep a second closes idle connections.

Theory of operation
-------------------
One `_Conn` per connection, states:

    HEAD --(head+body of POST /2/files/list_folder/longpoll)--> WAIT --(finish)--> HEAD ...
    HEAD --(any other request, chunked body, Expect, HTTP/1.0, upgrade)--> handed to aiohttp
    any  --(timeout in HEAD, bad request, client gone, write buffer over its bound)--> CLOSED

While a request waits, the front keeps reading — so that a client that leaves is noticed at once
and its slot freed — but holds at most `HEAD_MAX_BYTES` + `LONGPOLL_BODY_MAX_BYTES` of input (a
pipelined request waits in it; more closes the connection) and one small answer of output per
connection. Anything else — the push stream (WebSocket), unusual
framings, other routes — is handed, bytes already read included, to the aiohttp application of
the process (`fallback`: `web.AppRunner.server`, which makes aiohttp's own protocol object), so
this parser only has to be right about the one simple request shape it accepts.

Past `max_connections`, or when the process's `ConnectionLimiter` (`raftbox.httpserve`: caps per
process and per client address, shared with the aiohttp connections) refuses it, a new connection
is answered once — `{"changes": false, "backoff": N}` to
a long-poll, 503 with `Retry-After` to anything else — and closed: a clean refusal the SDKs
understand, instead of a connection left hanging.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from raftbox.httpserve import ConnectionLimiter, address_key

from .service import LONGPOLL_BODY_MAX_BYTES, BadRequest, parse_longpoll

if TYPE_CHECKING:
    from .service import NotifyService

log = logging.getLogger(__name__)

PATH = b"/2/files/list_folder/longpoll"
HEAD_MAX_BYTES = 8 * 1024
WRITE_BUFFER_MAX_BYTES = 64 * 1024
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 409: b"Conflict", 503: b"Service Unavailable"}  # fmt: skip


class State(enum.Enum):
    HEAD = 1  # reading a request head (and its body)
    WAIT = 2  # the long-poll waits for its answer
    CLOSED = 3  # closed, or handed to aiohttp


def _response(status: int, body: bytes, ctype: bytes = b"application/json", close: bool = False,
              extra: bytes = b"") -> bytes:  # fmt: skip
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
        status,
        _REASONS.get(status, b"OK"),
        ctype,
        len(body),
        b"Connection: close\r\n" if close else b"",
        extra,
        body,
    )


class Front:
    """Protocol factory: `loop.create_server(Front(...), host, port, ssl=...)`."""

    def __init__(
        self,
        service: NotifyService,
        fallback: Callable[[], asyncio.Protocol] | None = None,
        *,
        max_connections: int = 1_000_000,
        idle_timeout_s: float = 75.0,
        limiter: ConnectionLimiter | None = None,
    ) -> None:
        self.service = service
        self.fallback = fallback
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.limiter = limiter
        self.conns: set[_Conn] = set()
        # Connections not waiting on a long-poll, in deadline order (one timeout for all, so
        # insertion order is deadline order): one sweep a second instead of a timer each.
        self.idle: dict[_Conn, float] = {}
        self.handed_off = 0
        self.refused = 0
        self._loop = asyncio.get_running_loop()
        self._cache: dict[tuple[int, bytes], bytes] = {}
        self._sweeper = self._loop.call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        now = self._loop.time()
        expired = []
        for c, deadline in self.idle.items():
            if deadline > now:
                break
            expired.append(c)
        for c in expired:
            c.close()
        self._sweeper = self._loop.call_later(min(1.0, self.idle_timeout_s / 2), self._sweep)

    def __call__(self) -> _Conn:
        return _Conn(self)

    def response(self, status: int, body: bytes) -> bytes:
        key = (status, body)
        r = self._cache.get(key)
        if r is None:
            r = _response(status, body)
            if len(self._cache) < 64:
                self._cache[key] = r
        return r

    def close_all(self) -> None:
        self._sweeper.cancel()
        for c in list(self.conns):
            c.close()


class _Conn(asyncio.Protocol):
    __slots__ = ("front", "transport", "buf", "state", "keep", "shed", "busy", "addr")

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.state = State.HEAD
        self.keep = True
        self.shed = False
        self.busy = False
        self.addr: str | None = None  # the limiter's key while this holds a slot

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        front = self.front
        front.conns.add(self)
        if len(front.conns) > front.max_connections:
            self.shed = True
            front.refused += 1
        elif front.limiter is not None:
            key = address_key(transport.get_extra_info("peername"))
            if front.limiter.admit(key):
                self.addr = key
            else:
                self.shed = True
                front.refused += 1
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self.buf += data
        if len(self.buf) > HEAD_MAX_BYTES + LONGPOLL_BODY_MAX_BYTES:
            self._fail(400, b"request too large")
            return
        if self.state is State.HEAD and not self.busy:
            self._process()

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is State.WAIT:
            self.front.service.cancel(self)
        self._closed()

    # -- the long-poll answer (NotifyService's Waiter) -----------------------------------------
    def finish(self, status: int, body: bytes) -> None:
        if self.state is not State.WAIT:
            return
        self.state = State.HEAD
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(self.front.response(status, body))
        if not self.keep:
            self.close()
            return
        if t.get_write_buffer_size() > WRITE_BUFFER_MAX_BYTES:
            self.close()  # it does not read its answers: stop serving it
            return
        self._arm()
        if self.buf and not self.busy:
            self._process()

    # -- internals -----------------------------------------------------------------------------
    def _arm(self) -> None:
        """Idle from now: closed if no complete request arrives within `idle_timeout_s`."""
        idle = self.front.idle
        idle.pop(self, None)  # re-insert at the end: the dict stays in deadline order
        idle[self] = self.front._loop.time() + self.front.idle_timeout_s

    def _disarm(self) -> None:
        self.front.idle.pop(self, None)

    def close(self) -> None:
        if self.transport is not None and self.state is not State.CLOSED:
            if self.state is State.WAIT:
                self.front.service.cancel(self)
            self.transport.close()
        self._closed()

    def _closed(self) -> None:
        self.state = State.CLOSED
        self._disarm()
        self.front.conns.discard(self)
        if self.addr is not None:  # a handed-off connection takes a new slot in aiohttp's handler
            assert self.front.limiter is not None
            self.front.limiter.release(self.addr)
            self.addr = None

    def _fail(self, status: int, message: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(_response(status, message, b"text/plain", close=True))
        self.close()

    def _process(self) -> None:
        self.busy = True
        try:
            while self.state is State.HEAD and self.buf:
                if not self._one():
                    return
        finally:
            self.busy = False

    def _one(self) -> bool:
        """Handle the request at the start of `buf`; False if it is not complete yet."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > HEAD_MAX_BYTES:
                self._fail(400, b"request head too large")
            return False
        lines = buf[:end].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._fail(400, b"bad request line")
            return False
        method, target, version = parts
        length = 0
        simple = method == b"POST" and version == b"HTTP/1.1"
        keep = True
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                self._fail(400, b"bad header line")
                return False
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self._fail(400, b"bad Content-Length")
                    return False
                if length < 0:
                    self._fail(400, b"bad Content-Length")
                    return False
            elif name in (b"transfer-encoding", b"expect", b"upgrade"):
                simple = False
            elif name == b"connection" and b"close" in value.lower():
                keep = False
        if not simple or target.split(b"?", 1)[0] != PATH:
            self._handoff()
            return False
        if length > LONGPOLL_BODY_MAX_BYTES:
            self._fail(400, b"request body too large")
            return False
        start = end + 4
        if len(buf) < start + length:
            return False
        body = buf[start : start + length]
        self.buf = buf[start + length :]
        self.keep = keep
        self._disarm()
        self.state = State.WAIT
        t = self.transport
        assert t is not None
        service = self.front.service
        if self.shed:
            self.keep = False
            service.stats["backoff"] += 1
            self.finish(*service.backoff_answer)
            return False
        try:
            cursor, timeout_s = parse_longpoll(body, service.cfg.longpoll_min_timeout_s)
        except BadRequest as e:
            service.stats["bad"] += 1
            self.state = State.HEAD
            t.write(_response(400, str(e).encode(), b"text/plain"))
            self._arm()
            return True
        service.longpoll(cursor, timeout_s, self)
        return True

    def _handoff(self) -> None:
        """Give the connection to aiohttp, with what was read of it so far."""
        t = self.transport
        front = self.front
        if front.fallback is None or self.shed:
            if t is not None and not t.is_closing():
                status = 503 if self.shed else 404
                extra = b"Retry-After: %d\r\n" % front.service.cfg.backoff_s if self.shed else b""
                t.write(_response(status, b"not here", b"text/plain", close=True, extra=extra))
            self.close()
            return
        data, self.buf = self.buf, b""
        self._closed()
        front.handed_off += 1
        assert t is not None
        proto = front.fallback()
        t.set_protocol(proto)
        proto.connection_made(t)
        proto.data_received(data)
