"""The push stream of a `NotifyService` with a scripted upstream, over a real WebSocket on
127.0.0.1: what a `watch` gets while the service does not know the cluster secret yet."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from raftbox.notify.service import NotifyConfig, NotifyService
from raftbox.notify.stream import STREAM_PATH
from raftbox.testing import wait_until

from .helpers import ALICE, SECRET, FakeUpstream, run, sign

HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def served(svc: NotifyService) -> AsyncIterator[str]:
    app = web.Application()
    svc.add_routes(app)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    await svc.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{HOST}:{port}{STREAM_PATH}"
    finally:
        await svc.stop()
        await runner.cleanup()


def test_a_watch_before_the_secret_waits_for_it_and_then_gets_the_change_made_meanwhile():
    """A process serves before its upstream's `hello`: a client's `watch` in between must not
    be answered `backoff` (its client would wait 60 s for a change already committed)."""

    async def body():
        up = FakeUpstream(follows_all=False, secret=None)
        svc = NotifyService(up, NotifyConfig())
        async with served(svc) as url, aiohttp.ClientSession() as s:
            async with s.ws_connect(url) as ws:
                assert (await ws.receive_json(timeout=10))["op"] == "hello"
                await ws.send_json({"op": "watch", "cursors": [{"cursor": sign(ALICE, 7, 5)}]})
                await wait_until(lambda: svc.streams.waiting_for_secret == 1)
                svc.on_secret(SECRET)  # the upstream's hello
                svc.on_connected()
                await wait_until(lambda: up.asked() == {7})
                svc.on_info([(7, ALICE, 6)])  # a change made while this process was down
                assert (await ws.receive_json(timeout=10)) == {
                    "op": "watching",
                    "cursor": 0,
                    "ns": 7,
                }
                assert (await ws.receive_json(timeout=10)) == {"op": "ev", "ev": [[7, 6]]}

    run(body)


def test_a_watch_gets_backoff_if_the_secret_does_not_come_within_lookup_timeout_s():
    async def body():
        svc = NotifyService(FakeUpstream(secret=None), NotifyConfig(lookup_timeout_s=0.05))
        async with served(svc) as url, aiohttp.ClientSession() as s:
            async with s.ws_connect(url) as ws:
                assert (await ws.receive_json(timeout=10))["op"] == "hello"
                await ws.send_json({"op": "watch", "cursors": [{"cursor": sign(ALICE, 7, 5)}]})
                answer = await ws.receive_json(timeout=10)
                assert answer == {"op": "backoff", "cursor": 0, "backoff": 60}
                assert svc.streams.waiting_for_secret == 0

    run(body)
