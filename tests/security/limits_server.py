"""A `raftbox up` process started with chosen limit flags, and raw TLS clients for it.

The tests of the public port's limits talk to a real process through raw (TLS-wrapped) sockets,
so that they can send what no HTTP library would: partial heads, silent bodies, huge headers.
The process writes to its own log file, which the tests read for tracebacks; it is stopped by
the fixture that started it (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from raftbox.testing.procs import HOST, free_port, wait_for

RAFTBOX = str(Path(sys.executable).with_name("raftbox"))


class LimitedUp:
    """`raftbox up --data DIR --listen 127.0.0.1:PORT FLAGS...` as a process."""

    def __init__(self, base: Path, flags: list[str]) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self.log_path = base / "up.log"
        self.args = [RAFTBOX, "up", "--data", str(self.data), "--listen", f"{HOST}:{self.port}"]
        self.args += flags
        self.proc: subprocess.Popen | None = None
        self.token = self.ca = ""
        self.log_offset = 0  # `log()` starts here: set by `mark()`, e.g. at a test's start

    def start(self, timeout_s: float = 90.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"raftbox up exited: {self.log()}")
            return "Stop with Ctrl-C" in self.log()

        wait_for(ready, timeout_s, "raftbox up is ready", poll_s=0.05)
        self.token = (self.data / "token").read_text().strip()
        self.ca = str(self.data / "ca.pem")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        """What the server printed since the last `mark()`."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> None:
        self.log_offset = self.log_path.stat().st_size

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    # -- blocking clients ------------------------------------------------------------------
    def connect(self, source: str = HOST, timeout_s: float = 30.0,
                rcvbuf_bytes: int | None = None) -> ssl.SSLSocket:  # fmt: skip
        raw = socket.socket()
        if rcvbuf_bytes is not None:  # before connecting, so the window is small from the start
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        raw.settimeout(timeout_s)
        raw.bind((source, 0))
        raw.connect((HOST, self.port))
        return self.context().wrap_socket(raw, server_hostname=HOST)

    async def open(self, source: str = HOST) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            HOST, self.port, ssl=self.context(), server_hostname=HOST, local_addr=(source, 0)
        )

    def head(self, route: str, extra: str = "", length: int | None = 0,
             arg: object | None = None, chunked: bool = False) -> bytes:  # fmt: skip
        """A request head for POST /2/ROUTE with the account's token."""
        lines = [f"POST /2/{route} HTTP/1.1", f"Host: {HOST}:{self.port}",
                 f"Authorization: Bearer {self.token}"]  # fmt: skip
        if arg is not None:
            lines.append("Dropbox-API-Arg: " + (arg if isinstance(arg, str) else json.dumps(arg)))
            lines.append("Content-Type: application/octet-stream")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one response with a Content-Length (or up to EOF)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed before a full response head: {buf!r}")
        buf += piece
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = headers.get("content-length")
    while n is None or len(body) < int(n):
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return status, headers, body


def closed_by_peer(sock: ssl.SSLSocket, timeout_s: float) -> bool:
    """True once the server closes `sock` (EOF or reset), reading and dropping whatever comes;
    False if it is still open after `timeout_s`."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return True


async def wait_closed(reader: asyncio.StreamReader) -> None:
    """Until the server closes the connection (whatever it sent first is dropped)."""
    with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
        while await reader.read(65536):
            pass
