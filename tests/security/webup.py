"""`raftbox up` for the web tests, with the first account's printed password, and browser-like
HTTP sessions (`requests`) signed in through `/web/login`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import requests
from tests.api.procs import RAFTBOX, UpServer, free_port
from tests.api.sdk import connect

COOKIE = "__Host-raftbox_session"
CSRF = "X-Raftbox-CSRF"


class WebUp(UpServer):
    """`raftbox up` that also knows the password it printed for you@localhost."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, free_port())
        self.password = ""

    def start(self, timeout_s: float = 60.0) -> None:
        super().start(timeout_s)
        m = re.search(r"you@localhost  password (\S+)", self.proc.output())
        assert m, self.proc.tail()
        self.password = m.group(1)

    @property
    def url(self) -> str:
        return f"https://{self.hostport}"

    def http(self) -> requests.Session:
        s = requests.Session()
        s.verify = self.ca
        s.trust_env = False
        return s

    def dbx(self, token: str | None = None):
        return connect(self.hostport, token or self.token, self.ca)

    def add_user(self, email: str, password: str, admin: bool = False) -> str:
        """A new account with a password (through the command line); its bearer token."""
        args = [RAFTBOX, "user", "add", email, "--data", str(self.data), "--password-stdin"]
        out = subprocess.run(
            args + (["--admin"] if admin else []),
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def login(self, email: str = "you@localhost", password: str | None = None):
        """(a signed-in `requests.Session`, its CSRF token)."""
        s = self.http()
        r = s.post(
            self.url + "/web/login",
            json={"email": email, "password": self.password if password is None else password},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return s, r.json()["csrf"]

    def rpc(self, s: requests.Session, route: str, arg=None, csrf: str | None = None, **kw):
        headers = {"Content-Type": "application/json"}
        if csrf is not None:
            headers[CSRF] = csrf
        return s.post(f"{self.url}/2/{route}", json=arg, headers=headers, timeout=30, **kw)
