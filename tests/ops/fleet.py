"""One meta member, a blockserver, a notify root and a notify leaf, as processes: every role
that serves `/metrics` and announces itself (raftbox.ops.processes)."""

from __future__ import annotations

from pathlib import Path

import requests

from api import procs


class OpsFleet:
    def __init__(self, base: Path) -> None:
        (base / "meta").mkdir()
        self.cluster = c = procs.ApiCluster(base / "meta", n=1)
        self.member = c.members[1]
        self.admin_token, self.ca = c.admin_token, c.ca
        meta = f"https://{self.member.hostport}"
        self.block_hp = f"{procs.HOST}:{procs.free_port()}"
        self.root_hp = f"{procs.HOST}:{procs.free_port()}"
        self.leaf_hp = f"{procs.HOST}:{procs.free_port()}"
        common = ["--ca", c.ca, "--admin-token", c.admin_token]
        tls = ["--tls-cert", c.cert, "--tls-key", c.key]
        self.block = procs.Proc("blockserver", [procs.RAFTBOX, "serve", "--roles", "block",
            "--data", str(base / "bs"), "--listen", self.block_hp, "--plain-http",
            "--meta", meta, "--blocks", c.blocks, *common], base / "bs.log")  # fmt: skip
        self.root = procs.Proc("notify root", [procs.RAFTBOX, "serve", "--roles", "notify",
            "--data", str(base / "root"), "--listen", self.root_hp, "--meta", meta,
            *common, *tls], base / "root.log")  # fmt: skip
        self.leaf = procs.Proc("notify leaf", [procs.RAFTBOX, "serve", "--roles", "notify",
            "--data", str(base / "leaf"), "--listen", self.leaf_hp,
            "--notify-root", f"https://{self.root_hp}", *common, *tls], base / "leaf.log")  # fmt: skip

    def start(self) -> None:
        self.cluster.start()
        self.block.start()
        self.root.start()
        self.block.wait_output("serving block on http://", 60)
        self.root.wait_output("serving notify on https://", 60)
        self.leaf.start()
        self.leaf.wait_output("serving notify on https://", 60)

    def stop(self) -> None:
        for p in (self.leaf, self.root, self.block):
            p.stop()
        self.cluster.stop()

    @property
    def urls(self) -> dict[str, str]:
        return {
            "blockserver": f"http://{self.block_hp}",
            "notify_root": f"https://{self.root_hp}",
            "notify_leaf": f"https://{self.leaf_hp}",
        }

    def get(self, url: str, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with requests.Session() as s:
            s.trust_env = False
            return s.get(url, headers=headers, verify=self.ca, timeout=30)

    def processes(self) -> list[dict]:
        with requests.Session() as s:
            s.trust_env = False
            r = s.post(
                f"https://{self.member.hostport}/2/raftbox/admin/cluster_status",
                headers={"Authorization": f"Bearer {self.admin_token}"},
                json={},
                verify=self.ca,
                timeout=30,
            )
        r.raise_for_status()
        return r.json()["processes"]
