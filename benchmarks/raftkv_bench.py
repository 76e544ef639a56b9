"""The raftbox side of the Raft benchmark: a 3-member raft-kv cluster of real processes.

Same figures, same shapes and same load model as `peers/etcd.py` (so `raft_vs_peers.py` can put
them side by side): the load generator (`kvload.py`) runs in its own process, N workers each with
one request in flight, over min(N, 16) pipelined connections, sent to the leader. Durability:
every entry is fsynced (fdatasync) on a majority before it is acknowledged; group commit makes
one fsync cover every entry that arrived meanwhile. Default settings: tick 50 ms, election
timeout 10–20 ticks.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.peers.etcd import (
    ProcessCluster,
    check_ports,
    conns_for,
    measure_failovers,
    measure_figures,
    run_json,
    spawn,
)

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KVLOAD = str(ROOT / "benchmarks" / "kvload.py")


class RaftKVCluster(ProcessCluster):
    """`plain_peers`: the members talk plain TCP (`--insecure-plaintext-peers`, loopback only),
    as etcd's peers do in this benchmark; otherwise mutual TLS, as in production."""

    def __init__(
        self, base_port: int, data_root: str | None = None, plain_peers: bool = False
    ) -> None:
        super().__init__()
        self.base = base_port
        self.plain_peers = plain_peers
        self.dir = Path(tempfile.mkdtemp(prefix="raftkv-bench-", dir=data_root))
        self.endpoints = [f"127.0.0.1:{base_port + i}" for i in (1, 2, 3)]
        # Mutual TLS between members, as `raftbox cluster init` makes it.
        from raftbox import cluster

        self.bundles = cluster.init(
            os.path.join(self.dir, "bundles"),
            {i: ("127.0.0.1", base_port + 10 + i) for i in (1, 2, 3)},
        )

    def start(self) -> None:
        check_ports([self.base + i for i in (1, 2, 3, 11, 12, 13)])
        for i in range(3):
            self._start_one(i)

    def _start_one(self, i: int) -> None:
        n = i + 1
        argv = [PY, "-m", "raftbox.cli", "raft-kv", "serve", "--cluster", self.bundles[i],
                "--data", os.path.join(self.dir, f"m{n}"),
                "--listen", self.endpoints[i]]  # fmt: skip
        if self.plain_peers:
            peers = ",".join(f"{j}=127.0.0.1:{self.base + 10 + j}" for j in (1, 2, 3))
            argv = [PY, "-m", "raftbox.cli", "raft-kv", "serve", "--insecure-plaintext-peers",
                    "--id", str(n), "--peers", peers, "--peer-listen", f"127.0.0.1:{self.base + 10 + n}",
                    "--data", os.path.join(self.dir, f"m{n}"),
                    "--listen", self.endpoints[i]]  # fmt: skip
        self.procs[i] = spawn(argv, log_path=Path(self.dir) / f"m{n}.log", cwd=ROOT)

    def status(self, i: int) -> dict | None:
        """Member i's status, asked from this process (a `raft-kv status` subprocess took
        longer to start than its timeout on a machine with a load average of 20)."""
        import asyncio

        from raftbox.raft.kvclient import KVClient

        host, _, port = self.endpoints[i].rpartition(":")

        async def ask() -> dict:
            async with KVClient([(host, int(port))], timeout_s=2.0) as c:
                return await c.status()

        try:
            return asyncio.run(ask())
        except Exception:
            return None

    def wait_ready(self, timeout_s: float = 30.0) -> int:
        """Index (0-based) of the leader once one is known and has committed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i in range(3):
                if self.procs[i] is None or self.procs[i].poll() is not None:
                    continue
                st = self.status(i)
                if st and st["leader"] and st["commit"] >= 2:
                    return st["leader"] - 1
            time.sleep(0.1)
        raise RuntimeError("raft-kv cluster has no leader")


def kvload(endpoint: str, op: str, clients: int, val: int, dur_s: float) -> dict:
    r = run_json(
        [PY, KVLOAD, "--endpoints", endpoint, "--op", op, "--clients", str(clients),
         "--conns", str(conns_for(clients)), "--val", str(val), "--run-s", str(dur_s)],
        timeout_s=dur_s + 60, cwd=ROOT)  # fmt: skip
    return {
        "clients": clients,
        "val": val,
        "rps": r["rate"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "errs": r["errors"],
    }


def run_raftbox(
    quick: bool = False,
    base_port: int = 25790,
    data_root: str | None = None,
    failover_runs: int | None = None,
    clients=(16, 64, 256),
    values=(100, 1024),
    log: Callable[[str], None] = lambda s: None,
    plain_peers: bool = False,
) -> dict:
    dur = 1.0 if quick else 3.0
    runs = failover_runs if failover_runs is not None else (3 if quick else 5)
    res: dict = {
        "system": "raftbox raft-kv (Python 3.11, uvloop), peers over "
        + ("plain TCP" if plain_peers else "mutual TLS"),
        "durability": "fdatasync on a majority before every ack (group commit)",
        "client": "kvload.py (asyncio, pipelined msgpack/TCP), requests sent to the leader",
        "duration_per_run_s": dur,
    }
    with RaftKVCluster(base_port, data_root, plain_peers) as cl:
        cl.wait_ready()
        ops = ("put", "get", "getstale")
        res.update(measure_figures("raftbox", cl, kvload, ops, clients, values, dur, log))
        res["member_exits"] = [i for i, a in enumerate(cl.alive()) if not a]

    def probe(survivors: list[str]) -> list[str]:
        return [PY, KVLOAD, "--op", "loop", "--endpoints", ",".join(survivors), "--dur", "30",
                "--val", "100"]  # fmt: skip

    res["failover"] = measure_failovers(
        "raftbox",
        lambda: RaftKVCluster(base_port, data_root, plain_peers),
        probe,
        runs,
        log,
        cwd=ROOT,
    )
    res["failover"]["probe"] = "sequential puts via the 2 survivors, 100 ms timeout (kvload loop)"
    return res


if __name__ == "__main__":
    print(json.dumps(run_raftbox(quick="--quick" in sys.argv, log=print), indent=1))
