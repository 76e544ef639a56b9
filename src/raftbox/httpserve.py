"""Serve an aiohttp application on a public address, with TLS and limits in time and size.

Every public port of raftbox (the API of `serve`/`up`, a blockserver, a notify-only process)
starts here: `HttpSite(app, listen, ssl_context, limits)`, then `start()` / `stop()`. Nothing a
client sends or withholds can make a process hold a connection, or memory for it, without bound.

The limits (`HttpLimits`, every bound with its unit in its name)
-----------------------------------------------------------------
- `tls_handshake_timeout_s`: a TLS handshake not done by then is dropped (asyncio's
  `ssl_handshake_timeout`; the connection is not yet an HTTP connection, and is not counted).
- `header_timeout_s`: a request head (request line and headers) must be complete within this of
  its first byte; the first head of a connection, within this of the handshake's end. No answer:
  the connection is closed (what nginx does for `client_header_timeout`). A head pipelined
  behind a request still being handled starts its clock only at its next byte; the keep-alive
  timeout bounds it meanwhile.
- `keepalive_timeout_s`: after an answer, a connection that does not complete its next request
  head within this is closed (aiohttp's own `keepalive_timeout`).
- `body_idle_timeout_s`: while a request body is being read, no byte for this long closes the
  connection. Per chunk, so a slow but live upload of 150 MiB is fine. Time during which *we*
  stopped reading (flow control: the handler is behind) does not count against the client.
- `send_stall_timeout_s`: while an answer is being written, a client that accepts no byte for
  this long (our write buffer stays full) is closed.
- `request_line_max_bytes`, `header_field_max_bytes`, `header_count_max` (aiohttp's parser
  limits) and `header_total_max_bytes` (ours: the whole head, checked after each read, so a head
  can pass it by at most one read before it is refused). Past any of them: 400 with a
  Dropbox-shaped text body (`Error in call to API function "ROUTE": ...`, what the SDK turns
  into `BadInputError`) and the connection is closed. `header_field_max_bytes` is above
  `api.args.ARG_HEADER_MAX_BYTES`, so an oversized `Dropbox-API-Arg` up to it gets the route's
  own 400, and past it this one.
- `connections_max` per process and `connections_per_address_max` per client address (IPv6: per
  /64, which one client holds whole; 0: no per-address cap, e.g. behind a trusted proxy).
  Past either, a new connection is answered `503` with `Retry-After` (which the SDKs retry) and
  closed, and counted (`ConnectionLimiter.refused`). The table holds an entry only per address
  with an open connection, so memory is bounded by the open connections, whatever the number of
  addresses that ever connected.

Body sizes are per route and enforced by the routes (`api.content`: `UPLOAD_MAX_BYTES` on the
declared `Content-Length` before reading and on the bytes while reading, chunked bodies
included; `api.args.RPC_BODY_MAX_BYTES` on the declared length and through aiohttp's
`client_max_size`;
the native block routes by their frame count and frame size). A refused body is not read:
aiohttp reads and drops what follows for at most its lingering time (10 s), then closes.

How: aiohttp has no header-read or body-idle timeout
-----------------------------------------------------
`HttpSite` makes the listening socket itself (`loop.create_server`, to pass the handshake
timeout) with `LimitedHandler`, a subclass of aiohttp's `RequestHandler` (its protocol object,
one per connection), as the protocol. aiohttp 3.14.5 is pinned: the subclass reads a few of its
private fields, named where used. Per connection:

- `connection_made` asks the `ConnectionLimiter` for a slot (refused: 503, close, and aiohttp
  never sees the connection); `connection_lost` gives it back.
- `data_received` notes the time of the last byte and, while the connection waits for a
  request head (aiohttp's `_waiter` is pending), when the head began and how many bytes it has
  so far; after feeding aiohttp's parser, a new parsed message ends the head (its count is
  aiohttp's `_request_count`), and a head over `header_total_max_bytes` is answered 400.
- One timer (a `TimerHandle`, no task) per connection, the watchdog, fires at the next deadline
  and decides from the connection's state what that deadline is: in a head, its start plus
  `header_timeout_s`; in a body (aiohttp's `_current_request` has a payload not at EOF), the
  last byte plus `body_idle_timeout_s`, unless reading is paused (`_reading_paused`); while
  writing is paused (from `pause_writing` to `resume_writing`: the client takes nothing), the
  pause's start plus `send_stall_timeout_s`; otherwise it looks again one tick later (the
  smallest of the timeouts). A deadline passed: the connection is aborted (a graceful close
  would wait to flush to a client that does not read) and counted (`ConnectionLimiter.cut`).
- `handle_error` (aiohttp's answer to a malformed request, or to an exception out of a
  handler): a malformed request gets the Dropbox-shaped 400 and one INFO line; a client that
  hung up or sent a broken body gets one DEBUG line; only a real server fault keeps aiohttp's
  ERROR line with its traceback.

A notify-only process puts its own lean protocol (`notify.front.Front`) in front and hands
unusual connections to `HttpSite.handler`; both count against the same `ConnectionLimiter` (the
front answers its refusals with a long-poll backoff or a 503, and bounds a connection that does
not complete a request by `keepalive_timeout_s`). Connections still in their TLS handshake are
held by asyncio, counted by nobody: the handshake timeout and the process's open-file limit
bound them.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on what one client may make a public port hold; defaults for a public deployment."""

    tls_handshake_timeout_s: float = 10.0
    header_timeout_s: float = 20.0
    keepalive_timeout_s: float = 75.0
    body_idle_timeout_s: float = 60.0
    send_stall_timeout_s: float = 120.0
    request_line_max_bytes: int = 16 * 1024
    header_field_max_bytes: int = 72 * 1024  # > api.args.ARG_HEADER_MAX_BYTES (64 KiB)
    header_total_max_bytes: int = 128 * 1024
    header_count_max: int = 100
    connections_max: int = 100_000
    connections_per_address_max: int = 1_000

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value < 0 or (value == 0 and name != "connections_per_address_max"):
                raise ValueError(f"{name} must be positive, not {value}")

    @property
    def tick_s(self) -> float:
        """How often an otherwise idle watchdog looks at its connection."""
        return min(self.header_timeout_s, self.body_idle_timeout_s, self.send_stall_timeout_s)


