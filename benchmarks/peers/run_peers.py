"""Standalone runner for the peer side of the Raft benchmark: etcd and PySyncObj, one table.

    .venv/bin/python -m benchmarks.peers.run_peers [--quick] [--json OUT.json]

Run from the repo root. Builds etcdbench (via setup.sh) into bench-out/peers/ if it is missing.
Full run ~3-4 min, --quick ~1.5 min. Every process started is stopped before it returns.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .etcd import DEFAULT_BIN_DIR, ensure_etcdbench, run_etcd
from .pysyncobj_kv import run_pysyncobj


def _cell(r: dict | None) -> str:
    if not r:
        return "-"
    s = f"{r['rps']:,.0f}/s p99 {r['p99_ms']:.1f}ms"
    return s + (f" ({r['errs']} err)" if r.get("errs") else "")


def _find(res: dict, clients: int, val: int) -> dict | None:
    for r in res.get("put", []):
        if r["clients"] == clients and r["val"] == val:
            return r
    return None


def table(results: dict[str, dict]) -> str:
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, f) -> None:
        cells = []
        for n in names:
            try:
                cells.append(f(results[n]))
            except (KeyError, TypeError, ValueError):
                cells.append("-")
        rows.append((label, cells))

    add(
        "seq put 100B p50 / p99",
        lambda r: f"{r['seq_put']['p50_ms']:.2f} / {r['seq_put']['p99_ms']:.2f} ms",
    )
    add("seq put 100B rate", lambda r: f"{r['seq_put']['rps']:,.0f}/s")
    for val, vname in ((100, "100B"), (1024, "1KiB")):
        for c in (16, 64, 256):
            add(f"put {vname} x{c}", lambda r, c=c, val=val: _cell(_find(r, c, val)))
    add("linearizable get x64", lambda r: _cell(r["get_linearizable"]))
    add("local/serializable get x64", lambda r: _cell(r["get_serializable"]))

    def fo(r: dict) -> str:
        f = r["failover"]
        if "median_s" not in f:
            return "failed"
        s = f"{f['median_s']:.2f}s ({f['min_s']:.2f}-{f['max_s']:.2f}, n={len(f['runs_s'])})"
        return s + (f" {len(f['errors'])} failed" if f["errors"] else "")

    add("failover (kill -9 leader) median", fo)
    add("durability", lambda r: r["durability"].split(" (")[0].split(",")[0])
    w0 = max(len(lbl) for lbl, _ in rows)
    ws = [max(len(n), *(len(c[i]) for _, c in rows)) for i, n in enumerate(names)]
    lines = ["  ".join([" " * w0, *(n.ljust(w) for n, w in zip(names, ws, strict=True))])]
    lines.append("  ".join(["-" * w0, *("-" * w for w in ws)]))
    for lbl, cells in rows:
        lines.append(
            "  ".join([lbl.ljust(w0), *(c.ljust(w) for c, w in zip(cells, ws, strict=True))])
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peers.run_peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="1 s per figure, 3 failover runs")
    ap.add_argument("--json", type=Path, help="also write all results to this file")
    ap.add_argument("--only", choices=("etcd", "pysyncobj"), help="run one peer only")
    ap.add_argument("--no-tuned", action="store_true", help="skip the tuned PySyncObj variant")
    ap.add_argument("--failover-runs", type=int, help="default 5 (3 with --quick)")
    ap.add_argument("--etcd-base-port", type=int, default=23790)
    ap.add_argument("--pysyncobj-base-port", type=int, default=24790)
    ap.add_argument("--data-root", help="parent dir of the temp data dirs (default: system temp)")
    ap.add_argument(
        "--bin-dir", type=Path, default=DEFAULT_BIN_DIR, help="where etcdbench is built"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="print each figure as it comes")
    a = ap.parse_args(argv)

    def log(s: str) -> None:
        if a.verbose:
            print(s, file=sys.stderr, flush=True)

    t0 = time.monotonic()
    results: dict[str, dict] = {}
    common = dict(quick=a.quick, data_root=a.data_root, failover_runs=a.failover_runs, log=log)
    if a.only in (None, "etcd"):
        print("etcd ...", file=sys.stderr, flush=True)
        results["etcd"] = run_etcd(
            ensure_etcdbench(a.bin_dir), base_port=a.etcd_base_port, **common
        )
    if a.only in (None, "pysyncobj"):
        print("pysyncobj (defaults) ...", file=sys.stderr, flush=True)
        results["pysyncobj"] = run_pysyncobj(base_port=a.pysyncobj_base_port, **common)
        if not a.no_tuned:
            print("pysyncobj (tuned) ...", file=sys.stderr, flush=True)
            results["pysyncobj-tuned"] = run_pysyncobj(
                tuned=True, base_port=a.pysyncobj_base_port, **common
            )
    took = time.monotonic() - t0

    print()
    for n, r in results.items():
        print(f"{n}: {r['system']}; durability: {r['durability']}; client: {r['client']}")
    print()
    print(table(results))
    print()
    print(
        "cells: throughput with N requests in flight, p99 latency; failover = kill -9 of the leader"
    )
    print("until the first put started after the kill succeeds via a surviving member.")
    for n, r in results.items():
        exits = r.get("member_exits") or r.get("replica_exits")
        if exits:
            print(f"WARNING: {n}: members {exits} died during the throughput runs")
    print(f"took {took:.0f}s")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"took_s": round(took, 1), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
