"""Raft writes and reads: raftbox raft-kv against etcd and PySyncObj, in one run, one machine.

    .venv/bin/python -m benchmarks.raft_vs_peers [--quick] [--json OUT.json]

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

from benchmarks.peers.etcd import DEFAULT_BIN_DIR, ensure_etcdbench, run_etcd
from benchmarks.peers.pysyncobj_kv import run_pysyncobj
from benchmarks.peers.run_peers import _find, table
from benchmarks.raftkv_bench import run_raftbox


def ratios(res: dict, base: str, peer: str) -> list[str]:
    a, b = res[base], res[peer]
    out = []

    def line(label: str, x: float | None, y: float | None, lower_is_better: bool = False) -> None:
        if not x or not y:
            return
        r = x / y
        out.append(f"  {label}: {r:.2f}x" + (" (lower is better)" if lower_is_better else ""))

    line("seq put p50 latency", a["seq_put"]["p50_ms"], b["seq_put"]["p50_ms"], True)
    for val in (100, 1024):
        for c in (16, 64, 256):
            ra, rb = _find(a, c, val), _find(b, c, val)
            if ra and rb:
                line(f"put {val}B x{c} throughput", ra["rps"], rb["rps"])
    line("linearizable get x64", a["get_linearizable"]["rps"], b["get_linearizable"]["rps"])
    fa, fb = a["failover"].get("median_s"), b["failover"].get("median_s")
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
    a = ap.parse_args(argv)

    def log(s: str) -> None:
        if a.verbose:
            print(s, file=sys.stderr, flush=True)

    common = dict(quick=a.quick, failover_runs=a.failover_runs, log=log)
    t0 = time.monotonic()
    results: dict[str, dict] = {}
    print("raftbox ...", file=sys.stderr, flush=True)
    results["raftbox"] = run_raftbox(**common)
    print("etcd ...", file=sys.stderr, flush=True)
    results["etcd"] = run_etcd(ensure_etcdbench(DEFAULT_BIN_DIR), **common)
    print("pysyncobj ...", file=sys.stderr, flush=True)
    results["pysyncobj"] = run_pysyncobj(**common)
    if not a.no_pysyncobj_tuned:
        results["pysyncobj-tuned"] = run_pysyncobj(tuned=True, **common)
    took = time.monotonic() - t0

    print()
    for n, r in results.items():
        print(f"{n}: {r['system']}; durability: {r['durability']}; client: {r['client']}")
    print()
    print(table(results))
    print()
    for peer in results:
        if peer != "raftbox":
            print(f"raftbox / {peer}:")
            print("\n".join(ratios(results, "raftbox", peer)))
    print(f"took {took:.0f}s")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"took_s": round(took, 1), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
