"""Real raftbox processes for the API tests: `raftbox up`, and a cluster of `raftbox serve`.

Every process is a `raftbox.testing.procs.Proc`: it writes stdout + stderr to its own log file
(appended across restarts), is killed by whoever started it (the fixtures), and — should the test
process die first — by the `atexit` hook of `raftbox.testing.procs`. Waiting is always for a
condition with a deadline (`wait_for`), never a fixed sleep.

The cluster shares one CA and one server certificate (made here with `raftbox.tls`), passed to
every member with --tls-cert/--tls-key, so a single `ca.pem` is trusted for all of them, one
--admin-token, and one block store (--blocks file://DIR: blocks are not replicated between
members, so a download through member B of what member A took needs a shared store).
`leader()` asks the members (admin route `raftbox/admin/status`) which of them leads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from raftbox.cluster import init as _cluster_init
from raftbox.testing.procs import (  # noqa: F401 - re-exported for the tests
    Proc,
    free_port,
    proc_status_kb,
    quiet_port,
    wait_for,
)

HOST = "127.0.0.1"
RAFTBOX = str(Path(sys.executable).with_name("raftbox"))


def _http(ca: str) -> requests.Session:
    s = requests.Session()
    s.verify = ca
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
    return s


def create_account_http(
    hostport: str, ca: str, admin_token: str, email: str, timeout_s: float = 30.0
) -> tuple[str, str]:
    """(account_id, token) of a new account, through the admin route."""
    with _http(ca) as s:
        r = s.post(
            f"https://{hostport}/2/raftbox/admin/create_account",
            json={"email": email, "display_name": email.split("@")[0]},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=timeout_s,
        )
    r.raise_for_status()
    body = r.json()
    return body["account_id"], body["token"]


class UpServer:
    """`raftbox up --data DIR --listen 127.0.0.1:PORT` as a process."""

    def __init__(self, base: Path, port: int) -> None:
        self.data = base / "up-data"
        self.hostport = f"{HOST}:{port}"
        self.proc = Proc("raftbox up", [RAFTBOX, "up", "--data", str(self.data),
                                        "--listen", self.hostport], base / "up.log")  # fmt: skip
        self.token = self.ca = self.admin_token = ""

    def start(self, timeout_s: float = 60.0) -> None:
        self.proc.start()
        self.proc.wait_output("Stop with Ctrl-C", timeout_s)
        self.token = (self.data / "token").read_text().strip()
        self.admin_token = (self.data / "admin.token").read_text().strip()
        self.ca = str(self.data / "ca.pem")
        url = (self.data / "url").read_text().strip()
        assert url == f"https://{self.hostport}", url

    def stop(self) -> None:
        self.proc.stop()


def make_bundles(out: Path, members: dict[int, tuple[str, int]]) -> dict[int, Path]:
    """`raftbox cluster init --members ... --out out` (the same code): member id -> bundle."""
    return {
        i: Path(p) for i, p in zip(sorted(members), _cluster_init(str(out), members), strict=True)
    }


class Member:
    def __init__(self, i: int, base: Path) -> None:
        self.id = i
        self.data = base / f"m{i}"
        self.port = free_port()
        self.peer_port = free_port()
        self.proc: Proc | None = None

    @property
    def hostport(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def peer_addr(self) -> tuple[str, int]:
        return (HOST, self.peer_port)


class ApiCluster:
    """`n` members of `raftbox serve` (every role), each started with its bundle from
    `raftbox cluster init` (`self.bundles`): one CA, one admin token, mutual TLS between
    members."""

    def __init__(self, base: Path, n: int = 3, tick_ms: int = 20) -> None:
        self.base = base
        self.tick_ms = tick_ms
        self.members = {i: Member(i, base) for i in range(1, n + 1)}
        self.bundles = make_bundles(
            base / "bundles", {i: m.peer_addr for i, m in self.members.items()}
        )
        first = self.bundles[1]
        self.admin_token = (first / "admin.token").read_text().strip()
        self.ca = str(first / "ca.pem")
        # Every member's server certificate names 127.0.0.1 and localhost: any one serves.
        self.cert, self.key = str(first / "server.pem"), str(first / "server.key")
        # One block store for all: any member serves a download of blocks another one took.
        self.blocks = "file://" + str(base / "blocks")
        for m in self.members.values():
            args = [RAFTBOX, "serve", "--cluster", str(self.bundles[m.id]), "--data", str(m.data),
                    "--listen", m.hostport, "--blocks", self.blocks,
                    "--tick-ms", str(tick_ms)]  # fmt: skip
            m.proc = Proc(f"member {m.id}", args, base / f"m{m.id}.log")

    def proc(self, i: int) -> Proc:
        p = self.members[i].proc
        assert p is not None
        return p

    def start(self, timeout_s: float = 60.0) -> None:
        for i in self.members:
            self.proc(i).start()
        for i in self.members:
            self.proc(i).wait_output(f"raftbox member {i} serving", timeout_s)

    def restart(self, *ids: int, timeout_s: float = 60.0) -> None:
        """Start the members `ids` again (all at once: each waits for a leader to serve)."""
        for i in ids:
            self.proc(i).start()
        for i in ids:
            self.proc(i).wait_output(f"raftbox member {i} serving", timeout_s)

    def kill9(self, i: int) -> None:
        self.proc(i).kill9()

    def stop(self) -> None:
        for i in self.members:
            self.proc(i).stop()

    def tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- member {i} ({self.proc(i).log_path}) ---\n{self.proc(i).tail(lines)}"
            for i in self.members
        )

    def status(self, i: int, timeout_s: float = 5.0) -> dict:
        """Member i's Raft status (id, role, leader, term, commit, applied, ...), from the
        admin route `raftbox/admin/status`."""
        with _http(self.ca) as s:
            r = s.post(
                f"https://{self.members[i].hostport}/2/raftbox/admin/status",
                headers={"Authorization": f"Bearer {self.admin_token}"},
                timeout=timeout_s,
            )
        r.raise_for_status()
        return r.json()

    def leader(self, timeout_s: float = 30.0) -> int:
        """The leader every live member agrees on (waits for one)."""

        def agreed() -> int:
            live = [i for i in self.members if self.proc(i).alive]
            leaders = {self.status(i)["leader"] for i in live}
            (leader,) = leaders  # ValueError (not yet) unless they agree
            return leader if leader in live else 0

        return wait_for(agreed, timeout_s, "the live members agree on a leader", poll_s=0.05)
