"""Issue 11, attack 4: `sync --watch` uploads what changed while the server was down.

A file created during an outage used to wait for the next remote change (or the ten-minute
periodic pass): the pass it triggered found the server down, and nothing ran another one when
the server and the push stream came back. Now a pass that finds the server unreachable is
retried with a short back-off, and a push stream that connects again wakes a full pass.

Real processes: `raftbox up`, and `raftbox sync --watch DIR`; the server is stopped, a file is
made, the server starts again on the same data and port, and the file must reach it — with no
change on the server side to wake the client.
"""

from __future__ import annotations

import json
from pathlib import Path

import requests

from api.procs import RAFTBOX, Proc, UpServer, free_port
from raftbox.client.config import Config, save
from raftbox.testing.procs import wait_for


def _stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # not written yet, or being written


def _on_server(up: UpServer, path: str) -> bool:
    try:
        r = requests.post(
            f"https://{up.hostport}/2/files/get_metadata",
            json={"path": path},
            headers={"Authorization": f"Bearer {up.token}"},
            verify=up.ca,
            timeout=5,
        )
    except requests.RequestException:
        return False
    return r.status_code == 200


def test_an_offline_edit_is_uploaded_once_the_server_is_back(tmp_path: Path) -> None:
    up = UpServer(tmp_path, free_port())
    root, stats, cfg_dir = tmp_path / "W", tmp_path / "stats.json", tmp_path / "cfg"
    root.mkdir()
    watch = Proc("sync --watch", [RAFTBOX, "sync", "--watch", str(root), "--config", str(cfg_dir),
                                  "--stats-json", str(stats)], tmp_path / "watch.log")  # fmt: skip
    try:
        up.start()
        save(Config(server=f"https://{up.hostport}", token=up.token, ca=up.ca), cfg_dir)
        (root / "before.txt").write_text("made while the server was up")
        watch.start()
        wait_for(lambda: _on_server(up, "/before.txt"), 60.0, "the first round uploaded", 0.2)

        up.stop()
        (root / "offline.txt").write_text("made while the server was down")
        wait_for(lambda: _stats(stats).get("unavailable"), 60.0, "a pass found the server down")
        # A real outage lasts: let the push stream's back-off grow (1 + 2 + 4 + 8 s of failed
        # reconnects; the next attempt comes 16 s after the last), so that the server is back
        # before the stream tries again: what it did while the server was down cannot pass
        # for a wake-up after its return.
        wait_for(lambda: watch.output().count("push stream lost") >= 5, 90.0,
                 "the push stream failed to reconnect five times", 0.1)  # fmt: skip
        up.start()
        try:
            wait_for(lambda: _on_server(up, "/offline.txt"), 30.0,
                     "the offline edit reached the server after its return", 0.2)  # fmt: skip
        except TimeoutError:
            raise AssertionError(f"not uploaded; the watcher said:\n{watch.tail()}") from None
        assert watch.alive and "pass failed" not in watch.output(), watch.tail()
        watch.stop()
        assert watch.proc is not None and watch.proc.returncode == 0, watch.tail()
    finally:
        watch.stop()
        up.stop()