def address_key(peername: Any) -> str:
    """The key a client address is counted under: the IPv4 address, or the IPv6 /64."""
    host = peername[0] if isinstance(peername, tuple) and peername else ""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return str(host)
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


class ConnectionLimiter:
    """Counts open connections, per process and per address key; refuses past the caps."""

    def __init__(self, connections_max: int, per_address_max: int) -> None:
        self.connections_max = connections_max
        self.per_address_max = per_address_max
        self.open = 0
        self.by_address: dict[str, int] = {}  # only addresses with an open connection
        self.refused = 0
        self.cut: collections.Counter[str] = collections.Counter()  # closed by a timeout, by why

    def count_cut(self, why: str) -> None:
        """Count a connection closed for `why` (a limit's name); log 1, 2, 4, 8... of each."""
        self.cut[why] += 1
        n = self.cut[why]
        if n & (n - 1) == 0:
            log.info("closed %d connection(s) so far: %s", n, why)

    def admit(self, key: str) -> bool:
        """Take a slot for a connection from `key`; False (and counted) if over a cap."""
        n = self.by_address.get(key, 0)
        if self.open >= self.connections_max or (
            self.per_address_max and n >= self.per_address_max
        ):
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, 8...: a bounded log
                log.warning(
                    "refused %d connection(s) so far (open %d of %d; %s has %d of %d)",
                    self.refused, self.open, self.connections_max, key, n, self.per_address_max,
                )  # fmt: skip
            return False
        self.open += 1
        self.by_address[key] = n + 1
        return True

    def release(self, key: str) -> None:
        self.open -= 1
        n = self.by_address.get(key, 0) - 1
        if n > 0:
            self.by_address[key] = n
        else:
            self.by_address.pop(key, None)


_ROUTE = re.compile(rb"^[A-Z]+ /2/([A-Za-z0-9_/]{1,200})[ ?]")
_PREFIX_BYTES = 256
REFUSED_RETRY_AFTER_S = 5


def bad_input_text(route: str | None, message: str) -> str:
    """The text of a Dropbox 400 (`api.errors.BadInput` says the same for a route's own checks)."""
    where = f' "{route}"' if route else ""
    return f"Error in call to API function{where}: {message}"


def _raw_response(status: str, body: str, extra: str = "") -> bytes:
    b = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(b)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode() + b


def _client_fault(exc: BaseException | None) -> bool:
    """An error the client caused (hung up, broke its body): not worth a traceback."""
    return isinstance(exc, (ConnectionError, RequestPayloadError, HttpProcessingError))


class LimitedHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the limits of the module docstring."""

    __slots__ = (
        "_limits",
        "_limiter",
        "_addr",
        "_admitted",
        "_head_started_at",
        "_head_bytes",
        "_head_prefix",
        "_last_byte_at",
        "_stalled_since",
        "_watchdog",
    )

    def __init__(self, manager: web.Server, *, limits: HttpLimits, limiter: ConnectionLimiter,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._limiter = limiter
        self._addr = ""
        self._admitted = False
        self._head_started_at: float | None = None
        self._head_bytes = 0
        self._head_prefix = b""
        self._last_byte_at = 0.0
        self._stalled_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._addr = address_key(transport.get_extra_info("peername"))
        if not self._limiter.admit(self._addr):
            t: Any = transport
            t.write(
                _raw_response(
                    "503 Service Unavailable",
                    "too many connections; retry later",
                    f"Retry-After: {REFUSED_RETRY_AFTER_S}\r\n",
                )
            )
            t.close()  # aiohttp never sees this connection
            return
        self._admitted = True
        super().connection_made(transport)
        now = self._loop.time()
        self._last_byte_at = now
        self._head_started_at = now
        self._arm(now + self._limits.header_timeout_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._limiter.release(self._addr)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted or self.transport is None:  # refused, or closed by us
            return
        now = self._loop.time()
        if data:  # (aiohttp feeds b"" to reparse what it holds)
            self._last_byte_at = now
        in_head = self._head_started_at is not None or (bool(data) and self._awaiting_head())
        if in_head:
            if self._head_started_at is None:
                self._head_started_at = now
                self._head_bytes = 0
                self._head_prefix = b""
                self._arm(now + self._limits.header_timeout_s)
            self._head_bytes += len(data)
            if len(self._head_prefix) < _PREFIX_BYTES:
                self._head_prefix += data[: _PREFIX_BYTES - len(self._head_prefix)]
        before = self._request_count  # aiohttp: messages parsed on this connection
        super().data_received(data)
        if in_head:
            if self._request_count != before:
                self._head_started_at = None  # the head is complete (or aiohttp answers 400)
                self._arm(now + self._limits.body_idle_timeout_s)
            elif self._head_bytes > self._limits.header_total_max_bytes:
                self._refuse_head(f"request head over {self._limits.header_total_max_bytes} bytes")

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stalled_since = self._loop.time()  # the client stopped taking our answer
        self._arm(self._stalled_since + self._limits.send_stall_timeout_s)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stalled_since = None

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._last_byte_at = self._loop.time()  # the pause was ours: the client's clock restarts
        super().resume_reading(resume_parser)

    # -- aiohttp's error answer ----------------------------------------------------------------
    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None
                     ) -> web.StreamResponse:  # fmt: skip
        if status == 400 and isinstance(exc, HttpProcessingError):
            log.info("bad request from %s: %s", self._addr, _describe(exc))
            resp = web.Response(
                status=400, text=bad_input_text(self._route(), _describe(exc)),
                content_type="text/plain",
            )  # fmt: skip
            resp.force_close()
            return resp
        if _client_fault(exc):
            log.debug("request from %s ended by the client: %r", self._addr, exc)
            if request.writer.output_size > 0:  # an answer was begun: cut it, append nothing
                raise ConnectionError("the answer was begun; closing the connection")
            resp = web.Response(status=400, text=bad_input_text(self._route(), "request broken"))
            resp.force_close()
            return resp
        return super().handle_error(request, status, exc, message)

    # -- the watchdog --------------------------------------------------------------------------
    def _awaiting_head(self) -> bool:
        w = self._waiter  # aiohttp: pending while it waits for the next request
        return w is not None and not w.done()

    def _route(self) -> str | None:
        m = _ROUTE.match(self._head_prefix)
        return m.group(1).decode() if m else None

    def _arm(self, due: float) -> None:
        """Make sure the watchdog fires no later than `due`."""
        w = self._watchdog
        if w is not None:
            if w.when() <= due:
                return
            w.cancel()
        self._watchdog = self._loop.call_at(due, self._check)

    def _check(self) -> None:
        self._watchdog = None
        if not self._admitted or self.transport is None:
            return
        lim = self._limits
        now = self._loop.time()
        due = now + lim.tick_s
        if self._head_started_at is not None:
            if now >= self._head_started_at + lim.header_timeout_s:
                return self._cut("header_timeout_s")
            due = self._head_started_at + lim.header_timeout_s
        else:
            req = self._current_request  # aiohttp: the request whose handler runs
            if req is not None and not req.content.is_eof():
                if self._reading_paused:  # we stopped reading: not the client's fault
                    self._last_byte_at = now
                elif now >= self._last_byte_at + lim.body_idle_timeout_s:
                    return self._cut("body_idle_timeout_s")
                due = min(due, self._last_byte_at + lim.body_idle_timeout_s)
        if self._stalled_since is not None:
            if now >= self._stalled_since + lim.send_stall_timeout_s:
                return self._cut("send_stall_timeout_s")
            due = min(due, self._stalled_since + lim.send_stall_timeout_s)
        self._watchdog = self._loop.call_at(max(due, now + 0.01), self._check)

    def _cut(self, why: str) -> None:
        """Close now, dropping anything unsent (a stalled client would hold a graceful close)."""
        log.debug("closing a connection from %s: %s", self._addr, why)
        self._limiter.count_cut(why)
        t = self.transport
        if t is not None:
            t.abort()
        self.force_close()

    def _refuse_head(self, why: str) -> None:
        log.info("bad request from %s: %s", self._addr, why)
        t = self.transport
        if t is not None:
            t.write(_raw_response("400 Bad Request", bad_input_text(self._route(), why)))
        self.force_close()  # closes after the answer is flushed


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LineTooLong):
        return "a request line or header is too long"
    text = getattr(exc, "message", "") or str(exc)
    return "bad request: " + text.replace("\n", " ")[:200]


ProtocolFactory = Callable[[], asyncio.Protocol]
FrontFactory = Callable[[ProtocolFactory, ConnectionLimiter], ProtocolFactory]


class HttpSite:
    """One public address serving `app` within `limits`: `await start()`, then `await stop()`.

    `front`, if given, makes the protocol factory from (`handler`, `limiter`): the notify-only
    process puts its long-poll front there and hands other connections to `handler`.
    `runner_kwargs` go to `web.AppRunner` as they are (e.g. an access logger)."""

    def __init__(
        self,
        app: web.Application,
        listen: tuple[str, int],
        ssl_context: ssl.SSLContext | None,
        limits: HttpLimits,
        *,
        handler_cancellation: bool = False,
        backlog: int = 4096,
        front: FrontFactory | None = None,
        runner_kwargs: dict[str, Any] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.app = app
        self.listen = listen
        self.ssl_context = ssl_context
        self.limits = limits
        self.backlog = backlog
        self.front = front
        self.reuse_port = reuse_port  # SO_REUSEPORT: one of several workers (raftbox.workers)
        self.limiter = ConnectionLimiter(limits.connections_max, limits.connections_per_address_max)
        kwargs: dict[str, Any] = dict(
            access_log=None,
            handler_cancellation=handler_cancellation,
            keepalive_timeout=limits.keepalive_timeout_s,
            max_line_size=limits.request_line_max_bytes,
            max_field_size=limits.header_field_max_bytes,
            max_headers=limits.header_count_max,
        )
        kwargs.update(runner_kwargs or {})
        self.runner = web.AppRunner(app, **kwargs)
        self.server: asyncio.Server | None = None
        self.url = ""

    def handler(self) -> LimitedHandler:
        """A new aiohttp protocol for one connection."""
        server = self.runner.server
        assert server is not None, "start() first"
        kwargs = server._kwargs  # aiohttp: what AppRunner was given for its handlers
        return LimitedHandler(
            server, loop=server._loop, limits=self.limits, limiter=self.limiter, **kwargs
        )

    async def start(self) -> str:
        await self.runner.setup()
        factory: ProtocolFactory = self.handler
        if self.front is not None:
            factory = self.front(self.handler, self.limiter)
        host, port = self.listen
        tls = self.ssl_context is not None
        self.server = await asyncio.get_running_loop().create_server(
            factory,
            host,
            port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.limits.tls_handshake_timeout_s if tls else None,
            backlog=self.backlog,
            reuse_port=self.reuse_port or None,
        )
        sock_host, sock_port = self.server.sockets[0].getsockname()[:2]
        self.url = f"{'https' if tls else 'http'}://{sock_host}:{sock_port}"
        return self.url

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def stop(self) -> None:
        """Stop accepting, end open connections (aiohttp's graceful shutdown), close."""
        self.stop_accepting()
        await self.runner.cleanup()
        if self.server is not None:
            await self.server.wait_closed()
