"""The fault proxy: it forwards faithfully, and each fault does what it says."""

from __future__ import annotations

import asyncio
import sys

import pytest

from raftbox.testing import Direction, FaultProxy, wait_until
from raftbox.testing.aio import async_test, event_loop_kind  # noqa: F401

LOCAL = ("127.0.0.1", 0)


class Echo:
    """A TCP echo server that counts its connections and the bytes it received."""

    def __init__(self) -> None:
        self.conns = 0
        self.received = 0
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *LOCAL)
        self.addr = self._server.sockets[0].getsockname()[:2]

    def _accept(self, reader, writer) -> None:
        self.conns += 1
        task = asyncio.ensure_future(self._echo(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _echo(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                self.received += len(data)
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self._server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


class Setup:
    def __init__(self, **kw) -> None:
        self.kw = kw
        self.clients: list[asyncio.StreamWriter] = []

    async def __aenter__(self):
        self.echo = Echo()
        await self.echo.start()
        self.proxy = FaultProxy(LOCAL, self.echo.addr, **self.kw)
        await self.proxy.start()
        return self

    async def __aexit__(self, *exc):
        for w in self.clients:
            w.close()
        await self.proxy.close()
        await self.echo.close()

    async def connect(self):
        reader, writer = await asyncio.open_connection(*self.proxy.address)
        self.clients.append(writer)
        return reader, writer


async def roundtrip(reader, writer, data: bytes) -> bytes:
    writer.write(data)
    return await reader.readexactly(len(data))


async def wait_cut(reader) -> bytes:
    """Wait until the proxy closes this connection (EOF or reset); what arrived before that."""
    try:
        return await reader.read()
    except ConnectionError:
        return b""


@async_test
async def test_pass_through_forwards_both_ways_and_passes_half_close_on():
    async with Setup() as s:
        reader, writer = await s.connect()
        assert await roundtrip(reader, writer, b"hello") == b"hello"
        big = bytes(range(256)) * 4096  # 1 MiB: many chunks, order kept
        assert await roundtrip(reader, writer, big) == big
        writer.write_eof()
        assert await reader.read() == b""  # echo saw EOF, closed, and so did we


@async_test
async def test_partition_cuts_connections_and_refuses_new_ones_until_heal():
    async with Setup() as s:
        reader, writer = await s.connect()
        assert await roundtrip(reader, writer, b"x") == b"x"
        s.proxy.partition()
        assert await wait_cut(reader) == b""
        reader2, _ = await s.connect()
        assert await wait_cut(reader2) == b""  # accepted, then reset
        assert s.echo.conns == 1
        s.proxy.heal()
        reader3, writer3 = await s.connect()
        assert await roundtrip(reader3, writer3, b"back") == b"back"
        assert s.echo.conns == 2


@async_test
async def test_blackhole_partition_swallows_bytes_and_heal_cuts_the_blackholed():
    async with Setup() as s:
        s.proxy.partition(blackhole=True)
        reader, writer = await s.connect()
        writer.write(b"into the void")
        await wait_until(lambda: s.proxy.discarded_bytes == 13)
        with pytest.raises(TimeoutError):  # asserting an absence needs some wait
            async with asyncio.timeout(0.1):
                await reader.read(1)
        assert s.echo.conns == 0
        s.proxy.heal()
        assert await wait_cut(reader) == b""


@async_test
async def test_delay_holds_chunks_pipelined_in_order_until_it_is_lowered():
    # Checked by what the proxy holds, not by timing it: with a delay longer than the test,
    # nothing reaches the target; the proxy keeps reading while it holds (pipelined, not one
    # chunk at a time); lowering the delay releases what it holds, in order. (Both directions
    # run the same pump; the answers come back through it too.)
    async with Setup(delay_s=3600.0) as s:
        reader, writer = await s.connect()
        for i in range(5):
            writer.write(b"%d" % i)  # one chunk each: the next is written once this one is held
            await wait_until(lambda i=i: s.proxy.held_chunks == i + 1)
        assert s.echo.received == 0
        s.proxy.delay_s = 0.0  # applies to the chunks already held
        assert await reader.readexactly(5) == b"01234"
        assert s.echo.received == 5 and s.proxy.held_chunks == 0
        assert await roundtrip(reader, writer, b"fast") == b"fast"


@async_test
async def test_drop_cuts_the_connection():
    async with Setup() as s:
        reader, writer = await s.connect()
        assert await roundtrip(reader, writer, b"ok") == b"ok"
        s.proxy.drop_p = 1.0
        writer.write(b"lost")
        assert await wait_cut(reader) == b""
        assert s.echo.received == 2


@async_test
async def test_blocking_one_direction_discards_it_and_unblocking_cuts_the_gapped_stream():
    async with Setup() as s:
        reader, writer = await s.connect()
        s.proxy.block(Direction.DOWN)
        writer.write(b"one way")
        await wait_until(lambda: s.proxy.discarded_bytes == 7)  # up flowed, the echo did not
        s.proxy.unblock(Direction.DOWN)
        assert await wait_cut(reader) == b""  # the echo was lost, so the stream cannot go on

        reader, writer = await s.connect()
        s.proxy.block(Direction.UP)
        writer.write(b"nothing")
        await wait_until(lambda: s.proxy.discarded_bytes == 14)
        s.proxy.unblock(Direction.UP)
        assert await wait_cut(reader) == b""
        assert s.echo.received == 7


@async_test
async def test_command_line_proxy_is_driven_over_stdin():
    echo = Echo()
    await echo.start()
    host, port = echo.addr
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "raftbox.testing.faultproxy",
        "--target",
        f"{host}:{port}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:

        async def command(line: str) -> str:
            proc.stdin.write(line.encode() + b"\n")
            return (await proc.stdout.readline()).decode().strip()

        first = (await proc.stdout.readline()).decode().split()
        assert first[0] == "listening"
        phost, _, pport = first[1].rpartition(":")
        reader, writer = await asyncio.open_connection(phost, int(pport))
        assert await roundtrip(reader, writer, b"via process") == b"via process"
        assert await command("partition") == "ok"
        assert await wait_cut(reader) == b""
        writer.close()
        assert (await command("status")).startswith("ok target=")
        assert (await command("delay nope")).startswith("error:")
        assert (await command("fly")).startswith("error:")
        assert await command("heal") == "ok"
        reader, writer = await asyncio.open_connection(phost, int(pport))
        assert await roundtrip(reader, writer, b"again") == b"again"
        writer.close()
        assert await command("quit") == "ok bye"
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await echo.close()
