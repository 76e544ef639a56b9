"""`serve --workers N`: N processes of a stateless role sharing one port, under one supervisor.

What
----
The stateless roles, a blockserver (`--roles block --meta ...`) and a notify leaf (`--roles
notify --notify-root ...`), keep nothing a sibling process would need: any process can answer
any request. One Python process uses one core; `--workers N` runs N of them on one address. The
process started by the operator becomes the supervisor: it serves nothing itself, and

1. prepares what the workers share in the data directory before any of them starts: the admin
   token file and the local CA (`server.load_admin_token`, `server.tls_context`), so N workers
   never race to make them;
2. reserves the address: a socket with `SO_REUSEPORT`, bound but never listening (the kernel
   spreads connections over *listening* sockets only), resolves `--listen HOST:0` to one port,
   and holds it for its whole life, so a restarting worker always finds its port;
3. starts worker `i` (1..N) as `python -m raftbox.cli ARGV --workers 1 --worker i/N --listen
   HOST:PORT` (the operator's argv; argparse keeps an option's last value). A worker binds its
   own listening socket with `SO_REUSEPORT` (`HttpSite(reuse_port=True)`), raises its soft
   open-file limit to the hard one, caps its connections below it (`ServeConfig.http_limits`),
   names itself in its metrics and announcements (`raftbox.ops`: `worker` `i/N`, its pid, and
   its announced URL ends in `#worker-i`), and writes `DATA/worker-i.url` once it serves;
4. once every worker serves, writes `DATA/url` and prints one line; then restarts a worker that
   exits, after a back-off (`raftbox.backoff`, reset once the worker served `healthy_after_s`);
5. on SIGTERM or SIGINT, sends SIGTERM to every worker, waits `stop_timeout_s` for them, then
   SIGKILLs what is left, and exits 0. Every worker also gets SIGTERM from the kernel if the
   supervisor dies (`PR_SET_PDEATHSIG`): no orphan serves on.

When it gives up
----------------
A worker that exits before it serves (before writing its url file, or not within
`start_timeout_s`) failed at start. `start_failures_max` consecutive start failures of one worker,
or one with the configuration's exit status (78, 2: retrying cannot help), stop every worker and
the supervisor exits non-zero (78 for a misconfiguration, else 1). The decision is `on_exit`, a
pure function of what happened; the supervisor only carries it out.

Why a supervisor, not fork-after-bind
-------------------------------------
Each worker is a fresh interpreter started by argv: no state is inherited from a parent that ran
an event loop, and a crashed worker is replaced by a clean one. `SO_REUSEPORT` gives every worker
its own accept queue (no thundering herd), at the cost that a connection queued on a worker that
dies is reset; clients retry (the SDKs do, and long-polls are re-issued).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import sys
from dataclasses import dataclass

from raftbox import atomic
from raftbox.backoff import Backoff

log = logging.getLogger(__name__)

EXIT_MISCONFIGURED = 78
EXIT_USAGE = 2
EXIT_GAVE_UP = 1
FD_RESERVE = 1000  # open files a worker keeps for its own use beyond its connection cap


@dataclass(frozen=True)
class Policy:
    """When to restart a worker and when to give up (see the module docstring)."""

    start_timeout_s: float = 60.0
    start_failures_max: int = 3
    healthy_after_s: float = 30.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    stop_timeout_s: float = 30.0


@dataclass(frozen=True)
class Restart:
    reset_backoff: bool  # the worker had served long enough: retry at once (about min_s)


@dataclass(frozen=True)
class GiveUp:
    exit_status: int
    why: str


def on_exit(policy: Policy, served: bool, served_for_s: float, returncode: int,
            start_failures: int) -> tuple[Restart | GiveUp, int]:  # fmt: skip
    """What to do when a worker exited by itself; returns the decision and the new count of
    consecutive start failures. Pure."""
    if served:
        return Restart(reset_backoff=served_for_s >= policy.healthy_after_s), 0
    if returncode in (EXIT_MISCONFIGURED, EXIT_USAGE):
        return GiveUp(returncode, f"a worker refused its configuration (exit {returncode})"), 0
    start_failures += 1
    if start_failures >= policy.start_failures_max:
        why = f"a worker failed to start {start_failures} times in a row (last exit {returncode})"
        return GiveUp(EXIT_GAVE_UP, why), start_failures
    return Restart(reset_backoff=False), start_failures


def connection_cap(default: int, fd_soft_limit: int) -> int:
    """A worker's connection cap: the role's default, kept `FD_RESERVE` below its open-file
    limit (one file per connection; a cap above the limit would only fail at accept)."""
    return max(1, min(default, fd_soft_limit - FD_RESERVE))


def worker_url_file(data: str, index: int) -> str:
    return os.path.join(data, f"worker-{index}.url")


def parse_worker(s: str) -> tuple[int, int]:
    """`I/N` (1 <= I <= N) as given to a worker by its supervisor."""
    try:
        i, n = (int(x) for x in s.split("/"))
    except ValueError:
        raise ValueError(f"--worker: I/N, not {s!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--worker: I/N with 1 <= I <= N, not {s!r}")
    return i, n


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, never-listening SO_REUSEPORT socket on (host, port): holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
    except BaseException:
        s.close()
        raise
    return s


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Supervisor:
    """Runs `count` workers (`argv_for(i)`) until stopped; see the module docstring."""

    def __init__(self, count: int, argv_for, data: str, url: str, policy: Policy | None = None,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        self.count = count
        self.argv_for = argv_for
        self.data = data
        self.url = url
        self.policy = policy or Policy()
        self.rng = rng or random.Random()
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()
        self.restarts = 0
        self.gave_up: GiveUp | None = None
        self._ready: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(1, count + 1)}

    async def run(self) -> int:
        """Until SIGTERM/SIGINT (0) or a worker that cannot start (non-zero)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            async with asyncio.TaskGroup() as tg:  # a task that fails ends them all, re-raised
                tasks = [tg.create_task(self._slot(i)) for i in range(1, self.count + 1)]
                tasks.append(tg.create_task(self._announce_ready()))
                await self.stopping.wait()
                for t in tasks:
                    t.cancel()
        finally:
            await self._stop_all()
        if self.gave_up is not None:
            print(f"raftbox: giving up: {self.gave_up.why}", file=sys.stderr, flush=True)
            return self.gave_up.exit_status
        return 0

    async def _announce_ready(self) -> None:
        for ev in self._ready.values():
            await ev.wait()
        atomic.replace(os.path.join(self.data, "url"), self.url + "\n")
        pids = ",".join(str(p.pid) for _, p in sorted(self.procs.items()))
        print(f"raftbox supervisor {os.getpid()}: {self.count} workers (pids {pids}) serving on "
              f"{self.url}", flush=True)  # fmt: skip

    async def _slot(self, i: int) -> None:
        """Worker `i`, started again whenever it exits, until stopped or given up."""
        backoff = Backoff(self.rng, self.policy.backoff_min_s, self.policy.backoff_max_s)
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            url_file = worker_url_file(self.data, i)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(url_file)
            proc = await asyncio.create_subprocess_exec(
                *self.argv_for(i), stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
            self.procs[i] = proc
            served_at = await self._wait_serving(proc, url_file)
            if served_at is not None:
                self._ready[i].set()
                log.info("worker %d (pid %d) serving", i, proc.pid)
            elif proc.returncode is None:
                log.warning("worker %d (pid %d) not serving within %.0f s: killing it",
                            i, proc.pid, self.policy.start_timeout_s)  # fmt: skip
                proc.kill()
            rc = await proc.wait()
            decision, failures = on_exit(
                self.policy,
                served_at is not None,
                loop.time() - served_at if served_at is not None else 0.0,
                rc,
                failures,
            )
            if isinstance(decision, GiveUp):
                if self.gave_up is None:
                    self.gave_up = decision
                self.stopping.set()
                return
            if decision.reset_backoff:
                backoff.reset()
            delay = backoff.next_delay_s()
            self.restarts += 1
            log.warning("worker %d (pid %d) exited with status %s; starting it again in %.1f s",
                        i, proc.pid, rc, delay)  # fmt: skip
            await asyncio.sleep(delay)  # back-off before the restart; cancelled on stop

    async def _wait_serving(self, proc: asyncio.subprocess.Process, url_file: str) -> float | None:
        """Loop time when the worker wrote its url file; None if it exited or timed out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.start_timeout_s
        exited = asyncio.ensure_future(proc.wait())
        try:
            while loop.time() < deadline:
                if os.path.exists(url_file):
                    return loop.time()
                done, _ = await asyncio.wait({exited}, timeout=0.05)  # poll the file meanwhile
                if done:
                    return None
            return None
        finally:
            exited.cancel()

    async def _stop_all(self) -> None:
        """SIGTERM every worker; SIGKILL those still there after `stop_timeout_s`; reap all."""
        live = [p for p in self.procs.values() if p.returncode is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        if not live:
            return
        waits = asyncio.gather(*(p.wait() for p in live))
        try:
            await asyncio.wait_for(waits, self.policy.stop_timeout_s)
        except TimeoutError:
            for p in live:
                if p.returncode is None:
                    log.warning("worker pid %d did not stop in time: killing it", p.pid)
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            await asyncio.gather(*(p.wait() for p in live))


def main(cfg, argv: list[str], prepare) -> int:
    """Supervise `cfg.workers` workers of `raftbox serve ARGV` (the operator's argv).
    `prepare(cfg)` makes what the workers share (the admin token file, the local CA) once, here,
    not by N workers at once (`server.prepare_shared`: passed in, `raftbox.server` imports this
    module for its helpers)."""
    os.makedirs(cfg.data, exist_ok=True)
    prepare(cfg)
    tls = not cfg.plain_http
    host, port = cfg.listen
    holder = reserve_port(host, port)
    port = holder.getsockname()[1]
    url = f"{'https' if tls else 'http'}://{_hostport(host, port)}"
    n = cfg.workers

    def argv_for(i: int) -> list[str]:
        extra = ["--workers", "1", "--worker", f"{i}/{n}", "--listen", _hostport(host, port)]
        if cfg.metrics_listen is not None:  # each worker its own: PORT, PORT+1, ... (0: any)
            mh, mp = cfg.metrics_listen
            extra += ["--metrics-listen", _hostport(mh, mp + i - 1 if mp else 0)]
        return [sys.executable, "-m", "raftbox.cli", *argv, *extra]

    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(cfg.data, "url"))
    try:
        return asyncio.run(Supervisor(n, argv_for, cfg.data, url).run())
    finally:
        holder.close()


__all__ = ["GiveUp", "Policy", "Restart", "Supervisor", "connection_cap", "on_exit"]
