"""Rescan benchmark: how long the sync client takes to notice that nothing changed.

    .venv/bin/python -m benchmarks.rescan_bench [--files 100000] [--folders 1000] [--runs 3]
                                                [--profile] [--json bench-out/rescan.json]

`--files` small files (16-64 random bytes each) in `--folders` sub-folders of a sync folder on
this machine's disk. Their mtimes are set 1 h in the past (a file modified within
`scanner.RACY_NS` of a scan is never cached), then `scanner.scan(root, Index(root))` runs once to
fill the SQLite scan cache (every file is hashed), and the unchanged rescan is timed `--runs`
times on the same `Index` (best and median): each must hash nothing. For scale, the same run
also times a bare `os.walk` + `lstat` of the tree (the floor of any rescan in Python) and the
index's own cost. Target: the unchanged rescan of 100,000 files in under 3 s. `--profile`
prints the top of a cProfile of one rescan.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from raftbox.client.index import Index
from raftbox.client.scanner import scan

TARGET_S = 3.0
PAST_NS = 3600 * 10**9  # an hour back: far outside the racily-clean window


def make_tree(root: Path, files: int, folders: int) -> None:
    """`files` files spread over `folders` folders (two levels: 1/10 of them hold the rest)."""
    now = time.time_ns()
    past = (now - PAST_NS, now - PAST_NS)
    tops = max(1, folders // 10)
    dirs = []
    for i in range(folders):
        d = root / f"top{i % tops:03d}" / f"dir{i:04d}" if i >= tops else root / f"top{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        dirs.append(d)
    rnd = os.urandom(64 * 1024)
    for i in range(files):
        p = dirs[i % folders] / f"file{i:06d}.txt"
        n = 16 + i % 49
        off = (i * 7919) % (len(rnd) - n)
        with open(p, "wb") as f:
            f.write(rnd[off : off + n] + i.to_bytes(4, "little"))
        os.utime(p, ns=past)


def walk_floor(root: Path) -> tuple[float, int]:
    """A bare os.scandir walk with an lstat of every entry: what any Python rescan must pay."""
    t0 = time.perf_counter()
    n = 0
    stack = [os.fspath(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for de in it:
                de.stat(follow_symlinks=False)
                n += 1
                if de.is_dir(follow_symlinks=False):
                    stack.append(de.path)
    return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--folders", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one more rescan")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--tmp", help="parent of the work directory (default: the system temp dir)")
    args = ap.parse_args()
    print("$ " + shlex.join([os.path.relpath(sys.executable), "-m", "benchmarks.rescan_bench",
                             *sys.argv[1:]]), flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="raftbox-rescan-bench-", dir=args.tmp))
    root = tmp / "sync"
    root.mkdir()
    fig: dict = {"files": args.files, "folders": args.folders}
    try:
        t0 = time.perf_counter()
        make_tree(root, args.files, args.folders)
        print(f"made {args.files:,} files in {args.folders:,} folders under {root} "
              f"in {time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
        with Index(root) as ix:
            t0 = time.perf_counter()
            first = scan(root, ix)
            fig["first_scan_s"] = time.perf_counter() - t0
            assert first.hashed == args.files and not first.skipped, (first.hashed, first.skipped)
            files_in_tree = sum(1 for n in first.tree.values() if n.kind.value == "file")
            assert files_in_tree == args.files, files_in_tree
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                res = scan(root, ix)
                times.append(time.perf_counter() - t0)
                assert res.hashed == 0 and res.cached == args.files, (res.hashed, res.cached)
                assert res.tree == first.tree
            fig["rescan_s"] = times
            fig["floor_s"] = min(walk_floor(root)[0] for _ in range(args.runs))
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                scan(root, ix)
                prof.disable()
        best, med = min(times), statistics.median(times)
        fig.update(best_s=best, median_s=med, target_s=TARGET_S)
        print(f"\n== unchanged rescan of {args.files:,} files / {args.folders:,} folders ==")
        print(f"  first scan (hash all, fill cache) {fig['first_scan_s']:7.2f} s")
        print(f"  rescan, best of {args.runs}                {best:7.2f} s   "
              f"({args.files / best:,.0f} files/s)")  # fmt: skip
        print(f"  rescan, median of {args.runs}              {med:7.2f} s   "
              f"(all: {', '.join(f'{t:.2f}' for t in times)})")  # fmt: skip
        print(f"  bare scandir+lstat walk (floor)   {fig['floor_s']:7.2f} s   "
              f"rescan/floor {best / fig['floor_s']:.1f}x")  # fmt: skip
        verdict = "met" if med < TARGET_S else "MISSED"
        print(f"  target median rescan < {TARGET_S:.0f} s: {verdict}")
        if args.profile:
            print("\ncProfile of one more rescan (top 20 by own time):")
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(20)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(fig, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
