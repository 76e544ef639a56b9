"""Issue 11, attack 2 (client side): no data a server sends can stop a sync.

A real `raftbox up` holds ordinary files; between it and the client sits a proxy playing a
hostile or simply different server (an older version, another implementation): it dates files
9999-12-31, 2263-01-01 and 0001-01-01, and adds entries no client could hold — a NUL, a lone
surrogate, raw bytes that are not UTF-8, a "/" in a name, a 300-byte name, a size of 10**30,
metadata of the wrong type — plus entries valid on the server that this machine cannot hold: a
path that fits the server's 4096 bytes but not below the sync root, and folders nested deeper
than the client goes. The API of a current server refuses most of these (so they are injected
here, not uploaded); the client must survive them anyway.

Then `raftbox sync` (the command, as a process) must exit 0, report each held entry once, sync
everything else (the far-dated files too, their mtimes clamped), never delete anything on
either side, and upload a later local edit — also after a file it already holds turns
unreadable on the server (it is kept here, not deleted).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from api.procs import UpServer, free_port
from raftbox.client.config import Config, save
from raftbox.client.engine import SyncEngine
from raftbox.client.limits import DEPTH_MAX, MTIME_MAX_NS, MTIME_MIN_NS

RAFTBOX = str(Path(sys.executable).with_name("raftbox"))
LISTING = ("/2/files/list_folder", "/2/files/list_folder/continue")
BAD_BYTES = "@@not-utf-8@@"  # replaced by a raw 0xff byte in the body sent to the client
DATES = {
    "/future.txt": "9999-12-31T23:59:59Z",
    "/y2263.txt": "2263-01-01T00:00:00Z",
    "/past.txt": "0001-01-01T00:00:00Z",
}


def _file(path: str, **kw) -> dict:
    return {".tag": "file", "path_display": path, "path_lower": path.lower(),
            "name": path.rsplit("/", 1)[1], "id": f"id:{abs(hash(path))}", "rev": "0123456789a",
            "size": 5, "content_hash": "0" * 64, "client_modified": "2024-01-01T00:00:00Z",
            "server_modified": "2024-01-01T00:00:00Z", **kw}  # fmt: skip


def _folder(path: str) -> dict:
    return {".tag": "folder", "path_display": path, "path_lower": path.lower(),
            "name": path.rsplit("/", 1)[1], "id": f"id:{abs(hash(path))}"}  # fmt: skip


def _chain(names: list[str]) -> tuple[list[dict], str]:
    """Folders along `names`, the last one a file; and the file's path."""
    out, path = [], ""
    for name in names[:-1]:
        path += "/" + name
        out.append(_folder(path))
    path += "/" + names[-1]
    return [*out, _file(path)], path


DEEP, DEEP_FILE = _chain(["deep"] + ["d"] * (DEPTH_MAX + 3) + ["bottom.txt"])
LONG, LONG_FILE = _chain(["L" * 255] * 16)  # 16 x 256 = 4096 bytes: the server's limit
HOSTILE = [
    _file("/nul\x00name.txt"),
    _file("/half\ud800.txt"),
    _file(f"/bytes-{BAD_BYTES}.txt"),
    {**_file("/slash/name.txt"), "name": "slash/name.txt"},
    _file("/" + "n" * 300),
    _file("/huge.bin", size=10**30),
    _file("/badrev.txt", rev=12345),
    _file("/nohash.txt", content_hash=None),
    *DEEP,
    *LONG,
]
HELD = {  # what each held entry is reported as, once: (path as printed, a word of the reason)
    "/nul\\x00name.txt": "control character",
    "/half\\ud800.txt": "not valid UTF-8",
    "/bytes-\\udcff.txt": "not valid UTF-8",
    "/slash/name.txt": "cannot contain '/'",
    "/" + "n" * 300: "longer than 255",
    "/huge.bin": "size",
    "/badrev.txt": "rev is not a string",
    "/nohash.txt": "content_hash",
    "/deep" + "/d" * (DEPTH_MAX - 1): f"deeper than {DEPTH_MAX} levels",
    LONG_FILE: "path too long for this file system",
}


