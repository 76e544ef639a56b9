"""The official SDK (dropbox==12.2.4), pointed at a raftbox server, and a raw HTTPS helper.

The SDK reads its three host names from DROPBOX_API_HOST / _CONTENT_HOST / _NOTIFY_HOST once,
when `dropbox.session` is imported; `conftest.py` sets them to the `raftbox up` address before
anything imports `dropbox`, so clients for that server are built exactly as DROPBOX_API.md §2
says. The SDK has no per-client host option, so a client for another address (a cluster member)
gets its host map set right after it is built (`_host_map`, filled from those constants in
`__init__`; we never call clone()/with_path_root()/as_user(), which would rebuild it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import dropbox
import requests

ENV_HOSTPORT = os.environ.get("DROPBOX_API_HOST", "")


def connect(
    hostport: str, token: str, ca: str, on_response: Any = None, **kw: Any
) -> dropbox.Dropbox:
    """An SDK client for `hostport`, trusting `ca` (and nothing from the environment);
    `on_response(resp)` sees every HTTP response (a `requests` hook on our own session)."""
    s = dropbox.create_session(ca_certs=ca)
    s.trust_env = False  # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override ca_certs
    if on_response is not None:
        s.hooks["response"].append(lambda resp, *args, **kwargs: on_response(resp))
    dbx = dropbox.Dropbox(token, session=s, **kw)
    want = {"api": hostport, "content": hostport, "notify": hostport}
    if dbx._host_map != want:
        dbx._host_map = want
    return dbx


@dataclass
class Account:
    email: str
    account_id: str
    token: str
    target: Target

    def dbx(self, member: int | None = None, **kw: Any) -> dropbox.Dropbox:
        return self.target.client(self.token, member, **kw)


@dataclass
class Target:
    """A running raftbox: `raftbox up` (one address) or a cluster (one per member)."""

    name: str
    hostports: list[str]
    ca: str
    admin_token: str
    default_member: int = 0
    _n: list[int] = field(default_factory=lambda: [0])

    def client(self, token: str, member: int | None = None, **kw: Any) -> dropbox.Dropbox:
        hp = self.hostports[self.default_member if member is None else member]
        return connect(hp, token, self.ca, **kw)

    def new_account(self, tag: str = "user", member: int | None = None) -> Account:
        from .procs import create_account_http

        self._n[0] += 1
        email = f"{tag}-{self._n[0]}-{os.getpid()}@example.test"
        hp = self.hostports[self.default_member if member is None else member]
        account_id, token = create_account_http(hp, self.ca, self.admin_token, email)
        return Account(email, account_id, token, self)

    def http(self) -> Raw:
        return Raw(self.hostports[self.default_member], self.ca)


class Raw:
    """Hand-made requests, for what the SDK would refuse to send."""

    def __init__(self, hostport: str, ca: str) -> None:
        self.base = f"https://{hostport}/2/"
        self.s = requests.Session()
        self.s.verify = ca
        self.s.trust_env = False

    def post(
        self,
        route: str,
        *,
        token: str | None,
        data: bytes | None = None,
        json_body: Any = None,
        arg: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> requests.Response:
        h: dict[str, str] = {}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if arg is not None:
            h["Dropbox-API-Arg"] = arg
            h["Content-Type"] = "application/octet-stream"
        elif json_body is not None or data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        if json_body is not None:
            import json

            data = json.dumps(json_body).encode()
        return self.s.post(self.base + route, data=data, headers=h, timeout=timeout_s)

    def close(self) -> None:
        self.s.close()
