"""Block transfer benchmark: a big file up and down through the official SDK and through the
native block protocol, next to this machine's limits measured in the same run; the bytes an
edit costs against rsync; and what storing the same file under two accounts costs the store.

    .venv/bin/python -m benchmarks.blocks_bench [--size-mib 1024] [--edit-mib 64] [--parallel 4]
                                                [--json bench-out/blocks.json]

Everything runs on this machine, on 127.0.0.1, in one run:

- limits: SHA-256 of the file's bytes on one core; a plain local copy of the file with fsync;
  a loopback transfer of the same bytes to/from a trivial aiohttp server process (HTTP and HTTPS,
  the same TLS as raftbox), sent with `requests` as the SDK sends;
- `raftbox up` (single node, TLS, local block directory, CDC chunking, zstd level 3) as a
  process; the SDK's own transfer helpers (`dropbox.file_transfer`, `--parallel` requests) and
  `NativeClient` (has → put missing → commit_batch; blocks/list → blocks/get);
- dedup: the SDK's file uploaded again by a second account through the native protocol; the
  store's size (bytes of block files) before and after;
- the edit: a `--edit-mib` file stored, 100 bytes inserted in its middle, sent again through
  the native protocol (request bodies counted), against `rsync --no-whole-file --stats` of the
  same edit between two local directories (rsync's "Total bytes sent"; Debian's rsync package).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
RAFTBOX = str(Path(PY).with_name("raftbox"))
MiB = 1024 * 1024

SINK = r"""
import asyncio, os, ssl, sys
from aiohttp import web
path, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
async def sink(request):
    n = 0
    while chunk := await request.content.read(1 << 20):
        n += len(chunk)
    return web.json_response({"n": n})
async def source(request):
    resp = web.StreamResponse()
    resp.content_length = os.path.getsize(path)
    await resp.prepare(request)
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            await resp.write(piece)
    return resp
app = web.Application(client_max_size=1 << 40)
app.router.add_post("/sink", sink)
app.router.add_get("/source", source)
ctx = None
if cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
web.run_app(app, host="127.0.0.1", port=port, ssl_context=ctx, print=lambda *a: print("ready", flush=True))
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mbps(n: int, s: float) -> float:
    return n / MiB / s


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


# -- limits ---------------------------------------------------------------------------------------


def sha256_limit(path: Path) -> float:
    h = hashlib.sha256()
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        while piece := f.read(8 * MiB):
            h.update(piece)
    return mbps(path.stat().st_size, time.perf_counter() - t0)


