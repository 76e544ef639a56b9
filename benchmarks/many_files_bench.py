"""Many-files benchmark (issue 16): `raftbox sync` of a tree of many tiny files, pass by pass.

    .venv/bin/python -m benchmarks.many_files_bench [--files 100000] [--folders 1000]
        [--profile-dir DIR] [--json bench-out/many_files.json] [--tmp DIR]

`raftbox up` on 127.0.0.1 and one client logged in with `raftbox login`. The tree is the rescan
benchmark's (`rescan_bench.make_tree`: `--files` files of 20-68 random bytes in `--folders`
folders, mtimes an hour back so that the first scan may cache what it hashes). Three
`raftbox sync DIR` processes are timed one after the other, start-up included:

- **first**: uploads everything (folder creations and `commit_batch`es);
- **next**: reads back its own changes from the cursor (one listing entry per file and folder
  it just committed) and finds nothing to do;
- **no-op**: nothing changed on either side.

Targets (issue 16): next < 3 s, no-op < 1.5 s for 100,000 files in 1,000 folders. Each pass's
`--stats-json` is kept (seconds inside the process, requests' bytes). `--profile-dir` runs the
next and no-op passes under py-spy (installed in the venv: `pip install py-spy==0.4.1`) and
leaves a speedscope profile of each there. Every process started is stopped (try/finally) and
the work directory removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.rescan_bench import make_tree
from benchmarks.sync_bench import RAFTBOX, Raftbox, run

TARGETS_S = {"next": 3.0, "noop": 1.5}


def sync_pass(rb: Raftbox, folder: Path, name: str, timeout_s: float, prof: Path | None) -> dict:
    out = rb.work / f"stats-{name}.json"
    argv = [RAFTBOX, "sync", str(folder), "--config", str(rb.cfg["A"]), "--stats-json", str(out)]
    if prof is not None:
        spy = str(Path(sys.executable).with_name("py-spy"))
        argv = [spy, "record", "-r", "200", "-f", "speedscope",
                "-o", str(prof / f"{name}.speedscope.json"), "--", *argv]  # fmt: skip
    t0 = time.perf_counter()
    if prof is None:
        run(argv, timeout_s)
    else:  # py-spy may exit 1 ("No child process") after a clean profile: the stats decide
        subprocess.run(argv, timeout=timeout_s, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    stats = json.loads(out.read_text())
    return {"wall_s": wall, "stats": stats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--folders", type=int, default=1_000)
    ap.add_argument("--timeout", type=float, default=900.0, help="per sync process, seconds")
    ap.add_argument("--profile-dir", help="py-spy the next and no-op passes, profiles here")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--tmp", help="parent of the work directory (default: the system temp dir)")
    args = ap.parse_args()
    print("$ " + shlex.join([os.path.relpath(sys.executable), "-m", "benchmarks.many_files_bench",
                             *sys.argv[1:]]), flush=True)  # fmt: skip
    prof = Path(args.profile_dir) if args.profile_dir else None
    if prof is not None:
        prof.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="raftbox-many-files-bench-", dir=args.tmp))
    root = tmp / "A"
    root.mkdir()
    fig: dict = {"files": args.files, "folders": args.folders, "load": os.getloadavg()}
    try:
        t0 = time.perf_counter()
        make_tree(root, args.files, args.folders)
        print(f"made {args.files:,} files in {args.folders:,} folders in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)  # fmt: skip
        with Raftbox(tmp, root, tmp / "B", args.timeout) as rb:
            for name in ("first", "next", "noop"):
                r = sync_pass(rb, root, name, args.timeout, prof if name != "first" else None)
                fig[name] = r
                st = r["stats"]
                print(f"  {name:6} {r['wall_s']:7.2f} s wall  ({st['seconds']:.2f} s in the "
                      f"sync, {st['passes']} pass(es), up {st['uploaded_files']:,} files, "
                      f"sent {st['bytes_sent']:,} B, received {st['bytes_received']:,} B)",
                      flush=True)  # fmt: skip
                if not st["ok"]:
                    print(f"  {name}: the sync did not finish cleanly: {st}", flush=True)
        fig["load_after"] = os.getloadavg()
        print(f"\n== raftbox sync of {args.files:,} files in {args.folders:,} folders "
              f"(load {fig['load'][0]:.1f} before, {fig['load_after'][0]:.1f} after) ==")  # fmt: skip
        for name in ("first", "next", "noop"):
            tgt = TARGETS_S.get(name)
            verdict = (
                ""
                if tgt is None
                else (f"target < {tgt:.1f} s: {'met' if fig[name]['wall_s'] < tgt else 'MISSED'}")
            )
            print(f"  {name:6} {fig[name]['wall_s']:7.2f} s   {verdict}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(fig, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
