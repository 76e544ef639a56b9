"""The cluster view in a real headless Chromium, against a 3-member cluster of `raftbox serve`.

Claims (issue 14, "The cluster view"): the page shows the members with their roles and the
leader; after the leader is killed (-9), without a reload, it shows the new leader and the
election that made it (whose timeout fired, the votes, the win) in the election panel; a
replication sample reaches a majority and commits in the replication panel; no script error
happens on the page. The admin token reaches the page as a header of the browser context,
never in a URL.
"""

from __future__ import annotations

import re

import pytest

from api.procs import ApiCluster

from .browser import chromium


@pytest.fixture
def cluster(tmp_path):
    c = ApiCluster(tmp_path)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_the_page_shows_the_new_leader_and_its_election_after_the_leader_is_killed(cluster):
    old = cluster.leader()
    via = next(i for i in cluster.members if i != old)
    url = f"https://{cluster.members[via].hostport}/admin/cluster"
    with chromium() as browser:
        ctx = browser.new_context(
            ignore_https_errors=True,
            extra_http_headers={"Authorization": f"Bearer {cluster.admin_token}"},
        )
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        summary = page.locator("#summary")
        summary.filter(has_text=f"Leader: member {old} ").wait_for(timeout=20_000)
        leader_row = page.locator("#members tr.leader")
        assert leader_row.locator("td").first.inner_text() == f"member {old}"
        assert page.locator("#members tbody tr").count() == 3
        # The first election of the cluster is already on the page.
        page.locator("#elections").filter(has_text=f"Member {old} won term").wait_for(
            timeout=20_000
        )
        # A write: the replication panel shows an entry reach a majority and commit.
        _write(cluster, via)  # an account made: one Raft entry
        page.locator("#replication li.won").first.wait_for(timeout=20_000)
        text = page.locator("#replication").inner_text()
        assert "a majority has it" in text and "committed" in text

        cluster.kill9(old)
        new = cluster.leader()
        assert new != old
        summary.filter(has_text=f"Leader: member {new} ").wait_for(timeout=30_000)
        won = page.locator("#elections > li.won").first
        won.filter(has_text=f"Member {new} won term").wait_for(timeout=30_000)
        story = won.inner_text()
        assert re.search(r"election timeout fired after \d+ ms", story), story
        assert re.search(r"no leader for \d+ ms", story), story
        assert "got a vote from member" in story, story
        dead = page.locator(f"#members tr[data-member='{old}']")
        dead.filter(has_text="unreachable").wait_for(timeout=30_000)
        assert errors == []
        ctx.close()
    cluster.restart(old)


def _write(cluster: ApiCluster, via: int) -> None:
    from api.procs import create_account_http

    create_account_http(
        cluster.members[via].hostport, cluster.ca, cluster.admin_token, "page@example.com"
    )
