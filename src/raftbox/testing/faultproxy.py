"""A TCP proxy that injects faults, for tests: put it in front of a peer's listen address.

`FaultProxy(listen, target)` forwards every accepted connection to `target`. What it does to the
traffic can be changed at any time, and applies to connections already open:

* `delay_s`   — each chunk is forwarded `delay_s` after it was read (latency, not a bandwidth cap:
  chunks are pipelined, order is kept). A new value applies to the chunks already held too:
  lowering it releases them sooner.
* `drop_p`    — for each chunk, the probability that the whole connection is cut (both sides
  closed) instead of forwarding it.
* `block(direction)` / `unblock(direction)` — discard what flows one way (`UP` = client to target,
  `DOWN` = target to client). A stream never silently skips bytes: a connection that lost data
  while blocked is cut when the direction is unblocked.
* `partition(blackhole=False)` — cut every connection and refuse new ones (accept, then reset);
  with `blackhole=True` new connections are accepted and their bytes swallowed, never answered,
  like packets lost in the network. `heal()` ends it and cuts the blackholed connections.

`accepted`, `discarded_bytes` and `held_chunks` count connections, swallowed bytes and chunks
read but not yet forwarded, so a test can wait for a fault to have happened instead of sleeping
or timing it.

As a process (for tests that run real members)::

    python -m raftbox.testing.faultproxy --listen 127.0.0.1:0 --target 127.0.0.1:7001

prints ``listening HOST:PORT`` then reads one command per line on stdin and answers ``ok`` or
``error: ...``: ``partition [blackhole]``, ``heal``, ``delay SECONDS``, ``drop P``,
``block up|down``, ``unblock up|down``, ``status``, ``quit``. End of input also quits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import random
import sys
from collections.abc import Coroutine
from typing import Any

Address = tuple[str, int]

_CHUNK_BYTES = 64 * 1024
_PIPE_MAX_CHUNKS = 64  # chunks in flight per direction while delayed


class Direction(enum.Enum):
    UP = "up"  # client -> target
    DOWN = "down"  # target -> client


class _Conn:
    """One proxied connection: the client side, and the target side once dialed."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.target: asyncio.StreamWriter | None = None
        self.gapped: set[Direction] = set()  # directions that discarded data while blocked
        self.blackholed = False

    def cut(self) -> None:
        for w in (self.client, self.target):
            if w is not None:
                w.transport.abort()


