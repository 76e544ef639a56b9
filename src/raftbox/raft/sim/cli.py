"""The command line: `python -m raftbox.raft.sim --seeds N [-j J]` (and `make sim`).

Runs seeds `--seed` .. `--seed + --seeds - 1` of one `--variant`, in `-j` worker processes
(forked; results come back in seed order), prints the report of each failing seed and a summary
line, and exits 1 if any seed failed. `-v` prints a line per seed; `-vv` (or `-v` with one
seed) every event of the run as it happens. A failure report ends with the command that
replays it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

from .cluster import Result, Sim
from .params import DEFAULT_STEPS
from .variants import VARIANTS


def run_seed(seed: int, steps: int = DEFAULT_STEPS, variant: str = "correct") -> Result:
    return Sim(seed, steps, variant).run()


def _run_job(args: tuple[int, int, str]) -> Result:
    return run_seed(*args)


def run_seeds(seeds: range, steps: int, variant: str, jobs: int = 1) -> Iterator[Result]:
    work = [(s, steps, variant) for s in seeds]
    if jobs <= 1:
        for w in work:
            yield _run_job(w)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool:
        yield from pool.imap(_run_job, work, chunksize=4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m raftbox.raft.sim",
        description="Deterministic simulation of a raftbox Raft cluster under faults.",
    )
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="fault-phase steps per seed")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="correct")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    ap.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: a line per seed; -vv: every event"
    )
    ap.add_argument(
        "--max-failures", type=int, default=5, help="stop after this many failing seeds (0: never)"
    )
    args = ap.parse_args(argv)
    seeds = range(args.seed, args.seed + args.seeds)
    t0 = time.monotonic()
    n = fails = steps = commits = 0
    if args.verbose >= 2 or (args.verbose and args.seeds == 1):
        results: Iterator[Result] = iter(
            [Sim(s, args.steps, args.variant, echo=print).run() for s in seeds]
        )
    else:
        results = run_seeds(seeds, args.steps, args.variant, args.jobs)
    for res in results:
        n += 1
        steps += res.steps
        commits += res.commits
        if args.verbose:
            print(
                f"seed {res.seed}: {'ok' if res.ok else 'FAIL ' + res.invariant} steps={res.steps} "
                f"commit={res.commits} leaders={res.leaders} applied={res.applied} "
                f"crashes={res.crashes} reads={res.reads} compactions={res.compactions} "
                f"installs={res.installs} "
                f"conf={res.conf_changes} fp={res.fingerprint}"
            )
        if not res.ok:
            fails += 1
            print(res.report, flush=True)
            if args.max_failures and fails >= args.max_failures:
                print(f"stopping after {fails} failing seeds (--max-failures)")
                break
    dt = time.monotonic() - t0
    print(
        f"sim: {n} seeds from {args.seed} variant={args.variant}: {fails} violations, "
        f"{steps} steps, {commits} commits, {dt:.1f}s"
    )
    return 1 if fails else 0
