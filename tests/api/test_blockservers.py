"""Several blockservers behind nginx (DESIGN.md §2, the seed's version 4): stateless block-only
processes that call the meta role over HTTP, with the shipped `deploy/nginx.conf` routing by
path in front — content routes and the native protocol to the blockservers, the rest to meta.

nginx is Debian's package (`apt-get install -y nginx`, in .ci/run); without it these tests fail,
they are not skipped. The test starts nginx itself on 127.0.0.1 with a config generated from the
shipped one (only addresses, certificate paths and the pid/log files are changed).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import requests

from raftbox.blocks.native import NativeClient

from . import procs
from .sdk import connect
from .util import MiB, data

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "nginx.conf"


def _upstream(name: str, servers: list[str]) -> str:
    body = "".join(f"        server {s} max_fails=1 fail_timeout=2s;\n" for s in servers)
    return f"    upstream {name} {{\n{body}    }}\n"


def nginx_config(base: Path, port: int, meta: list[str], blocks: list[str], ca: str,
                 cert: str, key: str) -> str:  # fmt: skip
    """The shipped config with this test's addresses and files."""
    conf = SHIPPED.read_text()
    conf = re.sub(r"(?m)^worker_processes .*;$", "worker_processes 1;\ndaemon off;", conf)
    if os.geteuid() == 0:
        conf = "user root;\n" + conf
    conf = re.sub(r"(?m)^pid .*;$", f"pid {base}/nginx.pid;", conf)
    conf = re.sub(r"(?m)^error_log .*;$", f"error_log {base}/nginx-error.log info;", conf)
    for name, servers in (
        ("raftbox_meta", meta),
        ("raftbox_block", blocks),
        ("raftbox_notify", meta),
    ):
        conf, n = re.subn(
            rf"(?ms)^    upstream {name} \{{.*?^    \}}\n", _upstream(name, servers), conf
        )
        assert n == 1, name
    conf = conf.replace("listen 443 ssl;", f"listen {procs.HOST}:{port} ssl;")
    conf = conf.replace("/etc/raftbox/tls/server.pem", cert)
    conf = conf.replace("/etc/raftbox/tls/server.key", key)
    conf = conf.replace("/etc/raftbox/tls/ca.pem", ca)
    conf = conf.replace("proxy_ssl_name raftbox-meta.internal;", "proxy_ssl_name localhost;")
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        conf = conf.replace("http {\n", f"http {{\n    {d}_temp_path {base}/{d}_temp;\n", 1)
    return conf


