"""`serve --workers 2` as real processes: a blockserver and a notify leaf, each two workers on
one port under a supervisor (`raftbox.workers`).

Which worker answered is told by each worker's own `--metrics-listen` port (the supervisor gives
worker I the port P+I-1): its `raftbox_worker` gauge names it, its request counters say what it
served, its notify gauges what it holds. Connections are spread over the workers by the kernel
(SO_REUSEPORT hashes each new connection), so the tests open new connections until both workers
have served, within a deadline, rather than assume a split.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import pytest
import requests
from tests.notify.procs import HOST, Net, Proc, quiet_port, wait_for


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (from /proc)."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def metrics(port: int) -> str:
    r = requests.get(f"http://{HOST}:{port}/metrics", timeout=10)
    r.raise_for_status()
    return r.text


def counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def worker_pid(port: int) -> int:
    m = re.search(r'^raftbox_worker\{.*pid="(\d+)".*\} 1\.0$', metrics(port), re.M)
    assert m, "a worker names itself in its metrics"
    return int(m.group(1))


def metrics_ports() -> int:
    """A port P with P+1 free too (the workers' metrics ports)."""
    import socket

    for _ in range(50):
        p = quiet_port()
        with socket.socket() as s:
            try:
                s.bind((HOST, p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with Net(tmp_path_factory.mktemp("workers")) as net:
        [m] = net.members(1, roles="meta,block,notify")
        yield net, m


def blockserver(net: Net, m: Proc, name: str, mport: int) -> Proc:
    argv = ["--roles", "block", "--meta", m.url, "--listen", f"{HOST}:{quiet_port()}",
            "--admin-token", net.admin, "--ca", net.ca, *net.tls,
            "--blocks", f"file://{net.base / 'blocks'}", "--workers", "2",
            "--metrics-listen", f"{HOST}:{mport}"]  # fmt: skip
    return net._add(Proc(net, name, argv)).start().ready()


def sdk(net: Net, token: str, api: Proc, content: Proc):
    import dropbox

    s = dropbox.create_session(ca_certs=net.ca)
    s.trust_env = False
    dbx = dropbox.Dropbox(token, session=s, max_retries_on_error=8)
    dbx._host_map = {"api": api.hostport, "content": content.hostport, "notify": api.hostport}
    return dbx


def uploads_by_worker(mport: int) -> list[float]:
    return [
        counter(metrics(mport + k), "raftbox_http_request_seconds_count", route="files/upload")
        for k in range(2)
    ]


def test_a_blockserver_with_two_workers_serves_uploads_and_downloads_on_one_port(fleet):
    import dropbox

    net, m = fleet
    mport = metrics_ports()
    bs = blockserver(net, m, "bs-updown", mport)
    pids = {worker_pid(mport), worker_pid(mport + 1)}
    assert pids == children(bs.pid), "the workers are the supervisor's children"
    token = net.account(m, "updown@example.com")
    sent: dict[str, bytes] = {}

    def both_served() -> bool:
        # a new SDK session, a new connection: the kernel picks a worker for it
        path = f"/w/{len(sent)}.bin"
        sent[path] = os.urandom(200_000) + path.encode()
        sdk(net, token, m, bs).files_upload(sent[path], path, mode=dropbox.files.WriteMode.add)
        return all(n >= 1 for n in uploads_by_worker(mport))

    wait_for(both_served, 120, "uploads served by both workers")
    assert sum(uploads_by_worker(mport)) == len(sent)
    for path, data in sent.items():
        _, r = sdk(net, token, m, bs).files_download(path)
        assert r.content == data

    def announced() -> dict[str, dict]:  # the meta member's cluster view names each worker
        r = requests.post(m.url + "/2/raftbox/admin/cluster_status", json=None, verify=net.ca,
                          headers={"Authorization": f"Bearer {net.admin}"}, timeout=10)  # fmt: skip
        r.raise_for_status()
        return {p["url"]: p for p in r.json()["processes"] if p["url"].startswith(bs.url)}

    seen = wait_for(lambda: len(a := announced()) == 2 and a, 30, "both workers announced")
    assert set(seen) == {bs.url + "#worker-1", bs.url + "#worker-2"}
    assert {p["status"]["pid"] for p in seen.values()} == pids
    bs.stop()


def test_a_worker_killed_is_started_again_and_the_port_keeps_answering(fleet):
    import dropbox

    net, m = fleet
    mport = metrics_ports()
    bs = blockserver(net, m, "bs-kill", mport)
    victim = worker_pid(mport)
    other = worker_pid(mport + 1)
    os.kill(victim, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: until the victim is dead its socket still takes new
    # connections (reset when it dies). Once it is dead (its files closed), only the survivor's
    # socket remains in the port's group.
    wait_for(lambda: not alive(victim), 30, "worker 1 dead")
    token = net.account(m, "kill@example.com")
    # meanwhile the port answers (the surviving worker)
    dbx = sdk(net, token, m, bs)
    dbx.files_upload(b"while one is down", "/during.txt")
    assert dbx.files_download("/during.txt")[1].content == b"while one is down"
    new = wait_for(lambda: (p := worker_pid(mport)) != victim and p, 60, "worker 1 restarted")
    assert children(bs.pid) == {new, other}
    assert not alive(victim)
    wait_for(lambda: (Path(bs.data) / "worker-1.url").exists(), 30, "worker 1 serving")
    for k in range(6):  # new connections, after the restart, all answered
        d = sdk(net, token, m, bs)
        d.files_upload(bytes([k]) * 1000, f"/after-{k}.bin", mode=dropbox.files.WriteMode.add)
        assert d.files_download(f"/after-{k}.bin")[1].content == bytes([k]) * 1000
    bs.stop()


def test_sigterm_to_the_supervisor_stops_every_worker(fleet):
    net, m = fleet
    mport = metrics_ports()
    bs = blockserver(net, m, "bs-term", mport)
    workers = children(bs.pid)
    assert len(workers) == 2
    assert bs.proc is not None
    bs.proc.send_signal(signal.SIGTERM)
    assert bs.proc.wait(timeout=60) == 0
    for pid in workers:
        wait_for(lambda p=pid: not alive(p), 30, f"worker {pid} gone")
    with pytest.raises(requests.ConnectionError):
        requests.get(bs.url, verify=net.ca, timeout=5)


def test_workers_do_not_outlive_a_supervisor_killed_with_sigkill(fleet):
    net, m = fleet
    bs = blockserver(net, m, "bs-kill9", metrics_ports())
    workers = children(bs.pid)
    assert len(workers) == 2
    bs.kill9()  # no shutdown code runs in the supervisor: the kernel tells the workers
    for pid in workers:
        wait_for(lambda p=pid: not alive(p), 30, f"worker {pid} gone")


def test_workers_that_cannot_start_make_the_supervisor_exit_non_zero(fleet, tmp_path):
    net, m = fleet
    # The store of this blockserver is not the cluster's: every worker refuses to start (78).
    argv = ["--roles", "block", "--meta", m.url, "--listen", f"{HOST}:{quiet_port()}",
            "--admin-token", net.admin, "--ca", net.ca, *net.tls,
            "--blocks", f"file://{tmp_path / 'other-blocks'}",
            "--workers", "2"]  # fmt: skip
    p = net._add(Proc(net, "bs-bad", argv)).start()
    assert p.proc is not None
    assert p.proc.wait(timeout=120) == 78
    assert "giving up" in p.output()
    assert not children(p.pid)


def test_a_notify_leaf_with_two_workers_wakes_long_polls_on_both(fleet):
    net, m = fleet
    mport = metrics_ports()
    argv = ["--roles", "notify", "--listen", f"{HOST}:{quiet_port()}", "--notify-root", m.url,
            "--admin-token", net.admin, "--ca", net.ca, *net.tls, "--workers", "2",
            "--metrics-listen", f"{HOST}:{mport}"]  # fmt: skip
    leaf = net._add(Proc(net, "leaf2", argv)).start().ready()
    token = net.account(m, "leaf2@example.com")
    dbx = sdk(net, token, m, m)
    cursor = dbx.files_list_folder_get_latest_cursor("").cursor
    answers: list[dict] = []
    lock = threading.Lock()
    threads: list[threading.Thread] = []

    def poll() -> None:
        r = requests.post(  # a connection of its own (no session)
            leaf.url + "/2/files/list_folder/longpoll",
            json={"cursor": cursor, "timeout": 120},
            verify=net.ca,
            timeout=150,
        )
        with lock:
            answers.append(r.json())

    def waiting() -> list[float]:
        return [counter(metrics(mport + k), "raftbox_notify_longpolls_waiting") for k in range(2)]

    def parked_on_both() -> bool:
        if min(waiting()) >= 1:
            return True
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        threads.append(t)
        wait_for(lambda: sum(waiting()) + len(answers) >= len(threads), 30, "the poll parked")
        return min(waiting()) >= 1

    wait_for(parked_on_both, 120, "long-polls waiting on both workers")
    assert not answers, "nothing changed yet"
    dbx.files_upload(b"wake up", "/wake.txt")
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == len(threads)
    assert all(a == {"changes": True} or a.get("changes") is True for a in answers), answers
    leaf.stop()
