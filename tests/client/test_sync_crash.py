"""Kill -9 of `raftbox sync` mid-download, mid-upload and mid-commit, then a pass that finishes.

The claim (issue 7): a sync process killed at any moment, then started again, finishes the job
with no loss, no duplicate and no corrupt file. Here `raftbox sync DIR --config CFG` runs as a
real process against a real `raftbox up`, and is killed -9 at moments chosen by waiting for a
condition (never a sleep): a temporary download file in `DIR/.raftbox/tmp/` reaching a random
share of the big file's size, the process having read or written a random number of bytes
(`/proc/PID/io`: a big upload being cut, small files' blocks being sent), or the index's WAL
having grown by a random number of bytes (commits being recorded); plus a random extra delay
of a few milliseconds. Each scenario kills several times, each kill after a restart, then lets
a pass run to the end. Checked:

- at every kill point: every file visible under its real name is complete and correct (or
  absent), and the server holds only expected paths, each with its expected content;
- at the end: the folder equals the source byte for byte, the server holds each file exactly
  once (no conflicted copy, no duplicate), a fresh folder synced from the server equals the
  source too, and no temporary file is left behind.

`SYNC_CRASH_KILLS` (default 3) and `SYNC_CRASH_MIB` (default 80) make it longer
(`make sync-soak`); `SYNC_SEED` fixes the moments' random choices.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from raftbox.blocks.hashing import content_hash
from raftbox.client.config import Config, save
from raftbox.client.index import STATE_DIR
from raftbox.testing.procs import free_port, wait_for

from .synctest import UpServer, create_account_http, diff, snapshot, temp_files

RAFTBOX = str(Path(sys.executable).with_name("raftbox"))
KILLS = int(os.environ.get("SYNC_CRASH_KILLS", "3"))
BIG_MIB = int(os.environ.get("SYNC_CRASH_MIB", "80"))
SEED = int(os.environ.get("SYNC_SEED", str(random.randrange(1 << 30))))
MiB = 1024 * 1024
PASS_TIMEOUT_S = 180.0
START_READ_BYTES = 8 * MiB  # what the interpreter reads (modules) before a pass reads a file


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory):
    srv = UpServer(tmp_path_factory.mktemp("crash-up"), free_port())
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


class Account:
    """A fresh account: its config directory and a way to list what the server holds."""

    def __init__(self, srv: UpServer, base: Path, name: str) -> None:
        _, token = create_account_http(srv.hostport, srv.ca, srv.admin_token, f"{name}@crash.test")
        self.url = f"https://{srv.hostport}"
        self.cfg_dir = base / f"cfg-{name}"
        save(Config(self.url, token, srv.ca), self.cfg_dir)
        self.http = requests.Session()
        self.http.verify = srv.ca
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    def listing(self) -> dict[str, str | None]:
        """Every path on the server (relative, as displayed) → its content hash ("link:TARGET"
        for a symlink, None for a folder)."""

        def call(route: str, arg: dict) -> dict:
            r = self.http.post(f"{self.url}/2/{route}", json=arg, timeout=60)
            r.raise_for_status()
            return r.json()

        out: dict[str, str | None] = {}
        res = call("files/list_folder", {"path": "", "recursive": True, "limit": 2000})
        while True:
            for m in res["entries"]:
                if m[".tag"] == "deleted":
                    continue
                link = m.get("symlink_info")
                out[m["path_display"][1:]] = (
                    "link:" + link["target"] if link else m.get("content_hash")
                )
            if not res["has_more"]:
                return out
            res = call("files/list_folder/continue", {"cursor": res["cursor"]})

    def sync_cmd(self, root: Path, device: str) -> list[str]:
        return [RAFTBOX, "sync", str(root), "--config", str(self.cfg_dir), "--quiet",
                "--device-name", device]  # fmt: skip

    def sync(self, root: Path, device: str) -> None:
        """A pass to the end (it must succeed)."""
        r = subprocess.run(self.sync_cmd(root, device), capture_output=True, text=True,
                           timeout=PASS_TIMEOUT_S, stdin=subprocess.DEVNULL)  # fmt: skip
        assert r.returncode == 0, f"raftbox sync {root} failed ({r.returncode}):\n{r.stderr}"


def make_small_files(root: Path, rng: random.Random, folders: int, per_folder: int) -> None:
    for d in range(folders):
        sub = root / f"dir{d:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per_folder):
            (sub / f"file{i:04d}.txt").write_bytes(
                f"{d}/{i}\n".encode() + rng.randbytes(rng.randrange(200, 4000))
            )


def write_big(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MiB))


# -- choosing the moment -----------------------------------------------------------------------


def io_bytes(pid: int, field: str) -> int:
    """`rchar` / `wchar` of /proc/PID/io: bytes the process read / wrote so far (files and
    sockets)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def wal_bytes(root: Path) -> int:
    try:
        return os.path.getsize(root / STATE_DIR / "index.db-wal")
    except FileNotFoundError:
        return 0


