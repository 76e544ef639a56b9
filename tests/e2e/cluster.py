"""A cluster of real `raftbox raft-kv serve` processes, for end-to-end tests.

`Cluster(base_dir, n)` starts `n` member processes on free 127.0.0.1 ports, each with its own data
directory and a log file (stdout + stderr, appended across restarts) under `base_dir`. Use it as an
async context manager: on the way out every process it started is killed and every proxy closed,
whatever happened; if the block raised, the tail of every member's log is printed (pytest shows it
with the failure). The `atexit` hook of `raftbox.testing.procs` kills anything still running if the
test process dies first.

With `proxies=True` every directed peer link `i -> j` goes through its own in-process
`FaultProxy`: member i is told (in its `--peers`) that j lives at the proxy's address. Raft traffic
from i to j rides on the connection i dials, so the link proxy decides what i can say to j; j's
answers come back on j's own link `j -> i`. `isolate(i)` / `partition(...)` / `heal()` cut and
restore links. Members added later with `add_member()` are reached directly (the address handed to
`member add` is the one every member dials).

Waiting is always for a condition with a deadline (`wait_for`), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftbox import cluster
from raftbox.raft.kvclient import KVClient, KVError
from raftbox.testing import (
    FaultProxy,
    run,  # noqa: F401 - re-exported for the tests
)
from raftbox.testing.procs import await_for, free_port, track, untrack

HOST = "127.0.0.1"
_RAFTBOX = str(Path(sys.executable).with_name("raftbox"))
_READY_LINE = "serving clients on"


async def wait_for(
    pred: Callable[[], Awaitable[Any]], timeout_s: float, what: str, poll_s: float = 0.02
) -> Any:
    """`raftbox.testing.procs.await_for`, where a member that does not answer yet (`KVError`,
    `OSError`, `TimeoutError`) is "not yet" and any other error fails at once."""
    return await await_for(pred, timeout_s, what, poll_s, retry_on=(KVError, OSError, TimeoutError))


@dataclass
class Member:
    id: int
    data_dir: Path
    log_path: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    join: bool = False
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def client_addr(self) -> tuple[str, int]:
        return (HOST, self.client_port)

    @property
    def peer_addr(self) -> str:
        return f"{HOST}:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Cluster:
    def __init__(
        self,
        base_dir: Path,
        n: int = 3,
        *,
        proxies: bool = False,
        tick_ms: int = 20,
        election_ticks: int = 10,
        snapshot_entries: int | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.base_dir = Path(base_dir)
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self.snapshot_entries = snapshot_entries
        self.extra_args = list(extra_args)
        self.members: dict[int, Member] = {}
        for i in range(1, n + 1):
            self._new_member(i)
        self.initial_ids = sorted(self.members)
        # Mutual TLS between members: bundles from `raftbox cluster init`'s code (a member
        # added later gets one from `add-member`'s); `--peers` still points members at proxies.
        self.bundles = self.base_dir / "bundles"
        cluster.init(str(self.bundles), {i: (HOST, m.peer_port) for i, m in self.members.items()})
        self.use_proxies = proxies
        self.links: dict[tuple[int, int], FaultProxy] = {}

    def _new_member(self, i: int, join: bool = False) -> Member:
        m = Member(i, self.base_dir / f"m{i}", self.base_dir / f"m{i}.log", join=join)
        self.members[i] = m
        if join:
            cluster.add_member(str(self.bundles), i, (HOST, m.peer_port))
        return m

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Cluster:
        try:
            if self.use_proxies:
                for i in self.initial_ids:
                    for j in self.initial_ids:
                        if i != j:
                            target = (HOST, self.members[j].peer_port)
                            proxy = FaultProxy((HOST, 0), target)
                            await proxy.start()
                            self.links[i, j] = proxy
            for i in self.initial_ids:
                self.spawn(i)
            await self.wait_serving(self.initial_ids)
        except BaseException:
            await self.close(failed=True)
            raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.close(failed=exc_type is not None)

    async def close(self, failed: bool = False) -> None:
        for m in self.members.values():
            self.kill(m.id)
        for proxy in self.links.values():
            await proxy.close()
        if failed:
            self.print_logs()

    def print_logs(self, lines: int = 40) -> None:
        for m in self.members.values():
            print(f"----- member {m.id} log tail ({m.log_path}) -----\n{m.log_tail(lines)}")

    def _peers_arg(self, i: int) -> str:
        parts = []
        for j, m in sorted(self.members.items()):
            if (i, j) in self.links:
                host, port = self.links[i, j].address
                parts.append(f"{j}={host}:{port}")
            else:
                parts.append(f"{j}={m.peer_addr}")
        return ",".join(parts)

    def spawn(self, i: int) -> None:
        """Start member i's process (again, after a kill: same ports, same data)."""
        m = self.members[i]
        assert not m.alive, f"member {i} is already running"
        m.data_dir.mkdir(parents=True, exist_ok=True)
        m.starts += 1
        args = [
            _RAFTBOX,
            "raft-kv",
            "serve",
            f"--cluster={self.bundles / f'member-{i}'}",
            f"--data={m.data_dir}",
            f"--listen={HOST}:{m.client_port}",
            f"--peer-listen={m.peer_addr}",
            f"--peers={self._peers_arg(i)}",
            f"--tick-ms={self.tick_ms}",
            f"--election-ticks={self.election_ticks}",
            *self.extra_args,
        ]
        if self.snapshot_entries is not None:
            args.append(f"--snapshot-entries={self.snapshot_entries}")
        if m.join:
            args.append("--join")
        with open(m.log_path, "a") as log:
            log.write(f"=== start #{m.starts}: {' '.join(args)}\n")
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            m.proc = track(
                subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
                )
            )

    async def wait_serving(self, ids: Iterable[int], timeout_s: float = 20.0) -> None:
        """Wait until each member printed its ready line for its latest start."""
        ids = list(ids)

        async def ready() -> bool:
            for i in ids:
                m = self.members[i]
                if not m.alive:
                    raise AssertionError(f"member {i} exited:\n{m.log_tail()}")
                text = m.log_text()
                if _READY_LINE not in text[text.rfind("=== start #") :]:
                    return False
            return True

        await wait_for(ready, timeout_s, f"members {ids} serving")

    async def start(self, i: int) -> None:
        self.spawn(i)
        await self.wait_serving([i])

    def kill(self, i: int) -> None:
        """kill -9: no shutdown code runs; whatever the process had not yet handed to the kernel
        (unflushed buffers, a write in progress) is lost."""
        m = self.members[i]
        if m.proc is None:
            return
        if m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
        m.proc.wait()
        untrack(m.proc)
        m.proc = None

    def pause(self, i: int) -> None:
        """SIGSTOP: the member freezes (a long GC or VM pause) with its state intact; the kernel
        still accepts connections and buffers bytes for it."""
        proc = self.members[i].proc
        assert proc is not None and proc.poll() is None, f"member {i} is not running"
        proc.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        proc = self.members[i].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)

    async def restart(self, i: int) -> None:
        self.kill(i)
        await self.start(i)

    async def add_member(self, i: int) -> Member:
        """Start a new process that joins the running cluster (then `member add` it)."""
        m = self._new_member(i, join=True)
        await self.start(i)
        return m

    # -- faults (proxies=True) -----------------------------------------------------------------
    def link(self, frm: int, to: int) -> FaultProxy:
        return self.links[frm, to]

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between members of different groups (members in no group keep all
        their links); links inside a group are healed."""
        where = {i: g for g, ids in enumerate(groups) for i in ids}
        for (a, b), proxy in self.links.items():
            if a in where and b in where and where[a] != where[b]:
                proxy.partition()
            elif a in where and b in where:
                proxy.heal()

    def isolate(self, i: int) -> None:
        for (a, b), proxy in self.links.items():
            if i in (a, b):
                proxy.partition()

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.heal()
            proxy.delay_s = 0.0
            proxy.drop_p = 0.0

    # -- talking to members --------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return sorted(self.members)

    def live_ids(self) -> list[int]:
        return [i for i in self.ids if self.members[i].alive]

    def client(self, *ids: int, timeout_s: float = 10.0) -> KVClient:
        """A client of the given members (default: every member, in id order)."""
        ids = ids or tuple(self.ids)
        return KVClient([self.members[i].client_addr for i in ids], timeout_s=timeout_s)

    async def cli(self, *args: str, ids: Iterable[int] = (), timeout_s: float = 30.0) -> Any:
        """Run `raftbox raft-kv ARGS --endpoints ...` (the operator's tool) and return its JSON
        answer; AssertionError with its stderr if it fails."""
        endpoints = ",".join(f"{HOST}:{self.members[i].client_port}" for i in ids or self.ids)
        proc = await asyncio.create_subprocess_exec(
            _RAFTBOX,
            "raft-kv",
            *args,
            f"--endpoints={endpoints}",
            f"--timeout={timeout_s}",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(timeout_s + 10):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, f"raftbox raft-kv {' '.join(args)}: {err.decode()}"
        return json.loads(out)

    async def status(self, i: int, timeout_s: float = 1.0) -> dict | None:
        """Member i's Raft status, or None if it does not answer in time."""
        if not self.members[i].alive:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                async with self.client(i, timeout_s=timeout_s) as c:
                    return await c.status()
        except (KVError, OSError, TimeoutError):
            return None

    async def statuses(self, ids: Iterable[int]) -> dict[int, dict | None]:
        ids = list(ids)
        got = await asyncio.gather(*(self.status(i) for i in ids))
        return dict(zip(ids, got, strict=True))

    async def wait_leader(self, ids: Iterable[int] | None = None, timeout_s: float = 15.0) -> int:
        """Wait until the given members (default: the live ones) agree on one leader in one
        term, and that leader is among them and says so; return its id."""
        ids = list(ids) if ids is not None else self.live_ids()

        async def agreed() -> int:
            st = await self.statuses(ids)
            if any(s is None for s in st.values()):
                return 0
            views = {(s["leader"], s["term"]) for s in st.values()}
            if len(views) != 1:
                return 0
            ((leader, _),) = views
            if leader not in st or st[leader]["role"] != "leader":
                return 0
            return leader

        return await wait_for(agreed, timeout_s, f"one leader among {ids}")

    async def wait_converged(
        self, ids: Iterable[int] | None = None, timeout_s: float = 20.0
    ) -> int:
        """Wait until the given members have applied the same, fully committed log; return the
        common applied index."""
        ids = list(ids) if ids is not None else self.live_ids()

        async def same() -> int:
            st = await self.statuses(ids)
            if any(s is None for s in st.values()):
                return 0
            seen = {(s["applied"], s["commit"], s["last_index"]) for s in st.values()}
            if len(seen) != 1:
                return 0
            ((applied, commit, last),) = seen
            return applied if applied == commit == last else 0

        return await wait_for(same, timeout_s, f"members {ids} converged")

    async def wait_caught_up(self, i: int, timeout_s: float = 20.0) -> None:
        """Wait until member i has applied everything the leader had committed when we started
        waiting (works while writes go on, unlike `wait_converged`)."""
        leader = await self.wait_leader(timeout_s=timeout_s)
        st = await self.status(leader)
        target = st["commit"] if st else 1 << 62

        async def applied() -> bool:
            s = await self.status(i)
            return s is not None and s["applied"] >= target

        await wait_for(applied, timeout_s, f"member {i} applied {target}")
