"""A real `raftbox up` killed with SIGKILL while clients upload (issue 16: blocks durable in
batches). Clients send small files through `files/upload` and through the native protocol
(`blocks/put` then `commit_batch`) to unique paths; after a random number of acknowledged
writes the server is killed mid-traffic (requests in flight at every stage: block written, sync
waiting, proposal made), restarted on the same data, and then:

- every write the server acknowledged reads back byte for byte;
- every file the server lists (acknowledged or not: a commit that landed just before the kill)
  downloads whole and matches its content_hash — no committed file references a missing block.

The seed is printed (and taken from RAFTBOX_KILL_SEED); RAFTBOX_KILL_ITERATIONS sets how many
kills (3 by default). A kill -9 keeps the page cache, so this cannot catch a missing fsync;
`test_block_barrier.py` checks the order itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import ssl
from pathlib import Path

import aiohttp
from tests.api.procs import UpServer, free_port

from raftbox.blocks.native import NativeClient
from raftbox.meta import commands as C


def bid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Writers:
    """Concurrent uploaders; `acked` holds every (path, bytes) the server answered 200 for."""

    def __init__(self, url: str, token: str, ca: str, rng: random.Random, tag: str) -> None:
        self.url, self.token, self.ca, self.rng, self.tag = url, token, ca, rng, tag
        self.acked: dict[str, bytes] = {}
        self.enough = asyncio.Event()
        self.kill_after = 0
        self.stopped = False

    def _ack(self, path: str, data: bytes) -> None:
        self.acked[path] = data
        if len(self.acked) >= self.kill_after:
            self.enough.set()

    def _data(self) -> bytes:
        return os.urandom(self.rng.choice([1, 100, 4096, 20_000, 200_000]))

    async def sdk_worker(self, s: aiohttp.ClientSession, w: int) -> None:
        n = 0
        while not self.stopped:
            path, data = f"/{self.tag}/sdk{w}-{n}.bin", self._data()
            n += 1
            arg = {"path": path, "mode": "add"}
            headers = {
                "Authorization": f"Bearer {self.token}",
                "Dropbox-API-Arg": json.dumps(arg),
                "Content-Type": "application/octet-stream",
            }
            try:
                async with s.post(f"{self.url}/2/files/upload", data=data, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        self._ack(path, data)
            except (TimeoutError, aiohttp.ClientError, OSError):
                return  # the server is gone

    async def native_worker(self, w: int) -> None:
        ctx = ssl.create_default_context(cafile=self.ca)
        n = 0
        async with NativeClient(self.url, self.token, ssl_context=ctx, timeout_s=60) as nc:
            while not self.stopped:
                files = [(f"/{self.tag}/nat{w}-{n}-{k}.bin", self._data()) for k in range(5)]
                n += 1
                try:
                    await nc.put([(bid(d), d) for _, d in files])
                    out = await nc.commit_batch(
                        [{"path": p, "blocks": [[bid(d), len(d)]], "size": len(d), "mode": "add"}
                         for p, d in files]
                    )  # fmt: skip
                except (TimeoutError, aiohttp.ClientError, OSError):
                    return
                except Exception:  # noqa: BLE001 - a NativeError from a dying server: not acked
                    if self.stopped:
                        return
                    raise
                for (p, d), e in zip(files, out, strict=True):
                    if e[".tag"] == "success":
                        self._ack(p, d)


async def write_until_killed(srv: UpServer, rng: random.Random, tag: str) -> dict[str, bytes]:
    url = f"https://{srv.hostport}"
    w = Writers(url, srv.token, srv.ca, rng, tag)
    w.kill_after = rng.randint(1, 40)
    conn = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=srv.ca), limit=16)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:
        tasks = [asyncio.create_task(w.sdk_worker(s, i)) for i in range(6)]
        tasks += [asyncio.create_task(w.native_worker(i)) for i in range(2)]
        try:
            await asyncio.wait_for(w.enough.wait(), 120)
            await asyncio.to_thread(srv.proc.kill9)
        finally:
            w.stopped = True
            await asyncio.gather(*tasks)
    return dict(w.acked)


async def check_all(srv: UpServer, acked: dict[str, bytes]) -> int:
    url = f"https://{srv.hostport}"
    headers = {"Authorization": f"Bearer {srv.token}"}
    conn = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=srv.ca))
    async with aiohttp.ClientSession(connector=conn, headers=headers) as s:

        async def rpc(route: str, arg: dict) -> dict:
            async with s.post(f"{url}/2/{route}", json=arg) as r:
                body = await r.json()
                assert r.status == 200, (route, r.status, body)
                return body

        async def download(path: str) -> bytes:
            h = {"Dropbox-API-Arg": json.dumps({"path": path})}
            async with s.post(f"{url}/2/files/download", headers=h) as r:
                raw = await r.read()
                assert r.status == 200, (path, r.status, raw[:200])
                return raw

        listed: dict[str, str] = {}
        r = await rpc("files/list_folder", {"path": "", "recursive": True})
        while True:
            for e in r["entries"]:
                if e[".tag"] == "file":
                    listed[e["path_display"]] = e["content_hash"]
            if not r["has_more"]:
                break
            r = await rpc("files/list_folder/continue", {"cursor": r["cursor"]})
        for path in acked:
            assert path in listed, f"acknowledged {path} is gone after the restart"
        for path, ch in listed.items():
            got = await download(path)
            assert C.dropbox_content_hash(got) == ch, f"{path}: its blocks do not make it up"
            if path in acked:
                assert got == acked[path], f"{path}: acknowledged bytes differ"
        return len(listed)


def test_kill_between_block_writes_and_commits(tmp_path: Path):
    seed = int(os.environ.get("RAFTBOX_KILL_SEED") or random.randrange(2**32))
    iterations = int(os.environ.get("RAFTBOX_KILL_ITERATIONS") or 3)
    print(f"RAFTBOX_KILL_SEED={seed} RAFTBOX_KILL_ITERATIONS={iterations}")
    rng = random.Random(seed)
    srv = UpServer(tmp_path, free_port())
    acked: dict[str, bytes] = {}
    try:
        srv.start()
        for i in range(iterations):
            got = asyncio.run(write_until_killed(srv, rng, f"k{i}"))
            assert got, f"seed {seed}: nothing acknowledged before the kill"
            acked.update(got)
            srv.start()
            n = asyncio.run(check_all(srv, acked))
            assert n >= len(acked), (seed, n, len(acked))
    finally:
        srv.stop()
