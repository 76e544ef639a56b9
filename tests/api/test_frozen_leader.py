"""A leader frozen with SIGSTOP (not killed), under a steady stream of SDK uploads.

A frozen member keeps its sockets open: the others' connections to it neither answer nor break.
The two live members elect a new leader within a few election timeouts (check-quorum, pre-vote)
and must serve writes: an upload that a follower had already forwarded to the leader when it
froze is sent again to the new leader, not held until the write timeout (10 s) and failed with
503 "no leader accepted the proposal in time" (raftbox.raft.node, "Commands and results").

Each writer uploads through a follower at its first try (no SDK retry); every upload, also the
ones in flight when the leader froze, must succeed. The test thaws the member and waits until
the whole cluster serves again before it returns (the session's cluster is shared).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from dropbox import files

from . import procs
from .sdk import Target

WRITERS = 6


def test_uploads_in_flight_when_the_leader_freezes_succeed_through_the_new_leader(
    cluster: procs.ApiCluster, cluster_target: Target
) -> None:
    acct = cluster_target.new_account("frozen")
    leader = cluster.leader(timeout_s=60)
    followers = [i for i in cluster.members if i != leader]  # member ids; hostports index i - 1
    stop = threading.Event()
    lock = threading.Lock()
    frozen_at: list[float] = []
    done: dict[int, int] = {w: 0 for w in range(WRITERS)}  # uploads started after the freeze
    errors: list[str] = []

    def writer(w: int) -> None:
        dbx = acct.dbx(followers[w % 2] - 1, max_retries_on_error=0, timeout=60)
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                dbx.files_upload(b"%d" % n, f"/frozen/w{w}-{n}", mode=files.WriteMode.overwrite)
            except Exception as e:  # noqa: BLE001 - reported by the test
                with lock:
                    errors.append(f"writer {w} upload {n}: {type(e).__name__}: {e}")
                return
            with lock:
                if frozen_at and started > frozen_at[0]:
                    done[w] += 1
                elif not frozen_at:
                    done[w] = -1  # it wrote before the freeze: the stream is running

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    pid = cluster.proc(leader).pid
    try:
        for t in threads:
            t.start()
        procs.wait_for(
            lambda: all(v == -1 for v in done.values()) or errors, 30, "every writer writes"
        )
        with lock:
            for w in done:
                done[w] = 0
            os.kill(pid, signal.SIGSTOP)
            frozen_at.append(time.monotonic())
        # Far below the 60 s that were observed, and above an election under load.
        procs.wait_for(
            lambda: errors or all(v >= 2 for v in done.values()),
            20,
            "every writer uploads again, twice, after the leader froze",
            poll_s=0.1,
        )
    finally:
        stop.set()
        os.kill(pid, signal.SIGCONT)
        for t in threads:
            t.join(timeout=70)
    assert errors == [], errors
    # Mend: the thawed member follows the new leader, and every member serves again.
    cluster.leader(timeout_s=60)
    for i in cluster.members:
        procs.wait_for(
            lambda i=i: acct.dbx(i - 1, max_retries_on_error=0, timeout=10).files_upload(
                b"ok", f"/frozen/health-{i}", mode=files.WriteMode.overwrite
            ),
            60,
            f"member {i} takes a write",
            poll_s=0.1,
        )
