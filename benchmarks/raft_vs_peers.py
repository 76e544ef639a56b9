"""Raft writes and reads: raftbox raft-kv against etcd and PySyncObj, in one run, one machine.

    .venv/bin/python -m benchmarks.raft_vs_peers [--quick] [--json OUT.json]
    # while iterating: only etcd and raftbox (TLS and plain peers), two loads, no failover
    .venv/bin/python -m benchmarks.raft_vs_peers -v --systems raftbox,raftbox-plain,etcd \
        --clients 64,256 --values 100,1024 --failover-runs 0
    # on a machine whose load moves by the minute: the clusters side by side, each figure
    # measured on each system in turn (A, B, B, A, ...), the median of the rounds kept
    .venv/bin/python -m benchmarks.raft_vs_peers -v --interleave 3 --systems raftbox,etcd

(or `make bench-raft`). Each system runs as 3 members on 127.0.0.1 with its load generator in a
separate process: etcdbench (Go, etcd's clientv3) for etcd, kvload.py for raftbox, the
pysyncobj_kv generator for PySyncObj — N workers with one request in flight each, over
min(N, 16) connections, sent to the leader. etcd and raftbox fsync before acknowledging;
PySyncObj never fsyncs (measured as shipped, not durable). The machine is shared and noisy, so
the ratios from one run matter more than absolute figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.peers.etcd import (
    DEFAULT_BIN_DIR,
    EtcdCluster,
    ensure_etcdbench,
    etcd_version,
    etcdbench,
    run_etcd,
)
from benchmarks.peers.pysyncobj_kv import run_pysyncobj
from benchmarks.peers.run_peers import _find, table
from benchmarks.raftkv_bench import RaftKVCluster, kvload, run_raftbox


def run_interleaved(
    systems: list[str],
    rounds: int,
    clients: tuple[int, ...],
    values: tuple[int, ...],
    dur_s: float,
    log,
) -> dict[str, dict]:
    """Put figures (and the sequential one) of raftbox (TLS or plain peers) and etcd with all
    clusters running side by side (an idle cluster costs ~1% of a core), each figure measured
    on every system in turn, the order reversed every round; per figure the round with the
    median throughput is kept. A load that drifts during the run then hits every system alike."""
    import contextlib
    import statistics

    binary = ensure_etcdbench(DEFAULT_BIN_DIR)
    with contextlib.ExitStack() as stack:
        clusters, loads, res = {}, {}, {}
        for n, name in enumerate(systems):
            if name in ("raftbox", "raftbox-plain"):
                plain = name == "raftbox-plain"
                clusters[name] = stack.enter_context(RaftKVCluster(25790 + 100 * n, None, plain))
                loads[name] = kvload
                peers = "plain TCP" if plain else "mutual TLS"
                system = f"raftbox raft-kv (Python 3.11, uvloop), peers over {peers}"
                dura = "fdatasync on a majority before every ack (group commit)"
                client = "kvload.py (asyncio, pipelined msgpack/TCP), requests sent to the leader"
            elif name == "etcd":
                clusters[name] = stack.enter_context(EtcdCluster(23790))
                loads[name] = lambda ep, op, c, v, d: etcdbench(binary, ep, op, c, v, d)
                system, dura = f"etcd {etcd_version()}", "fsync on every commit (default)"
                client = "etcdbench (Go, clientv3/gRPC), requests sent to the leader"
            else:
                raise ValueError(f"--interleave runs raftbox, raftbox-plain and etcd, not {name}")
            res[name] = {"system": system, "durability": dura, "client": client, "put": []}
            res[name]["interleaved_rounds"] = rounds
        for cl in clusters.values():
            cl.wait_ready()
        figures = [(1, 100)] + [(c, v) for v in values for c in clients]
        for c, v in figures:
            runs: dict[str, list[dict]] = {n: [] for n in systems}
            for r in range(rounds):
                for name in systems if r % 2 == 0 else systems[::-1]:
                    cl = clusters[name]
                    lead = cl.wait_ready(timeout_s=15)
                    x = loads[name](cl.endpoints[lead], "put", c, v, dur_s)
                    runs[name].append(x)
                    log(f"{name} put clients={c} val={v} round {r + 1}: {x['rps']:.0f}/s "
                        f"p50={x['p50_ms']:.2f}ms p99={x['p99_ms']:.2f}ms")  # fmt: skip
            for name, xs in runs.items():
                med = sorted(xs, key=lambda x: x["rps"])[len(xs) // 2]
                med = {**med, "clients": c, "val": v, "rounds_rps": [x["rps"] for x in xs]}
                med["rounds_p99_ms"] = [x["p99_ms"] for x in xs]
                if c == 1:
                    res[name]["seq_put"] = med
                else:
                    res[name]["put"].append(med)
                log(f"  {name}: median {statistics.median(x['rps'] for x in xs):.0f}/s")
        return res


def ratios(res: dict, base: str, peer: str, clients=(16, 64, 256), values=(100, 1024)) -> list[str]:
    a, b = res[base], res[peer]
    out = []

    def line(label: str, x: float | None, y: float | None, lower_is_better: bool = False) -> None:
        if not x or not y:
            return
        r = x / y
        out.append(f"  {label}: {r:.2f}x" + (" (lower is better)" if lower_is_better else ""))

    line("seq put p50 latency", a["seq_put"]["p50_ms"], b["seq_put"]["p50_ms"], True)
    line("seq put p99 latency", a["seq_put"]["p99_ms"], b["seq_put"]["p99_ms"], True)
    for val in values:
        for c in clients:
            ra, rb = _find(a, c, val), _find(b, c, val)
            if ra and rb:
                line(f"put {val}B x{c} throughput", ra["rps"], rb["rps"])
                line(f"put {val}B x{c} p99", ra["p99_ms"], rb["p99_ms"], True)
    ga, gb = a.get("get_linearizable"), b.get("get_linearizable")
    if ga and gb:
        line("linearizable get x64", ga["rps"], gb["rps"])
    fa, fb = a.get("failover", {}).get("median_s"), b.get("failover", {}).get("median_s")
    line("failover median", fa, fb, True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1 s per figure, 3 failover runs")
    ap.add_argument("--json", type=Path, help="also write all results to this file")
    ap.add_argument("--failover-runs", type=int)
    ap.add_argument("--no-pysyncobj-tuned", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument(
        "--systems",
        default="raftbox,etcd,pysyncobj,pysyncobj-tuned",
        help="comma-separated, in run order, of: raftbox (peers over mutual TLS, as in "
        "production), raftbox-plain (peers over plain TCP, as etcd's here), etcd, pysyncobj, "
        "pysyncobj-tuned; ratios are against the first raftbox* named",
    )
    ap.add_argument("--clients", default="16,64,256", help="concurrencies of the put figures")
    ap.add_argument("--values", default="100,1024", help="value sizes (bytes) of the put figures")
    ap.add_argument(
        "--interleave",
        type=int,
        metavar="ROUNDS",
        help="put figures only, with the clusters side by side and each figure measured on "
        "each system in turn, ROUNDS times (see run_interleaved)",
    )
    a = ap.parse_args(argv)
    systems = [s for s in a.systems.split(",") if s]
    if a.no_pysyncobj_tuned and "pysyncobj-tuned" in systems:
        systems.remove("pysyncobj-tuned")
    loads = dict(
        clients=tuple(int(x) for x in a.clients.split(",")),
        values=tuple(int(x) for x in a.values.split(",")),
    )

    def log(s: str) -> None:
        if a.verbose:
            print(s, file=sys.stderr, flush=True)

    common = dict(quick=a.quick, failover_runs=a.failover_runs, log=log)
    t0 = time.monotonic()
    results: dict[str, dict] = {}
    if a.interleave:
        dur = 1.0 if a.quick else 3.0
        results = run_interleaved(systems, a.interleave, **loads, dur_s=dur, log=log)
        systems = []
    for name in systems:
        print(f"{name} ...", file=sys.stderr, flush=True)
        if name == "raftbox":
            results[name] = run_raftbox(**loads, **common)
        elif name == "raftbox-plain":
            results[name] = run_raftbox(plain_peers=True, **loads, **common)
        elif name == "etcd":
            results[name] = run_etcd(ensure_etcdbench(DEFAULT_BIN_DIR), **loads, **common)
        elif name == "pysyncobj":
            results[name] = run_pysyncobj(**common)
        elif name == "pysyncobj-tuned":
            results[name] = run_pysyncobj(tuned=True, **common)
        else:
            ap.error(f"unknown system {name!r}")
    took = time.monotonic() - t0
    base = next((n for n in results if n.startswith("raftbox")), None)

    print()
    for n, r in results.items():
        print(f"{n}: {r['system']}; durability: {r['durability']}; client: {r['client']}")
    print()
    print(table(results))
    print()
    for peer in results:
        if base is not None and peer != base:
            print(f"{base} / {peer}:")
            print("\n".join(ratios(results, base, peer, loads["clients"], loads["values"])))
    print(f"took {took:.0f}s")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"took_s": round(took, 1), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
