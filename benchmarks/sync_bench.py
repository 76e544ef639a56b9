"""Sync benchmark (issue 7): a folder synced from A to B by raftbox and by its peers, same data,
same machine, same run.

    .venv/bin/python -m benchmarks.sync_bench [--files 2000] [--file-kib 4] [--big-mib 256]
        [--append-mib 1] [--only raftbox,rsync,rsync-delta,rclone,syncthing] [--repeat 1]
        [--json bench-out/sync.json] [--tmp DIR]

Data: `--files` files of `--file-kib` random bytes in five sub-folders, plus one `--big-mib`
random file. Scenario, per system, on fresh folders A and B: A is filled (a copy of the data,
not timed), then the initial sync A→B is timed; then one small file has 8 bytes rewritten in
place and `--append-mib` random bytes are appended to the big file, and the incremental sync
A→B is timed from the moment the edit is made. After every round B must equal A (names and
SHA-256 of every file; the systems' own state folders aside), or the round is marked wrong.
Before the initial round A is left to settle until its newest mtime is 2 s old (the same for
every system): data that is "already there" when a sync starts, and outside raftbox's racily
clean window (`scanner.RACY_NS`), so that the initial scan may cache what it hashes.

Systems (all on 127.0.0.1, as shipped unless said):

- `rsync -a A/ B/` (local copies use rsync's --whole-file) and `rsync -a --no-whole-file`
  (the delta algorithm); bytes: "Total bytes sent" of `--stats` (sender to receiver);
- `rclone sync A B` (local to local; bytes: its final stats' transferred bytes);
- Syncthing, two headless instances (`peers/syncthing.py`): a round starts with a rescan of A
  through the REST API and ends when B's REST API says B holds every file at A's version;
  bytes: A's `/rest/system/connections` out total (total: in + out);
- raftbox: `raftbox up` (one process: TLS, CDC, zstd 3, fsync per block) and two clients logged
  in with `raftbox login`; a round is `raftbox sync A` (A's upload) then `raftbox sync B` (B's
  download), each timed as the process it is (start-up included); bytes from `--stats-json`:
  sent = A's bytes_sent, total = everything both clients sent and received; each client's CPU
  seconds (user + system, from the children's rusage) are printed too: on a shared machine they
  move less with the load than wall times do.

Targets (issue 7): raftbox's initial A→B faster than Syncthing and within 2x rclone; its
incremental round faster than rclone with under 2 MiB sent. Every process started is stopped
(try/finally) and the work directory removed. The machine is shared: compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from benchmarks.peers.etcd import spawn, stop_all
from benchmarks.peers.syncthing import SyncthingPair, free_port, syncthing_version

PY = sys.executable
RAFTBOX = str(Path(PY).with_name("raftbox"))
KiB, MiB = 1024, 1024 * 1024
SETTLE_NS = 2_200_000_000  # > scanner.RACY_NS (2 s)
STATE_DIRS = {".raftbox", ".stfolder", ".stversions"}  # the systems' own state, not data
FOLDERS = ("docs", "code/src", "code/tests", "photos/2024", "notes")
BIG = "media/big.bin"
ALL = ("rsync", "rsync-delta", "rclone", "syncthing", "raftbox")


class RoundError(RuntimeError):
    """A system failed a round (non-zero exit, timeout, or B never caught up)."""


@dataclass
class Data:
    src: Path
    names: list[str]  # every file, relative, the big one last
    small_edit: str  # the file that gets 8 bytes rewritten
    edit_bytes: bytes
    append: bytes

    @property
    def files(self) -> int:
        return len(self.names)


@dataclass
class Round:
    seconds: float
    sent: int | None  # bytes from A's side toward B
    total: int | None  # bytes on the wire, every direction and leg
    ok: bool = True
    diff: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def make_data(src: Path, files: int, file_bytes: int, big_bytes: int, append_bytes: int) -> Data:
    names = []
    for i in range(files):
        rel = f"{FOLDERS[i % len(FOLDERS)]}/file{i:05d}.dat"
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(file_bytes))
        names.append(rel)
    big = src / BIG
    big.parent.mkdir(parents=True, exist_ok=True)
    with open(big, "wb") as f:
        left = big_bytes
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
    names.append(BIG)
    return Data(src, names, names[len(names) // 2], os.urandom(8), os.urandom(append_bytes))


def block_floor(data: Data) -> int:
    """What a block-level protocol must send for the edit under raftbox's default chunking (CDC,
    ~1 MiB blocks): the big file's blocks after the append that it did not have before (the old
    last block, cut at the old end of file, plus the appended bytes), and the small file whole."""
    from raftbox.blocks.chunker import CDC, Chunker, chunk_file

    cf = chunk_file(data.src / BIG, CDC)
    for _ in cf:
        pass
    old = {bid for bid, _size in cf.blocks}
    ch, new = Chunker(CDC), []
    with open(data.src / BIG, "rb") as f:
        while piece := f.read(4 * MiB):
            new += ch.feed(piece)
    new += ch.feed(data.append) + ch.finish()
    return sum(c.size for c in new if c.id not in old) + (data.src / data.small_edit).stat().st_size


def fill(data: Data, a: Path) -> None:
    """A gets a copy of the data; returns once A's newest mtime is SETTLE_NS old."""
    shutil.copytree(data.src, a, dirs_exist_ok=True)
    newest = max((a / n).stat().st_mtime_ns for n in data.names)
    wait_ns = newest + SETTLE_NS - time.time_ns()
    if wait_ns > 0:
        time.sleep(wait_ns / 1e9)  # waiting for a condition on the clock itself (mtime age)


