"""`HttpSite` in-process, on both event loops (asyncio's and uvloop's SSL and flow control
differ): each limit closes or answers the connection it should, and `stop()` ends everything
it started. The process-level tests (`test_slow_clients.py`, `test_oversized.py`) cover the
same limits through `raftbox up` and TLS; these are the fast ones, with tenths of seconds."""

from __future__ import annotations

import asyncio

from aiohttp import web

from raftbox.httpserve import HttpLimits, HttpSite
from raftbox.testing import ThrowawayCA, wait_until
from raftbox.testing.aio import async_test, event_loop_kind  # noqa: F401

HOST = "127.0.0.1"
LIMITS = HttpLimits(
    header_timeout_s=0.3,
    body_idle_timeout_s=0.3,
    keepalive_timeout_s=0.6,
    tls_handshake_timeout_s=0.3,
    send_stall_timeout_s=0.3,
    request_line_max_bytes=1024,
    header_field_max_bytes=1024,
    header_total_max_bytes=4096,
    header_count_max=10,
    connections_per_address_max=2,
)


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def big(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    chunk = b"x" * (1 << 20)
    for _ in range(256):
        await resp.write(chunk)
    return resp


async def breaks_mid_answer(request: web.Request) -> web.StreamResponse:
    """What `files/download` does when a block fails after the headers went out."""
    resp = web.StreamResponse(headers={"Content-Length": "100"})
    await resp.prepare(request)
    await resp.write(b"0123456789")
    raise ConnectionResetError("failed mid-stream")


class Site:
    def __init__(self, tls: bool = False) -> None:
        app = web.Application()
        app.router.add_post("/2/echo", echo)
        app.router.add_post("/2/big", big)
        app.router.add_post("/2/break", breaks_mid_answer)
        self.ca = ThrowawayCA() if tls else None
        ctx = (
            self.ca.server_context(self.ca.issue("site"), require_client_cert=False)
            if tls
            else None
        )
        self.site = HttpSite(app, (HOST, 0), ctx, LIMITS)

    async def __aenter__(self) -> Site:
        await self.site.start()
        self.port = int(self.site.url.rsplit(":", 1)[1])
        return self

    async def __aexit__(self, *exc) -> None:
        await self.site.stop()

    async def open(self):
        ssl = self.ca.client_context() if self.ca else None
        return await asyncio.open_connection(HOST, self.port, ssl=ssl)


async def eof(r: asyncio.StreamReader) -> bytes:
    """Everything until the server closes."""
    out = b""
    try:
        while piece := await r.read(65536):
            out += piece
    except (ConnectionError, OSError):
        pass
    return out


@async_test
async def test_a_partial_head_is_cut_off():
    async with Site() as s:
        r, w = await s.open()
        w.write(b"POST /2/echo HTTP/1.1\r\nHost: x\r\n")
        assert await eof(r) == b""
        w.close()
        await wait_until(lambda: s.site.limiter.open == 0)
        assert s.site.limiter.cut["header_timeout_s"] == 1


@async_test
async def test_a_silent_body_is_cut_off_and_a_complete_one_answered():
    async with Site() as s:
        r, w = await s.open()
        w.write(b"POST /2/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert await r.readexactly(3) == b"abc"
        w.write(b"POST /2/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        assert await eof(r) == b""
        w.close()
        assert s.site.limiter.cut["body_idle_timeout_s"] == 1


@async_test
async def test_oversized_heads_get_a_dropbox_shaped_400():
    async with Site() as s:
        for head in (
            b"POST /2/echo HTTP/1.1\r\nX-A: " + b"a" * 2000 + b"\r\n\r\n",
            b"POST /2/echo HTTP/1.1\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(20))
            + b"\r\n",
            b"POST /2/echo HTTP/1.1\r\n"
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 900) for i in range(8)),
        ):
            r, w = await s.open()
            w.write(head)
            answer = await eof(r)
            w.close()
            assert answer.split(b" ", 2)[1] == b"400", answer[:100]
            assert b'Error in call to API function "echo": ' in answer, answer


@async_test
async def test_past_the_per_address_cap_a_connection_gets_503():
    async with Site() as s:
        held = [await s.open() for _ in range(2)]
        r, w = await s.open()
        assert (await eof(r)).startswith(b"HTTP/1.1 503")
        w.close()
        assert s.site.limiter.refused == 1
        for _, hw in held:
            hw.close()


@async_test
async def test_a_client_that_does_not_read_is_cut_off():
    async with Site() as s:
        r, w = await s.open()
        w.write(b"POST /2/big HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await wait_until(lambda: s.site.limiter.cut["send_stall_timeout_s"] == 1, 8)
        w.close()


@async_test
async def test_tls_handshake_timeout_and_tls_limits():
    async with Site(tls=True) as s:
        r, w = await asyncio.open_connection(HOST, s.port)  # plain TCP: no handshake ever
        assert await eof(r) == b""
        w.close()
        r, w = await s.open()
        w.write(b"POST /2/echo HTTP/1.1\r\nHost: x\r\n")
        assert await eof(r) == b""
        w.close()


@async_test
async def test_an_answer_broken_midway_is_cut_not_followed_by_another():
    """Nothing is appended to a begun answer: the client sees a short body and the close."""
    async with Site() as s:
        r, w = await s.open()
        w.write(b"POST /2/break HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        answer = await eof(r)
        w.close()
        assert answer.endswith(b"\r\n\r\n0123456789"), answer
