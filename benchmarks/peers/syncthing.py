"""Syncthing peer for the sync benchmark: two headless instances on 127.0.0.1 sharing one folder.

`SyncthingPair(work_dir)` (a context manager) generates two homes with `syncthing generate`,
rewrites their config.xml for a closed loopback test (GUI/REST and BEP listen addresses on
127.0.0.1, free ports; global and local discovery, relays, NAT traversal, usage and crash
reporting, upgrades and the browser off; `setLowPriority` off, so that Syncthing is not niced
below the other systems on a shared machine), starts `syncthing serve` twice, introduces the
devices to each other by address through the REST API (`X-API-Key` set in config.xml) and waits
until they are connected.

`share(folder_id, a_dir, b_dir)` adds a send-receive folder on both, with the filesystem
watcher and periodic rescans off: a round starts with `scan_a()` (`POST /rest/db/scan`, which
returns when A's scan is done), the same explicit "sync now" the other systems get, rather than
the watcher's 10 s aggregation delay. `wait_in_sync()` polls B's REST API until B holds what A
holds (every file A has announced is at A's version on B, nothing needed, folder idle), with
a deadline. `bytes_total()` is A's `/rest/system/connections` totals (in, out).

Processes are started in their own process groups with a parent-death signal and stopped
(SIGTERM, then SIGKILL) on `__exit__` (`etcd.spawn` / `etcd.stop_all`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .etcd import spawn, stop_all

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def syncthing_version(exe: str = "syncthing") -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return " ".join(out.split()[:2])


def _set(parent: ET.Element, tag: str, text: str) -> None:
    el = parent.find(tag)
    if el is None:
        el = ET.SubElement(parent, tag)
    el.text = text


class Instance:
    """One `syncthing serve` with its home, GUI/REST port and BEP port."""

    def __init__(self, exe: str, home: Path, name: str) -> None:
        self.exe, self.home, self.name = exe, home, name
        self.gui_port, self.bep_port = free_port(), free_port()
        self.api_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen | None = None
        self.device_id = ""
        subprocess.run([exe, "generate", "--home", str(home), "--no-default-folder",
                        "--skip-port-probing"], check=True, capture_output=True)  # fmt: skip
        self._configure()

    def _configure(self) -> None:
        path = self.home / "config.xml"
        tree = ET.parse(path)
        root = tree.getroot()
        gui = root.find("gui")
        assert gui is not None
        _set(gui, "address", f"127.0.0.1:{self.gui_port}")
        _set(gui, "apikey", self.api_key)
        opts = root.find("options")
        assert opts is not None
        for tag, text in {
            "listenAddress": f"tcp://127.0.0.1:{self.bep_port}",
            "globalAnnounceEnabled": "false",
            "localAnnounceEnabled": "false",
            "relaysEnabled": "false",
            "natEnabled": "false",
            "startBrowser": "false",
            "urAccepted": "-1",
            "crashReportingEnabled": "false",
            "autoUpgradeIntervalH": "0",
            "setLowPriority": "false",
        }.items():
            _set(opts, tag, text)
        dev = root.find("device")
        assert dev is not None
        dev.set("name", self.name)
        tree.write(path)

    def start(self, log_path: Path) -> None:
        env_argv = [self.exe, "serve", "--home", str(self.home), "--no-browser", "--no-restart",
                    "--no-upgrade", "--no-default-folder", "--logflags=3"]  # fmt: skip
        self.proc = spawn(env_argv, log_path=log_path)

    def call(self, method: str, path: str, body: Any = None, timeout_s: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.gui_port}{path}", data=data, method=method,
            headers={"X-API-Key": self.api_key, "Content-Type": "application/json"},
        )  # fmt: skip
        with _NO_PROXY.open(req, timeout=timeout_s) as r:
            raw = r.read()
        return json.loads(raw) if raw.strip() else None

    def wait_up(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"syncthing {self.name} exited (rc={self.proc.returncode})")
            try:
                self.device_id = self.call("GET", "/rest/system/status", timeout_s=2)["myID"]
                return
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"syncthing {self.name}: no REST API in {timeout_s}s"
                    ) from None
                time.sleep(0.1)  # polling the API for readiness, with a deadline


class SyncthingPair:
    """Instances A and B, connected to each other (see the module doc)."""

    def __init__(self, work_dir: Path, exe: str | None = None) -> None:
        exe = exe or shutil.which("syncthing")
        if exe is None:
            raise RuntimeError("syncthing is missing: apt-get install -y syncthing")
        self.exe = exe
        self.dir = work_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.a = Instance(exe, self.dir / "home-a", "A")
        self.b = Instance(exe, self.dir / "home-b", "B")
        self.folder_id = ""

    def __enter__(self) -> SyncthingPair:
        try:
            for inst in (self.a, self.b):
                inst.start(self.dir / f"{inst.name}.log")
            for inst in (self.a, self.b):
                inst.wait_up()
            for me, other in ((self.a, self.b), (self.b, self.a)):
                dev = me.call("GET", "/rest/config/defaults/device")
                dev.update(deviceID=other.device_id, name=other.name,
                           addresses=[f"tcp://127.0.0.1:{other.bep_port}"])  # fmt: skip
                me.call("POST", "/rest/config/devices", dev)
            self._wait_connected()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        stop_all([i.proc for i in (self.a, self.b) if i.proc is not None], grace_s=10.0)

    def _wait_connected(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            conns = self.a.call("GET", "/rest/system/connections")["connections"]
            if conns.get(self.b.device_id, {}).get("connected"):
                return
            time.sleep(0.1)  # polling for the BEP connection, with a deadline
        raise RuntimeError(
            f"syncthing A and B not connected within {timeout_s}s; logs in {self.dir}"
        )

    def share(self, folder_id: str, a_dir: Path, b_dir: Path, timeout_s: float = 60.0) -> None:
        """A send-receive folder `folder_id` at `a_dir` on A and `b_dir` on B (watcher off)."""
        self.folder_id = folder_id
        for inst, path in ((self.a, a_dir), (self.b, b_dir)):
            f = inst.call("GET", "/rest/config/defaults/folder")
            f.update(id=folder_id, label=folder_id, path=str(path), type="sendreceive",
                     fsWatcherEnabled=False, rescanIntervalS=0,
                     devices=[{"deviceID": self.a.device_id}, {"deviceID": self.b.device_id}])  # fmt: skip
            inst.call("POST", "/rest/config/folders", f)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = [self.status(i)["state"] for i in (self.a, self.b)]
            if states == ["idle", "idle"]:
                return
            time.sleep(0.1)  # polling for both folders to come up, with a deadline
        raise RuntimeError(f"syncthing folder {folder_id} not idle within {timeout_s}s")

    def status(self, inst: Instance) -> dict:
        q = urllib.parse.urlencode({"folder": self.folder_id})
        return inst.call("GET", f"/rest/db/status?{q}")

    def scan_a(self, timeout_s: float = 600.0) -> None:
        """Rescan A's folder now; returns when the scan is done."""
        q = urllib.parse.urlencode({"folder": self.folder_id})
        self.a.call("POST", f"/rest/db/scan?{q}", timeout_s=timeout_s)

    def _file_version(self, inst: Instance, name: str) -> tuple[list | None, list | None]:
        q = urllib.parse.urlencode({"folder": self.folder_id, "file": name})
        try:
            r = inst.call("GET", f"/rest/db/file?{q}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None, None
            raise
        return (r.get("local") or {}).get("version"), (r.get("global") or {}).get("version")

    def wait_in_sync(self, files: int, changed: list[str], timeout_s: float = 600.0) -> float:
        """Poll B until it holds `files` files, needs nothing, is idle, and holds every name in
        `changed` at A's version; return the time.perf_counter() at which it did."""
        want = {name: self._file_version(self.a, name)[0] for name in changed}
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status(self.b)
            if (st["state"] == "idle" and st["needTotalItems"] == 0
                    and st["localFiles"] == files and st["globalFiles"] == files
                    and all(self._file_version(self.b, n)[0] == v for n, v in want.items())):  # fmt: skip
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise RuntimeError(f"syncthing B not in sync within {timeout_s}s: {st}")
            time.sleep(0.02)  # polling B's state, with a deadline

    def bytes_total(self) -> tuple[int, int]:
        """A's (inBytesTotal, outBytesTotal) over all its connections so far."""
        t = self.a.call("GET", "/rest/system/connections")["total"]
        return int(t["inBytesTotal"]), int(t["outBytesTotal"])


def _demo(tmp: Path) -> None:  # pragma: no cover - a manual smoke test
    a, b = tmp / "A", tmp / "B"
    a.mkdir()
    b.mkdir()
    with SyncthingPair(tmp / "st") as pair:
        pair.share("bench", a, b)
        (a / "x.txt").write_bytes(os.urandom(4096))
        t0 = time.perf_counter()
        pair.scan_a()
        t1 = pair.wait_in_sync(1, ["x.txt"])
        assert (b / "x.txt").read_bytes() == (a / "x.txt").read_bytes()
        print(f"1 file in {t1 - t0:.2f}s; bytes (in, out) {pair.bytes_total()}")


if __name__ == "__main__":
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="syncthing-peer-"))
    try:
        _demo(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