def edit(data: Data, a: Path) -> None:
    with open(a / data.small_edit, "r+b") as f:
        f.seek(100)
        f.write(data.edit_bytes)
    with open(a / BIG, "ab") as f:
        f.write(data.append)


def digest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in STATE_DIRS]
        for name in files:
            p = Path(dirpath, name)
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while piece := f.read(4 * MiB):
                    h.update(piece)
            out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out


def differences(a: Path, b: Path) -> list[str]:
    da, db = digest(a), digest(b)
    out = [f"only in A: {n}" for n in sorted(da.keys() - db.keys())]
    out += [f"only in B: {n}" for n in sorted(db.keys() - da.keys())]
    out += [f"differs: {n}" for n in sorted(da.keys() & db.keys()) if da[n] != db[n]]
    return out


def run(argv: list[str], timeout_s: float, **kw) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, **kw)
    except subprocess.TimeoutExpired:
        raise RoundError(f"timed out after {timeout_s:.0f}s: {shlex.join(argv)}") from None
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-8:]
        raise RoundError(f"exit {r.returncode}: {shlex.join(argv)}\n    " + "\n    ".join(tail))
    return r


# -- systems --------------------------------------------------------------------------------------


class System(Protocol):
    label: str

    def round(self, phase: str) -> Round: ...


class Rsync:
    def __init__(self, a: Path, b: Path, timeout_s: float, delta: bool) -> None:
        self.a, self.b, self.timeout_s = a, b, timeout_s
        self.args = ["--no-whole-file"] if delta else []
        self.label = "rsync -a" + (" --no-whole-file" if delta else "")

    def round(self, phase: str) -> Round:
        argv = ["rsync", "-a", *self.args, "--stats", f"{self.a}/", f"{self.b}/"]
        t0 = time.perf_counter()
        r = run(argv, self.timeout_s)
        s = time.perf_counter() - t0

        def stat(name: str) -> int:
            m = re.search(rf"{name}: ([\d,]+)", r.stdout)
            assert m, r.stdout
            return int(m.group(1).replace(",", ""))

        sent, received = stat("Total bytes sent"), stat("Total bytes received")
        return Round(s, sent, sent + received)


