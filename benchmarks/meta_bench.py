"""Metadata benchmark: small-file uploads per second and a 10,000-entry listing.

    .venv/bin/python -m benchmarks.meta_bench [--files 10000] [--concurrency 32]

Runs against `raftbox up` (single node) and a 3-member `raftbox serve` cluster (requests sent
to the leader and to a follower), each as real processes on 127.0.0.1, with an aiohttp client
in this process: `files/upload` of 4 KiB files with N in flight, then `files/list_folder`
(limit 2000) + `list_folder/continue` until `has_more` is false, over the whole folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_file(path: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.05)


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.dir = tempfile.mkdtemp(prefix="meta-bench-")

    def spawn(self, argv: list[str], name: str) -> subprocess.Popen:
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=log, cwd=ROOT, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


async def call(s: aiohttp.ClientSession, url: str, token: str, route: str, arg, data=None):
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Dropbox-API-Arg"] = json.dumps(arg)
        headers["Content-Type"] = "application/octet-stream"
        body = data
    else:
        headers["Content-Type"] = "application/json"
        body = json.dumps(arg).encode()
    async with s.post(f"{url}/2/{route}", data=body, headers=headers) as r:
        out = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{route}: {r.status} {out[:200]!r}")
        return json.loads(out)


async def workload(url: str, token: str, ca: str, files: int, concurrency: int) -> dict:
    ctx = ssl.create_default_context(cafile=ca)
    conn = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        payload = os.urandom(4096)
        next_i = iter(range(files))

        async def worker() -> None:
            for i in next_i:
                await call(s, url, token, "files/upload", {"path": f"/bench/f{i:06d}.bin"},
                           payload[:4000] + i.to_bytes(8, "big"))  # fmt: skip

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        up_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        n = 0
        r = await call(s, url, token, "files/list_folder", {"path": "/bench", "limit": 2000})
        n += len(r["entries"])
        while r["has_more"]:
            r = await call(s, url, token, "files/list_folder/continue", {"cursor": r["cursor"]})
            n += len(r["entries"])
        list_s = time.perf_counter() - t0
    return {
        "files": files,
        "concurrency": concurrency,
        "uploads_per_s": files / up_s,
        "listed": n,
        "list_s": list_s,
        "entries_per_s": n / list_s,
    }


def single(files: int, concurrency: int) -> dict:
    pr = Procs()
    try:
        port = free_port()
        data = os.path.join(pr.dir, "up")
        pr.spawn(
            [PY, "-m", "raftbox.cli", "up", "--data", data, "--listen", f"127.0.0.1:{port}"], "up"
        )
        wait_file(os.path.join(data, "token"))
        token = open(os.path.join(data, "token")).read().strip()
        url = f"https://127.0.0.1:{port}"
        return asyncio.run(workload(url, token, os.path.join(data, "ca.pem"), files, concurrency))
    finally:
        pr.stop()


def cluster(files: int, concurrency: int, via: str) -> dict:
    pr = Procs()
    try:
        from raftbox import cluster as bundles

        ports = [free_port() for _ in range(3)]
        peer_ports = [free_port() for _ in range(3)]
        # As `raftbox cluster init --members 1=127.0.0.1:P1,... --out DIR/bundles` makes them.
        made = bundles.init(
            os.path.join(pr.dir, "bundles"),
            {i + 1: ("127.0.0.1", p) for i, p in enumerate(peer_ports)},
        )
        ca = os.path.join(made[0], "ca.pem")
        admin = Path(made[0], "admin.token").read_text().strip()
        for i in range(3):
            d = os.path.join(pr.dir, f"m{i + 1}")
            pr.spawn([PY, "-m", "raftbox.cli", "serve", "--cluster", made[i], "--data", d,
                      "--listen", f"127.0.0.1:{ports[i]}",
                      "--blocks", "file://" + os.path.join(pr.dir, "blocks")], f"m{i + 1}")  # fmt: skip
        for i in range(3):
            wait_file(os.path.join(pr.dir, f"m{i + 1}", "url"))
        out = subprocess.run(
            [PY, "-m", "raftbox.cli", "user", "add", "bench@example.com", "--server",
             f"https://127.0.0.1:{ports[0]}", "--admin-token", admin, "--ca", ca],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
        )  # fmt: skip
        token = out.stdout.strip().splitlines()[-1]
        leader = asyncio.run(_find_leader([f"https://127.0.0.1:{p}" for p in ports], admin, ca))
        idx = leader if via == "leader" else (leader + 1) % 3
        url = f"https://127.0.0.1:{ports[idx]}"
        return asyncio.run(workload(url, token, ca, files, concurrency))
    finally:
        pr.stop()


async def _find_leader(urls: list[str], admin: str, ca: str) -> int:
    """Index of the leader, from the admin status route of any member."""
    conn = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca))
    async with aiohttp.ClientSession(connector=conn) as s:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = await call(s, urls[0], admin, "raftbox/admin/status", None)
            if st["leader"]:
                return st["leader"] - 1
            await asyncio.sleep(0.1)
    raise RuntimeError("no leader")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    rows = [("single node (raftbox up)", single(a.files, a.concurrency))]
    rows.append(("3 members, via leader", cluster(a.files, a.concurrency, "leader")))
    rows.append(("3 members, via follower", cluster(a.files, a.concurrency, "follower")))
    print(f"{'setup':28} {'uploads/s':>10} {'list 10k (s)':>13} {'entries/s':>10}")
    for name, r in rows:
        print(
            f"{name:28} {r['uploads_per_s']:10.0f} {r['list_s']:13.2f} {r['entries_per_s']:10.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