def copy_limit(path: Path, dest: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb") as src, open(dest, "wb") as dst:
        while piece := src.read(8 * MiB):
            dst.write(piece)
        dst.flush()
        os.fsync(dst.fileno())
    s = time.perf_counter() - t0
    dest.unlink()
    return mbps(path.stat().st_size, s)


def http_limits(path: Path, tmp: Path) -> dict[str, float]:
    """Loopback transfer of the file to and from a trivial aiohttp server process."""
    import requests
    from cryptography.hazmat.primitives import serialization

    from raftbox.tls import issue, make_ca

    ca_cert, ca_key = make_ca("bench CA", valid_days=1)
    cert_pem, key_pem = issue(ca_cert, ca_key, "bench", ("127.0.0.1", "localhost"), valid_days=1)
    ca, cert, key = tmp / "sink-ca.pem", tmp / "sink.pem", tmp / "sink.key"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    size = path.stat().st_size
    out: dict[str, float] = {}
    for scheme in ("http", "https"):
        port = free_port()
        args = [PY, "-c", SINK, str(path), str(port)]
        args += [str(cert), str(key)] if scheme == "https" else ["", ""]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            s = requests.Session()
            s.trust_env = False
            verify = str(ca) if scheme == "https" else False
            url = f"{scheme}://127.0.0.1:{port}"
            t0 = time.perf_counter()
            with open(path, "rb") as f:  # 1 MiB writes (a file object would go in 8 KiB ones)
                pieces = iter(lambda: f.read(MiB), b"")
                r = s.post(url + "/sink", data=pieces, verify=verify, timeout=600)
            assert r.json()["n"] == size
            out[f"{scheme} up"] = mbps(size, time.perf_counter() - t0)
            t0 = time.perf_counter()
            with s.get(url + "/source", stream=True, verify=verify, timeout=600) as r:
                n = sum(len(c) for c in r.iter_content(1 << 20))
            assert n == size
            out[f"{scheme} down"] = mbps(size, time.perf_counter() - t0)
            s.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return out


def limits(path: Path, tmp: Path) -> dict[str, float]:
    out = {"sha256 1 core": sha256_limit(path), "copy+fsync": copy_limit(path, tmp / "copy.bin")}
    out.update(http_limits(path, tmp))
    return out


# -- raftbox --------------------------------------------------------------------------------------


class Up:
    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "up-data"
        self.port = free_port()
        self.hostport = f"127.0.0.1:{self.port}"
        self.log = open(tmp / "up.log", "wb")
        self.proc = subprocess.Popen(
            [RAFTBOX, "up", "--data", str(self.data), "--listen", self.hostport,
             "--gc-interval-s", "0"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (self.data / "token").exists() or not (self.data / "url").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"raftbox up did not start: see {tmp / 'up.log'}")
            time.sleep(0.05)  # polling for the server's files, with a deadline
        self.token = (self.data / "token").read_text().strip()
        self.admin = (self.data / "admin.token").read_text().strip()
        self.ca = str(self.data / "ca.pem")

    def account(self, email: str) -> str:
        r = subprocess.run(
            [RAFTBOX, "user", "add", email, "--data", str(self.data)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return r.stdout.strip().splitlines()[-1]

    def store_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.data / "blocks"):
            for name in files:
                if not name.startswith("."):
                    total += os.path.getsize(os.path.join(dirpath, name))
        return total

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        fields = (Path("/proc") / str(self.proc.pid) / "stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def sdk_client(up: Up, token: str):
    os.environ.setdefault("DROPBOX_API_HOST", up.hostport)
    import dropbox

    s = dropbox.create_session(ca_certs=up.ca)
    s.trust_env = False
    dbx = dropbox.Dropbox(token, session=s, timeout=600)
    dbx._host_map = {"api": up.hostport, "content": up.hostport, "notify": up.hostport}
    return dbx


def sdk_transfers(up: Up, token: str, src: Path, out: Path, parallel: int) -> dict[str, float]:
    from dropbox import file_transfer as ft
    from dropbox import files

    dbx = sdk_client(up, token)
    size = src.stat().st_size
    t0 = time.perf_counter()
    res = ft.Uploader(dbx).upload(
        ft.FileUpload(str(src)),
        files.CommitInfo("/sdk.bin", mode=files.WriteMode.overwrite),
        ft.UploadOptions(parallel_uploads=parallel),
    )
    up_s = time.perf_counter() - t0
    assert res.metadata.size == size
    t0 = time.perf_counter()
    ft.Downloader(dbx).download(  # the SDK checks the content_hash of what it wrote
        "/sdk.bin", ft.File(str(out)), ft.DownloadOptions(parallel_downloads=parallel)
    )
    down_s = time.perf_counter() - t0
    assert out.stat().st_size == size
    out.unlink()
    return {"sdk up": mbps(size, up_s), "sdk down": mbps(size, down_s)}


async def native_transfers(up: Up, token: str, src: Path, out: Path, dest: str) -> dict:
    from raftbox.blocks.native import NativeClient

    ctx = ssl.create_default_context(cafile=up.ca)
    size = src.stat().st_size
    mib = size / MiB
    cpu: dict[str, float] = {}
    async with NativeClient(f"https://{up.hostport}", token, ssl_context=ctx) as nc:
        s0, c0, t0 = up.cpu_s(), own_cpu_s(), time.perf_counter()
        meta = await nc.upload(str(src), dest)
        up_s = time.perf_counter() - t0
        s1, c1 = up.cpu_s(), own_cpu_s()
        assert meta["size"] == size
        sent = nc.bytes_sent
        t0 = time.perf_counter()
        await nc.download(dest, str(out))
        down_s = time.perf_counter() - t0
        s2, c2 = up.cpu_s(), own_cpu_s()
    cpu["native up: server"] = 1000 * (s1 - s0) / mib
    cpu["native up: client"] = 1000 * (c1 - c0) / mib
    cpu["native down: server"] = 1000 * (s2 - s1) / mib
    cpu["native down: client"] = 1000 * (c2 - c1) / mib
    assert out.stat().st_size == size
    out.unlink()
    return {"up": mbps(size, up_s), "down": mbps(size, down_s), "sent": sent, "cpu": cpu}


def own_cpu_s() -> float:
    """CPU seconds (user + system) of this process, its threads included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def native_upload(up: Up, token: str, src: Path, dest: str) -> tuple[float, int, int]:
    """(MB/s, request body bytes sent, response body bytes received)"""
    from raftbox.blocks.native import NativeClient

    ctx = ssl.create_default_context(cafile=up.ca)
    async with NativeClient(f"https://{up.hostport}", token, ssl_context=ctx) as nc:
        t0 = time.perf_counter()
        await nc.upload(str(src), dest)
        s = time.perf_counter() - t0
        return mbps(src.stat().st_size, s), nc.bytes_sent, nc.bytes_received


def sdk_upload(up: Up, token: str, src: Path, parallel: int) -> float:
    from dropbox import file_transfer as ft
    from dropbox import files

    dbx = sdk_client(up, token)
    t0 = time.perf_counter()
    ft.Uploader(dbx).upload(
        ft.FileUpload(str(src)),
        files.CommitInfo("/same.bin", mode=files.WriteMode.overwrite),
        ft.UploadOptions(parallel_uploads=parallel),
    )
    return mbps(src.stat().st_size, time.perf_counter() - t0)


def rsync_edit(orig: Path, edited: Path, tmp: Path) -> dict[str, int]:
    exe = shutil.which("rsync")
    if exe is None:
        raise SystemExit("rsync is needed for the edit comparison: apt-get install -y rsync")
    d = tmp / "rsync-dest"
    d.mkdir()
    subprocess.run([exe, "-a", str(orig), str(d / "edit.bin")], check=True)
    r = subprocess.run(
        [exe, "-a", "--no-whole-file", "--stats", str(edited), str(d / "edit.bin")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert (d / "edit.bin").read_bytes() == edited.read_bytes()

    def stat(name: str) -> int:
        m = re.search(rf"{name}: ([\d,]+)", r.stdout)
        assert m, r.stdout
        return int(m.group(1).replace(",", ""))

    return {"sent": stat("Total bytes sent"), "received": stat("Total bytes received")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--edit-mib", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=4, help="SDK parallel requests")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--tmp", help="work directory (default: a temporary one on /tmp)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="raftbox-blocks-bench-", dir=args.tmp))
    size = args.size_mib * MiB
    fig: dict = {"size_mib": args.size_mib}
    try:
        f1, f2 = tmp / "f1.bin", tmp / "f2.bin"
        print(f"writing two {args.size_mib} MiB random files in {tmp} ...", flush=True)
        write_random(f1, size)
        write_random(f2, size)
        # The limits are measured before and after the transfers (the machine is shared: its
        # speed drifts); each limit is the better of the two, which makes the targets stricter.
        before = limits(f1, tmp)
        up = Up(tmp)
        try:
            token_b = up.account("second@localhost")
            store0 = up.store_bytes()
            fig["sdk_mb_s"] = sdk_transfers(up, up.token, f1, tmp / "out.bin", args.parallel)
            store1 = up.store_bytes()
            nat = asyncio.run(native_transfers(up, up.token, f2, tmp / "out.bin", "/native.bin"))
            fig["native_mb_s"] = {"native up": nat["up"], "native down": nat["down"]}
            fig["native_cpu_ms_per_mib"] = nat["cpu"]
            fig["load_average"] = os.getloadavg()[0]
            store2 = up.store_bytes()
            dedup_mb_s = sdk_upload(up, token_b, f1, args.parallel)
            store3 = up.store_bytes()
            token_c = up.account("third@localhost")
            cross_mb_s, _, _ = asyncio.run(native_upload(up, token_c, f1, "/same.bin"))
            store4 = up.store_bytes()
            fig["dedup"] = {
                "file_bytes": size,
                "store_growth_first_account": store1 - store0,
                "store_growth_second_account_same_file_sdk": store3 - store2,
                "second_account_upload_mb_s": dedup_mb_s,
                "store_growth_third_account_same_file_native": store4 - store3,
            }
            # the edit
            e1, e2 = tmp / "edit.bin", tmp / "edit2.bin"
            write_random(e1, args.edit_mib * MiB)
            raw = e1.read_bytes()
            mid = len(raw) // 2
            e2.write_bytes(raw[:mid] + os.urandom(100) + raw[mid:])
            asyncio.run(native_upload(up, up.token, e1, "/edit.bin"))
            _, edit_sent, edit_recv = asyncio.run(native_upload(up, up.token, e2, "/edit.bin"))
            fig["edit"] = {
                "file_mib": args.edit_mib,
                "native_bytes_sent": edit_sent,
                "native_bytes_received": edit_recv,
                "rsync": rsync_edit(e1, e2, tmp),
            }
        finally:
            up.stop()
        after = limits(f1, tmp)
        fig["limits_before_mb_s"], fig["limits_after_mb_s"] = before, after
        fig["limits_mb_s"] = {k: max(before[k], after[k]) for k in before}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(fig)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


def report(fig: dict) -> None:
    lim = fig["limits_mb_s"]
    slowest_name = min(lim, key=lim.get)
    slowest = lim[slowest_name]
    print(f"\n== {fig['size_mib']} MiB, one machine, MB/s = MiB/s ==")
    print("limits (same run; the better of before/after the transfers):")
    for k, v in lim.items():
        b, a = fig["limits_before_mb_s"][k], fig["limits_after_mb_s"][k]
        print(f"  {k:<16} {v:8.0f}   (before {b:.0f}, after {a:.0f})")
    print("raftbox up (TLS, CDC, zstd 3, fsync per block):")
    for k, v in {**fig["sdk_mb_s"], **fig["native_mb_s"]}.items():
        print(f"  {k:<16} {v:8.0f}   {v / slowest:5.0%} of the slowest limit ({slowest_name})")
    # issue 16: native upload >= 70% and download >= 80% of the slowest limit (SDK: reported)
    for k, share in (("native up", 0.7), ("native down", 0.8)):
        v = fig["native_mb_s"][k]
        verdict = "met" if v >= share * slowest else "MISSED"
        print(f"  target {k} >= {share:.0%} of {slowest_name}: {verdict}")
    print(
        f"CPU per MiB moved (ms; load average {fig.get('load_average', 0):.1f} after the "
        "native transfers; a busy machine stretches wall time, not CPU time):"
    )
    for k, v in fig.get("native_cpu_ms_per_mib", {}).items():
        print(f"  {k:<20} {v:6.2f}")
    d = fig["dedup"]
    print(f"dedup: the same {d['file_bytes'] / MiB:.0f} MiB file under three accounts")
    print(f"  store growth: first account (SDK) {d['store_growth_first_account'] / MiB:.1f} MiB, "
          f"second (SDK) {d['store_growth_second_account_same_file_sdk'] / MiB:.2f} MiB "
          f"(its upload {d['second_account_upload_mb_s']:.0f} MB/s), third (native: whole-file "
          f"CDC, no session piece boundaries) {d['store_growth_third_account_same_file_native'] / MiB:.1f} MiB")  # fmt: skip
    e = fig["edit"]
    print(f"edit: 100 bytes inserted in the middle of a {e['file_mib']} MiB file")
    print(f"  native (has, put missing, commit): {e['native_bytes_sent']:>10,} bytes sent, "
          f"{e['native_bytes_received']:,} received")  # fmt: skip
    print(f"  rsync --no-whole-file:             {e['rsync']['sent']:>10,} bytes sent, "
          f"{e['rsync']['received']:,} received")  # fmt: skip
    print(f"  ratio native/rsync (sent): {e['native_bytes_sent'] / e['rsync']['sent']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