class Rclone:
    label = "rclone sync"

    def __init__(self, work: Path, a: Path, b: Path, timeout_s: float) -> None:
        self.a, self.b, self.timeout_s = a, b, timeout_s
        self.conf = work / "rclone.conf"
        self.conf.touch()

    def round(self, phase: str) -> Round:
        argv = ["rclone", "sync", str(self.a), str(self.b), "--config", str(self.conf),
                "--use-json-log", "-v", "--stats", "1h"]  # fmt: skip
        t0 = time.perf_counter()
        r = run(argv, self.timeout_s)
        s = time.perf_counter() - t0
        moved = None
        for line in r.stderr.splitlines():
            if line.startswith("{") and '"stats"' in line:
                moved = int(json.loads(line)["stats"]["bytes"])
        return Round(s, moved, moved)  # local to local: bytes copied, no wire


class Syncthing:
    label = "syncthing (2 instances)"

    def __init__(self, work: Path, a: Path, b: Path, data: Data, timeout_s: float) -> None:
        self.pair = SyncthingPair(work / "syncthing")
        self.a, self.b, self.data, self.timeout_s = a, b, data, timeout_s

    def __enter__(self) -> Syncthing:
        self.pair.__enter__()
        try:
            self.pair.share("bench", self.a, self.b)
        except BaseException:
            self.pair.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.pair.stop()

    def round(self, phase: str) -> Round:
        in0, out0 = self.pair.bytes_total()
        changed = [self.data.small_edit, BIG]
        t0 = time.perf_counter()
        try:
            self.pair.scan_a(self.timeout_s)
            t_scan = time.perf_counter()
            t1 = self.pair.wait_in_sync(self.data.files, changed, self.timeout_s)
        except RuntimeError as e:
            raise RoundError(str(e)) from None
        in1, out1 = self.pair.bytes_total()
        return Round(t1 - t0, out1 - out0, (in1 - in0) + (out1 - out0),
                     extra={"scan_a_s": round(t_scan - t0, 3)})  # fmt: skip


class Raftbox:
    label = "raftbox (up + 2 clients)"

    def __init__(self, work: Path, a: Path, b: Path, timeout_s: float) -> None:
        self.work, self.a, self.b, self.timeout_s = work, a, b, timeout_s
        self.data_dir = work / "up-data"
        self.cfg = {"A": work / "cfg-a", "B": work / "cfg-b"}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Raftbox:
        listen = f"127.0.0.1:{free_port()}"
        self.proc = spawn([RAFTBOX, "up", "--data", str(self.data_dir), "--listen", listen],
                          log_path=self.work / "up.log")  # fmt: skip
        try:
            token, url = self._wait_up()
            for cfg in self.cfg.values():
                run([RAFTBOX, "login", url, "--token", token, "--ca",
                     str(self.data_dir / "ca.pem"), "--config", str(cfg)], 60)  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_up(self, timeout_s: float = 60.0) -> tuple[str, str]:
        """The server writes DATA/url, DATA/ca.pem and (last) DATA/token once it serves."""
        deadline = time.monotonic() + timeout_s
        files = [self.data_dir / n for n in ("token", "url", "ca.pem")]
        while True:
            if all(f.exists() for f in files):
                token = files[0].read_text()
                if token.endswith("\n"):
                    return token.strip(), files[1].read_text().strip()
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RoundError(f"raftbox up did not start; see {self.work / 'up.log'}")
            time.sleep(0.05)  # polling for the server's files, with a deadline

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None:
            stop_all([self.proc], grace_s=15.0)
            self.proc = None

    def round(self, phase: str) -> Round:
        stats, walls, cpus = {}, {}, {}
        for side, folder in (("A", self.a), ("B", self.b)):
            out = self.work / f"stats-{phase}-{side}.json"
            argv = [RAFTBOX, "sync", str(folder), "--config", str(self.cfg[side]),
                    "--stats-json", str(out)]  # fmt: skip
            t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            run(argv, self.timeout_s)
            walls[side] = time.perf_counter() - t0
            # CPU seconds of the client process (user + system): on a shared machine, steadier
            # than its wall time (the only child reaped meanwhile is this one)
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[side] = round(ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime, 3)
            stats[side] = json.loads(out.read_text())
        sent = int(stats["A"]["bytes_sent"])
        total = sum(int(s["bytes_sent"]) + int(s["bytes_received"]) for s in stats.values())
        return Round(walls["A"] + walls["B"], sent, total,
                     extra={"wall_s": walls, "cpu_s": cpus, "stats": stats})  # fmt: skip


