"""The lean HTTP front of a notify-only process, over real sockets on 127.0.0.1: the one request
shape it serves itself, its bounds, and the hand-off of everything else to aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from raftbox.httpserve import ConnectionLimiter
from raftbox.notify.front import Front
from raftbox.notify.service import ROUTE, NotifyConfig, NotifyService
from raftbox.testing import ThrowawayCA, wait_until

from .helpers import ALICE, FakeUpstream, run, sign

HOST = "127.0.0.1"


class Rig:
    def __init__(self, svc: NotifyService, front: Front, port: int, tls: ssl.SSLContext | None):
        self.svc, self.front, self.port, self.client_tls = svc, front, port, tls

    async def open(self, source: str = HOST) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            HOST, self.port, ssl=self.client_tls, local_addr=(source, 0)
        )

    @property
    def url(self) -> str:
        return f"{'https' if self.client_tls else 'http'}://{HOST}:{self.port}"


@contextlib.asynccontextmanager
async def rig(tls: bool = False, **front_kw) -> AsyncIterator[Rig]:
    svc = NotifyService(FakeUpstream(), NotifyConfig(longpoll_min_timeout_s=1))
    app = web.Application()
    svc.add_routes(app)
    app.router.add_post("/2/" + ROUTE, svc.api_longpoll)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await svc.start()
    await wait_until(lambda: svc.secret is not None)
    svc.on_info([(7, ALICE, 5)])
    front = Front(svc, runner.server, **front_kw)
    server_tls = client_tls = None
    if tls:
        ca = ThrowawayCA()
        server_tls = ca.server_context(ca.issue("notify"), require_client_cert=False)
        client_tls = ca.client_context()
    server = await asyncio.get_running_loop().create_server(front, HOST, 0, ssl=server_tls)
    try:
        yield Rig(svc, front, server.sockets[0].getsockname()[1], client_tls)
    finally:
        server.close()
        await svc.stop()
        front.close_all()
        await runner.cleanup()
        await server.wait_closed()


def request(body: bytes, extra: bytes = b"", path: bytes = b"/2/" + ROUTE.encode()) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (path, len(body), extra, body)
    )


def poll(cursor: str, timeout: int = 30) -> bytes:
    return request(json.dumps({"cursor": cursor, "timeout": timeout}).encode())


async def read_response(r: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await r.readexactly(int(headers["content-length"]))
    return status, headers, body


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_longpoll_is_answered_with_exact_json_and_the_connection_is_kept_for_the_next(tls):
    async def body():
        async with rig(tls) as g:
            r, w = await g.open()
            w.write(poll(sign(ALICE, 7, 4)))  # behind: true at once
            status, headers, b = await read_response(r)
            assert (status, headers["content-type"], json.loads(b)) == (
                200,
                "application/json",
                {"changes": True},
            )
            w.write(poll(sign(ALICE, 7, 5)))  # up to date: waits
            await wait_until(lambda: g.svc.hub.waiting == 1)
            g.svc.on_events([(7, 6)])
            assert json.loads((await read_response(r))[2]) == {"changes": True}
            w.close()

    run(body)


def test_pipelined_requests_are_answered_in_order_one_at_a_time():
    async def body():
        async with rig() as g:
            r, w = await g.open()
            w.write(poll(sign(ALICE, 7, 5)) + poll(sign(ALICE, 7, 1)) + poll("forged"))
            await wait_until(lambda: g.svc.hub.waiting == 1)
            g.svc.on_events([(7, 6)])
            got = [(await read_response(r))[0] for _ in range(3)]
            assert got == [200, 200, 409]
            w.close()

    run(body)


def test_bad_input_gets_400_and_oversized_requests_are_refused_and_closed():
    async def body():
        async with rig() as g:
            r, w = await g.open()
            w.write(request(b"{not json"))
            status, headers, b = await read_response(r)
            assert status == 400 and headers["content-type"] == "text/plain"
            assert b.startswith(b'Error in call to API function "files/list_folder/longpoll"')
            w.write(poll(sign(ALICE, 7, 5), timeout=481))
            assert (await read_response(r))[0] == 400
            w.write(poll(sign(ALICE, 7, 4)))  # still usable
            assert (await read_response(r))[0] == 200
            w.write(b"POST /2/" + ROUTE.encode() + b" HTTP/1.1\r\nX: " + b"a" * 20_000)
            assert (await read_response(r))[0] == 400
            assert await r.read() == b""  # closed
            w.close()

    run(body)


def test_a_client_that_leaves_while_waiting_frees_its_slot():
    async def body():
        async with rig() as g:
            r, w = await g.open()
            w.write(poll(sign(ALICE, 7, 5)))
            await wait_until(lambda: g.svc.hub.waiting == 1)
            w.close()
            await wait_until(lambda: g.svc.hub.waiting == 0 and not g.front.conns)

    run(body)


def test_past_the_connection_cap_a_longpoll_gets_backoff_and_anything_else_503_then_close():
    async def body():
        async with rig(max_connections=1) as g:
            r1, w1 = await g.open()
            w1.write(poll(sign(ALICE, 7, 5)))
            await wait_until(lambda: g.svc.hub.waiting == 1)
            r2, w2 = await g.open()
            w2.write(poll(sign(ALICE, 7, 5)))
            status, _, b = await read_response(r2)
            assert status == 200 and json.loads(b) == {"changes": False, "backoff": 60}
            assert await r2.read() == b""
            r3, w3 = await g.open()
            w3.write(request(b"null", path=b"/2/users/get_current_account"))
            status, headers, _ = await read_response(r3)
            assert status == 503 and headers["retry-after"] == "60"
            for w in (w1, w2, w3):
                w.close()

    run(body)


def test_the_process_limiter_caps_connections_per_address_and_frees_slots():
    """With the process's `ConnectionLimiter` (here 1 per address), a second connection from one
    address is refused like one past `max_connections`, another address still gets in, and
    every slot is given back when its connection ends (memory: no entry per gone address)."""

    async def body():
        limiter = ConnectionLimiter(connections_max=100, per_address_max=1)
        async with rig(limiter=limiter) as g:
            r1, w1 = await g.open()
            w1.write(poll(sign(ALICE, 7, 5)))
            await wait_until(lambda: g.svc.hub.waiting == 1)
            r2, w2 = await g.open()
            w2.write(poll(sign(ALICE, 7, 5)))
            status, _, b = await read_response(r2)
            assert status == 200 and json.loads(b) == {"changes": False, "backoff": 60}
            assert await r2.read() == b""
            r3, w3 = await g.open(source="127.0.0.2")
            w3.write(poll(sign(ALICE, 7, 5)))
            await wait_until(lambda: g.svc.hub.waiting == 2)
            assert limiter.by_address == {"127.0.0.1": 1, "127.0.0.2": 1} and limiter.refused == 1
            for w in (w1, w2, w3):
                w.close()
            await wait_until(lambda: limiter.open == 0 and not limiter.by_address)

    run(body)


def test_idle_connections_are_closed():
    async def body():
        async with rig(idle_timeout_s=0.2) as g:
            r, w = await g.open()
            w.write(b"POST /2/")  # a request that never completes
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()

    run(body)


def test_other_requests_and_framings_are_handed_to_aiohttp_with_what_was_read():
    async def body():
        async with rig() as g:
            r, w = await g.open()
            chunked = json.dumps({"cursor": sign(ALICE, 7, 4), "timeout": 30}).encode()
            w.write(
                b"POST /2/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                % (ROUTE.encode(), len(chunked), chunked)
            )
            status, headers, b = await read_response(r)
            assert status == 200 and json.loads(b) == {"changes": True}
            assert headers["content-type"] == "application/json"
            w.write(request(b"null", path=b"/2/no/such/route"))
            assert (await read_response(r))[0] in (404, 405)
            w.close()
            assert g.front.handed_off == 1

    run(body)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_push_stream_works_through_the_front(tls):
    async def body():
        async with rig(tls) as g, aiohttp.ClientSession() as s:
            url = g.url + "/2/raftbox/notify/stream"
            async with s.ws_connect(url, ssl=g.client_tls or False) as ws:
                assert (await ws.receive_json())["op"] == "hello"
                await ws.send_json({"op": "watch", "cursors": [{"cursor": sign(ALICE, 7, 5)}]})
                assert await ws.receive_json() == {"op": "watching", "cursor": 0, "ns": 7}
                g.svc.on_events([(7, 6)])
                assert await ws.receive_json() == {"op": "ev", "ev": [[7, 6]]}
            assert g.front.handed_off == 1

    run(body)
