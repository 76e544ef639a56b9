"""Attacks 3 and 6 of issue 11: oversized heads and bodies, broken framing, too many connections.

One `raftbox up` with the default size limits, a per-address cap of 20 connections, and long
timeouts. Every
refusal is the Dropbox-shaped answer the SDK expects (a 400 whose text body starts with
`Error in call to API function`, a 409 `payload_too_large`, a 503 the SDK retries), and nothing
a client sends leaves a traceback in the server's log.
"""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from raftbox.testing.procs import wait_for

from .limits_server import LimitedUp, closed_by_peer, read_response

PER_ADDRESS = 20
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    srv = LimitedUp(
        tmp_path_factory.mktemp("oversized"),
        # long timeouts: connections held open by a test stay open however slow the machine
        ["--connections-per-address-max", str(PER_ADDRESS)]
        + ["--header-timeout-s", "300", "--keepalive-timeout-s", "300"],
    )
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _own_log(up):
    """Each test reads only what the server logged during it."""
    up.mark()


def no_traceback(up: LimitedUp) -> None:
    log = up.log()
    assert "Traceback" not in log, log[-6000:]


def ask(up: LimitedUp, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    s = up.connect()
    with s:
        s.sendall(raw)
        return read_response(s)


def expect_bad_input(resp: tuple[int, dict[str, str], bytes], route: str | None) -> str:
    status, headers, body = resp
    assert status == 400, (status, body[:300])
    assert headers["content-type"].startswith("text/plain"), headers
    text = body.decode()
    where = f' "{route}"' if route else ""
    assert text.startswith(f"Error in call to API function{where}: "), text
    return text


@pytest.mark.parametrize("size", [1 << 20, 80 * 1024], ids=["1MB", "80KB"])
def test_huge_dropbox_api_arg(up, size):
    """Past the header limit: the head is refused with the route's 400, and no traceback."""
    arg = json.dumps({"path": "/a.txt", "pad": "x" * size})
    expect_bad_input(ask(up, up.head("files/upload", arg=arg, length=1) + b"z"), "files/upload")
    no_traceback(up)


def test_dropbox_api_arg_over_its_own_limit(up):
    """Under the header limit but over the argument's own (64 KiB): the route's own 400."""
    arg = json.dumps({"path": "/a.txt", "pad": "x" * (66 * 1024)})
    resp = ask(up, up.head("files/upload", arg=arg, length=1) + b"z")
    assert "Dropbox-API-Arg is too large" in expect_bad_input(resp, "files/upload")
    no_traceback(up)


def test_long_header_line(up):
    resp = ask(up, up.head("files/list_folder", extra="X-Long: " + "y" * 100_000 + "\r\n"))
    expect_bad_input(resp, "files/list_folder")
    no_traceback(up)


def test_long_request_line(up):
    resp = ask(up, up.head("files/list_folder?x=" + "q" * 100_000))
    expect_bad_input(resp, "files/list_folder")
    no_traceback(up)


def test_thousand_headers(up):
    extra = "".join(f"X-H{i}: v\r\n" for i in range(1000))
    expect_bad_input(ask(up, up.head("files/list_folder", extra=extra)), "files/list_folder")
    no_traceback(up)


def test_head_over_its_total_size(up):
    """Each header within its limit, the count within its limit, the whole head too large."""
    extra = "".join(f"X-H{i}: {'w' * 8000}\r\n" for i in range(30))
    expect_bad_input(ask(up, up.head("files/list_folder", extra=extra)), "files/list_folder")
    no_traceback(up)


def test_garbage_request_line(up):
    expect_bad_input(ask(up, b"\x16\x03garbage\r\n\r\n"), None)
    no_traceback(up)


def test_upload_declaring_too_much_is_refused_before_reading(up):
    """Content-Length over 150 MiB: `payload_too_large` at once, without sending a byte of it."""
    status, _h, body = ask(up, up.head("files/upload", length=150 * 2**20 + 1, arg={"path": "/b"}))
    assert status == 409, body
    assert json.loads(body)["error"][".tag"] == "payload_too_large"
    no_traceback(up)


def test_rpc_declaring_too_much_is_refused_before_reading(up):
    resp = ask(up, up.head("files/list_folder", length=64 * 2**20))
    expect_bad_input(resp, "files/list_folder")


def test_bad_chunked_encoding(up):
    raw = up.head("files/upload", arg={"path": "/c.bin"}, chunked=True) + b"zz-not-hex\r\nabc\r\n"
    status, _h, body = ask(up, raw)
    assert status == 400, body
    no_traceback(up)


def test_client_hangs_up_mid_upload_and_mid_download(up):
    s = up.connect()
    s.sendall(up.head("files/upload", length=1 << 20, arg={"path": "/d.bin"}) + b"a" * 5000)
    s.close()
    body = bytes(range(256)) * 8192  # 2 MiB
    status, _h, resp = ask(up, up.head("files/upload", length=len(body), arg={"path": "/e.bin"}) + body)  # fmt: skip
    assert status == 200, resp
    for _ in range(3):
        s = up.connect()
        s.sendall(up.head("files/download", length=None, arg={"path": "/e.bin"}))
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        s.close()  # mid-download
    # the server is fine, and said nothing alarming
    status, _h, resp = ask(up, up.head("users/get_current_account", length=None))
    assert status == 200
    no_traceback(up)


def _refused(s: ssl.SSLSocket) -> bool:
    """The server answered 503 without being asked, or closed: refused."""
    s.settimeout(DEADLINE_S)
    try:
        data = s.recv(200)
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 503")


def test_connections_per_address_are_capped(up):
    held = [up.connect() for _ in range(PER_ADDRESS)]
    try:
        # one more from the same address: refused at once
        extra = up.connect()
        with extra:
            assert _refused(extra)
        # another address still gets through
        other = up.connect(source="127.0.0.2")
        with other:
            other.sendall(up.head("users/get_current_account", length=None))
            assert read_response(other)[0] == 200
    finally:
        for s in held:
            s.close()

    # the slots come back when the connections close
    def served() -> bool:
        s = up.connect()
        with s:
            s.sendall(up.head("users/get_current_account", length=None))
            return read_response(s)[0] == 200

    wait_for(served, DEADLINE_S, "a new connection is served again")
    no_traceback(up)


def test_plain_http_on_the_tls_port_is_dropped(up):
    s = socket.create_connection(("127.0.0.1", up.port), timeout=DEADLINE_S)
    with s:
        s.sendall(b"POST /2/files/list_folder HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed_by_peer(s, DEADLINE_S)  # type: ignore[arg-type]
