"""A long-poll cursor is its own credential: forged, foreign and deleted-namespace cursors all get
the same `reset`, from a root inside a meta member and from a leaf that holds no metadata.

The servers run in this process (`raftbox.server.Server`), so the test can sign cursors with the
cluster's own secret — the only way to make a cursor that names another account's namespace, or
a namespace that does not exist, and so the only way to check the notify role does not trust a
signed cursor further than it should.
"""

from __future__ import annotations

import ssl

import aiohttp

from raftbox.meta.commands import CursorState
from raftbox.server import ServeConfig, Server
from raftbox.testing import wait_until

from .helpers import run, sign
from .procs import HOST, quiet_port


async def longpoll(s: aiohttp.ClientSession, url: str, cursor: str) -> tuple[int, bytes, str]:
    async with s.post(url + "/2/files/list_folder/longpoll", json={"cursor": cursor}) as r:
        return r.status, await r.read(), r.headers["Content-Type"]


def test_forged_foreign_and_deleted_namespace_cursors_get_one_indistinguishable_reset(tmp_path):
    async def body():
        peer = quiet_port()
        admin = "cursor-test-admin"
        meta = Server(ServeConfig(
            node_id=1, data=str(tmp_path / "m"), listen=(HOST, 0), peer_listen=(HOST, peer),
            peers={1: (HOST, peer)}, admin_token=admin, longpoll_wait_cap_s=1.0,
        ))  # fmt: skip
        await meta.start()
        leaf = None
        try:
            m = tmp_path / "m"
            leaf = Server(ServeConfig(
                node_id=0, data=str(tmp_path / "leaf"), listen=(HOST, 0), peer_listen=(HOST, 0),
                peers={}, roles=("notify",), notify_roots=(meta.url,), ca=str(m / "ca.pem"),
                tls_cert=str(m / "server.pem"), tls_key=str(m / "server.key"),
                admin_token=admin, longpoll_wait_cap_s=1.0,
            ))  # fmt: skip
            await leaf.start()
            assert meta.meta is not None and leaf.notify is not None
            await wait_until(lambda: leaf.notify.secret is not None, 30)
            alice, _ = await meta.meta.create_account("alice@example.test", "")
            bob, _ = await meta.meta.create_account("bob@example.test", "")

            def signed(account: str, ns: int, position: int = 0, resume: str | None = None) -> str:
                return meta.meta.sign_cursor(
                    [account, ns, CursorState("", False, False, position, resume)]
                )

            good = signed(alice.account_id, alice.namespace_id, resume="/")  # listing: true
            bad = {
                "garbage": "x",
                "tampered": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
                "another cluster's": sign(alice.account_id, alice.namespace_id, 0),
                "another account's namespace": signed(bob.account_id, alice.namespace_id),
                "a deleted namespace": signed(alice.account_id, 10**9),
                "not a cursor body": signed(alice.account_id, alice.namespace_id)[:30],
            }
            ctx = ssl.create_default_context(cafile=str(m / "ca.pem"))
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
                for url in (meta.url, leaf.url):
                    assert await longpoll(s, url, good) == (
                        200,
                        b'{"changes": true}',
                        "application/json",
                    )
                    answers = {k: await longpoll(s, url, c) for k, c in bad.items()}
                    assert set(answers.values()) == {
                        (
                            409,
                            b'{"error_summary": "reset/..", "error": {".tag": "reset"}}',
                            "application/json",
                        )
                    }, (url, answers)
        finally:
            if leaf is not None:
                await leaf.stop()
            await meta.stop()

    run(body, timeout_s=120)
