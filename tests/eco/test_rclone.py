"""rclone (Debian's, its `dropbox` backend unchanged) against raftbox as *.dropboxapi.com.

The remote's token JSON has a far expiry, so rclone never tries to refresh it. Each test runs
on a root remote (`rb:`, the account's root: rclone sends `"//dir"` for every folder there) and
on a subfolder remote (`rb:tree`), each on its own new account:

- copy a tree, ls / lsjson -R show exactly it, copy again (nothing to do), check and
  check --download find 0 differences;
- two rounds of edits, deletes and renames, each followed by sync (twice: the second has
  nothing to do) and check: the remote is the local tree again;
- moveto, purge, and uploads in both batch modes (`--dropbox-batch-mode sync|async`);
- about (users/get_space_usage): judged like the SDKs' checks (`routes.py`): while the route is
  pending (eco-routes), rclone must fail readably ("Unknown API function").
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

from .host import DropboxHost
from .routes import is_pending

RCLONE_S = 300.0


@pytest.fixture(autouse=True)
def _rclone_installed() -> None:
    if shutil.which("rclone") is None:
        pytest.fail("rclone is not installed: run make debs (make test does)")


class Rclone:
    """rclone with a config whose remote `rb:` holds `token`. Given an app (`client_id`,
    `client_secret`) and a `refresh_token`, the token is written as already expired, so that
    rclone refreshes it at `https://api.dropboxapi.com/oauth2/token` before its first call
    (for the OAuth2 routes, once merged)."""

    def __init__(
        self,
        host: DropboxHost,
        token: str,
        base: Path,
        *,
        client_id: str = "",
        client_secret: str = "",
        refresh_token: str = "",
    ) -> None:
        self.host = host
        self.conf = base / "rclone.conf"
        tok = {"access_token": token, "token_type": "bearer", "expiry": "2099-01-01T00:00:00Z"}
        app = ""
        if refresh_token:
            tok.update(refresh_token=refresh_token, expiry="2000-01-01T00:00:00Z")
            app = f"client_id = {client_id}\nclient_secret = {client_secret}\n"
        self.conf.write_text(f"[rb]\ntype = dropbox\n{app}token = {json.dumps(tok)}\n")

    def __call__(self, *args: str, check: bool = True):
        argv = ["rclone", "--config", str(self.conf), "--retries", "1",
                "--low-level-retries", "2", "--contimeout", "10s", *args]  # fmt: skip
        return self.host.run(argv, timeout_s=RCLONE_S, check=check)

    def tree(self, remote: str) -> dict[str, int]:
        """{path: size} of every file below `remote` (lsjson -R)."""
        out = json.loads(self("lsjson", "-R", "--files-only", remote).stdout)
        return {e["Path"]: e["Size"] for e in out}

    def check_same(self, local: Path, remote: str) -> None:
        for extra in ([], ["--download"]):
            r = self("check", str(local), remote, *extra, check=False)
            assert r.returncode == 0 and "0 differences found" in r.stderr, r.stderr[-3000:]


def local_tree(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()
    }


def write(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def make_tree(root: Path, rng: random.Random) -> None:
    write(root, "a.txt", b"alpha\n")
    write(root, "empty.txt", b"")
    write(root, "sub/b.bin", rng.randbytes(70_000))
    write(root, "sub/deep/c.txt", b"charlie\n")
    write(root, "photos/x.jpg", rng.randbytes(300_000))
    write(root, "Spaced name/é ü.txt", b"unicode\n")


@pytest.fixture(params=["root", "subfolder"])
def remote(request) -> str:
    return "rb:" if request.param == "root" else "rb:tree"


def sub(remote: str, rel: str) -> str:
    return remote + rel if remote.endswith(":") else f"{remote}/{rel}"


def test_copy_ls_check(dbhost: DropboxHost, token: str, remote: str, tmp_path: Path) -> None:
    rc = Rclone(dbhost, token, tmp_path)
    src = tmp_path / "src"
    make_tree(src, random.Random(1))
    rc("copy", str(src), remote)
    assert rc.tree(remote) == local_tree(src)
    listed = {}
    for line in rc("ls", remote).stdout.splitlines():
        size, name = line.strip().split(" ", 1)
        listed[name] = int(size)
    assert listed == local_tree(src)
    r = rc("copy", "-v", str(src), remote)  # again: nothing to transfer
    assert "Transferred:" in r.stderr and "There was nothing to transfer" in r.stderr, r.stderr
    rc.check_same(src, remote)


def test_sync_edits_deletes_renames(
    dbhost: DropboxHost, token: str, remote: str, tmp_path: Path
) -> None:
    rc = Rclone(dbhost, token, tmp_path)
    src = tmp_path / "src"
    rng = random.Random(2)
    make_tree(src, rng)
    rc("sync", str(src), remote)
    rc.check_same(src, remote)
    # round 1: edit, delete, rename a file and a folder, add
    write(src, "a.txt", b"alpha, edited\n")
    (src / "sub/deep/c.txt").unlink()
    os.rename(src / "photos/x.jpg", src / "photos/y.jpg")
    os.rename(src / "sub", src / "moved-sub")
    write(src, "new/n.txt", b"new\n")
    # round 2 (after the first sync): edit in place with the same size, delete a folder
    for round_no in (1, 2):
        if round_no == 2:
            write(src, "new/n.txt", b"NEW\n")
            # same size: rclone compares size and mtime (Dropbox keeps whole seconds)
            later = (src / "new/n.txt").stat().st_mtime + 60
            os.utime(src / "new/n.txt", (later, later))
            shutil.rmtree(src / "Spaced name")
        rc("sync", str(src), remote)
        assert rc.tree(remote) == local_tree(src)
        r = rc("sync", "-v", str(src), remote)  # again: nothing to do
        assert "There was nothing to transfer" in r.stderr, r.stderr
        rc.check_same(src, remote)
    got = tmp_path / "back"
    rc("copy", remote, str(got))
    assert local_tree(got) == local_tree(src)
    assert (got / "a.txt").read_bytes() == b"alpha, edited\n"
    assert (got / "new/n.txt").read_bytes() == b"NEW\n"


def test_moveto_purge(dbhost: DropboxHost, token: str, remote: str, tmp_path: Path) -> None:
    rc = Rclone(dbhost, token, tmp_path)
    src = tmp_path / "src"
    make_tree(src, random.Random(3))
    rc("copy", str(src), remote)
    rc("moveto", sub(remote, "a.txt"), sub(remote, "elsewhere/a2.txt"))
    tree = rc.tree(remote)
    assert "a.txt" not in tree and tree["elsewhere/a2.txt"] == 6
    rc("purge", sub(remote, "sub"))
    assert not any(p.startswith("sub/") for p in rc.tree(remote))
    if remote != "rb:":
        rc("purge", remote)
        r = rc("lsjson", "rb:")
        assert json.loads(r.stdout) == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_batch_modes(
    dbhost: DropboxHost, token: str, remote: str, mode: str, tmp_path: Path
) -> None:
    rc = Rclone(dbhost, token, tmp_path)
    src = tmp_path / "src"
    for i in range(12):
        write(src, f"batch/f{i:02d}.txt", b"%d\n" % i * (i + 1))
    rc("copy", "--dropbox-batch-mode", mode, "--transfers", "4", str(src), remote)
    assert rc.tree(remote) == local_tree(src)
    rc.check_same(src, remote)


def test_about(dbhost: DropboxHost, token: str, remote: str, tmp_path: Path) -> None:
    rc = Rclone(dbhost, token, tmp_path)
    r = rc("about", "--json", remote, check=False)
    if is_pending("users/get_space_usage"):
        assert r.returncode != 0, "served now: move it from PENDING to SERVED (routes.py)"
        assert "Unknown API function" in r.stderr, r.stderr  # readable, not a decode error
        print(f"rclone about (pending): {r.stderr.strip().splitlines()[-1]}")
        return
    assert r.returncode == 0, r.stderr
    about = json.loads(r.stdout)
    assert about["used"] >= 0 and about["total"] >= about["used"], about


def test_chunked_uploads_and_many_files(
    dbhost: DropboxHost, token: str, remote: str, tmp_path: Path
) -> None:
    """Upload sessions (a file over --dropbox-chunk-size goes start/append_v2/finish) and a
    tree of many small files; `make eco-long` makes both bigger (ECO_FILES, ECO_BIG_MIB)."""
    rc = Rclone(dbhost, token, tmp_path)
    src = tmp_path / "src"
    rng = random.Random(4)
    n_files = int(os.environ.get("ECO_FILES", "40"))
    big_mib = int(os.environ.get("ECO_BIG_MIB", "5"))
    write(src, "big/blob.bin", rng.randbytes(big_mib * 1024 * 1024 + 12345))
    for i in range(n_files):
        write(src, f"many/d{i % 7}/f{i:05d}.txt", rng.randbytes(rng.randrange(0, 3000)))
    rc("sync", "--dropbox-chunk-size", "1M", "--transfers", "4", str(src), remote)
    assert rc.tree(remote) == local_tree(src)
    rc.check_same(src, remote)
    write(src, "big/blob.bin", rng.randbytes(big_mib * 1024 * 1024 + 1))  # replaced
    rc("sync", "--dropbox-chunk-size", "1M", str(src), remote)
    rc.check_same(src, remote)


def test_refresh_token_from_oauth2(dbhost: DropboxHost, token: str, tmp_path: Path) -> None:
    """A third-party app (here rclone) signed in through OAuth2 keeps working after its access
    token expires: the SDK's own no-redirect flow gets a refresh token, rclone's config holds
    it with an expired access token, and rclone refreshes at api.dropboxapi.com/oauth2/token."""
    key, secret = dbhost.add_app("rclone")
    script = Path(__file__).with_name("clients") / "oauth_grant.py"
    r = dbhost.run([sys.executable, str(script), key, secret, token], check=True)
    grant = json.loads(r.stdout.strip().splitlines()[-1])
    assert grant["refresh_token"], grant
    rc = Rclone(dbhost, "expired-" + grant["access_token"][:8], tmp_path, client_id=key,
                client_secret=secret, refresh_token=grant["refresh_token"])  # fmt: skip
    src = tmp_path / "src"
    make_tree(src, random.Random(5))
    rc("sync", str(src), "rb:")
    rc.check_same(src, "rb:")
    conf = rc.conf.read_text()
    assert "2000-01-01" not in conf, conf  # rclone saved the refreshed token
