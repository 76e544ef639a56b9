"""etcd peer for the Raft benchmark: a 3-member etcd cluster on 127.0.0.1 driven by ``etcdbench``.

``etcdbench`` (etcdbench.go, built by setup.sh) is a Go load generator on etcd's own clientv3 API:
``-clients`` concurrent workers, each with one request in flight, over ``-conns`` gRPC connections,
sent to the leader. Members run with etcd's default durability (fsync of the WAL on every commit);
data dirs live in a fresh temp dir (``data_root`` picks its parent; it should be on a real disk,
not tmpfs, or fsync costs nothing).

Failover: on a fresh cluster per run, ``etcdbench -op loop`` (sequential puts, 100 ms timeout)
runs against the two followers; the leader is killed with SIGKILL; the figure is the time from the
kill to the end of the first successful put that started after it. Median of the runs.

Also holds the small process helpers shared with ``pysyncobj_kv``: every process is started in its
own session/process group (with PR_SET_PDEATHSIG so it dies with the orchestrator) and stopped by
group (SIGTERM, then SIGKILL); everything is stopped in ``finally``/``__exit__`` paths. Results are
plain dicts.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_BIN_DIR = ROOT / "bench-out" / "peers"
SETUP_SH = HERE / "setup.sh"

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the orchestrator dies (safety net)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------- process helpers (shared)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def check_ports(ports: Sequence[int]) -> None:
    busy = [p for p in ports if not port_free(p)]
    if busy:
        raise RuntimeError(f"ports already in use on 127.0.0.1: {busy} (choose another base port)")


def spawn(
    argv: Sequence[str],
    log_path: Path | None = None,
    cwd: Path | None = None,
    stdout_pipe: bool = False,
) -> subprocess.Popen:
    """Start argv in a new session (so its process group id == its pid)."""
    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        if log is not subprocess.DEVNULL:
            log.close()


def kill_group(p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(procs: Sequence[subprocess.Popen], grace_s: float = 5.0) -> None:
    """SIGTERM every group, wait up to grace_s in total, then SIGKILL what is left and reap all."""
    for p in procs:
        kill_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        kill_group(p, signal.SIGKILL)  # also catches children left in the group
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if p.stdout is not None:
            p.stdout.close()


def run_json(argv: Sequence[str], timeout_s: float, cwd: Path | None = None) -> dict:
    """Run a load generator that prints one JSON object as its last stdout line."""
    p = spawn(argv, stdout_pipe=True, cwd=cwd)
    try:
        out, _ = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_all([p])
        raise RuntimeError(f"timed out after {timeout_s}s: {' '.join(argv)}") from None
    finally:
        stop_all([p])
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv)} failed (rc={p.returncode}): {out[-500:]!r}")
    return json.loads(lines[-1])


def measure_failover(
    probe_argv: Sequence[str],
    kill: Callable[[], None],
    warm_ok: int = 5,
    timeout_s: float = 20.0,
    cwd: Path | None = None,
) -> float:
    """Start a sequential-put probe printing ``ok|err START_NS END_NS`` lines (etcdbench -op loop or
    pysyncobj_kv loop), wait for warm_ok successes, call kill(), and return seconds from the kill
    until the end of the first successful put that *started* after the kill."""
    p = spawn(probe_argv, stdout_pipe=True, cwd=cwd)
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert p.stdout is not None
        for raw in p.stdout:
            lines.put(raw.decode(errors="replace"))
        lines.put(None)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + timeout_s
        oks = 0
        while oks < warm_ok:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError("failover probe exited before warming up")
            oks += line.startswith("ok ")
        kill_ns = time.time_ns()
        kill()
        while True:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError("failover probe exited without a successful put after the kill")
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ok" and int(parts[1]) >= kill_ns:
                return (int(parts[2]) - kill_ns) / 1e9
    except queue.Empty:
        raise RuntimeError(f"no successful put within {timeout_s}s of the failover probe") from None
    finally:
        stop_all([p], grace_s=1.0)
        t.join(timeout=2)


def summarize_failover(runs: list[float], errors: list[str]) -> dict:
    out: dict = {"runs_s": [round(r, 3) for r in runs], "errors": errors}
    if runs:
        out.update(
            median_s=round(statistics.median(runs), 3),
            min_s=round(min(runs), 3),
            max_s=round(max(runs), 3),
        )
    return out


def measure_figures(
    name: str,
    cl,
    load: Callable[[str, str, int, int, float], dict],
    ops: tuple[str, str, str],
    clients: Sequence[int],
    values: Sequence[int],
    dur: float,
    log: Callable[[str], None],
    seq_dur: float | None = None,
) -> dict:
    """The throughput figures every system reports, against a started cluster `cl` (which has
    `wait_ready() -> leader index` and `endpoints`). `ops` = (put, linearizable get, stale get)
    in the system's load generator; `load(endpoint, op, clients, value_bytes, seconds)`."""
    put, get, stale = ops

    def bench(op: str, c: int, v: int, d: float = dur) -> dict:
        lead = cl.wait_ready(timeout_s=15)  # the leader may move under load
        r = load(cl.endpoints[lead], op, c, v, d)
        log(f"{name} {op} clients={c} val={v}: {r['rps']:.0f}/s p50={r['p50_ms']:.2f}ms "
            f"p99={r['p99_ms']:.2f}ms errs={r['errs']}")  # fmt: skip
        return r

    res: dict = {"seq_put": bench(put, 1, 100, seq_dur or dur), "put": []}
    for v in values:
        for c in clients:
            res["put"].append(bench(put, c, v))
    res["get_linearizable"] = bench(get, 64, 100)
    res["get_serializable"] = bench(stale, 64, 100)
    return res


