"""Metadata benchmark: small-file uploads per second and a 10,000-entry listing.

    .venv/bin/python -m benchmarks.meta_bench [--files 10000] [--concurrency 32]
        [--setups single,leader,follower|none] [--native-files 0] [--apply-files 0]

Runs against `raftbox up` (single node) and a 3-member `raftbox serve` cluster (requests sent
to the leader and to a follower), each as real processes on 127.0.0.1, with an aiohttp client
in this process: `files/upload` of 4 KiB files with N in flight, then `files/list_folder`
(limit 2000) + `list_folder/continue` until `has_more` is false, over the whole folder.
`--setups` picks some of the three setups.

`--native-files N` (N > 0) adds, on each setup, the native protocol's `commit_batch`: N blocks
of 64 bytes are stored first with `blocks/put` (not timed), then N files using them are
committed in batches of 1,000 (`commit_batch`, one request after the other, as the sync client
sends them); reported as files/s.

For the single node, the server's CPU time per operation is printed too (`/proc/PID/stat`,
every thread of the process): on a shared machine it moves much less than the rates do.

`--apply-files N` (N > 0) adds the state machine alone, in this process: N files committed by
`CommitBatch` entries of 1,000 (as `commit_batch` proposes them, blocks already the
namespace's) applied to a `MetaStore` on a temporary file; prints the CPU microseconds per
file (`time.process_time`), the part of a commit that no HTTP, TLS or Raft takes.
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


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far; 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def workload(
    url: str,
    token: str,
    ca: str,
    files: int,
    concurrency: int,
    native_files: int = 0,
    pid: int | None = None,
) -> dict:
    ctx = ssl.create_default_context(cafile=ca)
    conn = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        payload = os.urandom(4096)
        next_i = iter(range(files))

        async def worker() -> None:
            for i in next_i:
                await call(s, url, token, "files/upload", {"path": f"/bench/f{i:06d}.bin"},
                           payload[:4000] + i.to_bytes(8, "big"))  # fmt: skip

        t0, c0 = time.perf_counter(), cpu_s(pid)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        up_s = time.perf_counter() - t0
        up_cpu_s = cpu_s(pid) - c0

        t0 = time.perf_counter()
        n = 0
        r = await call(s, url, token, "files/list_folder", {"path": "/bench", "limit": 2000})
        n += len(r["entries"])
        while r["has_more"]:
            r = await call(s, url, token, "files/list_folder/continue", {"cursor": r["cursor"]})
            n += len(r["entries"])
        list_s = time.perf_counter() - t0
    out = {
        "files": files,
        "concurrency": concurrency,
        "uploads_per_s": files / up_s,
        "server_cpu_ms_per_upload": 1000 * up_cpu_s / files,
        "listed": n,
        "list_s": list_s,
        "entries_per_s": n / list_s,
    }
    if native_files:
        out["commits_per_s"] = await native_commits(url, token, ca, native_files, pid)
    return out


async def native_commits(
    url: str, token: str, ca: str, files: int, pid: int | None = None
) -> tuple[float, float]:
    """files/s of `commit_batch` (batches of 1,000) over blocks stored beforehand."""
    import hashlib

    from raftbox.blocks.native import NativeClient

    salt = os.urandom(16)
    blocks = [(salt + i.to_bytes(8, "big")) * 2 + b"." * 16 for i in range(files)]
    ids = [(hashlib.sha256(b).hexdigest(), b) for b in blocks]
    ctx = ssl.create_default_context(cafile=ca)
    async with NativeClient(url, token, ssl_context=ctx) as nc:
        await nc.put(ids)
        entries = [
            {"path": f"/native/d{i // 1000:03d}/f{i:06d}.bin", "blocks": [[bid, len(b)]],
             "size": len(b), "mode": "overwrite"}
            for i, (bid, b) in enumerate(ids)
        ]  # fmt: skip
        t0, c0 = time.perf_counter(), cpu_s(pid)
        out = await nc.commit_batch(entries)
        dt = time.perf_counter() - t0
        cpu = cpu_s(pid) - c0
    bad = [e for e in out if e[".tag"] != "success"]
    if bad:
        raise RuntimeError(f"commit_batch: {len(bad)} entries failed, first {bad[0]!r}")
    return files / dt, 1e6 * cpu / files


def apply_only(files: int) -> float:
    """CPU microseconds per file of applying `CommitBatch`es of 1,000 to a file MetaStore."""
    import hashlib

    from raftbox.meta import commands as C
    from raftbox.meta.fsm import MetaStore
    from raftbox.raft.sessions import Command

    d = tempfile.mkdtemp(prefix="meta-apply-")
    store = MetaStore(os.path.join(d, "meta.db"))
    try:
        seq = 0

        def apply(cmd):
            nonlocal seq
            seq += 1
            payload = C.encode_command(cmd)
            return store.apply(seq, Command(1, seq, seq, 1_700_000_000_000 + seq, payload))

        apply(C.InitCluster(os.urandom(32)))
        ns = apply(C.CreateAccount("bench@example.com", "Bench")).home_ns
        salt = os.urandom(16)
        data = [(salt + i.to_bytes(8, "big")) * 2 + b"." * 16 for i in range(files)]
        refs = [C.BlockRef(hashlib.sha256(b).hexdigest(), len(b)) for b in data]
        batches = []
        for i in range(0, files, 1000):
            apply(C.RecordUpload(ns, refs[i : i + 1000]))
            batches.append(
                C.CommitBatch(
                    [
                        C.CommitFile(
                            ns,
                            f"/native/d{j // 1000:03d}/f{j:06d}.bin",
                            [refs[j]],
                            refs[j].size,
                            C.dropbox_content_hash(data[j]),
                            mode="overwrite",
                            readable_ns=[ns],
                        )  # fmt: skip
                        for j in range(i, min(files, i + 1000))
                    ]
                )
            )
        t0 = time.process_time()
        for b in batches:
            out = apply(b)
            if not all(isinstance(r, C.FileMeta) for r in out):
                raise RuntimeError(
                    f"CommitBatch: {next(r for r in out if not isinstance(r, C.FileMeta))!r}"
                )
        return 1e6 * (time.process_time() - t0) / files
    finally:
        store.close()
        shutil.rmtree(d, ignore_errors=True)


def single(files: int, concurrency: int, native_files: int = 0) -> dict:
    pr = Procs()
    try:
        port = free_port()
        data = os.path.join(pr.dir, "up")
        p = pr.spawn(
            [PY, "-m", "raftbox.cli", "up", "--data", data, "--listen", f"127.0.0.1:{port}"], "up"
        )
        wait_file(os.path.join(data, "token"))
        token = open(os.path.join(data, "token")).read().strip()
        url = f"https://127.0.0.1:{port}"
        ca = os.path.join(data, "ca.pem")
        return asyncio.run(workload(url, token, ca, files, concurrency, native_files, p.pid))
    finally:
        pr.stop()


def cluster(files: int, concurrency: int, via: str, native_files: int = 0) -> dict:
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
        return asyncio.run(workload(url, token, ca, files, concurrency, native_files))
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
    ap.add_argument("--setups", default="single,leader,follower")
    ap.add_argument("--native-files", type=int, default=0)
    ap.add_argument("--apply-files", type=int, default=0)
    a = ap.parse_args()
    if a.apply_files:
        us = apply_only(a.apply_files)
        print(f"state machine alone: {us:.0f} us of CPU per file committed by CommitBatch")
    setups = a.setups.split(",")
    n = a.native_files
    rows = []
    if "single" in setups:
        rows.append(("single node (raftbox up)", single(a.files, a.concurrency, n)))
    if "leader" in setups:
        rows.append(("3 members, via leader", cluster(a.files, a.concurrency, "leader", n)))
    if "follower" in setups:
        rows.append(("3 members, via follower", cluster(a.files, a.concurrency, "follower", n)))
    if not rows:  # `--setups none`: the state machine alone, say
        return 0
    head = f"{'setup':28} {'uploads/s':>10} {'list 10k (s)':>13} {'entries/s':>10}"
    print(head + (f" {'commit_batch files/s':>21}" if n else ""))
    for name, r in rows:
        line = (
            f"{name:28} {r['uploads_per_s']:10.0f} {r['list_s']:13.2f} {r['entries_per_s']:10.0f}"
        )
        print(line + (f" {r['commits_per_s'][0]:21.0f}" if n else ""))
    for name, r in rows:
        if r["server_cpu_ms_per_upload"]:
            cpu = f"{name}: server CPU {r['server_cpu_ms_per_upload']:.2f} ms per files/upload"
            if n:
                cpu += f", {r['commits_per_s'][1]:.0f} us per file committed by commit_batch"
            print(cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
