"""The notify role as real processes, driven by the official SDK (`files_list_folder_longpoll`).

Every server runs with the test-only `--longpoll-wait-cap-s` (the SDK cannot ask for less than
the API's 30 s), so "nothing changed" answers `false` within seconds. A poller that gets `false`
polls again with the same cursor, as a sync client does; each test asserts the claim it is named
for: a change is delivered (and promptly), across restarts and a failover, positions not luck.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest

from .procs import Net, Proc, wait_for

CAP_S = float(Net.WAIT_CAP[1])


def poll_until_changed(dbx: Any, cursor: str, timeout_s: float = 60) -> float:
    """Long-poll until `changes: true`; returns when (time.monotonic()) it came."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = dbx.files_list_folder_longpoll(cursor, 30)
        if r.changes:
            return time.monotonic()
        assert r.backoff is None, "no load to shed in these tests"
    raise TimeoutError("no change reported")


def waiting(n: Proc) -> int:
    return n.status()["waiting"]


def upload(dbx: Any, path: str, data: bytes) -> None:
    import dropbox

    dbx.files_upload(data, path, mode=dropbox.files.WriteMode.overwrite)


# -- a root inside the meta member, and a leaf following it -------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    with Net(tmp_path_factory.mktemp("tree")) as net:
        [m] = net.members(1, roles="meta,block,notify")
        leaf = net.notify("leaf", roots=[m])
        yield net, m, leaf


@pytest.mark.parametrize("where", ["root", "leaf"])
def test_sdk_longpoll_wakes_up_on_a_change_made_by_another_client(tree, where):
    net, m, leaf = tree
    n = m if where == "root" else leaf
    token = net.account(m, f"wake-{where}@example.test")
    sync_client = net.sdk(token, m, notify=n)
    web_client = net.sdk(token, m)  # another client of the same account
    cursor = sync_client.files_list_folder_get_latest_cursor("").cursor
    before = waiting(n)
    with ThreadPoolExecutor(1) as ex:
        fut: Future = ex.submit(poll_until_changed, sync_client, cursor)
        wait_for(lambda: waiting(n) > before or fut.done(), 30, "the long-poll waits")
        upload(web_client, "/from-the-web.txt", b"hello")
        acked = time.monotonic()
        woke = fut.result(timeout=60)
    assert woke - acked < CAP_S, "answered by the change, not by the timeout"
    page = sync_client.files_list_folder_continue(cursor)
    assert [e.name for e in page.entries] == ["from-the-web.txt"]


@pytest.mark.parametrize("where", ["root", "leaf"])
def test_sdk_longpoll_times_out_with_changes_false_when_nothing_changes(tree, where):
    net, m, leaf = tree
    n = m if where == "root" else leaf
    token = net.account(m, f"idle-{where}@example.test")
    dbx = net.sdk(token, m, notify=n)
    cursor = dbx.files_list_folder_get_latest_cursor("").cursor
    t0 = time.monotonic()
    r = dbx.files_list_folder_longpoll(cursor, 30)
    took = time.monotonic() - t0
    assert r.changes is False and r.backoff is None
    assert CAP_S * 0.9 <= took < CAP_S * 1.1 + 2  # the cap, plus at most 10 % jitter


@pytest.mark.parametrize("where", ["root", "leaf"])
def test_a_forged_cursor_gets_reset_from_the_sdk(tree, where):
    import dropbox

    net, m, leaf = tree
    n = m if where == "root" else leaf
    token = net.account(m, f"forged-{where}@example.test")
    dbx = net.sdk(token, m, notify=n)
    cursor = dbx.files_list_folder_get_latest_cursor("").cursor
    forged = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    with pytest.raises(dropbox.exceptions.ApiError) as e:
        dbx.files_list_folder_longpoll(forged, 30)
    assert e.value.error.is_reset()


# -- positions survive restarts ----------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A meta member, a notify root following it over the network, a leaf following the root."""
    with Net(tmp_path_factory.mktemp("chain")) as net:
        [m] = net.members(1, roles="meta,block")
        root = net.notify("root", meta=[m], plain=True)
        leaf = net.notify("leaf", roots=[root])
        yield net, m, root, leaf


def test_a_change_committed_while_the_leaf_restarts_is_still_delivered(chain):
    net, m, root, leaf = chain
    token = net.account(m, "leaf-restart@example.test")
    dbx = net.sdk(token, m, notify=leaf)
    cursor = dbx.files_list_folder_get_latest_cursor("").cursor
    leaf.kill()
    upload(net.sdk(token, m), "/while-the-leaf-was-down.txt", b"x")
    leaf.start().ready()
    t0 = time.monotonic()
    r = dbx.files_list_folder_longpoll(cursor, 30)
    assert r.changes is True and time.monotonic() - t0 < CAP_S  # at once, not at the timeout