# -- the scenario ---------------------------------------------------------------------------------


def scenario(name: str, work: Path, data: Data, timeout_s: float) -> dict:
    """Fresh A and B, fill A, initial round, edit, incremental round; B checked after each."""
    work.mkdir(parents=True)
    a, b = work / "A", work / "B"
    a.mkdir()
    b.mkdir()
    sys_: System
    if name in ("rsync", "rsync-delta"):
        sys_ = Rsync(a, b, timeout_s, delta=name == "rsync-delta")
    elif name == "rclone":
        sys_ = Rclone(work, a, b, timeout_s)
    elif name == "syncthing":
        sys_ = Syncthing(work, a, b, data, timeout_s)
    elif name == "raftbox":
        sys_ = Raftbox(work, a, b, timeout_s)
    else:
        raise ValueError(name)
    res: dict = {"label": sys_.label}
    try:
        with contextlib.ExitStack() as stack:
            if isinstance(sys_, (Syncthing, Raftbox)):  # servers: started before the data is in A
                try:
                    stack.enter_context(sys_)
                except RuntimeError as e:
                    res["error"] = f"start: {e}"
                    return res
            fill(data, a)
            for phase in ("initial", "incremental"):
                if phase == "incremental":
                    edit(data, a)
                try:
                    r = sys_.round(phase)
                except RoundError as e:
                    res["error"] = f"{phase}: {e}"
                    break
                r.diff = differences(a, b)
                r.ok = not r.diff
                res[phase] = asdict(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def median_of(runs: list[dict]) -> dict:
    """One system's figures over repeats: medians of seconds and bytes; wrong if any was."""
    out: dict = {"label": runs[0]["label"], "runs": runs}
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        out["error"] = errors[0]
    for phase in ("initial", "incremental"):
        rs = [r[phase] for r in runs if phase in r]
        if not rs:
            continue
        out[phase] = {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "all_s": [round(r["seconds"], 3) for r in rs],
            "sent": None if rs[0]["sent"] is None else statistics.median(r["sent"] for r in rs),
            "total": None if rs[0]["total"] is None else statistics.median(r["total"] for r in rs),
            "ok": all(r["ok"] for r in rs),
            "diff": next((r["diff"] for r in rs if r["diff"]), []),
        }
    return out


# -- report ---------------------------------------------------------------------------------------


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n:,.0f}" if n < 10 * KiB else f"{n / MiB:,.2f} MiB"


