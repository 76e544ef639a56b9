"""Helpers for the bad-input tests: a `raftbox up` process, raw HTTP that can send any header
bytes, and "nothing changed" / "the log is clean" checks.

Raw requests go through `http.client`, which passes `bytes` header values through untouched
(`requests` would encode a `str` as Latin-1), so a test can send a raw non-ASCII or invalid
UTF-8 byte in `Dropbox-API-Arg`. The official SDK is imported inside the tests only (never at
import time: `tests/api/conftest.py` must see `dropbox` unimported when it sets the hosts), and
pointed at the server with `api.sdk.connect`.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from api.procs import UpServer, create_account_http, quiet_port

BAD_LOG = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    """One `raftbox up` for a test module, and an account on it."""

    def __init__(self, base: Path) -> None:
        self.up = UpServer(base, quiet_port())
        self.token = ""

    def start(self) -> Server:
        self.up.start()
        self.token = self.new_account("bad")
        return self

    def stop(self) -> None:
        self.up.stop()

    @property
    def hostport(self) -> str:
        return self.up.hostport

    @property
    def ca(self) -> str:
        return self.up.ca

    def new_account(self, tag: str) -> str:
        self._n = getattr(self, "_n", 0) + 1
        _, token = create_account_http(
            self.hostport, self.ca, self.up.admin_token, f"{tag}-{self._n}@example.test"
        )
        return token

    def log(self) -> str:
        return self.up.proc.output()

    def log_mark(self) -> int:
        return len(self.log())

    def log_since(self, mark: int) -> str:
        return self.log()[mark:]

    def assert_log_clean(self, mark: int = 0) -> None:
        bad = [ln for ln in self.log_since(mark).splitlines() if BAD_LOG.search(ln)]
        assert not bad, "server log has errors:\n" + "\n".join(bad[:20])

    # -- requests ------------------------------------------------------------------------
    def raw(
        self,
        route: str,
        headers: list[tuple[str, bytes | str]] | dict[str, bytes | str],
        body: bytes = b"",
        *,
        token: str | None = "",
        path: str | None = None,
        timeout_s: float = 30.0,
    ) -> Answer:
        """POST /2/<route> with exactly these headers (bytes sent as they are); `token` ""
        means this server's account, None no Authorization."""
        ctx = ssl.create_default_context(cafile=self.ca)
        host, port = self.hostport.rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=timeout_s)
        try:
            conn.putrequest("POST", path or f"/2/{route}", skip_accept_encoding=True)
            items = list(headers.items()) if isinstance(headers, dict) else list(headers)
            if token is not None:
                items.insert(0, ("Authorization", f"Bearer {token or self.token}"))
            for k, v in items:
                conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def rpc(self, route: str, obj: Any = None, *, body: bytes | None = None, **kw: Any) -> Answer:
        data = body if body is not None else json.dumps(obj).encode()
        return self.raw(route, {"Content-Type": "application/json"}, data, **kw)

    def content(
        self, route: str, arg: Any, data: bytes = b"", *, raw_arg: bytes | None = None, **kw: Any
    ) -> Answer:
        a = raw_arg if raw_arg is not None else json.dumps(arg).encode()
        h = {"Dropbox-API-Arg": a, "Content-Type": "application/octet-stream"}
        return self.raw(route, h, data, **kw)

    def ok(self, route: str, obj: Any = None, token: str = "") -> Any:
        r = self.rpc(route, obj, token=token)
        assert r.status == 200, (route, r.status, r.text)
        return r.json()

    def upload(self, path: str, data: bytes, token: str = "", **arg: Any) -> Any:
        r = self.content("files/upload", {"path": path, **arg}, data, token=token)
        assert r.status == 200, (r.status, r.text)
        return r.json()

    def sdk(self, token: str = "", **kw: Any):
        from api.sdk import connect

        return connect(self.hostport, token or self.token, self.ca, **kw)

    def session(self) -> requests.Session:
        s = requests.Session()
        s.verify = self.ca
        s.trust_env = False
        return s

    # -- state ---------------------------------------------------------------------------
    def snapshot(self, token: str = "") -> tuple[list, str]:
        """The whole tree (recursive, with deletions) and a cursor at its end."""
        page = self.ok("files/list_folder", {"path": "", "recursive": True}, token)
        tree = list(page["entries"])
        while page["has_more"]:
            page = self.ok("files/list_folder/continue", {"cursor": page["cursor"]}, token)
            tree += page["entries"]
        return sorted(tree, key=lambda m: m["path_lower"]), self.latest_cursor(token)

    def latest_cursor(self, token: str = "") -> str:
        arg = {"path": "", "recursive": True, "include_deleted": True}
        return self.ok("files/list_folder/get_latest_cursor", arg, token)["cursor"]

    def changes_since(self, cursor: str, token: str = "") -> list:
        return self.ok("files/list_folder/continue", {"cursor": cursor}, token)["entries"]

    def assert_unchanged(self, before: tuple[list, str], token: str = "") -> None:
        tree, cur = self.snapshot(token)
        assert tree == before[0]
        assert self.changes_since(before[1], token) == [], "a refused request changed state"


def expect_400(r: Answer, route: str) -> None:
    assert r.status == 400, (r.status, r.text)
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    assert r.text.startswith(f'Error in call to API function "{route}"'), r.text


def expect_409(r: Answer, *tags: str) -> dict:
    assert r.status == 409, (r.status, r.text)
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error_summary"] == "/".join(tags) + "/..", body
    return body


def expect_malformed_upload(r: Answer) -> None:
    """files/upload's UploadError.path is the struct UploadWriteFailed: `reason` nests."""
    body = expect_409(r, "path", "malformed_path")
    assert body["error"]["reason"] == {".tag": "malformed_path"}, body