class HostileProxy:
    """Forwards every request to the real server; rewrites listings (see the module doc)."""

    def __init__(self, upstream: str, ca: str) -> None:
        self.upstream = upstream
        self.ctx = ssl.create_default_context(cafile=ca)
        self.requests: list[str] = []
        self.break_keep = False  # `keep.txt` turns unreadable (a size of 10**30) in deltas
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def rewrite(self, path: str, body: dict) -> bytes:
        for m in body["entries"]:
            if m.get("path_display") in DATES:
                m["client_modified"] = DATES[m["path_display"]]
            if self.break_keep and m.get("path_display") == "/keep.txt":
                m["size"] = 10**30
        if path == "/2/files/list_folder":
            body["entries"] = [*body["entries"], *HOSTILE]
        return json.dumps(body).replace(BAD_BYTES, "\udcff").encode("utf-8", "surrogateescape")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        data = await request.read()
        skip = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        async with self.http.request(request.method, self.upstream + request.path_qs, data=data,
                                     headers=headers, ssl=self.ctx) as r:  # fmt: skip
            body = await r.read()
            out = {k: v for k, v in r.headers.items()
                   if k.lower() not in skip | {"content-encoding", "date", "server"}}  # fmt: skip
            if request.path in LISTING and r.status == 200:
                body = self.rewrite(request.path, json.loads(body))
            return web.Response(status=r.status, body=body, headers=out)

    async def __aenter__(self) -> HostileProxy:
        self.http = ClientSession(auto_decompress=True)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        await self.http.close()


async def _cli_sync(root: Path, cfg_dir: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        RAFTBOX, "sync", str(root), "--config", str(cfg_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(errors="replace")


async def _sync_direct(root: Path, cfg: Config) -> None:
    async with SyncEngine(root, cfg) as e:
        s = await e.sync()
    assert s.ok, s.as_json()


@pytest.fixture
def up(tmp_path: Path):
    srv = UpServer(tmp_path, free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_hostile_server_cannot_stop_a_sync(up: UpServer, tmp_path: Path) -> None:
    direct = Config(server=f"https://{up.hostport}", token=up.token, ca=up.ca)
    seed, a = tmp_path / "seed", tmp_path / "A"
    seed.mkdir()
    a.mkdir()
    files = {"fine.txt": "fine", "future.txt": "from 9999", "y2263.txt": "from 2263",
             "past.txt": "from year 1", "keep.txt": "keep me", "sub/ok.txt": "ok"}  # fmt: skip
    for rel, text in files.items():
        (seed / rel).parent.mkdir(exist_ok=True)
        (seed / rel).write_text(text)

    async def main() -> None:
        await _sync_direct(seed, direct)
        async with HostileProxy(direct.server, up.ca) as proxy:
            cfg_dir = tmp_path / "cfg"
            save(Config(server=proxy.url, token=up.token, ca=up.ca), cfg_dir)
            rc, out = await _cli_sync(a, cfg_dir)
            assert rc == 0, out
            for path, why in HELD.items():
                lines = [ln for ln in out.splitlines() if ln.startswith(f"not synced: {path} (")]
                assert len(lines) == 1 and why in lines[0], (path, out[-3000:])
            for rel, text in files.items():
                assert (a / rel).read_text() == text
            assert os.stat(a / "future.txt").st_mtime_ns <= MTIME_MAX_NS
            assert os.stat(a / "past.txt").st_mtime_ns >= MTIME_MIN_NS
            top = sorted(n for n in os.listdir(a) if n != ".raftbox")
            assert top == ["L" * 255, "deep", "fine.txt", "future.txt", "keep.txt", "past.txt",
                           "sub", "y2263.txt"]  # fmt: skip
            assert not os.path.lexists(str(a) + LONG_FILE.rsplit("/", 1)[0] + "/" + "L" * 255)

            # Later: a local edit, while a file this side holds turns unreadable on the server.
            (seed / "keep.txt").write_text("changed on the server")
            await _sync_direct(seed, direct)
            proxy.break_keep = True
            (a / "fine.txt").write_text("edited here later")
            rc, out = await _cli_sync(a, cfg_dir)
            assert rc == 0, out
            assert "not synced: /keep.txt (" in out, out[-3000:]
            assert (a / "keep.txt").read_text() == "keep me"  # held: not deleted, not replaced
            assert not [p for p in proxy.requests if "delete" in p or "move" in p]
        await _sync_direct(seed, direct)
        assert (seed / "fine.txt").read_text() == "edited here later"
        assert (seed / "keep.txt").read_text() == "changed on the server"

    asyncio.run(main())
