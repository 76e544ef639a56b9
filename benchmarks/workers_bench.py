"""`serve --workers N` (issue 16, "use every core"): block upload throughput of a blockserver with
1 and 2 workers in the same run, and idle long-polls held by a notify leaf with N workers, with
the fan-out latency at that many watchers.

    .venv/bin/python -m benchmarks.workers_bench [--workers 1,2,1,2] [--upload-mib 512]
        [--clients 2] [--in-flight 4] [--watchers 50000] [--leaf-workers 3]
        [--rounds 2] [--changes 100] [--skip-upload] [--skip-notify] [--blocks-dir /dev/shm]

Real processes on 127.0.0.1: a meta member (with a notify root inside, TLS), then

- uploads, 1 and 2 workers alternately (`--workers 1,2,1,2`): a blockserver (`serve --roles
  block --meta ... --workers N`, TLS, the member's block directory or `--blocks-dir`, zstd
  level 3 as shipped) and `--clients` client processes (this module's
  `--put-client` mode), each with `--in-flight` connections of its own. Every client makes its
  share of `--upload-mib` as unique 1 MiB random blocks and hashes them *before* the clock
  starts, then sends them with `blocks/put` (4 blocks per request) as fast as the server takes
  them: the server receives, verifies each block's SHA-256, tries zstd, writes and fsyncs. MiB/s =
  all bytes / wall time from "go" to the last client done. The same clients and data size for
  every N; the blockserver is stopped before the next N starts.
- long-polls: a leaf (`serve --roles notify --notify-root ... --plain-http --workers N`, as
  behind a TLS-terminating balancer), and load generators (`benchmarks.notify_load`), each a
  process with at most 16,000 connections (its own open-file limit is 20,000) from its own
  source address (127.0.0.2, .3, ...: one address has 28,232 ephemeral ports). Each worker's
  count of parked long-polls and its pid come from its own `--metrics-listen` port.
  "burst": every watcher on ONE namespace, one commit wakes them all (`--rounds` times);
  "spread": watchers over 1,000 namespaces, `--changes` commits to random ones. Latency is from
  the commit's acknowledgement to the first byte of each answer (CLOCK_MONOTONIC on both sides).

Read ratios, not absolutes: the machine's cores are shared with whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from .notify_common import HOST, PY, LoadGen, Procs, free_port, pct, rss_kib, wait_for

BLOCK_BYTES = 1024 * 1024
BLOCKS_PER_PUT = 4
CONNS_PER_GENERATOR = 16_000
SPREAD_NAMESPACES = 1000


# -- the upload client (a process of its own) -------------------------------------------------
async def put_client(url: str, token: str, ca: str, mib: int, in_flight: int) -> None:
    from raftbox.blocks.hashing import block_id
    from raftbox.blocks.native import NativeClient

    blocks = []
    for _ in range(mib):
        b = os.urandom(BLOCK_BYTES)
        blocks.append((block_id(b), b))
    batches = [blocks[i : i + BLOCKS_PER_PUT] for i in range(0, len(blocks), BLOCKS_PER_PUT)]
    ctx = ssl.create_default_context(cafile=ca)
    clients = [NativeClient(url, token, ssl_context=ctx) for _ in range(in_flight)]
    await clients[0].config()  # one request before the clock: connections and TLS warm
    print(json.dumps({"ready": len(blocks)}), flush=True)
    sys.stdin.readline()  # "go"
    t0 = time.monotonic()

    async def lane(c: NativeClient) -> None:
        while batches:
            await c.put(batches.pop())

    await asyncio.gather(*(lane(c) for c in clients))
    dt = time.monotonic() - t0
    for c in clients:
        await c.aclose()
    print(json.dumps({"bytes": mib * BLOCK_BYTES, "seconds": dt}), flush=True)


def upload_run(pr: Procs, meta: str, token: str, workers: int, a: argparse.Namespace,
               run: int) -> dict:  # fmt: skip
    name = f"bs-{run}-{workers}"
    argv = ["--roles", "block", "--meta", meta, "--listen", f"{HOST}:{free_port()}",
            "--admin-token", pr.admin, "--ca", pr.ca, *pr.tls, "--workers", str(workers),
            "--blocks", "file://" + blocks_dir(pr, a)]  # fmt: skip
    bs, url = pr.serve(name, argv)
    try:
        per = a.upload_mib // a.clients
        clients = [
            pr.spawn([PY, "-m", "benchmarks.workers_bench", "--put-client", url, "--token", token,
                      "--ca", pr.ca, "--upload-mib", str(per), "--in-flight", str(a.in_flight)],
                     f"{name}-client-{k}", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for k in range(a.clients)
        ]  # fmt: skip
        for c in clients:
            if not c.stdout.readline():
                raise RuntimeError("an upload client died (see its log)")
        cpu0 = _cpu_tree(bs.pid)
        ccpu0 = sum(_cpu_tree(c.pid) for c in clients)
        t0 = time.monotonic()
        for c in clients:
            c.stdin.write(b"go\n")
            c.stdin.flush()
        results = [json.loads(c.stdout.readline()) for c in clients]
        wall = time.monotonic() - t0
        cpu = _cpu_tree(bs.pid) - cpu0
        ccpu = sum(_cpu_tree(c.pid) for c in clients) - ccpu0
        total = sum(r["bytes"] for r in results)
        return {"workers": workers, "mib": total / BLOCK_BYTES, "seconds": wall,
                "mib_s": total / BLOCK_BYTES / wall, "server_cpu_s": cpu,
                "client_cpu_s": ccpu}  # fmt: skip
    finally:
        bs.terminate()
        bs.wait(timeout=60)


def blocks_dir(pr: Procs, a: argparse.Namespace) -> str:
    """The cluster's block directory: the member's, or `--blocks-dir` (e.g. on /dev/shm, to take
    the disk's fsyncs out of the measurement)."""
    if a.blocks_dir:
        return os.path.join(a.blocks_dir, os.path.basename(pr.dir))
    return os.path.join(pr.dir, "meta", "blocks")


def _cpu_tree(pid: int) -> float:
    """CPU seconds of `pid` and its children (the supervisor and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d.name) == pid or int(f[1]) == pid:
            total += (int(f[11]) + int(f[12])) / tick
    return total


# -- long-polls ----------------------------------------------------------------------------------
def _metrics(port: int) -> str:
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _gauge(text: str, name: str) -> float:
    m = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class Leaf:
    def __init__(self, pr: Procs, meta: str, workers: int) -> None:
        self.mport = _consecutive_ports(workers)
        self.workers = workers
        extra = ["--workers", str(workers), "--metrics-listen", f"{HOST}:{self.mport}",
                 # the generators open every connection before the first poll, which takes
                 # minutes at 50,000 on a busy machine: longer than the default idle close
                 "--keepalive-timeout-s", "1800"]  # fmt: skip
        self.proc, self.url = pr.leaf(f"leaf-{workers}", meta, plain=True, extra=extra)

    def per_worker(self) -> list[dict]:
        out = []
        for k in range(self.workers):
            t = _metrics(self.mport + k)
            pid = int(re.search(r'^raftbox_worker\{.*pid="(\d+)"', t, re.M).group(1))
            out.append({"pid": pid, "waiting": int(_gauge(t, "raftbox_notify_longpolls_waiting")),
                        "upstream": _gauge(t, "raftbox_notify_upstream_connected")})  # fmt: skip
        return out

    def waiting(self) -> int:
        return sum(w["waiting"] for w in self.per_worker())


def _consecutive_ports(n: int) -> int:
    for _ in range(100):
        p = free_port()
        ok = True
        for k in range(1, n):
            with socket.socket() as s:
                try:
                    s.bind((HOST, p + k))
                except OSError:
                    ok = False
        if ok:
            return p
    raise RuntimeError("no free consecutive ports")


def notify_run(pr: Procs, meta: str, a: argparse.Namespace) -> dict:
    leaf = Leaf(pr, meta, a.leaf_workers)
    wait_for(lambda: all(w["upstream"] for w in leaf.per_worker()), 60, "workers follow the root")
    n = a.watchers
    ngen = -(-n // CONNS_PER_GENERATOR)
    shares = [n * (g + 1) // ngen - n * g // ngen for g in range(ngen)]
    t0 = time.monotonic()
    gens = [LoadGen(pr, f"gen-{g}", [(leaf.url, k)], source=f"127.0.0.{g + 2}")
            for g, k in enumerate(shares)]  # fmt: skip
    opened_s = time.monotonic() - t0
    out: dict = {"watchers": n, "leaf_workers": a.leaf_workers, "generators": ngen,
                 "open_s": round(opened_s, 1)}  # fmt: skip
    try:
        # burst: everyone on one namespace; the first round's parked polls are the "held" count
        token = pr.account(meta, f"burst-{time.monotonic_ns()}@bench.test")
        lat: list[float] = []
        for r in range(a.rounds):
            cursor = pr.cursor(meta, token)
            for g, k in zip(gens, shares, strict=True):
                g.send({"op": "poll", "conns": [0, k], "cursor": cursor, "timeout": 480})
            wait_for(lambda: leaf.waiting() >= n, 300, f"{n} long-polls parked")
            if r == 0:
                time.sleep(1.0)  # let RSS settle before reading it (a measurement, not a sync)
                per = leaf.per_worker()
                out["held"] = sum(w["waiting"] for w in per)
                out["per_worker"] = [w["waiting"] for w in per]
                out["rss_mib"] = [round(rss_kib(w["pid"]) / 1024, 1) for w in per]
            _sent, acked = pr.upload(meta, token, f"/burst-{r}.txt")
            got = []
            for g, k in zip(gens, shares, strict=True):
                got += g.send({"op": "collect", "want": k, "timeout_s": 120})["answers"]
            assert len(got) == n, f"{len(got)} of {n} answered"
            assert all(x[2] == 200 and '"changes": true' in x[3] for x in got), got[:3]
            lat += [(x[1] - acked) * 1000 for x in got]
        out["burst_ms"] = (pct(lat, 50), pct(lat, 99), max(lat))
        # spread: 1,000 namespaces, one commit at a time to a random one
        tokens = [pr.account(meta, f"s{i}-{time.monotonic_ns()}@bench.test")
                  for i in range(SPREAD_NAMESPACES)]  # fmt: skip
        groups = [[(k * j // SPREAD_NAMESPACES, k * (j + 1) // SPREAD_NAMESPACES) for k in shares]
                  for j in range(SPREAD_NAMESPACES)]  # fmt: skip

        def park(j: int) -> None:
            c = pr.cursor(meta, tokens[j])
            for g, (lo, hi) in zip(gens, groups[j], strict=True):
                g.send({"op": "poll", "conns": [lo, hi], "cursor": c, "timeout": 480})

        for j in range(SPREAD_NAMESPACES):
            park(j)
        wait_for(lambda: leaf.waiting() >= n, 300, "spread long-polls parked")
        rng = random.Random(7)
        lat = []
        for c in range(a.changes):
            j = rng.randrange(SPREAD_NAMESPACES)
            _sent, acked = pr.upload(meta, tokens[j], f"/spread-{c}.txt")
            for g, (lo, hi) in zip(gens, groups[j], strict=True):
                got = g.send({"op": "collect", "want": hi - lo, "timeout_s": 60})["answers"]
                assert len(got) == hi - lo and all(lo <= x[0] < hi for x in got)
                lat += [(x[1] - acked) * 1000 for x in got]
            park(j)
            wait_for(lambda: leaf.waiting() >= n, 60, "parked again")
        out["spread_ms"] = (pct(lat, 50), pct(lat, 99), max(lat))
        out["spread_answers"] = len(lat)
    finally:
        for g in gens:
            g.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", default="1,2,1,2")
    ap.add_argument("--upload-mib", type=int, default=512)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--watchers", type=int, default=50_000)
    ap.add_argument("--leaf-workers", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--skip-upload", action="store_true")
    ap.add_argument("--skip-notify", action="store_true")
    ap.add_argument("--blocks-dir", help="the block store's parent directory (default: the "
                    "member's data directory; a tmpfs takes the disk out)")  # fmt: skip
    ap.add_argument("--json")
    ap.add_argument("--keep-logs", help="copy every process's log here before cleaning up")
    ap.add_argument("--put-client", help=argparse.SUPPRESS)  # URL: run as an upload client
    ap.add_argument("--token", help=argparse.SUPPRESS)
    ap.add_argument("--ca", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.put_client:
        asyncio.run(put_client(a.put_client, a.token, a.ca, a.upload_mib, a.in_flight))
        return 0
    report: dict = {"cpus": os.cpu_count(), "load_avg_before": os.getloadavg()}
    pr = Procs("workers-bench-")
    try:
        _meta_p, meta = pr.meta(["--blocks", "file://" + blocks_dir(pr, a)])
        if not a.skip_upload:
            token = pr.account(meta, "uploads@bench.test")
            report["uploads"] = []
            for run, w in enumerate(map(int, a.workers.split(","))):
                row = upload_run(pr, meta, token, w, a, run)
                report["uploads"].append(row)
                print(f"  blocks/put, {w} worker(s): {row['mib']:.0f} MiB in {row['seconds']:.2f}"
                      f" s = {row['mib_s']:.1f} MiB/s (CPU: server {row['server_cpu_s']:.1f} s, clients {row['client_cpu_s']:.1f} s)",
                      flush=True)  # fmt: skip
            by: dict[int, list[float]] = {}
            for row in report["uploads"]:
                by.setdefault(row["workers"], []).append(row["mib_s"])
            best1 = max(by.get(1, [float("nan")]))
            for w, xs in sorted(by.items()):
                print(f"  {w} worker(s): best {max(xs):.1f} MiB/s = {max(xs) / best1:.2f}x the best "
                      f"of 1 worker (runs: {', '.join(f'{x:.1f}' for x in xs)})")  # fmt: skip
        if not a.skip_notify:
            r = report["notify"] = notify_run(pr, meta, a)
            print(f"  leaf with {r['leaf_workers']} workers held {r['held']} idle long-polls "
                  f"(per worker {r['per_worker']}, RSS MiB {r['rss_mib']}; opened by "
                  f"{r['generators']} generator processes in {r['open_s']} s)", flush=True)  # fmt: skip
            for k in ("burst_ms", "spread_ms"):
                p50, p99, mx = r[k]
                print(f"  {k[:-3]:6} at {r['watchers']} watchers: p50 {p50:.1f} p99 {p99:.1f} "
                      f"max {mx:.1f} ms (from the commit's acknowledgement)")  # fmt: skip
    finally:
        if a.keep_logs:
            import glob
            import shutil

            os.makedirs(a.keep_logs, exist_ok=True)
            for f in glob.glob(os.path.join(pr.dir, "*.log")):
                shutil.copy(f, a.keep_logs)
        pr.stop()
        if a.blocks_dir:
            import shutil

            shutil.rmtree(blocks_dir(pr, a), ignore_errors=True)
    report["load_avg_after"] = os.getloadavg()
    print(f"  load average before / after: {report['load_avg_before']} / "
          f"{report['load_avg_after']}")  # fmt: skip
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
