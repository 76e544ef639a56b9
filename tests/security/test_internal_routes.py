"""Every internal HTTP link needs the cluster's admin token, and nginx keeps them inside.

The internal links of a cluster, besides the peer port (tests/security/test_peer_port.py):
blockserver -> meta (`/2/raftbox/internal/query|write`), notify root -> meta (the change feed,
`GET /2/raftbox/internal/changes`), notify leaf -> root (`/2/raftbox/notify/stream` as a cluster
link), and the operator's routes (`/2/raftbox/admin/*`, `/2/raftbox/notify/status`). Each is
called on a real member without a token and with a user's token, and must be refused with
nothing changed; the admin token is let in (the control). Then the shipped nginx config, in
front of that member, must answer 403 for all of them even with the admin token, also when the
path is spelled with an escape or a doubled slash, while a user's route still passes.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import requests

from api.procs import Proc, create_account_http
from api.test_blockservers import nginx_config
from raftbox.testing.procs import HOST, free_port, wait_for

from .members import Member

# (method, path, JSON body or None): every internal or operator route a member serves.
ROUTES = [
    ("POST", "/2/raftbox/internal/query", {"op": "account", "token": "x"}),
    ("POST", "/2/raftbox/internal/write", {"op": "noop"}),
    ("GET", "/2/raftbox/internal/changes", None),
    ("POST", "/2/raftbox/admin/create_account", {"email": "intruder@example.test"}),
    ("POST", "/2/raftbox/admin/status", None),
    ("POST", "/2/raftbox/admin/gc", None),
    ("POST", "/2/raftbox/notify/status", None),
]


@pytest.fixture(scope="module")
def user_token(member) -> str:
    return create_account_http(member.hostport, member.ca, member.admin_token, "u@example.test")[1]


def _call(base: str, ca: str, method: str, path: str, body, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with requests.Session() as s:
        s.trust_env = False
        if method == "GET":  # the change feed is a WebSocket: ask for the upgrade
            headers.update(
                {
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                }  # fmt: skip
            )
            return s.get(base + path, headers=headers, verify=ca, timeout=30, stream=True)
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
        return s.post(base + path, headers=headers, data=data, verify=ca, timeout=30)


def _applied(member: Member) -> int:
    r = _call(
        f"https://{member.hostport}", member.ca, "POST", "/2/raftbox/admin/status", None,
        member.admin_token,
    )  # fmt: skip
    r.raise_for_status()
    return r.json()["applied"]


@pytest.mark.parametrize("who", ["no token", "a user's token"])
def test_internal_and_admin_routes_refuse_anyone_but_the_cluster(member, user_token, who):
    token = None if who == "no token" else user_token
    base = f"https://{member.hostport}"
    applied = _applied(member)
    for method, path, body in ROUTES:
        r = _call(base, member.ca, method, path, body, token)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
    # A leaf's link to a root is the push stream with the admin token: a user's token is refused.
    if token is not None:
        r = _call(base, member.ca, "GET", "/2/raftbox/notify/stream", None, token)
        assert r.status_code == 401, r.text[:200]
    # Nothing changed: no account made, nothing written.
    assert _applied(member) == applied


def test_the_admin_token_is_let_in(member):
    base = f"https://{member.hostport}"
    r = _call(base, member.ca, "POST", "/2/raftbox/admin/status", None, member.admin_token)
    assert r.status_code == 200 and r.json()["id"] == 1, r.text
    r = _call(base, member.ca, "GET", "/2/raftbox/internal/changes", None, member.admin_token)
    assert r.status_code == 101, r.text[:200]
    r.close()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def test_nginx_blocks_internal_and_admin_routes_from_outside(member, user_token, tmp_path):
    exe = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if exe is None:
        pytest.fail("nginx is required by this test: apt-get install -y nginx", pytrace=False)
    port = free_port()
    b = member.bundle
    conf = nginx_config(tmp_path, port, [member.hostport], [member.hostport], b.ca_file,
                        b.server_cert, b.server_key)  # fmt: skip
    (tmp_path / "nginx.conf").write_text(conf)
    nginx = Proc(
        "nginx",
        [
            exe,
            "-p",
            f"{tmp_path}/",
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            str(tmp_path / "nginx-error.log"),
        ],  # fmt: skip
        tmp_path / "nginx.log",
    )
    nginx.start()
    try:
        wait_for(lambda: _port_open(port), 15, "nginx listening")
        base = f"https://{HOST}:{port}"
        for method, path, body in ROUTES:
            spellings = [path, path.replace("/raftbox/", "/raftbox//"),
                         path.replace("/raftbox/", "/raftbox/%2e/"),
                         path.replace("/raftbox/", "/%72aftbox/")]  # fmt: skip
            for p in spellings:
                r = _call(base, b.ca_file, method, p, body, member.admin_token)
                assert r.status_code in (403, 404), (p, r.status_code, r.text[:200])
                assert r.status_code == 403 or p != path, (p, r.status_code)
        # The public routes still pass.
        r = _call(base, b.ca_file, "POST", "/2/users/get_current_account", None, user_token)
        assert r.status_code == 200, r.text[:200]
    finally:
        nginx.stop()
