"""The seed's claim, measured: what N idle clients cost the servers when they poll
`list_folder/continue` every 30 s, versus when they wait on `list_folder/longpoll`.

    .venv/bin/python -m benchmarks.notify_polling [--clients 1000] [--speedup 10] [--window-s 60]

"Notification servers were added to not require clients to continuously poll the server. This
reduces the load on the system since clients that don't have changes don't impose any traffic
onto the servers." (seed.txt, question 4)

Real processes on 127.0.0.1: a meta member (`serve --roles meta,block,notify`, TLS) and a notify
leaf following it (plain HTTP, `--longpoll-min-timeout-s` lowered), and the clients in a separate
process (aiohttp, one keep-alive connection each, `--clients` of them, one namespace each, and
nothing changes). Time is compressed by `--speedup` on both sides alike — polls every 30/k s,
long-poll timeouts 480/k s (what a sync client asks) and 30/k s (the SDK's default) — so a
`--window-s` run covers k times as much client time; rates are reported in real (uncompressed)
time. Every client starts at a random phase. Counted: requests the servers received in the
window, and the CPU seconds each server process spent in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time

from .notify_common import PY, Procs, cpu_s, wait_for


async def clients_main(a: argparse.Namespace) -> None:
    """The client process: `--client-mode poll|longpoll`, cursors on stdin (one per line)."""
    import ssl

    import aiohttp

    cursors = [line.strip() for line in sys.stdin if line.strip()]
    tokens = json.loads(a.tokens) if a.tokens else []
    rng = random.Random(1)
    ctx = ssl.create_default_context(cafile=a.ca) if a.ca else None
    t_start, t_end = a.t_start, a.t_start + a.window_s
    sent_in_window = 0
    errors = 0

    async def poller(s: aiohttp.ClientSession, i: int) -> None:
        nonlocal sent_in_window, errors
        cursor = cursors[i]
        await asyncio.sleep(rng.uniform(0, a.period_s))
        while time.monotonic() < t_end:
            t = time.monotonic()
            if t_start <= t < t_end:
                sent_in_window += 1  # counted when sent: the window may close before the answer
            try:
                async with s.post(a.url + "/2/files/list_folder/continue", json={"cursor": cursor},
                                  headers={"Authorization": f"Bearer {tokens[i]}"}) as r:  # fmt: skip
                    cursor = (await r.json())["cursor"]
            except (aiohttp.ClientError, KeyError, ValueError):
                errors += 1
            await asyncio.sleep(max(0.0, a.period_s - (time.monotonic() - t)))

    async def longpoller(s: aiohttp.ClientSession, i: int) -> None:
        nonlocal sent_in_window, errors
        timeout = rng.randint(a.min_timeout_s, a.timeout_s)  # a random phase
        while time.monotonic() < t_end:
            t = time.monotonic()
            if t_start <= t < t_end:
                sent_in_window += 1
            try:
                async with s.post(a.url + "/2/files/list_folder/longpoll",
                                  json={"cursor": cursors[i], "timeout": timeout}) as r:  # fmt: skip
                    body = await r.json()
                    if body.get("changes") or "backoff" in body:
                        errors += 1
            except (aiohttp.ClientError, ValueError):
                errors += 1
            timeout = a.timeout_s

    conn = aiohttp.TCPConnector(limit=0, ssl=ctx if ctx else False)
    tmo = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=conn, timeout=tmo) as s:
        fn = poller if a.client_mode == "poll" else longpoller
        tasks = [asyncio.create_task(fn(s, i)) for i in range(len(cursors))]
        await asyncio.sleep(max(0.0, t_end - time.monotonic()))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"requests": sent_in_window, "errors": errors}), flush=True)


def measure(pr: Procs, mode: str, url: str, cursors: list[str], tokens: list[str],
            servers: dict[str, int], a: argparse.Namespace, period_s: float,
            timeout_s: int) -> dict:  # fmt: skip
    warm_s = period_s if mode == "poll" else 3.0
    t_start = time.monotonic() + 5.0 + warm_s  # the clients connect and settle first
    argv = [PY, "-m", "benchmarks.notify_polling", "--client-mode", mode, "--url", url,
            "--t-start", str(t_start), "--window-s", str(a.window_s),
            "--period-s", str(period_s), "--timeout-s", str(timeout_s),
            "--min-timeout-s", str(a.min_timeout_s)]  # fmt: skip
    if mode == "poll":
        argv += ["--ca", pr.ca, "--tokens", json.dumps(tokens)]
    p = pr.spawn(argv, f"clients-{mode}-{timeout_s}", stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE)  # fmt: skip
    p.stdin.write(("\n".join(cursors) + "\n").encode())
    p.stdin.close()
    wait_for(lambda: time.monotonic() >= t_start, 60, "the window opens", poll_s=0.01)
    cpu0 = {k: cpu_s(pid) for k, pid in servers.items()}
    wait_for(lambda: time.monotonic() >= t_start + a.window_s, a.window_s + 60, "window closes",
             poll_s=0.01)  # fmt: skip
    cpu1 = {k: cpu_s(pid) for k, pid in servers.items()}
    out = json.loads(p.stdout.readline())
    p.wait(timeout=60)
    real_s = a.window_s * a.speedup
    return {
        "requests_per_s": out["requests"] / real_s,
        "errors": out["errors"],
        "cpu": {k: (cpu1[k] - cpu0[k]) / real_s for k in servers},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--speedup", type=float, default=10.0)
    ap.add_argument("--window-s", type=float, default=60.0)
    ap.add_argument("--client-mode", choices=["poll", "longpoll"])
    ap.add_argument("--url")
    ap.add_argument("--ca")
    ap.add_argument("--tokens")
    ap.add_argument("--t-start", type=float)
    ap.add_argument("--period-s", type=float)
    ap.add_argument("--timeout-s", type=int)
    ap.add_argument("--min-timeout-s", type=int, default=1)
    a = ap.parse_args()
    if a.client_mode:
        import uvloop

        uvloop.run(clients_main(a))
        return 0
    k = a.speedup
    a.min_timeout_s = max(1, int(30 / k))
    pr = Procs("notify-polling-")
    try:
        meta_p, meta = pr.meta()
        leaf_p, leaf = pr.leaf(
            "leaf", meta, extra=["--longpoll-min-timeout-s", str(a.min_timeout_s)]
        )
        wait_for(lambda: pr.status(leaf)["upstream"], 30, "the leaf follows the root")
        tokens = [pr.account(meta, f"p{i}@bench.test") for i in range(a.clients)]
        cursors = [pr.cursor(meta, t) for t in tokens]
        servers = {"meta": meta_p.pid, "notify": leaf_p.pid}
        runs = [
            ("poll list_folder/continue every 30 s", "poll", meta, 30 / k, 0),
            ("long-poll, timeout 480 s", "longpoll", leaf, 0, int(480 / k)),
            ("long-poll, timeout 30 s (SDK default)", "longpoll", leaf, 0, int(30 / k)),
        ]
        rows = []
        for label, mode, url, period, timeout in runs:
            r = measure(pr, mode, url, cursors, tokens, servers, a, period, timeout)
            rows.append((label, r))
            print(f"  {label}: {r['requests_per_s']:.2f} req/s, errors {r['errors']}, "
                  f"CPU meta {r['cpu']['meta'] * 100:.2f} %, notify "
                  f"{r['cpu']['notify'] * 100:.2f} %", flush=True)  # fmt: skip
    finally:
        pr.stop()
    base = rows[0][1]
    print(f"\n{a.clients} idle clients (time compressed {k:g}x; rates in real time)")
    print(f"{'clients':40} {'req/s':>8} {'meta req/s':>10} {'meta CPU':>9} {'notify CPU':>10} "
          f"{'req ratio':>9}")  # fmt: skip
    for label, r in rows:
        meta_rps = r["requests_per_s"] if "poll list" in label else 0.0
        ratio = base["requests_per_s"] / r["requests_per_s"] if r["requests_per_s"] else 0
        print(f"{label:40} {r['requests_per_s']:8.2f} {meta_rps:10.2f} "
              f"{r['cpu']['meta'] * 100:8.2f}% {r['cpu']['notify'] * 100:9.2f}% "
              f"{ratio:8.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
