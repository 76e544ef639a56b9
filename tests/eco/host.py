"""raftbox posing as Dropbox, for real Dropbox clients (rclone, the JS SDK, older Python SDKs).

Real clients have `api.dropboxapi.com`, `content.dropboxapi.com` and `notify.dropboxapi.com`
(and `www.dropbox.com` for OAuth2's authorize page) built in (rclone's backend has no option to
change them), so the test gives them those names:

- `DropboxHost.start()` runs `raftbox up --listen 127.0.0.1:443` inside a private network and
  mount namespace (`unshare -m -n`: its own loopback, brought up with `ip link set lo up`, so
  parallel runs never collide on port 443, and nothing outside can reach it), where a hosts file
  naming those hosts 127.0.0.1 is bind-mounted over `/etc/hosts`. The machine's own
  `/etc/hosts` is never touched: the bind mount exists only in that mount namespace, and both
  namespaces end with the server process.
- The server's certificate is issued before it starts, by a test CA in its data dir, for the
  host names (`raftbox.tls.ensure_local_ca`, which `up` then reuses as its own).
- `run(argv)` runs a client inside the same namespaces (`nsenter -t PID -m -n`, which execs the
  client: a timeout kills the client itself), trusting the test CA through the variables each
  client reads (`SSL_CERT_FILE` for rclone/Go, `NODE_EXTRA_CA_CERTS` for node,
  `REQUESTS_CA_BUNDLE` for Python), with no proxy and no `DROPBOX_API_*HOST` override (the
  API suite sets those in this process for the in-process SDK).
- `account(email)` makes a new account (`raftbox user add`, run inside) and returns its token.

The clients are installed once into the repository's build area (`build/eco/`, ignored by git),
pinned, under a file lock: `js_sdk_dir()` (the npm `dropbox` package, from the npm registry) and
`py_sdk_python(version)` (a venv with that `dropbox` version from PyPI). `rclone` is Debian's
(`make debs`).

Needs root (or unprivileged user namespaces) for `unshare`; `available()` says why not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from raftbox.testing.procs import Proc
from raftbox.tls import ensure_local_ca

# www.dropbox.com: where the SDKs send a user's browser to authorize an app (OAuth2)
DROPBOX_HOSTS = (
    "api.dropboxapi.com",
    "content.dropboxapi.com",
    "notify.dropboxapi.com",
    "www.dropbox.com",
)
RAFTBOX = str(Path(sys.executable).with_name("raftbox"))
REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "eco"
JS_SDK_VERSION = "10.47.0"  # the npm `dropbox` package
PY_SDK_OLD_VERSION = "11.36.2"
SERVER_START_S = 90.0
INSTALL_S = 600.0


def available() -> str | None:
    """Why the harness cannot run here (None: it can)."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    r = subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot make a private namespace (unshare -m -n): {r.stderr.strip()}"
    return None


def client_env(ca_file: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a client run inside: trust `ca_file`, no proxy, no host override."""
    env = {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower() and not k.startswith("DROPBOX_") and k != "SSL_CERT_DIR"
    }
    env.update(
        SSL_CERT_FILE=ca_file,
        NODE_EXTRA_CA_CERTS=ca_file,
        REQUESTS_CA_BUNDLE=ca_file,
        NO_PROXY="*",
    )
    env.update(extra or {})
    return env


class DropboxHost:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "up-data"
        self.hosts_file = base / "hosts"
        self.ca = str(self.data / "ca.pem")
        self.proc: Proc | None = None
        self._accounts = 0

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        ensure_local_ca(str(self.data), ("localhost", "127.0.0.1", *DROPBOX_HOSTS))
        names = " ".join(DROPBOX_HOSTS)
        self.hosts_file.write_text(f"127.0.0.1 localhost {names}\n::1 localhost\n")
        script = (
            "set -e; ip link set lo up; "
            f"mount --bind '{self.hosts_file}' /etc/hosts; "
            f"exec '{RAFTBOX}' up --data '{self.data}' --listen 127.0.0.1:443"
        )
        self.proc = Proc(
            "raftbox up as *.dropboxapi.com",
            ["unshare", "-m", "-n", "--", "sh", "-c", script],
            self.base / "up.log",
        )
        self.proc.start()
        self.proc.wait_output("Stop with Ctrl-C", SERVER_START_S)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def tail(self, lines: int = 40) -> str:
        return self.proc.tail(lines) if self.proc is not None else "(not started)"

    def run(
        self,
        argv: list[str],
        *,
        timeout_s: float = 180.0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """`argv` run inside the namespaces, its output captured; `check`: fail on a nonzero
        exit with the output and the server log's tail."""
        assert self.proc is not None and self.proc.alive, "the server is not running"
        r = subprocess.run(
            ["nsenter", "-t", str(self.proc.pid), "-m", "-n", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=client_env(self.ca, env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"{argv[:4]}... exited {r.returncode}\n--- stdout ---\n{r.stdout[-4000:]}\n"
                f"--- stderr ---\n{r.stderr[-4000:]}\n--- server ---\n{self.tail()}"
            )
        return r

    def account(self, email: str | None = None) -> str:
        """A new account's token."""
        self._accounts += 1
        email = email or f"eco{self._accounts}@example.test"
        r = self.run([RAFTBOX, "user", "add", email, "--data", str(self.data)], check=True)
        return r.stdout.strip().splitlines()[-1].strip()

    def add_app(self, name: str = "rclone") -> tuple[str, str]:
        """A new OAuth2 app (`raftbox app add`, run inside): (app key, app secret)."""
        r = self.run([RAFTBOX, "app", "add", name, "--data", str(self.data)], check=True)
        got = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines()[-2:])
        return got["app_key"].strip(), got["app_secret"].strip()


# -- the clients, installed once ---------------------------------------------------------------


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / ".install.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_install(argv: list[str], cwd: Path | None = None) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_S, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def js_sdk_dir(version: str = JS_SDK_VERSION) -> Path:
    """A directory whose `node_modules` holds the npm `dropbox` package at `version`."""
    d = BUILD / f"npm-dropbox-{version}"
    done = d / ".installed"
    with _install_lock():
        if not done.exists():
            if shutil.which("npm") is None:
                raise RuntimeError("npm is not installed (make debs)")
            d.mkdir(parents=True, exist_ok=True)
            (d / "package.json").write_text('{"name": "raftbox-eco", "private": true}\n')
            _run_install(
                ["npm", "install", "--no-audit", "--no-fund", "--save-exact", f"dropbox@{version}"],
                cwd=d,
            )
            done.touch()
    return d


def py_sdk_python(version: str = PY_SDK_OLD_VERSION) -> str:
    """The interpreter of a venv holding the Python `dropbox` SDK at `version`."""
    d = BUILD / f"py-dropbox-{version}"
    done = d / ".installed"
    with _install_lock():
        if not done.exists():
            shutil.rmtree(d, ignore_errors=True)
            _run_install(["python3", "-m", "venv", str(d)])
            _run_install([str(d / "bin" / "python"), "-m", "pip", "install", "-q",
                          f"dropbox=={version}"])  # fmt: skip
            done.touch()
    return str(d / "bin" / "python")
