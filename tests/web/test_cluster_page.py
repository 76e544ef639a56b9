"""The web sign-in on a 3-member cluster, in headless Chromium (issue 14): a session made on one
member works on the others (it is replicated state, not a member's memory), a file action made
through a follower shows in the SDK, "Log out" on one member ends the session on every member,
and an administrator's session reaches the admin routes of any member while a user's does not.

Cookies are per host, not per port: the one browser context holds one cookie for 127.0.0.1 and
sends it to every member, like a browser behind a load balancer.
"""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect
from tests.api.procs import ApiCluster, create_account_http
from tests.api.sdk import connect

from .conftest import sign_in


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = ApiCluster(tmp_path_factory.mktemp("webcluster"), n=3)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _set_password(c: ApiCluster, email: str, password: str, admin: bool) -> None:
    s = requests.Session()
    s.verify, s.trust_env = c.ca, False
    r = s.post(
        f"https://{c.members[1].hostport}/2/raftbox/admin/set_password",
        json={"email": email, "password": password, "admin": admin},
        headers={"Authorization": f"Bearer {c.admin_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["admin"] is admin


CSRF_OF_PAGE = "fetch('/web/session').then(r => r.json()).then(s => s.csrf)"


def _call(page, route: str, csrf: str | None = None):
    """A /2/ call from the page with its session's CSRF token (as api.js makes them)."""
    return page.evaluate(
        """async ([route, csrf]) => {
        const r = await fetch("/2/" + route, {method: "POST", body: "null",
            headers: {"Content-Type": "application/json", "X-Raftbox-CSRF": csrf}});
        return r.status;
    }""",
        [route, csrf or page.evaluate(CSRF_OF_PAGE)],
    )


def test_session_works_on_every_member_and_logout_ends_it_everywhere(cluster, browser):
    leader = cluster.leader()
    a, b, c = leader, *[i for i in cluster.members if i != leader]
    url = {i: f"https://{m.hostport}" for i, m in cluster.members.items()}
    hp = cluster.members[a].hostport
    _, token = create_account_http(hp, cluster.ca, cluster.admin_token, "web@example.test")
    _set_password(cluster, "web@example.test", "cluster-password-1", admin=False)
    create_account_http(hp, cluster.ca, cluster.admin_token, "root@example.test")
    _set_password(cluster, "root@example.test", "cluster-password-2", admin=True)
    dbx = connect(hp, token, cluster.ca)

    ctx = browser.new_context(ignore_https_errors=True)
    try:
        page = ctx.new_page()
        sign_in(page, url[b], "web@example.test", "cluster-password-1")  # on a follower
        page.wait_for_url(url[b] + "/")
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        # the same session on another follower: a file action there
        page.goto(url[c] + "/")
        page.get_by_role("button", name="New folder").click()
        page.get_by_role("textbox").fill(f"made-on-member-{c}")
        page.get_by_role("button", name="Create").click()
        expect(page.get_by_role("link", name=f"made-on-member-{c}")).to_be_visible()
        assert {e.name for e in dbx.files_list_folder("").entries} == {f"made-on-member-{c}"}
        # a user's session is no administrator's, on any member
        assert _call(page, "raftbox/admin/status") == 401
        # log out on the leader: the follower refuses the session right away
        page.goto(url[a] + "/")
        kept = ctx.cookies()  # the session cookie and its CSRF token, to replay after the logout
        csrf = page.evaluate(CSRF_OF_PAGE)
        assert [k["name"] for k in kept] == ["__Host-raftbox_session"]
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(url[a] + "/login")
        assert ctx.cookies() == []
        ctx.add_cookies(kept)
        for i in (b, c):
            page.goto(url[i] + "/login")
            assert page.evaluate("fetch('/web/session').then(r => r.status)") == 401
            assert _call(page, "users/get_current_account", csrf) == 401
            page.goto(url[i] + "/")
            page.wait_for_url(url[i] + "/login?next=%2F")
        ctx.clear_cookies()
        # an administrator's session passes the admin routes of every member
        sign_in(page, url[c], "root@example.test", "cluster-password-2")
        page.wait_for_url(url[c] + "/")
        assert _call(page, "raftbox/admin/status") == 200
        page.goto(url[a] + "/")
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        assert _call(page, "raftbox/admin/list_accounts") == 200
    finally:
        ctx.close()
