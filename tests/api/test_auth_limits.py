"""A flood of bad bearer tokens cannot load the meta group (api.http, "Authentication failures";
meta.service, "Authentication"): a repeated bad token costs one ReadIndex round, an address that
keeps failing is answered 429 with Retry-After before any lookup, and good tokens — known ones,
and one created a moment ago — keep working from that same address."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
from aiohttp import web

from raftbox.api.http import ApiServer
from raftbox.blocks import CDC, MemoryStore
from raftbox.blocks.service import BlockService
from raftbox.meta.fsm import MetaStore
from raftbox.meta.service import MetaService
from raftbox.raft.node import NodeConfig, RaftNode
from raftbox.testing.procs import free_port

HOST = "127.0.0.1"
ADMIN = "rbx_admin-token-for-tests"


class Member:
    """One meta member serving the API on plain HTTP, counting the ReadIndex rounds asked."""

    def __init__(self, meta: MetaService, url: str, http: aiohttp.ClientSession) -> None:
        self.meta = meta
        self.url = url
        self.http = http
        self.read_index_calls = 0

    async def call(self, token: str) -> tuple[int, dict]:
        async with self.http.post(
            f"{self.url}/2/users/get_current_account",
            data=b"null",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as r:
            body = await r.read()
            retry_after = r.headers.get("Retry-After")
            out = json.loads(body) if r.content_type == "application/json" else {}
            if retry_after is not None:
                out["Retry-After"] = retry_after
            return r.status, out


@contextlib.asynccontextmanager
async def member(tmp_path, **api_kw):
    port = free_port()
    store = MetaStore(str(tmp_path / "meta.db"))
    node = RaftNode(
        NodeConfig(1, str(tmp_path), (HOST, port), {1: (HOST, port)}, tick_s=0.01), store
    )
    await node.start()
    runner = None
    http = aiohttp.ClientSession()
    try:
        meta = MetaService(node, store)
        await meta.start()
        api = ApiServer(meta, BlockService(MemoryStore(), CDC), ADMIN, **api_kw)
        runner = web.AppRunner(api.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        host, p = runner.addresses[0][:2]
        m = Member(meta, f"http://{host}:{p}", http)
        real = node.read_index

        async def counted(*a, **k):
            m.read_index_calls += 1
            return await real(*a, **k)

        node.read_index = counted
        yield m
    finally:
        await http.close()
        if runner is not None:
            await runner.cleanup()
        await node.stop()
        store.close()


def run(body, timeout_s: float = 60.0) -> None:
    async def main():
        async with asyncio.timeout(timeout_s):
            await body()

    asyncio.run(main())


def test_one_bad_token_again_and_again_costs_a_bounded_number_of_rounds(tmp_path):
    async def body():
        # A limit per address high enough not to step in: this is the caches' claim.
        async with member(tmp_path, auth_fail_burst=100_000) as m:
            for _ in range(100):
                status, body_ = await m.call("rbx_bad")
                assert status == 401 and body_["error"][".tag"] == "invalid_access_token"
            statuses = await asyncio.gather(*(m.call("rbx_bad") for _ in range(100)))
            assert {s for s, _ in statuses} == {401}
            assert m.read_index_calls <= 2

    run(body)


def test_an_address_that_keeps_failing_gets_429_and_good_tokens_still_work(tmp_path):
    async def body():
        async with member(tmp_path, auth_fail_burst=5, auth_fail_per_s=0.01) as m:
            acct, known = await m.meta.create_account("a@example.com", "A")
            assert (await m.call(known))[0] == 200
            answers = [await m.call(f"rbx_guess-{i}") for i in range(40)]
            assert [s for s, _ in answers[:5]] == [401] * 5
            assert {s for s, _ in answers[5:]} == {429}
            status, body_ = answers[-1]
            assert int(body_["Retry-After"]) >= 1
            assert body_["error"]["reason"][".tag"] == "too_many_requests"
            assert m.read_index_calls <= 5  # none for the refused ones
            # From the same (limited) address: a known token, and a token made just now.
            assert (await m.call(known))[0] == 200
            _, fresh = await m.meta.create_account("b@example.com", "B")
            status, body_ = await m.call(fresh)
            assert status == 200 and body_["email"] == "b@example.com"

    run(body)