def measure_failovers(
    name: str,
    new_cluster: Callable[[], Any],
    probe_argv: Callable[[list[str]], list[str]],
    runs: int,
    log: Callable[[str], None],
    cwd: Path | None = None,
) -> dict:
    """Median failover over `runs` fresh clusters: kill -9 the leader while a sequential probe
    (`probe_argv(survivor endpoints)`) writes through the survivors; see `measure_failover`."""
    fo, errs = [], []
    for k in range(runs):
        try:
            with new_cluster() as cl:
                lead = cl.wait_ready()
                survivors = [e for i, e in enumerate(cl.endpoints) if i != lead]
                s = measure_failover(
                    probe_argv(survivors), lambda lead=lead, cl=cl: cl.kill(lead), cwd=cwd
                )
                fo.append(s)
                log(f"{name} failover run {k + 1}/{runs}: {s:.3f}s")
        except Exception as e:
            errs.append(repr(e))
            log(f"{name} failover run {k + 1}/{runs} failed: {e!r}")
    return summarize_failover(fo, errs)


def conns_for(clients: int) -> int:
    """Connections used for a given concurrency (same rule for every system): up to 16."""
    return max(1, min(clients, 16))


def ensure_etcdbench(bin_dir: Path = DEFAULT_BIN_DIR) -> Path:
    """Return the etcdbench binary, running setup.sh (idempotent) if it is missing or stale."""
    binary = Path(bin_dir) / "etcdbench"
    src = HERE / "etcdbench.go"
    if (
        not binary.exists()
        or binary.stat().st_mtime < src.stat().st_mtime
        or not shutil.which("etcd")
    ):
        subprocess.run(["bash", str(SETUP_SH), str(bin_dir)], check=True, stdout=subprocess.DEVNULL)
    return binary


# ---------------------------------------------------------------- etcd cluster


