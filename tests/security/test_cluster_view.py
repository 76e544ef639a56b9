"""The cluster view's routes (raftbox.ops.web) and the announce route refuse anyone but an
administrator, and refuse garbage with a 400 that changes nothing.

Attacked on a real member: the page, its script and stylesheet, the live feed
(`GET /admin/cluster/status`), `POST /2/raftbox/admin/cluster_status` and the announce route
blockservers and notify processes post to (`/2/raftbox/internal/announce`), each with no token,
a wrong token, a user's token, and the admin token put in the URL instead of the header; then
garbled and oversize arguments with the admin token. The control: the admin token in the
header is let in, and the page carries a Content-Security-Policy without inline script that
forbids framing.
"""

from __future__ import annotations

import json

import pytest
import requests

from api.procs import create_account_http

GETS = ["/admin/cluster", "/admin/cluster.js", "/admin/cluster.css", "/admin/cluster/status"]
POSTS = [
    ("/2/raftbox/admin/cluster_status", {}),
    (
        "/2/raftbox/internal/announce",
        {"kind": "blockserver", "url": "https://evil.example:1", "status": {}},
    ),
]


@pytest.fixture(scope="module")
def user_token(member) -> str:
    return create_account_http(member.hostport, member.ca, member.admin_token, "v@example.test")[1]


def _s() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def _get(member, path: str, token: str | None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with _s() as s:
        return s.get(
            f"https://{member.hostport}{path}",
            headers=headers,
            verify=member.ca,
            timeout=30,
            allow_redirects=False,
            **kw,
        )


def _refused(r, path: str) -> bool:
    """401, or for the page itself with no credential at all, a 303 to the sign-in page."""
    if path == "/admin/cluster" and r.status_code == 303:
        return r.headers["Location"] == "/login?next=/admin/cluster"
    return r.status_code == 401


def _post(member, path: str, token: str | None, body: bytes | dict):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with _s() as s:
        return s.post(
            f"https://{member.hostport}{path}",
            headers=headers,
            data=data,
            verify=member.ca,
            timeout=30,
        )


def _processes(member) -> list:
    r = _post(member, "/2/raftbox/admin/cluster_status", member.admin_token, {})
    r.raise_for_status()
    return r.json()["processes"]


@pytest.mark.parametrize("who", ["no token", "a wrong token", "a user's token"])
def test_everything_refuses_anyone_but_an_administrator(member, user_token, who):
    token = {"no token": None, "a wrong token": "rbxadmin_nope", "a user's token": user_token}[who]
    for path in GETS:
        r = _get(member, path, token)
        assert _refused(r, path), (path, r.status_code, r.text[:200])
        assert "raftbox" not in r.text.lower() or "invalid_access_token" in r.text, path
    for path, body in POSTS:
        r = _post(member, path, token, body)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
    assert _processes(member) == []  # the refused announcement was not recorded


def test_the_admin_token_in_the_url_is_not_a_credential(member):
    for path in GETS:
        r = _get(member, f"{path}?access_token={member.admin_token}", None)
        assert _refused(r, path), path
        r = _get(member, f"{path}?authorization=Bearer%20{member.admin_token}", None)
        assert _refused(r, path), path


def test_the_admin_is_let_in_and_the_page_forbids_inline_script_and_framing(member):
    r = _get(member, "/admin/cluster", member.admin_token)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in r.text and "onload=" not in r.text and "http" not in r.text
    r = _get(member, "/admin/cluster.js", member.admin_token)
    assert r.status_code == 200 and "javascript" in r.headers["Content-Type"]
    assert "innerHTML" not in r.text  # names and values go in as text only
    r = _get(member, "/admin/cluster/status", member.admin_token)
    assert r.status_code == 200 and r.json()["members"][0]["id"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "since=garbage",
        "since=1:-5",
        "since=0:1",
        "since=" + ",".join(f"{i}:1" for i in range(1, 100)),
        "wait_s=nan",
        "wait_s=1e9",
        "wait_s=-1",
    ],
)
def test_a_garbled_feed_query_is_a_400(member, query):
    r = _get(member, f"/admin/cluster/status?{query}", member.admin_token)
    assert r.status_code == 400, (query, r.status_code, r.text[:200])


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'"x"',
        b'{"since": "x"}',
        b'{"since": {"1": "a"}}',
        b'{"wait_s": 1e308}',
        b'{"extra": 1}',
        b"\xff\xfe",
        b'{"since": {}, "pad": "' + b"x" * 20_000 + b'"}',
    ],
)
def test_garbled_cluster_status_arguments_are_a_400(member, body):
    r = _post(member, "/2/raftbox/admin/cluster_status", member.admin_token, body)
    assert r.status_code == 400, (body[:40], r.status_code, r.text[:200])


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"kind": "meta", "url": "https://x:1"}',
        b'{"kind": "blockserver", "url": "javascript:alert(1)"}',
        b'{"kind": "blockserver", "url": "https://' + b"x" * 400 + b'"}',
        b'{"kind": "blockserver", "url": "https://x:1", "extra": 1}',
        json.dumps(
            {
                "kind": "notify_root",
                "url": "https://r:1",
                "downstream": [
                    {
                        "kind": "notify_leaf",
                        "url": "https://l:1",
                        "downstream": [{"kind": "notify_leaf", "url": "https://m:1"}],
                    }
                ],
            }
        ).encode(),
        b'{"kind": "blockserver", "url": "https://x:1", "status": {"p": "'
        + b"x" * 300_000
        + b'"}}',
    ],
)
def test_a_garbled_announcement_is_a_400_and_is_not_recorded(member, body):
    r = _post(member, "/2/raftbox/internal/announce", member.admin_token, body)
    assert r.status_code == 400, (body[:60], r.status_code, r.text[:200])
    assert _processes(member) == []


def test_an_admin_check_that_is_async_or_says_false_still_refuses():
    """The web interface may make the admin check async (a session looked up in a store): the
    ops routes await it, so it cannot let a request through unawaited."""
    import asyncio

    from raftbox.ops.metrics import admitted

    async def refuses_async(request):
        raise PermissionError("no session")

    async def lets_in_async(request):
        return None

    def refuses(request):
        raise PermissionError("no token")

    async def main():
        assert await admitted(refuses_async, None) is False
        assert await admitted(refuses, None) is False
        assert await admitted(lambda r: False, None) is False
        assert await admitted(lets_in_async, None) is True
        assert await admitted(lambda r: None, None) is True

    asyncio.run(main())
