"""What the notify benchmarks share: real processes on 127.0.0.1 (a meta member with a notify root
inside, notify leaves, load generators), a small sync HTTP client, and /proc readings.

Every process started here is stopped by `Procs.stop()` (the benchmarks call it in `finally`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(pred, timeout_s: float, what: str, poll_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            if r := pred():
                return r
        except Exception as e:  # noqa: BLE001 - "not yet"
            last = e
        time.sleep(poll_s)
    raise RuntimeError(f"not within {timeout_s}s: {what} (last error {last!r})")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


class Procs:
    """Processes of one benchmark run, with their logs in a temporary directory."""

    def __init__(self, prefix: str) -> None:
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.procs: list[subprocess.Popen] = []
        self.admin = "rbxadmin_" + secrets.token_urlsafe(24)  # never starts with "-"
        from cryptography.hazmat.primitives import serialization

        from raftbox.tls import issue, make_ca

        ca_cert, ca_key = make_ca("bench CA", 2)
        cert, key = issue(ca_cert, ca_key, "raftbox", (HOST, "localhost"), 2)
        self.ca = os.path.join(self.dir, "ca.pem")
        Path(self.ca).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        Path(self.dir, "cert.pem").write_bytes(cert)
        Path(self.dir, "key.pem").write_bytes(key)
        self.tls = ["--tls-cert", os.path.join(self.dir, "cert.pem"),
                    "--tls-key", os.path.join(self.dir, "key.pem")]  # fmt: skip
        self.http = requests.Session()
        self.http.verify = self.ca
        self.http.trust_env = False

    def spawn(self, argv: list[str], name: str, **kw) -> subprocess.Popen:
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        kw.setdefault("stdout", log)
        p = subprocess.Popen(argv, stderr=log, cwd=ROOT, start_new_session=True, **kw)
        log.close()
        self.procs.append(p)
        return p

    def serve(self, name: str, argv: list[str]) -> tuple[subprocess.Popen, str]:
        data = os.path.join(self.dir, name)
        p = self.spawn([PY, "-m", "raftbox.cli", "serve", "--data", data, *argv], name)
        url = wait_for(
            lambda: Path(data, "url").read_text().strip() if p.poll() is None else 1 / 0,
            60,
            f"{name} serving",
        )
        return p, url

    def meta(self, extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
        peer = free_port()
        return self.serve("meta", ["--node-id", "1", "--listen", f"{HOST}:{free_port()}",
                                   "--peer-listen", f"{HOST}:{peer}", "--peers", f"1={HOST}:{peer}",
                                   "--roles", "meta,block,notify", "--admin-token", self.admin,
                                   *self.tls, *extra])  # fmt: skip

    def leaf(self, name: str, root: str, plain: bool = True, extra: list[str] = ()):
        argv = ["--roles", "notify", "--listen", f"{HOST}:{free_port()}", "--notify-root", root,
                "--admin-token", self.admin, "--ca", self.ca, *self.tls, *extra]  # fmt: skip
        if plain:
            argv.append("--plain-http")
        return self.serve(name, argv)

    def call(self, url: str, route: str, arg: Any, token: str | None = None, data=None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        if data is not None:
            headers["Dropbox-API-Arg"] = json.dumps(arg)
            headers["Content-Type"] = "application/octet-stream"
            r = self.http.post(f"{url}/2/{route}", data=data, headers=headers, timeout=60)
        else:
            r = self.http.post(f"{url}/2/{route}", json=arg, headers=headers, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{route}: {r.status_code} {r.text[:200]}")
        return r.json()

    def account(self, url: str, email: str) -> str:
        return self.call(url, "raftbox/admin/create_account", {"email": email})["token"]

    def cursor(self, url: str, token: str) -> str:
        return self.call(url, "files/list_folder/get_latest_cursor", {"path": ""}, token)["cursor"]

    def upload(self, url: str, token: str, path: str) -> tuple[float, float]:
        """Commit a small file; returns time.monotonic() when it was sent and when the commit
        was acknowledged."""
        sent = time.monotonic()
        self.call(url, "files/upload", {"path": path, "mode": "overwrite"}, token,
                  data=os.urandom(16))  # fmt: skip
        return sent, time.monotonic()

    def status(self, url: str) -> dict:
        return self.call(url, "raftbox/notify/status", None)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class LoadGen:
    """A `benchmarks.notify_load` process, driven over its stdin/stdout."""

    def __init__(self, procs: Procs, name: str, targets: list[tuple[str, int]],
                 ca: str | None = None, source: str | None = None) -> None:  # fmt: skip
        argv = [PY, "-m", "benchmarks.notify_load"]
        if source:
            argv += ["--source", source]
        for url, count in targets:
            hostport = url.split("://", 1)[1]
            argv += ["--target", f"{hostport}:{count}"]
        if ca:
            argv += ["--ca", ca]
        self.p = procs.spawn(argv, name, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {name} died (see its log)")
        self.count = json.loads(line)["ready"]

    def send(self, cmd: dict) -> dict:
        self.p.stdin.write((json.dumps(cmd) + "\n").encode())
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("load generator died")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.send({"op": "exit"})
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
