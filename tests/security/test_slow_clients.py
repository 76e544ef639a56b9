"""Attack 3 of issue 11: clients that trickle or go silent are cut off, live ones are not.

One `raftbox up` with short limits (2 s for a head, an idle body and an idle keep-alive); every
test waits for the server to close a connection with a deadline many times those limits, and
never asserts on elapsed time. Before the limits existed every one of these connections was held
(aiohttp's only bound is an hour of keep-alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl

import pytest

from raftbox.testing.procs import wait_for

from .limits_server import LimitedUp, closed_by_peer, read_response, wait_closed

LIMIT_S = 2.0
DEADLINE_S = 30.0  # "closed by the server", with room for a loaded machine


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    srv = LimitedUp(
        tmp_path_factory.mktemp("slow"),
        [
            "--header-timeout-s", str(LIMIT_S),
            "--body-idle-timeout-s", str(LIMIT_S),
            "--keepalive-timeout-s", str(2 * LIMIT_S),
            "--tls-handshake-timeout-s", str(LIMIT_S),
            "--send-stall-timeout-s", str(LIMIT_S),
        ],
    )  # fmt: skip
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _no_traceback(up):
    """Nothing a slow client does leaves a traceback in the server's log."""
    up.mark()
    yield
    assert "Traceback" not in up.log(), up.log()[-4000:]


def test_trickled_headers_are_all_cut_off(up):
    """55 connections each sending its head a byte every half second: all closed."""
    n = 55
    head = up.head("files/list_folder", extra="X-Slow: " + "a" * 200)

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            for i in range(len(head)):
                writer.write(head[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.5)  # the attack's pace, not a synchronisation

        sender = asyncio.create_task(send())
        try:
            await wait_closed(reader)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            writer.close()

    async def main() -> None:
        conns = await asyncio.gather(*(up.open() for _ in range(n)))
        async with asyncio.timeout(DEADLINE_S):
            await asyncio.gather(*(trickle(r, w) for r, w in conns))

    asyncio.run(main())


def test_silent_huge_upload_is_cut_off(up):
    """`Content-Length: 2147483648`, a few bytes, then silence: the server lets go."""
    s = up.connect()
    with s:
        s.sendall(up.head("files/upload", length=2**31, arg={"path": "/huge.bin"}) + b"x" * 100)
        assert closed_by_peer(s, DEADLINE_S)


def test_silent_upload_within_the_size_limit_is_cut_off(up):
    """A body the server would accept (10 MiB) that stops after a few bytes: closed when idle."""
    s = up.connect()
    with s:
        s.sendall(up.head("files/upload", length=10 << 20, arg={"path": "/stall.bin"}) + b"y" * 10)
        assert closed_by_peer(s, DEADLINE_S)


def test_silent_chunked_upload_is_cut_off(up):
    s = up.connect()
    with s:
        head = up.head("files/upload", arg={"path": "/stall2.bin"}, chunked=True)
        s.sendall(head + b"10\r\n" + b"z" * 16 + b"\r\n")
        assert closed_by_peer(s, DEADLINE_S)


def test_slow_but_live_upload_succeeds(up):
    """Bytes every second for longer than the idle limit in total: the upload completes."""
    pieces = [bytes([65 + i]) * 1024 for i in range(int(3 * LIMIT_S) + 2)]
    body = b"".join(pieces)
    s = up.connect()
    with s:
        s.sendall(up.head("files/upload", length=len(body), arg={"path": "/slow.bin"}))
        for p in pieces[:-1]:
            s.sendall(p)
            s.settimeout(1.0)  # waiting for the next second of a slow sender, not for the server
            with pytest.raises(TimeoutError):
                s.recv(1)  # nothing comes back meanwhile: the server did not give up
        s.sendall(pieces[-1])
        s.settimeout(DEADLINE_S)
        status, _headers, resp = read_response(s)
    assert status == 200, resp
    assert json.loads(resp)["size"] == len(body)


def test_idle_keepalive_connection_is_closed(up):
    """A connection that completed a request and then says nothing is closed."""
    s = up.connect()
    with s:
        s.sendall(up.head("users/get_current_account", length=None))
        status, headers, body = read_response(s)
        assert status == 200, body
        assert headers.get("connection", "").lower() != "close"
        assert closed_by_peer(s, DEADLINE_S)


def test_silent_new_connection_is_closed(up):
    """A connection that finishes the TLS handshake and never sends a byte is closed."""
    s = up.connect()
    with s:
        assert closed_by_peer(s, DEADLINE_S)


def test_download_to_a_client_that_does_not_read_is_cut_off(up):
    """A client that asks for 16 MiB and reads nothing: the server stops holding the answer."""
    body = bytes(range(256)) * (16 * 4096)
    s = up.connect()
    with s:
        s.sendall(up.head("files/upload", length=len(body), arg={"path": "/big.bin"}) + body)
        status, _h, resp = read_response(s)
        assert status == 200, resp
    s = up.connect(rcvbuf_bytes=4096)
    with s:
        s.sendall(up.head("files/download", length=None, arg={"path": "/big.bin"}))
        # the server says when it gives up (its log line counts connections it cut, by limit)
        wait_for(lambda: "send_stall_timeout_s" in up.log(), DEADLINE_S, "the server let go")
        got = 0
        s.settimeout(DEADLINE_S)
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while piece := s.recv(1 << 20):
                got += len(piece)
        assert got < len(body)  # the answer ended early: the rest was never sent