def tmp_max_bytes(root: Path) -> int:
    d = root / STATE_DIR / "tmp"
    best = 0
    try:
        for name in os.listdir(d):
            try:
                best = max(best, os.path.getsize(d / name))
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass
    return best


class Killer:
    """Starts `raftbox sync`, waits for a moment, kills it -9 there (see the module doc)."""

    def __init__(self, acct: Account, root: Path, device: str, rng: random.Random,
                 log: Path) -> None:  # fmt: skip
        self.acct, self.root, self.device, self.rng, self.log = acct, root, device, rng, log
        self.landed: list[str] = []  # the moments a kill hit a running pass
        self.missed: list[str] = []  # the moments the pass finished before

    def run_and_kill(self, what: str, moment: Callable[[int], bool]) -> bool:
        """Start a pass; when `moment(pid)` holds, wait 0–20 ms more and kill it -9. True if the
        kill hit a running pass, False if the pass ended first (it must then have succeeded)."""
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(self.acct.sync_cmd(self.root, self.device),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)  # fmt: skip
        try:

            def reached() -> bool:
                if proc.poll() is not None:
                    return True
                try:
                    return moment(proc.pid)
                except (FileNotFoundError, ProcessLookupError):  # /proc entry gone: exited
                    return proc.poll() is not None

            wait_for(reached, PASS_TIMEOUT_S, f"{what}: the moment to kill", poll_s=0.002)
            if proc.poll() is None:
                time.sleep(self.rng.uniform(0, 0.02))  # the moment's random part, not a wait
                proc.kill()
            rc = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        if rc == -9:
            self.landed.append(what)
            return True
        assert rc == 0, f"{what}: the pass ended with {rc} before the kill; see {self.log}"
        self.missed.append(what)
        return False


def fingerprint(e: tuple) -> str:
    """What a snapshot entry holds, in the server listing's terms."""
    return {"file": lambda: content_hash(e[1]), "link": lambda: "link:" + e[1],
            "dir": lambda: "dir"}[e[0]]()  # fmt: skip


class Expect:
    """Every version a path has had in the source (any of them may be where a kill left it)."""

    def __init__(self) -> None:
        self.versions: dict[str, set[str]] = {}

    def add(self, snap: dict) -> None:
        for rel, e in snap.items():
            self.versions.setdefault(rel, set()).add(fingerprint(e))

    def check_local(self, root: Path, when: str) -> None:
        """Every entry under its real name is one the source had, and every file is complete
        and correct: never partial, never a stray temporary file."""
        for rel, e in snapshot(root).items():
            assert rel in self.versions, f"{when}: unexpected {rel!r} in {root.name}"
            assert fingerprint(e) in self.versions[rel], (
                f"{when}: {rel!r} in {root.name} is partial or wrong ({len(e[1])} bytes)"
            )

    def check_server(self, acct: Account, when: str) -> None:
        """Whatever the server holds is a path the source had, with one of its contents."""
        for rel, h in acct.listing().items():
            assert rel in self.versions, f"{when}: unexpected {rel!r} on the server"
            assert (h or "dir") in self.versions[rel], (
                f"{when}: {rel!r} on the server has content the source never had"
            )


def check_end(acct: Account, src_snap: dict, base: Path, when: str) -> None:
    """The server holds each source entry exactly once; a fresh folder synced from it equals
    the source byte for byte."""
    got = {rel: h or "dir" for rel, h in acct.listing().items()}
    want = {rel: fingerprint(e) for rel, e in src_snap.items()}
    extra = sorted(set(got) - set(want))
    missing = sorted(set(want) - set(got))
    assert not extra and not missing, f"{when}: server extra {extra[:10]}, missing {missing[:10]}"
    wrong = [rel for rel in want if got[rel] != want[rel]]
    assert not wrong, f"{when}: server content differs for {wrong[:10]}"
    fresh = base / f"fresh-{time.monotonic_ns()}"
    acct.sync(fresh, "fresh")
    snap = snapshot(fresh)
    assert snap == src_snap, f"{when}: a fresh download differs:\n{diff(src_snap, snap)}"
    assert not temp_files(fresh)


# -- the scenarios -----------------------------------------------------------------------------


def _seeded(name: str) -> random.Random:
    print(f"{name}: SYNC_SEED={SEED}")
    return random.Random(f"{SEED}-{name}")


def _report(k: Killer) -> None:
    print(f"landed: {k.landed}; missed: {k.missed}")
    assert k.landed, "no kill hit a running pass: the test proved nothing"


