"""`/metrics` values move when things happen (raftbox.ops.metrics, raft/metrics.py).

On a real member: an upload moves the Raft proposals, commit and applied index, the fsync
histogram and the batch sizes, the API latency histogram of `files/upload` with status 200 and
its bytes in, and the block store's put count; a long-poll woken by that upload moves the notify
wake-ups and fan-out histogram; the member learned of one leader (itself).
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from api.procs import create_account_http
from security.members import Member


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    m = Member(tmp_path_factory.mktemp("metrics"))
    m.proc.args += ["--longpoll-min-timeout-s", "1"]
    m.proc.start()
    try:
        m.proc.wait_output("raftbox member 1 serving", 60)
        yield m
    finally:
        m.proc.stop()


def scrape(m) -> dict[tuple[str, tuple], float]:
    with requests.Session() as s:
        s.trust_env = False
        r = s.get(
            f"https://{m.hostport}/metrics",
            headers={"Authorization": f"Bearer {m.admin_token}"},
            verify=m.ca,
            timeout=30,
        )
    r.raise_for_status()
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def v(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_an_upload_and_a_woken_longpoll_move_the_metrics(member):
    _, token = create_account_http(member.hostport, member.ca, member.admin_token, "m@ex.test")
    user = {"Authorization": f"Bearer {token}"}
    s = requests.Session()
    s.trust_env = False
    s.verify = member.ca
    base = f"https://{member.hostport}/2"
    cursor = s.post(
        f"{base}/files/list_folder/get_latest_cursor", headers=user, json={"path": ""}
    ).json()["cursor"]
    before = scrape(member)
    answer: list = []
    poll = threading.Thread(
        target=lambda: answer.append(
            s.post(f"{base}/files/list_folder/longpoll", json={"cursor": cursor, "timeout": 30})
        )
    )
    poll.start()
    # The long-poll must be parked before the change, or it answers at once (no wake-up).
    from raftbox.testing.procs import wait_for

    wait_for(
        lambda: v(scrape(member), "raftbox_notify_longpolls_waiting", kind="root") == 1,
        20,
        "the long-poll is parked",
    )
    data = b"metrics move " * 1000
    r = s.post(
        f"https://{member.hostport}/2/files/upload",
        headers={
            **user,
            "Dropbox-API-Arg": json.dumps({"path": "/m.txt"}),
            "Content-Type": "application/octet-stream",
        },
        data=data,
    )
    assert r.status_code == 200, r.text
    poll.join(30)
    assert answer and answer[0].json()["changes"] is True
    after = scrape(member)
    grew = lambda name, **lb: v(after, name, **lb) > v(before, name, **lb)  # noqa: E731
    assert grew("raftbox_raft_proposals_total")
    assert grew("raftbox_raft_commit_index") and grew("raftbox_raft_applied_index")
    assert grew("raftbox_raft_fsync_seconds_count")
    assert grew("raftbox_raft_append_entries_sum")
    assert grew("raftbox_http_request_seconds_count", route="files/upload", status="200")
    assert v(after, "raftbox_http_request_bytes_total", route="files/upload") - v(
        before, "raftbox_http_request_bytes_total", route="files/upload"
    ) == len(data)
    assert grew("raftbox_blockstore_ops_total", store="blocks", op="put", outcome="ok")
    assert grew("raftbox_notify_wakeups_total", kind="longpoll")
    assert grew("raftbox_notify_fanout_seconds_count")
    assert v(after, "raftbox_raft_leader_changes_total") >= 1
    assert v(after, "raftbox_raft_role", role="leader") == 1
    assert v(after, "raftbox_raft_term") >= 1
    s.close()