def report(fig: dict) -> None:
    res = fig["systems"]
    d = fig["data"]
    print(f"\n== sync A -> B on 127.0.0.1: {d['files']:,} x {d['file_kib']} KiB + 1 x "
          f"{d['big_mib']} MiB; edit: 8 bytes rewritten in one small file + {d['append_mib']} MiB "
          f"appended to the big one; median of {fig['repeat']} ==")  # fmt: skip
    hdr = f"{'system':<30} {'initial s':>10} {'incr s':>9} {'incr sent':>14} {'incr total':>14}  B == A"
    print(hdr)
    print("-" * len(hdr))
    for r in res.values():
        if "initial" not in r:
            print(f"{r['label']:<30} FAILED: {r.get('error', '?')}")
            continue
        ini, inc = r["initial"], r.get("incremental")
        ok = "yes" if ini["ok"] and inc and inc["ok"] else "NO"
        inc_s = f"{inc['seconds']:9.2f}" if inc else f"{'-':>9}"
        print(f"{r['label']:<30} {ini['seconds']:10.2f} {inc_s} "
              f"{fmt_bytes(inc and inc['sent']):>14} {fmt_bytes(inc and inc['total']):>14}  {ok}")  # fmt: skip
        if "error" in r:
            print(f"    error: {r['error']}")
        for phase in ("initial", "incremental"):
            if phase in r and r[phase]["diff"]:
                print(f"    {phase}: B differs from A: {'; '.join(r[phase]['diff'][:5])}")
    if "rclone" in res and "rclone" in fig["only"]:
        print("  (rclone local to local: bytes copied, not sent over a wire)")
    rb = res.get("raftbox")
    if not rb or "initial" not in rb:
        return
    print(f"\nraftbox / peer (same run){'':6} {'initial':>8} {'incr':>8} {'incr sent':>10}")
    for name, r in res.items():
        if name == "raftbox" or "initial" not in r:
            continue
        cells = []
        for phase, key in (("initial", "seconds"), ("incremental", "seconds"),
                           ("incremental", "sent")):  # fmt: skip
            x, y = rb.get(phase, {}).get(key), r.get(phase, {}).get(key)
            cells.append(f"{x / y:7.2f}x" if x is not None and y else f"{'-':>8}")
        print(f"  vs {r['label']:<27} {cells[0]} {cells[1]} {cells[2]:>10}")
    if "raftbox" in res:
        ex = rb.get("runs", [{}])[0]
        for phase in ("initial", "incremental"):
            e = ex.get(phase, {}).get("extra", {})
            if e:
                w = e["wall_s"]
                st = e["stats"]
                print(f"  raftbox {phase}: sync A {w['A']:.2f}s (stats {st['A'].get('seconds', 0):.2f}s, "
                      f"up {st['A'].get('uploaded_files')} files / {fmt_bytes(st['A'].get('uploaded_bytes'))}), "
                      f"sync B {w['B']:.2f}s (stats {st['B'].get('seconds', 0):.2f}s, "
                      f"down {st['B'].get('downloaded_files')} files / {fmt_bytes(st['B'].get('downloaded_bytes'))})")  # fmt: skip
                if "cpu_s" in e:
                    print(f"    CPU seconds (user + system): sync A {e['cpu_s']['A']:.2f}s, "
                          f"sync B {e['cpu_s']['B']:.2f}s")  # fmt: skip

    def get(name: str, phase: str, key: str = "seconds") -> float | None:
        return res.get(name, {}).get(phase, {}).get(key)

    inproc = {}
    for phase in ("initial", "incremental"):
        per_run = [sum(s["seconds"] for s in r[phase]["extra"]["stats"].values())
                   for r in rb["runs"] if phase in r]  # fmt: skip
        if per_run:
            inproc[phase] = statistics.median(per_run)
    if inproc:
        cells = [f"{p} {v:.2f}s" + "".join(
                    f", {v / y:.2f}x {n}" for n in ("rclone", "syncthing")
                    if (y := get(n, p)) is not None)
                 for p, v in inproc.items()]  # fmt: skip
        print("  raftbox without process start-up (the two clients' stats 'seconds'): "
              + "; ".join(cells))  # fmt: skip

    ri, rn, rs = (get("raftbox", "initial"), get("raftbox", "incremental"),
                  get("raftbox", "incremental", "sent"))  # fmt: skip
    si, ci, cn = get("syncthing", "initial"), get("rclone", "initial"), get("rclone", "incremental")
    print("targets (issue 7):")
    for what, x, y, ok, show in (
        ("initial faster than Syncthing", ri, si, lambda x, y: x < y, "{x:.2f}s vs {y:.2f}s"),
        ("initial within 2x rclone", ri, ci, lambda x, y: x <= 2 * y, "{x:.2f}s vs 2 x {y:.2f}s"),
        ("incremental faster than rclone", rn, cn, lambda x, y: x < y, "{x:.2f}s vs {y:.2f}s"),
        ("incremental sent under 2 MiB", rs, 2 * MiB, lambda x, y: x < y, "{x:,.0f} bytes"),
    ):
        if x is None or y is None:
            print(f"  {what + ':':<34} - (not measured)")
        else:
            print(f"  {what + ':':<34} {'met' if ok(x, y) else 'MISSED'} ({show.format(x=x, y=y)})")
    if "raftbox_block_floor" in fig:
        print(f"  (the edit's new CDC blocks, what any block-level upload must send: "
              f"{fig['raftbox_block_floor']:,} bytes = the big file's old last block, re-cut, "
              f"+ the {d['append_mib']} MiB appended + the small file)")  # fmt: skip
    phases = ("initial", "incremental")
    if not all(r.get(p, {}).get("ok", True) for r in res.values() for p in phases):
        print("  WARNING: some system left B different from A (see above)")


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except OSError:
            return "missing"
        return r.stdout.split("\n")[0]

    return {
        "rsync": first_line(["rsync", "--version"]),
        "rclone": first_line(["rclone", "version"]),
        "syncthing": syncthing_version() if shutil.which("syncthing") else "missing",
        "raftbox": first_line([RAFTBOX, "version"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--file-kib", type=int, default=4)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--append-mib", type=int, default=1)
    ap.add_argument("--only", default=",".join(ALL), help="comma list of " + ",".join(ALL))
    ap.add_argument("--repeat", type=int, default=1, help="scenarios per system (median)")
    ap.add_argument("--timeout-s", type=float, default=900.0, help="per round")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--tmp", help="parent of the work directory (default: the system temp dir)")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    if bad := [s for s in only if s not in ALL]:
        ap.error(f"unknown system(s) {bad}; choose from {','.join(ALL)}")
    print("$ " + shlex.join([os.path.relpath(PY), "-m", "benchmarks.sync_bench", *sys.argv[1:]]),
          flush=True)  # fmt: skip
    need = {"rsync": "rsync", "rsync-delta": "rsync", "rclone": "rclone", "syncthing": "syncthing"}
    missing = sorted({need[s] for s in only if s in need and shutil.which(need[s]) is None})
    if missing:
        raise SystemExit(f"missing: {' '.join(missing)} (apt-get install -y {' '.join(missing)})")
    tmp = Path(tempfile.mkdtemp(prefix="raftbox-sync-bench-", dir=args.tmp))
    fig: dict = {
        "data": {"files": args.files, "file_kib": args.file_kib, "big_mib": args.big_mib,
                 "append_mib": args.append_mib},
        "repeat": args.repeat, "only": only, "versions": versions(), "systems": {},
    }  # fmt: skip
    print("versions: " + "; ".join(f"{k} {v}" for k, v in fig["versions"].items()), flush=True)
    t_all = time.monotonic()
    try:
        data = make_data(tmp / "src", args.files, args.file_kib * KiB, args.big_mib * MiB,
                         args.append_mib * MiB)  # fmt: skip
        if "raftbox" in only:
            fig["raftbox_block_floor"] = block_floor(data)
        runs: dict[str, list[dict]] = {s: [] for s in only}
        for i in range(args.repeat):
            for s in only:  # interleaved, so that drift in the machine's speed hits every system
                print(f"[{i + 1}/{args.repeat}] {s} ...", flush=True)
                r = scenario(s, tmp / f"{s}-{i}", data, args.timeout_s)
                for p in ("initial", "incremental"):
                    if p in r:
                        print(f"    {p}: {r[p]['seconds']:.2f}s, sent {fmt_bytes(r[p]['sent'])}"
                              + ("" if r[p]["ok"] else " B != A"), flush=True)  # fmt: skip
                if "error" in r:
                    print(f"    error: {r['error']}", flush=True)
                runs[s].append(r)
        fig["systems"] = {s: median_of(rs) for s, rs in runs.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fig["took_s"] = round(time.monotonic() - t_all, 1)
    report(fig)
    print(f"took {fig['took_s']:.0f}s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(fig, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