def test_kill_mid_download_then_finish(up: UpServer, tmp_path: Path) -> None:
    """A big file and many small ones downloading: killed while the big one is partly in
    `.raftbox/tmp`, or while small ones are installed and recorded. Whenever a pass ends
    before its kill, the source changes (a new big file), so the next pass has work again."""
    rng = _seeded("download")
    acct = Account(up, tmp_path, "dl")
    try:
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        write_big(src / "big.bin", BIG_MIB)
        make_small_files(src, rng, folders=4, per_folder=150)
        (src / "dir00" / "tool.sh").write_bytes(b"#!/bin/sh\necho hi\n")
        os.chmod(src / "dir00" / "tool.sh", 0o755)
        os.symlink("dir00/tool.sh", src / "link")
        acct.sync(src, "src")
        ex = Expect()
        ex.add(snapshot(src))
        big = BIG_MIB * MiB
        dst.mkdir()
        k = Killer(acct, dst, "dst", rng, tmp_path / "dst.log")
        for i in range(KILLS):
            if rng.random() < 0.7:
                frac = rng.uniform(0.05, 0.95)
                what = f"kill {i}: big.bin {frac:.0%} in .raftbox/tmp"
                landed = k.run_and_kill(what, lambda _p, f=frac: tmp_max_bytes(dst) >= f * big)
            else:
                base, grow = wal_bytes(dst), rng.randrange(2_000, 60_000)
                what = f"kill {i}: the index's WAL grew {grow} B"
                landed = k.run_and_kill(what, lambda _p, b=base, g=grow: wal_bytes(dst) >= b + g)
            ex.check_local(dst, what)
            if not landed:  # all done: give the next pass something to download
                write_big(src / "big.bin", BIG_MIB)
                acct.sync(src, "src")
                ex.add(snapshot(src))
        _report(k)
        acct.sync(dst, "dst")
        want, got = snapshot(src), snapshot(dst)
        assert got == want, f"after the last pass:\n{diff(want, got)}"
        assert not temp_files(dst), f"left in .raftbox/tmp: {temp_files(dst)}"
        check_end(acct, want, tmp_path, "after the last pass")
    finally:
        acct.close()


def test_kill_mid_upload_then_finish(up: UpServer, tmp_path: Path) -> None:
    """A big file being read (scanned, then cut and sent) and committed: killed when the
    process has read a random share of it. Whenever a pass ends before its kill, the file
    grows by 1 MiB (a new version sharing most blocks), so the next pass has work again."""
    rng = _seeded("upload")
    acct = Account(up, tmp_path, "ul")
    try:
        src = tmp_path / "src"
        src.mkdir()
        write_big(src / "big.bin", BIG_MIB)
        (src / "notes.txt").write_bytes(b"small one\n")
        ex = Expect()
        ex.add(snapshot(src))
        k = Killer(acct, src, "src", rng, tmp_path / "src.log")
        for i in range(KILLS):
            before = snapshot(src)
            size = os.path.getsize(src / "big.bin")
            frac = rng.uniform(0.02, 1.0)
            what = f"kill {i}: read {frac:.0%} of big.bin"
            landed = k.run_and_kill(
                what,
                lambda pid, f=frac, n=size: io_bytes(pid, "rchar") >= START_READ_BYTES + f * n,
            )
            assert snapshot(src) == before, f"{what}: the source folder changed"
            ex.check_server(acct, what)
            if not landed:
                with open(src / "big.bin", "ab") as f:
                    f.write(os.urandom(MiB))
                ex.add(snapshot(src))
        _report(k)
        want = snapshot(src)
        acct.sync(src, "src")
        assert snapshot(src) == want, "the last pass changed the source folder"
        assert not temp_files(src)
        check_end(acct, want, tmp_path, "after the last pass")
    finally:
        acct.close()


def test_kill_mid_commit_of_many_small_files_then_finish(up: UpServer, tmp_path: Path) -> None:
    """2,000 small files in batched commits: killed while blocks are sent or while commits
    are recorded in the index (so also between a server commit and its record). Whenever a
    pass ends before its kill, 500 more files appear, so the next pass has work again."""
    rng = _seeded("commit")
    acct = Account(up, tmp_path, "cm")
    try:
        src = tmp_path / "src"
        make_small_files(src, rng, folders=8, per_folder=250)
        ex = Expect()
        ex.add(snapshot(src))
        k = Killer(acct, src, "src", rng, tmp_path / "src.log")
        for i in range(KILLS):
            before = snapshot(src)
            there = acct.listing()
            todo = sum(
                len(e[1])
                for rel, e in before.items()
                if e[0] == "file" and there.get(rel) != fingerprint(e)
            )
            if rng.random() < 0.5:
                frac = rng.uniform(0.05, 1.0)
                what = f"kill {i}: sent {frac:.0%} of the bytes not on the server yet"
                landed = k.run_and_kill(
                    what, lambda pid, f=frac, t=todo: io_bytes(pid, "wchar") >= f * t
                )
            else:
                base, grow = wal_bytes(src), rng.randrange(2_000, 400_000)
                what = f"kill {i}: the index's WAL grew {grow} B"
                landed = k.run_and_kill(what, lambda _p, b=base, g=grow: wal_bytes(src) >= b + g)
            assert snapshot(src) == before, f"{what}: the source folder changed"
            ex.check_server(acct, what)
            if not landed:
                make_small_files(src / f"more{i}", rng, folders=2, per_folder=250)
                ex.add(snapshot(src))
        _report(k)
        want = snapshot(src)
        acct.sync(src, "src")
        assert snapshot(src) == want, "the last pass changed the source folder"
        assert not temp_files(src)
        check_end(acct, want, tmp_path, "after the last pass")
    finally:
        acct.close()
