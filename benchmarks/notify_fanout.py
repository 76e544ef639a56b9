"""Fan-out latency: from a commit acknowledged to the long-polls it concerns answered.

    .venv/bin/python -m benchmarks.notify_fanout [--watchers 1000,10000] [--leaves 1,2]
        [--rounds 5] [--changes 200]

Real processes on 127.0.0.1: a meta member with a notify root inside (`serve --roles
meta,block,notify`), 1 or 2 leaves following it (`serve --roles notify --notify-root ...`, plain
HTTP), and one load generator (`benchmarks.notify_load`, a separate process) holding the
watchers, spread evenly over the leaves. This driver commits with `files/upload` and notes when
the commit is acknowledged; the generator stamps the first byte of each long-poll answer; both
read CLOCK_MONOTONIC, so the difference is the fan-out latency (it can be slightly negative: a
leaf may answer before the committer has read its own acknowledgement).

Two workloads:

- burst: every watcher watches ONE namespace; each commit wakes all of them at once (the worst
  case: a shared folder watched by everyone). `--rounds` commits; p50/p99 over every answer.
- spread: watchers spread over 1,000 namespaces (10 per namespace at 10,000 watchers); `--changes`
  commits, one at a time, each to a random namespace; p50/p99 over the answers of its watchers.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from .notify_common import LoadGen, Procs, pct, wait_for

SPREAD_NAMESPACES = 1000


def waiting(pr: Procs, leaves: list[str]) -> int:
    return sum(pr.status(u)["waiting"] for u in leaves)


def burst(pr: Procs, meta: str, leaves: list[str], gen: LoadGen, n: int, rounds: int) -> list:
    token = pr.account(meta, f"burst-{n}-{len(leaves)}-{time.monotonic_ns()}@bench.test")
    lat: list[float] = []
    for r in range(rounds):
        cursor = pr.cursor(meta, token)
        gen.send({"op": "poll", "conns": [0, n], "cursor": cursor, "timeout": 480})
        wait_for(lambda: waiting(pr, leaves) >= n, 120, f"{n} watchers wait")
        sent, acked = pr.upload(meta, token, f"/burst-{r}.txt")
        answers = gen.send({"op": "collect", "want": n, "timeout_s": 60})["answers"]
        assert len(answers) == n, f"{len(answers)} of {n} answered"
        assert all(a[2] == 200 and '"changes": true' in a[3] for a in answers), answers[:3]
        lat += [((a[1] - acked) * 1000, (a[1] - sent) * 1000) for a in answers]
    return lat


def spread(pr: Procs, meta: str, leaves: list[str], gen: LoadGen, n: int, changes: int,
           tokens: list[str]) -> list:  # fmt: skip
    per = n // len(tokens)
    groups = {k: (k * per, (k + 1) * per) for k in range(len(tokens))}
    for k, t in enumerate(tokens):
        gen.send({"op": "poll", "conns": list(groups[k]), "cursor": pr.cursor(meta, t)})
    wait_for(lambda: waiting(pr, leaves) >= per * len(tokens), 120, "watchers wait")
    rng = random.Random(7)
    lat: list[float] = []
    for c in range(changes):
        k = rng.randrange(len(tokens))
        sent, acked = pr.upload(meta, tokens[k], f"/spread-{c}.txt")
        answers = gen.send({"op": "collect", "want": per, "timeout_s": 60})["answers"]
        assert len(answers) == per and all(a[0] in range(*groups[k]) for a in answers)
        lat += [((a[1] - acked) * 1000, (a[1] - sent) * 1000) for a in answers]
        gen.send({"op": "poll", "conns": list(groups[k]), "cursor": pr.cursor(meta, tokens[k])})
        wait_for(lambda: waiting(pr, leaves) >= per * len(tokens), 60, "watchers wait again")
    gen.send({"op": "collect", "want": 0, "timeout_s": 0})
    return lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--watchers", default="1000,10000")
    ap.add_argument("--leaves", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--changes", type=int, default=200)
    a = ap.parse_args()
    rows = []
    pr = Procs("notify-fanout-")
    try:
        meta_p, meta = pr.meta()
        leaves_all = [
            pr.leaf(f"leaf{i}", meta)[1] for i in range(max(map(int, a.leaves.split(","))))
        ]
        for u in leaves_all:
            wait_for(lambda u=u: pr.status(u)["upstream"], 30, "leaf follows the root")
        tokens = [pr.account(meta, f"s{i}@bench.test") for i in range(SPREAD_NAMESPACES)]
        for nleaves in map(int, a.leaves.split(",")):
            leaves = leaves_all[:nleaves]
            for n in map(int, a.watchers.split(",")):
                targets = [(u, n // nleaves) for u in leaves]
                gen = LoadGen(pr, f"gen-{n}-{nleaves}", targets)
                try:
                    b = burst(pr, meta, leaves, gen, n, a.rounds)
                    s = spread(pr, meta, leaves, gen, n, a.changes, tokens)
                finally:
                    gen.close()
                wait_for(lambda ls=leaves: waiting(pr, ls) == 0, 60, "generator gone")
                for name, lat in (("burst", b), ("spread", s)):
                    ack = [x for x, _ in lat]
                    snd = [y for _, y in lat]
                    row = (name, n, nleaves, len(lat), pct(ack, 50), pct(ack, 99), max(ack),
                           pct(snd, 50), pct(snd, 99))  # fmt: skip
                    rows.append(row)
                    print(f"  {name:6} watchers={n:6d} leaves={nleaves} answers={len(lat):6d} "
                          f"from ack: p50={row[4]:6.1f} p99={row[5]:6.1f} max={row[6]:6.1f} ms; "
                          f"from send: p50={row[7]:6.1f} p99={row[8]:6.1f} ms", flush=True)  # fmt: skip
    finally:
        pr.stop()
    print(f"\n{'workload':8} {'watchers':>8} {'leaves':>6} {'answers':>8} | from commit ack: "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} | from commit sent: {'p50 ms':>7} "
          f"{'p99 ms':>7}")  # fmt: skip
    for name, n, nl, k, p50, p99, mx, s50, s99 in rows:
        print(f"{name:8} {n:8d} {nl:6d} {k:8d} | {'':16} {p50:7.1f} {p99:7.1f} {mx:7.1f} | "
              f"{'':17} {s50:7.1f} {s99:7.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
