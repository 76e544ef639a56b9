"""PySyncObj peer for the Raft benchmark: a 3-replica KV on 127.0.0.1, plus its load generator.

DURABILITY: PySyncObj (0.3.17) never calls fsync or msync. Replicas run with ``journalFile=`` set
(an mmap'd journal per replica) and otherwise shipped defaults, so an acknowledged put survives
a process crash (kill -9) but not a power loss or kernel crash. It is measured as shipped; its
figures are therefore *not* durable-commit figures, unlike etcd's (fsync on every commit).

Variants (both run as 3 separate replica processes):
  * ``defaults``: SyncObjConf(journalFile=...) only. Entries go out on the append-entries timer
    (appendEntriesUseBatch=True, appendEntriesPeriod=0.1 s), so a commit takes ~100 ms.
  * ``tuned``: additionally appendEntriesUseBatch=False (entries are sent at once; PySyncObj's
    documented knob for single-request latency). Labelled "tuned" wherever it is reported.

An acknowledged put measures commit: the replica answers the client only when the @replicated
call's callback fires with FAIL_REASON.SUCCESS, i.e. after the entry is committed by a majority
and applied on the replica that took the request.

Why this load model (fairest to etcd's): etcd is driven by a separate client process over TCP
(gRPC) that the etcd server must parse and answer. Here each replica process serves the same kind
of front end -- a small length-prefixed msgpack protocol on asyncio/uvloop in the replica's main
thread -- while PySyncObj's own tick thread (autoTick, shipped default) runs Raft. The load
generator is a separate, efficient process: N in-flight requests (closed loop, like N etcdbench
workers) pipelined over M TCP connections (same conns rule as etcd), one write per batch of
replies, sent to the leader. Driving SyncObj from inside the leader (no client at all) would skip
the request parsing/answering that etcd's figures include; a blocking per-request client would
measure Python client overhead instead of PySyncObj.

Ops: put (replicated), get (a @replicated read, i.e. through the Raft log: PySyncObj's only
linearizable read), lget (the replica's local dict: stale/serializable, for reference), status.
Wire format: 4-byte big-endian length + msgpack [rid, op, key, value] -> [rid, err, value];
err 0 = success, else a PySyncObj FAIL_REASON code (or 99 for an exception).

Usage: run as ``python -m benchmarks.peers.pysyncobj_kv {replica|bench|loop} ...`` from the repo
root (``run_pysyncobj`` does all of it); see ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from .etcd import (
    ROOT,
    ProcessCluster,
    check_ports,
    conns_for,
    measure_failovers,
    measure_figures,
    run_json,
    spawn,
)

OP_PUT, OP_GET, OP_LGET, OP_STATUS = 1, 2, 3, 4
OPS = {"put": OP_PUT, "get": OP_GET, "lget": OP_LGET}
ERR_EXC = 99
MAX_FRAME = 16 << 20

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


def _frame(obj: object) -> bytes:
    body = _enc.encode(obj)
    return len(body).to_bytes(4, "big") + body


def _parse(buf: bytearray) -> list:
    """Pop every complete frame from buf and return the decoded messages."""
    msgs = []
    pos, n = 0, len(buf)
    with memoryview(buf) as mv:
        while n - pos >= 4:
            ln = int.from_bytes(mv[pos : pos + 4], "big")
            if ln > MAX_FRAME:
                raise ValueError(f"frame too large: {ln}")
            if n - pos - 4 < ln:
                break
            msgs.append(_dec.decode(mv[pos + 4 : pos + 4 + ln]))
            pos += 4 + ln
    del buf[:pos]
    return msgs


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


# ---------------------------------------------------------------- replica process


def _make_kv(self_addr: str, partners: list[str], journal: str, tuned: bool):
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class KV(SyncObj):
        def __init__(self) -> None:
            kw = {"appendEntriesUseBatch": False} if tuned else {}
            super().__init__(self_addr, partners, SyncObjConf(journalFile=journal, **kw))
            self._data: dict[bytes, bytes] = {}

        @replicated
        def put(self, key: bytes, value: bytes) -> None:
            self._data[key] = value

        @replicated
        def get(self, key: bytes) -> bytes | None:
            return self._data.get(key)

        def local_get(self, key: bytes) -> bytes | None:
            return self._data.get(key)

    return KV()


class _ReplicaServer(asyncio.Protocol):
    """Client front end of one replica. Replies from PySyncObj's tick thread go through a deque;
    the asyncio thread is woken at most once per batch (not once per reply)."""

    def __init__(self, kv, loop: asyncio.AbstractEventLoop, outbox: collections.deque, wake):
        self.kv, self.loop, self.outbox, self.wake = kv, loop, outbox, wake
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        self.transport = None

    def _callback(self, rid: int) -> Callable[[object, int], None]:
        def cb(res: object, err: int) -> None:  # runs in PySyncObj's tick thread
            self.outbox.append((self, rid, err, res))
            self.wake()

        return cb

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            msgs = _parse(self.buf)
        except (ValueError, msgspec.DecodeError):
            self.transport.close()
            return
        out = []
        kv = self.kv
        for rid, op, key, val in msgs:
            try:
                if op == OP_PUT:
                    kv.put(key, val, callback=self._callback(rid))
                elif op == OP_GET:
                    kv.get(key, callback=self._callback(rid))
                elif op == OP_LGET:
                    out.append(_frame((rid, 0, kv.local_get(key))))
                elif op == OP_STATUS:
                    lead = kv._getLeader()
                    st = {
                        "is_leader": kv._isLeader(),
                        "leader": getattr(lead, "address", None),
                        "term": kv.raftCurrentTerm,
                        "commit": kv.raftCommitIndex,
                        "applied": kv.raftLastApplied,
                        "ready": kv.isReady(),
                    }
                    out.append(_frame((rid, 0, st)))
                else:
                    out.append(_frame((rid, ERR_EXC, f"bad op {op}")))
            except Exception as e:
                out.append(_frame((rid, ERR_EXC, repr(e))))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


def replica_main(a: argparse.Namespace) -> None:
    kv = _make_kv(a.self_addr, a.partners.split(","), a.journal, a.tuned)
    loop = _loop_factory()()
    asyncio.set_event_loop(loop)
    outbox: collections.deque = collections.deque()
    pending = [False]

    def flush() -> None:
        pending[0] = False
        by_conn: dict = {}
        while outbox:
            conn, rid, err, res = outbox.popleft()
            by_conn.setdefault(conn, []).append(_frame((rid, err, res)))
        for conn, frames in by_conn.items():
            if conn.transport is not None:
                conn.transport.write(b"".join(frames))

    def wake() -> None:  # any thread
        if not pending[0]:
            pending[0] = True
            loop.call_soon_threadsafe(flush)

    server = loop.run_until_complete(
        loop.create_server(
            lambda: _ReplicaServer(kv, loop, outbox, wake), "127.0.0.1", a.client_port, backlog=512
        )
    )
    print(f"replica {a.self_addr} serving clients on 127.0.0.1:{a.client_port}", flush=True)
    loop.call_later(a.max_lifetime, loop.stop)  # bounded even if the orchestrator vanished
    try:
        loop.run_forever()
    finally:
        server.close()
        os._exit(0)  # don't wait for PySyncObj's tick thread


# ---------------------------------------------------------------- load generator (bench)


class _BenchConn(asyncio.Protocol):
    def __init__(self, gen: _Gen, cid: int, inflight: int):
        self.gen, self.cid, self.inflight = gen, cid, inflight
        self.buf = bytearray()
        self.sent: dict[int, float] = {}
        self.seq = 0
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def _req(self, now: float) -> bytes:
        self.seq += 1
        g = self.gen
        key = g.key if g.op != OP_PUT else b"b/%d/%d" % (self.cid, self.seq)
        self.sent[self.seq] = now
        return _frame((self.seq, g.op, key, g.val if g.op == OP_PUT else None))

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = time.perf_counter()
        transport.write(b"".join(self._req(now) for _ in range(self.inflight)))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        g = self.gen
        now = time.perf_counter()
        out = []
        for rid, err, _ in _parse(self.buf):
            t0 = self.sent.pop(rid, None)
            if t0 is None:
                continue
            if err == 0:
                g.lat.append(now - t0)
                g.last_done = now
            else:
                g.errs += 1
            if now < g.deadline:
                out.append(self._req(now))
        if out:
            self.transport.write(b"".join(out))
        elif not self.sent and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Gen:
    def __init__(self, op: int, val: bytes, key: bytes):
        self.op, self.val, self.key = op, val, key
        self.lat: list[float] = []
        self.errs = 0
        self.deadline = 0.0
        self.last_done = 0.0


async def _bench(a: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    host, port = a.endpoint.rsplit(":", 1)
    op = OPS[a.op]
    val = b"v" * a.val
    key = b"bench/k0"
    if op != OP_PUT:  # seed the key that reads fetch
        _call(a.endpoint, OP_PUT, key, val, timeout=10)
    gen = _Gen(op, val, key)
    conns = max(1, min(a.conns, a.clients))
    share = [a.clients // conns + (1 if i < a.clients % conns else 0) for i in range(conns)]
    start = time.perf_counter()
    gen.deadline = start + a.dur
    protos = []
    for cid, k in enumerate(share):
        _, p = await loop.create_connection(
            lambda cid=cid, k=k: _BenchConn(gen, cid, k), host, int(port)
        )
        protos.append(p)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.done for p in protos)), a.dur + a.drain)
    except TimeoutError:
        pass
    lost = sum(len(p.sent) for p in protos)
    for p in protos:
        p.transport.close()
    el = max(gen.last_done, start + 1e-9) - start
    lat = sorted(gen.lat)

    def pct(q: float) -> float:
        return round(lat[int((len(lat) - 1) * q)] * 1000, 3) if lat else 0.0

    return {
        "op": a.op,
        "clients": a.clients,
        "conns": conns,
        "val": a.val,
        "n": len(lat),
        "errs": gen.errs + lost,
        "elapsed_s": round(el, 3),
        "rps": round(len(lat) / el, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] * 1000, 3) if lat else 0.0,
    }


def bench_main(a: argparse.Namespace) -> None:
    with asyncio.Runner(loop_factory=_loop_factory()) as r:
        print(json.dumps(r.run(_bench(a))), flush=True)


# ---------------------------------------------------------------- blocking client + failover probe


class _Client:
    """Minimal blocking client (status checks, seeding, failover probe)."""

    def __init__(self, endpoint: str, timeout: float):
        host, port = endpoint.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.rid = 0

    def call(self, op: int, key: bytes | None, val: bytes | None, timeout: float):
        self.rid += 1
        rid = self.rid
        self.sock.settimeout(timeout)
        self.sock.sendall(_frame((rid, op, key, val)))
        deadline = time.monotonic() + timeout
        while True:
            for r, err, res in _parse(self.buf):
                if r == rid:
                    return err, res
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def close(self) -> None:
        self.sock.close()


def _call(endpoint: str, op: int, key: bytes | None, val: bytes | None, timeout: float):
    c = _Client(endpoint, timeout)
    try:
        return c.call(op, key, val, timeout)
    finally:
        c.close()


def loop_main(a: argparse.Namespace) -> None:
    """Failover probe, same output as ``etcdbench -op loop``: sequential puts for --dur seconds,
    each with --timeout; on any failure move to the next endpoint."""
    eps = a.endpoints.split(",")
    val = b"v" * a.val
    end = time.monotonic() + a.dur
    cur, client, i = 0, None, 0
    while time.monotonic() < end:
        i += 1
        t0 = time.time_ns()
        ok = False
        try:
            if client is None:
                client = _Client(eps[cur], a.timeout)
            err, _ = client.call(OP_PUT, b"fo/%d" % i, val, a.timeout)
            ok = err == 0
        except (OSError, TimeoutError, ConnectionError, ValueError):
            if client is not None:
                client.close()
            client = None
        print(f"{'ok' if ok else 'err'} {t0} {time.time_ns()}", flush=True)
        if not ok:
            cur = (cur + 1) % len(eps)
            if client is not None:
                client.close()
                client = None
            time.sleep(0.005)  # bounded retry rate (errors can come back immediately)


# ---------------------------------------------------------------- orchestration (importable)


class PySyncObjCluster(ProcessCluster):
    """3 replica processes: Raft on base_port+1..3, clients on base_port+11..13."""

    def __init__(self, base_port: int = 24790, tuned: bool = False, data_root: str | None = None,
                 max_lifetime_s: float = 900):  # fmt: skip
        self.base, self.tuned, self.data_root = base_port, tuned, data_root
        self.max_lifetime_s = max_lifetime_s
        self.raft = [f"127.0.0.1:{base_port + i}" for i in (1, 2, 3)]
        self.endpoints = [f"127.0.0.1:{base_port + 10 + i}" for i in (1, 2, 3)]
        super().__init__()

    def start(self) -> None:
        check_ports([self.base + i for i in (1, 2, 3, 11, 12, 13)])
        self.dir = Path(tempfile.mkdtemp(prefix="pysyncobj-peers-", dir=self.data_root))
        for i in range(3):
            argv = [sys.executable, "-m", "benchmarks.peers.pysyncobj_kv", "replica",
                    "--self-addr", self.raft[i],
                    "--partners", ",".join(r for j, r in enumerate(self.raft) if j != i),
                    "--client-port", str(self.base + 11 + i),
                    "--journal", str(self.dir / f"r{i + 1}.journal"),
                    "--max-lifetime", str(self.max_lifetime_s)]  # fmt: skip
            if self.tuned:
                argv.append("--tuned")
            self.procs[i] = spawn(argv, log_path=self.dir / f"r{i + 1}.log", cwd=ROOT)

    def status(self, i: int, timeout: float = 1.0) -> dict | None:
        try:
            err, st = _call(self.endpoints[i], OP_STATUS, None, None, timeout)
            return st if err == 0 else None
        except (OSError, TimeoutError, ConnectionError, ValueError):
            return None

    def leader(self) -> int | None:
        """Index of the replica that says it leads and that every answering replica names."""
        sts = [self.status(i) for i in range(3)]
        up = [s for s in sts if s is not None]
        for i, s in enumerate(sts):
            if s and s["is_leader"] and len(up) >= 2:
                if all(o["leader"] == self.raft[i] for o in up):
                    return i
        return None

    def wait_ready(self, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not all(self.alive()):
                raise RuntimeError(f"a replica exited: alive={self.alive()}; logs in {self.dir}")
            lead = self.leader()
            if lead is not None and all(self.status(i) is not None for i in range(3)):
                try:
                    if _call(self.endpoints[lead], OP_PUT, b"ready", b"1", 5.0)[0] == 0:
                        return lead
                except (OSError, TimeoutError, ConnectionError, ValueError):
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"PySyncObj cluster not ready within {timeout_s}s")

    stop_grace_s = 2.0


def _module_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.peers.pysyncobj_kv", *args]


def pysyncobj_bench(endpoint: str, op: str, clients: int, val: int, dur_s: float) -> dict:
    argv = _module_argv("bench", "--endpoint", endpoint, "--op", op, "--clients", str(clients),
                        "--conns", str(conns_for(clients)), "--val", str(val), "--dur", str(dur_s))  # fmt: skip
    return run_json(argv, timeout_s=dur_s + 60, cwd=ROOT)


def run_pysyncobj(
    quick: bool = False,
    tuned: bool = False,
    base_port: int = 24790,
    data_root: str | None = None,
    failover_runs: int | None = None,
    clients: Sequence[int] = (16, 64, 256),
    values: Sequence[int] = (100, 1024),
    probe_timeout_s: float | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """All PySyncObj figures for one variant as a plain dict; starts and stops its own clusters."""
    import importlib.metadata

    name = "pysyncobj-tuned" if tuned else "pysyncobj"
    dur = 1.0 if quick else 3.0
    seq_dur = dur if tuned else (2.0 if quick else 6.0)  # ~100 ms per put by default
    runs = failover_runs if failover_runs is not None else (3 if quick else 5)
    if probe_timeout_s is None:
        # etcd's probe uses 100 ms. A put through a follower takes ~1-2 ms tuned but ~200 ms with
        # the default timer-driven appends, so the defaults get 500 ms (a 100 ms one never succeeds).
        probe_timeout_s = 0.1 if tuned else 0.5
    res: dict = {
        "system": f"PySyncObj {importlib.metadata.version('pysyncobj')}"
        + (" tuned (appendEntriesUseBatch=False)" if tuned else " (shipped defaults)"),
        "durability": "journal file, never fsynced (not durable on power loss)",
        "client": "separate asyncio/msgpack pipelined client over TCP, requests sent to the leader",
        "duration_per_run_s": dur,
        "replica_exits": [],
    }
    with PySyncObjCluster(base_port, tuned, data_root) as cl:
        cl.wait_ready()
        ops = ("put", "get", "lget")
        res.update(
            measure_figures(name, cl, pysyncobj_bench, ops, clients, values, dur, log, seq_dur)
        )
        res["replica_exits"] = [i for i, a in enumerate(cl.alive()) if not a]

    def probe(survivors: list[str]) -> list[str]:
        return _module_argv("loop", "--endpoints", ",".join(survivors), "--dur", "30",
                            "--timeout", str(probe_timeout_s), "--val", "100")  # fmt: skip

    res["failover"] = measure_failovers(
        name, lambda: PySyncObjCluster(base_port, tuned, data_root), probe, runs, log, cwd=ROOT
    )
    res["failover"]["probe"] = (
        f"sequential puts via the 2 survivors (forwarded to the leader), {probe_timeout_s * 1000:.0f} ms timeout"
    )
    return res


# ---------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peers.pysyncobj_kv")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("replica", help="run one replica (Raft + client front end)")
    r.add_argument("--self-addr", required=True)
    r.add_argument("--partners", required=True, help="comma list of the other replicas' Raft addrs")
    r.add_argument("--client-port", type=int, required=True)
    r.add_argument("--journal", required=True)
    r.add_argument("--tuned", action="store_true", help="appendEntriesUseBatch=False")
    r.add_argument("--max-lifetime", type=float, default=900.0)
    b = sub.add_parser("bench", help="closed-loop load generator; prints one JSON line")
    b.add_argument("--endpoint", required=True)
    b.add_argument("--op", choices=sorted(OPS), default="put")
    b.add_argument("--clients", type=int, default=1, help="requests in flight")
    b.add_argument("--conns", type=int, default=1)
    b.add_argument("--val", type=int, default=100)
    b.add_argument("--dur", type=float, default=3.0)
    b.add_argument("--drain", type=float, default=10.0, help="max wait for in-flight at the end")
    lp = sub.add_parser("loop", help="failover probe (ok|err START_NS END_NS lines)")
    lp.add_argument("--endpoints", required=True)
    lp.add_argument("--dur", type=float, default=10.0)
    lp.add_argument("--timeout", type=float, default=1.0)
    lp.add_argument("--val", type=int, default=100)
    q = sub.add_parser("run", help="run all figures for one variant; prints JSON")
    q.add_argument("--quick", action="store_true")
    q.add_argument("--tuned", action="store_true")
    q.add_argument("--base-port", type=int, default=24790)
    a = ap.parse_args(argv)
    if a.cmd == "replica":
        replica_main(a)
    elif a.cmd == "bench":
        bench_main(a)
    elif a.cmd == "loop":
        loop_main(a)
    else:
        out = run_pysyncobj(quick=a.quick, tuned=a.tuned, base_port=a.base_port, log=print)
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
