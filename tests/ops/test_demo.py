"""`raftbox demo` runs its first steps, narrates them, and Ctrl-C stops everything it started.

The demo is started as a user would (the `raftbox` command, in its own process group so the
test can send it SIGINT as a terminal's Ctrl-C would), with a short interval. The narration
must tell: the first election, the notify processes announcing themselves, where the cluster
view is and the credentials, a file reaching the other sync client, the leader killed and a new
one elected by its randomized timer and votes, the old leader back and caught up. After SIGINT,
every process whose pid it printed has exited, and the demo exits 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from raftbox.testing.procs import track, untrack, wait_for

RAFTBOX = str(Path(sys.executable).with_name("raftbox"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_demo_narrates_an_upload_and_an_election_and_ctrl_c_stops_everything(tmp_path):
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        demo = track(
            subprocess.Popen(
                [RAFTBOX, "demo", "--dir", str(tmp_path / "d"), "--interval-s", "0.5"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the finally below ends it all
            )
        )
    pids: list[int] = []
    try:
        text = lambda: log.read_text()  # noqa: E731
        wait_for(
            lambda: "member" in text() and "caught up" in text() or demo.poll() is not None,
            150,
            "the demo's second step",
        )
        assert demo.poll() is None, text()
        out = text()
        pids = [int(p) for p in re.search(r"processes up: pids ([\d ]+)", out).group(1).split()]
        assert len(pids) == 7  # 3 members, notify root and leaf, 2 sync clients
        pids += [int(p) for p in re.findall(r"restarted \(pid (\d+)\)", out)]
        assert re.search(r"member \d was elected leader", out), out
        assert "the notify root and leaf announced themselves" in out, out
        assert re.search(r"https://127\.0\.0\.1:\d+/admin/cluster", out), out
        assert "admin token  : rbxadmin_" in out, out
        assert "sign in as   : admin@localhost  password " in out, out
        assert re.search(r"hello-1\.txt reached client B after [\d.]+ s", out), out
        m = re.search(r"killed the leader, member (\d)", out)
        assert m, out
        old = m.group(1)
        won = re.search(r"member (\d) won term (\d+) with votes from members ([\d, ]+)", out)
        assert won and won.group(1) != old, out
        assert re.search(rf"member {won.group(1)}'s randomized election timer fired after \d+", out)
        assert re.search(rf"member {old} restarted \(pid \d+\): .* caught up", out), out
        demo.send_signal(signal.SIGINT)
        assert demo.wait(90) == 0, text()
        assert "stopped 7 processes" in text()
        dead = [p for p in pids if _alive(p)]
        assert dead == [], dead
    finally:
        if demo.poll() is None:  # a failure above: Ctrl-C first, so it stops what it started
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(90)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):  # not reaped: the group is its own
                    os.killpg(demo.pid, signal.SIGKILL)
                demo.wait(30)
        untrack(demo)
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
