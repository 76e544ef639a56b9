"""Every link of the notification tree, and the blockserver's link to meta, outlives its far end.

Each process test kills the far end of one link several times — `SIGKILL` then a restart, or
`SIGSTOP` then `SIGCONT` (a frozen host: no FIN, no RST, only a missed heartbeat tells) — and
checks after each outage that the link came back and delivered the change made meanwhile:

- root ↔ meta member: a 3-member cluster; the member the root follows dies, again and again;
- leaf ↔ root: two roots; the one the leaf follows dies, again and again;
- blockserver ↔ meta: uploads through a blockserver go on while each member in turn is down;
- push stream: a client's stream to a notify process survives that process's restart.

The in-process tests drive a `StreamLink` against a scripted far end that breaks the protocol: a
`hello` without the secret (a wrong admin token), malformed frames. The link must log the
failure, reconnect, and keep the service's ticker alive (waiting long-polls still expire) — the
old link died on the first such error, silently, and took the ticker with it.

Waiting is always for a condition with a deadline; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import ssl
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from raftbox.notify import NotifyConfig, NotifyService, StreamLink
from raftbox.notify import frames as F
from raftbox.notify.service import FALSE, STREAM_PATH
from raftbox.testing import wait_until

from .helpers import ALICE, SECRET, FakeUpstream, sign
from .procs import HOST, Net, Proc, wait_for

# -- in process: a far end that breaks the protocol ---------------------------------------------


class ScriptedRoot:
    """A stand-in for a root's push stream (127.0.0.1, an ephemeral port). Every connection gets
    `hello` (with the secret unless `secret` is None), then `script(k)` frames (k: the
    connection's number), then answers each `sub` with an `info` (owner ALICE, position 5)."""

    def __init__(self, script, secret: bytes | None = SECRET) -> None:
        self.script = script
        self.secret = secret
        self.connections = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> ScriptedRoot:
        app = web.Application()
        app.router.add_get(STREAM_PATH, self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://{HOST}:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        secret = None if self.secret is None else base64.b64encode(self.secret).decode()
        await ws.send_str(F.encode(F.Hello(secret=secret)))
        for text in self.script(self.connections):
            await ws.send_str(text)
        async for msg in ws:
            frame = F.decode_stream_up(msg.data)
            if isinstance(frame, F.Sub):
                infos = [(ns, ALICE, 5) for ns, _seen in frame.ns]
                await ws.send_str(F.encode(F.Info(ns=infos)))
        return ws


class Answer:
    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []

    def finish(self, status: int, body: bytes) -> None:
        self.got.append((status, body))


def _leaf(url: str) -> tuple[StreamLink, NotifyService]:
    link = StreamLink([url], "admin", follows_all=False, retry_min_s=0.01, retry_max_s=0.05)
    cfg = NotifyConfig(longpoll_min_timeout_s=0, longpoll_wait_cap_s=0.5, tick_s=0.02)
    return link, NotifyService(link, cfg, "admin")


def _warnings(caplog, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and needle in r.getMessage()]


def test_a_hello_without_the_secret_is_retried_and_logged_once_and_long_polls_still_expire(
    caplog,
):
    caplog.set_level(logging.DEBUG, logger="raftbox.notify")

    async def main() -> None:
        # Connection 1 is good: the long-poll's namespace is looked up and it waits. Every later
        # connection says hello without the secret, as a root does to a wrong admin token.
        first = ScriptedRoot(lambda k: [])
        async with first, ScriptedRoot(lambda k: [], secret=None) as bad:
            link, service = _leaf(first.url)
            await service.start()
            try:
                await wait_until(lambda: link.connected_url, 30, what="the link is up")
                answer = Answer()
                service.longpoll(sign(ALICE, 7, 5), 30, answer)
                await wait_until(lambda: service.hub.waiting == 1, 30, what="the poll waits")
                link.urls = [bad.url]  # from now on every connection fails
                await first.runner.cleanup()  # type: ignore[union-attr]
                await wait_until(lambda: link.failures >= 5, 30, what="the link keeps retrying")
                await wait_until(lambda: answer.got, 30, what="the waiting long-poll expires")
                assert answer.got == [FALSE]
                assert service._task is not None and not service._task.done()
            finally:
                await service.stop()
        assert bad.connections >= 4
        assert len(_warnings(caplog, "no secret in hello")) == 1  # once, not once per retry

    asyncio.run(asyncio.wait_for(main(), 120))


@pytest.mark.parametrize(
    "bad_frame",
    [
        '{"op": "ev"}',  # a required field missing (was an uncaught KeyError)
        '{"op": "info", "ns": [[1, 2]]}',  # the wrong shape
        '{"op": "nonsense"}',
        "not json",
        '{"op": "hello", "secret": "***"}',  # a secret that is not base64
    ],
)
def test_a_malformed_frame_drops_the_connection_and_the_link_reconnects(caplog, bad_frame):
    caplog.set_level(logging.INFO, logger="raftbox.notify")

    async def main() -> None:
        async with ScriptedRoot(lambda k: [bad_frame]) as root:
            link, service = _leaf(root.url)
            await service.start()
            try:
                await wait_until(lambda: link.sessions >= 3, 30, what="it reconnects")
                assert link.failures >= 2 and "BadFrame" in (link.last_failure or "")
                assert service._task is not None and not service._task.done()
            finally:
                await service.stop()
        assert _warnings(caplog, "BadFrame")

    asyncio.run(asyncio.wait_for(main(), 120))


def test_a_bad_frame_on_the_push_stream_closes_that_stream_only(caplog):
    caplog.set_level(logging.INFO, logger="raftbox.notify")

    async def main() -> None:
        service = NotifyService(FakeUpstream(), NotifyConfig(tick_s=0.02), "admin")
        app = web.Application()
        service.add_routes(app)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, HOST, 0).start()
        url = f"http://{HOST}:{runner.addresses[0][1]}{STREAM_PATH}"
        await service.start()
        try:
            async with aiohttp.ClientSession() as s:
                for bad in ['{"op": "watch"}', '{"op": "watch", "cursors": [{"c": 1}]}', "[]"]:
                    async with s.ws_connect(url) as ws:
                        assert F.decode_stream_down((await ws.receive()).data) == F.Hello()
                        await ws.send_str(bad)
                        msg = await ws.receive()
                        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
                async with s.ws_connect(url) as ws:  # the service still serves
                    await ws.receive()
                    cursor = sign(ALICE, 7, 5)
                    await ws.send_str(F.encode(F.Watch([F.WatchCursor(cursor)])))
                    got = F.decode_stream_down((await ws.receive()).data)
                    assert isinstance(got, (F.Watching, F.BackoffAnswer))
        finally:
            await service.stop()
            await runner.cleanup()
        assert any("bad frame" in r.getMessage() for r in caplog.records)

    asyncio.run(asyncio.wait_for(main(), 120))


# -- real processes: kill the far end of each link, again and again ----------------------------

ROUNDS = ("kill", "freeze", "kill")


def poll_until_changed(dbx: Any, cursor: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if dbx.files_list_folder_longpoll(cursor, 30).changes:
            return
    raise TimeoutError("no change reported")


def waiting(n: Proc) -> int:
    return n.status()["waiting"]


def upload(dbx: Any, path: str, data: bytes) -> None:
    import dropbox

    dbx.files_upload(data, path, mode=dropbox.files.WriteMode.overwrite)


def take_down(p: Proc, how: str) -> None:
    assert p.popen is not None
    if how == "kill":
        p.kill()
    else:
        p.popen.send_signal(signal.SIGSTOP)


def bring_back(p: Proc, how: str) -> None:
    assert p.popen is not None
    if how == "kill":
        p.start().ready()
    else:
        p.popen.send_signal(signal.SIGCONT)


def _change_is_delivered_while_down(net, notify: Proc, victim: Proc, how: str, token: str,
                                    api: Proc, name: str) -> None:  # fmt: skip
    dbx = net.sdk(token, api, notify=notify)
    cursor = dbx.files_list_folder_get_latest_cursor("").cursor
    with ThreadPoolExecutor(1) as ex:
        before = waiting(notify)
        fut: Future = ex.submit(poll_until_changed, dbx, cursor)
        wait_for(lambda: waiting(notify) > before or fut.done(), 30, "the long-poll waits")
        take_down(victim, how)
        try:
            upload(net.sdk(token, api), f"/{name}.txt", name.encode())
            fut.result(timeout=120)
        finally:
            bring_back(victim, how)


def test_a_root_follows_the_cluster_while_the_member_it_follows_dies_again_and_again(tmp_path):
    with Net(tmp_path) as net:
        members = net.members(3)
        root = net.notify("root", meta=members)
        token = net.account(members[0], "root-rounds@example.test")
        for k, how in enumerate(ROUNDS):
            followed = wait_for(lambda: root.status()["upstream"], 60, "the root follows")
            victim = next(p for p in members if p.url == followed)
            api = next(p for p in members if p is not victim)
            sessions = root.status()["sessions"]
            _change_is_delivered_while_down(net, root, victim, how, token, api, f"r{k}-{how}")
            assert root.status()["sessions"] > sessions, "it reconnected, elsewhere"


def test_a_leaf_follows_its_roots_while_the_root_it_follows_dies_again_and_again(tmp_path):
    with Net(tmp_path) as net:
        [m] = net.members(1)
        roots = [net.notify(f"root{i}", meta=[m], plain=True) for i in (1, 2)]
        leaf = net.notify("leaf", roots=roots)
        token = net.account(m, "leaf-rounds@example.test")
        for k, how in enumerate(ROUNDS):
            followed = wait_for(lambda: leaf.status()["upstream"], 60, "the leaf follows")
            victim = next(r for r in roots if r.url == followed)
            sessions = leaf.status()["sessions"]
            _change_is_delivered_while_down(net, leaf, victim, how, token, m, f"l{k}-{how}")
            assert leaf.status()["sessions"] > sessions, "it reconnected, elsewhere"


def test_a_blockserver_keeps_taking_uploads_while_each_meta_member_in_turn_is_down(tmp_path):
    import dropbox

    with Net(tmp_path) as net:
        members = net.members(3)
        bs = Proc(net, "bs", ["--roles", "block", "--listen", f"{HOST}:0", "--meta",
                              ",".join(p.url for p in members), "--ca", net.ca,
                              "--admin-token", net.admin, *net.tls,  # the members' block store:
                              "--blocks", f"file://{net.base / 'blocks'}"])  # fmt: skip
        net._add(bs).start().ready()
        token = net.account(members[0], "blockserver-rounds@example.test")
        for k, victim in enumerate(members):
            how = ROUNDS[k % len(ROUNDS)]
            take_down(victim, how)
            try:
                api = next(p for p in members if p is not victim)
                dbx = net.sdk(token, api)
                dbx._host_map["content"] = bs.hostport  # uploads and downloads: the blockserver
                data = f"round {k}: {victim.name} is down ({how})".encode() * 1000
                upload(dbx, f"/bs-{k}.bin", data)
                _meta, resp = dbx.files_download(f"/bs-{k}.bin")
                assert resp.content == data
            finally:
                bring_back(victim, how)
            wait_for(lambda v=victim: _answers(net, v), 60, f"{victim.name} is back")
        files = net.sdk(token, members[0]).files_list_folder("").entries
        assert sorted(e.name for e in files) == [f"bs-{k}.bin" for k in range(3)]
        assert isinstance(files[0], dropbox.files.FileMetadata)


def _answers(net: Net, p: Proc) -> bool:
    import requests

    r = requests.post(
        p.url + "/2/raftbox/admin/status",
        headers={"Authorization": f"Bearer {net.admin}"},
        verify=net.ca,
        timeout=5,
    )
    return r.status_code == 200


def test_a_client_push_stream_resumes_across_its_servers_restart(tmp_path):
    with Net(tmp_path) as net:
        [m] = net.members(1)
        root = net.notify("root", meta=[m])
        token = net.account(m, "stream-rounds@example.test")
        dbx = net.sdk(token, m)
        cursor = dbx.files_list_folder_get_latest_cursor("").cursor
        ctx = ssl.create_default_context(cafile=net.ca)

        async def watch_once(s: aiohttp.ClientSession, seen: int | None) -> tuple[int, int]:
            """Connect, watch from `seen`, return (ns, the first new position)."""
            async with s.ws_connect(root.url + STREAM_PATH, ssl=ctx) as ws:
                assert isinstance(F.decode_stream_down((await ws.receive()).data), F.Hello)
                await ws.send_str(F.encode(F.Watch([F.WatchCursor(cursor, seen)])))
                watching = F.decode_stream_down((await ws.receive()).data)
                assert isinstance(watching, F.Watching)
                if seen is None:
                    await asyncio.to_thread(upload, dbx, "/first.txt", b"1")
                ev = F.decode_stream_down((await asyncio.wait_for(ws.receive(), 60)).data)
                assert isinstance(ev, F.Ev)
                [(ns, pos)] = ev.ev
                assert ns == watching.ns
                return ns, pos

        async def main() -> None:
            async with aiohttp.ClientSession() as s:
                _ns, seen = await watch_once(s, None)
                for k in range(3):
                    root.kill()
                    await asyncio.to_thread(upload, dbx, f"/while-down-{k}.txt", b"x")
                    await asyncio.to_thread(lambda: root.start().ready())
                    _ns, pos = await watch_once(s, seen)
                    assert pos > seen
                    seen = pos

        asyncio.run(asyncio.wait_for(main(), 300))
