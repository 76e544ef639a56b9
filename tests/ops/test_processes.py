"""Blockservers and notify processes announce themselves; every role serves `/metrics`.

`ProcessTable` (pure): the newest announcement per URL, `up` while fresh, `unreachable` once
stale, forgotten later, bounded; a root's leaves come through it with `via` naming the root.
On processes: a blockserver, a notify root and a leaf show on the cluster view `up` (the leaf
via its root); each one's `/metrics` answers the admin token with its role's metrics; a
blockserver that stops shows as unreachable.
"""

from __future__ import annotations

import pytest

from raftbox.ops.processes import Announcement, ProcessTable
from raftbox.testing.procs import wait_for

from .fleet import OpsFleet


def test_the_table_ages_announcements_and_relays_a_roots_leaves():
    t = ProcessTable(stale_after_s=5, forget_after_s=20, max_entries=3)
    leaf = Announcement("notify_leaf", "https://leaf:1", {"waiting": 2})
    t.record(100, Announcement("notify_root", "https://root:1", {}, [leaf]))
    snap = {p["url"]: p for p in t.snapshot(101)}
    assert snap["https://leaf:1"]["via"] == "https://root:1"
    assert snap["https://leaf:1"]["status"] == {"waiting": 2}
    assert {p["state"] for p in snap.values()} == {"up"}
    assert [p["state"] for p in t.snapshot(106)] == ["unreachable", "unreachable"]
    assert t.announcements(106) == []
    assert t.snapshot(121) == []
    for i in range(5):
        t.record(200 + i, Announcement("blockserver", f"http://b{i}:1"))
    assert [p["url"] for p in t.snapshot(205)] == ["http://b2:1", "http://b3:1", "http://b4:1"]


def test_announcements_refuse_bad_kinds_urls_and_nesting():
    for a in (
        Announcement("meta", "https://x:1"),
        Announcement("blockserver", "ftp://x"),
        Announcement(
            "notify_root",
            "https://r:1",
            downstream=[
                Announcement(
                    "notify_leaf",
                    "https://l:1",
                    downstream=[Announcement("notify_leaf", "https://m:1")],
                )
            ],
        ),
    ):
        with pytest.raises(ValueError):
            a.validate()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = OpsFleet(tmp_path_factory.mktemp("opsfleet"))
    f.start()
    try:
        yield f
    finally:
        f.stop()


def test_every_role_announces_itself_and_serves_its_metrics(fleet):
    urls = fleet.urls

    def all_up() -> dict:
        ps = {p["url"]: p for p in fleet.processes()}
        ok = all(ps.get(u, {}).get("state") == "up" for u in urls.values())
        return ps if ok else {}

    ps = wait_for(all_up, 30, "every process announced")
    assert ps[urls["notify_leaf"]]["via"] == urls["notify_root"]
    assert ps[urls["notify_root"]]["kind"] == "notify_root"
    assert "waiting" in ps[urls["notify_leaf"]]["status"]
    expect = {
        "blockserver": "raftbox_http_request_seconds",
        "notify_root": 'raftbox_notify_longpolls_waiting{kind="root"}',
        "notify_leaf": 'raftbox_notify_longpolls_waiting{kind="leaf"}',
    }
    for kind, url in urls.items():
        r = fleet.get(f"{url}/metrics", fleet.admin_token)
        assert r.status_code == 200, (kind, r.status_code)
        assert expect[kind] in r.text, kind


def test_a_stopped_blockserver_shows_as_unreachable(fleet):
    url = fleet.urls["blockserver"]
    wait_for(
        lambda: any(p["url"] == url and p["state"] == "up" for p in fleet.processes()),
        30,
        "the blockserver is up",
    )
    fleet.block.stop()
    try:
        wait_for(
            lambda: any(p["url"] == url and p["state"] == "unreachable" for p in fleet.processes()),
            30,
            "the blockserver shows as unreachable",
        )
    finally:
        fleet.block.start()
        fleet.block.wait_output("serving block on http://", 60)
