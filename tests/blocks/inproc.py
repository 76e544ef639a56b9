"""One raftbox in the test's own event loop: a single-member Raft group, the meta role, the API
on plain HTTP over 127.0.0.1, a block store the test can look under (a `MemoryStore` counting
its writes, by default), and a garbage collector with an injected clock. Fast to start (well
under a second) so that each test gets a fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import Any

import aiohttp
from aiohttp import web

from raftbox.api.http import ApiServer
from raftbox.api.metaclient import InternalRoutes, LocalMetaClient, MetaClient
from raftbox.api.native import NativeRoutes
from raftbox.blocks import CDC, Chunking, MemoryStore
from raftbox.blocks.service import BlockService
from raftbox.gc import GarbageCollector, GcConfig
from raftbox.meta.fsm import MetaStore
from raftbox.meta.service import MetaService
from raftbox.raft.node import NodeConfig, RaftNode
from raftbox.testing.procs import free_port

ADMIN = "admin-token-for-tests"


class Clock:
    """Wall time the test moves by hand (the GC's clock)."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


class Raftbox:
    def __init__(
        self,
        tmp,
        *,
        store: Any = None,
        chunking: Chunking = CDC,
        gc: GcConfig | None = None,
        gc_store: Any = None,
        meta_kw: dict | None = None,
    ) -> None:
        self.tmp = str(tmp)
        self.store = store if store is not None else MemoryStore()
        self.gc_store = gc_store if gc_store is not None else self.store
        self.chunking = chunking
        self.clock = Clock()
        self.gc_cfg = gc or GcConfig(grace_s=600, present_ttl_s=60, interval_s=0)
        self.meta_kw = meta_kw or {}
        self.url = ""

    async def __aenter__(self) -> Raftbox:
        peer = ("127.0.0.1", free_port())
        self.metastore = MetaStore(os.path.join(self.tmp, "meta.sqlite3"), **self.meta_kw)
        self.node = RaftNode(
            NodeConfig(1, self.tmp, peer, {1: peer}, tick_s=0.01, election_ticks=10),
            self.metastore,
        )
        await self.node.start()
        self.meta = MetaService(self.node, self.metastore)
        await self.meta.start()
        self.mc: MetaClient = LocalMetaClient(self.meta)
        self.blocks = BlockService(self.store, self.chunking)
        self.api = ApiServer(self.meta, self.blocks, ADMIN, metaclient=self.mc)
        self.api.add_routes(NativeRoutes(self.mc, self.blocks).routes())
        internal = InternalRoutes(self.meta)
        self.api.add_route("raftbox/internal/query", "admin", internal.query)
        self.api.add_route("raftbox/internal/write", "admin", internal.write)
        self.gc = GarbageCollector(
            self.meta,
            self.gc_store,
            self.gc_cfg,
            state_path=os.path.join(self.tmp, "gc-state.msgpack"),
            clock=self.clock,
        )
        self.runner = web.AppRunner(self.api.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.runner.cleanup()
        await self.node.stop()
        self.metastore.close()

    # -- accounts and calls --------------------------------------------------------------------
    async def account(self, email: str) -> tuple[int, str]:
        acct, token = await self.meta.create_account(email, email.split("@")[0])
        return acct.namespace_id, token

    async def rpc(self, route: str, token: str, arg: Any = None) -> tuple[int, Any]:
        async with self.http.post(
            f"{self.url}/2/{route}",
            data=json.dumps(arg).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as r:
            raw = await r.read()
            return r.status, (json.loads(raw) if r.content_type == "application/json" else raw)

    async def content(
        self, route: str, token: str, arg: Any, body: bytes | Any = b""
    ) -> tuple[int, Any, bytes]:
        """A content-style call: (status, JSON result or text, raw body)."""
        async with self.http.post(
            f"{self.url}/2/{route}",
            data=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Dropbox-API-Arg": json.dumps(arg),
                "Content-Type": "application/octet-stream",
            },
        ) as r:
            raw = await r.read()
            res = r.headers.get("Dropbox-API-Result")
            if res is not None:
                return r.status, json.loads(res), raw
            if r.content_type == "application/json":
                return r.status, json.loads(raw), raw
            return r.status, raw.decode(errors="replace"), raw

    async def upload(self, token: str, path: str, data: bytes, mode: str = "overwrite") -> dict:
        st, res, _ = await self.content("files/upload", token, {"path": path, "mode": mode}, data)
        assert st == 200, (st, res)
        return res

    async def download(self, token: str, path: str) -> bytes:
        st, res, raw = await self.content("files/download", token, {"path": path})
        assert st == 200, (st, res)
        return raw

    async def put_blocks(self, token: str, body: bytes) -> tuple[int, Any]:
        async with self.http.post(
            f"{self.url}/2/raftbox/blocks/put",
            data=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            raw = await r.read()
            return r.status, (json.loads(raw) if r.content_type == "application/json" else raw)


def bid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.asynccontextmanager
async def raftbox(tmp, **kw):
    async with Raftbox(tmp, **kw) as rb:
        yield rb
