"""Load generator for raft-kv, the raftbox side of `raft_vs_peers.py` (like etcdbench for etcd).

Runs in its own process so its CPU is counted apart from the members', as etcdbench's is.
`clients` concurrent workers share `conns` pipelined connections (KVClient); each worker issues
its requests one after another. Prints one JSON object: ops/s and latency percentiles.

    python benchmarks/kvload.py --endpoints 127.0.0.1:P --clients 256 --conns 16 --total 38400
    python benchmarks/kvload.py --endpoints ... --op loop --dur 10   # failover probe
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from raftbox.raft.kvclient import KVClient  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[int((len(xs) - 1) * p)]


async def run(args: argparse.Namespace) -> dict:
    eps = []
    for e in args.endpoints.split(","):
        host, _, port = e.rpartition(":")
        eps.append((host, int(port)))
    conns = [KVClient(eps, timeout_s=args.timeout) for _ in range(args.conns)]
    val = b"v" * args.val
    if args.op in ("get", "getstale"):
        await conns[0].put(b"bench/k0", val)
    if args.op == "loop":
        return await loop_probe(conns[0], val, args.dur)
    lat: list[float] = []
    per_worker = args.total // args.clients
    errors = 0

    stop_at = time.perf_counter() + args.run_s if args.run_s else None

    async def worker(w: int) -> None:
        nonlocal errors
        c = conns[w % len(conns)]
        for i in range(per_worker if stop_at is None else 10**9):
            if stop_at is not None and time.perf_counter() >= stop_at:
                return
            t0 = time.perf_counter()
            try:
                if args.op == "put":
                    await c.put(b"bench/%d/%d" % (w, i), val)
                else:
                    await c.get(b"bench/k0", stale=args.op == "getstale")
            except Exception:
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(args.clients)))
    elapsed = time.perf_counter() - t0
    for c in conns:
        await c.close()
    return {
        "op": args.op,
        "clients": args.clients,
        "val": args.val,
        "ops": len(lat),
        "errors": errors,
        "secs": elapsed,
        "rate": len(lat) / elapsed,
        "p50_ms": pct(lat, 0.5) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
    }


async def loop_probe(c: KVClient, val: bytes, dur: float) -> dict:
    """Sequential puts with a 100 ms timeout for `dur` s, printing `ok|err START_NS END_NS`
    per put as it goes (the format of etcdbench -op loop, read by measure_failover)."""
    c.timeout_s = 0.1
    end = time.time() + dur
    i = 0
    n = 0
    while time.time() < end:
        t0 = time.time_ns()
        try:
            await c.put(b"fo/%d" % i, val)
            status = "ok"
        except Exception:
            status = "err"
            await c._drop_connection()
        print(f"{status} {t0} {time.time_ns()}", flush=True)
        i += 1
        n += 1
    await c.close()
    return {"op": "loop", "puts": n}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", required=True)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--total", type=int, default=2000)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--op", default="put", choices=["put", "get", "getstale", "loop"])
    p.add_argument("--dur", type=float, default=10.0, help="loop mode: seconds")
    p.add_argument("--run-s", type=float, default=0.0, help="run for this long instead of --total")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
