"""The operator pages behind a browser session: an administrator's session opens the cluster view
and `/metrics` (no admin token in the page), a user's session is refused, and a browser with no
session is sent to the sign-in page and back."""

from __future__ import annotations

import re

import requests
from playwright.sync_api import expect

from .test_files_page import _account


def test_an_administrators_session_opens_the_cluster_view(up, page_for):
    page = page_for()  # `raftbox up`'s first account is an administrator
    page.goto(up.url + "/admin/cluster")
    expect(page.locator("#members tr.leader")).to_have_count(1)
    expect(page.locator("#summary")).to_contain_text(re.compile("leader", re.I))
    r = page.request.get(up.url + "/metrics")
    assert r.status == 200 and "raftbox_raft_term" in r.text()


def test_a_users_session_does_not_open_the_cluster_view(up, page_for):
    email, pw, _ = _account(up, "plainuser")
    page = page_for(email, pw)
    for path in ("/admin/cluster", "/admin/cluster/status?since=&wait_s=0", "/metrics"):
        r = page.request.get(up.url + path)
        assert r.status == 401, path
        assert "raftbox_raft" not in r.text() and "members" not in r.text()


def test_no_session_is_sent_to_sign_in_and_back(up, browser):
    ctx = browser.new_context(ignore_https_errors=True)
    try:
        page = ctx.new_page()
        page.goto(up.url + "/admin/cluster")
        page.wait_for_url(re.compile(r"/login\?next="))
        page.get_by_label("Email").fill("you@localhost")
        page.get_by_label("Password").fill(up.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(up.url + "/admin/cluster")
        expect(page.locator("#members tr.leader")).to_have_count(1)
    finally:
        ctx.close()
    # a script without a session or token gets the 401, not a page
    r = requests.get(
        up.url + "/admin/cluster",
        headers={"Authorization": "Bearer nope"},
        verify=False,
        timeout=30,
    )
    assert r.status_code == 401
