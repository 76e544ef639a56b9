"""`/metrics` on the public port needs the cluster's admin token; `--metrics-listen` serves it
without one, on its own address only.

Attacked on a real member started with `--metrics-listen`: `GET /metrics` on the public port
with no token, a wrong token, a user's token, the token in the URL; other methods and paths on
the metrics address. The control: the admin token is let in, and the metrics address answers
without one (it is meant for a Prometheus on a private network) and serves nothing else.
"""

from __future__ import annotations

import pytest
import requests

from api.procs import create_account_http
from raftbox.testing.procs import HOST, free_port

from .members import Member


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    m = Member(tmp_path_factory.mktemp("metered"))
    m.metrics_port = free_port()
    m.proc.args += ["--metrics-listen", f"{HOST}:{m.metrics_port}"]
    m.proc.start()
    try:
        m.proc.wait_output("raftbox member 1 serving", 60)
        yield m
    finally:
        m.proc.stop()


@pytest.fixture(scope="module")
def user_token(metered) -> str:
    return create_account_http(metered.hostport, metered.ca, metered.admin_token, "w@example.test")[
        1
    ]


def _get(url: str, ca, token: str | None = None, method: str = "GET"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with requests.Session() as s:
        s.trust_env = False
        return s.request(method, url, headers=headers, verify=ca, timeout=30)


@pytest.mark.parametrize("who", ["no token", "a wrong token", "a user's token"])
def test_metrics_on_the_public_port_refuse_anyone_but_the_cluster(metered, user_token, who):
    token = {"no token": None, "a wrong token": "rbxadmin_x", "a user's token": user_token}[who]
    r = _get(f"https://{metered.hostport}/metrics", metered.ca, token)
    assert r.status_code == 401, r.text[:200]
    assert "raftbox_" not in r.text


def test_the_admin_token_in_the_url_is_not_a_credential(metered):
    r = _get(f"https://{metered.hostport}/metrics?token={metered.admin_token}", metered.ca)
    assert r.status_code == 401


def test_the_admin_token_is_let_in(metered):
    r = _get(f"https://{metered.hostport}/metrics", metered.ca, metered.admin_token)
    assert r.status_code == 200 and "raftbox_raft_term " in r.text
    assert r.headers["Content-Type"].startswith("text/plain")


def test_the_metrics_address_serves_metrics_alone_without_a_token(metered):
    base = f"http://{HOST}:{metered.metrics_port}"
    r = _get(f"{base}/metrics", None)
    assert r.status_code == 200 and "raftbox_raft_term " in r.text
    for path in ("/", "/admin/cluster", "/admin/cluster/status", "/2/raftbox/admin/status"):
        assert _get(base + path, None).status_code == 404, path
    assert _get(f"{base}/metrics", None, method="POST").status_code == 405


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from ops.fleet import OpsFleet

    f = OpsFleet(tmp_path_factory.mktemp("metrics-fleet"))
    f.start()
    try:
        yield f
    finally:
        f.stop()


@pytest.mark.parametrize("token", [None, "rbxadmin_x"])
def test_blockservers_and_notify_processes_refuse_metrics_and_announcements(fleet, token):
    """The other roles: `/metrics` and the root's announce route need the admin token too."""
    for kind, url in fleet.urls.items():
        r = fleet.get(f"{url}/metrics", token)
        assert r.status_code == 401, (kind, r.status_code)
        assert "raftbox_" not in r.text
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with requests.Session() as s:
        s.trust_env = False
        r = s.post(
            f"{fleet.urls['notify_root']}/2/raftbox/internal/announce",
            headers=headers,
            json={"kind": "notify_leaf", "url": "https://intruder:1"},
            verify=fleet.ca,
            timeout=30,
        )
    assert r.status_code == 401
    assert all("intruder" not in p["url"] for p in fleet.processes())