class ProcessCluster:
    """Three member processes of one system on 127.0.0.1, which a subclass's `start()` puts
    into `procs`, with data under `dir`; kill one, check which live, stop all, and a context
    manager that stops everything whatever happens."""

    stop_grace_s = 5.0

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen | None] = [None, None, None]
        self.dir: Path | None = None

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            kill_group(p, signal.SIGKILL)
            p.wait(timeout=5)

    def alive(self) -> list[bool]:
        return [p is not None and p.poll() is None for p in self.procs]

    def stop(self) -> None:
        stop_all([p for p in self.procs if p is not None], grace_s=self.stop_grace_s)
        self.procs = [None, None, None]
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EtcdCluster(ProcessCluster):
    """3 etcd members on 127.0.0.1: clients on base_port+1..3, peers on base_port+11..13."""

    def __init__(
        self,
        base_port: int = 23790,
        data_root: str | None = None,
        etcd_bin: str = "etcd",
        etcdctl_bin: str = "etcdctl",
    ):
        self.base = base_port
        self.data_root = data_root
        self.etcd_bin = etcd_bin
        self.etcdctl_bin = etcdctl_bin
        self.endpoints = [f"127.0.0.1:{base_port + i}" for i in (1, 2, 3)]
        super().__init__()

    def start(self) -> None:
        check_ports([self.base + i for i in (1, 2, 3, 11, 12, 13)])
        self.dir = Path(tempfile.mkdtemp(prefix="etcd-peers-", dir=self.data_root))
        cluster = ",".join(f"e{i}=http://127.0.0.1:{self.base + 10 + i}" for i in (1, 2, 3))
        for i in (1, 2, 3):
            c, pe = f"http://127.0.0.1:{self.base + i}", f"http://127.0.0.1:{self.base + 10 + i}"
            argv = [
                self.etcd_bin,
                "--name",
                f"e{i}",
                "--data-dir",
                str(self.dir / f"e{i}"),
                "--listen-client-urls",
                c,
                "--advertise-client-urls",
                c,
                "--listen-peer-urls",
                pe,
                "--initial-advertise-peer-urls",
                pe,
                "--initial-cluster",
                cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "bench",
                "--logger",
                "zap",
                "--log-outputs",
                str(self.dir / f"e{i}.log"),
            ]
            self.procs[i - 1] = spawn(argv, log_path=self.dir / f"e{i}.out")

    def status(self) -> list[dict]:
        """`etcdctl endpoint status -w json` for the members that answer."""
        r = subprocess.run(
            [
                self.etcdctl_bin,
                "--endpoints",
                ",".join(self.endpoints),
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "endpoint",
                "status",
                "-w",
                "json",
            ],
            capture_output=True,
            timeout=15,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        try:
            return json.loads(r.stdout or b"[]")
        except json.JSONDecodeError:
            return []

    def leader(self) -> int | None:
        """Index (0..2) of the member that all answering members name as leader, else None."""
        st = self.status()
        leaders = {s["Status"]["leader"] for s in st}
        if len(st) < 2 or len(leaders) != 1:
            return None
        (lid,) = leaders
        for s in st:
            if s["Status"]["header"]["member_id"] == lid and s["Endpoint"] in self.endpoints:
                return self.endpoints.index(s["Endpoint"])
        return None

    def wait_ready(self, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(
                        f"etcd member e{i + 1} exited (rc={p.returncode}); see {self.dir}"
                    )
            lead = self.leader()
            if lead is not None and len(self.status()) == 3:
                return lead
            time.sleep(0.2)
        raise RuntimeError(f"etcd cluster not ready within {timeout_s}s")


def etcd_version(etcd_bin: str = "etcd") -> str:
    try:
        out = subprocess.run([etcd_bin, "--version"], capture_output=True, timeout=10).stdout
        return out.decode().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def etcdbench(binary: Path, endpoint: str, op: str, clients: int, val: int, dur_s: float) -> dict:
    """One time-bounded etcdbench run (-clients workers over conns_for(clients) connections)."""
    argv = [
        str(binary),
        "-endpoints",
        endpoint,
        "-op",
        op,
        "-clients",
        str(clients),
        "-conns",
        str(conns_for(clients)),
        "-val",
        str(val),
        "-total",
        str(clients * 10_000_000),
        "-maxdur",
        f"{dur_s}s",
        "-json",
    ]
    r = run_json(argv, timeout_s=dur_s + 60)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}


def run_etcd(
    etcdbench_bin: Path | None = None,
    quick: bool = False,
    base_port: int = 23790,
    data_root: str | None = None,
    failover_runs: int | None = None,
    clients: Sequence[int] = (16, 64, 256),
    values: Sequence[int] = (100, 1024),
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """All etcd figures as a plain dict. Starts and always stops its own clusters."""
    binary = Path(etcdbench_bin) if etcdbench_bin else ensure_etcdbench()
    dur = 1.0 if quick else 3.0
    runs = failover_runs if failover_runs is not None else (3 if quick else 5)
    res: dict = {
        "system": f"etcd {etcd_version()}",
        "durability": "fsync on every commit (default)",
        "client": "etcdbench (Go, clientv3/gRPC), requests sent to the leader",
        "duration_per_run_s": dur,
        "member_exits": [],
    }

    with EtcdCluster(base_port, data_root) as cl:
        cl.wait_ready()
        load = lambda ep, op, c, v, d: etcdbench(binary, ep, op, c, v, d)  # noqa: E731
        res.update(
            measure_figures("etcd", cl, load, ("put", "get", "getser"), clients, values, dur, log)
        )
        res["member_exits"] = [i for i, a in enumerate(cl.alive()) if not a]

    def probe(survivors: list[str]) -> list[str]:
        return [str(binary), "-op", "loop", "-endpoints", ",".join(survivors), "-dur", "30s",
                "-timeout", "100ms", "-val", "100"]  # fmt: skip

    res["failover"] = measure_failovers(
        "etcd", lambda: EtcdCluster(base_port, data_root), probe, runs, log
    )
    res["failover"]["probe"] = (
        "sequential puts via the 2 survivors, 100 ms timeout (etcdbench -op loop)"
    )
    return res


if __name__ == "__main__":
    import sys

    print(json.dumps(run_etcd(quick="--quick" in sys.argv, log=print), indent=1))
