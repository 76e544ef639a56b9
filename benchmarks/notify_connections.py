"""How many idle long-polls one notify leaf holds, and its resident memory per connection.

    .venv/bin/python -m benchmarks.notify_connections [--conns 19000] [--steps 3]
        [--modes plain,tls] [--accounts 100]

Real processes on 127.0.0.1: a meta member (with a notify root inside), one leaf per mode
(`serve --roles notify --notify-root ...`, plain HTTP as behind a TLS-terminating load balancer,
or TLS), and load generators (`benchmarks.notify_load`, separate processes). The generators open
connections in steps and park one long-poll (timeout 480 s) on each, spread over `--accounts`
namespaces; at each step, once the leaf reports every one of them waiting, its VmRSS is read.
Memory per connection = (RSS at the step - RSS before any connection) / connections; kernel socket
buffers are not in RSS (they are kernel memory: `ss -tm` shows a few hundred bytes per idle
socket).

Every process raises its soft open-file limit to the hard one; the hard limit (here: `ulimit
-Hn`) caps connections per process, and only a privileged process can raise it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from .notify_common import LoadGen, Procs, rss_kib, wait_for


def run_mode(pr: Procs, meta_url: str, tokens: list[str], cursors: list[str], mode: str,
             conns: int, steps: int) -> list[dict]:  # fmt: skip
    plain = mode == "plain"
    leaf, url = pr.leaf(f"leaf-{mode}", meta_url, plain=plain)
    wait_for(lambda: pr.status(url)["upstream"], 30, "the leaf follows the root")
    # warm up: every code path once, and every namespace known to the leaf
    warm = LoadGen(pr, f"warm-{mode}", [(url, len(cursors))], ca=None if plain else pr.ca)
    for k, c in enumerate(cursors):
        warm.send({"op": "poll", "conns": [k, k + 1], "cursor": c, "timeout": 30})
    wait_for(lambda: pr.status(url)["waiting"] == len(cursors), 60, "warm-up polls wait")
    warm.close()
    wait_for(lambda: pr.status(url)["waiting"] == 0, 60, "warm-up connections gone")
    time.sleep(1.0)  # let the allocator settle before the baseline (a measurement, not a sync)
    base = rss_kib(leaf.pid)
    rows, gens, held = [], [], 0
    per_step = [conns * (i + 1) // steps - conns * i // steps for i in range(steps)]
    for i, n in enumerate(per_step):
        t0 = time.monotonic()
        g = LoadGen(pr, f"gen-{mode}-{i}", [(url, n)], ca=None if plain else pr.ca)
        gens.append(g)
        share = n // len(cursors) + 1
        for k, c in enumerate(cursors):
            lo, hi = k * share, min(n, (k + 1) * share)
            if lo < hi:
                g.send({"op": "poll", "conns": [lo, hi], "cursor": c, "timeout": 480})
        held += n
        wait_for(lambda h=held: pr.status(url)["waiting"] >= h, 300, f"{held} long-polls wait")
        opened_s = time.monotonic() - t0
        time.sleep(1.0)
        rss = rss_kib(leaf.pid)
        st = pr.status(url)
        rows.append({"mode": mode, "connections": held, "waiting": st["waiting"],
                     "rss_mib": rss / 1024, "base_mib": base / 1024,
                     "kib_per_conn": (rss - base) / held, "open_s": opened_s})  # fmt: skip
        print(f"  {mode:5} {held:7d} waiting={st['waiting']:6d} rss={rss / 1024:7.1f} MiB "
              f"({(rss - base) / held:5.2f} KiB/conn)", flush=True)  # fmt: skip
    for g in gens:
        g.close()
    leaf.terminate()
    leaf.wait(timeout=30)
    return rows


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--conns", type=int, default=max(1000, hard - 1000))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--modes", default="plain,tls")
    ap.add_argument("--accounts", type=int, default=100)
    a = ap.parse_args()
    print(f"open-file limit: soft {soft}, hard {hard} (per process); target {a.conns} "
          "connections per leaf", flush=True)  # fmt: skip
    pr = Procs("notify-conns-")
    try:
        _, meta_url = pr.meta()
        tokens = [pr.account(meta_url, f"c{i}@bench.test") for i in range(a.accounts)]
        cursors = [pr.cursor(meta_url, t) for t in tokens]
        rows = []
        for mode in a.modes.split(","):
            rows += run_mode(pr, meta_url, tokens, cursors, mode, a.conns, a.steps)
    finally:
        pr.stop()
    print(f"\n{'leaf serves':12} {'idle long-polls':>16} {'RSS MiB':>9} {'KiB/conn':>9}")
    for r in rows:
        label = "plain HTTP" if r["mode"] == "plain" else "TLS"
        print(f"{label:12} {r['connections']:16d} {r['rss_mib']:9.1f} {r['kib_per_conn']:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
