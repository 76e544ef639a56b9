"""Long-poll load generator for the notify benchmarks: one process holding many connections.

    python -m benchmarks.notify_load --target HOST:PORT:COUNT [--target ...] [--ca CA.pem]
        [--source 127.0.0.2]

It opens COUNT keep-alive connections to each target (TLS when --ca is given), raises its own
open-file limit, then obeys JSON lines on stdin and answers JSON lines on stdout:

    {"op": "poll", "conns": [first, last), "cursor": C, "timeout": 480}
        send one long-poll on each of those connections (ids count across targets)
    {"op": "collect", "want": N, "timeout_s": T}
        wait until N answers arrived since the last collect (or T passed) and print
        {"answers": [[conn, t_monotonic, status, body], ...]}
    {"op": "stats"}  ->  {"open": n, "waiting": n, "answered": n, "closed": n}
    {"op": "exit"}

Each connection is a bare asyncio protocol (uvloop) that stamps `time.monotonic()` (the system-
wide CLOCK_MONOTONIC, comparable with the driver's) on the first byte of an answer, so the
generator itself adds as little as possible to what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import time


def parse(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


class Conn(asyncio.Protocol):
    __slots__ = ("gen", "i", "t", "buf", "stamp", "waiting")

    def __init__(self, gen: Gen, i: int) -> None:
        self.gen, self.i = gen, i
        self.t: asyncio.Transport | None = None
        self.buf = b""
        self.stamp = 0.0
        self.waiting = False

    def connection_made(self, t) -> None:
        self.t = t

    def data_received(self, data: bytes) -> None:
        # Stamp first, parse later (at collect): the generator's own work must not delay the
        # stamps of the answers queued behind this one. Every answer here is a JSON object.
        if not self.buf:
            self.stamp = time.monotonic()
        self.buf += data
        if self.buf.endswith(b"}") and b"\r\n\r\n" in self.buf:
            raw, self.buf = self.buf, b""
            self.waiting = False
            self.gen.answered(self.i, self.stamp, raw)

    def connection_lost(self, exc) -> None:
        self.gen.closed += 1
        self.waiting = False
        self.t = None

    def poll(self, host: bytes, body: bytes) -> None:
        assert self.t is not None
        self.waiting = True
        self.t.write(
            b"POST /2/files/list_folder/longpoll HTTP/1.1\r\nHost: %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (host, len(body), body)
        )


class Gen:
    def __init__(self) -> None:
        self.conns: list[Conn] = []
        self.hosts: list[bytes] = []
        self.answers: list[tuple[int, float, bytes]] = []
        self.closed = 0
        self.total = 0
        self.arrived = asyncio.Event()

    def answered(self, i: int, t: float, raw: bytes) -> None:
        self.answers.append((i, t, raw))
        self.total += 1
        self.arrived.set()

    async def open(self, host: str, port: int, count: int, ctx: ssl.SSLContext | None,
                   source: str | None = None) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(256)
        base = len(self.conns)
        self.conns.extend([None] * count)  # type: ignore[list-item]
        self.hosts.extend([f"{host}:{port}".encode()] * count)

        async def one(i: int) -> None:
            async with sem:
                for attempt in range(20):
                    try:
                        _, c = await loop.create_connection(
                            lambda: Conn(self, i),
                            host,
                            port,
                            ssl=ctx,
                            local_addr=(source, 0) if source else None,
                        )
                        self.conns[i] = c
                        return
                    except OSError:
                        await asyncio.sleep(0.05 * (attempt + 1))  # back-off: accept queue full
                raise RuntimeError(f"cannot open connection {i}")

        await asyncio.gather(*(one(base + k) for k in range(count)))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True, help="HOST:PORT:COUNT")
    ap.add_argument("--ca")
    ap.add_argument(  # more than one port range's worth of connections to one address
        "--source", help="connect from this local address (e.g. 127.0.0.2)"
    )
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = ssl.create_default_context(cafile=a.ca) if a.ca else None
    gen = Gen()
    for t in a.target:
        host, port, count = t.rsplit(":", 2)
        await gen.open(host, int(port), int(count), ctx, a.source)
    out = sys.stdout
    out.write(json.dumps({"ready": len(gen.conns)}) + "\n")
    out.flush()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "poll":
            body = json.dumps({"cursor": cmd["cursor"], "timeout": cmd.get("timeout", 480)})
            lo, hi = cmd["conns"]
            for i in range(lo, hi):
                gen.conns[i].poll(gen.hosts[i], body.encode())
            reply: dict = {"ok": hi - lo}
        elif op == "collect":
            deadline = loop.time() + cmd.get("timeout_s", 60)
            while len(gen.answers) < cmd["want"] and loop.time() < deadline:
                gen.arrived.clear()
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        await gen.arrived.wait()
                except TimeoutError:
                    break
            reply = {"answers": [[i, t, *parse(raw)] for i, t, raw in gen.answers]}
            gen.answers = []
        elif op == "stats":
            reply = {
                "open": sum(1 for c in gen.conns if c.t is not None),
                "waiting": sum(1 for c in gen.conns if c.waiting),
                "answered": gen.total,
                "closed": gen.closed,
            }
        elif op == "exit":
            break
        else:
            reply = {"error": f"unknown op {op}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    for c in gen.conns:
        if c.t is not None:
            c.t.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