class Fleet:
    """One meta member (with notify), two blockservers, nginx in front."""

    def __init__(self, base: Path) -> None:
        exe = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if exe is None:
            pytest.fail("nginx is required by this test: apt-get install -y nginx", pytrace=False)
        self.base = base
        self.cluster = (
            procs.ApiCluster(base / "meta", n=1) if (base / "meta").mkdir() is None else None
        )
        assert self.cluster is not None
        c = self.cluster
        self.member = c.members[1]
        self.bs: list[procs.Proc] = []
        self.bs_hostports: list[str] = []
        for i in (1, 2):
            port = procs.free_port()
            hp = f"{procs.HOST}:{port}"
            d = base / f"bs{i}"
            args = [procs.RAFTBOX, "serve", "--roles", "block", "--data", str(d),
                    "--listen", hp, "--plain-http", "--meta", f"https://{self.member.hostport}",
                    "--ca", c.ca, "--admin-token", c.admin_token, "--blocks", c.blocks]  # fmt: skip
            self.bs.append(procs.Proc(f"blockserver {i}", args, base / f"bs{i}.log"))
            self.bs_hostports.append(hp)
        self.port = procs.free_port()
        self.hostport = f"{procs.HOST}:{self.port}"
        nb = base / "nginx"
        nb.mkdir()
        conf = nginx_config(nb, self.port, [self.member.hostport], self.bs_hostports, c.ca,
                            c.cert, c.key)  # fmt: skip
        (nb / "nginx.conf").write_text(conf)
        self.nginx = procs.Proc("nginx", [exe, "-p", f"{nb}/", "-c", str(nb / "nginx.conf"),
                                          "-e", str(nb / "nginx-error.log")], base / "nginx.log")  # fmt: skip

    def start(self) -> None:
        self.cluster.start()
        for p in self.bs:
            p.start()
        for p in self.bs:
            p.wait_output("serving block on http://", 30)
        self.nginx.start()
        procs.wait_for(lambda: _port_open(self.port), 15, "nginx listening")

    def stop(self) -> None:
        self.nginx.stop()
        for p in self.bs:
            p.stop()
        self.cluster.stop()

    def tails(self) -> str:
        parts = [self.cluster.tails()]
        for p in [*self.bs, self.nginx]:
            parts.append(f"--- {p.name} ---\n{p.tail()}")
        err = self.base / "nginx" / "nginx-error.log"
        if err.exists():
            parts.append(
                "--- nginx error log ---\n" + "\n".join(err.read_text().splitlines()[-20:])
            )
        return "\n".join(parts)


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection((procs.HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        f.start()
        yield f
    except BaseException:
        print(f.tails())
        raise
    finally:
        f.stop()


@pytest.fixture
def tails_on_failure(request, fleet):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(fleet.tails())


def _plain(hp: str, route: str, token: str, arg: dict, body: bytes = b"") -> requests.Response:
    return requests.post(
        f"http://{hp}/2/{route}",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Dropbox-API-Arg": json.dumps(arg),
            "Content-Type": "application/octet-stream",
        },  # fmt: skip
        timeout=60,
    )


def test_upload_through_one_blockserver_download_through_the_other(fleet, tails_on_failure):
    _acct, token = procs.create_account_http(
        fleet.member.hostport, fleet.cluster.ca, fleet.cluster.admin_token, "bs@example.test"
    )
    a, b = fleet.bs_hostports
    body = data(6 * MiB + 5, seed=7)
    r = _plain(a, "files/upload", token, {"path": "/direct.bin"}, body)
    assert r.status_code == 200, r.text
    r = _plain(b, "files/download", token, {"path": "/direct.bin"})
    assert r.status_code == 200 and r.content == body
    assert json.loads(r.headers["Dropbox-API-Result"])["content_hash"] == procs_content_hash(body)
    # a blockserver serves no metadata route and no internal route
    r = requests.post(f"http://{a}/2/files/list_folder", json={"path": ""},
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
    assert r.status_code == 400 and "Unknown API function" in r.text, (r.status_code, r.text)


def procs_content_hash(b: bytes) -> str:
    w = 4 * MiB
    return hashlib.sha256(
        b"".join(hashlib.sha256(b[i : i + w]).digest() for i in range(0, len(b), w))
    ).hexdigest()


def test_sdk_through_nginx_survives_losing_either_blockserver(fleet, tails_on_failure):
    """The official SDK against nginx: uploads spread over the blockservers; with either one
    killed, everything still downloads through the other (and metadata comes from meta)."""
    _acct, token = procs.create_account_http(
        fleet.member.hostport, fleet.cluster.ca, fleet.cluster.admin_token, "sdk-nginx@example.test"
    )
    dbx = connect(fleet.hostport, token, fleet.cluster.ca)
    files = {f"/n/f{i}.bin": data(MiB * (i + 1) + i, seed=20 + i) for i in range(4)}
    for p, b in files.items():
        m = dbx.files_upload(b, p)
        assert m.content_hash == procs_content_hash(b)
    from dropbox import files as dfiles

    p1, p2 = data(4 * MiB, seed=30), data(3 * MiB, seed=31)
    s = dbx.files_upload_session_start(p1)
    cur = dfiles.UploadSessionCursor(s.session_id, len(p1))
    dbx.files_upload_session_append_v2(p2, cur)
    cur.offset += len(p2)
    m = dbx.files_upload_session_finish(b"", cur, dfiles.CommitInfo("/n/session.bin"))
    files["/n/session.bin"] = p1 + p2
    assert m.content_hash == procs_content_hash(files["/n/session.bin"])
    names = {e.name for e in dbx.files_list_folder("/n").entries}
    assert names == {p.rsplit("/", 1)[1] for p in files}
    for down in (0, 1):
        fleet.bs[down].kill9()
        try:
            for p, b in files.items():
                _, resp = dbx.files_download(p)
                assert resp.content == b, p
        finally:
            fleet.bs[down].start()
            fleet.bs[down].wait_output("serving block on http://", 30)
    raw = requests.post(f"https://{fleet.hostport}/2/raftbox/internal/query", data=b"",
                        verify=fleet.cluster.ca, timeout=10)  # fmt: skip
    assert raw.status_code == 403  # internal routes are not reachable through the entry point


def test_native_protocol_through_nginx(fleet, tails_on_failure, tmp_path):
    _acct, token = procs.create_account_http(
        fleet.member.hostport,
        fleet.cluster.ca,
        fleet.cluster.admin_token,
        "native-nginx@example.test",
    )
    src = tmp_path / "src.bin"
    src.write_bytes(data(9 * MiB + 3, seed=40))
    ctx = ssl.create_default_context(cafile=fleet.cluster.ca)

    async def main():
        async with NativeClient(f"https://{fleet.hostport}", token, ssl_context=ctx) as nc:
            meta = await nc.upload(str(src), "/native/src.bin")
            assert meta["size"] == src.stat().st_size
            sent = nc.bytes_sent
            again = await nc.upload(str(src), "/native/copy.bin")  # every block is had: no put
            assert again["content_hash"] == meta["content_hash"]
            assert nc.bytes_sent - sent < 64 * 1024
            out = tmp_path / "out.bin"
            await nc.download("/native/copy.bin", str(out))
            assert out.read_bytes() == src.read_bytes()
            # attributes and the batch blocklist: through a blockserver's RemoteMetaClient
            tgt = b"src.bin"
            await nc.put([(hashlib.sha256(tgt).hexdigest(), tgt)])
            link, exe = await nc.commit_batch(
                [
                    {"path": "/native/link", "blocks": [[hashlib.sha256(tgt).hexdigest(), 7]],
                     "size": 7, "symlink_target": "src.bin"},
                    {"path": "/native/exe", "blocks": [[hashlib.sha256(tgt).hexdigest(), 7]],
                     "size": 7, "executable": True},
                ]
            )  # fmt: skip
            assert link["symlink_info"] == {"target": "src.bin"} and exe["executable"] is True
            got = await nc.blocks_of_many(["/native/link", "/native/nothing", "/native/exe"])
            assert got[1] is None
            assert got[0][0]["symlink_info"] == {"target": "src.bin"} and got[0][1] == [
                (hashlib.sha256(tgt).hexdigest(), 7)
            ]
            assert got[2][0]["executable"] is True

    asyncio.run(main())


def test_finish_batch_v2_through_a_blockserver(fleet, tails_on_failure):
    _acct, token = procs.create_account_http(
        fleet.member.hostport, fleet.cluster.ca, fleet.cluster.admin_token, "batch-bs@example.test"
    )
    a, b = fleet.bs_hostports
    sids = []
    for body in (b"one", b"two"):
        r = _plain(a, "files/upload_session/start", token, {"close": True}, body)
        assert r.status_code == 200, r.text
        sids.append(r.json()["session_id"])
    entries = [
        {"cursor": {"session_id": sids[0], "offset": 3}, "commit": {"path": "/fb/one"}},
        {"cursor": {"session_id": "no-such-session", "offset": 0}, "commit": {"path": "/fb/x"}},
        {"cursor": {"session_id": sids[1], "offset": 3}, "commit": {"path": "/fb/two"}},
    ]
    r = requests.post(f"http://{b}/2/files/upload_session/finish_batch_v2",
                      json={"entries": entries}, headers={"Authorization": f"Bearer {token}"},
                      timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    one, missing, two = r.json()["entries"]
    assert one[".tag"] == two[".tag"] == "success" and one["rev"][:12] == two["rev"][:12]
    assert missing["failure"] == {".tag": "lookup_failed", "lookup_failed": {".tag": "not_found"}}


def test_temporary_links_through_nginx_and_blockservers(fleet, tails_on_failure):
    """A link made on meta is served through nginx (its `/tl/` location: the blockservers) and
    by either blockserver directly; a forged one is refused, and an address that keeps sending
    forgeries to a blockserver (each one a question to meta) is limited with 429."""
    _acct, token = procs.create_account_http(
        fleet.member.hostport, fleet.cluster.ca, fleet.cluster.admin_token, "tl-bs@example.test"
    )
    dbx = connect(fleet.hostport, token, fleet.cluster.ca)
    body = data(5 * MiB + 3, seed=40)
    dbx.files_upload(body, "/tl/movie.bin")
    link = dbx.files_get_temporary_link("/tl/movie.bin").link
    # nginx passes `Host: $host` (no port): the link names the public host on the default port
    path = link.split("/", 3)[3]
    r = requests.get(f"https://{fleet.hostport}/{path}", verify=fleet.cluster.ca, timeout=60,
                     headers={"Range": "bytes=4194300-4194309"})  # fmt: skip
    assert r.status_code == 206 and r.content == body[4194300:4194310]
    for hp in fleet.bs_hostports:
        r = requests.get(f"http://{hp}/{path}", timeout=60)
        assert r.status_code == 200 and r.content == body, hp
    a = fleet.bs_hostports[0]
    statuses = [requests.get(f"http://{a}/tl/forged{i}/x", timeout=30).status_code
                for i in range(40)]  # fmt: skip
    assert statuses[0] == 404 and statuses[-1] == 429, statuses
    assert int(requests.get(f"http://{a}/tl/x/x", timeout=30).headers["Retry-After"]) >= 1


def test_finish_batch_v1_job_through_one_blockserver_checked_on_the_other(fleet, tails_on_failure):
    """The async finish_batch (v1) through a blockserver: the job runs on the meta group (its
    `RunJob` passes the internal write whitelist) and its check is answered by any blockserver;
    a thumbnail is served by a blockserver too."""
    import io

    from PIL import Image

    _acct, token = procs.create_account_http(
        fleet.member.hostport, fleet.cluster.ca, fleet.cluster.admin_token, "job-bs@example.test"
    )
    a, b = fleet.bs_hostports
    img = io.BytesIO()
    Image.new("RGB", (200, 100), (9, 9, 9)).save(img, "PNG")
    r = _plain(a, "files/upload_session/start", token, {"close": True}, img.getvalue())
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    entries = [
        {
            "cursor": {"session_id": sid, "offset": len(img.getvalue())},
            "commit": {"path": "/j/i.png"},
        },
        {"cursor": {"session_id": "no-such-session", "offset": 0}, "commit": {"path": "/j/x"}},
    ]
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.post(f"http://{a}/2/files/upload_session/finish_batch",
                      json={"entries": entries}, headers=auth, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()[".tag"] == "async_job_id"
    r = requests.post(f"http://{b}/2/files/upload_session/finish_batch/check",
                      json={"async_job_id": r.json()["async_job_id"]}, headers=auth, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    done, missing = r.json()["entries"]
    assert r.json()[".tag"] == "complete" and done["path_display"] == "/j/i.png"
    assert missing["failure"] == {".tag": "lookup_failed", "lookup_failed": {".tag": "not_found"}}
    r = _plain(b, "files/get_thumbnail_v2", token,
               {"resource": {".tag": "path", "path": "/j/i.png"}, "format": "png"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (64, 32)


def test_blockserver_refuses_to_start_without_meta(tmp_path):
    r = subprocess.run(
        [procs.RAFTBOX, "serve", "--roles", "block", "--data", str(tmp_path),
         "--listen", f"{procs.HOST}:{procs.free_port()}", "--admin-token", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0 and "--meta" in r.stderr