class FaultProxy:
    """Forward TCP connections from `listen` to `target`, with the faults of the module docstring."""

    def __init__(
        self,
        listen: Address = ("127.0.0.1", 0),
        target: Address = ("127.0.0.1", 0),
        *,
        delay_s: float = 0.0,
        drop_p: float = 0.0,
        connect_timeout_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self._listen = listen
        self.target = target
        self._delay_s = delay_s
        self._delay_changed = asyncio.Event()  # set (and replaced) when delay_s changes
        self.drop_p = drop_p
        self._connect_timeout_s = connect_timeout_s
        self._rng = rng or random.Random()
        self._blocked: set[Direction] = set()
        self._partitioned = False
        self._blackhole = False
        self._conns: set[_Conn] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._addr: Address | None = None
        self.accepted = 0  # connections accepted, for tests
        self.discarded_bytes = 0  # swallowed by a block or a blackhole, for tests
        self.held_chunks = 0  # read and not yet forwarded (the delay), for tests

    @property
    def delay_s(self) -> float:
        return self._delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self._delay_s = value
        changed, self._delay_changed = self._delay_changed, asyncio.Event()
        changed.set()  # the chunks waiting out the old delay look again

    @property
    def address(self) -> Address:
        """Where the proxy listens: the address to advertise instead of the target's."""
        if self._addr is None:
            raise RuntimeError("FaultProxy not started")
        return self._addr

    async def start(self) -> None:
        started = self._started = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(started), name="faultproxy")
        try:
            await started
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._runner is None:
            return
        self._runner.cancel()
        await asyncio.wait([self._runner])
        if not self._started.done():  # cancelled before it ran
            self._started.set_exception(RuntimeError("FaultProxy closed while starting"))
        if not self._runner.cancelled() and self._runner.exception() is not None:
            raise self._runner.exception()  # type: ignore[misc]

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- faults

    def partition(self, *, blackhole: bool = False) -> None:
        self._partitioned, self._blackhole = True, blackhole
        for conn in list(self._conns):
            if not conn.blackholed:
                conn.cut()

    def heal(self) -> None:
        self._partitioned = False
        for conn in list(self._conns):
            if conn.blackholed:
                conn.cut()

    def block(self, direction: Direction) -> None:
        self._blocked.add(direction)

    def unblock(self, direction: Direction) -> None:
        self._blocked.discard(direction)
        for conn in list(self._conns):
            if direction in conn.gapped:
                conn.cut()

    def status(self) -> str:
        return (
            f"target={self.target[0]}:{self.target[1]} partitioned={self._partitioned}"
            f" blackhole={self._blackhole} delay_s={self.delay_s} drop_p={self.drop_p}"
            f" blocked={sorted(d.value for d in self._blocked)} conns={len(self._conns)}"
        )

    # -- plumbing

    async def _run(self, started: asyncio.Future[None]) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                server = await asyncio.start_server(self._accept, *self._listen)
            except OSError as e:
                started.set_exception(e)
                return
            try:
                self._addr = server.sockets[0].getsockname()[:2]
                started.set_result(None)
                await asyncio.Future()  # until close() cancels us
            finally:
                server.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        try:
            assert self._tg is not None
            self._tg.create_task(coro)
            return True
        except RuntimeError:  # shutting down
            coro.close()
            return False

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._partitioned and not self._blackhole:
            writer.transport.abort()
            return
        conn = _Conn(writer)
        if not self._spawn(self._serve(conn, reader)):
            writer.transport.abort()

    async def _serve(self, conn: _Conn, client_r: asyncio.StreamReader) -> None:
        self._conns.add(conn)
        try:
            if self._partitioned:
                conn.blackholed = True
                while data := await client_r.read(_CHUNK_BYTES):
                    self.discarded_bytes += len(data)
                return
            async with asyncio.timeout(self._connect_timeout_s):
                target_r, conn.target = await asyncio.open_connection(*self.target)
            if conn.client.is_closing():  # cut while we were dialing
                return
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(conn, client_r, conn.target, Direction.UP))
                tg.create_task(self._pump(conn, target_r, conn.client, Direction.DOWN))
        except (OSError, TimeoutError):
            pass
        finally:
            self._conns.discard(conn)
            conn.cut()

    async def _pump(
        self,
        conn: _Conn,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        loop = asyncio.get_running_loop()
        pipe: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_PIPE_MAX_CHUNKS)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._deliver(conn, pipe, dst))
            try:
                while data := await src.read(_CHUNK_BYTES):
                    if self.drop_p and self._rng.random() < self.drop_p:
                        conn.cut()
                        break
                    if direction in self._blocked:
                        conn.gapped.add(direction)
                        self.discarded_bytes += len(data)
                        continue
                    self.held_chunks += 1
                    await pipe.put((loop.time(), data))
            except OSError:
                conn.cut()
            await pipe.put(None)

    async def _deliver(
        self,
        conn: _Conn,
        pipe: asyncio.Queue[tuple[float, bytes] | None],
        dst: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (item := await pipe.get()) is not None:
                read_at, data = item
                try:
                    while (wait_s := read_at + self._delay_s - loop.time()) > 0:
                        changed = self._delay_changed
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(wait_s):
                                await changed.wait()
                    if dst.is_closing():  # uvloop raises on a write to a closed transport
                        raise ConnectionResetError("connection closed")
                    dst.write(data)
                finally:
                    self.held_chunks -= 1
                await dst.drain()
            if dst.can_write_eof() and not dst.is_closing():
                dst.write_eof()  # pass the half-close on
        except OSError:
            conn.cut()
            while await pipe.get() is not None:  # let the reader finish
                self.held_chunks -= 1


# --- the command line ---------------------------------------------------------------------------


def _parse_addr(s: str) -> Address:
    host, _, port = s.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def apply_command(proxy: FaultProxy, line: str) -> str:
    """Apply one control command (see the module docstring); return the answer line."""
    words = line.split()
    try:
        match words:
            case ["partition"]:
                proxy.partition()
            case ["partition", "blackhole"]:
                proxy.partition(blackhole=True)
            case ["heal"]:
                proxy.heal()
            case ["delay", s]:
                proxy.delay_s = max(0.0, float(s))
            case ["drop", p]:
                proxy.drop_p = min(1.0, max(0.0, float(p)))
            case ["block", d]:
                proxy.block(Direction(d))
            case ["unblock", d]:
                proxy.unblock(Direction(d))
            case ["status"]:
                return "ok " + proxy.status()
            case _:
                return f"error: unknown command {line.strip()!r}"
    except ValueError as e:
        return f"error: {e}"
    return "ok"


async def _main(listen: Address, target: Address) -> None:
    async with FaultProxy(listen, target) as proxy:
        host, port = proxy.address
        print(f"listening {host}:{port}", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            if line.strip() in ("quit", "exit"):
                break
            if line.strip():
                print(apply_command(proxy, line), flush=True)
    print("ok bye", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftbox.testing.faultproxy")
    parser.add_argument("--listen", type=_parse_addr, default=("127.0.0.1", 0))
    parser.add_argument("--target", type=_parse_addr, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.listen, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
