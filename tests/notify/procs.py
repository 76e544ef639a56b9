"""Real `raftbox serve` processes for the notify end-to-end tests: meta members, notify roots and
leaves sharing one CA and one admin token, on 127.0.0.1.

`Net` is a context manager: on the way out it kills every process it started (the `atexit` hook
of `raftbox.testing.procs` does it too if the test process dies first) and, if the block raised,
prints the tail of every log. A process can be killed and started again on the same port and data directory. Waiting is
always for a condition with a deadline (`wait_for`), never a fixed sleep.

The SDK is imported lazily and pointed at a host by its `_host_map` (as tests/api does), so that
importing this module never fixes the SDK's host names for another suite.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from raftbox import cluster
from raftbox.testing import procs
from raftbox.testing.procs import quiet_port, wait_for  # noqa: F401
from raftbox.tls import issue, make_ca

HOST = "127.0.0.1"
RAFTBOX = str(Path(sys.executable).with_name("raftbox"))


class Proc(procs.Proc):
    """`raftbox serve --data NET/NAME ARGV` in a session of its own; ready once it wrote its
    `url` file."""

    def __init__(self, net: Net, name: str, argv: list[str]) -> None:
        self.net, self.argv = net, argv
        self.data = net.base / name
        super().__init__(
            name,
            [RAFTBOX, "serve", "--data", str(self.data), *argv],
            net.base / f"{name}.log",
            start_new_session=True,
        )
        self.url = ""

    @property
    def popen(self) -> subprocess.Popen | None:
        return self.proc

    def start(self) -> Proc:
        self.data.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.data / "url").unlink()
        super().start()
        return self

    def ready(self, timeout_s: float = 60) -> Proc:
        def up() -> str:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            return (self.data / "url").read_text().strip()

        self.url = wait_for(up, timeout_s, f"{self.name} serving")
        return self

    @property
    def hostport(self) -> str:
        return self.url.split("://", 1)[1]

    def status(self) -> dict:
        r = requests.post(
            self.url + "/2/raftbox/notify/status",
            headers={"Authorization": f"Bearer {self.net.admin}"},
            verify=self.net.ca,
            timeout=10,
        )
        r.raise_for_status()
        return r.json()


class Net:
    """Processes sharing a CA and an admin token (see the module docstring)."""

    WAIT_CAP = ("--longpoll-wait-cap-s", "2")

    def __init__(self, base: Path) -> None:
        self.base = base
        self.admin = "rbxadmin_" + secrets.token_urlsafe(24)  # never starts with "-"
        self.procs: dict[str, Proc] = {}
        ca_cert, ca_key = make_ca("notify tests CA", 2)
        cert, key = issue(ca_cert, ca_key, "raftbox", (HOST, "localhost"), 2)
        from cryptography.hazmat.primitives import serialization

        self.ca = str(base / "ca.pem")
        Path(self.ca).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        (base / "server.pem").write_bytes(cert)
        (base / "server.key").write_bytes(key)
        self.tls = ["--tls-cert", str(base / "server.pem"), "--tls-key", str(base / "server.key")]

    def __enter__(self) -> Net:
        return self

    def __exit__(self, et, e, tb) -> None:
        for p in self.procs.values():
            p.kill()
        if et is not None:
            for p in self.procs.values():
                print(f"--- tail of {p.log_path} ---\n{p.tail(30)}")

    def members(self, n: int, roles: str = "meta,block") -> list[Proc]:
        ports = [quiet_port() for _ in range(n)]
        peer_ports = [quiet_port() for _ in range(n)]
        # Peer TLS from `raftbox cluster init`'s code; the public certificate and the admin
        # token stay the Net's (given explicitly, they override the bundle's).
        bundles = cluster.init(
            str(self.base / f"bundles-{len(self.procs)}"),
            {i + 1: (HOST, p) for i, p in enumerate(peer_ports)},
        )
        out = []
        for i in range(n):
            argv = ["--cluster", bundles[i], "--listen", f"{HOST}:{ports[i]}",
                    "--roles", roles, "--admin-token", self.admin, "--tick-ms", "20",
                    "--blocks", f"file://{self.base / 'blocks'}",  # one store for all
                    *self.tls, *self.WAIT_CAP]  # fmt: skip
            out.append(self._add(Proc(self, f"m{i + 1}", argv)))
        for p in out:
            p.start()
        for p in out:
            p.ready()
        return out

    def notify(self, name: str, *, meta: list[Proc] = (), roots: list[Proc] = (),
               plain: bool = False) -> Proc:  # fmt: skip
        argv = ["--roles", "notify", "--listen", f"{HOST}:{quiet_port()}",
                "--admin-token", self.admin, "--ca", self.ca, *self.tls, *self.WAIT_CAP]  # fmt: skip
        if meta:
            argv += ["--meta", ",".join(p.url for p in meta)]
        if roots:
            argv += ["--notify-root", ",".join(p.url for p in roots)]
        if plain:
            argv.append("--plain-http")
        return self._add(Proc(self, name, argv)).start().ready()

    def _add(self, p: Proc) -> Proc:
        self.procs[p.name] = p
        return p

    def account(self, member: Proc, email: str) -> str:
        """A new account's token."""
        r = requests.post(
            member.url + "/2/raftbox/admin/create_account",
            json={"email": email},
            headers={"Authorization": f"Bearer {self.admin}"},
            verify=self.ca,
            timeout=30,
        )
        r.raise_for_status()
        return r.json()["token"]

    def sdk(self, token: str, api: Proc, notify: Proc | None = None) -> Any:
        """The official SDK: api and content routes to `api`, long-poll to `notify`."""
        import dropbox

        s = dropbox.create_session(ca_certs=self.ca)
        s.trust_env = False  # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override ca_certs
        dbx = dropbox.Dropbox(token, session=s, max_retries_on_error=8)
        n = notify or api
        dbx._host_map = {"api": api.hostport, "content": api.hostport, "notify": n.hostport}
        return dbx