def test_a_longpoll_at_a_leaf_that_serves_before_its_root_said_hello_waits_for_it(chain):
    """The interleaving behind a rare failure of the test above on a loaded machine: a process
    is `ready` (its url written) before its link's `hello` brings the cluster secret, and a
    long-poll that came in between was shed with `backoff` 60. Freezing the root makes that
    window as long as the test needs: the long-poll must wait, then say `true`."""
    net, m, root, leaf = chain
    token = net.account(m, "leaf-before-hello@example.test")
    dbx = net.sdk(token, m, notify=leaf)
    cursor = dbx.files_list_folder_get_latest_cursor("").cursor
    leaf.kill()
    upload(net.sdk(token, m), "/while-the-leaf-was-down.txt", b"x")
    os.kill(root.pid, signal.SIGSTOP)  # the root accepts no hello until SIGCONT
    try:
        leaf.start().ready()
        with ThreadPoolExecutor(1) as ex:
            fut: Future = ex.submit(dbx.files_list_folder_longpoll, cursor, 30)
            wait_for(lambda: fut.done() or leaf.status()["parked"] >= 1, 30, "the poll arrived")
            assert leaf.status()["upstream"] is None  # still before the root's hello
            os.kill(root.pid, signal.SIGCONT)
            r = fut.result(timeout=60)
    finally:
        os.kill(root.pid, signal.SIGCONT)
    assert r.changes is True and r.backoff is None


def test_a_change_committed_while_the_root_restarts_is_still_delivered(chain):
    net, m, root, leaf = chain
    token = net.account(m, "root-restart@example.test")
    dbx = net.sdk(token, m, notify=leaf)
    cursor = dbx.files_list_folder_get_latest_cursor("").cursor
    sessions = leaf.status()["sessions"]
    with ThreadPoolExecutor(1) as ex:
        fut: Future = ex.submit(poll_until_changed, dbx, cursor)
        wait_for(lambda: waiting(leaf) >= 1, 30, "the long-poll waits on the leaf")
        root.kill()
        upload(net.sdk(token, m), "/while-the-root-was-down.txt", b"x")
        assert not fut.done()
        root.start().ready()
        fut.result(timeout=60)
    assert leaf.status()["sessions"] > sessions  # the leaf reconnected, and resumed


# -- a root follows another member when its member dies ------------------------------------------


def test_when_the_member_a_root_follows_dies_notifications_continue_through_another(tmp_path):
    with Net(tmp_path) as net:
        members = net.members(3)
        root = net.notify("root", meta=members)
        followed = wait_for(lambda: root.status()["upstream"], 30, "the root follows a member")
        victim = next(p for p in members if p.url == followed)
        alive = next(p for p in members if p is not victim)
        token = net.account(alive, "failover@example.test")
        dbx = net.sdk(token, alive, notify=root)
        cursor = dbx.files_list_folder_get_latest_cursor("").cursor
        with ThreadPoolExecutor(1) as ex:
            fut: Future = ex.submit(poll_until_changed, dbx, cursor)
            wait_for(lambda: waiting(root) >= 1, 30, "the long-poll waits on the root")
            victim.kill()
            upload(net.sdk(token, alive), "/after-the-member-died.txt", b"x")
            fut.result(timeout=60)
        now = root.status()
        assert now["upstream"] not in (None, victim.url) and now["sessions"] >= 2


# -- the push stream ---------------------------------------------------------------------------


def test_the_push_stream_delivers_each_position_and_resumes_after_a_reconnect(chain):
    net, m, root, leaf = chain
    token = net.account(m, "stream@example.test")
    dbx = net.sdk(token, m)
    cursor = dbx.files_list_folder_get_latest_cursor("").cursor

    async def go() -> None:
        ctx = ssl.create_default_context(cafile=net.ca)
        url = leaf.url + "/2/raftbox/notify/stream"
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url, ssl=ctx) as ws:
                assert (await ws.receive_json())["op"] == "hello"
                await ws.send_json({"op": "watch", "cursors": [{"cursor": cursor}]})
                watching = await ws.receive_json()
                assert watching["op"] == "watching"
                ns = watching["ns"]
                await asyncio.to_thread(upload, dbx, "/one.txt", b"1")
                ev = await asyncio.wait_for(ws.receive_json(), 30)
                assert ev["op"] == "ev" and ev["ev"][0][0] == ns
                seen = ev["ev"][0][1]
            await asyncio.to_thread(upload, dbx, "/two.txt", b"2")  # while disconnected
            async with s.ws_connect(url, ssl=ctx) as ws:
                assert (await ws.receive_json())["op"] == "hello"
                await ws.send_json(
                    {"op": "watch", "cursors": [{"cursor": cursor, "position": seen}]}
                )
                assert (await ws.receive_json())["op"] == "watching"
                ev = await asyncio.wait_for(ws.receive_json(), 30)
                assert ev["op"] == "ev" and ev["ev"][0][0] == ns and ev["ev"][0][1] > seen

    asyncio.run(go())


def test_a_leaf_fails_over_to_another_root_when_its_root_dies(tmp_path):
    with Net(tmp_path) as net:
        [m] = net.members(1)
        roots = [net.notify(f"root{i}", meta=[m], plain=True) for i in (1, 2)]
        leaf = net.notify("leaf", roots=roots)
        followed = wait_for(lambda: leaf.status()["upstream"], 30, "the leaf follows a root")
        victim = next(r for r in roots if r.url == followed)
        token = net.account(m, "root-failover@example.test")
        dbx = net.sdk(token, m, notify=leaf)
        cursor = dbx.files_list_folder_get_latest_cursor("").cursor
        with ThreadPoolExecutor(1) as ex:
            fut: Future = ex.submit(poll_until_changed, dbx, cursor)
            wait_for(lambda: waiting(leaf) >= 1, 30, "the long-poll waits on the leaf")
            victim.kill()
            upload(net.sdk(token, m), "/after-the-root-died.txt", b"x")
            fut.result(timeout=60)
        assert leaf.status()["upstream"] not in (None, victim.url)
